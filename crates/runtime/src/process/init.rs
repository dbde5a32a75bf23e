//! The container's init, after it has re-executed itself or, inline, right after the clone
//! (see `spawn`): namespaces that need
//! a process of their own, the root filesystem, hooks, terminal, credentials; then it waits to be
//! started and becomes the user's program.

use std::convert::Infallible;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use oci_spec::runtime::LinuxNamespaceType;

use super::channel::{Channel, Msg};
use super::{InitConfig, InitRole, finalize};
use crate::console;
use crate::error::{Context, Error, Result};
use crate::hooks::{self, Kind};
use crate::namespaces::{self, NsKind};
use crate::rootfs;

/// Run the init. Returns only on failure.
/// `inherited`: the spec the runtime parsed, when this is an inline init (a copy of the
/// runtime's memory) and the runtime sent no config text to parse.
pub(super) fn run(
    ch: &Channel,
    cfg: &InitConfig,
    role: &InitRole,
    inherited: Option<&oci_spec::runtime::Spec>,
) -> Result<Infallible> {
    // Before anything else, and before a cgroup namespace is made: it must be rooted here.
    berth_cgroups::join_self(&role.join_cgroups)?;
    let parsed;
    let spec = match inherited.filter(|_| role.config.is_empty()) {
        Some(s) => s,
        None => {
            parsed =
                crate::spec::parse_json(&role.bundle.join("config.json"), role.config.as_bytes())?;
            &parsed
        }
    };
    let plan = &role.plan;
    if let Some((_, path)) = plan.join.iter().find(|(k, _)| *k == NsKind::Mount) {
        let fd = namespaces::open(path)?;
        namespaces::enter(&fd, NsKind::Mount, path)?;
    }
    if role.loopback_up {
        // Best effort: a container without a working loopback still runs.
        let _ = namespaces::loopback_up();
    }
    if plan.creates(LinuxNamespaceType::Cgroup) {
        // Only now, inside the container's cgroup, so that cgroup becomes the namespace root.
        // SAFETY: a new cgroup namespace changes no memory or fd state of this process.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) }
            .ctx(|| "create the cgroup namespace")?;
    }
    if !role.no_new_keyring {
        join_session_keyring(&cfg.id);
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        rustix::system::sethostname(h.as_bytes()).ctx(|| format!("set hostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        rustix::system::setdomainname(d.as_bytes()).ctx(|| format!("set domain name {d:?}"))?;
    }

    // Setup runs with umask 0 so modes land as configured; the process's umask is set later.
    rustix::process::umask(rustix::fs::Mode::empty());
    let userns = plan.has(LinuxNamespaceType::User);
    let ctx = rootfs::Ctx {
        spec,
        rootfs: &role.rootfs,
        bundle: &role.bundle,
        userns,
        cgroupns: plan.creates(LinuxNamespaceType::Cgroup),
        cgroup_mounts: &role.cgroup_mounts,
        cgroup_symlinks: &role.cgroup_symlinks,
    };
    let prepared = rootfs::prepare(&ctx)?;

    let hooks_cfg = spec.hooks().as_ref();
    if !Kind::Prestart.list(hooks_cfg).is_empty() || !Kind::CreateRuntime.list(hooks_cfg).is_empty()
    {
        ch.send(&Msg::RunCreateRuntimeHooks)?;
        ch.expect("hooks to finish", |m| matches!(m, Msg::HooksDone))?;
    }
    hooks::run(Kind::CreateContainer, hooks_cfg, &cfg.hook_state)?;

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("config.json has no process".into()))?;
    let mut slave = None;
    if process.terminal().unwrap_or(false) {
        let sock = cfg.console_fd.ok_or_else(|| {
            Error::InvalidArgument("process.terminal is set but no console socket was given".into())
        })?;
        let pty = console::open_pty(prepared.root())?;
        console::bind_console(prepared.root(), &pty)?;
        if let Some(size) = process.console_size() {
            console::set_size(&pty.master, clamp(size.height()), clamp(size.width()))?;
        }
        // SAFETY: the parent passed the connected console socket at this fd number for us alone.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        console::send_fd(&sock, pty.master.as_fd(), &pty.name)?;
        slave = Some(pty.slave);
    }

    rootfs::enter(prepared, spec, &role.rootfs, role.no_pivot)?;

    let program = finalize::resolve(process)?;
    if let Some(slave) = &slave {
        console::become_session_leader_on(slave)?;
    }
    drop(slave);
    finalize::limits(process)?;
    let listener = finalize::credentials(process, cfg.seccomp.as_ref(), userns)?;
    finalize::cwd(process)?;
    finalize::check_executable(&program)?;
    let send_listener = |fd| match &cfg.seccomp_listener {
        Some(path) => {
            finalize::send_listener(path, cfg.seccomp_metadata.as_deref(), &cfg.hook_state, fd)
        }
        None => Ok(()),
    };
    if let Some(fd) = listener {
        send_listener(fd)?;
    }

    // Ready: from now on the runtime may exit, and we must not die with it.
    rustix::process::set_parent_process_death_signal(None)
        .ctx(|| "clear the parent-death signal")?;
    ch.send(&Msg::Ready)?;
    match role.fifo_fd {
        Some(fd) => {
            // SAFETY: the parent passed the exec fifo (opened read-write) at this fd for us alone.
            let fifo = unsafe { OwnedFd::from_raw_fd(fd) };
            wait_for_start(&fifo)?;
        }
        None => {
            ch.expect("the start signal", |m| matches!(m, Msg::Start))?;
        }
    }
    hooks::run(Kind::StartContainer, hooks_cfg, &cfg.hook_state)?;
    finalize::exec(
        &program,
        process,
        cfg.seccomp.as_ref(),
        cfg.preserve_fds,
        send_listener,
    )
}

fn clamp(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// Block until `start` writes a byte into the exec fifo.
fn wait_for_start(fifo: &OwnedFd) -> Result<()> {
    let mut b = [0u8; 1];
    loop {
        match rustix::io::read(fifo, &mut b) {
            Ok(1) => return Ok(()),
            Ok(_) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::errno("wait on the exec fifo", e)),
        }
    }
}

/// A session keyring of the container's own, so it does not share the host's keys.
fn join_session_keyring(id: &str) {
    let Ok(name) = std::ffi::CString::new(id) else {
        return;
    };
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING reads one NUL-terminated name.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_JOIN_SESSION_KEYRING,
            name.as_ptr(),
        )
    };
    if rc < 0 {
        // Keyrings can be unavailable (ENOSYS) or refused in user namespaces (EACCES/EDQUOT):
        // carry on with the inherited one, as runc does.
        tracing::debug!(
            "could not create a session keyring: {}",
            std::io::Error::last_os_error()
        );
    }
}
