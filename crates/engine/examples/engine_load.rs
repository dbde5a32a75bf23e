//! Measure berthd through its API (a development tool; bench/ has the real benchmarks).
//!
//! ```text
//! engine_load import ROOT            # import a busybox image as busybox:latest into ROOT
//! engine_load run SOCKET N           # N x `run --rm busybox true`: median and p90 of the whole path
//! engine_load fill SOCKET N          # start N `sleep` containers (detached)
//! engine_load ps SOCKET N            # N x List (all), median
//! engine_load clean SOCKET           # force-remove every container
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use berth_api::v1::containers_client::ContainersClient;
use berth_api::v1::tasks_client::TasksClient;
use berth_api::v1::{
    AttachStart, ContainerConfig, ContainerRef, CreateContainerRequest, IoIn,
    ListContainersRequest, RemoveContainerRequest, WaitRequest, io_in,
};
use tokio_stream::wrappers::ReceiverStream;

fn cfg(cmd: &[&str], rm: bool) -> ContainerConfig {
    ContainerConfig {
        image: "busybox:latest".into(),
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        network_mode: "none".into(),
        auto_remove: rm,
        ..Default::default()
    }
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: n={} median={:.2} ms p90={:.2} ms min={:.2} ms",
        v.len(),
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(v[0])
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or_default();
    if mode == "import" {
        let fs = tempfile::tempdir().expect("tempdir");
        berth_testutil::busybox_rootfs(fs.path());
        let mut tarball = Vec::new();
        {
            let mut b = tar::Builder::new(&mut tarball);
            b.follow_symlinks(false);
            b.append_dir_all(".", fs.path()).expect("tar");
            b.finish().expect("tar");
        }
        let svc = berth_image::ImageService::open(
            Path::new(&args[1]),
            "default",
            berth_registry::Config::default(),
            berth_store::SnapshotterKind::Auto,
        )
        .expect("open store");
        svc.import(tarball.as_slice(), Some("busybox:latest"), None)
            .expect("import");
        return;
    }
    let ch = berth_api::connect(Path::new(&args[1]))
        .await
        .expect("connect");
    let mut c = ContainersClient::new(ch.clone());
    let mut t = TasksClient::new(ch);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    match mode {
        "run" => {
            let mut times = Vec::new();
            let mut phases = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..n {
                let t0 = Instant::now();
                let id = c
                    .create(CreateContainerRequest {
                        config: Some(cfg(&["true"], true)),
                    })
                    .await
                    .expect("create")
                    .into_inner()
                    .id;
                let t1 = Instant::now();
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tx.send(IoIn {
                    msg: Some(io_in::Msg::Attach(AttachStart {
                        id: id.clone(),
                        stdout: true,
                        stderr: true,
                        ..Default::default()
                    })),
                })
                .await
                .unwrap();
                let mut out = t
                    .attach(ReceiverStream::new(rx))
                    .await
                    .expect("attach")
                    .into_inner();
                out.message().await.expect("ready");
                let t2 = Instant::now();
                let mut tw = t.clone();
                let wid = id.clone();
                let waiter = tokio::spawn(async move {
                    tw.wait(WaitRequest {
                        id: wid,
                        condition: "removed".into(),
                    })
                    .await
                });
                t.start(ContainerRef { id: id.clone() })
                    .await
                    .expect("start");
                let t3 = Instant::now();
                while out.message().await.expect("stream").is_some() {}
                waiter.await.unwrap().expect("wait");
                let t4 = Instant::now();
                drop(tx);
                times.push(t4 - t0);
                phases[0].push(t1 - t0);
                phases[1].push(t2 - t1);
                phases[2].push(t3 - t2);
                phases[3].push(t4 - t3);
            }
            report("run --rm true (create..removed)", times);
            for (name, v) in ["create", "attach", "start", "exit+remove"]
                .iter()
                .zip(phases)
            {
                report(&format!("  {name}"), v);
            }
        }
        "fill" => {
            let t0 = Instant::now();
            for _ in 0..n {
                let id = c
                    .create(CreateContainerRequest {
                        config: Some(cfg(&["sleep", "100000"], false)),
                    })
                    .await
                    .expect("create")
                    .into_inner()
                    .id;
                t.start(ContainerRef { id }).await.expect("start");
            }
            println!(
                "started {n} containers in {:.2} s",
                t0.elapsed().as_secs_f64()
            );
        }
        "ps" => {
            let mut times = Vec::new();
            let mut count = 0;
            for _ in 0..n {
                let t0 = Instant::now();
                count = c
                    .list(ListContainersRequest {
                        all: true,
                        ..Default::default()
                    })
                    .await
                    .expect("list")
                    .into_inner()
                    .containers
                    .len();
                times.push(t0.elapsed());
            }
            report(&format!("List of {count} containers"), times);
        }
        "clean" => {
            let all = c
                .list(ListContainersRequest {
                    all: true,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
                .containers;
            let t0 = Instant::now();
            for s in &all {
                c.remove(RemoveContainerRequest {
                    id: s.id.clone(),
                    force: true,
                    volumes: false,
                })
                .await
                .expect("rm");
            }
            println!(
                "removed {} in {:.2} s",
                all.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        _ => eprintln!("usage: see the source"),
    }
}
