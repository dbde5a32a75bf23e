//! Snapshots with containerd's semantics, stored as `snapshots/<id>/fs` (+ `work` for overlay).
//!
//! - **Overlay**: a snapshot's `fs` holds only its own changes (overlayfs upper dir, with
//!   overlayfs whiteouts); mounts stack the parent chain as `lowerdir`s. Layers of one image can
//!   be unpacked in parallel ([`Snapshotter::prepare_detached`] + [`Snapshotter::commit_with_parent`]).
//! - **Native**: a snapshot's `fs` is a full tree; [`Snapshotter::prepare`] copies the parent's tree
//!   (owners, modes, xattrs, devices, links, times); mounts are bind mounts. Layers are unpacked in
//!   order, applying whiteouts in place.
//!
//! Directory names are short numbers (a global counter), so an overlay mount with the legacy
//! `mount(2)` data string fits about 120 layers under `/var/lib/berth` in one page; [`mount`] uses
//! the new mount API instead and passes each lower dir separately (`lowerdir+`, Linux 6.8+), which
//! lifts the limit to overlayfs' own maximum of 500 layers.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::ReadableTable;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::meta::{LEASES, MetaDb, SETTINGS, SNAPSHOTS, SnapRecord, nskey};
use crate::util::{Owner, check_key, check_ns, mkdir_all, now_nanos, remove_tree};
use crate::{Lease, LeaseResource};

/// The kind of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only view of a committed parent.
    View,
    /// Writable.
    Active,
    /// Immutable; can be a parent.
    Committed,
}

impl Kind {
    /// Lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which snapshotter a store uses; see [`crate::Store::open_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotterKind {
    /// The one the store was created with; for a new store overlay if it works there.
    Auto,
    /// overlayfs (fails if the kernel cannot mount it in the root, or the store is native).
    Overlay,
    /// Copying snapshots.
    Native,
}

/// A mount, as containerd describes it: apply with [`mount`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay` or `bind`.
    pub typ: String,
    /// Source (`overlay`, or the directory to bind).
    pub source: String,
    /// Options: `ro`/`rw`, `lowerdir=a:b`, `upperdir=..`, `workdir=..`.
    pub options: Vec<String>,
}

/// What [`Snapshotter::stat`] and [`Snapshotter::list`] return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The key (active/view) or name (committed).
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its parent's name.
    pub parent: Option<String>,
    /// Creation (for committed: commit) time, nanoseconds since the epoch.
    pub created: u64,
    /// Last update, nanoseconds since the epoch.
    pub updated: u64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The directory number under `snapshots/`.
    pub id: u64,
}

impl SnapshotInfo {
    fn from_record(name: String, r: SnapRecord) -> SnapshotInfo {
        SnapshotInfo {
            name,
            kind: r.kind,
            parent: r.parent,
            created: r.created,
            updated: r.updated,
            labels: r.labels,
            id: r.id,
        }
    }
}

/// What [`Snapshotter::prepare_overlapped`] calls with the mounts before the commit.
type Staged<'a> = Box<dyn FnOnce(Vec<Mount>) + 'a>;

/// The snapshotter. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Snapshotter {
    dir: PathBuf,
    meta: MetaDb,
    overlay: bool,
}

const SETTING_KIND: &str = "snapshotter";
const SETTING_NEXT_ID: &str = "next_snapshot_id";
/// Deepest parent chain followed (overlayfs itself stops at 500).
const MAX_DEPTH: usize = 500;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Snapshotter {
    pub(crate) fn open(
        root: &Path,
        meta: MetaDb,
        kind: SnapshotterKind,
    ) -> Result<Snapshotter, Error> {
        let dir = root.join("snapshots");
        mkdir_all(&dir, 0o700)?;
        let stored = meta.setting(SETTING_KIND)?;
        let overlay = match (stored.as_deref(), kind) {
            (Some("overlay"), SnapshotterKind::Native)
            | (Some("native"), SnapshotterKind::Overlay) => {
                return Err(Error::Unsupported {
                    what: format!(
                        "the store in {} was created with the {} snapshotter and cannot switch; use another root",
                        root.display(),
                        stored.as_deref().unwrap_or_default()
                    ),
                });
            }
            (Some(s), _) => s == "overlay",
            (None, SnapshotterKind::Native) => false,
            (None, SnapshotterKind::Overlay) => {
                probe_overlay(&dir)?;
                true
            }
            (None, SnapshotterKind::Auto) => match probe_overlay(&dir) {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(
                        "overlayfs unusable in {}, using native snapshots: {e}",
                        dir.display()
                    );
                    false
                }
            },
        };
        if stored.is_none() {
            meta.set_setting(SETTING_KIND, if overlay { "overlay" } else { "native" })?;
        }
        Ok(Snapshotter { dir, meta, overlay })
    }

    /// Whether this store uses overlayfs.
    pub fn is_overlay(&self) -> bool {
        self.overlay
    }

    /// The `snapshots/` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn id_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.id_dir(id).join("fs")
    }

    fn new_tmp(&self, what: &str) -> PathBuf {
        self.dir.join(format!(
            "tmp-{}-{what}{}",
            Owner::current().tag(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn get(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        ns: &str,
        key: &str,
    ) -> Result<SnapRecord, Error> {
        self.meta
            .get_json(t, &nskey(ns, key))?
            .ok_or_else(|| Error::NotFound {
                what: format!("snapshot {ns}/{key}"),
            })
    }

    fn need_committed(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        ns: &str,
        parent: &str,
        op: &'static str,
    ) -> Result<SnapRecord, Error> {
        let r = self.get(t, ns, parent)?;
        if r.kind != Kind::Committed {
            return Err(Error::SnapshotState {
                ns: ns.to_string(),
                key: parent.to_string(),
                actual: r.kind.as_str(),
                needed: "committed (as parent)",
                op,
            });
        }
        Ok(r)
    }

    /// Create a writable (Active) snapshot on top of `parent` (which must be Committed) and return
    /// the mounts for it.
    pub fn prepare(&self, ns: &str, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, Error> {
        self.create(ns, key, parent, Kind::Active)?;
        self.mounts(ns, key)
    }

    /// [`Snapshotter::prepare`] for a caller with other work to do while the new record's
    /// commit reaches the disk (a sync of the metadata file, milliseconds on some machines):
    /// `staged` gets the snapshot's mounts as soon as its directories exist and its record is
    /// written, before the commit; this returns once the commit is durable. The caller may
    /// mount them meanwhile, but must treat the snapshot as not made until this returns `Ok`.
    /// If the commit fails after `staged` ran, the directory is left as a stray for the GC
    /// (the caller may still have it mounted).
    pub fn prepare_overlapped(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        staged: impl FnOnce(Vec<Mount>),
    ) -> Result<(), Error> {
        self.create_with(ns, key, parent, Kind::Active, Some(Box::new(staged)))
            .map(drop)
    }

    /// Create a read-only (View) snapshot of `parent` and return the mounts for it.
    pub fn view(&self, ns: &str, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, Error> {
        self.create(ns, key, parent, Kind::View)?;
        self.mounts(ns, key)
    }

    /// Create an Active snapshot whose parent is not known (or not committed) yet and return its
    /// upper directory, to unpack a layer into while the layers below are still unpacking.
    /// Finish with [`Snapshotter::commit_with_parent`]. Overlay only.
    pub fn prepare_detached(&self, ns: &str, key: &str) -> Result<PathBuf, Error> {
        if !self.overlay {
            return Err(Error::Unsupported {
                what: "prepare_detached needs the overlay snapshotter; with native snapshots unpack layers in order with prepare(parent)".into(),
            });
        }
        let id = self.create(ns, key, None, Kind::Active)?;
        Ok(self.fs_dir(id))
    }

    fn create(&self, ns: &str, key: &str, parent: Option<&str>, kind: Kind) -> Result<u64, Error> {
        self.create_with(ns, key, parent, kind, None)
    }

    fn create_with(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        on_staged: Option<Staged<'_>>,
    ) -> Result<u64, Error> {
        check_ns(ns)?;
        check_key("snapshot key", key)?;
        let op = if kind == Kind::View {
            "view"
        } else {
            "prepare"
        };
        // Native Active with a parent: copy the parent's tree first, outside any transaction
        // (the copy can be long), into a temporary directory tagged with our pid.
        let mut staged = None;
        if !self.overlay && kind == Kind::Active {
            if let Some(p) = parent {
                let prec = self.meta.read(op, |tx| {
                    let t = tx
                        .open_table(SNAPSHOTS)
                        .map_err(self.meta.e("open snapshots"))?;
                    self.need_committed(&t, ns, p, op)
                })?;
                let tmp = self.new_tmp("copy");
                let res = mkdir_all(&tmp, 0o700)
                    .and_then(|()| mkdir_all(&tmp.join("fs"), 0o755))
                    .and_then(|()| crate::copy::copy_tree(&self.fs_dir(prec.id), &tmp.join("fs")));
                if let Err(e) = res {
                    let _ = remove_tree(&tmp);
                    return Err(e);
                }
                staged = Some((tmp, prec.id));
            }
        }
        let mut made: Option<PathBuf> = None;
        let mut handed_out = false;
        let res = self.meta.write(op, |tx| {
            let mut t = tx
                .open_table(SNAPSHOTS)
                .map_err(self.meta.e("open snapshots"))?;
            let k = nskey(ns, key);
            if t.get(k.as_str())
                .map_err(self.meta.e("read snapshot"))?
                .is_some()
            {
                return Err(Error::AlreadyExists {
                    what: format!("snapshot {ns}/{key}"),
                });
            }
            if let Some(p) = parent {
                let prec = self.need_committed(&t, ns, p, op)?;
                if let Some((_, copied)) = &staged {
                    if prec.id != *copied {
                        return Err(Error::NotFound {
                            what: format!("snapshot {ns}/{p} (replaced while copying)"),
                        });
                    }
                }
            }
            let id = {
                let mut s = tx
                    .open_table(SETTINGS)
                    .map_err(self.meta.e("open settings"))?;
                let mut id: u64 = self.meta.get_json(&s, SETTING_NEXT_ID)?.unwrap_or(1);
                // A directory under a number not handed out yet is a stray of a prepare whose
                // commit never happened (the process died, or the commit failed after the
                // directory was mounted): never reuse it; the GC removes it.
                while fs::symlink_metadata(self.id_dir(id)).is_ok() {
                    id += 1;
                }
                self.meta.put_json(&mut s, SETTING_NEXT_ID, &(id + 1))?;
                id
            };
            let dir = self.id_dir(id);
            // Directory before record (write-ahead): a crash leaves a stray directory, never a
            // record without one.
            match &staged {
                Some((tmp, _)) => {
                    fs::rename(tmp, &dir).map_err(Error::io("move snapshot into place", &dir))?;
                    made = Some(dir.clone());
                }
                None => {
                    fs::create_dir(&dir).map_err(Error::io("create snapshot directory", &dir))?;
                    made = Some(dir.clone());
                    mkdir_all(&dir.join("fs"), 0o755)?;
                    if self.overlay {
                        mkdir_all(&dir.join("work"), 0o700)?;
                    }
                }
            }
            let now = now_nanos();
            let rec = SnapRecord {
                id,
                kind,
                parent: parent.map(str::to_string),
                created: now,
                updated: now,
                labels: BTreeMap::new(),
            };
            self.meta.put_json(&mut t, &k, &rec)?;
            if let Some(f) = on_staged {
                let chain = self.chain(&t, ns, parent)?;
                f(self.mounts_of(ns, key, &rec, &chain)?);
                handed_out = true;
            }
            Ok(id)
        });
        if res.is_err() {
            if let Some(d) = made.filter(|_| !handed_out) {
                let _ = remove_tree(&d);
            }
            if let Some((tmp, _)) = staged {
                let _ = remove_tree(&tmp);
            }
        }
        res
    }

    /// The mounts of an Active or View snapshot.
    pub fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>, Error> {
        check_ns(ns)?;
        let (rec, chain) = self.meta.read("get mounts", |tx| {
            let t = tx
                .open_table(SNAPSHOTS)
                .map_err(self.meta.e("open snapshots"))?;
            let rec = self.get(&t, ns, key)?;
            let chain = self.chain(&t, ns, rec.parent.as_deref())?;
            Ok((rec, chain))
        })?;
        self.mounts_of(ns, key, &rec, &chain)
    }

    /// The mounts of the snapshot `rec` (named `ns/key`) whose parent chain is `chain`.
    fn mounts_of(
        &self,
        ns: &str,
        key: &str,
        rec: &SnapRecord,
        chain: &[u64],
    ) -> Result<Vec<Mount>, Error> {
        let fs_dir = |id: u64| self.fs_dir(id).to_string_lossy().into_owned();
        let bind = |src: String, ro: bool| Mount {
            typ: "bind".into(),
            source: src,
            options: vec!["rbind".into(), if ro { "ro" } else { "rw" }.into()],
        };
        let lower = || {
            chain
                .iter()
                .map(|id| fs_dir(*id))
                .collect::<Vec<_>>()
                .join(":")
        };
        Ok(match rec.kind {
            Kind::Committed => {
                return Err(Error::SnapshotState {
                    ns: ns.to_string(),
                    key: key.to_string(),
                    actual: "committed",
                    needed: "active or view",
                    op: "mounts (mount a view of it instead)",
                });
            }
            Kind::Active if !self.overlay || chain.is_empty() => vec![bind(fs_dir(rec.id), false)],
            Kind::Active => vec![Mount {
                typ: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    format!("lowerdir={}", lower()),
                    format!("upperdir={}", fs_dir(rec.id)),
                    format!(
                        "workdir={}",
                        self.id_dir(rec.id).join("work").to_string_lossy()
                    ),
                ],
            }],
            Kind::View => match chain.len() {
                0 => vec![bind(fs_dir(rec.id), true)],
                1 => vec![bind(fs_dir(chain[0]), true)],
                // Native committed snapshots are full trees: the parent alone is the view.
                _ if !self.overlay => vec![bind(fs_dir(chain[0]), true)],
                _ => vec![Mount {
                    typ: "overlay".into(),
                    source: "overlay".into(),
                    options: vec!["ro".into(), format!("lowerdir={}", lower())],
                }],
            },
        })
    }

    /// Ids of `parent` and its ancestors, nearest first.
    fn chain(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        ns: &str,
        parent: Option<&str>,
    ) -> Result<Vec<u64>, Error> {
        let mut out = Vec::new();
        let mut cur = parent.map(str::to_string);
        while let Some(p) = cur {
            if out.len() >= MAX_DEPTH {
                return Err(Error::Unsupported {
                    what: format!(
                        "snapshot chain of {ns}/{p} is deeper than {MAX_DEPTH} layers (overlayfs' limit)"
                    ),
                });
            }
            let r = self.get(t, ns, &p)?;
            out.push(r.id);
            cur = r.parent;
        }
        Ok(out)
    }

    /// Commit the Active snapshot `key` as the Committed snapshot `name`; `key` disappears. Every
    /// lease of the namespace that names `key` gets `name` added in the same transaction.
    /// Fails with [`Error::AlreadyExists`] if `name` exists (e.g. another pull committed the same
    /// layer first: remove `key` and use the existing one).
    pub fn commit(&self, ns: &str, name: &str, key: &str) -> Result<(), Error> {
        self.commit_inner(ns, name, key, None)
    }

    /// Like [`Snapshotter::commit`], setting the parent at commit time (for layers prepared with
    /// [`Snapshotter::prepare_detached`]). `parent` must be committed by then.
    pub fn commit_with_parent(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        parent: Option<&str>,
    ) -> Result<(), Error> {
        self.commit_inner(ns, name, key, Some(parent))
    }

    fn commit_inner(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        new_parent: Option<Option<&str>>,
    ) -> Result<(), Error> {
        check_ns(ns)?;
        check_key("snapshot name", name)?;
        self.meta.write("commit snapshot", |tx| {
            let mut t = tx.open_table(SNAPSHOTS).map_err(self.meta.e("open snapshots"))?;
            let mut rec = self.get(&t, ns, key)?;
            if rec.kind != Kind::Active {
                return Err(Error::SnapshotState {
                    ns: ns.to_string(),
                    key: key.to_string(),
                    actual: rec.kind.as_str(),
                    needed: "active",
                    op: "commit",
                });
            }
            let nk = nskey(ns, name);
            if t.get(nk.as_str()).map_err(self.meta.e("read snapshot"))?.is_some() {
                return Err(Error::AlreadyExists { what: format!("snapshot {ns}/{name}") });
            }
            if let Some(parent) = new_parent {
                if rec.parent.is_some() && rec.parent.as_deref() != parent {
                    return Err(Error::Unsupported {
                        what: format!(
                            "snapshot {ns}/{key} was prepared on {}; it cannot be committed on another parent",
                            rec.parent.as_deref().unwrap_or_default()
                        ),
                    });
                }
                if let Some(p) = parent {
                    if rec.parent.is_none() && !self.overlay {
                        return Err(Error::Unsupported {
                            what: "native snapshots copy their parent at prepare; commit_with_parent cannot add one later".into(),
                        });
                    }
                    if p == name {
                        return Err(Error::InvalidName { what: "snapshot parent", value: p.into(), why: "a snapshot cannot be its own parent" });
                    }
                    self.need_committed(&t, ns, p, "commit")?;
                }
                rec.parent = parent.map(str::to_string);
            }
            let now = now_nanos();
            rec.kind = Kind::Committed;
            rec.created = now;
            rec.updated = now;
            t.remove(nskey(ns, key).as_str()).map_err(self.meta.e("delete snapshot"))?;
            self.meta.put_json(&mut t, &nk, &rec)?;
            // Leases that protect the active key protect the committed name too, so a concurrent
            // GC cannot remove the layer between its commit and the image record.
            let mut leases = tx.open_table(LEASES).map_err(self.meta.e("open leases"))?;
            let was = LeaseResource::Snapshot(key.to_string());
            for (id, mut lease) in self.meta.scan_json::<Lease>(&leases, Some(ns))? {
                if lease.resources.contains(&was) {
                    lease.resources.push(LeaseResource::Snapshot(name.to_string()));
                    self.meta.put_json(&mut leases, &nskey(ns, &id), &lease)?;
                }
            }
            Ok(())
        })
    }

    /// Remove a snapshot and its directory. Refuses (with [`Error::HasChildren`]) while other
    /// snapshots have it as parent. The record goes first, then the directory.
    pub fn remove(&self, ns: &str, key: &str) -> Result<(), Error> {
        let id = self.remove_record(ns, key)?;
        remove_tree(&self.id_dir(id))
    }

    fn remove_record(&self, ns: &str, key: &str) -> Result<u64, Error> {
        check_ns(ns)?;
        self.meta.write("remove snapshot", |tx| {
            let mut t = tx
                .open_table(SNAPSHOTS)
                .map_err(self.meta.e("open snapshots"))?;
            let rec = self.get(&t, ns, key)?;
            // Only a committed snapshot can be a parent: an active one (a container's
            // writable layer) needs no scan of the namespace for children.
            if rec.kind != Kind::Committed {
                t.remove(nskey(ns, key).as_str())
                    .map_err(self.meta.e("delete snapshot"))?;
                return Ok(rec.id);
            }
            let children: Vec<String> = self
                .meta
                .scan_json::<SnapRecord>(&t, Some(ns))?
                .into_iter()
                .filter(|(_, r)| r.parent.as_deref() == Some(key))
                .map(|(k, _)| k)
                .collect();
            if !children.is_empty() {
                return Err(Error::HasChildren {
                    ns: ns.to_string(),
                    key: key.to_string(),
                    children,
                });
            }
            t.remove(nskey(ns, key).as_str())
                .map_err(self.meta.e("delete snapshot"))?;
            Ok(rec.id)
        })
    }

    /// A snapshot's information, or `None`.
    pub fn stat(&self, ns: &str, key: &str) -> Result<Option<SnapshotInfo>, Error> {
        check_ns(ns)?;
        self.meta.read("stat snapshot", |tx| {
            let t = tx
                .open_table(SNAPSHOTS)
                .map_err(self.meta.e("open snapshots"))?;
            Ok(self
                .meta
                .get_json::<SnapRecord>(&t, &nskey(ns, key))?
                .map(|r| SnapshotInfo::from_record(key.to_string(), r)))
        })
    }

    /// Every snapshot of a namespace, sorted by name.
    pub fn list(&self, ns: &str) -> Result<Vec<SnapshotInfo>, Error> {
        check_ns(ns)?;
        self.meta.read("list snapshots", |tx| {
            let t = tx
                .open_table(SNAPSHOTS)
                .map_err(self.meta.e("open snapshots"))?;
            Ok(self
                .meta
                .scan_json::<SnapRecord>(&t, Some(ns))?
                .into_iter()
                .map(|(k, r)| SnapshotInfo::from_record(k, r))
                .collect())
        })
    }

    /// The directory an Active snapshot is written in directly (overlay: its upper dir; native:
    /// its full tree), e.g. to unpack a layer into.
    pub fn upper_dir(&self, ns: &str, key: &str) -> Result<PathBuf, Error> {
        let info = self.stat(ns, key)?.ok_or_else(|| Error::NotFound {
            what: format!("snapshot {ns}/{key}"),
        })?;
        if info.kind != Kind::Active {
            return Err(Error::SnapshotState {
                ns: ns.to_string(),
                key: key.to_string(),
                actual: info.kind.as_str(),
                needed: "active",
                op: "upper_dir",
            });
        }
        Ok(self.fs_dir(info.id))
    }

    /// Disk usage of the snapshot's own directory: (bytes allocated, inodes). For overlay that is
    /// the layer's diff, for native the full tree.
    pub fn usage(&self, ns: &str, key: &str) -> Result<(u64, u64), Error> {
        let info = self.stat(ns, key)?.ok_or_else(|| Error::NotFound {
            what: format!("snapshot {ns}/{key}"),
        })?;
        crate::copy::usage(&self.fs_dir(info.id))
    }
}

/// Mount overlayfs in a temporary directory under `dir` and check that a file of the lower layer
/// shows through and a new one can be written.
fn probe_overlay(dir: &Path) -> Result<(), Error> {
    let s = dir.to_string_lossy();
    if s.contains(':') || s.contains(',') {
        return Err(Error::Unsupported {
            what: format!("overlayfs cannot use {s}: the path contains ':' or ','"),
        });
    }
    let tmp = dir.join(format!(
        "tmp-{}-probe{}",
        Owner::current().tag(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    struct Cleanup<'a> {
        tmp: &'a Path,
        mounted: bool,
    }
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if self.mounted {
                let _ = unmount(&self.tmp.join("merged"));
            }
            let _ = remove_tree(self.tmp);
        }
    }
    let mut guard = Cleanup {
        tmp: &tmp,
        mounted: false,
    };
    for d in ["lower", "upper", "work", "merged"] {
        mkdir_all(&tmp.join(d), 0o700)?;
    }
    fs::write(tmp.join("lower/probe"), b"x")
        .map_err(Error::io("write", tmp.join("lower/probe")))?;
    let p = |d: &str| tmp.join(d).to_string_lossy().into_owned();
    let m = Mount {
        typ: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            format!("lowerdir={}", p("lower")),
            format!("upperdir={}", p("upper")),
            format!("workdir={}", p("work")),
        ],
    };
    let merged = tmp.join("merged");
    mount(std::slice::from_ref(&m), &merged)?;
    guard.mounted = true;
    fs::read(merged.join("probe"))
        .map_err(Error::io("read through overlayfs", merged.join("probe")))?;
    fs::write(merged.join("new"), b"y")
        .map_err(Error::io("write through overlayfs", merged.join("new")))?;
    unmount(&merged)?;
    guard.mounted = false;
    Ok(())
}

/// Apply `mounts` on `target`, in order. On failure, mounts already made are undone.
pub fn mount(mounts: &[Mount], target: &Path) -> Result<(), Error> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..i {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmount `target` (one mount).
pub fn unmount(target: &Path) -> Result<(), Error> {
    rustix::mount::unmount(target, UnmountFlags::empty()).map_err(|e| Error::Mount {
        op: "unmount",
        target: target.to_path_buf(),
        detail: "is it still in use?".into(),
        source: e.into(),
    })
}

fn mount_err(target: &Path, detail: String) -> impl FnOnce(rustix::io::Errno) -> Error + '_ {
    move |e| Error::Mount {
        op: "mount",
        target: target.to_path_buf(),
        detail,
        source: e.into(),
    }
}

fn mount_one(m: &Mount, target: &Path) -> Result<(), Error> {
    let ro = m.options.iter().any(|o| o == "ro");
    match m.typ.as_str() {
        "bind" | "rbind" => {
            let recursive = m.typ == "rbind" || m.options.iter().any(|o| o == "rbind");
            let detail = format!("bind {}", m.source);
            if recursive {
                rustix::mount::mount_bind_recursive(m.source.as_str(), target)
            } else {
                rustix::mount::mount_bind(m.source.as_str(), target)
            }
            .map_err(mount_err(target, detail.clone()))?;
            if ro {
                if let Err(e) =
                    rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                {
                    let _ = unmount(target);
                    return Err(mount_err(target, format!("{detail} read-only"))(e));
                }
            }
            Ok(())
        }
        "overlay" => match mount_overlay_new(m, target, ro) {
            Ok(()) => Ok(()),
            Err(NewApi::Unavailable) => mount_legacy(m, target, ro),
            Err(NewApi::Failed(e)) => Err(e),
        },
        _ => mount_legacy(m, target, ro),
    }
}

enum NewApi {
    Unavailable,
    Failed(Error),
}

/// overlayfs through fsopen/fsconfig/fsmount, one `lowerdir+` per layer (no page-size limit).
fn mount_overlay_new(m: &Mount, target: &Path, ro: bool) -> Result<(), NewApi> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|_| NewApi::Unavailable)?;
    let failed = |what: String, e: rustix::io::Errno| {
        let mut msg = [0u8; 512];
        let log = rustix::io::read(&fs, &mut msg[..])
            .ok()
            .map(|n| String::from_utf8_lossy(&msg[..n]).trim().to_string())
            .unwrap_or_default();
        NewApi::Failed(Error::Mount {
            op: "mount",
            target: target.to_path_buf(),
            detail: if log.is_empty() {
                format!("overlay: {what}")
            } else {
                format!("overlay: {what}: {log}")
            },
            source: e.into(),
        })
    };
    let mut first_lower = true;
    for opt in &m.options {
        if opt == "ro" || opt == "rw" {
            continue;
        }
        match opt.split_once('=') {
            Some(("lowerdir", v)) => {
                for dir in v.split(':') {
                    if let Err(e) = rustix::mount::fsconfig_set_string(&fs, "lowerdir+", dir) {
                        if first_lower {
                            // Kernels before 6.8 have no lowerdir+.
                            return Err(NewApi::Unavailable);
                        }
                        return Err(failed(format!("lower dir {dir}"), e));
                    }
                    first_lower = false;
                }
            }
            Some((k, v)) => {
                rustix::mount::fsconfig_set_string(&fs, k, v).map_err(|e| failed(opt.clone(), e))?
            }
            None => rustix::mount::fsconfig_set_flag(&fs, opt.as_str())
                .map_err(|e| failed(opt.clone(), e))?,
        }
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| failed("create".into(), e))?;
    let attrs = if ro {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| failed("fsmount".into(), e))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| failed("attach".into(), e))
}

/// `mount(2)` with the options as one data string (at most one page).
fn mount_legacy(m: &Mount, target: &Path, ro: bool) -> Result<(), Error> {
    let data = m
        .options
        .iter()
        .filter(|o| *o != "ro" && *o != "rw")
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if data.len() >= 4096 {
        return Err(Error::Unsupported {
            what: format!(
                "{} mount options are {} bytes, over the kernel's one-page limit for mount(2) (this kernel has no lowerdir+); use fewer layers",
                m.typ,
                data.len()
            ),
        });
    }
    let flags = if ro {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    let data = std::ffi::CString::new(data).map_err(|_| Error::Unsupported {
        what: format!("{} mount options contain a NUL byte", m.typ),
    })?;
    rustix::mount::mount(
        m.source.as_str(),
        target,
        m.typ.as_str(),
        flags,
        Some(data.as_c_str()),
    )
    .map_err(mount_err(target, format!("{} {}", m.typ, m.source)))
}
