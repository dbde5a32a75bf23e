//! The processes of the fork chain: the parent side ([`spawn`]), the container init
//! (`init`), a process joining a running container (`exec`), and the final steps both share
//! (`finalize`).
//!
//! A binary that uses this crate in-process must call [`entrypoint`] first thing in `main`:
//! children re-execute the current binary, which then becomes the init (except an inline init,
//! see `spawn`, which becomes the init without an exec).

pub mod channel;
mod exec;
mod finalize;
mod init;
pub mod spawn;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::ptr::NonNull;

use oci_spec::runtime::{Process, Spec};
use serde::{Deserialize, Serialize};

use crate::error::{Error, chain};
use crate::namespaces::{NsKind, Plan};
use crate::rootfs::CgroupMount;
use crate::state::OciState;
use channel::{Channel, Msg};

/// Everything the child needs, sent by the parent as the first message.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitConfig {
    /// Container id.
    pub id: String,
    /// The process to run (`None` for the init: it runs the config's).
    pub process: Option<Process>,
    /// Compiled seccomp filter, if any.
    pub seccomp: Option<berth_seccomp::Program>,
    /// Where to send the seccomp notification fd (`linux.seccomp.listenerPath`).
    pub seccomp_listener: Option<PathBuf>,
    /// `linux.seccomp.listenerMetadata`.
    pub seccomp_metadata: Option<String>,
    /// Connected `--console-socket`, inherited at this fd number.
    pub console_fd: Option<i32>,
    /// Fds 3..3+N pass through to the user process.
    pub preserve_fds: u32,
    /// State for `createContainer`/`startContainer` hooks and the seccomp listener.
    pub hook_state: OciState,
    /// What kind of process this is.
    pub role: Role,
}

/// The child's role.
#[derive(Debug, Serialize, Deserialize)]
pub enum Role {
    /// The container's init.
    Init(Box<InitRole>),
    /// A process joining a running container.
    Exec(ExecRole),
}

/// Init-only settings.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitRole {
    /// The config, as the bytes of `config.json` (the init parses it itself, so `create`
    /// never serialises a whole config). Empty for an inline init, which has the runtime's
    /// parsed spec in its copy of the runtime's memory.
    pub config: String,
    /// Bundle path.
    pub bundle: PathBuf,
    /// Rootfs path.
    pub rootfs: PathBuf,
    /// Namespace plan.
    pub plan: Plan,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// The exec fifo, inherited at this fd (create mode); `None` in run mode.
    pub fifo_fd: Option<i32>,
    /// `/sys/fs/cgroup` mounts.
    pub cgroup_mounts: Vec<CgroupMount>,
    /// Symlinks beside them.
    pub cgroup_symlinks: Vec<(String, String)>,
    /// v1 cgroup directories the init moves itself into, first thing (see
    /// `berth_cgroups::join_self`); empty when the runtime moved it.
    pub join_cgroups: Vec<PathBuf>,
    /// Bring up the loopback interface of the container's new network namespace
    /// (`Runtime::docker_netns`).
    #[serde(default)]
    pub loopback_up: bool,
}

/// Exec-only settings.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecRole {
    /// Namespace fds to join (inherited), pid excluded (the helper joined it).
    pub namespaces: Vec<(NsKind, i32)>,
    /// The container has a user namespace.
    pub userns: bool,
}

/// If this process was started as a container init (see [`spawn::INIT_ENV`]), run it and never
/// return; otherwise return and let `main` carry on.
pub fn entrypoint() {
    let Some(val) = std::env::var_os(spawn::INIT_ENV) else {
        return;
    };
    let fd: i32 = match val.to_str().and_then(|s| s.parse().ok()) {
        Some(fd) if fd > 2 => fd,
        _ => {
            eprintln!(
                "berth-runtime: {} is set but is not a file descriptor number",
                spawn::INIT_ENV
            );
            std::process::exit(1);
        }
    };
    // SAFETY: the parent placed our end of the setup channel at this fd number and nothing else
    // in this freshly exec'd process owns it.
    let ch = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(fd) });
    std::process::exit(serve(&ch, None));
}

/// The init run by the cloned child itself (`Request::inline_init`): `fd` is its end of the
/// setup channel. Never returns; leaves with `_exit` so nothing of the parent's copied state
/// (buffers, atexit handlers) runs twice.
pub(crate) fn run_inline(fd: i32, spec: Option<NonNull<Spec>>) -> ! {
    // SAFETY: the spawner cloned us with this end of the setup channel at `fd`; nothing else in
    // this child owns it.
    let ch = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: `spawn`'s caller keeps the spec alive and unchanged until `spawn` returns, which
    // is after the clone; this child's memory is a copy taken then, so the copy is at the same
    // address, and nothing in this single-threaded child changes it.
    let spec = spec.map(|p| unsafe { p.as_ref() });
    let code = serve(&ch, spec);
    // SAFETY: ends this process without running anything else.
    unsafe { libc::_exit(code) }
}

/// Receive the configuration and become the init (or exec'd process); returns the exit code
/// on failure (success ends in `execve`).
fn serve(ch: &Channel, inherited: Option<&Spec>) -> i32 {
    let cfg = match ch.recv() {
        Ok(Some(Msg::Init(cfg))) => cfg,
        // The runtime went away before configuring us: nothing to do.
        _ => return 1,
    };
    // Other container processes must not be able to ptrace us or open our /proc files while we
    // still hold host resources.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let result = match cfg.role {
        Role::Init(ref r) => init::run(ch, &cfg, r, inherited),
        Role::Exec(ref r) => exec::run(ch, &cfg, r),
    };
    let Err(e) = result;
    // The runtime closed the channel: it is aborting the create (and reports why itself).
    if matches!(e, Error::ChannelClosed(_)) {
        return 1;
    }
    // If the channel is gone there is no one to tell; stderr is the container's, which is the
    // best remaining place.
    if ch.send(&Msg::Error(chain(&e))).is_err() {
        eprintln!("berth-runtime init: {}", chain(&e));
    }
    1
}
