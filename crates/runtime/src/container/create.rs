//! `create`: everything up to a container whose init waits to be started.
//!
//! All validation (config, rlimits, cgroup controllers, seccomp compilation, console socket)
//! happens before the state directory is claimed. From the claim on, a [`Cleanup`] guard undoes
//! every step (child killed and reaped, cgroup removed, state directory removed) if anything
//! fails, so a failed `create` leaves nothing behind.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_cgroups::{Layout, Manager};
use oci_spec::runtime::{LinuxResources, Spec};

use super::Runtime;
use crate::error::{Context, Error, Result};
use crate::hooks::{self, Kind};
use crate::namespaces::Plan;
use crate::process::channel::{Channel, Msg};
use crate::process::spawn::{self, Request};
use crate::process::{InitConfig, InitRole, Role};
use crate::rootfs::{CgroupMount, devices};
use crate::state::{self, ContainerState, EXEC_FIFO, Status};
use crate::{console, spec};

/// Options of `create` (and `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Unix socket to send the terminal master to.
    pub console_socket: Option<PathBuf>,
    /// File to write the init's pid to.
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send a pidfd of the init to.
    pub pidfd_socket: Option<PathBuf>,
    /// Use `MS_MOVE` + `chroot` instead of `pivot_root`.
    pub no_pivot: bool,
    /// Do not create a session keyring.
    pub no_new_keyring: bool,
    /// Pass fds 3..3+N to the container.
    pub preserve_fds: u32,
}

/// How the init waits to be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartMode {
    /// On the exec fifo, for a separate `start` command.
    Fifo,
    /// On the setup channel, for `run` in the same process.
    Channel,
}

/// Undo the steps of a failed create.
#[derive(Debug)]
pub(crate) struct Cleanup<'a> {
    rt: &'a Runtime,
    id: String,
    claimed: bool,
    cgroup: Option<Manager>,
    pid: Option<i32>,
}

impl<'a> Cleanup<'a> {
    fn new(rt: &'a Runtime, id: &str) -> Cleanup<'a> {
        Cleanup {
            rt,
            id: id.to_string(),
            claimed: false,
            cgroup: None,
            pid: None,
        }
    }

    /// Everything worked: keep it all.
    pub(crate) fn disarm(mut self) {
        self.claimed = false;
        self.cgroup = None;
        self.pid = None;
    }

    /// Undo now, returning the original error with any cleanup failure attached.
    pub(crate) fn fail(mut self, error: Error) -> Error {
        match self.undo() {
            Ok(()) => error,
            Err(cleanup) => Error::WithCleanup {
                error: Box::new(error),
                cleanup: Box::new(cleanup),
            },
        }
    }

    fn undo(&mut self) -> Result<()> {
        if let Some(pid) = self.pid.take() {
            spawn::kill_and_reap(pid);
        }
        let mut first_err = None;
        if let Some(mgr) = self.cgroup.take() {
            if let Err(e) = mgr.kill_all(libc::SIGKILL).and_then(|()| mgr.destroy()) {
                first_err = Some(Error::from(e));
            }
        }
        if self.claimed {
            self.claimed = false;
            if let Err(e) = self.rt.root.remove(&self.id) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.undo() {
            tracing::error!(
                "cleaning up after a failed create: {}",
                crate::error::chain(&e)
            );
        }
    }
}

/// A container whose init has reported ready.
#[derive(Debug)]
pub(crate) struct Created<'a> {
    pub(crate) state: ContainerState,
    pub(crate) channel: Channel,
    pub(crate) cleanup: Cleanup<'a>,
    /// Our end of the internal console socket (`run -t` without `--console-socket`).
    pub(crate) console: Option<OwnedFd>,
}

/// Everything validated before anything is touched.
struct Checked {
    spec: Spec,
    config: Vec<u8>,
    bundle: PathBuf,
    rootfs: PathBuf,
    plan: Plan,
    cgroup: Manager,
    resources: LinuxResources,
    seccomp: Option<berth_seccomp::Program>,
    console: Option<OwnedFd>,
    internal_console: Option<OwnedFd>,
}

fn check(rt: &Runtime, opts: &CreateOpts, mode: StartMode) -> Result<Checked> {
    state::validate_id(&opts.id)?;
    let bundle =
        std::fs::canonicalize(&opts.bundle).ctx(|| format!("bundle {}", opts.bundle.display()))?;
    let (spec, config) = spec::read(&bundle)?;
    spec::validate(&spec, &bundle)?;
    let rootfs = spec::rootfs_path(&spec, &bundle)?;
    let rootfs = std::fs::canonicalize(&rootfs).ctx(|| format!("rootfs {}", rootfs.display()))?;
    let linux = spec.linux().as_ref().expect("validated");
    let plan = Plan::from_spec(linux.namespaces().as_deref().unwrap_or_default());

    let layout = Layout::detect()?;
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let cgroup = Manager::resolve(
        &layout,
        cgroups_path.as_deref(),
        &opts.id,
        rt.systemd_cgroup,
    )?;
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    rules.extend(devices::default_cgroup_rules());
    resources.set_devices(Some(rules));
    cgroup.check(&resources)?;

    let seccomp = match linux.seccomp() {
        Some(profile) => {
            let p = crate::seccomp_cache::compile(rt.root.path(), profile)?;
            for w in &p.warnings {
                tracing::warn!("seccomp: {w}");
            }
            Some(p)
        }
        None => None,
    };

    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let (console, internal_console) = match (&opts.console_socket, terminal, mode) {
        (Some(path), true, _) => (Some(console::connect(path)?), None),
        (Some(_), false, _) => {
            return Err(Error::InvalidArgument(
                "--console-socket was given but process.terminal is false in config.json".into(),
            ));
        }
        (None, true, StartMode::Fifo) => {
            return Err(Error::InvalidArgument(
                "process.terminal is true but no --console-socket was given to receive the terminal".into(),
            ));
        }
        (None, true, StartMode::Channel) => {
            let (ours, theirs) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::STREAM,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .ctx(|| "create a console socket pair")?;
            (Some(theirs), Some(ours))
        }
        (None, false, _) => (None, None),
    };
    Ok(Checked {
        spec,
        config,
        bundle,
        rootfs,
        plan,
        cgroup,
        resources,
        seccomp,
        console,
        internal_console,
    })
}

fn id_maps(spec: &Spec) -> Option<(String, String)> {
    let linux = spec.linux().as_ref()?;
    let fmt = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.as_deref()
            .unwrap_or_default()
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    Some((fmt(linux.uid_mappings()), fmt(linux.gid_mappings())))
}

fn time_offsets(spec: &Spec) -> Option<String> {
    let offsets = spec.linux().as_ref()?.time_offsets().as_ref()?;
    Some(
        offsets
            .iter()
            .map(|(clock, o)| {
                format!(
                    "{clock} {} {}\n",
                    o.secs().unwrap_or(0),
                    o.nanosecs().unwrap_or(0)
                )
            })
            .collect(),
    )
}

/// Create the container up to "init ready".
pub(crate) fn create<'a>(
    rt: &'a Runtime,
    opts: &CreateOpts,
    mode: StartMode,
) -> Result<Created<'a>> {
    let c = check(rt, opts, mode)?;
    let mut cleanup = Cleanup::new(rt, &opts.id);
    let dir = rt.root.claim(&opts.id)?;
    cleanup.claimed = true;
    match create_claimed(rt, opts, mode, c, &dir, &mut cleanup) {
        Ok((state, channel, console)) => Ok(Created {
            state,
            channel,
            cleanup,
            console,
        }),
        Err(e) => Err(cleanup.fail(e)),
    }
}

fn create_claimed(
    rt: &Runtime,
    opts: &CreateOpts,
    mode: StartMode,
    c: Checked,
    dir: &Path,
    cleanup: &mut Cleanup<'_>,
) -> Result<(ContainerState, Channel, Option<OwnedFd>)> {
    let mut st = ContainerState {
        id: opts.id.clone(),
        bundle: c.bundle.clone(),
        rootfs: c.rootfs.clone(),
        status: Status::Creating,
        pid: 0,
        pid_start: 0,
        created: state::now_rfc3339(),
        owner: state::user_name(rustix::process::getuid().as_raw()),
        cgroup: c.cgroup.paths().clone(),
        systemd_cgroup: rt.systemd_cgroup,
        seccomp: c.seccomp.clone(),
        oci_version: c.spec.version().clone(),
        annotations: c.spec.annotations().clone(),
        hooks: c.spec.hooks().clone(),
        namespaces: c.plan.clone(),
        seccomp_listener: c
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .and_then(|s| s.listener_path().clone()),
    };
    rt.root.save(&st)?;
    rt.root.save_config(&opts.id, &c.config)?;
    let config_text = String::from_utf8(c.config.clone())
        .map_err(|_| Error::InvalidArgument("config.json is not valid UTF-8".into()))?;

    let fifo = match mode {
        StartMode::Fifo => {
            let path = dir.join(EXEC_FIFO);
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                &path,
                rustix::fs::Mode::from_raw_mode(0o622),
            )
            .ctx(|| format!("create {}", path.display()))?;
            Some(
                rustix::fs::open(
                    &path,
                    rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .ctx(|| format!("open {}", path.display()))?,
            )
        }
        StartMode::Channel => None,
    };

    c.cgroup.create()?;
    cleanup.cgroup = Some(c.cgroup.clone());
    c.cgroup.apply(&c.resources)?;

    let userns_new = c.plan.creates(oci_spec::runtime::LinuxNamespaceType::User);
    let mut keep: Vec<i32> = (3..3 + i32::try_from(opts.preserve_fds).unwrap_or(0)).collect();
    keep.extend(fifo.as_ref().map(|f| f.as_raw_fd()));
    keep.extend(c.console.as_ref().map(|f| f.as_raw_fd()));
    // Moving a process between cgroups with a write to `cgroup.procs` takes the kernel's global
    // threadgroup lock, which waits for an RCU grace period: about 1 ms, sometimes 20. So,
    // unless a user namespace stands in the way of writing host cgroup files, the init is born
    // in its cgroup2 directory (`CLONE_INTO_CGROUP`) and moves its single thread into the v1
    // ones itself, which the kernel does without that lock.
    let self_join = !c.plan.has(oci_spec::runtime::LinuxNamespaceType::User);
    let cgroup2_dir = match c.cgroup.unified_dir().filter(|_| self_join) {
        Some(dir) => Some(
            rustix::fs::open(
                dir,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ctx(|| format!("open cgroup {}", dir.display()))?,
        ),
        None => None,
    };
    // A new network namespace without a path: the caller's own, fresh one when it has made
    // one for this container (see `Runtime::docker_netns`).
    let wants_new_net = c
        .plan
        .creates(oci_spec::runtime::LinuxNamespaceType::Network);
    let mut clone_plan = c.plan.clone();
    if rt.docker_netns
        && rt.caller_netns_is_fresh
        && wants_new_net
        && !c.plan.has(oci_spec::runtime::LinuxNamespaceType::User)
    {
        clone_plan.new_flags &=
            !crate::namespaces::clone_flag(oci_spec::runtime::LinuxNamespaceType::Network);
    }
    let spawned = spawn::spawn(Request {
        plan: clone_plan,
        id_maps: if userns_new { id_maps(&c.spec) } else { None },
        time_offsets: time_offsets(&c.spec),
        pid_ns: None,
        keep_fds: keep,
        cgroup2: cgroup2_dir.as_ref().map(|f| f.as_raw_fd()),
        inline_init: rt.inline_init,
        inline_spec: Some(std::ptr::NonNull::from(&c.spec)),
    })?;
    drop(cgroup2_dir);
    let pid = spawned.pid;
    cleanup.pid = Some(pid);
    let join_cgroups = if self_join {
        if !spawned.in_cgroup2 {
            c.cgroup.add_process_unified(pid)?;
        }
        c.cgroup.v1_dirs()
    } else {
        c.cgroup.add_process(pid)?;
        Vec::new()
    };

    st.pid = pid;
    let hook_state = st.oci_state(Status::Creating);
    let linux = c.spec.linux().as_ref().expect("validated");
    let cgroup_mounts: Vec<CgroupMount> = c
        .cgroup
        .container_mounts()
        .into_iter()
        .map(Into::into)
        .collect();
    let config = InitConfig {
        id: opts.id.clone(),
        process: None,
        seccomp: c.seccomp.clone(),
        seccomp_listener: linux
            .seccomp()
            .as_ref()
            .and_then(|s| s.listener_path().clone()),
        seccomp_metadata: linux
            .seccomp()
            .as_ref()
            .and_then(|s| s.listener_metadata().clone()),
        console_fd: c.console.as_ref().map(|f| f.as_raw_fd()),
        preserve_fds: opts.preserve_fds,
        hook_state: hook_state.clone(),
        role: Role::Init(Box::new(InitRole {
            // An inline init has the spec already (see `spawn::Request::inline_spec`).
            config: if spawned.exe.is_none() {
                String::new()
            } else {
                config_text
            },
            bundle: c.bundle.clone(),
            rootfs: c.rootfs.clone(),
            plan: c.plan.clone(),
            no_pivot: opts.no_pivot,
            no_new_keyring: opts.no_new_keyring,
            fifo_fd: fifo.as_ref().map(|f| f.as_raw_fd()),
            cgroup_mounts,
            cgroup_symlinks: c.cgroup.container_symlinks(),
            join_cgroups,
            loopback_up: rt.docker_netns && wants_new_net,
        })),
    };
    spawned.channel.send(&Msg::Init(Box::new(config)))?;
    // The init is busy with its root file system now; pay for the close meanwhile.
    drop(spawned.exe);
    // The child has its copies now.
    drop(fifo);
    drop(c.console);

    loop {
        match spawned.channel.recv()? {
            Some(Msg::RunCreateRuntimeHooks) => {
                let hooks = c.spec.hooks().as_ref();
                hooks::run(Kind::Prestart, hooks, &hook_state)?;
                hooks::run(Kind::CreateRuntime, hooks, &hook_state)?;
                spawned.channel.send(&Msg::HooksDone)?;
            }

            Some(Msg::Ready) => break,
            Some(Msg::Error(e)) => return Err(Error::Child(e)),
            Some(m) => {
                return Err(Error::Child(format!(
                    "protocol error: unexpected {m:?} from the container init"
                )));
            }
            None => {
                let how = spawn::wait(pid);
                cleanup.pid = None;
                return Err(Error::Child(format!(
                    "the container init {how} before it was ready"
                )));
            }
        }
    }

    st.pid_start = state::proc_stat(pid).map(|(_, s)| s).unwrap_or(0);
    st.status = Status::Created;
    // `run` saves the state once the process runs; writing it here too would put a second
    // replace-by-rename of state.json on the start path.
    if mode == StartMode::Fifo {
        rt.root.save(&st)?;
    }
    if let Some(path) = &opts.pid_file {
        write_pid_file(path, pid)?;
    }
    if let Some(path) = &opts.pidfd_socket {
        send_pidfd(path, pid)?;
    }
    Ok((st, spawned.channel, c.internal_console))
}

/// Write `pid` to `path` atomically (temp file + rename), as the shim reads it right after.
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, pid.to_string()).ctx(|| format!("write pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("rename pid file to {}", path.display()))
}

fn send_pidfd(path: &Path, pid: i32) -> Result<()> {
    let p = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| Error::InvalidArgument("bad pid".into()))?;
    let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
        .ctx(|| format!("open a pidfd for {pid}"))?;
    let sock = console::connect(path)?;
    console::send_fd(&sock, fd.as_fd(), "pidfd")
}
