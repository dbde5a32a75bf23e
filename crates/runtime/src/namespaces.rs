//! Namespace bookkeeping: which namespaces a container creates, which it joins, and how.
//!
//! Invariant: the user namespace is joined last and created together with the others in one
//! `clone`, so every new namespace is owned by the container's user namespace.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// Every namespace kind, in the order we join them (user last; see module doc).
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::User,
];

/// The name under `/proc/<pid>/ns/`.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The `CLONE_NEW*` bit.
pub fn clone_flag(t: LinuxNamespaceType) -> u64 {
    let flag = match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    };
    u64::from(flag.unsigned_abs())
}

/// Whether the running kernel has this namespace kind.
pub fn host_supports(t: LinuxNamespaceType) -> bool {
    Path::new("/proc/self/ns").join(proc_name(t)).exists()
}

/// The namespace plan of a container, derived from `linux.namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Namespaces created fresh, as `CLONE_NEW*` bits.
    pub new_flags: u64,
    /// Namespaces joined by path, in [`JOIN_ORDER`].
    pub join: Vec<(NsKind, PathBuf)>,
}

/// A serialisable namespace kind (oci-spec's enum carries builder baggage we do not need here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsKind {
    /// Mount.
    Mount,
    /// Cgroup.
    Cgroup,
    /// UTS.
    Uts,
    /// IPC.
    Ipc,
    /// User.
    User,
    /// PID.
    Pid,
    /// Network.
    Network,
    /// Time.
    Time,
}

impl From<LinuxNamespaceType> for NsKind {
    fn from(t: LinuxNamespaceType) -> NsKind {
        match t {
            LinuxNamespaceType::Mount => NsKind::Mount,
            LinuxNamespaceType::Cgroup => NsKind::Cgroup,
            LinuxNamespaceType::Uts => NsKind::Uts,
            LinuxNamespaceType::Ipc => NsKind::Ipc,
            LinuxNamespaceType::User => NsKind::User,
            LinuxNamespaceType::Pid => NsKind::Pid,
            LinuxNamespaceType::Network => NsKind::Network,
            LinuxNamespaceType::Time => NsKind::Time,
        }
    }
}

impl From<NsKind> for LinuxNamespaceType {
    fn from(k: NsKind) -> LinuxNamespaceType {
        match k {
            NsKind::Mount => LinuxNamespaceType::Mount,
            NsKind::Cgroup => LinuxNamespaceType::Cgroup,
            NsKind::Uts => LinuxNamespaceType::Uts,
            NsKind::Ipc => LinuxNamespaceType::Ipc,
            NsKind::User => LinuxNamespaceType::User,
            NsKind::Pid => LinuxNamespaceType::Pid,
            NsKind::Network => LinuxNamespaceType::Network,
            NsKind::Time => LinuxNamespaceType::Time,
        }
    }
}

impl Plan {
    /// Build the plan from the config's namespace list.
    pub fn from_spec(list: &[LinuxNamespace]) -> Plan {
        let mut plan = Plan::default();
        for t in JOIN_ORDER {
            if let Some(ns) = list.iter().find(|n| n.typ() == t) {
                match ns.path() {
                    Some(p) => plan.join.push((t.into(), p.clone())),
                    None => plan.new_flags |= clone_flag(t),
                }
            }
        }
        plan
    }

    /// Whether the container gets a new namespace of this kind.
    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        self.new_flags & clone_flag(t) != 0
    }

    /// Whether the container has its own namespace of this kind (new or joined).
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.creates(t)
            || self
                .join
                .iter()
                .any(|(k, _)| LinuxNamespaceType::from(*k) == t)
    }

    /// Whether setting up needs an intermediate process: joining a PID, user or time namespace,
    /// or creating a time namespace, only affects children, so a helper must do it and fork.
    pub fn needs_helper(&self) -> bool {
        self.creates(LinuxNamespaceType::Time)
            || self.join.iter().any(|(k, _)| !matches!(k, NsKind::Mount))
    }
}

/// Open a namespace file for `setns`.
pub fn open(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| format!("open namespace {}", path.display()))
}

/// `setns` into the namespace behind `fd`.
pub fn enter(fd: impl AsFd, kind: NsKind, what: &Path) -> Result<()> {
    use rustix::thread::LinkNameSpaceType as L;
    let t = match kind {
        NsKind::Mount => L::Mount,
        NsKind::Cgroup => L::ControlGroup,
        NsKind::Uts => L::HostNameAndNISDomainName,
        NsKind::Ipc => L::InterProcessCommunication,
        NsKind::User => L::User,
        NsKind::Pid => L::ProcessID,
        NsKind::Network => L::Network,
        NsKind::Time => L::Time,
    };
    rustix::thread::move_into_link_name_space(fd.as_fd(), Some(t)).ctx(|| {
        format!(
            "join {} namespace {}",
            proc_name(kind.into()),
            what.display()
        )
    })
}

/// Bring the loopback interface of this process's network namespace up, as a fresh namespace
/// has it down (Docker's `--network none` containers have it up, with 127.0.0.1).
pub fn loopback_up() -> Result<()> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ctx(|| "open a socket to configure the loopback interface")?;
    // SAFETY: an all-zero ifreq is valid; the name "lo" and its NUL fit in IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS fills ifr_flags of the valid ifreq we pass.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Error::sys(
            "read the loopback interface's flags",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the union's ifru_flags member is the one SIOCGIFFLAGS set.
    unsafe {
        // IFF_UP | IFF_RUNNING is 0x41: it fits the 16-bit flags field.
        #[allow(clippy::cast_possible_truncation)]
        let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        req.ifr_ifru.ifru_flags |= up;
    }
    // SAFETY: SIOCSIFFLAGS reads the valid ifreq we pass.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Error::sys(
            "bring the loopback interface up",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let b = LinuxNamespaceBuilder::default().typ(t);
        match path {
            Some(p) => b.path(p).build().unwrap(),
            None => b.build().unwrap(),
        }
    }

    #[test]
    fn plan_splits_new_and_joined_with_user_last() {
        let plan = Plan::from_spec(&[
            ns(LinuxNamespaceType::User, Some("/proc/1/ns/user")),
            ns(LinuxNamespaceType::Network, Some("/var/run/netns/x")),
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Mount, None),
        ]);
        assert!(plan.creates(LinuxNamespaceType::Pid));
        assert!(plan.creates(LinuxNamespaceType::Mount));
        assert!(!plan.creates(LinuxNamespaceType::Network));
        assert!(plan.has(LinuxNamespaceType::Network));
        assert!(!plan.has(LinuxNamespaceType::Uts));
        let kinds: Vec<_> = plan.join.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![NsKind::Network, NsKind::User]);
        assert!(plan.needs_helper());
    }

    #[test]
    fn fresh_namespaces_need_no_helper() {
        let plan = Plan::from_spec(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Mount, None),
        ]);
        assert!(!plan.needs_helper());
        let plan = Plan::from_spec(&[ns(LinuxNamespaceType::Time, None)]);
        assert!(plan.needs_helper());
    }
}
