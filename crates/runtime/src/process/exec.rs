//! A process joining a running container (`berth-runtime exec`), after its re-exec: it enters
//! the container's namespaces (the pid namespace was entered by the helper that forked it), sets
//! up its terminal and credentials, and becomes the requested program.

use std::convert::Infallible;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::channel::Channel;
use super::{ExecRole, InitConfig, finalize};
use crate::console;
use crate::error::{Error, Result};
use crate::namespaces::{self, NsKind};
use crate::rootfs::safepath::Root;

/// Run the exec'd process. Returns only on failure.
pub(super) fn run(_ch: &Channel, cfg: &InitConfig, role: &ExecRole) -> Result<Infallible> {
    // Everything but the user namespace first, while we are still host root; then the user
    // namespace (namespaces::JOIN_ORDER).
    let mut user = None;
    for &(kind, fd) in &role.namespaces {
        // SAFETY: the parent opened these namespace files for us and passed them at these numbers.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let what = Path::new("/proc/<container>/ns").join(namespaces::proc_name(kind.into()));
        if kind == NsKind::User {
            user = Some((fd, what));
            continue;
        }
        namespaces::enter(&fd, kind, &what)?;
    }
    if let Some((fd, what)) = user {
        namespaces::enter(&fd, NsKind::User, &what)?;
    }
    let process = cfg
        .process
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("exec was given no process".into()))?;
    let mut slave = None;
    if process.terminal().unwrap_or(false) {
        let sock = cfg.console_fd.ok_or_else(|| {
            Error::InvalidArgument(
                "a terminal was requested but no console socket was given".into(),
            )
        })?;
        let root = Root::open(Path::new("/"))?;
        let pty = console::open_pty(&root)?;
        if let Some(size) = process.console_size() {
            console::set_size(&pty.master, clamp(size.height()), clamp(size.width()))?;
        }
        // SAFETY: the parent passed the connected console socket at this fd number for us alone.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        console::send_fd(&sock, pty.master.as_fd(), &pty.name)?;
        slave = Some(pty.slave);
    }
    let program = finalize::resolve(process)?;
    if let Some(slave) = &slave {
        console::become_session_leader_on(slave)?;
    }
    drop(slave);
    finalize::limits(process)?;
    let listener = finalize::credentials(process, cfg.seccomp.as_ref(), role.userns)?;
    // A listener for an exec'd process has no one to go to but the configured path.
    let send = |fd| match &cfg.seccomp_listener {
        Some(path) => {
            finalize::send_listener(path, cfg.seccomp_metadata.as_deref(), &cfg.hook_state, fd)
        }
        None => Ok(()),
    };
    if let Some(fd) = listener {
        send(fd)?;
    }
    finalize::cwd(process)?;
    finalize::check_executable(&program)?;
    rustix::process::set_parent_process_death_signal(None)
        .map_err(|e| Error::errno("clear the parent-death signal", e))?;
    finalize::exec(
        &program,
        process,
        cfg.seccomp.as_ref(),
        cfg.preserve_fds,
        send,
    )
}

fn clamp(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}
