//! The content-addressed blob store.
//!
//! Layout under `<root>/content`:
//! - `blobs/sha256/<hex>`: committed blobs. A blob appears here only by `rename(2)` of a fully
//!   written, verified and `fdatasync`ed file, followed by an `fsync` of this directory, so a
//!   reader never sees a partial blob and a committed blob survives power loss.
//! - `ingest/<sha256(key)>/{data,key}`: an ingest in progress. `data` is locked with `flock(2)`
//!   while a [`BlobWriter`] has it open, so garbage collection and the store check can tell a
//!   live ingest (another process is downloading) from one left by a killed pull; the latter is
//!   resumed by the next [`ContentStore::writer`] for the same key.
//! - `ingest/put-<pid>-<start>-<n>`: small blobs written by [`ContentStore::put`].

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use oci_spec::image::{Digest, DigestAlgorithm};
use rustix::fs::FlockOperation;
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::util::{Owner, fsync_dir, mkdir_all, remove_tree};

/// Write buffer of a [`BlobWriter`]: large enough to keep syscalls few, small enough that a pull
/// with many layers in flight stays well inside its memory budget.
const WRITE_BUFFER: usize = 256 * 1024;

/// The blob store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

/// An ingest found on disk (see [`ContentStore`]'s layout).
#[derive(Debug)]
pub(crate) struct Ingest {
    pub path: PathBuf,
    pub key: Option<String>,
    pub size: u64,
    pub modified: SystemTime,
    /// A writer holds it (a live process is writing it).
    pub busy: bool,
}

/// Parse a stored digest string; an unparsable one maps to a digest that is never present.
pub(crate) fn sha256_or(s: &str) -> Digest {
    Digest::from_str(s).unwrap_or_else(|_| sha256_digest(&"0".repeat(64)))
}

/// Parse "sha256:<hex>" built from our own hex names.
pub(crate) fn sha256_digest(hex: &str) -> Digest {
    #[allow(clippy::expect_used)]
    Digest::from_str(&format!("sha256:{hex}"))
        .expect("64 lowercase hex digits form a valid sha256 digest")
}

fn check_alg(d: &Digest) -> Result<(), Error> {
    if *d.algorithm() == DigestAlgorithm::Sha256 {
        Ok(())
    } else {
        Err(Error::UnsupportedDigest {
            digest: d.to_string(),
        })
    }
}

impl ContentStore {
    pub(crate) fn new(root: &Path) -> Result<ContentStore, Error> {
        let root = root.join("content");
        mkdir_all(&root, 0o700)?;
        mkdir_all(&root.join("blobs").join("sha256"), 0o700)?;
        mkdir_all(&root.join("ingest"), 0o700)?;
        Ok(ContentStore { root })
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where the blob `d` is (or would be) stored.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().to_string())
            .join(d.digest())
    }

    /// The size of a committed blob, or `None` if it is not in the store.
    pub fn size(&self, d: &Digest) -> Result<Option<u64>, Error> {
        let p = self.path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat blob", p)(e)),
        }
    }

    /// Open (or resume) the ingest named `key` (any string; callers use e.g. the layer's digest).
    ///
    /// If a previous writer for `key` left data behind (a killed pull), the data is re-hashed to
    /// restore the hash state and [`BlobWriter::offset`] says how many bytes to skip; if it is
    /// longer than `expected_size` it is discarded. Fails with [`Error::IngestBusy`] while another
    /// writer (in any process) holds the same key.
    pub fn writer(
        &self,
        key: &str,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobWriter, Error> {
        if let Some(d) = expected {
            check_alg(d)?;
        }
        crate::util::check_key("ingest key", key)?;
        let dir = self
            .ingest_dir()
            .join(hex::encode(Sha256::digest(key.as_bytes())));
        mkdir_all(&dir, 0o700)?;
        let key_file = dir.join("key");
        if !key_file.exists() {
            fs::write(&key_file, key).map_err(Error::io("write ingest key", &key_file))?;
        }
        let data = dir.join("data");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&data)
            .map_err(Error::io("open ingest", &data))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::IngestBusy {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(Error::io("lock ingest", &data)(e.into())),
        }
        let mut len = file
            .metadata()
            .map_err(Error::io("stat ingest", &data))?
            .len();
        if expected_size.is_some_and(|s| len > s) {
            file.set_len(0)
                .map_err(Error::io("truncate ingest", &data))?;
            len = 0;
        }
        let mut hasher = Sha256::new();
        if len > 0 {
            let mut buf = vec![0u8; 1 << 20];
            let mut done = 0u64;
            file.seek(SeekFrom::Start(0))
                .map_err(Error::io("read ingest", &data))?;
            while done < len {
                let n = file
                    .read(&mut buf)
                    .map_err(Error::io("read ingest", &data))?;
                if n == 0 {
                    break;
                }
                let take = usize::try_from((len - done).min(n as u64)).unwrap_or(n);
                hasher.update(&buf[..take]);
                done += take as u64;
            }
            len = done;
            file.set_len(len)
                .map_err(Error::io("truncate ingest", &data))?;
        }
        file.seek(SeekFrom::Start(len))
            .map_err(Error::io("seek ingest", &data))?;
        Ok(BlobWriter {
            store: self.clone(),
            key: key.to_string(),
            dir,
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            hasher,
            offset: len,
            expected: expected.cloned(),
            expected_size,
        })
    }

    /// Store a small blob (manifest, config, index) in one call. Returns its digest; a blob that
    /// is already present is not rewritten.
    pub fn put(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, Error> {
        self.put_inner(bytes, expected, |_| Ok(()))
    }

    /// Like [`ContentStore::put`], adding the blob to lease `lease` of namespace `ns` before it
    /// becomes visible (see [`BlobWriter::commit_in_lease`]).
    pub fn put_in_lease(
        &self,
        bytes: &[u8],
        expected: Option<&Digest>,
        meta: &crate::MetaDb,
        ns: &str,
        lease: &str,
    ) -> Result<Digest, Error> {
        self.put_inner(bytes, expected, |d| {
            meta.lease_add(ns, lease, crate::LeaseResource::Content(d.clone()))
        })
    }

    fn put_inner(
        &self,
        bytes: &[u8],
        expected: Option<&Digest>,
        before_visible: impl FnOnce(&Digest) -> Result<(), Error>,
    ) -> Result<Digest, Error> {
        if let Some(d) = expected {
            check_alg(d)?;
        }
        let actual = sha256_digest(&hex::encode(Sha256::digest(bytes)));
        if let Some(exp) = expected {
            if *exp != actual {
                return Err(Error::DigestMismatch {
                    expected: exp.clone(),
                    actual,
                });
            }
        }
        before_visible(&actual)?;
        let target = self.path(&actual);
        if target.exists() {
            return Ok(actual);
        }
        static N: AtomicU64 = AtomicU64::new(0);
        let tmp = self.ingest_dir().join(format!(
            "put-{}-{}",
            Owner::current().tag(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let res = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(Error::io("create", &tmp))?;
            f.write_all(bytes).map_err(Error::io("write", &tmp))?;
            rustix::fs::fdatasync(&f).map_err(|e| Error::io("fdatasync", &tmp)(e.into()))?;
            fs::rename(&tmp, &target).map_err(Error::io("commit blob", &target))?;
            fsync_dir(&self.blob_dir())
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map(|()| actual)
    }

    /// Read a whole blob into memory (for manifests and configs).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, Error> {
        let p = self.path(d);
        fs::read(&p).map_err(|e| self.not_found(d, e, "read blob", &p))
    }

    /// Open a blob for reading.
    pub fn open(&self, d: &Digest) -> Result<File, Error> {
        let p = self.path(d);
        File::open(&p).map_err(|e| self.not_found(d, e, "open blob", &p))
    }

    fn not_found(&self, d: &Digest, e: std::io::Error, op: &'static str, p: &Path) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                what: format!("blob {d}"),
            }
        } else {
            Error::io(op, p)(e)
        }
    }

    /// Delete a blob. Fails with [`Error::NotFound`] if it is not there. Prefer garbage collection:
    /// deleting a blob that an image still references makes the image incomplete.
    pub fn delete(&self, d: &Digest) -> Result<(), Error> {
        let p = self.path(d);
        fs::remove_file(&p).map_err(|e| self.not_found(d, e, "delete blob", &p))
    }

    /// Every committed blob with its size.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, Error> {
        let dir = self.blob_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
            let e = e.map_err(Error::io("list", &dir))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(d) = Digest::from_str(&format!("sha256:{name}")) else {
                continue;
            };
            let size = match e.metadata() {
                Ok(m) => m.len(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(Error::io("stat blob", e.path())(err)),
            };
            out.push((d, size));
        }
        out.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        Ok(out)
    }

    /// Re-hash a blob and compare with its name: [`Error::Corrupt`] if it differs.
    pub fn verify(&self, d: &Digest) -> Result<(), Error> {
        check_alg(d)?;
        let mut f = self.open(d)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(Error::io("read blob", self.path(d)))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let actual = sha256_digest(&hex::encode(h.finalize()));
        if actual == *d {
            Ok(())
        } else {
            Err(Error::Corrupt {
                digest: d.clone(),
                actual,
            })
        }
    }

    /// The ingests on disk, with whether a live writer holds each.
    pub(crate) fn ingests(&self) -> Result<Vec<Ingest>, Error> {
        let dir = self.ingest_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
            let e = e.map_err(Error::io("list", &dir))?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if let Some(rest) = name.strip_prefix("put-") {
                let busy = Owner::from_tag(rest).is_some_and(|o| o.is_alive());
                out.push(Ingest {
                    path,
                    key: None,
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    busy,
                });
                continue;
            }
            let data = path.join("data");
            let key = fs::read_to_string(path.join("key")).ok();
            let (size, modified, busy) = match OpenOptions::new().read(true).open(&data) {
                Ok(f) => {
                    let m = f.metadata().map_err(Error::io("stat ingest", &data))?;
                    let busy = match rustix::fs::flock(&f, FlockOperation::NonBlockingLockShared) {
                        Ok(()) => false,
                        Err(rustix::io::Errno::WOULDBLOCK) => true,
                        Err(e) => return Err(Error::io("lock ingest", &data)(e.into())),
                    };
                    (
                        m.len(),
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        busy,
                    )
                }
                Err(_) => (0, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), false),
            };
            out.push(Ingest {
                path,
                key,
                size,
                modified,
                busy,
            });
        }
        Ok(out)
    }

    /// Remove an ingest found by [`ContentStore::ingests`].
    pub(crate) fn remove_ingest(&self, path: &Path) -> Result<(), Error> {
        if path.is_dir() {
            remove_tree(path)
        } else {
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove", path)(e))
                }
                _ => Ok(()),
            }
        }
    }
}

/// A blob being written: hashes on the fly, verified on [`BlobWriter::commit`].
///
/// Dropping a writer without `commit` or `abort` keeps the partial data so a later
/// [`ContentStore::writer`] with the same key resumes it.
pub struct BlobWriter {
    store: ContentStore,
    key: String,
    dir: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: Sha256,
    offset: u64,
    expected: Option<Digest>,
    expected_size: Option<u64>,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("key", &self.key)
            .field("offset", &self.offset)
            .finish()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(max) = self.expected_size {
            if self.offset + buf.len() as u64 > max {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "ingest {} received more than the expected {max} bytes",
                        self.key
                    ),
                ));
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("blob writer already finished"));
        };
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter {
    /// Bytes ingested so far (after a resume: where the download should continue).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The ingest key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Verify size and digest, then make the blob visible: `fdatasync` the data once, rename it
    /// into `blobs/`, `fsync` that directory. On a mismatch the ingest is removed and nothing is
    /// committed. A blob that already exists makes this a successful no-op.
    pub fn commit(self) -> Result<Digest, Error> {
        self.finish(|_| Ok(()))
    }

    /// Like [`BlobWriter::commit`], adding the blob to lease `lease` of namespace `ns` after it is
    /// verified and **before** it becomes visible, so a concurrent garbage collection cannot
    /// delete it even when its digest was not known in advance (import, load).
    pub fn commit_in_lease(
        self,
        meta: &crate::MetaDb,
        ns: &str,
        lease: &str,
    ) -> Result<Digest, Error> {
        self.finish(|d| meta.lease_add(ns, lease, crate::LeaseResource::Content(d.clone())))
    }

    fn finish(
        mut self,
        before_visible: impl FnOnce(&Digest) -> Result<(), Error>,
    ) -> Result<Digest, Error> {
        let data = self.dir.join("data");
        let Some(buf) = self.file.take() else {
            return Err(Error::io("commit", &data)(std::io::Error::other(
                "writer already finished",
            )));
        };
        let file = match buf.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let err = e.into_error();
                return Err(Error::io("write ingest", &data)(err));
            }
        };
        let hasher = std::mem::take(&mut self.hasher);
        let actual = sha256_digest(&hex::encode(hasher.finalize()));
        if let Some(expected) = self.expected_size {
            if expected != self.offset {
                let _ = remove_tree(&self.dir);
                return Err(Error::SizeMismatch {
                    what: self.key.clone(),
                    expected,
                    actual: self.offset,
                });
            }
        }
        if let Some(expected) = self.expected.take() {
            if expected != actual {
                let _ = remove_tree(&self.dir);
                return Err(Error::DigestMismatch { expected, actual });
            }
        }
        before_visible(&actual)?;
        let target = self.store.path(&actual);
        if !target.exists() {
            rustix::fs::fdatasync(&file).map_err(|e| Error::io("fdatasync", &data)(e.into()))?;
            fs::rename(&data, &target).map_err(Error::io("commit blob", &target))?;
            fsync_dir(&self.store.blob_dir())?;
        }
        // Still holding the lock: nobody else removes or resumes this ingest meanwhile.
        remove_tree(&self.dir)?;
        drop(file);
        Ok(actual)
    }

    /// Discard the ingest.
    pub fn abort(mut self) -> Result<(), Error> {
        let file = self.file.take();
        let res = remove_tree(&self.dir);
        drop(file);
        res
    }
}
