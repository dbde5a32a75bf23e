//! `exec`: run another process in a running container.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::create::write_pid_file;
use super::{Runtime, foreground};
use crate::error::{Context, Error, Result};
use crate::namespaces::{self, NsKind, Plan};
use crate::process::channel::Msg;
use crate::process::spawn::{self, Request};
use crate::process::{ExecRole, InitConfig, Role};
use crate::state::{Status, process_alive};

/// Options of `exec`.
#[derive(Debug, Clone)]
pub struct ExecOpts {
    /// The process to run (from `--process` or built from the command line).
    pub process: Process,
    /// Unix socket to send the terminal master to.
    pub console_socket: Option<PathBuf>,
    /// File to write the process's pid to.
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs instead of waiting for it.
    pub detach: bool,
    /// Pass fds 3..3+N.
    pub preserve_fds: u32,
    /// Allow exec into a paused container.
    pub ignore_paused: bool,
}

impl Runtime {
    /// Run a process in the container. Returns its exit code, or 0 with `detach`.
    pub fn exec(&self, id: &str, opts: &ExecOpts) -> Result<i32> {
        let st = self.root.load(id)?;
        let status = st.current_status(&self.root.dir(id));
        match status {
            Status::Running | Status::Created => {}
            Status::Paused if opts.ignore_paused => {}
            Status::Paused => {
                return Err(Error::WrongStatus {
                    status,
                    message: "cannot exec in a paused container (use --ignore-paused to override)"
                        .into(),
                });
            }
            s => {
                return Err(Error::WrongStatus {
                    status: s,
                    message: format!("cannot exec in a {s} container"),
                });
            }
        }
        crate::spec::validate_process(
            &opts.process,
            std::path::Path::new("process.json"),
            "process",
        )?;
        let terminal = opts.process.terminal().unwrap_or(false);
        let (console, internal) = match (&opts.console_socket, terminal) {
            (Some(p), true) => (Some(crate::console::connect(p)?), None),
            (Some(_), false) => {
                return Err(Error::InvalidArgument(
                    "--console-socket needs a terminal (-t)".into(),
                ));
            }
            (None, true) if opts.detach => {
                return Err(Error::InvalidArgument(
                    "a detached exec with a terminal needs --console-socket".into(),
                ));
            }
            (None, true) => {
                let (ours, theirs) = rustix::net::socketpair(
                    rustix::net::AddressFamily::UNIX,
                    rustix::net::SocketType::STREAM,
                    rustix::net::SocketFlags::CLOEXEC,
                    None,
                )
                .ctx(|| "create a console socket pair")?;
                (Some(theirs), Some(ours))
            }
            (None, false) => (None, None),
        };

        // Open the container's namespaces through its init, then make sure the pid was not
        // reused while we did.
        let plan = st.namespaces.clone();
        let mut pid_ns = None;
        let mut fds: Vec<(NsKind, OwnedFd)> = Vec::new();
        for t in namespaces::JOIN_ORDER {
            if !plan.has(t) {
                continue;
            }
            let path = PathBuf::from(format!("/proc/{}/ns/{}", st.pid, namespaces::proc_name(t)));
            let fd = namespaces::open(&path)?;
            if t == LinuxNamespaceType::Pid {
                pid_ns = Some(fd);
            } else {
                fds.push((t.into(), fd));
            }
        }
        if !process_alive(st.pid, st.pid_start) {
            return Err(Error::WrongStatus {
                status: Status::Stopped,
                message: "cannot exec in a stopped container".into(),
            });
        }
        let signals = if opts.detach {
            None
        } else {
            Some(foreground::Signals::block()?)
        };
        let mut keep: Vec<i32> = (3..3 + i32::try_from(opts.preserve_fds).unwrap_or(0)).collect();
        keep.extend(fds.iter().map(|(_, f)| f.as_raw_fd()));
        keep.extend(console.as_ref().map(|f| f.as_raw_fd()));
        let spawned = spawn::spawn(Request {
            plan: Plan::default(),
            id_maps: None,
            time_offsets: None,
            pid_ns,
            keep_fds: keep,
            cgroup2: None,
            // An exec joins a running container's pid namespace: always a sealed re-exec.
            inline_init: false,
            inline_spec: None,
        })?;
        let pid = spawned.pid;
        let fail = |e: Error| {
            spawn::kill_and_reap(pid);
            e
        };
        st.cgroup_manager()
            .add_process(pid)
            .map_err(|e| fail(e.into()))?;
        let config = InitConfig {
            id: id.to_string(),
            process: Some(opts.process.clone()),
            seccomp: st.seccomp.clone(),
            seccomp_listener: st.seccomp_listener.clone(),
            seccomp_metadata: None,
            console_fd: console.as_ref().map(|f| f.as_raw_fd()),
            preserve_fds: opts.preserve_fds,
            hook_state: st.oci_state(status),
            role: Role::Exec(ExecRole {
                namespaces: fds.iter().map(|(k, f)| (*k, f.as_raw_fd())).collect(),
                userns: plan.has(LinuxNamespaceType::User),
            }),
        };
        spawned
            .channel
            .send(&Msg::Init(Box::new(config)))
            .map_err(fail)?;
        drop(fds);
        drop(console);
        let tty = match internal {
            Some(sock) => Some(crate::console::recv_fd(&sock).map_err(fail)?),
            None => None,
        };
        match spawned.channel.recv().map_err(fail)? {
            None => {}
            Some(Msg::Error(e)) => {
                spawn::wait(pid);
                return Err(Error::Child(e));
            }
            Some(m) => {
                return Err(fail(Error::Child(format!(
                    "protocol error: unexpected {m:?}"
                ))));
            }
        }
        if let Some(path) = &opts.pid_file {
            write_pid_file(path, pid)?;
        }
        match signals {
            None => Ok(0),
            Some(signals) => foreground::wait(pid, &signals, tty),
        }
    }
}
