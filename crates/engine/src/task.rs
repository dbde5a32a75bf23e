//! The running side: start, the exit monitor, restart policies, stop, kill, pause, wait, remove.

use std::sync::Arc;
use std::time::Duration;

use berth_shim::{Client, ExitInfo, LogOpts, ShimConfig};
use tonic::Status as RpcStatus;

use crate::container::{Container, Signal};
use crate::record::{Status, now_nanos, policy_restarts};
use crate::{Engine, err_chain};

/// Metadata key carrying the exit code a client should use when a process could not be started
/// (127: not found, 126: not executable).
pub const EXIT_CODE_KEY: &str = "berth-exit-code";

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;
/// How long a force-remove or a stop waits for the exit after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(30);
/// A shim error as a gRPC status; a process that could not be started carries its exit code
/// (126/127) in the [`EXIT_CODE_KEY`] metadata.
pub(crate) fn shim_status(what: &str, e: &berth_shim::Error) -> RpcStatus {
    let msg = format!("{what}: {}", err_chain(e));
    match e.exit_code_hint() {
        Some(code) => {
            let mut s = RpcStatus::failed_precondition(msg);
            if let Ok(v) = code.to_string().parse() {
                s.metadata_mut().insert(EXIT_CODE_KEY, v);
            }
            s
        }
        None => RpcStatus::internal(msg),
    }
}

fn join_err(e: tokio::task::JoinError) -> RpcStatus {
    RpcStatus::internal(format!("a worker task failed: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RpcStatus> {
    tokio::task::spawn_blocking(f).await.map_err(join_err)
}

impl Engine {
    /// The shim of the container's current run, spawning one (the container created in the
    /// runtime, not started) if there is none. Call with `c.op` held.
    pub(crate) async fn ensure_shim(&self, c: &Arc<Container>) -> Result<Arc<Client>, RpcStatus> {
        let (cfg, name) = {
            let m = c.lock();
            if let Some(s) = &m.shim {
                return Ok(s.clone());
            }
            match m.rec.status {
                Status::Removing | Status::Dead => {
                    return Err(RpcStatus::failed_precondition(format!(
                        "container {} is marked for removal and cannot be started",
                        m.rec.name
                    )));
                }
                _ => {}
            }
            let conf = m.rec.config();
            let cfg = ShimConfig {
                id: c.id.clone(),
                bundle: self.bundle_dir(&c.id),
                runtime_root: self.runtime_root(),
                runtime: m.rec.runtime.clone(),
                cgroup: Some(m.rec.cgroups_path.clone()),
                new_netns: conf.network_mode == "none",
                tty: conf.tty,
                stdin: conf.open_stdin,
                log: m.rec.log_path.clone().map(|path| LogOpts {
                    path,
                    max_size: m.rec.log_max_size,
                    max_file: m.rec.log_max_file,
                }),
            };
            (cfg, m.rec.name.clone())
        };
        let _ = std::fs::remove_file(cfg.bundle.join("exit.json"));
        let bin = self.config().shim_binary.clone();
        // Volumes with a file system of their own are mounted at first use.
        if c.uses_volumes() {
            let (e, c2) = (self.clone(), c.clone());
            blocking(move || e.volumes_mount(&c2)).await??;
        }
        let res = match self.networks_attach_begin(c).await {
            Ok(net) => {
                let res = match self.give_standby(&cfg) {
                    // The standby shim took the container: its report is read here, on the
                    // async runtime, with no blocking thread to wake.
                    Some(report) => {
                        let (text, read) = read_report(report).await;
                        if berth_shim::report_ok(&text) {
                            Ok(berth_shim::report_outcome(&text, read, &cfg)
                                .unwrap_or_else(|| berth_shim::spawn(&bin, &cfg)))
                        } else {
                            blocking(move || {
                                berth_shim::report_outcome(&text, read, &cfg)
                                    .unwrap_or_else(|| berth_shim::spawn(&bin, &cfg))
                            })
                            .await
                        }
                    }
                    None => blocking(move || berth_shim::spawn(&bin, &cfg)).await,
                };
                self.networks_attach_end(c, net, res).await
            }
            Err(st) => Err(st),
        };
        let res = match res {
            Ok(r) => r,
            Err(st) => {
                self.volumes_release(c);
                return Err(st);
            }
        };
        match res {
            Ok(client) => {
                let client = Arc::new(client);
                let mut m = c.lock();
                m.shim = Some(client.clone());
                m.clean = false;
                m.run += 1;
                Ok(client)
            }
            Err(e) => {
                self.networks_detach(&c.id);
                self.volumes_release(c);
                let st = shim_status(
                    &format!("failed to create the task of container {name}"),
                    &e,
                );
                let mut m = c.lock();
                m.rec.error = err_chain(&e);
                if let Some(code) = e.exit_code_hint() {
                    m.rec.exit_code = code;
                }
                if m.rec.started_at != 0 || m.rec.status == Status::Exited {
                    m.rec.status = Status::Exited;
                }
                self.save(c, &m.rec);
                Err(st)
            }
        }
    }

    pub(crate) fn save(&self, c: &Container, rec: &crate::record::Record) {
        if let Err(e) = rec.save(&self.containers_dir(&c.id)) {
            tracing::error!("cannot write the record of container {}: {e}", c.id);
        }
    }

    /// `Start`.
    pub(crate) async fn start(&self, c: &Arc<Container>) -> Result<(), RpcStatus> {
        let _busy = self.busy();
        let _op = c.op.lock().await;
        self.start_locked(c).await
    }

    pub(crate) async fn start_locked(&self, c: &Arc<Container>) -> Result<(), RpcStatus> {
        match c.lock().rec.status {
            Status::Running | Status::Paused => return Ok(()),
            _ => {}
        }
        let client = self.ensure_shim(c).await?;
        let res = match shim_call(&client, "start").await {
            Ok(text) => match Client::started_state(&text) {
                Ok(Some(st)) => Ok(st),
                Ok(None) => {
                    let cl = client.clone();
                    blocking(move || cl.state()).await?
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let name = c.name();
        let state = match res {
            Ok(s) => s,
            Err(e) => {
                let st = shim_status(&format!("failed to start container {name}"), &e);
                let cl = client.clone();
                let _ = blocking(move || cl.delete()).await;
                self.networks_detach(&c.id);
                self.volumes_release(c);
                let mut m = c.lock();
                m.shim = None;
                m.rec.error = err_chain(&e);
                m.rec.exit_code = e.exit_code_hint().unwrap_or(128);
                m.rec.status = Status::Exited;
                m.rec.finished_at = now_nanos();
                self.save(c, &m.rec);
                drop(m);
                c.notify(Status::Exited, false);
                return Err(st);
            }
        };
        let (run, image) = {
            let mut m = c.lock();
            m.rec.status = Status::Running;
            m.rec.pid = state.pid;
            m.rec.started_at = now_nanos();
            m.rec.finished_at = 0;
            m.rec.exit_code = 0;
            m.rec.error.clear();
            m.rec.oom_killed = false;
            m.rec.manually_stopped = false;
            m.stopping = false;
            self.save(c, &m.rec);
            (m.run, m.rec.image.clone())
        };
        c.notify(Status::Running, false);
        self.emit(
            &c.ns,
            "container",
            "start",
            &c.id,
            &[("name", &name), ("image", &image)],
        );
        // The main process may already have exited (`true`): the monitor sees that at once.
        self.monitor(c.clone(), client, run);
        Ok(())
    }

    /// Watch the exit of the run `run` on a small thread blocked in the shim's `wait`.
    ///
    /// The wait is a task on the daemon's runtime reading the shim's answer from an idle
    /// socket, so hundreds of running containers cost no threads. If that fails (the shim
    /// died or answered oddly) the blocking [`wait_exit`] takes over, which also knows how
    /// to read `exit.json`.
    pub(crate) fn monitor(&self, c: Arc<Container>, client: Arc<Client>, run: u64) {
        let e = self.clone();
        tokio::spawn(async move {
            let exit = match wait_async(&client).await {
                Ok(exit) => exit,
                Err(err) => {
                    tracing::debug!("wait on shim {}: {err}", client.bundle().display());
                    let cl = client.clone();
                    blocking(move || wait_exit(&cl))
                        .await
                        .unwrap_or_else(|_| lost_exit())
                }
            };
            e.on_exit(c, client, run, exit).await;
        });
    }

    /// The main process of run `run` exited: delete the shim, record the exit, wake waiters,
    /// then apply the restart policy or `--rm`.
    async fn on_exit(&self, c: Arc<Container>, client: Arc<Client>, run: u64, exit: ExitInfo) {
        if c.lock().run != run {
            return;
        }
        // A `--rm` container without a network attachment (`--network none`: its namespace
        // went with its processes) has nothing for the network teardown to give back, so the
        // teardown's checks run after the removal (below), off the path `run --rm` waits on,
        // instead of on a blocking thread beside the shim's delete.
        let (conf, restarts) = {
            let m = c.lock();
            (m.rec.config(), m.rec.restart_count)
        };
        let policy = conf.restart.clone().unwrap_or_default();
        let removal_follows = conf.auto_remove && !policy_restarts(&policy, exit.code, restarts);
        let defer_net = removal_follows && self.net().attachments(&c.id).is_empty();
        let net = (!defer_net).then(|| self.networks_detach_begin(&c.id));
        // The shim exits right after answering; whoever removes the container waits for that
        // (`Container::shim_gone`), not this.
        let shim_pidfd = client.shim_pid().ok().and_then(crate::container::pidfd);
        let deleted = shim_call(&client, "delete")
            .await
            .and_then(|t| Client::exit_of(&t));
        if let Err(e) = &deleted {
            tracing::warn!("delete the task of container {}: {}", c.id, err_chain(e));
        }
        let net_gone = match net {
            Some(h) => matches!(h.await, Ok(true)),
            None => true,
        };
        if c.uses_volumes() {
            let (e, c2) = (self.clone(), c.clone());
            let _ = blocking(move || e.volumes_release(&c2)).await;
        }
        // Nothing left for a removal to look for: the runtime deleted the container and every
        // network attachment (and its held ports) is gone.
        let clean = deleted.is_ok() && net_gone;
        let (restart, auto_remove, name, image, status) = {
            let mut m = c.lock();
            if m.run != run {
                return;
            }
            m.shim = None;
            m.clean = clean;
            m.rec.pid = 0;
            m.rec.exit_code = exit.code;
            m.rec.oom_killed = exit.oom_killed;
            m.rec.finished_at = if exit.finished_at_unix_nanos > 0 {
                exit.finished_at_unix_nanos
            } else {
                now_nanos()
            };
            let restart = !m.stopping
                && m.rec.status != Status::Removing
                && policy_restarts(&policy, exit.code, m.rec.restart_count);
            if m.rec.status != Status::Removing {
                m.rec.status = if restart {
                    Status::Restarting
                } else {
                    Status::Exited
                };
            }
            let auto_remove = conf.auto_remove && !restart;
            // A removal follows at once and saves the record itself (as `Removing`). Should
            // berthd stop in between, boot finds the shim gone and its exit file, and removes
            // the container then (`recover.rs`).
            if !auto_remove {
                self.save(&c, &m.rec);
            }
            (
                restart,
                auto_remove,
                m.rec.name.clone(),
                m.rec.image.clone(),
                m.rec.status,
            )
        };
        // The shim exits right after the delete: wait for that here, unless a removal
        // follows, which waits at its own end (the two overlap).
        if let Some(fd) = shim_pidfd {
            if auto_remove {
                c.lock().shim_exiting = Some(fd);
            } else {
                crate::container::process_gone(fd).await;
            }
        }
        c.notify(status, true);
        let code = exit.code.to_string();
        self.emit(
            &c.ns,
            "container",
            "die",
            &c.id,
            &[("name", &name), ("image", &image), ("exitCode", &code)],
        );
        if restart {
            let e = self.clone();
            tokio::spawn(async move { e.restart_after_backoff(c, run).await });
        } else if auto_remove {
            let e = self.clone();
            tokio::spawn(async move {
                if let Err(err) = e.remove(&c, true).await {
                    tracing::warn!("auto-remove of container {}: {}", c.id, err.message());
                } else {
                    // --rm also removes anonymous volumes, as Docker's.
                    let points = c.lock().rec.mount_points.clone();
                    e.remove_anonymous_volumes(&c.ns, &points);
                }
                if defer_net {
                    let _ = e.networks_detach_begin(&c.id).await;
                }
            });
        }
    }

    async fn restart_after_backoff(&self, c: Arc<Container>, run: u64) {
        let delay = {
            let m = c.lock();
            let ran = m.rec.finished_at.saturating_sub(m.rec.started_at);
            if ran > 10_000_000_000 {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(100u64 << m.rec.restart_count.min(9))
            }
        };
        tokio::time::sleep(delay).await;
        let _op = c.op.lock().await;
        {
            let mut m = c.lock();
            if m.run != run || m.rec.status != Status::Restarting || m.stopping {
                return;
            }
            m.rec.restart_count += 1;
        }
        let name = c.name();
        match self.start_locked(&c).await {
            Ok(()) => {
                self.emit(&c.ns, "container", "restart", &c.id, &[("name", &name)]);
            }
            Err(e) => {
                tracing::warn!("restart of container {name} failed: {}", e.message());
                let mut m = c.lock();
                if m.rec.status == Status::Restarting {
                    m.rec.status = Status::Exited;
                    self.save(&c, &m.rec);
                }
                drop(m);
                c.notify(Status::Exited, false);
            }
        }
    }

    /// `Stop`: the stop signal, then SIGKILL after the timeout.
    pub(crate) async fn stop(
        &self,
        c: &Arc<Container>,
        timeout: Option<i32>,
    ) -> Result<(), RpcStatus> {
        let _op = c.op.lock().await;
        self.stop_locked(c, timeout).await
    }

    pub(crate) async fn stop_locked(
        &self,
        c: &Arc<Container>,
        timeout: Option<i32>,
    ) -> Result<(), RpcStatus> {
        let mut rx = c.signal.subscribe();
        let exits0 = rx.borrow_and_update().exits;
        let (client, sig, paused, name, stop_timeout) = {
            let mut m = c.lock();
            m.rec.manually_stopped = true;
            if m.rec.status == Status::Restarting {
                m.rec.status = Status::Exited;
                m.stopping = true;
                self.save(c, &m.rec);
                drop(m);
                c.notify(Status::Exited, false);
                return Ok(());
            }
            let Some(client) = m.shim.clone().filter(|_| m.rec.status.is_active()) else {
                self.save(c, &m.rec);
                return Ok(());
            };
            m.stopping = true;
            self.save(c, &m.rec);
            let conf = m.rec.config();
            (
                client,
                m.rec.stop_signal,
                m.rec.status == Status::Paused,
                m.rec.name.clone(),
                conf.stop_timeout,
            )
        };
        let secs = timeout.or(stop_timeout).unwrap_or(10);
        let sig = if sig > 0 { sig } else { SIGTERM };
        self.signal(c, &client, sig, false, paused, &name).await?;
        let exited = |s: &Signal| s.exits > exits0 || s.removed;
        let done = if secs < 0 {
            rx.wait_for(exited).await.is_ok()
        } else {
            tokio::time::timeout(
                Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
                rx.wait_for(exited),
            )
            .await
            .is_ok()
        };
        if !done {
            self.signal(c, &client, SIGKILL, true, false, &name).await?;
            if tokio::time::timeout(KILL_GRACE, rx.wait_for(exited))
                .await
                .is_err()
            {
                return Err(RpcStatus::deadline_exceeded(format!(
                    "container {name} did not exit {}s after SIGKILL",
                    KILL_GRACE.as_secs()
                )));
            }
        }
        self.emit(&c.ns, "container", "stop", &c.id, &[("name", &name)]);
        Ok(())
    }

    async fn signal(
        &self,
        c: &Arc<Container>,
        client: &Arc<Client>,
        sig: i32,
        all: bool,
        resume: bool,
        name: &str,
    ) -> Result<(), RpcStatus> {
        let cl = client.clone();
        let res = blocking(move || {
            let r = cl.kill(sig, all);
            if resume {
                let _ = cl.resume();
            }
            r
        })
        .await?;
        let s = sig.to_string();
        self.emit(
            &c.ns,
            "container",
            "kill",
            &c.id,
            &[("name", name), ("signal", &s)],
        );
        match res {
            Ok(()) => Ok(()),
            // The process may have exited meanwhile; the monitor reports it.
            Err(e) if !c.lock().rec.status.is_active() => {
                tracing::debug!("kill {}: {}", c.id, err_chain(&e));
                Ok(())
            }
            Err(e) => Err(shim_status(&format!("cannot kill container {name}"), &e)),
        }
    }

    /// `Kill`.
    pub(crate) async fn kill(&self, c: &Arc<Container>, sig: i32) -> Result<(), RpcStatus> {
        let (client, name, paused) = {
            let mut m = c.lock();
            let client = m
                .shim
                .clone()
                .filter(|_| matches!(m.rec.status, Status::Running | Status::Paused));
            let Some(client) = client else {
                return Err(RpcStatus::failed_precondition(format!(
                    "cannot kill container: {}: container {} is not running",
                    m.rec.name, c.id
                )));
            };
            if matches!(sig, SIGKILL | SIGTERM | 2 | 3) {
                m.stopping = true;
                m.rec.manually_stopped = true;
                self.save(c, &m.rec);
            }
            (client, m.rec.name.clone(), m.rec.status == Status::Paused)
        };
        self.signal(c, &client, sig, false, paused && sig == SIGKILL, &name)
            .await
    }

    /// `Restart`.
    pub(crate) async fn restart(
        &self,
        c: &Arc<Container>,
        timeout: Option<i32>,
    ) -> Result<(), RpcStatus> {
        let _op = c.op.lock().await;
        self.stop_locked(c, timeout).await?;
        self.start_locked(c).await?;
        let name = c.name();
        self.emit(&c.ns, "container", "restart", &c.id, &[("name", &name)]);
        Ok(())
    }

    /// `Pause` (`true`) and `Unpause` (`false`).
    pub(crate) async fn pause(&self, c: &Arc<Container>, pause: bool) -> Result<(), RpcStatus> {
        let _op = c.op.lock().await;
        let (client, name) = {
            let m = c.lock();
            let want = if pause {
                Status::Running
            } else {
                Status::Paused
            };
            match (&m.shim, m.rec.status) {
                (Some(s), st) if st == want => (s.clone(), m.rec.name.clone()),
                (_, Status::Paused) if pause => {
                    return Err(RpcStatus::failed_precondition(format!(
                        "container {} is already paused",
                        c.id
                    )));
                }
                _ if pause => {
                    return Err(RpcStatus::failed_precondition(format!(
                        "container {} is not running",
                        c.id
                    )));
                }
                _ => {
                    return Err(RpcStatus::failed_precondition(format!(
                        "container {} is not paused",
                        c.id
                    )));
                }
            }
        };
        let cl = client.clone();
        let res = blocking(move || if pause { cl.pause() } else { cl.resume() }).await?;
        res.map_err(|e| {
            shim_status(
                &format!(
                    "cannot {} container {name}",
                    if pause { "pause" } else { "unpause" }
                ),
                &e,
            )
        })?;
        let st = if pause {
            Status::Paused
        } else {
            Status::Running
        };
        {
            let mut m = c.lock();
            if m.rec.status.is_active() {
                m.rec.status = st;
                self.save(c, &m.rec);
            }
        }
        c.notify(st, false);
        self.emit(
            &c.ns,
            "container",
            if pause { "pause" } else { "unpause" },
            &c.id,
            &[("name", &name)],
        );
        Ok(())
    }

    /// `Wait`: (exit code, error).
    pub(crate) async fn wait(
        &self,
        c: &Arc<Container>,
        condition: &str,
    ) -> Result<(i32, String), RpcStatus> {
        let mut rx = c.signal.subscribe();
        let start = *rx.borrow_and_update();
        let result = |c: &Container| {
            let m = c.lock();
            (m.rec.exit_code, m.rec.error.clone())
        };
        match condition {
            "" | "not-running" => loop {
                {
                    let m = c.lock();
                    if !m.rec.status.is_active() || rx.borrow().removed {
                        return Ok((m.rec.exit_code, m.rec.error.clone()));
                    }
                }
                if rx.changed().await.is_err() {
                    return Ok(result(c));
                }
            },
            "next-exit" => {
                let _ = rx.wait_for(|s| s.exits > start.exits || s.removed).await;
                Ok(result(c))
            }
            "removed" => {
                let _ = rx.wait_for(|s| s.removed).await;
                Ok(result(c))
            }
            other => Err(RpcStatus::invalid_argument(format!(
                "invalid wait condition {other:?}: use not-running, next-exit or removed"
            ))),
        }
    }

    /// `Remove`.
    pub(crate) async fn remove(&self, c: &Arc<Container>, force: bool) -> Result<(), RpcStatus> {
        let _busy = self.busy();
        let _op = c.op.lock().await;
        let mut rx = c.signal.subscribe();
        let exits0 = rx.borrow_and_update().exits;
        if rx.borrow().removed {
            return Ok(());
        }
        let (active, client, name) = {
            let mut m = c.lock();
            let active = m.rec.status.is_active();
            if active && !force {
                return Err(RpcStatus::failed_precondition(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    m.rec.name
                )));
            }
            m.stopping = true;
            if m.rec.status == Status::Restarting {
                m.rec.status = Status::Exited;
            }
            (m.rec.status.is_active(), m.shim.clone(), m.rec.name.clone())
        };
        if active {
            if let Some(client) = &client {
                self.signal(c, client, SIGKILL, true, true, &name).await?;
                if tokio::time::timeout(KILL_GRACE, rx.wait_for(|s| s.exits > exits0))
                    .await
                    .is_err()
                {
                    return Err(RpcStatus::deadline_exceeded(format!(
                        "cannot remove container {name}: it did not exit {}s after SIGKILL",
                        KILL_GRACE.as_secs()
                    )));
                }
            }
        }
        let shim = {
            let mut m = c.lock();
            m.rec.status = Status::Removing;
            m.run += 1;
            self.save(c, &m.rec);
            m.shim.take()
        };
        c.notify(Status::Removing, false);
        let e = self.clone();
        let c2 = c.clone();
        blocking(move || e.destroy(&c2, shim.as_deref())).await??;
        let exiting = c.lock().shim_exiting.take();
        if let Some(fd) = exiting {
            crate::container::process_gone(fd).await;
        }
        {
            let mut idx = self.index();
            idx.by_id.remove(&c.id);
            let key = (c.ns.clone(), name.clone());
            if idx.names.get(&key) == Some(&c.id) {
                idx.names.remove(&key);
            }
        }
        c.signal.send_modify(|s| {
            s.removed = true;
            s.changes += 1;
        });
        self.emit(&c.ns, "container", "destroy", &c.id, &[("name", &name)]);
        Ok(())
    }

    /// Remove everything a container has on disk: shim, mount, snapshot, bundle, record.
    pub(crate) fn destroy(&self, c: &Container, shim: Option<&Client>) -> Result<(), RpcStatus> {
        if let Some(s) = shim {
            if let Err(e) = s.delete() {
                tracing::warn!("delete the task of container {}: {}", c.id, err_chain(&e));
            }
        }
        // After a clean delete by the shim there is nothing to look for (and reading the
        // cgroup layout costs a scan of mountinfo).
        if shim.is_some() || !c.lock().clean {
            self.cleanup_leftovers(&c.ns, &c.id);
        }
        let bundle = self.bundle_dir(&c.id);
        let rootfs = bundle.join("rootfs");
        // Try the unmount first: reading mountinfo (large with many containers) is only
        // needed to tell "not mounted" from a real failure.
        if let Err(e) = berth_store::unmount(&rootfs) {
            if is_mountpoint(&rootfs) {
                return Err(RpcStatus::internal(format!(
                    "cannot remove container {}: {}",
                    c.id,
                    err_chain(&e)
                )));
            }
        }
        // The directories are made unreachable now by a rename and deleted in the background,
        // then the snapshot, record and directory (`reaper.rs`).
        self.reaper().trash(&bundle);
        self.reaper().trash(&self.containers_dir(&c.id));
        let (store, ns, id) = (self.store().clone(), c.ns.clone(), c.id.clone());
        self.reaper()
            .later(Box::new(move || match store.snapshots.remove(&ns, &id) {
                Ok(()) | Err(berth_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(
                    "cannot remove the snapshot of container {id} (boot removes it): {}",
                    err_chain(&e)
                ),
            }));
        Ok(())
    }

    /// Kill what a dead shim may have left (processes, cgroup, runtime state). Idempotent.
    pub(crate) fn cleanup_leftovers(&self, ns: &str, id: &str) {
        if let Ok(layout) = berth_cgroups::Layout::detect() {
            let path = format!("/berth/{ns}/{id}");
            if let Ok(mgr) = berth_cgroups::Manager::resolve(&layout, Some(&path), id, false) {
                let exists = mgr
                    .paths()
                    .v1
                    .values()
                    .chain(mgr.paths().unified.iter())
                    .any(|p| p.exists());
                if exists {
                    if !mgr.is_empty().unwrap_or(true) {
                        let _ = mgr.kill_all(SIGKILL);
                    }
                    if let Err(e) = mgr.destroy() {
                        tracing::warn!("remove the cgroup of container {id}: {e}");
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.runtime_root().join(id));
        self.networks_detach(id);
    }

    /// `Prune`: remove every stopped container of `ns`.
    pub(crate) async fn prune_containers(&self, ns: &str) -> Result<(Vec<String>, u64), RpcStatus> {
        let mut deleted = Vec::new();
        let mut bytes = 0;
        for c in self.containers(Some(ns)) {
            if c.lock().rec.status.is_active() {
                continue;
            }
            let size = self
                .store()
                .snapshots
                .usage(ns, &c.id)
                .map_or(0, |(b, _)| b);
            if self.remove(&c, false).await.is_ok() {
                deleted.push(c.id.clone());
                bytes += size;
            }
        }
        Ok((deleted, bytes))
    }
}

/// Wait for the main process's exit on the shim's socket without blocking a thread.
async fn wait_async(client: &Client) -> Result<ExitInfo, String> {
    let text = shim_call(client, "wait").await.map_err(|e| err_chain(&e))?;
    Client::exit_of(&text).map_err(|e| err_chain(&e))
}

/// A standby shim's report ([`berth_shim::Standby::give`]), read until it is complete or
/// ends, and how the reading ended.
async fn read_report(fd: std::os::fd::OwnedFd) -> (String, std::io::Result<()>) {
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    let mut rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => return (text, Err(e)),
    };
    let mut buf = [0u8; 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => return (text, Ok(())),
            Ok(n) => {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                if berth_shim::report_complete(&text) {
                    return (text, Ok(()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (text, Err(e)),
        }
    }
}

/// One request to a shim, its answer read on the async runtime (no blocking thread): for the
/// requests a shim answers without waiting on anything slow (`start`, `delete`) and for
/// `wait`, whose answer may take the container's whole life.
pub(crate) async fn shim_call(client: &Client, head: &str) -> berth_shim::Result<String> {
    use tokio::io::AsyncReadExt;
    let io = |e: std::io::Error| berth_shim::Error::Io {
        what: format!("talk to the shim of {}", client.bundle().display()),
        source: e,
    };
    let sock = client.begin(head)?;
    sock.set_nonblocking(true).map_err(io)?;
    let mut sock = tokio::net::UnixStream::from_std(sock).map_err(io)?;
    let mut frame = [0u8; 5];
    match sock.read_exact(&mut frame).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(berth_shim::Error::ShimDied(format!("it answered {head:?}")));
        }
        Err(e) => return Err(io(e)),
    }
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    if len > berth_shim::MAX_ANSWER {
        return Err(berth_shim::Error::Protocol(format!(
            "an answer of {len} bytes to {head:?} is too large"
        )));
    }
    let mut payload = vec![0u8; len];
    sock.read_exact(&mut payload).await.map_err(io)?;
    client.answer(head, frame[0], &payload)
}

/// Block until the main process exits. If the shim cannot be asked (it died), use what it left
/// in `exit.json`, else report a kill.
pub(crate) fn wait_exit(client: &Client) -> ExitInfo {
    for _ in 0..3 {
        match client.wait() {
            Ok(e) => return e,
            Err(e) => {
                tracing::debug!(
                    "wait on shim {}: {}",
                    client.bundle().display(),
                    err_chain(&e)
                );
                match client.state() {
                    Ok(s) if s.exit.is_some() => return s.exit.unwrap_or(lost_exit()),
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
    }
    berth_shim::read_exit(client.bundle()).unwrap_or_else(lost_exit)
}

/// The exit reported when the shim died without recording one.
pub(crate) fn lost_exit() -> ExitInfo {
    ExitInfo {
        code: 137,
        signal: Some(SIGKILL),
        finished_at_unix_nanos: now_nanos(),
        oom_killed: false,
    }
}

/// Whether `p` is a mount point (listed in this process's mountinfo).
pub(crate) fn is_mountpoint(p: &std::path::Path) -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.to_string_lossy().replace(' ', "\\040");
    s.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}
