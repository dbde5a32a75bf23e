//! Pull: resolve a reference to one platform's manifest, then fetch every missing layer at
//! once, each verified, decompressed and applied while it downloads, and record the image only
//! after every blob is committed and every snapshot exists. A lease protects what the pull has
//! written from a concurrent garbage collection until the image record refers to it.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use berth_registry::Reference;
use berth_store::LeaseResource;
use bytes::Bytes;
use futures_util::StreamExt;
use oci_spec::image::Digest;
use tokio::sync::mpsc;

use crate::format::{self, Descriptor, ImageConfig, Parsed, Platform, media};
use crate::unpack::{self, Extraction, LayerJob};
use crate::{Error, ImageService, Progress, Result};

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The full name the image is recorded under.
    pub name: String,
    /// The digest of what the reference resolved to (index or manifest).
    pub digest: Digest,
    /// The image id: the config's digest.
    pub config: Digest,
    /// Layers downloaded by this pull (0 when everything was present).
    pub downloaded: usize,
}

/// How many layers download and unpack at once (Docker uses 3).
const CONCURRENCY: usize = 4;

impl ImageService {
    /// Pull `reference` for `platform` (the host's by default).
    pub async fn pull(&self, reference: &str, platform: Option<&Platform>) -> Result<Pulled> {
        let r: Reference = reference.parse()?;
        let platform = platform.cloned().unwrap_or_else(Platform::host);
        let lease = format!(
            "pull-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        self.store.meta.create_lease(
            &self.namespace,
            &lease,
            Some(Duration::from_secs(24 * 3600)),
        )?;
        let result = self.pull_leased(&r, &platform, &lease).await;
        if let Err(e) = self.store.meta.delete_lease(&self.namespace, &lease) {
            tracing::warn!("deleting lease {lease}: {e}");
        }
        result
    }

    async fn pull_leased(&self, r: &Reference, platform: &Platform, lease: &str) -> Result<Pulled> {
        let ns = self.namespace.as_str();
        let top = self
            .client
            .get_manifest(r, &r.reference(), media::MANIFEST_ACCEPT)
            .await?;
        self.emit(Progress::Resolved {
            repository: r.repository.clone(),
            reference: r.tag.clone().unwrap_or_else(|| r.reference()),
            digest: top.digest.clone(),
        });
        let top_desc = Descriptor {
            media_type: top.media_type.clone(),
            digest: top.digest.clone(),
            size: top.bytes.len() as u64,
            platform: None,
            urls: Vec::new(),
            annotations: Default::default(),
        };
        let (manifest_desc, manifest_bytes) =
            match format::parse_manifest(&top.media_type, &top.bytes)? {
                Parsed::Manifest(_) => (top_desc.clone(), top.bytes.clone()),
                Parsed::Index(index) => {
                    let chosen = index.select(platform)?.clone();
                    self.put_leased(lease, &top.bytes, &top.digest)?;
                    let m = self
                        .client
                        .get_manifest(r, chosen.digest.as_ref(), &[chosen.media_type.as_str()])
                        .await?;
                    if m.digest != chosen.digest {
                        return Err(berth_registry::Error::DigestMismatch {
                            expected: chosen.digest.clone(),
                            actual: m.digest,
                        }
                        .into());
                    }
                    self.store
                        .meta
                        .set_children(&top.digest, std::slice::from_ref(&chosen.digest))?;
                    (chosen, m.bytes)
                }
            };
        let Parsed::Manifest(manifest) =
            format::parse_manifest(&manifest_desc.media_type, &manifest_bytes)?
        else {
            return Err(Error::BadManifest(format!(
                "{} is an index inside an index; nested indexes are not supported",
                manifest_desc.digest
            )));
        };
        self.put_leased(lease, &manifest_bytes, &manifest_desc.digest)?;

        // The config: small, fetched whole and verified.
        let config_bytes = match self.store.content.size(&manifest.config.digest)? {
            Some(_) => self.store.content.read(&manifest.config.digest)?,
            None => {
                let mut s = self.client.blob(r, &manifest.config.digest, 0).await?;
                let mut buf =
                    Vec::with_capacity(usize::try_from(manifest.config.size).unwrap_or(0));
                while let Some(chunk) = s.next().await {
                    buf.extend_from_slice(&chunk?);
                    if buf.len() as u64 > manifest.config.size.max(1 << 20) * 4 {
                        return Err(Error::BadConfig {
                            digest: manifest.config.digest.clone(),
                            reason: "larger than its descriptor says".into(),
                        });
                    }
                }
                buf
            }
        };
        self.put_leased(lease, &config_bytes, &manifest.config.digest)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::BadConfig {
                digest: manifest.config.digest.clone(),
                reason: e.to_string(),
            })?;
        let jobs = layer_jobs(&manifest, &config)?;

        let mut children = vec![manifest.config.digest.clone()];
        children.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        self.store
            .meta
            .set_children(&manifest_desc.digest, &children)?;

        tracing::debug!(layers = jobs.len(), "fetching layers");
        let flusher = Flusher::start(self.store.root().to_owned());
        let fetched = self.fetch_layers(r, &jobs, lease).await;
        drop(flusher);
        let (downloaded, sizes) = fetched?;
        tracing::debug!("layers committed");

        if let Some(top_chain) = jobs.last().map(|j| j.chain_id.to_string()) {
            self.store
                .meta
                .set_snapshot_ref(ns, &manifest.config.digest, &top_chain)?;
        }
        let name = r.to_string();
        self.record_image(
            &name,
            &top_desc,
            &[(r.registry.clone(), r.repository.clone())],
            &sizes,
        )?;
        self.emit(Progress::Done {
            name: name.clone(),
            digest: top.digest.clone(),
        });
        Ok(Pulled {
            name,
            digest: top.digest,
            config: manifest.config.digest,
            downloaded,
        })
    }

    /// Store a small verified blob under the pull's lease.
    fn put_leased(&self, lease: &str, bytes: &[u8], digest: &Digest) -> Result<()> {
        self.store.meta.lease_add(
            &self.namespace,
            lease,
            LeaseResource::Content(digest.clone()),
        )?;
        self.store.content.put(bytes, Some(digest))?;
        Ok(())
    }

    /// Download and unpack every layer whose snapshot or blob is missing.
    /// Returns how many blobs were downloaded and the sizes of the layers unpacked.
    async fn fetch_layers(
        &self,
        r: &Reference,
        jobs: &[LayerJob],
        lease: &str,
    ) -> Result<(usize, Vec<(Digest, u64)>)> {
        let ns = self.namespace.clone();
        let overlay = self.store.snapshots.is_overlay();
        let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut tasks = Vec::with_capacity(jobs.len());
        let mut existed = Vec::with_capacity(jobs.len());
        let mut downloaded = 0;
        // Protect every layer's blob and snapshot before looking at them (one transaction).
        let resources: Vec<LeaseResource> = jobs
            .iter()
            .flat_map(|j| {
                [
                    LeaseResource::Content(j.desc.digest.clone()),
                    LeaseResource::Snapshot(j.chain_id.to_string()),
                ]
            })
            .collect();
        self.store.meta.lease_add_all(&ns, lease, &resources)?;
        for job in jobs {
            let have_blob = self.store.content.size(&job.desc.digest)?.is_some();
            let have_snap = unpack::have_snapshot(&self.store, &ns, &job.chain_id)?;
            if have_blob && have_snap {
                self.emit(Progress::LayerExists {
                    layer: job.desc.digest.clone(),
                });
                tasks.push(None);
                existed.push(true);
                continue;
            }
            existed.push(false);
            if !have_blob {
                downloaded += 1;
            }
            self.emit(Progress::LayerWaiting {
                layer: job.desc.digest.clone(),
                size: job.desc.size,
            });
            let this = self.clone();
            let (r, job, lease) = (r.clone(), job.clone(), lease.to_owned());
            let sem = Arc::clone(&sem);
            tasks.push(Some(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                this.fetch_layer(&r, &job, &lease, overlay && !have_snap, have_blob)
                    .await
            })));
        }
        // Wait for all (so nothing keeps writing after an error), then commit in order.
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            results.push(match t {
                None => Ok(None),
                Some(h) => h
                    .await
                    .unwrap_or_else(|e| Err(Error::Internal(format!("layer task: {e}")))),
            });
        }
        let mut extractions = Vec::with_capacity(results.len());
        for res in results {
            extractions.push(res?);
        }
        let mut sizes = Vec::with_capacity(jobs.len());
        for ((job, ex), existed) in jobs.iter().zip(extractions).zip(existed) {
            match ex {
                Some(ex) => {
                    sizes.push((job.chain_id.clone(), ex.size));
                    ex.commit(job)?;
                }
                None if !unpack::have_snapshot(&self.store, &ns, &job.chain_id)? => {
                    // Downloaded only (native snapshotter, or a resumed blob): apply now.
                    let store = Arc::clone(&self.store);
                    let (ns2, lease2, one) = (ns.clone(), lease.to_owned(), [job.clone()]);
                    tokio::task::spawn_blocking(move || {
                        if store.snapshots.is_overlay() {
                            unpack::unpack_from_content(&store, &ns2, &lease2, &one)
                        } else {
                            unpack::apply_native(&store, &ns2, &lease2, &one[0])
                        }
                    })
                    .await
                    .map_err(|e| Error::Internal(format!("unpack task: {e}")))??;
                }
                None => {}
            }
            if !existed {
                self.emit(Progress::LayerDone {
                    layer: job.desc.digest.clone(),
                });
            }
        }
        Ok((downloaded, sizes))
    }

    /// The ingest for a missing blob, or `(true, None)` once the blob is present. While another
    /// pull (in this or another process) is downloading the same blob, wait for it rather than
    /// fail: its lock is released when it commits or dies, and a dead pull's partial download
    /// is then resumed here.
    async fn claim_blob(&self, job: &LayerJob) -> Result<(bool, Option<berth_store::BlobWriter>)> {
        let digest = &job.desc.digest;
        let key = format!("layer-{digest}");
        loop {
            if self.store.content.size(digest)?.is_some() {
                return Ok((true, None));
            }
            match self
                .store
                .content
                .writer(&key, Some(digest), Some(job.desc.size))
            {
                Ok(w) => {
                    if self.store.content.size(digest)?.is_some() {
                        // Committed by the other pull between the two checks.
                        drop(w);
                        return Ok((true, None));
                    }
                    return Ok((false, Some(w)));
                }
                Err(berth_store::Error::IngestBusy { .. }) => {
                    tracing::debug!(layer = %digest, "another pull is downloading this layer; waiting");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One layer: stream it from the registry into the content store and, when `stream_unpack`,
    /// through the unpacker at the same time. Returns the extraction to commit, if any.
    async fn fetch_layer(
        &self,
        r: &Reference,
        job: &LayerJob,
        lease: &str,
        stream_unpack: bool,
        have_blob: bool,
    ) -> Result<Option<Extraction>> {
        let digest = &job.desc.digest;
        let (have_blob, writer) = if have_blob {
            (true, None)
        } else {
            self.claim_blob(job).await?
        };
        if have_blob {
            if !stream_unpack {
                return Ok(None);
            }
            let store = Arc::clone(&self.store);
            let (ns, job, lease) = (self.namespace.clone(), job.clone(), lease.to_owned());
            return tokio::task::spawn_blocking(move || {
                let mut ex = Extraction::begin(&store, &ns, &lease, &job.chain_id)?;
                let file = store.content.open(&job.desc.digest)?;
                ex.apply(&job, io::BufReader::with_capacity(1 << 20, file))?;
                Ok(Some(ex))
            })
            .await
            .map_err(|e| Error::Internal(format!("unpack task: {e}")))?;
        }
        let writer = writer.expect("claim_blob returns a writer when the blob is missing");
        let offset = writer.offset();
        let mut stream = self.client.blob(r, digest, offset).await?;
        // Two consumers of the same chunks (`Bytes` clones share one buffer): a thread appending
        // them to the content store's ingest, hashing them, and a thread unpacking them. Few
        // chunks in flight: each may pin one of hyper's read buffers (up to ~0.5 MiB), and the
        // peak RSS of a pull is a measured target.
        let (blob_tx, blob_rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let unpack_now = stream_unpack && offset == 0;
        let (unpack_tx, unpack_rx) = if unpack_now {
            let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let progress = self.progress.clone();
        let (layer, size) = (digest.clone(), job.desc.size);
        let blob_task = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut reader = ChunkReader::new(blob_rx);
            let mut w = writer;
            let mut done = offset;
            while let Some(chunk) = reader.next_chunk().map_err(Error::io("downloading"))? {
                w.write_all(&chunk)
                    .map_err(Error::io(format!("writing blob {layer}")))?;
                done += chunk.len() as u64;
                if let Some(p) = &progress {
                    p(Progress::LayerBytes {
                        layer: layer.clone(),
                        done,
                        total: size,
                    });
                }
            }
            w.commit()?;
            Ok(())
        });
        let store = Arc::clone(&self.store);
        let (ns, job2, lease2) = (self.namespace.clone(), job.clone(), lease.to_owned());
        let unpack_task = unpack_rx.map(|rx| {
            tokio::task::spawn_blocking(move || -> Result<Extraction> {
                let mut ex = Extraction::begin(&store, &ns, &lease2, &job2.chain_id)?;
                let mut reader = ChunkReader::new(rx);
                ex.apply(&job2, &mut reader)?;
                Ok(ex)
            })
        });
        let mut fetch_err = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    if let Some(tx) = &unpack_tx {
                        // A failed unpack stops the download; its error is reported below.
                        if tx.send(Ok(b.clone())).await.is_err() {
                            break;
                        }
                    }
                    if blob_tx.send(Ok(b)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let msg = format!("download interrupted: {e}");
                    if let Some(tx) = &unpack_tx {
                        let _ = tx.send(Err(io::Error::other(msg.clone()))).await;
                    }
                    let _ = blob_tx.send(Err(io::Error::other(msg))).await;
                    fetch_err = Some(e);
                    break;
                }
            }
        }
        drop((blob_tx, unpack_tx));
        let joined = |e: tokio::task::JoinError| Error::Internal(format!("layer task: {e}"));
        let blob = blob_task.await.map_err(joined)?;
        let unpacked = match unpack_task {
            Some(t) => Some(t.await.map_err(joined)?),
            None => None,
        };
        // The most telling error first: the network, then the blob's digest, then the unpack.
        if let Some(e) = fetch_err {
            return Err(e.into());
        }
        blob?;
        match unpacked {
            Some(ex) => Ok(Some(ex?)),
            None if stream_unpack => {
                // A resumed download: unpack from the committed blob.
                let store = Arc::clone(&self.store);
                let (ns, job, lease) = (self.namespace.clone(), job.clone(), lease.to_owned());
                tokio::task::spawn_blocking(move || {
                    let mut ex = Extraction::begin(&store, &ns, &lease, &job.chain_id)?;
                    let file = store.content.open(&job.desc.digest)?;
                    ex.apply(&job, io::BufReader::with_capacity(1 << 20, file))?;
                    Ok(Some(ex))
                })
                .await
                .map_err(joined)?
            }
            None => Ok(None),
        }
    }
}

/// Build the layer jobs, refusing unknown layer media types before anything is downloaded.
fn layer_jobs(manifest: &format::Manifest, config: &ImageConfig) -> Result<Vec<LayerJob>> {
    for l in &manifest.layers {
        berth_unpack::Compression::from_media_type(&l.media_type)?;
    }
    crate::archive::jobs_for(manifest, config)
}

/// Reads downloaded chunks from a channel, in order, on a blocking thread.
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl ChunkReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChunkReader {
        ChunkReader {
            rx,
            cur: Bytes::new(),
        }
    }

    /// The next whole chunk, or `None` at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.cur.is_empty() {
            return Ok(Some(std::mem::take(&mut self.cur)));
        }
        self.rx.blocking_recv().transpose()
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.cur = chunk?,
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Starts writeback early while layers unpack: without it the kernel lets a gigabyte of dirty
/// pages pile up (the background threshold is a share of RAM) and each layer's final `syncfs`
/// then waits for all of it at once. A thread calls `syncfs` on the store every quarter second
/// until dropped, so the disk writes while the CPU inflates; the per-layer `syncfs` that makes
/// a layer durable finds little left to do.
struct Flusher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start(root: std::path::PathBuf) -> Flusher {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("berth-flush".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(250));
                    if flag.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    if let Err(e) = berth_unpack::syncfs(&root) {
                        tracing::debug!("background syncfs: {e}");
                        break;
                    }
                }
            })
            .ok();
        Flusher { stop, thread }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
