//! Harness for `berth`'s end-to-end tests: a private store per test, isolated credentials, and
//! OCI image layouts built offline (busybox from Debian's busybox-static) that `skopeo` copies
//! into a real registry on loopback.

#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth");

/// A private Berth root with its own auto-started berthd, and isolated credentials. Dropping it
/// removes every container, stops that berthd (and any shim left), unmounts everything below
/// the directory and removes it, even when the test failed.
pub struct Berth {
    pub dir: tempfile::TempDir,
    /// Dropped after `Drop::drop` below has removed this root's containers and networks.
    _portmap: berth_testutil::host::PortmapChains,
    _cgroups: berth_testutil::host::BerthCgroups,
}

impl Berth {
    pub fn new() -> Berth {
        berth_testutil::require_root();
        let bin = Path::new(BIN);
        for sibling in ["berthd", "berth-shim"] {
            berth_testutil::require(
                bin.with_file_name(sibling).exists(),
                &format!(
                    "{sibling} next to {BIN} (build every binary first: cargo build --workspace --bins)"
                ),
            );
        }
        Berth {
            dir: tempfile::Builder::new()
                .prefix("berth-e2e-")
                .tempdir_in("/var/tmp")
                .expect("temp dir"),
            _portmap: berth_testutil::host::portmap_chains(),
            _cgroups: berth_testutil::host::berth_cgroups(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The state directory berth derives for a non-default root.
    pub fn state(&self) -> PathBuf {
        self.root().join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.state().join("berth.sock")
    }

    pub fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth/config.json")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("BERTH_ROOT", self.root())
            .env("BERTH_AUTH_FILE", self.auth_file())
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env_remove("BERTH_NAMESPACE")
            .env_remove("BERTH_HOST")
            .env_remove("BERTH_STATE")
            .stdin(Stdio::null());
        c
    }

    /// Run and capture everything. Output goes through files, not pipes, so nothing that
    /// outlives the command (berthd, a shim) can keep the test waiting for a pipe to close.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().expect("create a file for stdout");
        let err = tempfile::tempfile().expect("create a file for stderr");
        let status = self
            .cmd(args)
            .stdout(out.try_clone().expect("dup"))
            .stderr(err.try_clone().expect("dup"))
            .status()
            .expect("running berth");
        let read = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut v = Vec::new();
            f.seek(std::io::SeekFrom::Start(0)).expect("rewind");
            f.read_to_end(&mut v).expect("read output");
            v
        };
        Output {
            status,
            stdout: read(out),
            stderr: read(err),
        }
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        berth_testutil::succeeded(&format!("berth {args:?}"), &self.run(args))
    }

    /// Run and require failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        berth_testutil::failed(&format!("berth {args:?}"), &self.run(args))
    }

    /// Run, require exit status `code`; returns (stdout, stderr).
    pub fn exits(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "berth {args:?}: stdout {o:?} stderr {e:?}"
        );
        (o, e)
    }

    /// Run with `input` on stdin; require success.
    pub fn ok_stdin(&self, args: &[&str], input: &[u8]) -> String {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        berth_testutil::succeeded(&format!("berth {args:?}"), &out)
    }

    /// `berth system check` reports a clean store (berthd holds the store open, so it is
    /// stopped first; the next command starts it again).
    pub fn assert_clean(&self) {
        self.stop_daemon();
        let out = self.ok(&["system", "check"]);
        assert!(!out.to_lowercase().contains("corrupt"), "{out}");
    }

    /// Load the busybox test image as `busybox:latest` (Cmd `sh`, PATH set).
    pub fn busybox(&self) {
        let tar = busybox_image_tar();
        let path = self.dir.path().join("busybox-image.tar");
        std::fs::write(&path, tar).unwrap();
        let out = self.ok(&["load", "-q", "-i", path.to_str().unwrap()]);
        let _ = out;
        std::fs::remove_file(&path).unwrap();
    }

    /// The pid of this root's berthd, if one runs.
    pub fn daemon_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.state().join("berthd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Stop this root's berthd (SIGTERM, then SIGKILL), waiting until it is gone.
    pub fn stop_daemon(&self) {
        let Some(pid) = self.daemon_pid() else { return };
        for (sig, rounds) in [(libc::SIGTERM, 500), (libc::SIGKILL, 500)] {
            // SAFETY: kill(2) on a pid read from this root's pid file; no memory is involved.
            unsafe { libc::kill(pid, sig) };
            for _ in 0..rounds {
                if !process_alive(pid) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

impl Berth {
    /// berth-net's view of this root (the daemon's plugin dirs and host registry defaults).
    pub fn net(&self) -> berth_net::Manager {
        berth_net::Manager::open(berth_net::Config::new(self.root(), self.state()))
            .expect("open the network state")
    }

    /// DEL every cached attachment, then remove every network of this root. The daemon must
    /// be stopped.
    pub fn purge_networks(&self) {
        if !self.root().join("networks").exists() {
            return;
        }
        let m = self.net();
        for a in m.all_attachments() {
            let _ = m.detach_all(&a.container_id, false);
        }
        for e in std::fs::read_dir(self.state().join("netns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = m.remove_netns(&e.file_name().to_string_lossy());
        }
        m.purge();
    }
}

fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie ("Z") has exited; its parent (not us) reaps it.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        // Remove the containers through the daemon (only if one is up: never start one here).
        if self.daemon_pid().is_some() {
            let ids = self.run(&["ps", "-aq", "--no-trunc"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.run(&args);
            }
        }
        self.stop_daemon();
        // Networks: whatever a failed test left attached, then every network of this root
        // (the default bridge included): bridges, leases, subnet claims, namespace files.
        self.purge_networks();
        // Anything still running from this root (shims, container processes holding its paths).
        berth_testutil::host::let_standby_shims_finish(&dir);
        for pid in berth_testutil::host::processes_with(&dir) {
            // SAFETY: kill(2) of a leftover process of this test; no memory is involved.
            unsafe { libc::kill(i32::try_from(pid).unwrap_or(0), libc::SIGKILL) };
        }
        let mut mounts = berth_testutil::host::mounts_containing(&dir);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let c = std::ffi::CString::new(m).unwrap();
            // SAFETY: umount2 of a mount point below this test's own directory.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The busybox image as an OCI layout in a tar (built once per test binary).
pub fn busybox_image_tar() -> Vec<u8> {
    static TAR: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TAR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        berth_testutil::busybox_rootfs(root.path());
        let layers = vec![layer(&[Entry::Tree(root.path().to_owned())])];
        let layout = tempfile::tempdir().unwrap();
        write_layout(
            layout.path(),
            "busybox:latest",
            &layers,
            ("linux", host_arch()),
        );
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all(".", layout.path()).unwrap();
        b.into_inner().unwrap()
    })
    .clone()
}

/// This host's architecture in OCI terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// One layer's content, as tar entries.
pub enum Entry {
    Dir(&'static str),
    File(String, Vec<u8>),
    Symlink(&'static str, &'static str),
    /// A whole directory tree from the host (e.g. a busybox rootfs).
    Tree(PathBuf),
}

/// A gzip layer: (compressed bytes, diff_id hex).
pub fn layer(entries: &[Entry]) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    for e in entries {
        match e {
            Entry::Dir(p) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(1_700_000_000);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Entry::File(p, data) => {
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(data.len() as u64);
                h.set_mtime(1_700_000_000);
                b.append_data(&mut h, p, data.as_slice()).unwrap();
            }
            Entry::Symlink(p, target) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(1_700_000_000);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Tree(dir) => b.append_dir_all(".", dir).unwrap(),
        }
    }
    let tar = b.into_inner().unwrap();
    let diff = sha256_hex(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff)
}

/// Write an OCI image layout at `dir` holding one image tagged `tag` made of `layers`.
/// Returns the manifest digest.
pub fn write_layout(
    dir: &Path,
    tag: &str,
    layers: &[(Vec<u8>, String)],
    platform: (&str, &str),
) -> String {
    write_layout_with(
        dir,
        tag,
        layers,
        platform,
        json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}),
    )
}

/// [`write_layout`] with the image config's `config` object given.
pub fn write_layout_with(
    dir: &Path,
    tag: &str,
    layers: &[(Vec<u8>, String)],
    platform: (&str, &str),
    image_config: serde_json::Value,
) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> String {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    };
    let mut layer_descs = vec![];
    let mut diff_ids = vec![];
    for (gz, diff) in layers {
        let d = put(gz);
        let media_type = if gz.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        };
        layer_descs.push(json!({"mediaType": media_type, "digest": d, "size": gz.len()}));
        diff_ids.push(format!("sha256:{diff}"));
    }
    let config = serde_json::to_vec(&json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": platform.1,
        "os": platform.0,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cd = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
                           "annotations": {"org.opencontainers.image.ref.name": tag}}],
        }))
        .unwrap(),
    )
    .unwrap();
    md
}

/// The same layers recompressed with zstd.
pub fn zstd_layers(layers: &[(Vec<u8>, String)]) -> Vec<(Vec<u8>, String)> {
    layers
        .iter()
        .map(|(gz, diff)| {
            let mut tar = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut tar)
                .unwrap();
            (zstd::encode_all(tar.as_slice(), 3).unwrap(), diff.clone())
        })
        .collect()
}

/// The two-layer busybox test image: layer 1 is a busybox rootfs, layer 2 adds
/// `/etc/berth-layer2` and deletes `/etc/group` with a whiteout.
pub fn busybox_layers() -> Vec<(Vec<u8>, String)> {
    let root = tempfile::tempdir().unwrap();
    berth_testutil::busybox_rootfs(root.path());
    let l1 = layer(&[Entry::Tree(root.path().to_owned())]);
    let l2 = layer(&[
        Entry::Dir("etc"),
        Entry::File("etc/berth-layer2".into(), b"hello from layer 2\n".to_vec()),
        Entry::File("etc/.wh.group".into(), Vec::new()),
    ]);
    vec![l1, l2]
}

/// `skopeo copy` an OCI layout into the registry at `addr` as `repo:tag`.
pub fn skopeo_push(layout: &Path, tag: &str, addr: &str, repo: &str, creds: Option<&str>) {
    let mut c = Command::new("skopeo");
    c.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(cr) = creds {
        c.args(["--dest-creds", cr]);
    }
    let out = c
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{addr}/{repo}:{tag}"))
        .output()
        .expect("skopeo (Debian package skopeo)");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mount a read-only view of the image's top snapshot and run `f` on it; always unmounts.
pub fn with_image_root(b: &Berth, chain_top: &str, f: impl FnOnce(&Path)) {
    // berthd holds the store open: stop it (the next berth command starts it again).
    b.stop_daemon();
    let store = berth_store::Store::open(&b.root()).expect("open store");
    let key = format!("test-view-{}", std::process::id());
    let mounts = store
        .snapshots
        .view("default", &key, Some(chain_top))
        .expect("view");
    let target = tempfile::tempdir().unwrap();
    berth_store::mount(&mounts, target.path()).expect("mount view");
    struct Guard<'a>(&'a Path, &'a berth_store::Store, &'a str);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            let _ = berth_store::unmount(self.0);
            let _ = self.1.snapshots.remove("default", self.2);
        }
    }
    let _g = Guard(target.path(), &store, &key);
    f(target.path());
}

/// The top chain ID of an image, from `berth image inspect`.
pub fn chain_top(b: &Berth, image: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["image", "inspect", image])).unwrap();
    let mut chain: Option<String> = None;
    for d in v[0]["RootFS"]["Layers"].as_array().unwrap() {
        let d = d.as_str().unwrap().to_owned();
        chain = Some(match chain {
            None => d,
            Some(prev) => format!("sha256:{}", sha256_hex(format!("{prev} {d}").as_bytes())),
        });
    }
    chain.expect("an image with layers")
}

/// A loopback TCP proxy in front of a registry that slows responses to `rate` bytes per second
/// and, while `cut_after` is non-zero, closes the first connections after that many response
/// bytes (then decrements `cuts`). Stops when dropped.
pub struct Proxy {
    pub addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: &str, rate: u64, cut_after: u64, cuts: u32) -> Proxy {
        use std::io::Read;
        use std::net::{TcpListener, TcpStream};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let upstream = upstream.to_owned();
        let cuts = Arc::new(AtomicU32::new(cuts));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                let stop3 = Arc::clone(&stop2);
                let cuts = Arc::clone(&cuts);
                std::thread::spawn(move || {
                    let cut = cut_after > 0
                        && cuts
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    let start = std::time::Instant::now();
                    while !stop3.load(Ordering::Relaxed) {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cut && sent + n as u64 > cut_after {
                            break;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        if rate > 0 {
                            let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                            if let Some(wait) = due.checked_sub(start.elapsed()) {
                                std::thread::sleep(wait);
                            }
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Incompressible bytes (xorshift), so a gzip layer is as big as its content.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
