//! The `System` service: version, Docker-shaped `info`, disk usage, prune, and the event
//! stream. Host facts (kernel, OS, CPUs, memory, cgroup version) are read when asked, so they
//! are never stale; the engine ID is made once and kept in `ROOT/engine-id`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::pin::Pin;

use berth_api::namespace_of;
use berth_api::v1::system_server::System;
use berth_api::v1::{
    DfRequest, DfResponse, DfRow, Event, EventsRequest, InfoRequest, JsonDocument,
    SystemPruneRequest, SystemPruneResponse, VersionRequest, VersionResponse,
};
use berth_image::ImageService;
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::events::EventFilter;
use crate::{ContainerBrief, Engine};

/// The `berth.v1.System` service.
pub(crate) struct SystemService {
    engine: Engine,
}

impl SystemService {
    pub(crate) fn new(engine: Engine) -> SystemService {
        SystemService { engine }
    }
}

/// The commit berthd was built from, when the build said.
const GIT_COMMIT: &str = match option_env!("BERTH_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

fn uname() -> (String, String, String) {
    let u = rustix::system::uname();
    let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    (s(u.release()), s(u.machine()), s(u.nodename()))
}

/// Go's name for an architecture (`x86_64` -> `amd64`), as Docker reports `Arch`.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `2` on a cgroup v2 (unified) host, else `1`.
// `f_type`'s integer type differs between architectures.
#[allow(clippy::useless_conversion)]
fn cgroup_version() -> &'static str {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    match rustix::fs::statfs("/sys/fs/cgroup") {
        Ok(s) if i64::from(s.f_type) == CGROUP2_SUPER_MAGIC => "2",
        _ => "1",
    }
}

/// `PRETTY_NAME` from os-release.
fn operating_system() -> String {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
        .unwrap_or_else(|| "Linux".into())
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The engine's ID: read from `ROOT/engine-id`, made (a random UUID) and kept on first use.
fn engine_id(root: &Path) -> String {
    let path = root.join("engine-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return id.to_owned();
        }
    }
    let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| format!("{:032x}", crate::events::now_unix_nanos()));
    let tmp = root.join(format!(".engine-id.{}", std::process::id()));
    let kept = std::fs::write(&tmp, format!("{id}\n")).and_then(|()| {
        // A racing first use may have won: keep whichever is there.
        std::fs::hard_link(&tmp, &path)
    });
    let _ = std::fs::remove_file(&tmp);
    match kept {
        Ok(()) => id,
        Err(_) => std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or(id),
    }
}

/// Unique image ids of a namespace and the layer snapshots (chain ids) each reaches.
fn image_chains(svc: &ImageService) -> Result<BTreeMap<String, Vec<String>>, Status> {
    let mut out = BTreeMap::new();
    for s in svc.list().map_err(crate::images::status)? {
        let id = s.id.to_string();
        if out.contains_key(&id) {
            continue;
        }
        let chains = svc
            .store()
            .content
            .read(&s.id)
            .ok()
            .and_then(|b| serde_json::from_slice::<berth_image::format::ImageConfig>(&b).ok())
            .map(|c| {
                berth_image::format::chain_ids(&c.rootfs.diff_ids)
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.insert(id, chains);
    }
    Ok(out)
}

/// The `Images` row of `system df`: shared layers counted once; reclaimable = layers no image
/// in use by a container reaches.
fn images_df(
    svc: &ImageService,
    ns: &str,
    users: &HashMap<String, Vec<ContainerBrief>>,
) -> Result<DfRow, Status> {
    let images = image_chains(svc)?;
    let active: BTreeSet<&String> = images
        .keys()
        .filter(|id| users.get(*id).is_some_and(|v| !v.is_empty()))
        .collect();
    let mut all_layers = BTreeSet::new();
    let mut kept = BTreeSet::new();
    for (id, chains) in &images {
        for c in chains {
            all_layers.insert(c.as_str());
            if active.contains(id) {
                kept.insert(c.as_str());
            }
        }
    }
    let usage = |c: &str| {
        svc.store()
            .snapshots
            .usage(ns, c)
            .map_or(0, |(bytes, _)| bytes)
    };
    let size: u64 = all_layers.iter().map(|c| usage(c)).sum();
    let reclaimable: u64 = all_layers
        .iter()
        .filter(|c| !kept.contains(*c))
        .map(|c| usage(c))
        .sum();
    Ok(DfRow {
        kind: "Images".into(),
        total: count(images.len()),
        active: count(active.len()),
        size: bytes(size),
        reclaimable: bytes(reclaimable),
    })
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

type EventsStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

#[tonic::async_trait]
impl System for SystemService {
    type EventsStream = EventsStream;

    async fn version(
        &self,
        _req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let (kernel, _, _) = uname();
        Ok(Response::new(VersionResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: berth_api::API_VERSION.into(),
            git_commit: GIT_COMMIT.into(),
            os: std::env::consts::OS.into(),
            arch: go_arch().into(),
            kernel_version: kernel,
            default_runtime: self.engine.config().default_runtime.clone(),
        }))
    }

    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<JsonDocument>, Status> {
        let ns = namespace_of(&req).to_owned();
        let engine = self.engine.clone();
        let doc = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, Status> {
            let cfg = engine.config();
            let counts = engine.container_counts(Some(&ns));
            let svc = engine.image_service(&ns);
            let images = image_chains(&svc)?.len();
            let (kernel, machine, hostname) = uname();
            let mut runtimes = serde_json::Map::new();
            runtimes.insert(
                crate::DEFAULT_RUNTIME.into(),
                json!({"path": cfg.shim_binary.display().to_string()}),
            );
            for (name, path) in &cfg.runtimes {
                runtimes.insert(name.clone(), json!({"path": path.display().to_string()}));
            }
            let driver = if engine.store().snapshots.is_overlay() {
                "overlayfs"
            } else {
                "native"
            };
            Ok(json!({
                "ID": engine_id(&cfg.root),
                "Containers": counts.total,
                "ContainersRunning": counts.running,
                "ContainersPaused": counts.paused,
                "ContainersStopped": counts.stopped,
                "Images": images,
                "Driver": driver,
                "DockerRootDir": cfg.root.display().to_string(),
                "CgroupDriver": "cgroupfs",
                "CgroupVersion": cgroup_version(),
                "KernelVersion": kernel,
                "OperatingSystem": operating_system(),
                "OSType": std::env::consts::OS,
                "Architecture": machine,
                "NCPU": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                "MemTotal": mem_total(),
                "Name": hostname,
                "ServerVersion": env!("CARGO_PKG_VERSION"),
                "Runtimes": runtimes,
                "DefaultRuntime": cfg.default_runtime,
                "SecurityOptions": ["name=seccomp,profile=builtin"],
                "LoggingDriver": cfg.log_driver,
                "Namespace": ns,
            }))
        })
        .await
        .map_err(|e| Status::internal(format!("info task failed: {e}")))??;
        Ok(Response::new(JsonDocument {
            json: doc.to_string(),
        }))
    }

    async fn df(&self, req: Request<DfRequest>) -> Result<Response<DfResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let engine = self.engine.clone();
        let rows = tokio::task::spawn_blocking(move || -> Result<Vec<DfRow>, Status> {
            let users = engine.image_users(&ns);
            let images = images_df(&engine.image_service(&ns), &ns, &users)?;
            let containers = engine.containers_df(&ns);
            let size: u64 = containers.iter().map(|c| c.size).sum();
            let idle: u64 = containers
                .iter()
                .filter(|c| !c.running)
                .map(|c| c.size)
                .sum();
            let zero = |kind: &str| DfRow {
                kind: kind.into(),
                ..DfRow::default()
            };
            Ok(vec![
                images,
                DfRow {
                    kind: "Containers".into(),
                    total: count(containers.len()),
                    active: count(containers.iter().filter(|c| c.running).count()),
                    size: bytes(size),
                    reclaimable: bytes(idle),
                },
                engine.volumes_df(&ns),
                zero("Build Cache"),
            ])
        })
        .await
        .map_err(|e| Status::internal(format!("df task failed: {e}")))??;
        Ok(Response::new(DfResponse { rows }))
    }

    async fn prune(
        &self,
        req: Request<SystemPruneRequest>,
    ) -> Result<Response<SystemPruneResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let all = r.all;
        let (containers, container_bytes) = self.engine.prune_containers(&ns).await?;
        let (volumes_deleted, volume_bytes) = if r.volumes {
            let (e, ns) = (self.engine.clone(), ns.clone());
            tokio::task::spawn_blocking(move || e.prune_volumes(&ns, false, &[]))
                .await
                .map_err(|e| Status::internal(format!("volume prune failed: {e}")))??
        } else {
            (Vec::new(), 0)
        };
        let images = crate::images::prune_images(&self.engine, &ns, all).await?;
        let mut images_deleted = images.untagged;
        images_deleted.extend(images.deleted);
        Ok(Response::new(SystemPruneResponse {
            containers_deleted: containers,
            images_deleted,
            space_reclaimed: bytes(container_bytes)
                .saturating_add(images.space_reclaimed)
                .saturating_add(bytes(volume_bytes)),
            volumes_deleted,
        }))
    }

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let filter = EventFilter::parse(Some(&ns), &r.filters)?;
        let s = self
            .engine
            .events()
            .subscribe(filter, r.since_unix_nanos, r.until_unix_nanos)
            .map(Ok);
        Ok(Response::new(Box::pin(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts() {
        let (kernel, machine, host) = uname();
        assert!(!kernel.is_empty() && !machine.is_empty() && !host.is_empty());
        assert!(["1", "2"].contains(&cgroup_version()));
        assert!(mem_total() > 0);
        assert!(!operating_system().is_empty());
    }

    #[test]
    fn the_engine_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = engine_id(dir.path());
        assert_eq!(a.len(), 36, "{a}");
        assert_eq!(engine_id(dir.path()), a);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}
