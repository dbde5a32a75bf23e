//! The metadata database (redb): images, blob relations, snapshot records, leases, the layer
//! cache, and store settings.
//!
//! # Concurrency between processes
//!
//! redb locks its file exclusively (`flock`) for as long as a [`redb::Database`] is open, and the
//! CLI has no daemon yet, so several `berth` processes may share one root. [`MetaDb`] therefore
//! does **not** keep the database open for a process's lifetime: an operation opens it if needed,
//! runs one short transaction, and the file is closed again once the process has made no
//! operation for [`LINGER`] (a background thread closes it; dropping the last `MetaDb` closes it
//! at once). Threads of one process share the open handle (a process-wide table), so in-process
//! concurrency never retries, and a burst of operations pays for one open/close (about 20 ms
//! with redb's fsyncs) rather than one per operation. A process never keeps the file for more
//! than [`MAX_HOLD`] without a short break, so a busy pull cannot starve others. When another
//! process has the file open, opening is retried every few milliseconds for up to
//! [`BUSY_WAIT`], then fails with [`Error::DbBusy`]. No transaction spans a download, so a long
//! pull and a concurrent `berth images` both proceed. Garbage collection and the store check hold
//! the database for their sweep, which is what keeps them from racing with writers.
//!
//! # Write-ahead rule
//!
//! Records never point at content that is not committed: callers commit blobs before
//! `put_image`/`set_children`, and the snapshotter creates a snapshot's directory before its
//! record and deletes the record before the directory. A crash leaves at worst unreferenced
//! content or directories, which the store check reports and garbage collection removes.
//!
//! # Keys
//!
//! Namespaced tables use `"<ns>\0<name>"` keys so one namespace is a contiguous key range.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use oci_spec::image::Digest;
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::util::{Owner, check_key, check_ns, now_nanos};

/// How long an operation waits for another process to close the database.
pub const BUSY_WAIT: Duration = Duration::from_secs(60);

/// redb's page cache per open handle: the database is small and opened per operation.
const CACHE_BYTES: usize = 4 << 20;

type Tbl = TableDefinition<'static, &'static str, &'static [u8]>;
pub(crate) const IMAGES: Tbl = TableDefinition::new("images");
pub(crate) const CHILDREN: Tbl = TableDefinition::new("children");
pub(crate) const SNAPSHOT_REFS: Tbl = TableDefinition::new("snapshot_refs");
pub(crate) const SNAPSHOTS: Tbl = TableDefinition::new("snapshots");
pub(crate) const LEASES: Tbl = TableDefinition::new("leases");
pub(crate) const LAYERS: Tbl = TableDefinition::new("layers");
pub(crate) const SETTINGS: Tbl = TableDefinition::new("settings");
const ALL_TABLES: [Tbl; 7] = [
    IMAGES,
    CHILDREN,
    SNAPSHOT_REFS,
    SNAPSHOTS,
    LEASES,
    LAYERS,
    SETTINGS,
];

/// A content descriptor (OCI's, reduced to what the store needs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the target.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// An image reference: a name pointing at a manifest or index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Full name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The manifest or index it points at.
    pub target: Descriptor,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created: u64,
    /// Last update, nanoseconds since the Unix epoch.
    pub updated: u64,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Something a lease keeps from garbage collection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseResource {
    /// A blob (committed or still being written).
    Content(Digest),
    /// A snapshot key in the lease's namespace (may be added before the snapshot exists).
    Snapshot(String),
}

/// A lease: keeps resources alive while a pull (or another multi-step operation) is running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Lease id (unique per namespace).
    pub id: String,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created: u64,
    /// Expiry, nanoseconds since the Unix epoch; `None`: never.
    pub expires: Option<u64>,
    /// The process the lease is bound to, if any: the lease dies with it.
    pub owner: Option<Owner>,
    /// What it protects.
    pub resources: Vec<LeaseResource>,
}

impl Lease {
    /// Whether the lease still protects its resources at `now` (nanoseconds since the epoch):
    /// not expired, and its owner process (if bound) still running.
    pub fn is_live(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| e > now) && self.owner.is_none_or(|o| o.is_alive())
    }
}

/// Options of [`MetaDb::create_lease_with`].
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    /// Expire after this long; `None`: never.
    pub expires_in: Option<Duration>,
    /// Bind the lease to the calling process: once it exits (or is killed) the lease no longer
    /// protects anything and garbage collection deletes it.
    pub bind_to_process: bool,
}

/// A snapshot's persistent record (see [`crate::Snapshotter`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SnapRecord {
    pub id: u64,
    pub kind: crate::Kind,
    pub parent: Option<String>,
    pub created: u64,
    pub updated: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// How long a process keeps the database open after its last operation, so a burst of
/// operations (a pull's lease, prepare and commit calls) pays for one open and close (about 20 ms
/// with its fsyncs) instead of one per operation.
pub const LINGER: Duration = Duration::from_millis(100);

/// Longest a process keeps the database open without a break: after this, the next operation
/// closes it and waits 30 ms before reopening, so other processes polling for it get in.
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// See [`MAX_HOLD`]; longer than the waiters' polling interval.
const YIELD: Duration = Duration::from_millis(30);

/// Waiters' polling interval cap.
const POLL_MAX: Duration = Duration::from_millis(10);

struct Slot {
    db: Arc<Database>,
    opened: Instant,
    last_used: Instant,
}

#[derive(Default)]
struct OpenDbs {
    slots: HashMap<PathBuf, Slot>,
    /// Paths closed for [`MAX_HOLD`], with when they may be reopened.
    cooldown: HashMap<PathBuf, Instant>,
    reaper: bool,
}

/// Set by [`hold_open`]: this process is the database's only user (a daemon), so it keeps every
/// database open for its whole life instead of lingering and yielding.
static HOLD_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keep every metadata database this process opens open until the process exits: no close
/// after [`LINGER`], no break after [`MAX_HOLD`]. For a long-lived owner of the store such as
/// `berthd`, where each reopen would cost about 20 ms; other processes then wait for the lock
/// (up to [`BUSY_WAIT`]) and fail with [`Error::DbBusy`], so they must go through the owner.
pub fn hold_open() {
    HOLD_OPEN.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn holding_open() -> bool {
    HOLD_OPEN.load(std::sync::atomic::Ordering::Relaxed)
}

/// Process-wide table of open databases, so threads share one handle instead of fighting over
/// redb's file lock, and a short burst of operations opens the file once.
static OPEN: LazyLock<Mutex<OpenDbs>> = LazyLock::new(|| Mutex::new(OpenDbs::default()));

fn lock_open() -> std::sync::MutexGuard<'static, OpenDbs> {
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Closes databases idle for [`LINGER`]; exits when none is open.
fn reaper() {
    loop {
        std::thread::sleep(LINGER / 4);
        let mut open = lock_open();
        if holding_open() {
            open.reaper = false;
            return;
        }
        open.slots.retain(|_, s| s.last_used.elapsed() < LINGER);
        let now = Instant::now();
        open.cooldown.retain(|_, until| *until > now);
        if open.slots.is_empty() {
            open.reaper = false;
            return;
        }
    }
}

/// Closes the process's handle when the last clone of a [`MetaDb`] goes (a clean close, so the
/// next open needs no recovery).
#[derive(Debug)]
struct Closer(PathBuf);

impl Drop for Closer {
    fn drop(&mut self) {
        let slot = lock_open().slots.remove(&self.0);
        drop(slot);
    }
}

/// The metadata database. Cheap to clone; see the module documentation for how it is opened.
#[derive(Clone, Debug)]
pub struct MetaDb {
    path: PathBuf,
    _closer: Arc<Closer>,
}

pub(crate) fn nskey(ns: &str, name: &str) -> String {
    format!("{ns}\0{name}")
}

pub(crate) fn split_nskey(key: &str) -> (&str, &str) {
    key.split_once('\0').unwrap_or(("", key))
}

fn ns_range(ns: &str) -> (String, String) {
    (format!("{ns}\0"), format!("{ns}\u{1}"))
}

impl MetaDb {
    /// Open (create) the database at `path` and make sure every table exists.
    pub fn open(path: &Path) -> Result<MetaDb, Error> {
        let db = MetaDb {
            path: path.to_path_buf(),
            _closer: Arc::new(Closer(path.to_path_buf())),
        };
        db.write("create tables", |tx| {
            for t in ALL_TABLES {
                tx.open_table(t).map_err(db.e("open table"))?;
            }
            Ok(())
        })?;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn e<E: Into<redb::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> Error + '_ {
        move |e| Error::Db {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }

    /// Get the process's shared handle, opening the database (with the bounded wait) if this
    /// process does not have it open.
    pub(crate) fn handle(&self) -> Result<Arc<Database>, Error> {
        let mut open = lock_open();
        loop {
            if let Some(slot) = open.slots.get_mut(&self.path) {
                if holding_open() || slot.opened.elapsed() < MAX_HOLD {
                    slot.last_used = Instant::now();
                    return Ok(slot.db.clone());
                }
                // Held long enough: let other processes in (closes once in-flight operations end).
                open.slots.remove(&self.path);
                open.cooldown
                    .insert(self.path.clone(), Instant::now() + YIELD);
            }
            match open.cooldown.get(&self.path) {
                Some(until) if *until > Instant::now() => {
                    let wait = *until - Instant::now();
                    drop(open);
                    std::thread::sleep(wait);
                    open = lock_open();
                }
                _ => break,
            }
        }
        let start = Instant::now();
        let mut delay = Duration::from_millis(1);
        let db = loop {
            match Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&self.path)
            {
                Ok(db) => break Arc::new(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < BUSY_WAIT => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(POLL_MAX);
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(Error::DbBusy {
                        path: self.path.clone(),
                        waited_secs: BUSY_WAIT.as_secs(),
                    });
                }
                Err(e) => return Err(self.e("open")(e)),
            }
        };
        let now = Instant::now();
        open.cooldown.remove(&self.path);
        open.slots.insert(
            self.path.clone(),
            Slot {
                db: db.clone(),
                opened: now,
                last_used: now,
            },
        );
        if !open.reaper {
            open.reaper = true;
            if std::thread::Builder::new()
                .name("berth-db-linger".into())
                .spawn(reaper)
                .is_err()
            {
                // No thread: close after this operation instead of lingering.
                open.reaper = false;
                open.slots.remove(&self.path);
            }
        }
        Ok(db)
    }

    /// Run `f` in a write transaction; commit if it returns `Ok`.
    pub(crate) fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let db = self.handle()?;
        self.write_on(&db, op, f)
    }

    pub(crate) fn write_on<T>(
        &self,
        db: &Database,
        op: &'static str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let tx = db.begin_write().map_err(self.e(op))?;
        match f(&tx) {
            Ok(v) => {
                tx.commit().map_err(self.e(op))?;
                Ok(v)
            }
            Err(e) => {
                let _ = tx.abort();
                Err(e)
            }
        }
    }

    /// Run `f` in a read transaction.
    pub(crate) fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let db = self.handle()?;
        let tx = db.begin_read().map_err(self.e(op))?;
        f(&tx)
    }

    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<Option<T>, Error> {
        match t.get(key).map_err(self.e("read"))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|source| Error::Record {
                    what: key.replace('\0', "/"),
                    source,
                }),
        }
    }

    /// Every record whose key starts with `"<ns>\0"` (or every record with `ns = None`), as
    /// (key without the namespace, value) when `ns` is given, else (full key, value).
    pub(crate) fn scan_json<T: DeserializeOwned>(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        ns: Option<&str>,
    ) -> Result<Vec<(String, T)>, Error> {
        let mut out = Vec::new();
        let mut push = |k: &str, v: &[u8]| -> Result<(), Error> {
            let val = serde_json::from_slice(v).map_err(|source| Error::Record {
                what: k.replace('\0', "/"),
                source,
            })?;
            out.push((k.to_string(), val));
            Ok(())
        };
        match ns {
            Some(ns) => {
                let (lo, hi) = ns_range(ns);
                for item in t
                    .range::<&str>(lo.as_str()..hi.as_str())
                    .map_err(self.e("read"))?
                {
                    let (k, v) = item.map_err(self.e("read"))?;
                    push(split_nskey(k.value()).1, v.value())?;
                }
            }
            None => {
                for item in t.iter().map_err(self.e("read"))? {
                    let (k, v) = item.map_err(self.e("read"))?;
                    push(k.value(), v.value())?;
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn put_json<T: Serialize>(
        &self,
        t: &mut redb::Table<&'static str, &'static [u8]>,
        key: &str,
        v: &T,
    ) -> Result<(), Error> {
        let bytes = serde_json::to_vec(v).map_err(|source| Error::Record {
            what: key.replace('\0', "/"),
            source,
        })?;
        t.insert(key, bytes.as_slice()).map_err(self.e("write"))?;
        Ok(())
    }

    // ---- images ----

    /// Create or replace an image record. The content it points at must be committed first.
    pub fn put_image(&self, ns: &str, img: &ImageRecord) -> Result<(), Error> {
        check_ns(ns)?;
        check_key("image name", &img.name)?;
        self.write("put image", |tx| {
            let mut t = tx.open_table(IMAGES).map_err(self.e("open images"))?;
            self.put_json(&mut t, &nskey(ns, &img.name), img)
        })
    }

    /// One image by name.
    pub fn get_image(&self, ns: &str, name: &str) -> Result<Option<ImageRecord>, Error> {
        check_ns(ns)?;
        self.read("get image", |tx| {
            let t = tx.open_table(IMAGES).map_err(self.e("open images"))?;
            self.get_json(&t, &nskey(ns, name))
        })
    }

    /// Every image of a namespace, sorted by name.
    pub fn list_images(&self, ns: &str) -> Result<Vec<ImageRecord>, Error> {
        check_ns(ns)?;
        self.read("list images", |tx| {
            let t = tx.open_table(IMAGES).map_err(self.e("open images"))?;
            Ok(self
                .scan_json::<ImageRecord>(&t, Some(ns))?
                .into_iter()
                .map(|(_, v)| v)
                .collect())
        })
    }

    /// Delete an image record (its content stays until garbage collection). Returns whether it
    /// existed.
    pub fn delete_image(&self, ns: &str, name: &str) -> Result<bool, Error> {
        check_ns(ns)?;
        self.write("delete image", |tx| {
            let mut t = tx.open_table(IMAGES).map_err(self.e("open images"))?;
            let existed = t
                .remove(nskey(ns, name).as_str())
                .map_err(self.e("delete image"))?
                .is_some();
            Ok(existed)
        })
    }

    /// Every namespace that has images, snapshots or leases.
    pub fn namespaces(&self) -> Result<Vec<String>, Error> {
        self.read("list namespaces", |tx| {
            let mut out = std::collections::BTreeSet::new();
            for def in [IMAGES, SNAPSHOTS, LEASES, SNAPSHOT_REFS] {
                let t = tx.open_table(def).map_err(self.e("open table"))?;
                for item in t.iter().map_err(self.e("read"))? {
                    let (k, _) = item.map_err(self.e("read"))?;
                    out.insert(split_nskey(k.value()).0.to_string());
                }
            }
            Ok(out.into_iter().collect())
        })
    }

    // ---- relations ----

    /// Record the garbage-collection edges of a blob: an index's manifests, a manifest's config
    /// and layers. Replaces earlier edges of `parent`.
    pub fn set_children(&self, parent: &Digest, children: &[Digest]) -> Result<(), Error> {
        self.write("set children", |tx| {
            let mut t = tx.open_table(CHILDREN).map_err(self.e("open children"))?;
            self.put_json(&mut t, parent.as_ref(), &children)
        })
    }

    /// The recorded children of a blob.
    pub fn children(&self, parent: &Digest) -> Result<Vec<Digest>, Error> {
        self.read("get children", |tx| {
            let t = tx.open_table(CHILDREN).map_err(self.e("open children"))?;
            Ok(self.get_json(&t, parent.as_ref())?.unwrap_or_default())
        })
    }

    /// Record that `blob` (an image config) keeps the snapshot `snapshot_key` (its top chain ID)
    /// alive in namespace `ns`. Replaces an earlier edge of the same blob.
    pub fn set_snapshot_ref(
        &self,
        ns: &str,
        blob: &Digest,
        snapshot_key: &str,
    ) -> Result<(), Error> {
        check_ns(ns)?;
        check_key("snapshot key", snapshot_key)?;
        self.write("set snapshot ref", |tx| {
            let mut t = tx
                .open_table(SNAPSHOT_REFS)
                .map_err(self.e("open snapshot refs"))?;
            self.put_json(&mut t, &nskey(ns, blob.as_ref()), &snapshot_key)
        })
    }

    /// The snapshot a blob keeps alive in `ns`, if any.
    pub fn snapshot_ref(&self, ns: &str, blob: &Digest) -> Result<Option<String>, Error> {
        check_ns(ns)?;
        self.read("get snapshot ref", |tx| {
            let t = tx
                .open_table(SNAPSHOT_REFS)
                .map_err(self.e("open snapshot refs"))?;
            self.get_json(&t, &nskey(ns, blob.as_ref()))
        })
    }

    // ---- leases ----

    /// Create a lease bound to the calling process (see [`LeaseOptions::bind_to_process`]),
    /// expiring after `expires_in` (`None`: only when deleted or when this process exits).
    ///
    /// The pull contract: create the lease first, then `lease_add` every blob **before** writing
    /// or checking it and every snapshot key **before** preparing it, then write the image record
    /// and delete the lease. Garbage collection never removes a live lease's resources, and a lease
    /// whose process was killed stops protecting anything, so a `kill -9`'d pull leaves only
    /// collectable garbage.
    pub fn create_lease(
        &self,
        ns: &str,
        id: &str,
        expires_in: Option<Duration>,
    ) -> Result<(), Error> {
        self.create_lease_with(
            ns,
            id,
            &LeaseOptions {
                expires_in,
                bind_to_process: true,
            },
        )
    }

    /// Create a lease with explicit options. Fails with [`Error::AlreadyExists`] if `id` exists.
    pub fn create_lease_with(&self, ns: &str, id: &str, opts: &LeaseOptions) -> Result<(), Error> {
        check_ns(ns)?;
        check_key("lease id", id)?;
        let now = now_nanos();
        let lease = Lease {
            id: id.to_string(),
            created: now,
            expires: opts
                .expires_in
                .map(|d| now.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))),
            owner: opts.bind_to_process.then(Owner::current),
            resources: Vec::new(),
        };
        self.write("create lease", |tx| {
            let mut t = tx.open_table(LEASES).map_err(self.e("open leases"))?;
            let key = nskey(ns, id);
            if t.get(key.as_str()).map_err(self.e("read lease"))?.is_some() {
                return Err(Error::AlreadyExists {
                    what: format!("lease {ns}/{id}"),
                });
            }
            self.put_json(&mut t, &key, &lease)
        })
    }

    /// Add a resource to a lease (idempotent).
    pub fn lease_add(&self, ns: &str, id: &str, r: LeaseResource) -> Result<(), Error> {
        self.lease_add_all(ns, id, std::slice::from_ref(&r))
    }

    /// Add several resources to a lease in one transaction.
    pub fn lease_add_all(&self, ns: &str, id: &str, rs: &[LeaseResource]) -> Result<(), Error> {
        check_ns(ns)?;
        self.write("add to lease", |tx| {
            let mut t = tx.open_table(LEASES).map_err(self.e("open leases"))?;
            let key = nskey(ns, id);
            let mut lease: Lease = self.get_json(&t, &key)?.ok_or_else(|| Error::NotFound {
                what: format!("lease {ns}/{id}"),
            })?;
            for r in rs {
                if !lease.resources.contains(r) {
                    lease.resources.push(r.clone());
                }
            }
            self.put_json(&mut t, &key, &lease)
        })
    }

    /// Remove a resource from a lease (idempotent).
    pub fn lease_remove(&self, ns: &str, id: &str, r: &LeaseResource) -> Result<(), Error> {
        check_ns(ns)?;
        self.write("remove from lease", |tx| {
            let mut t = tx.open_table(LEASES).map_err(self.e("open leases"))?;
            let key = nskey(ns, id);
            let mut lease: Lease = self.get_json(&t, &key)?.ok_or_else(|| Error::NotFound {
                what: format!("lease {ns}/{id}"),
            })?;
            lease.resources.retain(|x| x != r);
            self.put_json(&mut t, &key, &lease)
        })
    }

    /// Delete a lease (idempotent); what it protected becomes collectable unless referenced.
    pub fn delete_lease(&self, ns: &str, id: &str) -> Result<(), Error> {
        check_ns(ns)?;
        self.write("delete lease", |tx| {
            let mut t = tx.open_table(LEASES).map_err(self.e("open leases"))?;
            t.remove(nskey(ns, id).as_str())
                .map_err(self.e("delete lease"))?;
            Ok(())
        })
    }

    /// One lease.
    pub fn get_lease(&self, ns: &str, id: &str) -> Result<Option<Lease>, Error> {
        check_ns(ns)?;
        self.read("get lease", |tx| {
            let t = tx.open_table(LEASES).map_err(self.e("open leases"))?;
            self.get_json(&t, &nskey(ns, id))
        })
    }

    /// Every lease of a namespace.
    pub fn list_leases(&self, ns: &str) -> Result<Vec<Lease>, Error> {
        check_ns(ns)?;
        self.read("list leases", |tx| {
            let t = tx.open_table(LEASES).map_err(self.e("open leases"))?;
            Ok(self
                .scan_json::<Lease>(&t, Some(ns))?
                .into_iter()
                .map(|(_, v)| v)
                .collect())
        })
    }

    // ---- layer cache ----

    /// Cache the uncompressed digest (diff ID) of a (compressed) layer blob.
    pub fn set_layer_info(&self, layer: &Digest, diff_id: &Digest) -> Result<(), Error> {
        self.write("set layer info", |tx| {
            let mut t = tx.open_table(LAYERS).map_err(self.e("open layers"))?;
            self.put_json(&mut t, layer.as_ref(), diff_id)
        })
    }

    /// The cached diff ID of a layer blob.
    pub fn layer_info(&self, layer: &Digest) -> Result<Option<Digest>, Error> {
        self.read("get layer info", |tx| {
            let t = tx.open_table(LAYERS).map_err(self.e("open layers"))?;
            self.get_json(&t, layer.as_ref())
        })
    }

    // ---- settings ----

    pub(crate) fn setting(&self, key: &str) -> Result<Option<String>, Error> {
        self.read("get setting", |tx| {
            let t = tx.open_table(SETTINGS).map_err(self.e("open settings"))?;
            self.get_json(&t, key)
        })
    }

    pub(crate) fn set_setting(&self, key: &str, value: &str) -> Result<(), Error> {
        self.write("set setting", |tx| {
            let mut t = tx.open_table(SETTINGS).map_err(self.e("open settings"))?;
            self.put_json(&mut t, key, &value)
        })
    }
}
