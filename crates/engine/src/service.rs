//! The tonic services `berth.v1.Containers` and `berth.v1.Tasks`: request parsing and
//! namespaces only; the work is in [`Engine`] methods.

use std::pin::Pin;

use berth_api::namespace_of;
use berth_api::v1::{
    Chunk, ContainerRef, ContainerStats, CopyFromRequest, CopyToChunk, CreateContainerRequest,
    CreateContainerResponse, Empty, IoIn, JsonDocument, KillRequest, ListContainersRequest,
    ListContainersResponse, LogEntry, LogsRequest, PruneContainersRequest, PruneContainersResponse,
    RemoveContainerRequest, ResizeRequest, StatsRequest, StopRequest, TopRequest, TopResponse,
    WaitRequest, WaitResponse, containers_server, copy_to_chunk, tasks_server,
};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Engine;
use crate::io::IoStream;

pub(crate) struct ContainersService {
    e: Engine,
}

impl ContainersService {
    pub(crate) fn new(e: Engine) -> Self {
        ContainersService { e }
    }
}

pub(crate) struct TasksService {
    e: Engine,
}

impl TasksService {
    pub(crate) fn new(e: Engine) -> Self {
        TasksService { e }
    }
}

type Chunks = ReceiverStream<Result<Chunk, Status>>;

#[tonic::async_trait]
impl containers_server::Containers for ContainersService {
    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let cfg = req
            .into_inner()
            .config
            .ok_or_else(|| Status::invalid_argument("create needs a config"))?;
        let (id, warnings) = self.e.create(&ns, cfg).await?;
        Ok(Response::new(CreateContainerResponse { id, warnings }))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let mut filters = Vec::new();
        for f in &r.filters {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                Status::invalid_argument(format!("bad filter {f:?}: use key=value"))
            })?;
            if !matches!(
                k,
                "id" | "name"
                    | "label"
                    | "status"
                    | "exited"
                    | "ancestor"
                    | "before"
                    | "since"
                    | "network"
            ) {
                return Err(Status::invalid_argument(format!("invalid filter '{k}'")));
            }
            filters.push((k.to_owned(), v.to_owned()));
        }
        let all = r.all || filters.iter().any(|(k, _)| k == "status" || k == "exited");
        let containers = self.e.containers(Some(&ns));
        let created_of = |what: &str| self.e.find(&ns, what).ok().map(|c| c.lock().rec.created);
        let mut rows = Vec::with_capacity(containers.len());
        for c in &containers {
            let (mut s, rec) = crate::inspect::summary(c);
            (s.ports, s.networks) = self.e.network_columns(&c.id, &rec.config());
            if !all && !rec.status.is_active() {
                continue;
            }
            if !crate::inspect::matches(&s, &rec, &filters, &created_of) {
                continue;
            }
            rows.push((rec.created, s));
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        if r.last > 0 {
            rows.truncate(usize::try_from(r.last).unwrap_or(usize::MAX));
        }
        Ok(Response::new(ListContainersResponse {
            containers: rows.into_iter().map(|(_, s)| s).collect(),
        }))
    }

    async fn inspect(&self, req: Request<ContainerRef>) -> Result<Response<JsonDocument>, Status> {
        let ns = namespace_of(&req).to_owned();
        let c = self.e.find(&ns, &req.get_ref().id)?;
        let mut v = crate::inspect::inspect(&c, &self.e.containers_dir(&c.id));
        self.e
            .network_settings(&c.id, &c.lock().rec.config(), &mut v);
        Ok(Response::new(JsonDocument {
            json: v.to_string(),
        }))
    }

    async fn remove(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let c = self.e.find(&ns, &r.id)?;
        self.e.remove(&c, r.force).await?;
        if r.volumes {
            let points = c.lock().rec.mount_points.clone();
            self.e.remove_anonymous_volumes(&ns, &points);
        }
        Ok(Response::new(Empty {}))
    }

    async fn prune(
        &self,
        req: Request<PruneContainersRequest>,
    ) -> Result<Response<PruneContainersResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let (deleted, bytes) = self.e.prune_containers(&ns).await?;
        Ok(Response::new(PruneContainersResponse {
            deleted,
            space_reclaimed: i64::try_from(bytes).unwrap_or(i64::MAX),
        }))
    }

    type LogsStream = Pin<Box<dyn Stream<Item = Result<LogEntry, Status>> + Send>>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let c = self.e.find(&ns, &r.id)?;
        let Some(path) = c.lock().rec.log_path.clone() else {
            return Err(Status::failed_precondition(
                "configured logging driver does not support reading",
            ));
        };
        Ok(Response::new(crate::logs::stream(
            path,
            r,
            c.running.subscribe(),
        )))
    }

    type CopyFromStream = Chunks;

    async fn copy_from(
        &self,
        req: Request<CopyFromRequest>,
    ) -> Result<Response<Self::CopyFromStream>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let c = self.e.find(&ns, &r.id)?;
        let (tx, rx) = mpsc::channel(8);
        let e = self.e.clone();
        // Resolve the path first so "not found" is the call's error, not a broken stream.
        let rootfs = e.bundle_dir(&c.id).join("rootfs");
        crate::observe::open_in_root(&rootfs, &r.path, rustix::fs::OFlags::PATH).map_err(
            |err| {
                Status::not_found(format!(
                    "Could not find the file {} in container {}: {err}",
                    r.path,
                    c.name()
                ))
            },
        )?;
        tokio::task::spawn_blocking(move || {
            if let Err(st) = e.copy_from(&c, &r.path, tx.clone()) {
                let _ = tx.blocking_send(Err(st));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn copy_to(
        &self,
        req: Request<Streaming<CopyToChunk>>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.and_then(|m| m.msg);
        let Some(copy_to_chunk::Msg::Request(r)) = first else {
            return Err(Status::invalid_argument(
                "the first message of CopyTo must name the destination",
            ));
        };
        let c = self.e.find(&ns, &r.id)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let e = self.e.clone();
        let path = r.path.clone();
        let worker = tokio::task::spawn_blocking(move || {
            e.copy_to(
                &c,
                &path,
                ChannelReader {
                    rx,
                    buf: Vec::new(),
                    pos: 0,
                },
            )
        });
        while let Some(m) = inbound.message().await? {
            if let Some(copy_to_chunk::Msg::Data(d)) = m.msg {
                if tx.send(d).is_err() {
                    break;
                }
            }
        }
        drop(tx);
        worker
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(Empty {}))
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[tonic::async_trait]
impl tasks_server::Tasks for TasksService {
    async fn start(&self, req: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let c = self.e.find(&ns, &req.get_ref().id)?;
        self.e.start(&c).await?;
        Ok(Response::new(Empty {}))
    }

    async fn stop(&self, req: Request<StopRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let c = self.e.find(&ns, &r.id)?;
        self.e.stop(&c, r.timeout_seconds).await?;
        Ok(Response::new(Empty {}))
    }

    async fn restart(&self, req: Request<StopRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let c = self.e.find(&ns, &r.id)?;
        self.e.restart(&c, r.timeout_seconds).await?;
        Ok(Response::new(Empty {}))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let c = self.e.find(&ns, &r.id)?;
        let sig = if r.signal.is_empty() {
            9
        } else {
            berth_spec::parse::signal(&r.signal).map_err(|e| {
                Status::invalid_argument(format!("invalid signal {:?}: {e}", r.signal))
            })?
        };
        self.e.kill(&c, sig).await?;
        Ok(Response::new(Empty {}))
    }

    async fn pause(&self, req: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let c = self.e.find(&ns, &req.get_ref().id)?;
        self.e.pause(&c, true).await?;
        Ok(Response::new(Empty {}))
    }

    async fn unpause(&self, req: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let c = self.e.find(&ns, &req.get_ref().id)?;
        self.e.pause(&c, false).await?;
        Ok(Response::new(Empty {}))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let c = self.e.find(&ns, &r.id)?;
        let (status_code, error) = self.e.wait(&c, &r.condition).await?;
        Ok(Response::new(WaitResponse { status_code, error }))
    }

    type AttachStream = IoStream;

    async fn attach(&self, req: Request<Streaming<IoIn>>) -> Result<Response<IoStream>, Status> {
        let ns = namespace_of(&req).to_owned();
        Ok(Response::new(self.e.attach(&ns, req.into_inner()).await?))
    }

    type ExecStream = IoStream;

    async fn exec(&self, req: Request<Streaming<IoIn>>) -> Result<Response<IoStream>, Status> {
        let ns = namespace_of(&req).to_owned();
        Ok(Response::new(self.e.exec(&ns, req.into_inner()).await?))
    }

    async fn resize(&self, req: Request<ResizeRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let c = self.e.find(&ns, &r.id)?;
        let size = r.size.unwrap_or_default();
        self.e
            .resize(&c, &r.exec_id, size.width, size.height)
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn top(&self, req: Request<TopRequest>) -> Result<Response<TopResponse>, Status> {
        let ns = namespace_of(&req).to_owned();
        let c = self.e.find(&ns, &req.get_ref().id)?;
        let args = req.into_inner().ps_args;
        Ok(Response::new(self.e.top(&c, args).await?))
    }

    type StatsStream = ReceiverStream<Result<ContainerStats, Status>>;

    async fn stats(
        &self,
        req: Request<StatsRequest>,
    ) -> Result<Response<Self::StatsStream>, Status> {
        let ns = namespace_of(&req).to_owned();
        let r = req.into_inner();
        let c = self.e.find(&ns, &r.id)?;
        let (tx, rx) = mpsc::channel(2);
        let e = self.e.clone();
        tokio::spawn(async move {
            loop {
                let c2 = c.clone();
                let e2 = e.clone();
                let Ok(s) = tokio::task::spawn_blocking(move || e2.stats_sample(&c2)).await else {
                    break;
                };
                if tx.send(Ok(s)).await.is_err() || !r.stream {
                    break;
                }
                let mut rx = c.signal.subscribe();
                // One sample a second, as Docker; end early if the container goes away.
                let removed = tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
                    r = rx.wait_for(|s| s.removed) => r.is_ok(),
                };
                if removed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
