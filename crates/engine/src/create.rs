//! `Create`: resolve the image, reserve the name, snapshot and mount the root filesystem, write
//! the managed `/etc` files and `config.json`, record the container. Every step is undone if a
//! later one fails, so nothing half-created remains; a record is marked complete only at the
//! end, so a daemon killed in between leaves a record that the next boot removes.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use berth_api::v1::ContainerConfig;
use oci_spec::image::{Digest, ImageConfiguration};
use serde_json::{Value, json};
use tonic::Status as RpcStatus;

use crate::container::Container;
use crate::record::{Record, Status, new_id, now_nanos};
use crate::volumes::Prepared;
use crate::{DEFAULT_RUNTIME, Engine, err_chain};

/// What a resolved image gives a create.
pub(crate) struct ResolvedImage {
    pub id: String,
    pub full_name: String,
    pub config: ImageConfiguration,
    /// The top layer's chain id (the container snapshot's parent); `None` for no layers.
    pub top: Option<String>,
}

impl Engine {
    pub(crate) fn resolve_image(&self, ns: &str, image: &str) -> Result<ResolvedImage, RpcStatus> {
        if image.is_empty() {
            return Err(RpcStatus::invalid_argument("an image is required"));
        }
        let read_err = |e: berth_image::Error| match e {
            berth_image::Error::NoSuchImage(_) => {
                RpcStatus::not_found(format!("No such image: {image}"))
            }
            other => {
                RpcStatus::internal(format!("cannot read image {image}: {}", err_chain(&other)))
            }
        };
        let svc = self.image_service(ns);
        let (name, id, bytes) = svc.for_run(image).map_err(read_err)?;
        // The config blob as it is; a config that lacks a field oci-spec requires takes the
        // slower way below, which fills in defaults.
        if let Ok(config) = serde_json::from_slice::<ImageConfiguration>(&bytes) {
            let diff_ids = config
                .rootfs()
                .diff_ids()
                .iter()
                .map(|s| {
                    Digest::from_str(s).map_err(|e| {
                        RpcStatus::internal(format!("image {image} has a bad layer id {s:?}: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let top = berth_image::format::chain_ids(&diff_ids)
                .last()
                .map(ToString::to_string);
            return Ok(ResolvedImage {
                id: id.to_string(),
                full_name: name,
                config,
                top,
            });
        }
        let v = svc.inspect(image).map_err(read_err)?;
        let id = v["Id"].as_str().unwrap_or_default().to_owned();
        let layers: Vec<Value> = v["RootFS"]["Layers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut doc = json!({
            "architecture": v["Architecture"].as_str().unwrap_or("amd64"),
            "os": v["Os"].as_str().unwrap_or("linux"),
            "rootfs": {"type": "layers", "diff_ids": layers},
        });
        if v["Config"].is_object() {
            doc["config"] = v["Config"].clone();
        }
        let config: ImageConfiguration = serde_json::from_value(doc).map_err(|e| {
            RpcStatus::internal(format!(
                "cannot parse the configuration of image {image}: {e}"
            ))
        })?;
        let mut diff_ids = Vec::new();
        for l in &layers {
            let s = l.as_str().unwrap_or_default();
            diff_ids.push(Digest::from_str(s).map_err(|e| {
                RpcStatus::internal(format!("image {image} has a bad layer id {s:?}: {e}"))
            })?);
        }
        let top = berth_image::format::chain_ids(&diff_ids)
            .last()
            .map(ToString::to_string);
        let full_name = v["RepoTags"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map_or_else(|| image.to_owned(), ToOwned::to_owned);
        Ok(ResolvedImage {
            id,
            full_name,
            config,
            top,
        })
    }

    /// Resolve `--runtime`: the built-in one (None), a configured name, or a path.
    pub(crate) fn resolve_runtime(
        &self,
        name: &str,
    ) -> Result<(String, Option<PathBuf>), RpcStatus> {
        let name = if name.is_empty() {
            self.config().default_runtime.as_str()
        } else {
            name
        };
        if name == DEFAULT_RUNTIME {
            return Ok((name.to_owned(), None));
        }
        if let Some(p) = self.config().runtimes.get(name) {
            return Ok((name.to_owned(), Some(p.clone())));
        }
        if name.contains('/') && Path::new(name).is_file() {
            return Ok((name.to_owned(), Some(PathBuf::from(name))));
        }
        Err(RpcStatus::invalid_argument(format!(
            "unknown or invalid runtime name: {name} (configure it under [runtimes.{name}] in the config file, or give the path of a runc-compatible binary)"
        )))
    }

    pub(crate) async fn create(
        &self,
        ns: &str,
        cfg: ContainerConfig,
    ) -> Result<(String, Vec<String>), RpcStatus> {
        let _busy = self.busy();
        let e = self.clone();
        let ns = ns.to_owned();
        tokio::task::spawn_blocking(move || e.create_blocking(&ns, cfg))
            .await
            .map_err(|err| RpcStatus::internal(format!("create failed: {err}")))?
    }

    fn create_blocking(
        &self,
        ns: &str,
        cfg: ContainerConfig,
    ) -> Result<(String, Vec<String>), RpcStatus> {
        if !cfg.name.is_empty() && !crate::names::valid(&cfg.name) {
            return Err(RpcStatus::invalid_argument(format!(
                "Invalid container name ({}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                cfg.name
            )));
        }
        let (runtime_name, runtime) = self.resolve_runtime(&cfg.runtime)?;
        let (log_driver, log_max_size, log_max_file) = self.log_options(&cfg)?;
        let image = self.resolve_image(ns, &cfg.image)?;
        let mut cfg = cfg;
        self.network_prepare(ns, &mut cfg, &image.config)?;
        // The spare snapshot prepared for this image, if there is one (`spare.rs`): its key
        // is the new container's id.
        let spare = self.take_spare(ns, image.top.as_deref());
        let id = spare.as_ref().map_or_else(new_id, |s| s.id.clone());
        let mut undo = Undo {
            engine: self,
            ns,
            id: &id,
            name: None,
            dir: false,
            // A taken spare is this container's from now on, and undone with it.
            snapshot: spare.is_some(),
            mounted: false,
            bundle: false,
        };
        let name = self.reserve_name(ns, &cfg.name, &id)?;
        undo.name = Some(name.clone());

        let cdir = self.containers_dir(&id);
        let hostname = if cfg.hostname.is_empty() {
            id[..12].to_owned()
        } else {
            cfg.hostname.clone()
        };
        let mut rec = Record {
            id: id.clone(),
            name: name.clone(),
            namespace: ns.to_owned(),
            created: now_nanos(),
            image: cfg.image.clone(),
            image_ref: image.full_name.clone(),
            image_id: image.id.clone(),
            config: Record::encode_config(&cfg),
            path: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: String::new(),
            user: String::new(),
            hostname: hostname.clone(),
            stop_signal: 15,
            status: Status::Created,
            pid: 0,
            exit_code: 0,
            error: String::new(),
            oom_killed: false,
            started_at: 0,
            finished_at: 0,
            restart_count: 0,
            manually_stopped: false,
            complete: false,
            runtime,
            runtime_name,
            cgroups_path: format!("/berth/{ns}/{id}"),
            log_path: (log_driver == "json-file").then(|| cdir.join(format!("{id}-json.log"))),
            log_max_size,
            log_max_file,
            log_driver,
            mount_points: Vec::new(),
        };
        let (vols, built_warnings) = if let Some(spare) = spare {
            self.lay_out(&mut undo, &cdir, &rec)?;
            self.build_bundle(&mut undo, spare.mounts, &cfg, &image, &mut rec)?
        } else {
            self.create_snapshot_and_bundle(&mut undo, &cfg, &image, &mut rec)?
        };
        rec.complete = true;
        rec.save(&cdir).map_err(io("write the record in", &cdir))?;
        let c = Container::new(rec);
        self.index().by_id.insert(id.clone(), c);
        vols.claim.keep();
        undo.disarm();
        drop(undo);
        self.emit(
            ns,
            "container",
            "create",
            &id,
            &[("name", &name), ("image", &cfg.image)],
        );
        let mut warnings = vols.warnings;
        warnings.extend(built_warnings);
        Ok((id, warnings))
    }

    /// The container's directory, its first (incomplete) record and the bundle's rootfs
    /// directory; `undo` learns of each.
    fn lay_out(&self, undo: &mut Undo<'_>, cdir: &Path, rec: &Record) -> Result<(), RpcStatus> {
        std::fs::create_dir(cdir).map_err(io("create", cdir))?;
        undo.dir = true;
        rec.save(cdir).map_err(io("write the record in", cdir))?;
        let rootfs = self.bundle_dir(undo.id).join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io("create", &rootfs))?;
        undo.bundle = true;
        Ok(())
    }

    /// Prepare the container's snapshot and write its bundle. The snapshot is prepared on a
    /// thread of its own, started first, while this one lays out the directories and mounts
    /// the rootfs: its directories and the commit of its record, which syncs the metadata
    /// file, are the longest step of a create. The container exists only once both are done;
    /// a crash in between leaves a snapshot without a container, which boot removes
    /// (`recover.rs`), or a record marked incomplete.
    fn create_snapshot_and_bundle(
        &self,
        undo: &mut Undo<'_>,
        cfg: &ContainerConfig,
        image: &ResolvedImage,
        rec: &mut Record,
    ) -> Result<(Prepared, Vec<String>), RpcStatus> {
        let (ns, id) = (undo.ns, undo.id);
        let cdir = self.containers_dir(id);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<berth_store::Mount>>(1);
        let (store, top) = (self.store(), image.top.as_deref());
        let (committed, made) = std::thread::scope(|scope| {
            let commit = std::thread::Builder::new()
                .name("berth-prepare".into())
                .spawn_scoped(scope, || {
                    store.snapshots.prepare_overlapped(ns, id, top, move |m| {
                        let _ = tx.send(m);
                    })
                });
            let made = self.lay_out(undo, &cdir, rec).and_then(|()| {
                match (&commit, rx.recv()) {
                    (Ok(_), Ok(mounts)) => self.build_bundle(undo, mounts, cfg, image, rec),
                    // The prepare failed before its directories were made (its error below).
                    _ => Err(RpcStatus::internal("no snapshot")),
                }
            });
            let committed = match commit {
                Ok(h) => match h.join() {
                    Ok(r) => r.map_err(|e| err_chain(&e)),
                    Err(_) => Err("its thread panicked".to_owned()),
                },
                Err(e) => Err(format!("cannot start a thread: {e}")),
            };
            (committed, made)
        });
        committed.map_err(|e| {
            RpcStatus::internal(format!(
                "cannot prepare the root filesystem snapshot of container {}: {e}",
                rec.name
            ))
        })?;
        undo.snapshot = true;
        made
    }

    /// Mount the container's root filesystem and write its bundle (volumes, the `/etc` files,
    /// config.json), filling the record's process fields from the spec. Runs while the
    /// snapshot's record commits on another thread; `undo` learns of the mount.
    fn build_bundle(
        &self,
        undo: &mut Undo<'_>,
        mounts: Vec<berth_store::Mount>,
        cfg: &ContainerConfig,
        image: &ResolvedImage,
        rec: &mut Record,
    ) -> Result<(Prepared, Vec<String>), RpcStatus> {
        let (ns, id) = (undo.ns, undo.id);
        let (name, hostname) = (rec.name.clone(), rec.hostname.clone());
        let cdir = self.containers_dir(id);
        let bundle = self.bundle_dir(id);
        let rootfs = bundle.join("rootfs");
        mount_rootfs(mounts, &rootfs, cfg.auto_remove).map_err(|e| {
            RpcStatus::internal(format!(
                "cannot mount the root filesystem of container {name}: {}",
                err_chain(&e)
            ))
        })?;
        undo.mounted = true;

        // Volumes: resolved, created and populated from the image (copy-up);
        // released, and the ones made here removed, if the create fails.
        let vols = self.volumes_prepare(ns, id, cfg, &image.config, &rootfs)?;
        let build_cfg = ContainerConfig {
            mounts: vols.mounts.clone(),
            ..cfg.clone()
        };
        rec.mount_points = vols.points.clone();

        let etc = berth_spec::write_etc_files(
            &cdir,
            &hostname,
            &cfg.network_mode,
            &cfg.dns,
            &self.extra_hosts(ns, cfg)?,
        )
        .map_err(|e| RpcStatus::invalid_argument(err_chain(&e)))?;
        let shim = self.config().shim_binary.clone();
        let built = berth_spec::build(&berth_spec::Input {
            id,
            config: &build_cfg,
            image: &image.config,
            rootfs: &rootfs,
            etc: &etc,
            init_binary: cfg.init.then_some(shim.as_path()),
            cgroups_path: rec.cgroups_path.clone(),
        })
        .map_err(|e| RpcStatus::invalid_argument(err_chain(&e)))?;
        let mut spec = built.spec;
        self.network_spec(id, cfg, &mut spec);
        let readonly = spec.root().as_ref().and_then(|r| r.readonly());
        let root = oci_spec::runtime::RootBuilder::default()
            .path("rootfs")
            .readonly(readonly.unwrap_or(cfg.read_only))
            .build()
            .map_err(|e| RpcStatus::internal(format!("cannot build the spec's root: {e}")))?;
        spec.set_root(Some(root));
        if let Some(p) = spec.process() {
            let args = p.args().clone().unwrap_or_default();
            rec.path = args.first().cloned().unwrap_or_default();
            rec.args = args.into_iter().skip(1).collect();
            rec.env = p.env().clone().unwrap_or_default();
            rec.working_dir = p.cwd().to_string_lossy().into_owned();
        }
        rec.user = if cfg.user.is_empty() {
            image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.user().clone())
                .unwrap_or_default()
        } else {
            cfg.user.clone()
        };
        rec.stop_signal = built.stop_signal;
        let spec_bytes = serde_json::to_vec(&spec)
            .map_err(|e| RpcStatus::internal(format!("cannot serialise config.json: {e}")))?;
        // The bundle lives in the state directory (tmpfs for the default root): a copy in the
        // record's directory lets a boot after a host reboot rebuild it.
        std::fs::write(cdir.join("config.json"), &spec_bytes)
            .map_err(io("write config.json in", &cdir))?;
        std::fs::write(bundle.join("config.json"), &spec_bytes)
            .map_err(io("write config.json in", &bundle))?;

        Ok((vols, built.warnings))
    }

    fn reserve_name(&self, ns: &str, wanted: &str, id: &str) -> Result<String, RpcStatus> {
        let mut idx = self.index();
        if !wanted.is_empty() {
            let key = (ns.to_owned(), wanted.to_owned());
            if let Some(other) = idx.names.get(&key) {
                return Err(RpcStatus::already_exists(format!(
                    "Conflict. The container name \"/{wanted}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                )));
            }
            idx.names.insert(key, id.to_owned());
            return Ok(wanted.to_owned());
        }
        for attempt in 0..100 {
            let n = crate::names::generate(attempt);
            let key = (ns.to_owned(), n.clone());
            if let std::collections::hash_map::Entry::Vacant(v) = idx.names.entry(key) {
                v.insert(id.to_owned());
                return Ok(n);
            }
        }
        Err(RpcStatus::internal(
            "cannot generate a free container name; give one with --name",
        ))
    }

    fn log_options(&self, cfg: &ContainerConfig) -> Result<(String, u64, u32), RpcStatus> {
        let c = self.config();
        let driver = cfg
            .log
            .as_ref()
            .map(|l| l.driver.as_str())
            .filter(|d| !d.is_empty())
            .unwrap_or(&c.log_driver)
            .to_owned();
        if driver != "json-file" && driver != "none" {
            return Err(RpcStatus::invalid_argument(format!(
                "unsupported log driver {driver:?}: use json-file or none"
            )));
        }
        let mut max_size = c.log_max_size;
        let mut max_file = c.log_max_file;
        if let Some(l) = &cfg.log {
            for (k, v) in &l.options {
                match k.as_str() {
                    "max-size" => {
                        max_size = parse_size(v).ok_or_else(|| {
                            RpcStatus::invalid_argument(format!(
                                "invalid value for log option max-size: {v:?} (use e.g. 10m)"
                            ))
                        })?;
                    }
                    "max-file" => {
                        max_file = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                            RpcStatus::invalid_argument(format!(
                                "invalid value for log option max-file: {v:?} (a number >= 1)"
                            ))
                        })?;
                    }
                    other => {
                        return Err(RpcStatus::invalid_argument(format!(
                            "unknown log opt '{other}' for {driver} log driver"
                        )));
                    }
                }
            }
        }
        Ok((driver, max_size, max_file))
    }
}

/// `10m`, `1g`, `512k`, `100` (bytes) -> bytes; units are powers of 1024 as in Docker.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    if n.is_nan() || n < 0.0 {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    Some((n * mult as f64) as u64)
}

/// An I/O error of a create step: what it did (`op`) on which path.
fn io(op: &'static str, p: &Path) -> impl FnOnce(std::io::Error) -> RpcStatus + use<> {
    let p = p.to_path_buf();
    move |e| RpcStatus::internal(format!("cannot {op} {}: {e}", p.display()))
}

/// Undoes a create step by step unless disarmed.
struct Undo<'a> {
    engine: &'a Engine,
    ns: &'a str,
    id: &'a str,
    name: Option<String>,
    dir: bool,
    snapshot: bool,
    mounted: bool,
    bundle: bool,
}

impl Undo<'_> {
    fn disarm(&mut self) {
        self.name = None;
        self.dir = false;
        self.snapshot = false;
        self.mounted = false;
        self.bundle = false;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        let e = self.engine;
        let bundle = e.bundle_dir(self.id);
        if self.mounted {
            if let Err(err) = berth_store::unmount(&bundle.join("rootfs")) {
                tracing::warn!("undo create {}: {}", self.id, err_chain(&err));
            }
        }
        if self.snapshot {
            if let Err(err) = e.store().snapshots.remove(self.ns, self.id) {
                tracing::warn!("undo create {}: {}", self.id, err_chain(&err));
            }
        }
        if self.bundle {
            let _ = std::fs::remove_dir_all(&bundle);
        }
        if self.dir {
            let _ = std::fs::remove_dir_all(e.containers_dir(self.id));
        }
        if let Some(n) = self.name.take() {
            let mut idx = e.index();
            let key = (self.ns.to_owned(), n);
            if idx.names.get(&key).map(String::as_str) == Some(self.id) {
                idx.names.remove(&key);
            }
        }
    }
}

/// Mount a container's root filesystem. A `--rm` container does not outlive a host crash, so
/// its writable layer needs no durability: its overlay is mounted `volatile` (podman does the
/// same for `--rm`), which spares every sync of the host filesystem the overlay would otherwise
/// do, the one in its unmount included (about 0.5 ms of `run --rm`). Kernels without the
/// option (before 5.10) get a plain mount.
fn mount_rootfs(
    mut mounts: Vec<berth_store::Mount>,
    rootfs: &Path,
    auto_remove: bool,
) -> Result<(), berth_store::Error> {
    let overlay = |m: &berth_store::Mount| m.typ == "overlay";
    if !auto_remove || !mounts.iter().any(overlay) {
        return berth_store::mount(&mounts, rootfs);
    }
    let plain = mounts.clone();
    for m in mounts.iter_mut().filter(|m| overlay(m)) {
        m.options.push("volatile".into());
    }
    berth_store::mount(&mounts, rootfs).or_else(|e| {
        tracing::debug!(
            "volatile overlay refused ({}); mounting it plain",
            err_chain(&e)
        );
        berth_store::mount(&plain, rootfs)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("10m"), Some(10 << 20));
        assert_eq!(super::parse_size("100"), Some(100));
        assert_eq!(super::parse_size("1.5k"), Some(1536));
        assert_eq!(super::parse_size("2GB"), Some(2 << 30));
        assert_eq!(super::parse_size("x"), None);
    }
}
