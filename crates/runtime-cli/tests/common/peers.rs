//! Real clients of `berth-runtime` for the end-to-end tests: a private containerd daemon driven
//! with `ctr`, and a private podman store, both fed an image built offline from Debian's
//! `busybox-static`.
//!
//! Everything lives in one temporary directory per client: the daemon's root, state and socket,
//! the runtime's state root (containerd), podman's storage, run root and tmp dir, the IO fifos.
//! Each handle's `Drop` undoes all of it even when a test fails half-way: it removes the
//! containers through the client, stops the daemon, kills every process whose command line
//! names the directory (shims, conmon), force-deletes whatever the runtime still knows,
//! unmounts what is mounted below the directory and removes the cgroups the tests used. The few
//! paths the clients insist on outside it (`/run/containerd/s` for the shims' sockets,
//! `/var/lib/containers/cache` for podman's blob cache, the runtime's default root for podman's
//! containers) are removed again when they did not exist before.
//!
//! Handles are serialized within a test binary (one peer at a time): the machines are small,
//! and the global paths above can then be cleaned without racing another test.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;

/// The runtime the clients drive: `berth-runtime`, unless `BERTH_E2E_RUNTIME` names another
/// runc-compatible binary (e.g. `runc`, to tell a harness problem from a runtime bug).
pub fn runtime_bin() -> PathBuf {
    std::env::var_os("BERTH_E2E_RUNTIME").map_or_else(|| PathBuf::from(super::BIN), PathBuf::from)
}

/// How long one client command may take before the test fails (debug builds, a loaded machine).
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// The name both clients know the busybox image by.
pub const IMAGE: &str = "localhost/berth-e2e-busybox:latest";

static SERIAL: Mutex<()> = Mutex::new(());

fn serialize() -> MutexGuard<'static, ()> {
    // A test that panicked while holding the lock has already cleaned up in its Drop.
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------------

/// What a finished command did.
#[derive(Debug)]
pub struct Out {
    /// The command, for messages.
    pub what: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

fn read_back(mut f: File) -> String {
    let mut v = Vec::new();
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = f.read_to_end(&mut v);
    String::from_utf8_lossy(&v).into_owned()
}

/// Run `cmd` to completion within [`TIMEOUT`] and capture its output. Output goes through files,
/// not pipes: a detached container or a shim may keep a client's stdio open long after the
/// client exits. With `hold_stdin` the command's stdin is a pipe kept open until it exits (so
/// `script` never sees end-of-file and never types it into a terminal); otherwise `/dev/null`.
/// On timeout the command is killed and the test fails with what it printed so far.
pub fn run_cmd(cmd: &mut Command, hold_stdin: bool) -> Out {
    try_run_cmd(cmd, hold_stdin, TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_cmd`] that reports failures to run or finish instead of panicking: for `Drop`, where a
/// second panic would abort the test binary before anything is cleaned up.
fn try_run_cmd(cmd: &mut Command, hold_stdin: bool, timeout: Duration) -> Result<Out, String> {
    let what = format!("{cmd:?}");
    let files = (tempfile::tempfile(), tempfile::tempfile());
    let (Ok(out), Ok(err)) = files else {
        return Err(format!("{what}: cannot create files for its output"));
    };
    let (Ok(out_dup), Ok(err_dup)) = (out.try_clone(), err.try_clone()) else {
        return Err(format!("{what}: cannot duplicate its output files"));
    };
    cmd.stdin(if hold_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(out_dup)
    .stderr(err_dup);
    let mut child = cmd.spawn().map_err(|e| format!("spawn {what}: {e}"))?;
    let stdin = child.stdin.take();
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("wait for {what}: {e}")),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{what} did not finish within {timeout:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                read_back(out),
                read_back(err)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    Ok(Out {
        what,
        code: status.code().unwrap_or(-1),
        stdout: read_back(out),
        stderr: read_back(err),
    })
}

/// Quote `args` for `sh -c`.
pub fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `args` with a terminal: under util-linux `script`, which gives it a pty as stdin,
/// stdout and stderr and exits with its exit code (`-e`). The output is what the terminal
/// showed (with `\r\n` line ends).
pub fn with_terminal(args: &[String]) -> Out {
    let mut cmd = Command::new("script");
    cmd.arg("-qec").arg(shell_line(args)).arg("/dev/null");
    run_cmd(&mut cmd, true)
}

/// Find `name` in `$PATH` or the usual system directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Fail loudly (never skip) unless every program is installed.
pub fn require_programs(names: &[&str]) {
    for name in names {
        berth_testutil::require(
            find_program(name).is_some(),
            &format!("the program `{name}`"),
        );
    }
}

/// Wait until `check` passes, failing with `what` and its last complaint after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `cond` holds, failing with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Host cleanup helpers
// ---------------------------------------------------------------------------------------------

/// Processes (other than this one) whose command line contains every one of `needles`.
pub fn processes_with_all(needles: &[&str]) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            if needles.iter().all(|n| cmd.contains(n)) {
                out.push(pid);
            }
        }
    }
    out
}

fn kill(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// SIGKILL every process whose command line names `dir` and wait (briefly) for them to go.
fn kill_processes_naming(dir: &str) {
    for pid in processes_with_all(&[dir]) {
        kill(pid, rustix::process::Signal::KILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with_all(&[dir]).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmount (lazily, deepest first) everything mounted at or below `dir`.
fn unmount_below(dir: &str) {
    for _ in 0..3 {
        let mut mounts = berth_testutil::host::mounts_containing(dir);
        if mounts.is_empty() {
            return;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Remove the cgroup directories named `name` in every hierarchy, with everything below them:
/// processes still inside are killed first, then directories are removed bottom-up.
fn remove_cgroups_named(name: &str) {
    for top in berth_testutil::host::cgroup_dirs_named(name) {
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in &dirs {
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                    kill(pid, rustix::process::Signal::KILL);
                }
            }
        }
        for d in &dirs {
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// `state ID` from the runtime under test, parsed; fails the test when the runtime does not
/// know the container.
pub fn runtime_state(root: &Path, id: &str) -> serde_json::Value {
    let mut cmd = Command::new(runtime_bin());
    cmd.arg("--root").arg(root).args(["state", id]);
    let out = run_cmd(&mut cmd, false);
    assert!(out.success(), "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("state is not JSON ({e}): {out}"))
}

/// Force-delete container `id` in the runtime's state root `root`.
fn runtime_delete(root: &Path, id: &str) {
    if root.join(id).exists() {
        let _ = Command::new(runtime_bin())
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Force-delete every container left in a runtime state root.
fn runtime_delete_all(root: &Path) {
    for id in entries(root) {
        runtime_delete(root, &id);
    }
}

/// The state root the runtime uses without `--root`: `berth-runtime`'s, or that of the peer
/// named by `BERTH_E2E_RUNTIME` (runc and crun use /run/NAME).
fn default_runtime_root() -> &'static str {
    match std::env::var_os("BERTH_E2E_RUNTIME") {
        None => berth_runtime::state::DEFAULT_ROOT,
        Some(p) => match Path::new(&p).file_name().and_then(|n| n.to_str()) {
            Some("crun") => "/run/crun",
            _ => "/run/runc",
        },
    }
}

/// Entries of a directory (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A path the clients create outside our directory; removed at drop when it did not exist.
#[derive(Debug)]
struct GlobalPath {
    path: &'static str,
    existed: bool,
}

impl GlobalPath {
    fn note(path: &'static str) -> GlobalPath {
        GlobalPath {
            path,
            existed: Path::new(path).exists(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The busybox image
// ---------------------------------------------------------------------------------------------

fn sha256_hex(file: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {} failed", file.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_string()
}

/// Copy the file `from` into an OCI layout as a blob; returns (digest, size).
fn add_blob(layout: &Path, from: &Path) -> (String, u64) {
    let hex = sha256_hex(from);
    let size = std::fs::metadata(from).expect("stat blob").len();
    std::fs::copy(from, layout.join("blobs/sha256").join(&hex)).expect("copy blob into the layout");
    (format!("sha256:{hex}"), size)
}

/// Build, in `dir`, a busybox root filesystem (`rootfs/`), its single layer (`layer.tar`) and an
/// OCI image archive holding it (`image.tar`, named [`IMAGE`] for containerd's import). Offline:
/// only `busybox-static`, `tar` and `sha256sum`.
pub fn build_busybox_image(dir: &Path) {
    require_programs(&["tar", "sha256sum"]);
    let rootfs = dir.join("rootfs");
    berth_testutil::busybox_rootfs(&rootfs);
    let layer = dir.join("layer.tar");
    let tar = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("tar").args(args).output().expect("run tar");
        assert!(
            out.status.success(),
            "tar {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tar(&[
        "--numeric-owner".as_ref(),
        "--owner=0".as_ref(),
        "--group=0".as_ref(),
        "-C".as_ref(),
        rootfs.as_os_str(),
        "-cf".as_ref(),
        layer.as_os_str(),
        ".".as_ref(),
    ]);

    let layout = dir.join("oci");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("create the OCI layout");
    let (layer_digest, layer_size) = add_blob(&layout, &layer);
    let write_json = |name: &str, v: &serde_json::Value| {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_vec(v).expect("encode JSON")).expect("write JSON");
        p
    };
    let config = write_json(
        "config.json",
        &json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "WorkingDir": "/"
            },
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
        }),
    );
    let (config_digest, config_size) = add_blob(&layout, &config);
    let manifest = write_json(
        "manifest.json",
        &json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
        }),
    );
    let (manifest_digest, manifest_size) = add_blob(&layout, &manifest);
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "latest"}
            }]
        }))
        .expect("encode index.json"),
    )
    .expect("write index.json");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    tar(&[
        "-C".as_ref(),
        layout.as_os_str(),
        "-cf".as_ref(),
        dir.join("image.tar").as_os_str(),
        ".".as_ref(),
    ]);
}

// ---------------------------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------------------------

/// Plugins a private daemon does not need: the CRI server (it would touch CNI and /etc), the
/// snapshotters this host lacks, tracing, and `opt` (which creates /opt/containerd).
const CONTAINERD_DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
];

/// A private containerd (root, state, sockets and logs in a temporary directory) with the
/// busybox image imported into namespace [`Containerd::NAMESPACE`]. Containers run through the
/// runc v2 shim with `--runc-binary` set to `berth-runtime` and a private `--runc-root`.
#[derive(Debug)]
pub struct Containerd {
    daemon: Option<Child>,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    cgroups: Mutex<Vec<String>>,
    run_containerd: GlobalPath,
    _serial: MutexGuard<'static, ()>,
}

impl Containerd {
    /// The containerd namespace the tests use.
    pub const NAMESPACE: &'static str = "berth-e2e";

    /// Start the daemon, wait for its socket and import the image.
    pub fn start() -> Containerd {
        berth_testutil::require_root();
        require_programs(&["containerd", "ctr", "containerd-shim-runc-v2"]);
        let serial = serialize();
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-ctd-")
            .tempdir()
            .expect("create a temporary directory");
        let path = dir.path().to_path_buf();
        for d in ["fifo", "runtime", "image", "tmp"] {
            std::fs::create_dir_all(path.join(d)).expect("create a directory for containerd");
        }
        let p = |s: &str| path.join(s).display().to_string();
        let disabled = CONTAINERD_DISABLED_PLUGINS
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ntemp = {tmp:?}\nplugin_dir = \"\"\n\
             disabled_plugins = [{disabled}]\n\n[grpc]\n  address = {sock:?}\n\n[ttrpc]\n  address = {ttrpc:?}\n\n\
             [debug]\n  address = \"\"\n  level = \"debug\"\n\n[metrics]\n  address = \"\"\n\n\
             [plugins]\n  [plugins.\"io.containerd.gc.v1.scheduler\"]\n    startup_delay = \"0s\"\n",
            root = p("root"),
            state = p("state"),
            tmp = p("tmp"),
            sock = p("containerd.sock"),
            ttrpc = p("containerd.sock.ttrpc"),
        );
        std::fs::write(path.join("config.toml"), config).expect("write containerd's config");
        let log = File::create(path.join("containerd.log")).expect("create containerd's log");
        // From here on Drop cleans up whatever happens.
        let mut me = Containerd {
            daemon: None,
            dir: Some(dir),
            path,
            cgroups: Mutex::new(Vec::new()),
            run_containerd: GlobalPath::note("/run/containerd"),
            _serial: serial,
        };
        let child = Command::new(find_program("containerd").expect("containerd is installed"))
            .arg("--config")
            .arg(me.path.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log file"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        me.daemon = Some(child);
        me.wait_ready();
        build_busybox_image(&me.path.join("image"));
        let archive = me.path.join("image/image.tar");
        me.ok(&["images", "import", archive.to_str().expect("utf-8 path")]);
        let images = me.ok(&["images", "ls", "-q"]);
        assert!(
            images.lines().any(|l| l == IMAGE),
            "{IMAGE} is not among the imported images: {images}"
        );
        me
    }

    fn wait_ready(&mut self) {
        let sock = self.socket();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "containerd exited at start-up ({status}):\n{}",
                    self.log_tail(60)
                );
            }
            if UnixStream::connect(&sock).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd's socket never appeared:\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The socket accepts before every service is registered: wait until ctr gets answers.
        wait_until("ctr reaches containerd", Duration::from_secs(30), || {
            self.ctr(&["version"]).success()
        });
        let plugins = self.ok(&["plugins", "ls"]);
        let loaded = |kind: &str, id: &str| {
            plugins.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&kind) && f.get(1) == Some(&id) && f.last() == Some(&"ok")
            })
        };
        for (kind, id) in [
            ("io.containerd.runtime.v2", "task"),
            ("io.containerd.grpc.v1", "tasks"),
            ("io.containerd.snapshotter.v1", "overlayfs"),
        ] {
            assert!(
                loaded(kind, id),
                "containerd's plugin {kind}.{id} did not load:\n{plugins}\n{}",
                self.log_tail(60)
            );
        }
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.path.join("containerd.sock")
    }

    /// `berth-runtime`'s state root for the tests' namespace (the shim adds the namespace).
    pub fn runtime_root(&self) -> PathBuf {
        self.path.join("runtime").join(Self::NAMESPACE)
    }

    /// The last `lines` lines of the daemon's log (shim and runtime errors end up there).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.path.join("containerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- containerd log (last {lines} lines):\n{tail}")
    }

    /// `ctr` arguments up to the subcommand.
    pub fn ctr_args(&self) -> Vec<String> {
        vec![
            "ctr".into(),
            "--address".into(),
            self.socket().display().to_string(),
            "--namespace".into(),
            Self::NAMESPACE.into(),
        ]
    }

    /// Run `ctr ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Out {
        let base = self.ctr_args();
        let mut cmd = Command::new(&base[0]);
        cmd.args(&base[1..]).args(args);
        run_cmd(&mut cmd, false)
    }

    /// Run `ctr ARGS` for cleanup: never panics, returns stdout (empty on any failure).
    fn ctr_quietly(&self, args: &[&str]) -> String {
        let base = self.ctr_args();
        let mut cmd = Command::new(&base[0]);
        cmd.args(&base[1..]).args(args);
        try_run_cmd(&mut cmd, false, Duration::from_secs(30))
            .map(|o| o.stdout)
            .unwrap_or_default()
    }

    /// Run `ctr ARGS`, require success and return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(out.success(), "{out}\n{}", self.log_tail(40));
        out.stdout
    }

    /// The `ctr run` flags that make the shim use `berth-runtime` with private state, a private
    /// fifo directory and the cgroup `/<id>` (removed by the runtime when the container goes).
    pub fn run_flags(&self, id: &str) -> Vec<String> {
        self.cgroups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id.to_string());
        vec![
            "--runc-binary".into(),
            runtime_bin().display().to_string(),
            "--runc-root".into(),
            self.path.join("runtime").display().to_string(),
            "--fifo-dir".into(),
            self.path.join("fifo").display().to_string(),
            "--cgroup".into(),
            format!("/{id}"),
        ]
    }

    /// `ctr run [run_flags] EXTRA IMAGE ID CMD...` as an argument vector (for [`with_terminal`]).
    pub fn run_argv(&self, extra: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut v = self.ctr_args();
        v.push("run".into());
        v.extend(self.run_flags(id));
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(IMAGE.into());
        v.push(id.into());
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    }

    /// Run a `ctr` argument vector made by [`Containerd::run_argv`] or [`Containerd::ctr_args`].
    pub fn run_vec(&self, argv: &[String]) -> Out {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        run_cmd(&mut cmd, false)
    }

    /// The state of task `id` as `ctr task ls` shows it (`RUNNING`, `STOPPED`, ...), if any.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(2).copied().unwrap_or_default().to_string())
        })
    }

    /// Assert container `id` left nothing behind: no task or container in containerd, no state
    /// in the runtime's root, no cgroup, no mount under our directory, no shim.
    pub fn assert_clean(&self, id: &str) {
        let containers = self.ok(&["containers", "ls", "-q"]);
        assert!(
            !containers.lines().any(|l| l == id),
            "containerd still lists container {id}"
        );
        assert_eq!(
            self.task_status(id),
            None,
            "containerd still lists task {id}"
        );
        let left = entries(&self.runtime_root());
        assert!(
            left.is_empty(),
            "berth-runtime's state root still holds {left:?}"
        );
        let cgroups = berth_testutil::host::cgroup_dirs_named(id);
        assert!(
            cgroups.is_empty(),
            "cgroups of {id} are left behind: {cgroups:?}"
        );
        let dir = self.path.display().to_string();
        let mounts = berth_testutil::host::mounts_containing(&dir);
        assert!(
            mounts.is_empty(),
            "mounts under {dir} are left behind: {mounts:?}"
        );
        let sock = self.socket().display().to_string();
        wait_until(
            &format!("the shim of {id} exits"),
            Duration::from_secs(10),
            || {
                processes_with_all(&[
                    "containerd-shim",
                    &sock,
                    &format!(" {id} ").replace(' ', "\0"),
                ])
                .is_empty()
            },
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let dir = self.path.display().to_string();
        // Through the client first, while the daemon is up.
        if self.daemon.is_some() && UnixStream::connect(self.socket()).is_ok() {
            let ids = self.ctr_quietly(&["containers", "ls", "-q"]);
            for id in ids.lines().filter(|l| !l.is_empty()) {
                self.ctr_quietly(&["task", "kill", "--signal", "SIGKILL", id]);
                self.ctr_quietly(&["task", "delete", "--force", id]);
                self.ctr_quietly(&["containers", "delete", id]);
            }
        }
        if let Some(mut child) = self.daemon.take() {
            kill(child.id(), rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims survive the daemon by design.
        kill_processes_naming(&dir);
        runtime_delete_all(&self.runtime_root());
        unmount_below(&dir);
        for id in self
            .cgroups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            remove_cgroups_named(id);
        }
        if !self.run_containerd.existed {
            // Shim sockets live in /run/containerd/s whatever the daemon's state directory is.
            let _ = std::fs::remove_dir("/run/containerd/s");
            let _ = std::fs::remove_dir(self.run_containerd.path);
        }
        if let Some(d) = self.dir.take() {
            if berth_testutil::host::mounts_containing(&dir).is_empty() {
                drop(d);
            } else {
                // Never recurse into a mount we failed to remove: leave the directory.
                let _ = d.keep();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------------------------

/// The hard limit of `resource` (`Max open files`, ...) this process has, from /proc.
fn hard_limit(resource: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(resource))?;
    let hard = line[resource.len()..].split_whitespace().nth(1)?;
    if hard == "unlimited" {
        Some(u64::MAX)
    } else {
        hard.parse().ok()
    }
}

/// A private podman store (storage, run root, libpod's tmp dir, network config and volumes, all
/// in a temporary directory) with the busybox image imported. Containers get a test-specific
/// cgroup parent, no network and `--ulimit` values this host can grant.
///
/// The runtime keeps its state in its default root: podman passes `--runtime-flag` values to
/// the runtime from the command that has them, but not from the `podman container cleanup`
/// that conmon runs when a container exits, so a private `--root` would be missed by the
/// `delete` that follows every exit. Podman's container ids are unique, so the tests still
/// check exactly their own state.
#[derive(Debug)]
pub struct Podman {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    cgroup_parent: String,
    var_lib_containers: GlobalPath,
    runtime_root: GlobalPath,
    _serial: MutexGuard<'static, ()>,
}

impl Podman {
    /// Create the store and import the image.
    pub fn new() -> Podman {
        berth_testutil::require_root();
        require_programs(&["podman", "conmon", "script"]);
        let serial = serialize();
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-podman-")
            .tempdir()
            .expect("create a temporary directory");
        let path = dir.path().to_path_buf();
        for d in ["image", "tmp", "net"] {
            std::fs::create_dir_all(path.join(d)).expect("create a directory for podman");
        }
        let me = Podman {
            dir: Some(dir),
            path,
            cgroup_parent: berth_testutil::unique_id("berth-e2e-podman"),
            // Image copies record blobs in /var/lib/containers/cache whatever the storage root.
            var_lib_containers: GlobalPath::note("/var/lib/containers"),
            runtime_root: GlobalPath::note(default_runtime_root()),
            _serial: serial,
        };
        let info = me.ok(&[
            "info",
            "--format",
            "{{.Store.GraphRoot}} {{.Host.CgroupManager}} {{.Host.OCIRuntime.Path}}",
        ]);
        assert_eq!(
            info.trim(),
            format!(
                "{} cgroupfs {}",
                me.path.join("root").display(),
                runtime_bin().display()
            ),
            "podman does not use the private store, cgroupfs and the runtime under test"
        );
        build_busybox_image(&me.path.join("image"));
        let layer = me.path.join("image/layer.tar");
        me.ok(&[
            "import",
            "--quiet",
            layer.to_str().expect("utf-8 path"),
            IMAGE,
        ]);
        me
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The runtime's state root (its default; see the type's documentation).
    pub fn runtime_root(&self) -> PathBuf {
        PathBuf::from(self.runtime_root.path)
    }

    /// `podman` and its global flags.
    pub fn podman_args(&self) -> Vec<String> {
        let p = |s: &str| self.path.join(s).display().to_string();
        [
            "podman".to_string(),
            "--root".into(),
            p("root"),
            "--runroot".into(),
            p("runroot"),
            "--tmpdir".into(),
            p("tmp"),
            "--network-config-dir".into(),
            p("net"),
            "--volumepath".into(),
            p("volumes"),
            "--storage-driver".into(),
            "overlay".into(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
            "--runtime".into(),
            runtime_bin().display().to_string(),
        ]
        .into()
    }

    /// The `podman run`/`create` flags every test container gets: no network, the test's cgroup
    /// parent, and explicit limits within this process's hard limits (podman's defaults for
    /// root exceed them, and without CAP_SYS_RESOURCE a hard limit cannot be raised).
    pub fn run_flags(&self) -> Vec<String> {
        let nofile = hard_limit("Max open files").unwrap_or(1024).min(1024);
        let nproc = hard_limit("Max processes").unwrap_or(4096).min(4096);
        vec![
            "--network".into(),
            "none".into(),
            "--cgroup-parent".into(),
            format!("/{}", self.cgroup_parent),
            "--ulimit".into(),
            format!("nofile={nofile}:{nofile}"),
            "--ulimit".into(),
            format!("nproc={nproc}:{nproc}"),
        ]
    }

    /// `podman run [run_flags] EXTRA IMAGE CMD...` as an argument vector.
    pub fn run_argv(&self, extra: &[&str], cmd: &[&str]) -> Vec<String> {
        let mut v = self.podman_args();
        v.push("run".into());
        v.extend(self.run_flags());
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(IMAGE.into());
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    }

    /// `podman ARGS` as an argument vector.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut v = self.podman_args();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Run an argument vector.
    pub fn run_vec(&self, argv: &[String]) -> Out {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        run_cmd(&mut cmd, false)
    }

    /// Run `podman ARGS`.
    pub fn podman(&self, args: &[&str]) -> Out {
        self.run_vec(&self.argv(args))
    }

    /// Run `podman ARGS` for cleanup: never panics, returns stdout (empty on any failure).
    fn podman_quietly(&self, args: &[&str]) -> String {
        let argv = self.argv(args);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        try_run_cmd(&mut cmd, false, Duration::from_secs(60))
            .map(|o| o.stdout)
            .unwrap_or_default()
    }

    /// Run `podman ARGS`, require success and return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(out.success(), "{out}");
        out.stdout
    }

    /// Assert container `id` (podman's full id) left nothing behind: podman forgot it, the
    /// runtime's state is gone, so are its cgroup and conmon, and nothing is mounted under our
    /// directory. Waits up to 10 s: after `run --rm` the `podman container cleanup` that conmon
    /// starts may still be unmounting when the foreground command returns.
    pub fn assert_clean(&self, id: &str) {
        let all = self.ok(&["ps", "-a", "-q", "--no-trunc"]);
        assert!(!all.lines().any(|l| l == id), "podman still lists {id}");
        let dir = self.path.display().to_string();
        eventually(
            &format!("container {id} is cleaned up"),
            Duration::from_secs(10),
            || {
                let state = self.runtime_root().join(id);
                if state.exists() {
                    return Err(format!(
                        "the runtime's state {} is left behind",
                        state.display()
                    ));
                }
                let cgroups = berth_testutil::host::cgroup_dirs_named(&format!("libpod-{id}"));
                if !cgroups.is_empty() {
                    return Err(format!("cgroups of {id} are left behind: {cgroups:?}"));
                }
                let mounts = berth_testutil::host::mounts_containing(&dir);
                if !mounts.is_empty() {
                    return Err(format!("mounts under {dir} are left behind: {mounts:?}"));
                }
                let conmon = processes_with_all(&["conmon", id]);
                if !conmon.is_empty() {
                    return Err(format!("conmon of {id} is still running: {conmon:?}"));
                }
                Ok(())
            },
        );
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let dir = self.path.display().to_string();
        let ids = self.podman_quietly(&["ps", "--all", "--quiet", "--no-trunc"]);
        self.podman_quietly(&["rm", "--all", "--force", "--time", "0"]);
        kill_processes_naming(&dir);
        for id in ids.lines().filter(|l| !l.is_empty()) {
            runtime_delete(&self.runtime_root(), id);
        }
        unmount_below(&dir);
        // The containers' cgroups and conmon's, all below the test's parent.
        remove_cgroups_named(&self.cgroup_parent);
        if !self.var_lib_containers.existed {
            let _ = std::fs::remove_dir_all(self.var_lib_containers.path);
        }
        if !self.runtime_root.existed {
            let _ = std::fs::remove_dir(self.runtime_root.path);
        }
        if let Some(d) = self.dir.take() {
            if berth_testutil::host::mounts_containing(&dir).is_empty() {
                drop(d);
            } else {
                let _ = d.keep();
            }
        }
    }
}
