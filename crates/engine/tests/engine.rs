//! berthd end to end through its gRPC API: a real daemon (the `berthd` binary next to this test's
//! target directory, with `berth-shim` beside it) on a temporary root holding a busybox image
//! imported from a root filesystem tarball. Root only; never skipped; every test removes its
//! containers, mounts, cgroups and processes in a Drop guard, even when it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_api::v1::containers_client::ContainersClient;
use berth_api::v1::images_client::ImagesClient;
use berth_api::v1::tasks_client::TasksClient;
use berth_api::v1::{
    AttachStart, ContainerConfig, ContainerRef, CreateContainerRequest, ExecStart, IoIn,
    KillRequest, ListContainersRequest, RemoveContainerRequest, RemoveImageRequest, RestartPolicy,
    StopRequest, TopRequest, WaitRequest, io_in, io_out,
};
use berth_api::with_namespace;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const IMAGE: &str = "busybox:latest";

/// Where cargo put the binaries: this test runs from `<target>/<profile>/deps/`.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (cargo build --bins, as scripts/test.sh does)",
        p.display()
    );
    p
}

/// A daemon on a temporary root; Drop kills it and removes everything it made.
struct Env {
    root: PathBuf,
    _tmp: tempfile::TempDir,
    daemon: Option<Child>,
    ns: String,
    /// Dropped after `Drop::drop` has stopped the daemon and removed its containers.
    _cgroups: berth_testutil::host::BerthCgroups,
}

impl Env {
    fn new() -> Env {
        berth_testutil::require_root();
        let tmp = tempfile::Builder::new()
            .prefix("berth-engine-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let root = tmp.path().join("root");
        import_busybox(&root);
        let mut env = Env {
            root,
            _tmp: tmp,
            daemon: None,
            ns: "default".into(),
            _cgroups: berth_testutil::host::berth_cgroups(),
        };
        env.start_daemon();
        env
    }

    fn state(&self) -> PathBuf {
        self.root.join("run")
    }

    fn socket(&self) -> PathBuf {
        self.state().join("berth.sock")
    }

    fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("berthd.log"))
            .expect("open daemon log");
        std::fs::write(self.root.join("berthd.toml"), "").expect("write config");
        let child = Command::new(bin("berthd"))
            .arg("--root")
            .arg(&self.root)
            .arg("--config")
            .arg(self.root.join("berthd.toml"))
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env_remove("BERTH_HOST")
            .spawn()
            .expect("spawn berthd");
        self.daemon = Some(child);
        // The daemon is ready once its socket accepts.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(d) = self.daemon.as_mut() {
                if let Ok(Some(st)) = d.try_wait() {
                    panic!("berthd exited with {st}: {}", self.daemon_log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "berthd did not listen: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.root.join("berthd.log")).unwrap_or_default()
    }

    fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("berthd is running").id()
    }

    fn kill9_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    async fn clients(&self) -> (ContainersClient<Channel>, TasksClient<Channel>) {
        let ch = berth_api::connect(&self.socket()).await.expect("connect");
        (ContainersClient::new(ch.clone()), TasksClient::new(ch))
    }

    fn req<T>(&self, t: T) -> tonic::Request<T> {
        with_namespace(tonic::Request::new(t), &self.ns)
    }

    fn no_leftovers(&self, ids: &[String]) {
        let root = self.root.to_string_lossy().into_owned();
        let mounts: Vec<String> = berth_testutil::host::mounts_containing(&root);
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        // The daemon's idle standby shim (`berth-standby`) is not a leftover, nor is one it is
        // spawning right now (its child, named `berth-shim` until it renames itself): the
        // refill after a use starts once the daemon is idle, which is when this runs.
        let daemon = self.daemon.as_ref().map(|d| d.id());
        let shims: Vec<u32> = berth_testutil::host::processes_with(&format!("{root}/run/shims"))
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() != "berth-standby")
                    && (daemon.is_none() || parent_of(*p) != daemon)
            })
            .collect();
        assert!(shims.is_empty(), "processes left: {shims:?}");
        for id in ids {
            let cg = berth_testutil::host::cgroup_dirs_named(id);
            assert!(cg.is_empty(), "cgroups left: {cg:?}");
            assert!(
                !self.state().join("shims").join(id).exists(),
                "bundle of {id} left"
            );
            assert!(
                !self.root.join("containers").join(id).exists(),
                "record of {id} left"
            );
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill9_daemon();
        let shims = self.state().join("shims");
        let mut ids = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&shims) {
            for e in rd.flatten() {
                ids.push(e.file_name().to_string_lossy().into_owned());
                if let Ok(c) = berth_shim::connect(&e.path()) {
                    let _ = c.delete();
                }
            }
        }
        let root = self.root.to_string_lossy().into_owned();
        berth_testutil::host::let_standby_shims_finish(&root);
        for pid in berth_testutil::host::processes_with(&root) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let mut mounts = berth_testutil::host::mounts_containing(&root);
        mounts.reverse();
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        for id in ids {
            for d in berth_testutil::host::cgroup_dirs_named(&id) {
                let _ = std::fs::remove_dir(&d);
            }
        }
    }
}

fn import_busybox(root: &Path) {
    let fs = tempfile::tempdir().expect("tempdir");
    berth_testutil::busybox_rootfs(fs.path());
    let mut tarball = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tarball);
        b.follow_symlinks(false);
        b.append_dir_all(".", fs.path()).expect("tar rootfs");
        b.finish().expect("finish tar");
    }
    let svc = berth_image::ImageService::open(
        root,
        "default",
        berth_registry::Config::default(),
        berth_store::SnapshotterKind::Auto,
    )
    .expect("open store");
    svc.import(tarball.as_slice(), Some(IMAGE), None)
        .expect("import busybox");
}

fn config(name: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: IMAGE.into(),
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        network_mode: "none".into(),
        ..Default::default()
    }
}

async fn create(env: &Env, c: &mut ContainersClient<Channel>, cfg: ContainerConfig) -> String {
    c.create(env.req(CreateContainerRequest { config: Some(cfg) }))
        .await
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", env.daemon_log()))
        .into_inner()
        .id
}

/// `rm` (not forced) of a container that must go.
async fn remove(env: &Env, c: &mut ContainersClient<Channel>, id: &str) {
    c.remove(env.req(RemoveContainerRequest {
        id: id.into(),
        ..Default::default()
    }))
    .await
    .unwrap_or_else(|e| panic!("rm {id}: {e:?}\n{}", env.daemon_log()));
}

async fn inspect(env: &Env, c: &mut ContainersClient<Channel>, id: &str) -> serde_json::Value {
    let doc = c
        .inspect(env.req(ContainerRef { id: id.into() }))
        .await
        .expect("inspect")
        .into_inner();
    serde_json::from_str(&doc.json).expect("inspect json")
}

async fn wait(env: &Env, t: &mut TasksClient<Channel>, id: &str, cond: &str) -> i32 {
    t.wait(env.req(WaitRequest {
        id: id.into(),
        condition: cond.into(),
    }))
    .await
    .expect("wait")
    .into_inner()
    .status_code
}

/// Attach (waiting for `ready`), start, collect the output until the stream ends.
async fn attach_and_start(
    env: &Env,
    t: &mut TasksClient<Channel>,
    id: &str,
) -> (String, Option<i32>) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(IoIn {
        msg: Some(io_in::Msg::Attach(AttachStart {
            id: id.into(),
            stdin: false,
            stdout: true,
            stderr: true,
            size: None,
            start: false,
        })),
    })
    .await
    .unwrap();
    let mut out = t
        .attach(env.req(ReceiverStream::new(rx)))
        .await
        .expect("attach")
        .into_inner();
    let first = out.message().await.expect("attach stream").expect("ready");
    assert!(
        matches!(first.msg, Some(io_out::Msg::Ready(_))),
        "{first:?}"
    );
    t.start(env.req(ContainerRef { id: id.into() }))
        .await
        .expect("start");
    let mut text = String::new();
    let mut code = None;
    while let Some(m) = out.message().await.expect("attach stream") {
        match m.msg {
            Some(io_out::Msg::Stdout(b) | io_out::Msg::Stderr(b)) => {
                text.push_str(&String::from_utf8_lossy(&b));
            }
            Some(io_out::Msg::Exit(e)) => code = Some(e.code),
            _ => {}
        }
    }
    drop(tx);
    (text, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_start_attach_wait_exec_and_remove() {
    let env = Env::new();
    let (mut c, mut t) = env.clients().await;

    // Exit code and output through attach.
    let id = create(
        &env,
        &mut c,
        config("first", &["sh", "-c", "echo hello; echo oops >&2; exit 3"]),
    )
    .await;
    assert_eq!(id.len(), 64);
    let (out, code) = attach_and_start(&env, &mut t, &id).await;
    assert_eq!(out, "hello\noops\n");
    assert_eq!(code, Some(3));
    assert_eq!(wait(&env, &mut t, &id, "not-running").await, 3);
    let v = inspect(&env, &mut c, "first").await;
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 3);
    assert_eq!(v["Name"], "/first");
    assert_eq!(v["Path"], "sh");
    assert_eq!(v["Config"]["Image"], IMAGE);

    // Name conflicts.
    let err = c
        .create(env.req(CreateContainerRequest {
            config: Some(config("first", &["true"])),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(
        err.message().contains("is already in use"),
        "{}",
        err.message()
    );

    // Unknown image.
    let mut bad = config("", &["true"]);
    bad.image = "nosuchimage:1".into();
    let err = c
        .create(env.req(CreateContainerRequest { config: Some(bad) }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("image"), "{}", err.message());

    // A command that does not exist: an error carrying 127, nothing left running.
    let nf = create(&env, &mut c, config("notfound", &["/nonexistent"])).await;
    let err = t
        .start(env.req(ContainerRef { id: nf.clone() }))
        .await
        .unwrap_err();
    assert_eq!(
        err.metadata()
            .get(berth_engine::EXIT_CODE_KEY)
            .and_then(|v| v.to_str().ok()),
        Some("127"),
        "{err:?}"
    );

    // A running container: list, exec, top, pause, rm refused, stop.
    let run = create(&env, &mut c, config("sleeper", &["sleep", "1000"])).await;
    t.start(env.req(ContainerRef { id: run.clone() }))
        .await
        .expect("start");
    let list = c
        .list(env.req(ListContainersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.containers.len(), 1);
    assert_eq!(list.containers[0].names, vec!["sleeper"]);
    assert_eq!(list.containers[0].state, "running");
    let all = c
        .list(env.req(ListContainersRequest {
            all: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.containers.len(), 3);

    let (tx, rx) = mpsc::channel(4);
    tx.send(IoIn {
        msg: Some(io_in::Msg::Exec(ExecStart {
            id: "sleeper".into(),
            cmd: vec!["sh".into(), "-c".into(), "echo in-$HOSTNAME; exit 5".into()],
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut s = t
        .exec(env.req(ReceiverStream::new(rx)))
        .await
        .expect("exec")
        .into_inner();
    let mut text = String::new();
    let mut code = None;
    let mut ready = false;
    while let Some(m) = s.message().await.expect("exec stream") {
        match m.msg {
            Some(io_out::Msg::Ready(_)) => ready = true,
            Some(io_out::Msg::Stdout(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            Some(io_out::Msg::Exit(e)) => code = Some(e.code),
            _ => {}
        }
    }
    drop(tx);
    assert!(ready);
    assert_eq!(text, format!("in-{}\n", &run[..12]));
    assert_eq!(code, Some(5));

    let top = t
        .top(env.req(TopRequest {
            id: run.clone(),
            ps_args: vec![],
        }))
        .await
        .expect("top")
        .into_inner();
    assert_eq!(top.titles[1], "PID");
    assert!(
        top.processes
            .iter()
            .any(|p| p.fields[7].contains("sleep 1000")),
        "{top:?}"
    );

    t.pause(env.req(ContainerRef { id: run.clone() }))
        .await
        .expect("pause");
    assert_eq!(
        inspect(&env, &mut c, &run).await["State"]["Status"],
        "paused"
    );
    t.unpause(env.req(ContainerRef { id: run.clone() }))
        .await
        .expect("unpause");
    assert_eq!(
        inspect(&env, &mut c, &run).await["State"]["Status"],
        "running"
    );

    let err = c
        .remove(env.req(RemoveContainerRequest {
            id: "sleeper".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("container is running: stop the container before removing or force remove"),
        "{}",
        err.message()
    );

    // `sleep` as pid 1 has no SIGTERM handler, so the kernel ignores the signal: stop ends
    // with SIGKILL after the timeout (137), as Docker's does.
    t.stop(env.req(StopRequest {
        id: run.clone(),
        timeout_seconds: Some(1),
    }))
    .await
    .expect("stop");
    let v = inspect(&env, &mut c, &run).await;
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 137);

    // Restart brings it back; kill ends it.
    t.restart(env.req(StopRequest {
        id: run.clone(),
        timeout_seconds: Some(1),
    }))
    .await
    .expect("restart");
    assert_eq!(
        inspect(&env, &mut c, &run).await["State"]["Status"],
        "running"
    );
    t.kill(env.req(KillRequest {
        id: run.clone(),
        signal: "KILL".into(),
    }))
    .await
    .expect("kill");
    assert_eq!(wait(&env, &mut t, &run, "").await, 137);
    let err = t
        .kill(env.req(KillRequest {
            id: run.clone(),
            signal: String::new(),
        }))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("is not running"),
        "{}",
        err.message()
    );

    // Force-remove a running one; remove the rest.
    let busy = create(&env, &mut c, config("busy", &["sleep", "1000"])).await;
    t.start(env.req(ContainerRef { id: busy.clone() }))
        .await
        .expect("start");
    for id in [&busy, &id, &nf, &run] {
        c.remove(env.req(RemoveContainerRequest {
            id: id.clone(),
            force: true,
            volumes: false,
        }))
        .await
        .unwrap_or_else(|e| panic!("rm {id}: {e:?}"));
    }
    let err = c
        .inspect(env.req(ContainerRef { id: "first".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    env.no_leftovers(&[busy, id, nf, run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_and_auto_remove() {
    let env = Env::new();
    let (mut c, mut t) = env.clients().await;

    let mut cfg = config("flaky", &["sh", "-c", "exit 1"]);
    cfg.restart = Some(RestartPolicy {
        name: "on-failure".into(),
        maximum_retry_count: 2,
    });
    let flaky = create(&env, &mut c, cfg).await;
    t.start(env.req(ContainerRef { id: flaky.clone() }))
        .await
        .expect("start");
    // not-running waits through the restarts to the final exit.
    assert_eq!(wait(&env, &mut t, &flaky, "not-running").await, 1);
    let v = inspect(&env, &mut c, &flaky).await;
    assert_eq!(v["RestartCount"], 2, "{v}");
    assert_eq!(v["State"]["Status"], "exited");

    let mut cfg = config("", &["sh", "-c", "exit 4"]);
    cfg.auto_remove = true;
    let gone = create(&env, &mut c, cfg).await;
    // Wait "removed" before start, as `run --rm` does.
    let mut t2 = t.clone();
    let req = env.req(WaitRequest {
        id: gone.clone(),
        condition: "removed".into(),
    });
    let waiter = tokio::spawn(async move { t2.wait(req).await });
    tokio::task::yield_now().await;
    t.start(env.req(ContainerRef { id: gone.clone() }))
        .await
        .expect("start");
    let code = waiter.await.unwrap().expect("wait removed").into_inner();
    assert_eq!(code.status_code, 4);
    let err = c
        .inspect(env.req(ContainerRef { id: gone.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    remove(&env, &mut c, &flaky).await;
    env.no_leftovers(&[flaky, gone]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_restore_after_kill9() {
    let mut env = Env::new();
    let (mut c, mut t) = env.clients().await;
    let waiter = create(
        &env,
        &mut c,
        config(
            "waiter",
            &[
                "sh",
                "-c",
                "echo before; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after; exit 7",
            ],
        ),
    )
    .await;
    // A shell that handles SIGTERM, so stop ends it with the stop signal.
    let sleeper = create(
        &env,
        &mut c,
        config(
            "sleeper",
            &[
                "sh",
                "-c",
                "trap 'exit 143' TERM; while true; do sleep 0.1; done",
            ],
        ),
    )
    .await;
    for id in [&waiter, &sleeper] {
        t.start(env.req(ContainerRef { id: id.clone() }))
            .await
            .expect("start");
    }
    let log = env
        .root
        .join("containers")
        .join(&waiter)
        .join(format!("{waiter}-json.log"));
    drop((c, t));
    env.kill9_daemon();

    // While no daemon runs, the container goes on and logs.
    std::fs::write(
        env.state()
            .join("shims")
            .join(&waiter)
            .join("rootfs/tmp/go"),
        b"",
    )
    .expect("signal the container");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("after")
    {
        assert!(
            Instant::now() < deadline,
            "the container did not log while berthd was down"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    env.start_daemon();
    let (mut c, mut t) = env.clients().await;
    assert_eq!(wait(&env, &mut t, &waiter, "not-running").await, 7);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("before") && text.contains("after"), "{text}");
    let v = inspect(&env, &mut c, &sleeper).await;
    assert_eq!(v["State"]["Status"], "running", "{v}");
    // The re-attached container is fully controllable.
    t.stop(env.req(StopRequest {
        id: sleeper.clone(),
        timeout_seconds: Some(10),
    }))
    .await
    .expect("stop after restore");
    assert_eq!(wait(&env, &mut t, &sleeper, "").await, 143);
    for id in [&waiter, &sleeper] {
        remove(&env, &mut c, id).await;
    }
    env.no_leftovers(&[waiter, sleeper]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_removes_half_created_and_reaps_dead_shims() {
    let mut env = Env::new();
    let (mut c, mut t) = env.clients().await;
    let half = create(&env, &mut c, config("half", &["true"])).await;
    let dead = create(&env, &mut c, config("dead", &["sleep", "1000"])).await;
    t.start(env.req(ContainerRef { id: dead.clone() }))
        .await
        .expect("start");
    drop((c, t));
    env.kill9_daemon();

    // As if berthd had died in the middle of creating `half`.
    let rec_path = env
        .root
        .join("containers")
        .join(&half)
        .join("container.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
    rec["complete"] = false.into();
    std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    // And as if the shim of `dead` had been killed with its container.
    let shim_pid: i32 =
        std::fs::read_to_string(env.state().join("shims").join(&dead).join("shim.pid"))
            .expect("shim.pid")
            .trim()
            .parse()
            .unwrap();
    let _ = Command::new("kill")
        .arg("-9")
        .arg(shim_pid.to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{shim_pid}")).exists() {
        assert!(Instant::now() < deadline, "shim did not die");
        std::thread::sleep(Duration::from_millis(10));
    }

    env.start_daemon();
    let (mut c, mut t) = env.clients().await;
    let err = c
        .inspect(env.req(ContainerRef { id: half.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_ne!(wait(&env, &mut t, &dead, "").await, 0);
    let v = inspect(&env, &mut c, &dead).await;
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    remove(&env, &mut c, &dead).await;
    env.no_leftovers(&[half, dead]);
}

/// The numbered snapshot directories of the store (layers and containers' writable layers).
fn snapshot_dirs(root: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(root.join("snapshots"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_snapshot_serves_the_next_create_and_is_never_left_behind() {
    let mut env = Env::new();
    let layers = snapshot_dirs(&env.root);
    assert!(!layers.is_empty());
    let (mut c, _t) = env.clients().await;
    // Once the daemon is idle after a create, the next container's snapshot is prepared.
    let first = create(&env, &mut c, config("first", &["true"])).await;
    let spares_ready = |env: &Env| env.daemon_log().matches("spare snapshot default/").count();
    until("a spare snapshot is prepared", || spares_ready(&env) == 1);
    assert_eq!(snapshot_dirs(&env.root).len(), layers.len() + 2);
    let spare = *snapshot_dirs(&env.root).last().unwrap();
    // The next create of that image takes it: its root file system is the spare's.
    let second = create(&env, &mut c, config("second", &["true"])).await;
    let rootfs = env.state().join("shims").join(&second).join("rootfs");
    let upper = env
        .root
        .join("snapshots")
        .join(spare.to_string())
        .join("fs");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounted
        .lines()
        .find(|l| l.contains(rootfs.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} is not mounted", rootfs.display()));
    assert!(
        line.contains(&format!("upperdir={}", upper.display())),
        "not the spare {}: {line}",
        upper.display()
    );
    until("the next spare is prepared", || spares_ready(&env) == 2);
    assert_eq!(snapshot_dirs(&env.root).len(), layers.len() + 3);

    // A daemon killed with a spare ready leaves it to the next boot, which removes it.
    drop(c);
    env.kill9_daemon();
    env.start_daemon();
    until("boot removed the spare", || {
        snapshot_dirs(&env.root).len() == layers.len() + 2
    });
    let (mut c, _t) = env.clients().await;
    for id in [&first, &second] {
        remove(&env, &mut c, id).await;
    }
    // A spare holds its image's layers like a container: removing the image drops it.
    let third = create(&env, &mut c, config("third", &["true"])).await;
    until("a spare snapshot is prepared", || spares_ready(&env) == 3);
    remove(&env, &mut c, &third).await;
    let ch = berth_api::connect(&env.socket()).await.expect("connect");
    ImagesClient::new(ch)
        .remove(env.req(RemoveImageRequest {
            reference: IMAGE.into(),
            force: false,
        }))
        .await
        .unwrap_or_else(|e| panic!("rmi: {e:?}\n{}", env.daemon_log()));
    assert_eq!(snapshot_dirs(&env.root), Vec::<u64>::new(), "all freed");
    env.no_leftovers(&[first, second, third]);
}

fn tar_of(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    for (name, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Symlink);
        b.append_link(&mut h, name, target).unwrap();
    }
    b.into_inner().unwrap()
}

async fn copy_from(
    env: &Env,
    c: &mut ContainersClient<Channel>,
    id: &str,
    path: &str,
) -> Result<Vec<(String, Vec<u8>)>, tonic::Status> {
    let mut s = c
        .copy_from(env.req(berth_api::v1::CopyFromRequest {
            id: id.into(),
            path: path.into(),
        }))
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = s.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(bytes.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((name, data));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_copy_and_stats() {
    let env = Env::new();
    let (mut c, mut t) = env.clients().await;
    let id = create(
        &env,
        &mut c,
        config("logger", &["sh", "-c", "echo one; echo two >&2"]),
    )
    .await;
    t.start(env.req(ContainerRef { id: id.clone() }))
        .await
        .expect("start");
    assert_eq!(wait(&env, &mut t, &id, "").await, 0);

    // The json-file log, read back through Logs.
    let mut s = c
        .logs(env.req(berth_api::v1::LogsRequest {
            id: id.clone(),
            follow: false,
            tail: -1,
            stdout: true,
            stderr: true,
            ..Default::default()
        }))
        .await
        .expect("logs")
        .into_inner();
    let mut got = Vec::new();
    while let Some(e) = s.message().await.expect("logs stream") {
        got.push((e.stream, String::from_utf8_lossy(&e.data).into_owned()));
    }
    assert_eq!(got, vec![(1, "one\n".to_owned()), (2, "two\n".to_owned())]);

    // Copy into and out of the (stopped) container's root filesystem.
    let (tx, rx) = mpsc::channel(4);
    tx.send(berth_api::v1::CopyToChunk {
        msg: Some(berth_api::v1::copy_to_chunk::Msg::Request(
            berth_api::v1::CopyToRequest {
                id: id.clone(),
                path: "/tmp".into(),
            },
        )),
    })
    .await
    .unwrap();
    tx.send(berth_api::v1::CopyToChunk {
        msg: Some(berth_api::v1::copy_to_chunk::Msg::Data(tar_of(
            &[("hello.txt", b"hi there\n")],
            &[("esc", "/../../../../../etc")],
        ))),
    })
    .await
    .unwrap();
    drop(tx);
    c.copy_to(env.req(ReceiverStream::new(rx)))
        .await
        .expect("copy to");
    let files = copy_from(&env, &mut c, &id, "/tmp/hello.txt")
        .await
        .expect("copy from");
    assert_eq!(
        files,
        vec![("hello.txt".to_owned(), b"hi there\n".to_vec())]
    );
    // A symlink that points "outside" resolves inside the container's root.
    let files = copy_from(&env, &mut c, &id, "/tmp/esc/passwd")
        .await
        .expect("copy via symlink");
    assert_eq!(files.len(), 1);
    let text = String::from_utf8_lossy(&files[0].1).into_owned();
    assert!(
        text.contains("user:x:1000:1000"),
        "not the container's passwd: {text}"
    );
    let err = copy_from(&env, &mut c, &id, "/nonexistent")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Stats of a running container.
    let run = create(&env, &mut c, config("stats", &["sleep", "1000"])).await;
    t.start(env.req(ContainerRef { id: run.clone() }))
        .await
        .expect("start");
    let mut s = t
        .stats(env.req(berth_api::v1::StatsRequest {
            id: run.clone(),
            stream: false,
        }))
        .await
        .expect("stats")
        .into_inner();
    let sample = s
        .message()
        .await
        .expect("stats stream")
        .expect("one sample");
    assert!(s.message().await.expect("stats end").is_none());
    assert_eq!(sample.name, "stats");
    assert!(sample.memory_usage > 0, "{sample:?}");
    assert_eq!(sample.pids, 1, "{sample:?}");
    assert!(sample.online_cpus >= 1);

    for x in [&id, &run] {
        c.remove(env.req(RemoveContainerRequest {
            id: x.clone(),
            force: true,
            volumes: false,
        }))
        .await
        .expect("rm");
    }
    env.no_leftovers(&[id, run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_root_or_socket_is_refused() {
    let env = Env::new();
    let out = Command::new(bin("berthd"))
        .arg("--root")
        .arg(&env.root)
        .arg("--config")
        .arg(env.root.join("berthd.toml"))
        .output()
        .expect("run berthd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another berthd"), "{err}");
    // Another root, same socket.
    let other = tempfile::Builder::new()
        .prefix("berth-engine-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let out = Command::new(bin("berthd"))
        .arg("--root")
        .arg(other.path())
        .arg("--host")
        .arg(format!("unix://{}", env.socket().display()))
        .arg("--config")
        .arg(env.root.join("berthd.toml"))
        .output()
        .expect("run berthd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serving"), "{err}");
    // The first daemon still answers.
    let (mut c, _) = env.clients().await;
    c.list(env.req(ListContainersRequest::default()))
        .await
        .expect("list");
}

/// `kill -9` of berthd while starts are in flight (shims being spawned, containers being
/// created by the runtime): after a restart every container is either running under a shim
/// the daemon supervises or not running with no shim, and removing them all leaves no shim,
/// mount, cgroup, bundle or record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_starts_leaves_a_consistent_state() {
    let mut env = Env::new();
    let (mut c, t) = env.clients().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(create(&env, &mut c, config(&format!("s{i}"), &["sleep", "1000"])).await);
    }
    // Start them all at once; kill berthd as soon as the first shim exists, so the others
    // are somewhere between "not begun" and "running".
    let mut starts = Vec::new();
    for id in &ids {
        let mut t = t.clone();
        let req = env.req(ContainerRef { id: id.clone() });
        starts.push(tokio::spawn(async move { t.start(req).await }));
    }
    let shims = env.state().join("shims");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ids
        .iter()
        .any(|id| shims.join(id).join("shim.pid").exists())
    {
        assert!(Instant::now() < deadline, "no shim ever started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    env.kill9_daemon();
    for s in starts {
        let _ = s.await;
    }
    drop((c, t));

    env.start_daemon();
    let (mut c, _t) = env.clients().await;
    let root = env.root.to_string_lossy().into_owned();
    let mut running = 0;
    for id in &ids {
        let v = inspect(&env, &mut c, id).await;
        let status = v["State"]["Status"].as_str().unwrap_or_default().to_owned();
        assert!(
            ["running", "created", "exited"].contains(&status.as_str()),
            "{id}: {status}"
        );
        let pid_file = shims.join(id).join("shim.pid");
        let shim_alive = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        assert_eq!(
            status == "running",
            shim_alive,
            "{id} is {status} but its shim is {}",
            if shim_alive { "alive" } else { "gone" }
        );
        running += usize::from(status == "running");
    }
    // No shim runs that the daemon does not know as running. A child of the new daemon is
    // one it is spawning right now: its standby shim is named `berth-shim` from its exec
    // until it renames itself `berth-standby`, which under load is long enough to be seen.
    let daemon = env.daemon_pid();
    let shim_procs = berth_testutil::host::processes_with(&format!("{root}/run/shims"))
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "berth-shim")
                && parent_of(*p) != Some(daemon)
        })
        .count();
    assert_eq!(shim_procs, running, "{}", env.daemon_log());
    for id in &ids {
        c.remove(env.req(RemoveContainerRequest {
            id: id.clone(),
            force: true,
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|e| panic!("rm {id}: {e:?}\n{}", env.daemon_log()));
    }
    env.no_leftovers(&ids);
}

/// The parent's pid of process `pid` (`PPid:` in its status), if it still exists.
fn parent_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}
