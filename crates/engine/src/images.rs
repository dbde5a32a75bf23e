//! The `Images` service: `berth_image::ImageService` (one per namespace) over gRPC.
//!
//! Store work blocks (redb, blob files, snapshots), so every call runs it on the blocking pool.
//! Pull and push run in a task of their own to completion even when the client hangs up: the
//! image library releases its lease and records the image only at the end, so a pull is either
//! recorded whole or not at all, and a concurrent pull of the same image waiting for this one
//! still gets it. Save and load bridge the library's `Write`/`Read` to gRPC streams through
//! bounded channels, so a slow peer slows the archive instead of filling memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use berth_api::namespace_of;
use berth_api::v1::images_server::Images;
use berth_api::v1::{
    BlobPushed, Chunk, ImageDeleteResponse, ImageDone, ImageProgress, ImageSummary, ImportChunk,
    ImportResponse, InspectImageRequest, JsonDocument, LayerProgress, ListImagesRequest,
    ListImagesResponse, LoadResponse, PruneImagesRequest, PullRequest, PushRequest,
    RemoveImageRequest, Resolved, SaveRequest, TagRequest, TagResponse, image_progress,
    import_chunk,
};
use berth_image::format::Platform;
use berth_image::{ImageService, Progress};
use berth_registry::Reference;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{ContainerBrief, Engine};

/// Bytes per `Chunk` of a saved archive (gRPC's default message limit is 4 MiB).
const CHUNK: usize = 256 * 1024;
/// Chunks buffered between the archive and the gRPC stream, either way.
const CHUNKS_IN_FLIGHT: usize = 8;

/// The `berth.v1.Images` service.
pub(crate) struct ImagesService {
    engine: Engine,
}

impl ImagesService {
    pub(crate) fn new(engine: Engine) -> ImagesService {
        ImagesService { engine }
    }
}

/// An image library error as a gRPC status carrying its one-line message.
pub(crate) fn status(e: berth_image::Error) -> Status {
    use berth_image::Error as E;
    let msg = one_line(&e.to_string());
    match &e {
        E::NoSuchImage(_) | E::NoMatchingPlatform { .. } => Status::not_found(msg),
        E::BadReference { .. } | E::InvalidPlatform(_) | E::Archive { .. } => {
            Status::invalid_argument(msg)
        }
        E::Conflict(_) => Status::failed_precondition(msg),
        E::Schema1 | E::UnknownMediaType(_) | E::BadManifest(_) | E::BadConfig { .. } => {
            Status::failed_precondition(msg)
        }
        E::Registry(r) => match r.as_ref() {
            berth_registry::Error::NotFound { .. } => Status::not_found(msg),
            berth_registry::Error::InvalidReference { .. } => Status::invalid_argument(msg),
            berth_registry::Error::Unauthorized { .. } => Status::permission_denied(msg),
            berth_registry::Error::Network { .. } => Status::unavailable(msg),
            _ => Status::unknown(msg),
        },
        E::Store(berth_store::Error::NotFound { .. }) => Status::not_found(msg),
        _ => Status::internal(msg),
    }
}

fn one_line(s: &str) -> String {
    s.trim().replace(['\n', '\r'], " ")
}

/// Run blocking image work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("image task failed: {e}")))?
}

fn bad_reference(e: berth_registry::Error) -> Status {
    Status::invalid_argument(one_line(&e.to_string()))
}

/// Docker's short form of a name (`busybox:latest`).
fn familiar(name: &str) -> String {
    berth_image::familiar_name(name)
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// Split a prune or removal report into (untagged, deleted).
fn split_report(report: &berth_image::PruneReport) -> (Vec<String>, Vec<String>) {
    let mut untagged = Vec::new();
    let mut deleted = Vec::new();
    for line in &report.lines {
        let (kind, what) = line.split_once(':').unwrap_or(("", line));
        let what = what.trim().to_owned();
        match kind.to_ascii_lowercase().as_str() {
            "untagged" => untagged.push(what),
            "deleted" => deleted.push(what),
            _ => {}
        }
    }
    (untagged, deleted)
}

/// Forward pull/push progress to a client; byte counts at most every 1% of a layer.
fn progress_sender(
    tx: mpsc::UnboundedSender<Result<ImageProgress, Status>>,
) -> berth_image::ProgressFn {
    let last: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    Arc::new(move |p: Progress| {
        let event = match p {
            Progress::Resolved {
                repository,
                reference,
                digest,
            } => image_progress::Event::Resolved(Resolved {
                repository,
                reference,
                digest: digest.to_string(),
            }),
            Progress::LayerWaiting { layer, size } => layer_event(&layer, "waiting", 0, size),
            Progress::LayerBytes { layer, done, total } => {
                let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
                let prev = last.entry(layer.to_string()).or_insert(0);
                if done < total && done.saturating_sub(*prev) < (total / 100).max(1) {
                    return;
                }
                *prev = done;
                layer_event(&layer, "downloading", done, total)
            }
            Progress::LayerExists { layer } => layer_event(&layer, "exists", 0, 0),
            Progress::LayerDone { layer } => layer_event(&layer, "done", 0, 0),
            Progress::BlobPushed { digest, how } => image_progress::Event::Pushed(BlobPushed {
                digest: digest.to_string(),
                how: how.to_ascii_lowercase(),
            }),
            Progress::Done { name, digest } => image_progress::Event::Done(ImageDone {
                name,
                digest: digest.to_string(),
            }),
        };
        // A client that hung up misses the rest; the work goes on.
        let _ = tx.send(Ok(ImageProgress { event: Some(event) }));
    })
}

fn layer_event(
    layer: &impl ToString,
    status: &str,
    current: u64,
    total: u64,
) -> image_progress::Event {
    image_progress::Event::Layer(LayerProgress {
        digest: layer.to_string(),
        status: status.to_owned(),
        current,
        total,
    })
}

/// The records of the namespace a reference names: by name, else by id (prefix).
fn matching(all: &[berth_image::ImageSummary], reference: &str) -> (Vec<usize>, bool) {
    let normal = reference.parse::<Reference>().ok().map(|r| r.to_string());
    let by_name: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == reference || Some(&s.name) == normal.as_ref())
        .map(|(i, _)| i)
        .collect();
    if !by_name.is_empty() {
        return (by_name, true);
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let by_id = all
            .iter()
            .enumerate()
            .filter(|(_, s)| s.id.digest().starts_with(hex) || s.digest.digest().starts_with(hex))
            .map(|(i, _)| i)
            .collect();
        return (by_id, false);
    }
    (Vec::new(), false)
}

/// Why a removal must be refused, Docker's way, or `None`.
///
/// Untagging one of several names is always allowed. Removing an image's last name, or the
/// image by id, needs `force` when stopped containers use it, and is refused even with it when
/// a running one does (a name is then only untagged).
fn remove_conflict(
    reference: &str,
    by_name: bool,
    other_names: usize,
    image_id: &str,
    users: &[ContainerBrief],
    force: bool,
) -> Option<String> {
    if users.is_empty() || (by_name && other_names > 0) {
        return None;
    }
    let running = users.iter().find(|c| c.running);
    match (by_name, force) {
        (true, false) => Some(format!(
            "conflict: unable to remove repository reference \"{reference}\" (must force) - container {} is using its referenced image {}",
            short(&users[0].id),
            short(image_id)
        )),
        (true, true) => None,
        (false, true) => running.map(|c| {
            format!(
                "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
                short(image_id),
                short(&c.id)
            )
        }),
        (false, false) => {
            let c = running.unwrap_or(&users[0]);
            Some(format!(
                "conflict: unable to delete {} (must be forced) - image is being used by {} container {}",
                short(image_id),
                if c.running { "running" } else { "stopped" },
                short(&c.id)
            ))
        }
    }
}

/// Docker's `reference=` pattern match (`*` and `?` within one path segment).
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != b'/')
                .any(|i| go(rest, &t[i..])),
            Some((b'?', rest)) => t.first().is_some_and(|&c| c != b'/') && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Parsed `images --filter`s.
#[derive(Default)]
struct ListFilter {
    dangling: Option<bool>,
    references: Vec<String>,
    labels: Vec<String>,
}

impl ListFilter {
    fn parse(filters: &[String]) -> Result<ListFilter, Status> {
        let mut f = ListFilter::default();
        for raw in filters {
            let (k, v) = raw.split_once('=').ok_or_else(|| {
                Status::invalid_argument(format!(
                    "bad format of filter {raw:?} (expected name=value)"
                ))
            })?;
            match k {
                "dangling" => {
                    f.dangling = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(Status::invalid_argument(format!(
                                "invalid filter 'dangling={v}': expected true or false"
                            )));
                        }
                    });
                }
                "reference" => f.references.push(v.to_owned()),
                "label" => f.labels.push(v.to_owned()),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "invalid filter {k:?}: images accept dangling, reference, label"
                    )));
                }
            }
        }
        Ok(f)
    }

    fn matches(&self, img: &ImageSummary) -> bool {
        if let Some(d) = self.dangling {
            if d != img.repo_tags.is_empty() {
                return false;
            }
        }
        if !self.references.is_empty() {
            let hit = self.references.iter().any(|p| {
                img.repo_tags.iter().any(|t| {
                    let repo = t.rsplit_once(':').map_or(t.as_str(), |(r, _)| r);
                    glob(p, t) || glob(p, repo)
                })
            });
            if !hit {
                return false;
            }
        }
        self.labels.iter().all(|l| match l.split_once('=') {
            Some((k, v)) => img.labels.get(k).is_some_and(|x| x == v),
            None => img.labels.contains_key(l.as_str()),
        })
    }
}

/// The namespace's images, one row per image id, newest first.
fn summaries(
    svc: &ImageService,
    users: &HashMap<String, Vec<ContainerBrief>>,
) -> Result<Vec<ImageSummary>, Status> {
    let mut by_id: BTreeMap<String, ImageSummary> = BTreeMap::new();
    for s in svc.list().map_err(status)? {
        let id = s.id.to_string();
        let row = by_id.entry(id.clone()).or_insert_with(|| {
            let labels = image_labels(svc, &s.id);
            ImageSummary {
                id: id.clone(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                created_unix: s
                    .created
                    .as_deref()
                    .and_then(crate::logs::parse_rfc3339_nanos)
                    .map_or(0, |n| n.div_euclid(1_000_000_000)),
                size: i64::try_from(s.size).unwrap_or(i64::MAX),
                labels,
                containers: users
                    .get(&id)
                    .map_or(0, |v| i64::try_from(v.len()).unwrap_or(i64::MAX)),
            }
        });
        if s.tag != "<none>" {
            row.repo_tags.push(format!("{}:{}", s.repository, s.tag));
        }
        if s.repository != "<none>" {
            let d = format!("{}@{}", s.repository, s.digest);
            if !row.repo_digests.contains(&d) {
                row.repo_digests.push(d);
            }
        }
    }
    let mut rows: Vec<ImageSummary> = by_id.into_values().collect();
    rows.sort_by(|a, b| b.created_unix.cmp(&a.created_unix).then(a.id.cmp(&b.id)));
    Ok(rows)
}

/// The `Labels` of an image's config (empty when unreadable).
fn image_labels(svc: &ImageService, config: &berth_store::Digest) -> HashMap<String, String> {
    let Ok(bytes) = svc.store().content.read(config) else {
        return HashMap::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    v.pointer("/config/Labels")
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Remove images nothing uses: dangling ones, or with `all` every one without a container.
/// Shared by `image prune` and `system prune`.
pub(crate) async fn prune_images(
    engine: &Engine,
    ns: &str,
    all: bool,
) -> Result<ImageDeleteResponse, Status> {
    let svc = engine.image_service(ns);
    let users = engine.image_users(ns);
    let e = engine.clone();
    let (untagged, deleted, reclaimed) = blocking(move || {
        // Removed containers' snapshots hold their image's layers until the reaper is done,
        // and the spare snapshot holds its image's (`spare.rs`).
        let _spares = e.hold_spares();
        e.reaper().settle();
        let list = svc.list().map_err(status)?;
        let candidates: Vec<&berth_image::ImageSummary> = list
            .iter()
            .filter(|s| all || s.repository == "<none>")
            .collect();
        let used = |s: &berth_image::ImageSummary| {
            users.get(&s.id.to_string()).is_some_and(|v| !v.is_empty())
        };
        let report = if candidates.iter().any(|s| used(s)) {
            // Some are in use: remove the others one by one.
            let mut total = berth_image::PruneReport::default();
            for s in candidates.iter().filter(|s| !used(s)) {
                let r = svc.remove(&s.name, true).map_err(status)?;
                total.lines.extend(r.lines);
                total.reclaimed += r.reclaimed;
            }
            total
        } else {
            svc.prune(all).map_err(status)?
        };
        let (untagged, deleted) = split_report(&report);
        Ok((untagged, deleted, report.reclaimed))
    })
    .await?;
    emit_removals(engine, ns, &untagged, &deleted);
    Ok(ImageDeleteResponse {
        untagged,
        deleted,
        space_reclaimed: i64::try_from(reclaimed).unwrap_or(i64::MAX),
    })
}

fn emit_removals(engine: &Engine, ns: &str, untagged: &[String], deleted: &[String]) {
    for name in untagged {
        engine.emit(ns, "image", "untag", name, &[("name", name.as_str())]);
    }
    for id in deleted {
        engine.emit(ns, "image", "delete", id, &[("name", id.as_str())]);
    }
}

/// `Write` into a channel of chunks (from a blocking thread to a gRPC stream).
struct ChunkWriter {
    tx: mpsc::Sender<Result<Chunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Chunk { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// `Read` from a channel of chunks (a gRPC client stream, to a blocking thread).
struct ChunkReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    cur: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Feed a client stream's byte payloads into a [`ChunkReader`].
fn reader_of<T: Send + 'static>(
    mut stream: Streaming<T>,
    first: Option<Bytes>,
    data: impl Fn(T) -> Option<Bytes> + Send + 'static,
) -> ChunkReader {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        if let Some(b) = first {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        while let Some(msg) = stream.next().await {
            let item = match msg {
                Ok(m) => match data(m) {
                    Some(b) => Ok(b),
                    None => continue,
                },
                Err(s) => Err(io::Error::other(format!(
                    "the upload was cut short: {}",
                    s.message()
                ))),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    ChunkReader {
        rx,
        cur: Bytes::new(),
    }
}

#[tonic::async_trait]
impl Images for ImagesService {
    type PullStream = UnboundedReceiverStream<Result<ImageProgress, Status>>;
    type PushStream = UnboundedReceiverStream<Result<ImageProgress, Status>>;
    type SaveStream = ReceiverStream<Result<Chunk, Status>>;

    async fn pull(&self, req: Request<PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let parsed: Reference = r.reference.parse().map_err(bad_reference)?;
        let platform: Option<Platform> = if r.platform.is_empty() {
            None
        } else {
            Some(r.platform.parse().map_err(status)?)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = self
            .engine
            .image_service(&ns)
            .with_progress(progress_sender(tx.clone()));
        let engine = self.engine.clone();
        let reference = parsed.to_string();
        tokio::spawn(async move {
            match svc.pull(&reference, platform.as_ref()).await {
                Ok(pulled) => {
                    let name = familiar(&pulled.name);
                    engine.emit(&ns, "image", "pull", &name, &[("name", name.as_str())]);
                }
                Err(e) => {
                    let _ = tx.send(Err(status(e)));
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn push(&self, req: Request<PushRequest>) -> Result<Response<Self::PushStream>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = self
            .engine
            .image_service(&ns)
            .with_progress(progress_sender(tx.clone()));
        let engine = self.engine.clone();
        tokio::spawn(async move {
            match svc.push(&r.reference, None, None).await {
                Ok(digest) => {
                    let name = r
                        .reference
                        .parse::<Reference>()
                        .map_or_else(|_| r.reference.clone(), |p| p.to_string());
                    let _ = tx.send(Ok(ImageProgress {
                        event: Some(image_progress::Event::Done(ImageDone {
                            name: name.clone(),
                            digest: digest.to_string(),
                        })),
                    }));
                    let name = familiar(&name);
                    engine.emit(&ns, "image", "push", &name, &[("name", name.as_str())]);
                }
                Err(e) => {
                    let _ = tx.send(Err(status(e)));
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let filter = ListFilter::parse(&r.filters)?;
        let svc = self.engine.image_service(&ns);
        let users = self.engine.image_users(&ns);
        let images = blocking(move || summaries(&svc, &users)).await?;
        Ok(Response::new(ListImagesResponse {
            images: images.into_iter().filter(|i| filter.matches(i)).collect(),
        }))
    }

    async fn inspect(
        &self,
        req: Request<InspectImageRequest>,
    ) -> Result<Response<JsonDocument>, Status> {
        let svc = self.engine.image_service(namespace_of(&req));
        let reference = req.into_inner().reference;
        let v = blocking(move || svc.inspect(&reference).map_err(status)).await?;
        Ok(Response::new(JsonDocument {
            json: v.to_string(),
        }))
    }

    async fn tag(&self, req: Request<TagRequest>) -> Result<Response<TagResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        r.target.parse::<Reference>().map_err(bad_reference)?;
        let svc = self.engine.image_service(&ns);
        let (source, target) = (r.source.clone(), r.target.clone());
        let (name, id) = blocking(move || {
            let name = svc.tag(&source, &target).map_err(status)?;
            let id = svc
                .inspect(&name)
                .ok()
                .and_then(|v| v["Id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            Ok((name, id))
        })
        .await?;
        let f = familiar(&name);
        self.engine
            .emit(&ns, "image", "tag", &id, &[("name", f.as_str())]);
        Ok(Response::new(TagResponse { target: name }))
    }

    async fn remove(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<ImageDeleteResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let svc = self.engine.image_service(&ns);
        let users = self.engine.image_users(&ns);
        let e = self.engine.clone();
        let (untagged, deleted, reclaimed) = blocking(move || {
            // Removed containers' snapshots hold their image's layers until the reaper is done,
            // and the spare snapshot holds its image's (`spare.rs`).
            let _spares = e.hold_spares();
            e.reaper().settle();
            let all = svc.list().map_err(status)?;
            let (hits, by_name) = matching(&all, &r.reference);
            if !hits.is_empty() {
                let ids: BTreeSet<String> = hits.iter().map(|&j| all[j].id.to_string()).collect();
                for id in &ids {
                    let names = all.iter().filter(|s| s.id.to_string() == *id).count();
                    let removing = hits
                        .iter()
                        .filter(|&&j| all[j].id.to_string() == *id)
                        .count();
                    let users = users.get(id).map_or(&[][..], Vec::as_slice);
                    if let Some(msg) =
                        remove_conflict(&r.reference, by_name, names - removing, id, users, r.force)
                    {
                        return Err(Status::failed_precondition(msg));
                    }
                }
            }
            let report = svc.remove(&r.reference, r.force).map_err(status)?;
            let (untagged, deleted) = split_report(&report);
            Ok((untagged, deleted, report.reclaimed))
        })
        .await?;
        emit_removals(&self.engine, &ns, &untagged, &deleted);
        Ok(Response::new(ImageDeleteResponse {
            untagged,
            deleted,
            space_reclaimed: i64::try_from(reclaimed).unwrap_or(i64::MAX),
        }))
    }

    async fn prune(
        &self,
        req: Request<PruneImagesRequest>,
    ) -> Result<Response<ImageDeleteResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let all = req.into_inner().all;
        Ok(Response::new(prune_images(&self.engine, &ns, all).await?))
    }

    async fn save(&self, req: Request<SaveRequest>) -> Result<Response<Self::SaveStream>, Status> {
        let ns = namespace_of(&req).to_owned();
        let refs = req.into_inner().references;
        if refs.is_empty() {
            return Err(Status::invalid_argument(
                "nothing to save: name at least one image",
            ));
        }
        let svc = self.engine.image_service(&ns);
        // Unknown names fail the call itself rather than the stream.
        let check = svc.clone();
        let names = refs.clone();
        blocking(move || {
            for n in &names {
                check.inspect(n).map_err(status)?;
            }
            Ok(())
        })
        .await?;
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            match svc.save(&refs, &mut w).and_then(|()| {
                w.flush().map_err(|e| berth_image::Error::Io {
                    what: "sending the archive".into(),
                    source: e,
                })
            }) {
                Ok(()) => {
                    for n in &refs {
                        engine.emit(&ns, "image", "save", n, &[("name", n.as_str())]);
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(status(e)));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn load(&self, req: Request<Streaming<Chunk>>) -> Result<Response<LoadResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let reader = reader_of(req.into_inner(), None, |c: Chunk| Some(Bytes::from(c.data)));
        let svc = self.engine.image_service(&ns);
        let loaded = blocking(move || {
            svc.load(
                io::BufReader::with_capacity(1 << 20, reader),
                "the uploaded archive",
            )
            .map_err(status)
        })
        .await?;
        let mut out = Vec::new();
        for (name, id) in loaded.names.iter().zip(&loaded.ids) {
            let shown = if name.starts_with("sha256:") {
                id.to_string()
            } else {
                familiar(name)
            };
            self.engine
                .emit(&ns, "image", "load", &shown, &[("name", shown.as_str())]);
            out.push(shown);
        }
        Ok(Response::new(LoadResponse { loaded: out }))
    }

    async fn import(
        &self,
        req: Request<Streaming<ImportChunk>>,
    ) -> Result<Response<ImportResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("import: the stream is empty"))??;
        let Some(import_chunk::Msg::Request(ireq)) = first.msg else {
            return Err(Status::invalid_argument(
                "import: the first message must be the ImportRequest, the tar data follows",
            ));
        };
        if !ireq.changes.is_empty() {
            return Err(Status::unimplemented(format!(
                "import --change is not supported yet (got {:?}); import without it and set the configuration at run time",
                ireq.changes
            )));
        }
        let name = (!ireq.reference.is_empty())
            .then(|| {
                ireq.reference
                    .parse::<Reference>()
                    .map(|r| r.to_string())
                    .map_err(bad_reference)
            })
            .transpose()?;
        let reader = reader_of(stream, None, |c: ImportChunk| match c.msg {
            Some(import_chunk::Msg::Data(d)) => Some(Bytes::from(d)),
            _ => None,
        });
        let svc = self.engine.image_service(&ns);
        let message = (!ireq.message.is_empty()).then_some(ireq.message);
        let record = name.clone();
        let loaded = blocking(move || {
            svc.import(
                io::BufReader::with_capacity(1 << 20, reader),
                record.as_deref(),
                message.as_deref(),
            )
            .map_err(status)
        })
        .await?;
        let id = loaded
            .ids
            .first()
            .map(ToString::to_string)
            .ok_or_else(|| Status::internal("import recorded no image"))?;
        let shown = name.as_deref().map_or_else(|| id.clone(), familiar);
        self.engine
            .emit(&ns, "image", "import", &id, &[("name", shown.as_str())]);
        Ok(Response::new(ImportResponse { id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, running: bool) -> ContainerBrief {
        ContainerBrief {
            id: id.into(),
            name: "c".into(),
            running,
        }
    }

    const IMG: &str = "sha256:1a2b3c4d5e6f00000000000000000000000000000000000000000000000000";
    const C1: &str = "0123456789ab0000000000000000000000000000000000000000000000000000";

    #[test]
    fn removal_conflicts_like_docker() {
        let stopped = [user(C1, false)];
        let running = [user(C1, true)];
        // Nobody uses it, or another name stays: fine.
        assert_eq!(remove_conflict("busybox", true, 0, IMG, &[], false), None);
        assert_eq!(
            remove_conflict("busybox", true, 1, IMG, &stopped, false),
            None
        );
        // The last name of an image a container uses.
        assert_eq!(
            remove_conflict("busybox", true, 0, IMG, &stopped, false).unwrap(),
            "conflict: unable to remove repository reference \"busybox\" (must force) - container 0123456789ab is using its referenced image 1a2b3c4d5e6f"
        );
        assert_eq!(
            remove_conflict("busybox", true, 0, IMG, &running, true),
            None
        );
        // By id.
        assert!(
            remove_conflict("1a2b", false, 0, IMG, &stopped, false)
                .unwrap()
                .contains(
                    "(must be forced) - image is being used by stopped container 0123456789ab"
                )
        );
        assert_eq!(remove_conflict("1a2b", false, 0, IMG, &stopped, true), None);
        assert!(
            remove_conflict("1a2b", false, 2, IMG, &running, true)
                .unwrap()
                .contains("(cannot be forced) - image is being used by running container")
        );
    }

    #[test]
    fn reference_patterns_like_docker() {
        assert!(glob("busybox", "busybox"));
        assert!(glob("busy*", "busybox"));
        assert!(glob("busybox:*", "busybox:latest"));
        assert!(glob("*/app", "example.com/app"));
        assert!(!glob("*", "example.com/app"));
        assert!(glob("b?sybox", "busybox"));
        assert!(!glob("alpine", "busybox"));
    }

    #[test]
    fn list_filters() {
        let img = ImageSummary {
            id: IMG.into(),
            repo_tags: vec!["busybox:latest".into()],
            labels: [("tier".to_owned(), "base".to_owned())]
                .into_iter()
                .collect(),
            ..ImageSummary::default()
        };
        let none = ImageSummary {
            id: IMG.into(),
            ..ImageSummary::default()
        };
        let f = |fs: &[&str]| {
            ListFilter::parse(&fs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
        };
        assert!(f(&[]).matches(&img));
        assert!(f(&["dangling=true"]).matches(&none));
        assert!(!f(&["dangling=true"]).matches(&img));
        assert!(f(&["dangling=false"]).matches(&img));
        assert!(f(&["reference=busybox"]).matches(&img));
        assert!(f(&["reference=busy*:latest"]).matches(&img));
        assert!(!f(&["reference=alpine"]).matches(&img));
        assert!(f(&["reference=alpine", "reference=busybox"]).matches(&img));
        assert!(f(&["label=tier"]).matches(&img));
        assert!(f(&["label=tier=base"]).matches(&img));
        assert!(!f(&["label=tier=top"]).matches(&img));
        assert!(ListFilter::parse(&["before=x".into()]).is_err());
        assert!(ListFilter::parse(&["dangling=maybe".into()]).is_err());
    }

    #[test]
    fn reports_split_into_untagged_and_deleted() {
        let r = berth_image::PruneReport {
            lines: vec![
                "Untagged: busybox:latest".into(),
                "untagged: a:b".into(),
                "Deleted: sha256:abc".into(),
            ],
            reclaimed: 5,
        };
        let (u, d) = split_report(&r);
        assert_eq!(u, ["busybox:latest", "a:b"]);
        assert_eq!(d, ["sha256:abc"]);
    }
}
