//! The in-memory index of containers and one container's live state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_shim::Client;
use tokio::sync::watch;
use tonic::Status as RpcStatus;

use crate::Engine;
use crate::record::{Record, Status};

/// Every container, by id, and the names taken per namespace. Names are reserved here before a
/// create does anything else, so two creates of one name cannot both succeed.
#[derive(Default)]
pub(crate) struct Index {
    pub by_id: HashMap<String, Arc<Container>>,
    /// (namespace, name) -> id; also holds names of creates in progress.
    pub names: HashMap<(String, String), String>,
}

/// What changes a waiter watches for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Signal {
    /// Bumped at every exit of the main process.
    pub exits: u64,
    /// Bumped at every state change.
    pub changes: u64,
    pub removed: bool,
}

/// One container.
pub(crate) struct Container {
    pub id: String,
    pub ns: String,
    m: Mutex<Mutable>,
    /// Wakes `Wait` and the stop path.
    pub signal: watch::Sender<Signal>,
    /// True while the main process runs (for `logs -f`).
    pub running: watch::Sender<bool>,
    /// Serialises lifecycle operations (start, stop, restart, pause, remove).
    pub op: tokio::sync::Mutex<()>,
}

pub(crate) struct Mutable {
    pub rec: Record,
    /// The shim of the current (or last, until deleted) run.
    pub shim: Option<Arc<Client>>,
    /// Bumped whenever a new shim is spawned; an exit monitor for an older one is ignored.
    pub run: u64,
    /// An exit is expected (stop, kill, restart, remove): do not apply the restart policy.
    pub stopping: bool,
    /// The last run's shim deleted the container in the runtime without error and its
    /// networks were detached: removal need not look for leftovers (cgroups, runtime state).
    pub clean: bool,
    /// A pidfd of the last run's shim, deleted and on its way out: the removal that follows
    /// an exit (`--rm`) waits for it at its end instead of before it starts.
    pub shim_exiting: Option<std::os::fd::OwnedFd>,
}

impl Container {
    pub(crate) fn new(rec: Record) -> Arc<Container> {
        let running = rec.status.is_active();
        Arc::new(Container {
            id: rec.id.clone(),
            ns: rec.namespace.clone(),
            m: Mutex::new(Mutable {
                rec,
                shim: None,
                run: 0,
                stopping: false,
                clean: false,
                shim_exiting: None,
            }),
            signal: watch::Sender::new(Signal::default()),
            running: watch::Sender::new(running),
            op: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tell waiters that something changed; `exited`: the main process exited.
    pub(crate) fn notify(&self, status: Status, exited: bool) {
        self.running
            .send_replace(status.is_active() && status != Status::Restarting);
        self.signal.send_modify(|s| {
            s.changes += 1;
            if exited {
                s.exits += 1;
            }
        });
    }

    pub(crate) fn name(&self) -> String {
        self.lock().rec.name.clone()
    }

    /// Whether any of the container's mounts is a named or anonymous volume.
    pub(crate) fn uses_volumes(&self) -> bool {
        self.lock()
            .rec
            .mount_points
            .iter()
            .any(|p| p.typ == "volume")
    }
}

/// A pidfd of process `pid`, to wait for its end with [`process_gone`]; `None` if it is gone.
pub(crate) fn pidfd(pid: i32) -> Option<std::os::fd::OwnedFd> {
    let p = rustix::process::Pid::from_raw(pid)?;
    rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK).ok()
}

/// Wait, on the async runtime, until the process of `pidfd` has exited.
pub(crate) async fn process_gone(pidfd: std::os::fd::OwnedFd) {
    use tokio::io::{Interest, unix::AsyncFd};
    // SAFETY: `pidfd` is an owned, open descriptor that the AsyncFd takes over and neither
    // replaces nor closes while registered (it is dropped with it).
    if let Ok(fd) = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
        let _ = fd.readable().await;
    }
}

/// Container counts for `info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerCounts {
    /// All containers.
    pub total: u64,
    /// Running (restarting included).
    pub running: u64,
    /// Paused.
    pub paused: u64,
    /// Created or exited.
    pub stopped: u64,
}

/// A container, briefly (for image removal conflicts and image lists).
#[derive(Debug, Clone)]
#[allow(dead_code)] // fields for helper C2's image and system services
pub(crate) struct ContainerBrief {
    pub id: String,
    pub name: String,
    pub running: bool,
}

/// A container's disk usage (for `system df`).
#[derive(Debug, Clone)]
#[allow(dead_code)] // fields for helper C2's image and system services
pub(crate) struct ContainerDf {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// Bytes of its writable layer.
    pub size: u64,
}

impl Engine {
    pub(crate) fn index(&self) -> MutexGuard<'_, crate::container::Index> {
        self.0.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// All containers of a namespace (`None`: of every namespace).
    pub(crate) fn containers(&self, ns: Option<&str>) -> Vec<Arc<Container>> {
        self.index()
            .by_id
            .values()
            .filter(|c| ns.is_none_or(|n| c.ns == n))
            .cloned()
            .collect()
    }

    /// Find a container by full id, name, or unique id prefix.
    pub(crate) fn find(&self, ns: &str, what: &str) -> Result<Arc<Container>, RpcStatus> {
        let idx = self.index();
        if what.is_empty() {
            return Err(RpcStatus::invalid_argument(
                "a container id or name is required",
            ));
        }
        if let Some(c) = idx.by_id.get(what).filter(|c| c.ns == ns) {
            return Ok(c.clone());
        }
        let name = what.strip_prefix('/').unwrap_or(what);
        if let Some(id) = idx.names.get(&(ns.to_owned(), name.to_owned())) {
            if let Some(c) = idx.by_id.get(id) {
                return Ok(c.clone());
            }
        }
        let mut found: Option<&Arc<Container>> = None;
        for c in idx.by_id.values() {
            if c.ns == ns && c.id.starts_with(what) {
                if found.is_some() {
                    return Err(RpcStatus::failed_precondition(format!(
                        "multiple IDs found with provided prefix: {what}"
                    )));
                }
                found = Some(c);
            }
        }
        found
            .cloned()
            .ok_or_else(|| RpcStatus::not_found(format!("No such container: {what}")))
    }

    /// Container counts for `info`.
    pub(crate) fn container_counts(&self, ns: Option<&str>) -> ContainerCounts {
        let mut n = ContainerCounts::default();
        for c in self.containers(ns) {
            let st = c.lock().rec.status;
            n.total += 1;
            match st {
                Status::Running | Status::Restarting => n.running += 1,
                Status::Paused => n.paused += 1,
                _ => n.stopped += 1,
            }
        }
        n
    }

    /// Containers by the image id they were created from.
    pub(crate) fn image_users(&self, ns: &str) -> HashMap<String, Vec<ContainerBrief>> {
        let mut out: HashMap<String, Vec<ContainerBrief>> = HashMap::new();
        for c in self.containers(Some(ns)) {
            let m = c.lock();
            out.entry(m.rec.image_id.clone())
                .or_default()
                .push(ContainerBrief {
                    id: c.id.clone(),
                    name: m.rec.name.clone(),
                    running: m.rec.status.is_active(),
                });
        }
        out
    }

    /// Disk usage of every container's writable layer.
    pub(crate) fn containers_df(&self, ns: &str) -> Vec<ContainerDf> {
        let mut out = Vec::new();
        for c in self.containers(Some(ns)) {
            let (name, running) = {
                let m = c.lock();
                (m.rec.name.clone(), m.rec.status.is_active())
            };
            let size = self
                .store()
                .snapshots
                .usage(ns, &c.id)
                .map_or(0, |(bytes, _)| bytes);
            out.push(ContainerDf {
                id: c.id.clone(),
                name,
                running,
                size,
            });
        }
        out
    }
}
