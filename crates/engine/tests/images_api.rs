//! The Images and System services over a real unix socket: an in-process berthd (the engine's
//! router on a temporary socket and root), driven through the generated clients the CLI uses.

use std::path::PathBuf;

use berth_api::v1::containers_client::ContainersClient;
use berth_api::v1::images_client::ImagesClient;
use berth_api::v1::system_client::SystemClient;
use berth_api::v1::{
    Chunk, ContainerConfig, CreateContainerRequest, DfRequest, EventsRequest, ImageProgress,
    ImportChunk, ImportRequest, InfoRequest, InspectImageRequest, ListImagesRequest,
    PruneImagesRequest, PullRequest, PushRequest, RemoveImageRequest, SaveRequest,
    SystemPruneRequest, TagRequest, VersionRequest, image_progress, import_chunk,
};
use berth_testutil::registry::{Auth, Registry};
use futures_util::StreamExt;
use tonic::transport::Channel;

/// A berthd serving on a socket in a temporary root; dropping it stops the server and removes
/// the root (after checking nothing is mounted under it).
struct Daemon {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _cgroups: berth_testutil::host::BerthCgroups,
}

impl Daemon {
    async fn start() -> Daemon {
        berth_testutil::require_root();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mut cfg = berth_engine::Config::with_root(root);
        // The shim binary is built next to the test binaries' directory (target/debug).
        if let Some(bin) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent()?.parent().map(|d| d.join("berth-shim")))
        {
            cfg.shim_binary = bin;
        }
        std::fs::create_dir_all(&cfg.state).unwrap();
        let socket = cfg.socket.clone();
        let engine = berth_engine::Engine::open(cfg).unwrap();
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = engine.router();
        let server = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Daemon {
            dir,
            socket,
            stop: Some(stop),
            server: Some(server),
            _cgroups: berth_testutil::host::berth_cgroups(),
        }
    }

    async fn channel(&self) -> Channel {
        berth_api::connect(&self.socket).await.unwrap()
    }

    async fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel().await)
    }

    async fn system(&self) -> SystemClient<Channel> {
        SystemClient::new(self.channel().await)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = berth_testutil::host::mounts_containing(&root);
        for m in &mounts {
            let _ = std::process::Command::new("umount")
                .args(["-l", m])
                .status();
        }
        if !std::thread::panicking() {
            assert!(mounts.is_empty(), "mounts left under {root}: {mounts:?}");
        }
    }
}

/// A busybox root filesystem as an uncompressed tar.
fn busybox_tar() -> Vec<u8> {
    let rootfs = tempfile::tempdir().unwrap();
    berth_testutil::busybox_rootfs(rootfs.path());
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", rootfs.path()).unwrap();
    b.into_inner().unwrap()
}

async fn import(images: &mut ImagesClient<Channel>, reference: &str, tar: &[u8]) -> String {
    let mut msgs = vec![ImportChunk {
        msg: Some(import_chunk::Msg::Request(ImportRequest {
            reference: reference.into(),
            ..ImportRequest::default()
        })),
    }];
    for c in tar.chunks(100_000) {
        msgs.push(ImportChunk {
            msg: Some(import_chunk::Msg::Data(c.to_vec())),
        });
    }
    images
        .import(futures_util::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner()
        .id
}

async fn list(
    images: &mut ImagesClient<Channel>,
    filters: &[&str],
) -> Vec<berth_api::v1::ImageSummary> {
    images
        .list(ListImagesRequest {
            all: false,
            filters: filters.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .images
}

async fn progress(
    s: tonic::Response<tonic::Streaming<ImageProgress>>,
) -> Result<Vec<image_progress::Event>, tonic::Status> {
    let mut s = s.into_inner();
    let mut out = Vec::new();
    while let Some(p) = s.next().await {
        out.push(p?.event.expect("an event"));
    }
    Ok(out)
}

fn entries(tar: &[u8]) -> Vec<String> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .try_into()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_list_inspect_tag_remove_and_a_save_load_round_trip() {
    let d = Daemon::start().await;
    let mut images = d.images().await;
    let mut system = d.system().await;
    let t0 = now_nanos();

    let tar = busybox_tar();
    let id = import(&mut images, "local/busybox:v1", &tar).await;
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let rows = list(&mut images, &[]).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].id, id);
    assert_eq!(rows[0].repo_tags, ["local/busybox:v1"]);
    assert!(rows[0].size > 0, "{rows:?}");
    assert_eq!(rows[0].containers, 0);

    let doc = images
        .inspect(InspectImageRequest {
            reference: "local/busybox:v1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .json;
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    // By id prefix too.
    let by_id = images
        .inspect(InspectImageRequest {
            reference: id["sha256:".len().."sha256:".len() + 12].into(),
        })
        .await
        .unwrap();
    assert!(by_id.into_inner().json.contains(&id));
    let missing = images
        .inspect(InspectImageRequest {
            reference: "nosuch:latest".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    assert!(missing.message().contains("nosuch"), "{missing:?}");

    // Tag: two names, one row.
    let tagged = images
        .tag(TagRequest {
            source: "local/busybox:v1".into(),
            target: "local/busybox:v2".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .target;
    assert_eq!(tagged, "docker.io/local/busybox:v2");
    let bad = images
        .tag(TagRequest {
            source: "local/busybox:v1".into(),
            target: "Bad Name".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let rows = list(&mut images, &[]).await;
    assert_eq!(rows.len(), 1);
    let mut tags = rows[0].repo_tags.clone();
    tags.sort();
    assert_eq!(tags, ["local/busybox:v1", "local/busybox:v2"]);
    assert_eq!(
        list(&mut images, &["reference=local/busybox:v2"])
            .await
            .len(),
        1
    );
    assert_eq!(list(&mut images, &["reference=local/*"]).await.len(), 1);
    assert!(list(&mut images, &["reference=alpine"]).await.is_empty());
    assert!(list(&mut images, &["dangling=true"]).await.is_empty());
    let bad_filter = images
        .list(ListImagesRequest {
            all: false,
            filters: vec!["colour=red".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(bad_filter.code(), tonic::Code::InvalidArgument);

    // Removing one of two names only untags.
    let r = images
        .remove(RemoveImageRequest {
            reference: "local/busybox:v2".into(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.untagged, ["local/busybox:v2"]);
    assert!(r.deleted.is_empty(), "{r:?}");

    // Save streams a tar that is both an OCI layout and a docker-archive.
    let mut s = images
        .save(SaveRequest {
            references: vec!["local/busybox:v1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut archive = Vec::new();
    let mut chunks = 0;
    while let Some(c) = s.next().await {
        archive.extend(c.unwrap().data);
        chunks += 1;
    }
    assert!(chunks > 1, "a busybox archive spans several chunks");
    let names = entries(&archive);
    for want in ["oci-layout", "index.json", "manifest.json"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let unknown = images
        .save(SaveRequest {
            references: vec!["nosuch".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Remove the last name: the image goes.
    let r = images
        .remove(RemoveImageRequest {
            reference: "local/busybox:v1".into(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.untagged, ["local/busybox:v1"]);
    assert_eq!(r.deleted, std::slice::from_ref(&id));
    assert!(r.space_reclaimed > 0, "{r:?}");
    assert!(list(&mut images, &[]).await.is_empty());

    // Load it back from the saved archive, streamed in pieces.
    let pieces: Vec<Chunk> = archive
        .chunks(77_777)
        .map(|c| Chunk { data: c.to_vec() })
        .collect();
    let loaded = images
        .load(futures_util::stream::iter(pieces))
        .await
        .unwrap()
        .into_inner()
        .loaded;
    assert_eq!(loaded, ["local/busybox:v1"]);
    let rows = list(&mut images, &[]).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, id);
    // Not an archive: refused with the library's message.
    let junk = images
        .load(futures_util::stream::iter(vec![Chunk {
            data: b"this is not a tar archive at all".repeat(40),
        }]))
        .await
        .unwrap_err();
    assert_eq!(junk.code(), tonic::Code::InvalidArgument, "{junk:?}");

    // Import protocol errors.
    let no_request = images
        .import(futures_util::stream::iter(vec![ImportChunk {
            msg: Some(import_chunk::Msg::Data(tar[..512].to_vec())),
        }]))
        .await
        .unwrap_err();
    assert_eq!(no_request.code(), tonic::Code::InvalidArgument);
    assert!(
        no_request.message().contains("first message"),
        "{no_request:?}"
    );
    let bad_ref = images
        .import(futures_util::stream::iter(vec![ImportChunk {
            msg: Some(import_chunk::Msg::Request(ImportRequest {
                reference: "UPPER/case".into(),
                ..ImportRequest::default()
            })),
        }]))
        .await
        .unwrap_err();
    assert_eq!(bad_ref.code(), tonic::Code::InvalidArgument, "{bad_ref:?}");

    // An unnamed import is dangling; prune removes it and keeps the named one.
    let mut other = tar.clone();
    // A different layer: append one more file to the tar (before its end blocks).
    {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        let mut h = tar::Header::new_ustar();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, "etc/other", &b"other\n"[..]).unwrap();
        let extra = b.into_inner().unwrap();
        let end = other.len() - 1024;
        other.truncate(end);
        other.extend(extra);
    }
    let dangling = import(&mut images, "", &other).await;
    assert_ne!(dangling, id);
    let d_rows = list(&mut images, &["dangling=true"]).await;
    assert_eq!(d_rows.len(), 1, "{d_rows:?}");
    assert_eq!(d_rows[0].id, dangling);
    let pruned = images
        .prune(PruneImagesRequest { all: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pruned.deleted, std::slice::from_ref(&dangling));
    let rows = list(&mut images, &[]).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, id);

    // System: version, info, df see the same store.
    let v = system
        .version(VersionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.api_version, berth_api::API_VERSION);
    assert!(!v.version.is_empty() && !v.kernel_version.is_empty());
    let info: serde_json::Value =
        serde_json::from_str(&system.info(InfoRequest {}).await.unwrap().into_inner().json)
            .unwrap();
    assert_eq!(info["Images"], 1, "{info}");
    assert_eq!(info["Containers"], 0, "{info}");
    assert!(["overlayfs", "native"].contains(&info["Driver"].as_str().unwrap()));
    assert_eq!(info["LoggingDriver"], "json-file");
    assert!(info["NCPU"].as_u64().unwrap() >= 1);
    assert_eq!(info["ID"].as_str().unwrap().len(), 36);
    let df = system.df(DfRequest {}).await.unwrap().into_inner().rows;
    let kinds: Vec<&str> = df.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["Images", "Containers", "Local Volumes", "Build Cache"]
    );
    assert_eq!(df[0].total, 1);
    assert!(df[0].size > 0 && df[0].reclaimable == df[0].size, "{df:?}");

    // Every step above was announced on the event bus.
    let mut events = system
        .events(EventsRequest {
            filters: vec!["type=image".into()],
            since_unix_nanos: t0,
            until_unix_nanos: now_nanos(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut actions = Vec::new();
    while let Some(e) = events.next().await {
        let e = e.unwrap();
        assert_eq!(e.r#type, "image");
        assert_eq!(e.namespace, "default");
        actions.push(e.action);
    }
    for want in ["import", "tag", "untag", "delete", "load"] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
    // Another namespace sees none of it.
    let mut other_ns = d.images().await;
    let req = berth_api::with_namespace(
        tonic::Request::new(ListImagesRequest::default()),
        "elsewhere",
    );
    assert!(
        other_ns
            .list(req)
            .await
            .unwrap()
            .into_inner()
            .images
            .is_empty()
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_registry_then_pull_into_another_daemon_streams_progress() {
    let reg = Registry::start(Auth::None);
    let a = Daemon::start().await;
    let b = Daemon::start().await;
    let mut images_a = a.images().await;
    let id = import(&mut images_a, "local/busybox:v1", &busybox_tar()).await;
    let remote = format!("{}/c2/busybox:v1", reg.addr());
    images_a
        .tag(TagRequest {
            source: "local/busybox:v1".into(),
            target: remote.clone(),
        })
        .await
        .unwrap();
    let pushed = progress(
        images_a
            .push(PushRequest {
                reference: remote.clone(),
            })
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(
        pushed
            .iter()
            .any(|p| matches!(p, image_progress::Event::Pushed(b) if b.how == "pushed")),
        "{pushed:?}"
    );
    let Some(image_progress::Event::Done(done)) = pushed.last() else {
        panic!("push ends with done: {pushed:?}");
    };
    assert_eq!(done.name, remote);
    // A fresh daemon pulls it, watching the layers arrive.
    let mut images_b = b.images().await;
    let mut events = b
        .system()
        .await
        .events(EventsRequest {
            filters: vec!["event=pull".into()],
            ..EventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let pulled = progress(
        images_b
            .pull(PullRequest {
                reference: remote.clone(),
                platform: String::new(),
            })
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(
        matches!(&pulled[0], image_progress::Event::Resolved(r) if r.repository == "c2/busybox" && r.reference == "v1"),
        "{pulled:?}"
    );
    let status_of = |evs: &[image_progress::Event], s: &str| {
        evs.iter()
            .filter(|p| matches!(p, image_progress::Event::Layer(l) if l.status == s))
            .count()
    };
    assert_eq!(status_of(&pulled, "waiting"), 1, "{pulled:?}");
    assert_eq!(status_of(&pulled, "done"), 1, "{pulled:?}");
    assert!(status_of(&pulled, "downloading") >= 1, "{pulled:?}");
    let Some(image_progress::Event::Done(done)) = pulled.last() else {
        panic!("pull ends with done: {pulled:?}");
    };
    assert_eq!(done.name, remote);
    let rows = list(&mut images_b, &[]).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, id, "the same image id on both sides");
    let e = events.next().await.unwrap().unwrap();
    assert_eq!((e.r#type.as_str(), e.action.as_str()), ("image", "pull"));

    // Again: every layer is already there.
    let again = progress(
        images_b
            .pull(PullRequest {
                reference: remote.clone(),
                platform: String::new(),
            })
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&again, "exists"), 1, "{again:?}");
    assert_eq!(status_of(&again, "downloading"), 0, "{again:?}");

    // Errors: an unknown tag ends the stream with NotFound; a bad reference or platform is
    // refused before any stream.
    let missing = progress(
        images_b
            .pull(PullRequest {
                reference: format!("{}/c2/busybox:nope", reg.addr()),
                platform: String::new(),
            })
            .await
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let bad = images_b
        .pull(PullRequest {
            reference: "Not A Reference".into(),
            platform: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let bad = images_b
        .pull(PullRequest {
            reference: remote.clone(),
            platform: "linux".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // An open event stream would hold the graceful shutdown.
    drop(events);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_a_container_uses_is_removed_only_by_force_and_system_prune_takes_both() {
    let d = Daemon::start().await;
    let mut images = d.images().await;
    let mut system = d.system().await;
    let mut containers = ContainersClient::new(d.channel().await);
    let id = import(&mut images, "local/busybox:v1", &busybox_tar()).await;
    let cid = containers
        .create(CreateContainerRequest {
            config: Some(ContainerConfig {
                image: "local/busybox:v1".into(),
                cmd: vec!["true".into()],
                ..ContainerConfig::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .id;

    let rows = list(&mut images, &[]).await;
    assert_eq!(rows[0].containers, 1, "{rows:?}");
    let refused = images
        .remove(RemoveImageRequest {
            reference: "local/busybox:v1".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        format!(
            "conflict: unable to remove repository reference \"local/busybox:v1\" (must force) - container {} is using its referenced image {}",
            &cid[..12],
            &id[7..19]
        )
    );
    let by_id = images
        .remove(RemoveImageRequest {
            reference: id[7..19].into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert!(
        by_id
            .message()
            .contains("is being used by stopped container"),
        "{by_id:?}"
    );
    // Another name can come and go freely.
    images
        .tag(TagRequest {
            source: "local/busybox:v1".into(),
            target: "local/busybox:v2".into(),
        })
        .await
        .unwrap();
    images
        .remove(RemoveImageRequest {
            reference: "local/busybox:v2".into(),
            force: false,
        })
        .await
        .unwrap();

    let info: serde_json::Value =
        serde_json::from_str(&system.info(InfoRequest {}).await.unwrap().into_inner().json)
            .unwrap();
    assert_eq!(info["Containers"], 1, "{info}");
    assert_eq!(info["ContainersStopped"], 1, "{info}");
    let df = system.df(DfRequest {}).await.unwrap().into_inner().rows;
    assert_eq!(
        (df[0].total, df[0].active, df[0].reclaimable),
        (1, 1, 0),
        "{df:?}"
    );
    assert_eq!((df[1].total, df[1].active), (1, 0), "{df:?}");
    // Image prune -a keeps what a container uses.
    let kept = images
        .prune(PruneImagesRequest { all: true })
        .await
        .unwrap()
        .into_inner();
    assert!(
        kept.deleted.is_empty() && kept.untagged.is_empty(),
        "{kept:?}"
    );

    // System prune -a: the stopped container, then its image.
    let pruned = system
        .prune(SystemPruneRequest {
            all: true,
            volumes: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pruned.containers_deleted, std::slice::from_ref(&cid));
    assert!(pruned.images_deleted.contains(&id), "{pruned:?}");
    assert!(list(&mut images, &[]).await.is_empty());
    d.stop().await;
}
