//! Layers into snapshots. With overlayfs every layer is applied into its own detached upper
//! directory, so all layers of an image unpack at once, each while it downloads; the snapshots
//! are then committed in order, each naming its parent. The native (copying) snapshotter needs
//! the parent's tree first, so there layers apply one after another from committed blobs.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_store::{EXTRACT_PREFIX, LeaseResource, Store};
use berth_unpack::{Compression, Options, Whiteouts};
use oci_spec::image::Digest;

use crate::format::Descriptor;
use crate::{Error, Result};

/// One layer to place: its blob, the diff ID the config promises and its chain ID.
#[derive(Clone)]
pub(crate) struct LayerJob {
    pub desc: Descriptor,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub parent: Option<Digest>,
}

/// A detached extraction snapshot, removed on drop unless committed.
pub(crate) struct Extraction {
    store: Arc<Store>,
    ns: String,
    pub key: String,
    pub dir: PathBuf,
    /// Bytes of the layer's tar stream, once applied.
    pub size: u64,
    done: bool,
}

impl Extraction {
    /// Prepare a detached snapshot for `chain_id`, held by `lease` (added before it exists, so
    /// a concurrent garbage collection never sees it unprotected).
    pub fn begin(
        store: &Arc<Store>,
        ns: &str,
        lease: &str,
        chain_id: &Digest,
    ) -> Result<Extraction> {
        let key = extract_key(chain_id);
        store
            .meta
            .lease_add(ns, lease, LeaseResource::Snapshot(key.clone()))?;
        let dir = store.snapshots.prepare_detached(ns, &key)?;
        Ok(Extraction {
            store: Arc::clone(store),
            ns: ns.to_owned(),
            key,
            dir,
            size: 0,
            done: false,
        })
    }

    /// Apply a layer stream into this snapshot and check its diff ID.
    pub fn apply(&mut self, job: &LayerJob, reader: impl Read + Send) -> Result<u64> {
        let compression = Compression::from_media_type(&job.desc.media_type)?;
        let opts = Options {
            whiteouts: Whiteouts::Overlay,
            ..Options::default()
        };
        let stats = berth_unpack::apply_layer(reader, compression, &self.dir, &opts)?;
        if stats.diff_id != job.diff_id {
            return Err(Error::DiffIdMismatch {
                layer: job.desc.digest.clone(),
                expected: job.diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        tracing::debug!(layer = %job.desc.digest, bytes = stats.tar_bytes, "layer applied");
        berth_unpack::syncfs(&self.dir)?;
        tracing::debug!(layer = %job.desc.digest, "layer synced");
        self.size = stats.tar_bytes;
        Ok(stats.tar_bytes)
    }

    /// Commit as `job.chain_id` on top of its parent; a concurrent pull that committed the same
    /// chain first wins and this copy is dropped.
    pub fn commit(mut self, job: &LayerJob) -> Result<()> {
        let name = job.chain_id.to_string();
        if self.store.snapshots.stat(&self.ns, &name)?.is_some() {
            return Ok(()); // Drop removes our copy.
        }
        let parent = job.parent.as_ref().map(ToString::to_string);
        match self
            .store
            .snapshots
            .commit_with_parent(&self.ns, &name, &self.key, parent.as_deref())
        {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            // A concurrent pull committed it between our check and our commit: keep theirs.
            Err(e)
                if e.is_already_exists()
                    && self.store.snapshots.stat(&self.ns, &name)?.is_some() =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Extraction {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.store.snapshots.remove(&self.ns, &self.key) {
                tracing::warn!("removing extraction snapshot {}: {e}", self.key);
            }
        }
    }
}

/// A unique name for an extraction snapshot; the store's GC keeps `extract-*` snapshots only
/// while a live lease names them.
fn extract_key(chain_id: &Digest) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{EXTRACT_PREFIX}{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        chain_id.digest()
    )
}

/// Whether the layer's snapshot already exists (committed).
pub(crate) fn have_snapshot(store: &Store, ns: &str, chain_id: &Digest) -> Result<bool> {
    Ok(store.snapshots.stat(ns, chain_id.as_ref())?.is_some())
}

/// Apply committed blobs into snapshots: in parallel with overlayfs, in order with the native
/// snapshotter. Layers whose snapshot exists are skipped. Returns the bytes unpacked.
pub(crate) fn unpack_from_content(
    store: &Arc<Store>,
    ns: &str,
    lease: &str,
    jobs: &[LayerJob],
) -> Result<()> {
    if store.snapshots.is_overlay() {
        let results: Vec<Result<Option<Extraction>>> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|job| {
                    s.spawn(move || -> Result<Option<Extraction>> {
                        if have_snapshot(store, ns, &job.chain_id)? {
                            return Ok(None);
                        }
                        let mut ex = Extraction::begin(store, ns, lease, &job.chain_id)?;
                        let file = store.content.open(&job.desc.digest)?;
                        ex.apply(job, std::io::BufReader::with_capacity(1 << 20, file))?;
                        Ok(Some(ex))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Internal("layer thread panicked".into())))
                })
                .collect()
        });
        let mut extractions = Vec::with_capacity(results.len());
        for r in results {
            extractions.push(r?);
        }
        for (job, ex) in jobs.iter().zip(extractions) {
            if let Some(ex) = ex {
                ex.commit(job)?;
            }
        }
        Ok(())
    } else {
        for job in jobs {
            apply_native(store, ns, lease, job)?;
        }
        Ok(())
    }
}

/// The native path: copy the parent, apply with real deletions, commit.
pub(crate) fn apply_native(
    store: &Arc<Store>,
    ns: &str,
    lease: &str,
    job: &LayerJob,
) -> Result<()> {
    if have_snapshot(store, ns, &job.chain_id)? {
        return Ok(());
    }
    let key = extract_key(&job.chain_id);
    store
        .meta
        .lease_add(ns, lease, LeaseResource::Snapshot(key.clone()))?;
    let parent = job.parent.as_ref().map(ToString::to_string);
    store.snapshots.prepare(ns, &key, parent.as_deref())?;
    let run = || -> Result<bool> {
        let dir = store.snapshots.upper_dir(ns, &key)?;
        let compression = Compression::from_media_type(&job.desc.media_type)?;
        let opts = Options {
            whiteouts: Whiteouts::Apply,
            ..Options::default()
        };
        let file = store.content.open(&job.desc.digest)?;
        let stats = berth_unpack::apply_layer(
            std::io::BufReader::with_capacity(1 << 20, file),
            compression,
            &dir,
            &opts,
        )?;
        if stats.diff_id != job.diff_id {
            return Err(Error::DiffIdMismatch {
                layer: job.desc.digest.clone(),
                expected: job.diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        berth_unpack::syncfs(&dir)?;
        match store.snapshots.commit(ns, job.chain_id.as_ref(), &key) {
            Ok(()) => Ok(true),
            // A concurrent pull committed the same layer first: keep theirs, drop ours.
            Err(e) if e.is_already_exists() && have_snapshot(store, ns, &job.chain_id)? => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    };
    let r = run();
    if !matches!(r, Ok(true)) {
        let _ = store.snapshots.remove(ns, &key);
    }
    r.map(|_| ())
}
