//! Volumes with Docker's `local` driver: a directory per volume under
//! `ROOT/volumes/<namespace>/<name>/`, holding `_data` (what containers see) and `volume.json`
//! (driver, labels, options, creation time, whether it is anonymous).
//!
//! Crash safety: a volume is built complete in `.tmp-<random>/` and renamed to its name, so it
//! either exists whole or not at all; removal renames it to `.rm-<random>/` before deleting, so a
//! half-deleted tree never carries a name. Boot removes `.tmp-*` and `.rm-*` leftovers. Copy-up
//! writes `copyup-in-progress` beside `_data` first and removes it after a `syncfs`; a marker
//! found later means the copy was cut short, and the next mount redoes it from scratch.
//!
//! In use means: named by any container's record (running or not), or claimed by a create still
//! in progress ([`Claim`]), so `volume rm` can never race a `run` that is about to mount it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use berth_api::namespace_of;
use berth_api::v1::{
    ContainerConfig, Empty, JsonDocument, Mount, VolumeCreateRequest, VolumeListRequest,
    VolumeListResponse, VolumePruneRequest, VolumePruneResponse, VolumeRef, VolumeRemoveRequest,
    VolumeSummary, volumes_server,
};
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use crate::container::Container;
use crate::record::{new_id, now_nanos, rfc3339};
use crate::{Engine, err_chain};

/// The label Docker puts on anonymous volumes (what `volume prune` without `-a` removes).
pub(crate) const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";
const META_FILE: &str = "volume.json";
const DATA_DIR: &str = "_data";
const COPYUP_MARKER: &str = "copyup-in-progress";

/// Creates in progress per (namespace, volume): they count as users.
#[derive(Default)]
pub(crate) struct State {
    pending: Mutex<HashMap<(String, String), usize>>,
}

/// One of a container's user mounts, as resolved at create.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MountPoint {
    /// "bind", "volume" or "tmpfs".
    pub typ: String,
    /// The volume's name (volumes only).
    pub name: String,
    /// Host path (the volume's `_data` for volumes; empty for tmpfs).
    pub source: String,
    pub destination: String,
    /// The `-v` mode string as given (`ro`, `z`, ...).
    pub mode: String,
    pub rw: bool,
    pub propagation: String,
    /// An anonymous volume: removed with the container by `rm -v` and `--rm`.
    pub anonymous: bool,
}

impl MountPoint {
    /// Docker's `Mounts[]` entry.
    pub(crate) fn to_docker(&self) -> Value {
        let mut v = json!({
            "Type": self.typ,
            "Source": self.source,
            "Destination": self.destination,
            "Mode": self.mode,
            "RW": self.rw,
            "Propagation": self.propagation,
        });
        if self.typ == "volume" {
            v["Name"] = json!(self.name);
            v["Driver"] = json!("local");
        }
        v
    }
}

/// `volume.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    name: String,
    driver: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
    created: i64,
    #[serde(default)]
    anonymous: bool,
    /// The container whose create made this anonymous volume: if that create never finished
    /// (berthd killed), boot removes the volume with the half-made container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    container: String,
}

/// The local driver's options (`volume create -o`), as Docker's: `type` and `device` go
/// together, `o` needs both.
const OPTION_KEYS: &[&str] = &["type", "device", "o"];

/// What a volume with options mounts on its `_data` when its first user starts.
#[derive(Debug, PartialEq)]
struct MountOpts {
    fstype: String,
    device: String,
    flags: rustix::mount::MountFlags,
    /// `bind` / `rbind` in `o`: a bind mount of `device`.
    bind: Option<bool>,
    /// The rest of `o`, given to the file system.
    data: String,
}

/// Check a volume's options (`Ok(None)`: none, a plain directory). Errors name the option.
fn mount_opts(options: &BTreeMap<String, String>) -> Result<Option<MountOpts>, String> {
    use rustix::mount::MountFlags as F;
    if options.is_empty() {
        return Ok(None);
    }
    if let Some(k) = options.keys().find(|k| !OPTION_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "invalid option: {k:?} (the local driver takes type, device and o)"
        ));
    }
    for (opt, needs) in [
        ("device", &["type"][..]),
        ("type", &["device"][..]),
        ("o", &["device", "type"][..]),
    ] {
        if options.contains_key(opt) {
            if let Some(n) = needs.iter().find(|n| !options.contains_key(**n)) {
                return Err(format!(
                    "missing required option: {n:?} (option {opt:?} needs it)"
                ));
            }
        }
    }
    let fstype = options["type"].clone();
    let device = options["device"].clone();
    if fstype.is_empty() {
        return Err("invalid option \"type\": it is empty".into());
    }
    if device.is_empty() {
        return Err("invalid option \"device\": it is empty".into());
    }
    let mut flags = F::empty();
    let mut bind = None;
    let mut data = Vec::new();
    for o in options
        .get("o")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .filter(|o| !o.is_empty())
    {
        let (set, clear) = match o {
            "ro" => (F::RDONLY, F::empty()),
            "rw" => (F::empty(), F::RDONLY),
            "nosuid" => (F::NOSUID, F::empty()),
            "suid" => (F::empty(), F::NOSUID),
            "nodev" => (F::NODEV, F::empty()),
            "dev" => (F::empty(), F::NODEV),
            "noexec" => (F::NOEXEC, F::empty()),
            "exec" => (F::empty(), F::NOEXEC),
            "sync" => (F::SYNCHRONOUS, F::empty()),
            "async" => (F::empty(), F::SYNCHRONOUS),
            "dirsync" => (F::DIRSYNC, F::empty()),
            "noatime" => (F::NOATIME, F::empty()),
            "nodiratime" => (F::NODIRATIME, F::empty()),
            "relatime" => (F::RELATIME, F::empty()),
            "strictatime" => (F::STRICTATIME, F::empty()),
            "defaults" => (F::empty(), F::empty()),
            "bind" => {
                bind = Some(false);
                continue;
            }
            "rbind" => {
                bind = Some(true);
                continue;
            }
            "remount" | "move" => {
                return Err(format!(
                    "invalid option \"o\": {o:?} is not a mount option a volume can use"
                ));
            }
            other => {
                data.push(other);
                continue;
            }
        };
        flags = (flags | set) - clear;
    }
    if bind.is_some() && !device.starts_with('/') {
        return Err(format!(
            "invalid option \"device\": {device:?} must be an absolute host path for a bind mount"
        ));
    }
    if fstype == "none" && bind.is_none() {
        return Err(
            "invalid option \"o\": type=none mounts nothing unless o has bind (or rbind): -o type=none -o o=bind -o device=/host/path"
                .into(),
        );
    }
    Ok(Some(MountOpts {
        fstype,
        device,
        flags,
        bind,
        data: data.join(","),
    }))
}

/// Mount a volume's file system on its `_data`.
fn mount_volume(m: &MountOpts, target: &Path) -> std::io::Result<()> {
    use rustix::mount::MountFlags as F;
    match m.bind {
        Some(recursive) => {
            if recursive {
                rustix::mount::mount_bind_recursive(m.device.as_str(), target)?;
            } else {
                rustix::mount::mount_bind(m.device.as_str(), target)?;
            }
            if !m.flags.is_empty() {
                // Flags of a bind apply only by remounting it.
                if let Err(e) = rustix::mount::mount_remount(target, m.flags | F::BIND, "") {
                    let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
                    return Err(e.into());
                }
            }
            Ok(())
        }
        None => {
            let data = std::ffi::CString::new(m.data.as_str()).map_err(std::io::Error::other)?;
            rustix::mount::mount(
                m.device.as_str(),
                target,
                m.fstype.as_str(),
                m.flags,
                Some(data.as_c_str()),
            )?;
            Ok(())
        }
    }
}

/// Volumes a create has claimed: released (and, unless kept, the volumes the create made
/// removed again) when dropped.
pub(crate) struct Claim {
    engine: Engine,
    ns: String,
    names: Vec<String>,
    created: Vec<String>,
    kept: bool,
}

impl Claim {
    /// The container is recorded: its record now keeps the volumes in use.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let e = &self.engine;
        let mut pending = e.pending();
        for n in &self.names {
            let key = (self.ns.clone(), n.clone());
            if let Some(c) = pending.get_mut(&key) {
                *c -= 1;
                if *c == 0 {
                    pending.remove(&key);
                }
            }
        }
        if self.kept {
            return;
        }
        for n in &self.created {
            if e.users(&pending, &self.ns, n).is_empty() {
                if let Err(err) = e.remove_volume_dir(&self.ns, n) {
                    tracing::warn!("undo the creation of volume {n}: {}", err.message());
                }
            }
        }
    }
}

/// What a create mounts: the user's mounts with volumes turned into binds of their `_data`.
pub(crate) struct Prepared {
    pub mounts: Vec<Mount>,
    pub points: Vec<MountPoint>,
    pub warnings: Vec<String>,
    pub claim: Claim,
}

fn norm(p: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn io_err(op: &str, p: &Path, e: &std::io::Error) -> Status {
    Status::internal(format!("cannot {op} {}: {e}", p.display()))
}

fn valid_ns(ns: &str) -> Result<(), Status> {
    if ns.is_empty() || ns.starts_with('.') || ns.contains('/') {
        return Err(Status::invalid_argument(format!(
            "invalid namespace {ns:?}"
        )));
    }
    Ok(())
}

fn fsync_dir(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(p)?.sync_all()
}

fn is_empty_dir(p: &Path) -> std::io::Result<bool> {
    Ok(std::fs::read_dir(p)?.next().is_none())
}

/// Docker prints volume times in seconds, RFC 3339.
fn created_at(nanos: i64) -> String {
    let s = rfc3339(nanos);
    match s.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => s,
    }
}

/// Remove `.tmp-*` and `.rm-*` leftovers of a killed create or remove under `root/volumes`.
pub(crate) fn boot_cleanup(root: &Path) {
    let Ok(nss) = std::fs::read_dir(root.join("volumes")) else {
        return;
    };
    for ns in nss.flatten() {
        let Ok(entries) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(".tmp-") || n.starts_with(".rm-") {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!("remove leftover {}: {err}", e.path().display());
                }
            }
        }
    }
}

impl Engine {
    fn pending(&self) -> MutexGuard<'_, HashMap<(String, String), usize>> {
        self.0
            .volumes
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn volumes_dir(&self, ns: &str) -> PathBuf {
        self.config().root.join("volumes").join(ns)
    }

    fn volume_dir(&self, ns: &str, name: &str) -> PathBuf {
        self.volumes_dir(ns).join(name)
    }

    fn read_meta(&self, ns: &str, name: &str) -> Option<Meta> {
        if !berth_spec::parse::valid_volume_name(name) {
            return None;
        }
        let bytes = std::fs::read(self.volume_dir(ns, name).join(META_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn list_metas(&self, ns: &str) -> Vec<Meta> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.volumes_dir(ns)) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(m) = self.read_meta(ns, &n) {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Ids of the containers (and creates in progress) using a volume.
    fn users(
        &self,
        pending: &HashMap<(String, String), usize>,
        ns: &str,
        name: &str,
    ) -> Vec<String> {
        let mut out: Vec<String> = self
            .containers(Some(ns))
            .iter()
            .filter(|c| {
                c.lock()
                    .rec
                    .mount_points
                    .iter()
                    .any(|p| p.typ == "volume" && p.name == name)
            })
            .map(|c| c.id.clone())
            .collect();
        if pending.contains_key(&(ns.to_owned(), name.to_owned())) {
            out.push("(a container being created)".into());
        }
        out.sort();
        out
    }

    /// Create a volume unless it exists; true when it was created. Caller holds `pending`.
    fn create_volume_locked(
        &self,
        ns: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
        made_by: Option<&str>,
    ) -> Result<(Meta, bool), Status> {
        let anonymous = made_by.is_some();
        valid_ns(ns)?;
        if !berth_spec::parse::valid_volume_name(name) {
            return Err(Status::invalid_argument(format!(
                "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            )));
        }
        if let Some(m) = self.read_meta(ns, name) {
            return Ok((m, false));
        }
        let dir = self.volumes_dir(ns);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, &e))?;
        let tmp = dir.join(format!(".tmp-{}", &new_id()[..16]));
        let meta = Meta {
            name: name.to_owned(),
            driver: "local".into(),
            labels,
            options,
            created: now_nanos(),
            anonymous,
            container: made_by.unwrap_or_default().to_owned(),
        };
        let build = || -> std::io::Result<()> {
            std::fs::create_dir(&tmp)?;
            std::fs::create_dir(tmp.join(DATA_DIR))?;
            let mut f = std::fs::File::create(tmp.join(META_FILE))?;
            f.write_all(&serde_json::to_vec(&meta).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            fsync_dir(&tmp)?;
            std::fs::rename(&tmp, dir.join(name))?;
            fsync_dir(&dir)
        };
        if let Err(e) = build() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io_err(&format!("create volume {name} in"), &dir, &e));
        }
        self.emit(ns, "volume", "create", name, &[("driver", "local")]);
        Ok((meta, true))
    }

    /// Remove a volume's directory (rename out of the way first, so no half-removed volume
    /// keeps its name). Caller holds `pending` and checked the users.
    fn remove_volume_dir(&self, ns: &str, name: &str) -> Result<u64, Status> {
        let dir = self.volume_dir(ns, name);
        // A volume with options may still be mounted (a daemon killed while its user ran):
        // never delete through the mount (a bind volume's device is the user's own directory).
        let data = dir.join(DATA_DIR);
        if crate::task::is_mountpoint(&data) {
            rustix::mount::unmount(&data, rustix::mount::UnmountFlags::DETACH).map_err(|e| {
                Status::failed_precondition(format!(
                    "remove {name}: cannot unmount {}: {e}",
                    data.display()
                ))
            })?;
        }
        let size = berth_store::disk_usage(&dir.join(DATA_DIR)).map_or(0, |(b, _)| b);
        let gone = self
            .volumes_dir(ns)
            .join(format!(".rm-{}", &new_id()[..16]));
        std::fs::rename(&dir, &gone).map_err(|e| io_err("remove volume", &dir, &e))?;
        let _ = fsync_dir(&self.volumes_dir(ns));
        std::fs::remove_dir_all(&gone).map_err(|e| io_err("remove", &gone, &e))?;
        self.emit(ns, "volume", "destroy", name, &[("driver", "local")]);
        Ok(size)
    }

    fn inspect_doc(&self, ns: &str, m: &Meta) -> Value {
        let opt_map = |b: &BTreeMap<String, String>| {
            if b.is_empty() { Value::Null } else { json!(b) }
        };
        json!({
            "CreatedAt": created_at(m.created),
            "Driver": m.driver,
            "Labels": opt_map(&m.labels),
            "Mountpoint": self.volume_dir(ns, &m.name).join(DATA_DIR).to_string_lossy(),
            "Name": m.name,
            "Options": opt_map(&m.options),
            "Scope": "local",
        })
    }

    fn no_such_volume(name: &str) -> Status {
        Status::not_found(format!("get {name}: no such volume"))
    }

    /// Resolve the volumes of a create (named ones are created when missing, anonymous ones
    /// for `-v /path` and the image's `Volumes`), populate new ones from the image (copy-up)
    /// and claim them. Nothing is left behind on error.
    pub(crate) fn volumes_prepare(
        &self,
        ns: &str,
        id: &str,
        cfg: &ContainerConfig,
        image: &ImageConfiguration,
        rootfs: &Path,
    ) -> Result<Prepared, Status> {
        let mut seen = HashSet::new();
        let mut dests = Vec::new();
        for m in &cfg.mounts {
            dests.push(m.target.clone());
        }
        for t in &cfg.tmpfs {
            let m =
                berth_spec::parse::tmpfs(t).map_err(|e| Status::invalid_argument(err_chain(&e)))?;
            dests.push(m.target);
        }
        for d in &dests {
            if !seen.insert(norm(d)) {
                return Err(Status::invalid_argument(format!(
                    "Duplicate mount point: {d}"
                )));
            }
        }
        let mut warnings = Vec::new();
        let selinux = Path::new("/sys/fs/selinux/enforce").exists();
        for m in &cfg.mounts {
            if let Some(o) = m.options.iter().find(|o| *o == "z" || *o == "Z") {
                warnings.push(if selinux {
                    format!(
                        "the '{o}' option of {} is ignored: Berth does not apply SELinux labels",
                        m.target
                    )
                } else {
                    format!(
                        "the '{o}' option of {} is ignored: SELinux is not enabled on this host",
                        m.target
                    )
                });
            }
        }
        let mut pending = self.pending();
        let mut claim = Claim {
            engine: self.clone(),
            ns: ns.to_owned(),
            names: Vec::new(),
            created: Vec::new(),
            kept: false,
        };
        let mut mounts = Vec::new();
        let mut points = Vec::new();
        let mode_of = |m: &Mount| {
            let mut parts: Vec<&str> = Vec::new();
            if m.read_only {
                parts.push("ro");
            }
            parts.extend(
                m.options
                    .iter()
                    .map(String::as_str)
                    .filter(|o| matches!(*o, "z" | "Z" | "nocopy")),
            );
            parts.join(",")
        };
        // The image's volumes not covered by a user mount become anonymous volumes.
        let mut wanted: Vec<Mount> = cfg.mounts.clone();
        let image_volumes = image
            .config()
            .as_ref()
            .and_then(|c| c.volumes().clone())
            .unwrap_or_default();
        for v in image_volumes {
            if v.starts_with('/') && seen.insert(norm(&v)) {
                wanted.push(Mount {
                    r#type: "volume".into(),
                    target: v,
                    ..Mount::default()
                });
            }
        }
        for m in wanted {
            let propagation = m
                .options
                .iter()
                .find(|o| {
                    matches!(
                        o.as_str(),
                        "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"
                    )
                })
                .cloned();
            match m.r#type.as_str() {
                "volume" => {
                    let anonymous = m.source.is_empty();
                    let name = if anonymous {
                        new_id()
                    } else {
                        m.source.clone()
                    };
                    let mut labels = BTreeMap::new();
                    if anonymous {
                        labels.insert(ANONYMOUS_LABEL.to_owned(), String::new());
                    }
                    let (meta, created) = self.create_volume_locked(
                        ns,
                        &name,
                        labels,
                        BTreeMap::new(),
                        anonymous.then_some(id),
                    )?;
                    if created {
                        claim.created.push(name.clone());
                    }
                    *pending.entry((ns.to_owned(), name.clone())).or_insert(0) += 1;
                    claim.names.push(name.clone());
                    let vdir = self.volume_dir(ns, &name);
                    // A volume with a file system of its own is mounted only at start: no
                    // copy-up into the directory it will cover.
                    if meta.options.is_empty() && !m.options.iter().any(|o| o == "nocopy") {
                        copy_up(rootfs, &m.target, &vdir).map_err(|e| {
                            Status::internal(format!(
                                "cannot populate volume {name} from the image's {}: {e}",
                                m.target
                            ))
                        })?;
                    }
                    let data = vdir.join(DATA_DIR).to_string_lossy().into_owned();
                    points.push(MountPoint {
                        typ: "volume".into(),
                        name,
                        source: data.clone(),
                        destination: m.target.clone(),
                        mode: mode_of(&m),
                        rw: !m.read_only,
                        propagation: String::new(),
                        anonymous,
                    });
                    mounts.push(Mount {
                        r#type: "bind".into(),
                        source: data,
                        target: m.target.clone(),
                        read_only: m.read_only,
                        options: Vec::new(),
                    });
                }
                typ => {
                    if typ == "bind" || typ == "tmpfs" {
                        points.push(MountPoint {
                            typ: typ.to_owned(),
                            name: String::new(),
                            source: m.source.clone(),
                            destination: m.target.clone(),
                            mode: mode_of(&m),
                            rw: !m.read_only,
                            propagation: if typ == "bind" {
                                propagation.unwrap_or_else(|| "rprivate".into())
                            } else {
                                String::new()
                            },
                            anonymous: false,
                        });
                    }
                    mounts.push(m);
                }
            }
        }
        drop(pending);
        Ok(Prepared {
            mounts,
            points,
            warnings,
            claim,
        })
    }

    /// Before a container starts: mount the volumes it uses that have a file system of their
    /// own (`volume create -o type=...`) and are not mounted yet (Docker mounts at first use).
    /// A failure unmounts what this call mounted and names the volume.
    pub(crate) fn volumes_mount(&self, c: &Container) -> Result<(), Status> {
        let points = c.lock().rec.mount_points.clone();
        let _pending = self.pending();
        let mut done: Vec<PathBuf> = Vec::new();
        for p in points.iter().filter(|p| p.typ == "volume") {
            let Some(meta) = self.read_meta(&c.ns, &p.name) else {
                continue;
            };
            let opts = match mount_opts(&meta.options) {
                Ok(Some(o)) => o,
                Ok(None) => continue,
                Err(m) => {
                    return Err(Status::failed_precondition(format!(
                        "volume {}: {m}",
                        p.name
                    )));
                }
            };
            let data = self.volume_dir(&c.ns, &p.name).join(DATA_DIR);
            if crate::task::is_mountpoint(&data) || done.contains(&data) {
                continue;
            }
            if let Err(e) = mount_volume(&opts, &data) {
                for d in &done {
                    let _ = rustix::mount::unmount(d, rustix::mount::UnmountFlags::DETACH);
                }
                return Err(Status::failed_precondition(format!(
                    "cannot mount volume {} (type {}, device {}): {e} (check its options with volume inspect)",
                    p.name, opts.fstype, opts.device
                )));
            }
            done.push(data);
        }
        Ok(())
    }

    /// The container stopped (or never started): unmount its volumes with options that no
    /// other running container uses (Docker unmounts when the last user stops).
    pub(crate) fn volumes_release(&self, c: &Container) {
        let points = c.lock().rec.mount_points.clone();
        let _pending = self.pending();
        for p in points.iter().filter(|p| p.typ == "volume") {
            self.unmount_if_unused(&c.ns, &p.name, Some(&c.id));
        }
    }

    /// Unmount a volume's file system unless a running container (other than `except`) uses it.
    /// Caller holds `pending`.
    fn unmount_if_unused(&self, ns: &str, name: &str, except: Option<&str>) {
        let data = self.volume_dir(ns, name).join(DATA_DIR);
        if !crate::task::is_mountpoint(&data) {
            return;
        }
        let used = self.containers(Some(ns)).iter().any(|o| {
            Some(o.id.as_str()) != except && {
                let m = o.lock();
                m.rec.status.is_active()
                    && m.rec
                        .mount_points
                        .iter()
                        .any(|p| p.typ == "volume" && p.name == name)
            }
        });
        if used {
            return;
        }
        if let Err(e) = rustix::mount::unmount(&data, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!("unmount volume {name} at {}: {e}", data.display());
        }
    }

    /// At boot: unmount the volumes with options that no running container uses (their last
    /// user stopped while berthd was down).
    pub(crate) fn volumes_reconcile(&self) {
        let Ok(nss) = std::fs::read_dir(self.config().root.join("volumes")) else {
            return;
        };
        let _pending = self.pending();
        for ns in nss.flatten() {
            let ns = ns.file_name().to_string_lossy().into_owned();
            for m in self.list_metas(&ns) {
                if !m.options.is_empty() {
                    self.unmount_if_unused(&ns, &m.name, None);
                }
            }
        }
    }

    /// At boot, for a container whose create never finished: remove the anonymous volumes
    /// that create made (nothing else can use them yet).
    pub(crate) fn remove_volumes_made_by(&self, ns: &str, id: &str) {
        if valid_ns(ns).is_err() {
            return;
        }
        let pending = self.pending();
        for m in self.list_metas(ns) {
            if !m.anonymous || m.container != id || !self.users(&pending, ns, &m.name).is_empty() {
                continue;
            }
            tracing::info!("removing volume {}: made by an interrupted create", m.name);
            if let Err(e) = self.remove_volume_dir(ns, &m.name) {
                tracing::warn!("remove volume {}: {}", m.name, e.message());
            }
        }
    }

    /// `rm -v` and `--rm`: remove the container's anonymous volumes that nothing else uses.
    pub(crate) fn remove_anonymous_volumes(&self, ns: &str, points: &[MountPoint]) {
        let pending = self.pending();
        for p in points.iter().filter(|p| p.typ == "volume" && p.anonymous) {
            if self.read_meta(ns, &p.name).is_none()
                || !self.users(&pending, ns, &p.name).is_empty()
            {
                continue;
            }
            if let Err(e) = self.remove_volume_dir(ns, &p.name) {
                tracing::warn!("remove anonymous volume {}: {}", p.name, e.message());
            }
        }
    }

    /// The `Local Volumes` row of `system df`: reclaimable = the size of unused volumes.
    pub(crate) fn volumes_df(&self, ns: &str) -> berth_api::v1::DfRow {
        let pending = self.pending();
        let (mut n, mut used, mut bytes, mut free) = (0i64, 0i64, 0u64, 0u64);
        for m in self.list_metas(ns) {
            let size = berth_store::disk_usage(&self.volume_dir(ns, &m.name).join(DATA_DIR))
                .map_or(0, |(b, _)| b);
            n += 1;
            bytes += size;
            if self.users(&pending, ns, &m.name).is_empty() {
                free += size;
            } else {
                used += 1;
            }
        }
        berth_api::v1::DfRow {
            kind: "Local Volumes".into(),
            total: n,
            active: used,
            size: i64::try_from(bytes).unwrap_or(i64::MAX),
            reclaimable: i64::try_from(free).unwrap_or(i64::MAX),
        }
    }

    /// `volume prune`: unused anonymous volumes, or with `all` every unused volume.
    pub(crate) fn prune_volumes(
        &self,
        ns: &str,
        all: bool,
        filters: &[String],
    ) -> Result<(Vec<String>, u64), Status> {
        let mut label_filters = Vec::new();
        for f in filters {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                Status::invalid_argument(format!("bad format of filter (expected name=value): {f}"))
            })?;
            match k {
                "label" => label_filters.push((true, v.to_owned())),
                "label!" => label_filters.push((false, v.to_owned())),
                "all" => {}
                other => {
                    return Err(Status::invalid_argument(format!(
                        "invalid filter '{other}'"
                    )));
                }
            }
        }
        let pending = self.pending();
        let mut deleted = Vec::new();
        let mut bytes = 0;
        for m in self.list_metas(ns) {
            if !all && !m.anonymous {
                continue;
            }
            if !label_filters
                .iter()
                .all(|(want, l)| label_matches(&m.labels, l) == *want)
            {
                continue;
            }
            if !self.users(&pending, ns, &m.name).is_empty() {
                continue;
            }
            bytes += self.remove_volume_dir(ns, &m.name)?;
            deleted.push(m.name);
        }
        Ok((deleted, bytes))
    }
}

fn label_matches(labels: &BTreeMap<String, String>, f: &str) -> bool {
    match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(f),
    }
}

/// Docker's copy-up: when the volume's `_data` is empty (or an earlier copy was cut short) and
/// the image has a non-empty directory at `target`, copy it in with owners, modes, symlinks,
/// xattrs and times. An already-populated volume is never touched.
fn copy_up(rootfs: &Path, target: &str, vdir: &Path) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let data = vdir.join(DATA_DIR);
    let marker = vdir.join(COPYUP_MARKER);
    let redo = marker.exists();
    if !redo && !is_empty_dir(&data)? {
        return Ok(());
    }
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = target.trim_start_matches('/');
    let src = match rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    ) {
        Ok(fd) => fd,
        // Nothing (or no directory) there in the image: nothing to copy.
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // The trailing "." makes every use (stat included) follow the fd's magic link.
    let src_path = PathBuf::from(format!("/proc/self/fd/{}/.", {
        use std::os::fd::AsRawFd;
        src.as_raw_fd()
    }));
    if is_empty_dir(&src_path)? && !redo {
        return Ok(());
    }
    std::fs::File::create(&marker)?.sync_all()?;
    fsync_dir(vdir)?;
    if redo {
        std::fs::remove_dir_all(&data)?;
        std::fs::create_dir(&data)?;
    }
    berth_store::copy_tree(&src_path, &data).map_err(|e| std::io::Error::other(err_chain(&e)))?;
    let d = std::fs::File::open(&data)?;
    rustix::fs::syncfs(&d)?;
    std::fs::remove_file(&marker)?;
    fsync_dir(vdir)
}

/// The tonic service `berth.v1.Volumes`.
pub(crate) struct VolumesService {
    e: Engine,
}

impl VolumesService {
    pub(crate) fn new(e: Engine) -> Self {
        VolumesService { e }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("volume operation failed: {e}")))?
}

#[tonic::async_trait]
impl volumes_server::Volumes for VolumesService {
    async fn create(
        &self,
        req: Request<VolumeCreateRequest>,
    ) -> Result<Response<JsonDocument>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let e = self.e.clone();
        let doc = blocking(move || {
            let name = if r.name.is_empty() {
                new_id()
            } else {
                r.name.clone()
            };
            if !r.driver.is_empty() && r.driver != "local" {
                return Err(Status::not_found(format!(
                    "create {name}: error looking up volume plugin {d}: plugin \"{d}\" not found (Berth has only the local driver)",
                    d = r.driver
                )));
            }
            let options: BTreeMap<String, String> = r.options.into_iter().collect();
            mount_opts(&options)
                .map_err(|m| Status::invalid_argument(format!("create {name}: {m}")))?;
            let _pending = e.pending();
            if let Some(m) = e.read_meta(&ns, &name) {
                if m.options != options && !options.is_empty() {
                    return Err(Status::failed_precondition(format!(
                        "create {name}: a volume with this name exists with other options (remove it first)"
                    )));
                }
            }
            let (meta, _) = e.create_volume_locked(
                &ns,
                &name,
                r.labels.into_iter().collect(),
                options,
                None,
            )?;
            Ok(e.inspect_doc(&ns, &meta))
        })
        .await?;
        Ok(Response::new(JsonDocument {
            json: doc.to_string(),
        }))
    }

    async fn list(
        &self,
        req: Request<VolumeListRequest>,
    ) -> Result<Response<VolumeListResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let e = self.e.clone();
        let volumes = blocking(move || {
            let mut checks: Vec<(String, String)> = Vec::new();
            for f in &r.filters {
                let (k, v) = f.split_once('=').ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "bad format of filter (expected name=value): {f}"
                    ))
                })?;
                match k {
                    "dangling" => {
                        if !matches!(v, "true" | "false" | "1" | "0") {
                            return Err(Status::invalid_argument(format!(
                                "invalid filter 'dangling={v}'"
                            )));
                        }
                    }
                    "name" | "label" | "driver" => {}
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "invalid filter '{other}'"
                        )));
                    }
                }
                checks.push((k.to_owned(), v.to_owned()));
            }
            let pending = e.pending();
            let mut out = Vec::new();
            for m in e.list_metas(&ns) {
                let refs = e.users(&pending, &ns, &m.name).len();
                let ok = checks.iter().all(|(k, v)| match k.as_str() {
                    "dangling" => (refs == 0) == matches!(v.as_str(), "true" | "1"),
                    "name" => m.name.contains(v.as_str()),
                    "label" => label_matches(&m.labels, v),
                    "driver" => m.driver == *v,
                    _ => false,
                });
                if !ok {
                    continue;
                }
                out.push(VolumeSummary {
                    mountpoint: e
                        .volume_dir(&ns, &m.name)
                        .join(DATA_DIR)
                        .to_string_lossy()
                        .into_owned(),
                    name: m.name,
                    driver: m.driver,
                    labels: m.labels.into_iter().collect(),
                    created_at: created_at(m.created),
                    anonymous: m.anonymous,
                    ref_count: i64::try_from(refs).unwrap_or(i64::MAX),
                });
            }
            Ok(out)
        })
        .await?;
        Ok(Response::new(VolumeListResponse { volumes }))
    }

    async fn inspect(&self, req: Request<VolumeRef>) -> Result<Response<JsonDocument>, Status> {
        let ns = namespace_of(&req).to_owned();
        let name = req.into_inner().name;
        let m = self
            .e
            .read_meta(&ns, &name)
            .ok_or_else(|| Engine::no_such_volume(&name))?;
        Ok(Response::new(JsonDocument {
            json: self.e.inspect_doc(&ns, &m).to_string(),
        }))
    }

    async fn remove(&self, req: Request<VolumeRemoveRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let e = self.e.clone();
        blocking(move || {
            let pending = e.pending();
            if e.read_meta(&ns, &r.name).is_none() {
                return if r.force {
                    Ok(())
                } else {
                    Err(Engine::no_such_volume(&r.name))
                };
            }
            let users = e.users(&pending, &ns, &r.name);
            if !users.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "remove {}: volume is in use - [{}]",
                    r.name,
                    users.join(", ")
                )));
            }
            e.remove_volume_dir(&ns, &r.name).map(|_| ())
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn prune(
        &self,
        req: Request<VolumePruneRequest>,
    ) -> Result<Response<VolumePruneResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let e = self.e.clone();
        let (deleted, bytes) = blocking(move || e.prune_volumes(&ns, r.all, &r.filters)).await?;
        Ok(Response::new(VolumePruneResponse {
            deleted,
            space_reclaimed: i64::try_from(bytes).unwrap_or(i64::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_has_seconds_only() {
        assert_eq!(
            created_at(1_764_524_739_123_456_789),
            "2025-11-30T17:45:39Z"
        );
    }

    #[test]
    fn label_filters() {
        let mut l = BTreeMap::new();
        l.insert("a".to_owned(), "1".to_owned());
        assert!(label_matches(&l, "a"));
        assert!(label_matches(&l, "a=1"));
        assert!(!label_matches(&l, "a=2"));
        assert!(!label_matches(&l, "b"));
    }

    #[test]
    fn copy_up_populates_only_an_empty_volume() {
        // /var/tmp: a disk file system with user xattrs (a tmpfs /tmp may lack them).
        let root = tempfile::tempdir_in("/var/tmp").unwrap();
        let rootfs = root.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("srv/sub")).unwrap();
        std::fs::write(rootfs.join("srv/sub/f"), "image").unwrap();
        rustix::fs::setxattr(
            rootfs.join("srv/sub/f"),
            "user.berth",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/f", rootfs.join("srv/link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(rootfs.join("srv"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let vdir = root.path().join("vol");
        std::fs::create_dir_all(vdir.join(DATA_DIR)).unwrap();
        copy_up(&rootfs, "/srv", &vdir).unwrap();
        let data = vdir.join(DATA_DIR);
        assert_eq!(
            std::fs::read_to_string(data.join("sub/f")).unwrap(),
            "image"
        );
        let mut buf = [0u8; 16];
        let n = rustix::fs::getxattr(data.join("sub/f"), "user.berth", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"kept", "extended attributes are copied");
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("sub/f")
        );
        assert!(!vdir.join(COPYUP_MARKER).exists());
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700, "the directory's own mode is copied");
        // Populated now: a second copy-up leaves the user's changes alone.
        std::fs::write(data.join("sub/f"), "mine").unwrap();
        copy_up(&rootfs, "/srv", &vdir).unwrap();
        assert_eq!(std::fs::read_to_string(data.join("sub/f")).unwrap(), "mine");
        // A copy cut short (marker left) is redone from scratch.
        std::fs::write(vdir.join(COPYUP_MARKER), "").unwrap();
        copy_up(&rootfs, "/srv", &vdir).unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("sub/f")).unwrap(),
            "image"
        );
        // A path missing from the image, or one escaping it by symlink, copies nothing.
        std::os::unix::fs::symlink("/etc", rootfs.join("escape")).unwrap();
        let v2 = root.path().join("vol2");
        std::fs::create_dir_all(v2.join(DATA_DIR)).unwrap();
        copy_up(&rootfs, "/missing", &v2).unwrap();
        copy_up(&rootfs, "/escape", &v2).unwrap();
        assert!(is_empty_dir(&v2.join(DATA_DIR)).unwrap());
    }
}
