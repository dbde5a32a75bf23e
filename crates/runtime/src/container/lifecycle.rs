//! `create`, `start`, `run`, `state`, `list`, `kill`, `delete`, `ps`, `pause`, `resume`, `update`.

use std::io::Write;

use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::create::{self, CreateOpts, StartMode};
use super::{Runtime, foreground};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, Kind};
use crate::process::channel::Msg;
use crate::state::{ContainerState, EXEC_FIFO, OciState, Status};

/// One line of `list`.
#[derive(Debug, Clone)]
pub struct ListEntry {
    /// The state document.
    pub state: OciState,
}

fn wrong(status: Status, message: impl Into<String>) -> Error {
    Error::WrongStatus {
        status,
        message: message.into(),
    }
}

impl Runtime {
    /// `create`: set the container up; its init waits for `start`. Returns the init's pid.
    pub fn create(&self, opts: &CreateOpts) -> Result<i32> {
        let created = create::create(self, opts, StartMode::Fifo)?;
        let pid = created.state.pid;
        created.cleanup.disarm();
        Ok(pid)
    }

    /// `start`: let a created container's init run the user program.
    pub fn start(&self, id: &str) -> Result<()> {
        self.start_begin(id)?.finish()
    }

    /// The first half of `start`: the container's lock taken, its status checked and its
    /// exec fifo opened; the init still waits. [`Starting::finish`] lets it run. A caller that
    /// reports the start to someone (the shim) can do so in between, so that its report is not
    /// queued behind the user program: the init, woken by the fifo, tends to take over the
    /// caller's CPU at once.
    pub fn start_begin(&self, id: &str) -> Result<Starting> {
        let lock = self.root.lock(id)?;
        let st = self.root.load(id)?;
        let dir = self.root.dir(id);
        match st.current_status(&dir) {
            Status::Created => {}
            Status::Stopped => {
                return Err(wrong(
                    Status::Stopped,
                    "cannot start a container that has stopped",
                ));
            }
            s @ (Status::Running | Status::Paused) => {
                return Err(wrong(s, "cannot start an already running container"));
            }
            Status::Creating => {
                return Err(wrong(
                    Status::Creating,
                    "cannot start a container that is still being created",
                ));
            }
        }
        let fifo = dir.join(EXEC_FIFO);
        // Opening the fifo for writing without blocking succeeds only while the init holds
        // its reading end: past this point the start can no longer find the init gone.
        let fd = rustix::fs::open(
            &fifo,
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            if e == rustix::io::Errno::NXIO {
                wrong(Status::Stopped, "cannot start a container that has stopped")
            } else {
                Error::errno(format!("open {}", fifo.display()), e)
            }
        })?;
        Ok(Starting {
            root: self.root.clone(),
            _lock: lock,
            state: st,
            fifo,
            fd,
        })
    }

    /// `run`: create and start in one go; in the foreground, wait for the container and delete
    /// it (unless `keep`), returning its exit code. With `detach`, return 0 once it runs.
    pub fn run(&self, opts: &CreateOpts, detach: bool, keep: bool) -> Result<i32> {
        if !detach {
            foreground::become_subreaper()?;
        }
        let signals = if detach {
            None
        } else {
            Some(foreground::Signals::block()?)
        };
        let created = create::create(self, opts, StartMode::Channel)?;
        let create::Created {
            mut state,
            channel,
            cleanup,
            console,
        } = created;
        let tty = match console {
            Some(sock) => match crate::console::recv_fd(&sock) {
                Ok(fd) => Some(fd),
                Err(e) => return Err(cleanup.fail(e)),
            },
            None => None,
        };
        if let Err(e) = channel.send(&Msg::Start) {
            return Err(cleanup.fail(e));
        }
        match channel.recv() {
            Ok(None) => {}
            Ok(Some(Msg::Error(e))) => return Err(cleanup.fail(Error::Child(e))),
            Ok(Some(m)) => {
                return Err(cleanup.fail(Error::Child(format!("protocol error: unexpected {m:?}"))));
            }
            Err(e) => return Err(cleanup.fail(e)),
        }
        cleanup.disarm();
        state.status = Status::Running;
        self.root.save(&state)?;
        hooks::run_logged(
            Kind::Poststart,
            state.hooks.as_ref(),
            &state.oci_state(Status::Running),
        );
        let Some(signals) = signals else {
            return Ok(0);
        };
        let code = foreground::wait(state.pid, &signals, tty)?;
        if !keep {
            self.destroy(&state)?;
        }
        Ok(code)
    }

    /// `state`: the OCI state document.
    pub fn state(&self, id: &str) -> Result<OciState> {
        let st = self.root.load(id)?;
        let status = st.current_status(&self.root.dir(id));
        Ok(st.oci_state(status))
    }

    /// Load the stored state (for callers that need more than the OCI document).
    pub fn load(&self, id: &str) -> Result<ContainerState> {
        self.root.load(id)
    }

    /// The config the container was created from (with any `update`s applied).
    pub fn config(&self, id: &str) -> Result<oci_spec::runtime::Spec> {
        self.root.load_config(id)
    }

    /// `list`: every container.
    pub fn list(&self) -> Result<Vec<ListEntry>> {
        let mut out = Vec::new();
        for id in self.root.list()? {
            match self.state(&id) {
                Ok(state) => out.push(ListEntry { state }),
                Err(e) => tracing::warn!("skipping {id}: {}", crate::error::chain(&e)),
            }
        }
        Ok(out)
    }

    /// `kill`: send a signal to the init, or with `all` to every process in the container.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let st = self.root.load(id)?;
        let status = st.current_status(&self.root.dir(id));
        if status == Status::Stopped && !all {
            return Err(wrong(status, "container not running"));
        }
        let mgr = st.cgroup_manager();
        if all {
            mgr.kill_all(signal)?;
        } else {
            let pid = rustix::process::Pid::from_raw(st.pid)
                .ok_or_else(|| wrong(status, "container not running"))?;
            // SAFETY: `signal` was parsed and range-checked by `signal::parse` or the caller.
            let sig = unsafe { rustix::process::Signal::from_raw_unchecked(signal) };
            rustix::process::kill_process(pid, sig).map_err(|e| {
                if e == rustix::io::Errno::SRCH {
                    wrong(Status::Stopped, "container not running: no such process")
                } else {
                    Error::errno(format!("send signal {signal} to {}", st.pid), e)
                }
            })?;
        }
        // A frozen process only dies once thawed.
        if signal == libc::SIGKILL && status == Status::Paused {
            mgr.thaw()?;
        }
        Ok(())
    }

    /// `delete`: remove a stopped container (or any, with `force`).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let _lock = self.root.lock(id)?;
        let st = match self.root.load(id) {
            Ok(st) => st,
            // A create that died before writing its state leaves an empty directory.
            Err(Error::NotFound(_)) if self.root.dir(id).exists() => {
                return self.root.remove(id);
            }
            Err(e) => return Err(e),
        };
        let status = st.current_status(&self.root.dir(id));
        match status {
            Status::Stopped => {}
            Status::Created | Status::Creating => self.kill_and_wait(&st)?,
            Status::Running | Status::Paused if force => self.kill_and_wait(&st)?,
            s => {
                return Err(wrong(
                    s,
                    format!("cannot delete container {id} that is not stopped: {s}"),
                ));
            }
        }
        self.destroy(&st)
    }

    fn kill_and_wait(&self, st: &ContainerState) -> Result<()> {
        let mgr = st.cgroup_manager();
        let _ = mgr.kill_all(libc::SIGKILL);
        if let Some(p) = rustix::process::Pid::from_raw(st.pid) {
            if crate::state::process_alive(st.pid, st.pid_start) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        let _ = mgr.thaw();
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::state::process_alive(st.pid, st.pid_start) {
            if Instant::now() > deadline {
                return Err(Error::Unsupported(format!(
                    "container {} init (pid {}) did not die within 10s of SIGKILL",
                    st.id, st.pid
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Remove what a stopped container leaves: stray processes, cgroup, state; then poststop hooks.
    fn destroy(&self, st: &ContainerState) -> Result<()> {
        let mgr = st.cgroup_manager();
        // Without a pid namespace the container's other processes outlive its init.
        mgr.kill_all(libc::SIGKILL)?;
        mgr.destroy()?;
        self.root.remove(&st.id)?;
        hooks::run_logged(
            Kind::Poststop,
            st.hooks.as_ref(),
            &st.oci_state(Status::Stopped),
        );
        Ok(())
    }

    /// `ps`: pids of every process in the container.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let st = self.root.load(id)?;
        Ok(st.cgroup_manager().procs()?)
    }

    /// `pause`: freeze every process.
    pub fn pause(&self, id: &str) -> Result<()> {
        let _lock = self.root.lock(id)?;
        let st = self.root.load(id)?;
        match st.current_status(&self.root.dir(id)) {
            Status::Running => Ok(st.cgroup_manager().freeze()?),
            s => Err(wrong(s, format!("container {id} is {s}, not running"))),
        }
    }

    /// `resume`: thaw a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let _lock = self.root.lock(id)?;
        let st = self.root.load(id)?;
        match st.current_status(&self.root.dir(id)) {
            Status::Paused => Ok(st.cgroup_manager().thaw()?),
            s => Err(wrong(s, format!("container {id} is {s}, not paused"))),
        }
    }

    /// `update`: apply new resource limits; fields left out keep their values.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let _lock = self.root.lock(id)?;
        let st = self.root.load(id)?;
        let status = st.current_status(&self.root.dir(id));
        if status == Status::Stopped {
            return Err(wrong(status, "container not running"));
        }
        let mgr = st.cgroup_manager();
        mgr.check(resources)?;
        mgr.apply(resources)?;
        let mut config = self.root.load_config(id)?;
        let mut linux = config.linux().clone().unwrap_or_default();
        let merged = merge_resources(linux.resources().clone().unwrap_or_default(), resources)?;
        linux.set_resources(Some(merged));
        config.set_linux(Some(linux));
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| Error::InvalidArgument(format!("encode config: {e}")))?;
        self.root.save_config(id, &bytes)
    }
}

/// Overlay the fields set in `new` onto `old` (JSON-level merge of non-null fields).
fn merge_resources(old: LinuxResources, new: &LinuxResources) -> Result<LinuxResources> {
    fn merge(a: &mut serde_json::Value, b: &serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    if v.is_null() {
                        continue;
                    }
                    merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b.clone(),
        }
    }
    let enc = |e: serde_json::Error| Error::InvalidArgument(format!("resources: {e}"));
    let mut a = serde_json::to_value(old).map_err(enc)?;
    let b = serde_json::to_value(new).map_err(enc)?;
    merge(&mut a, &b);
    serde_json::from_value(a).map_err(enc)
}

/// Render `list` as runc's table.
pub fn list_table(entries: &[ListEntry], out: &mut impl Write) -> std::io::Result<()> {
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            let s = &e.state;
            [
                s.id.clone(),
                s.pid.to_string(),
                s.status.to_string(),
                s.bundle.display().to_string(),
                s.created.clone(),
                s.owner.clone(),
            ]
        })
        .collect();
    let head = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = width[i]));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &head)?;
    for r in &rows {
        line(out, &r.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// A start between its checks and the init's release ([`Runtime::start_begin`]).
#[derive(Debug)]
pub struct Starting {
    root: crate::state::Root,
    _lock: std::os::fd::OwnedFd,
    state: ContainerState,
    fifo: std::path::PathBuf,
    fd: std::os::fd::OwnedFd,
}

impl Starting {
    /// Whether the container has poststart hooks: they must have run when `start` returns
    /// (runtime-spec), so a caller must not report the start before [`Starting::finish`].
    pub fn has_poststart_hooks(&self) -> bool {
        !Kind::Poststart.list(self.state.hooks.as_ref()).is_empty()
    }

    /// Let the init run the user program, record the container as running and run the
    /// poststart hooks (a failing one is logged, not fatal).
    pub fn finish(self) -> Result<()> {
        let Starting {
            root,
            _lock,
            mut state,
            fifo,
            fd,
        } = self;
        rustix::io::write(&fd, b"0").ctx(|| format!("write {}", fifo.display()))?;
        drop(fd);
        std::fs::remove_file(&fifo).ctx(|| format!("remove {}", fifo.display()))?;
        state.status = Status::Running;
        root.save(&state)?;
        hooks::run_logged(
            Kind::Poststart,
            state.hooks.as_ref(),
            &state.oci_state(Status::Running),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

    #[test]
    fn update_merges_only_given_fields() {
        let old = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(100i64)
                    .reservation(50i64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
            .build()
            .unwrap();
        let new = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(200i64).build().unwrap())
            .build()
            .unwrap();
        let m = merge_resources(old, &new).unwrap();
        assert_eq!(m.memory().as_ref().unwrap().limit(), Some(200));
        assert_eq!(m.memory().as_ref().unwrap().reservation(), Some(50));
        assert_eq!(m.pids().as_ref().unwrap().limit(), 10);
    }
}
