//! What the engine benchmark stands on: the busybox image, the three engines as handles that
//! remove every container, daemon, mount and directory of theirs when dropped, many children
//! at once, and the memory of a process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::Result;
use crate::pull_support::{Containerd, LOOP_FS_BYTES, LoopFs, output, tail, unmount_below};
use crate::subject::{Failed, describe, read_all, run_checked, show};

/// The image's name in the archive (each store records it in its own way; the peers are asked
/// what they called it after the load).
pub const IMAGE_TAG: &str = "berth-bench/busybox:latest";

// ---------------------------------------------------------------------------------------------
// The image
// ---------------------------------------------------------------------------------------------

/// A rootfs of Debian's static busybox with a link for every applet, and the same rootfs as a
/// one-layer docker-archive (`manifest.json`, `<config>.json`, `<layer>/layer.tar`), which
/// `berth load`, `ctr images import` and `podman load` all read.
#[derive(Debug)]
pub struct BusyboxImage {
    pub rootfs: PathBuf,
    pub archive: PathBuf,
    pub applets: usize,
    pub layer_bytes: u64,
}

impl BusyboxImage {
    pub fn build(busybox: &Path, dir: &Path) -> Result<BusyboxImage> {
        let rootfs = dir.join("rootfs");
        for d in ["bin", "dev", "proc", "sys", "tmp", "etc", "root"] {
            let p = rootfs.join(d);
            std::fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
        }
        let bb = rootfs.join("bin/busybox");
        std::fs::copy(busybox, &bb).map_err(|e| {
            format!(
                "copy {} into the rootfs: {e} (install Debian's busybox-static or pass --busybox)",
                busybox.display()
            )
        })?;
        let list = output(Command::new(&bb).arg("--list"))
            .map_err(|e| format!("{e} (is {} a static busybox?)", busybox.display()))?;
        let mut applets = 0;
        for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
            if applet == "busybox" || applet.contains('/') {
                continue;
            }
            let link = rootfs.join("bin").join(applet);
            std::os::unix::fs::symlink("busybox", &link)
                .map_err(|e| format!("symlink {}: {e}", link.display()))?;
            applets += 1;
        }
        for (f, text) in [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            ),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ] {
            let p = rootfs.join(f);
            std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
        }

        let ar = dir.join("archive");
        let layer_dir_tmp = ar.join("layer");
        std::fs::create_dir_all(&layer_dir_tmp)
            .map_err(|e| format!("create {}: {e}", layer_dir_tmp.display()))?;
        let layer_tmp = layer_dir_tmp.join("layer.tar");
        run_checked(
            Command::new("tar")
                .args(["--sort=name", "--numeric-owner", "--owner=0", "--group=0"])
                .args(["--mtime=@0", "-C"])
                .arg(&rootfs)
                .arg("-cf")
                .arg(&layer_tmp)
                .arg("."),
            "tar the busybox layer",
        )?;
        let layer_hex = sha256_hex(&layer_tmp)?;
        let layer_rel = format!("{layer_hex}/layer.tar");
        let layer_dir = ar.join(&layer_hex);
        std::fs::rename(&layer_dir_tmp, &layer_dir)
            .map_err(|e| format!("rename {}: {e}", layer_dir_tmp.display()))?;
        let layer_bytes = std::fs::metadata(layer_dir.join("layer.tar"))
            .map_err(|e| format!("stat the layer: {e}"))?
            .len();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"],
            },
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_hex}")] },
            "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "berth-bench engine: busybox-static" }],
        });
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| format!("encode the image config: {e}"))?;
        let config_tmp = ar.join("config.tmp");
        std::fs::write(&config_tmp, &config_bytes)
            .map_err(|e| format!("write {}: {e}", config_tmp.display()))?;
        let config_name = format!("{}.json", sha256_hex(&config_tmp)?);
        std::fs::rename(&config_tmp, ar.join(&config_name))
            .map_err(|e| format!("rename the image config: {e}"))?;
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": [IMAGE_TAG],
            "Layers": [layer_rel],
        }]);
        std::fs::write(
            ar.join("manifest.json"),
            serde_json::to_vec(&manifest).map_err(|e| format!("encode manifest.json: {e}"))?,
        )
        .map_err(|e| format!("write manifest.json: {e}"))?;
        let archive = dir.join("busybox.tar");
        run_checked(
            Command::new("tar")
                .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
                .arg(&ar)
                .arg("-cf")
                .arg(&archive)
                .args(["manifest.json", &config_name, &layer_rel]),
            "tar the image archive",
        )?;
        Ok(BusyboxImage {
            rootfs,
            archive,
            applets,
            layer_bytes,
        })
    }
}

fn sha256_hex(file: &Path) -> Result<String> {
    let out = output(Command::new("sha256sum").arg(file))?;
    out.split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .map(str::to_owned)
        .ok_or_else(|| format!("sha256sum printed {out:?} for {}", file.display()))
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Memory of one process, KiB: resident, peak resident, proportional and unique (private).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss: u64,
    pub hwm: u64,
    pub pss: u64,
    pub uss: u64,
    pub threads: u64,
    pub fds: u64,
}

impl Mem {
    /// `None` when the process is gone (or a zombie).
    pub fn of(pid: i32) -> Option<Mem> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |text: &str, name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        let rss = field(&status, "VmRSS:")?;
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
        Some(Mem {
            rss,
            hwm: field(&status, "VmHWM:").unwrap_or(0),
            pss: field(&rollup, "Pss:").unwrap_or(0),
            uss: field(&rollup, "Private_Clean:").unwrap_or(0)
                + field(&rollup, "Private_Dirty:").unwrap_or(0),
            threads: field(&status, "Threads:").unwrap_or(0),
            fds,
        })
    }
}

/// `/proc/PID/comm`, if the process exists.
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The arguments of a process (empty for a kernel thread or a process that is gone).
fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Processes whose command name is `name` and one of whose arguments contains `needle`.
pub fn find_processes(name: &str, needle: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| comm(*pid).is_some_and(|c| c == name))
        .filter(|pid| cmdline(*pid).iter().any(|a| a.contains(needle)))
        .collect();
    pids.sort_unstable();
    pids
}

/// The direct children of a process.
fn children(pid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

pub fn signal(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill has no memory-safety preconditions; callers checked the pid's name.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// SIGKILL a process's children (a container's init takes its pid namespace with it), then the
/// process itself, and wait up to 5 s for them to go.
pub fn kill_tree(pid: i32) {
    let kids = children(pid);
    for k in &kids {
        signal(*k, libc::SIGKILL);
    }
    signal(pid, libc::SIGKILL);
    wait_gone(
        std::iter::once(pid).chain(kids).collect(),
        Duration::from_secs(5),
    );
}

/// Poll until none of `pids` is alive, or the deadline.
pub fn wait_gone(pids: Vec<i32>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run a command with stdin null, capture stdout, and kill it after `within`: cleanup must not
/// hang on a daemon that stopped answering. Errors carry its stderr.
pub fn output_within(cmd: &mut Command, within: Duration) -> Result<String> {
    let out = tempfile::tempfile().map_err(|e| format!("create a file for stdout: {e}"))?;
    let err = tempfile::tempfile().map_err(|e| format!("create a file for stderr: {e}"))?;
    let (o2, e2) = (
        out.try_clone().map_err(|e| format!("dup: {e}"))?,
        err.try_clone().map_err(|e| format!("dup: {e}"))?,
    );
    cmd.stdin(Stdio::null()).stdout(o2).stderr(e2);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", show(cmd)))?;
    let deadline = Instant::now() + within;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {within:?}; killed",
                    show(cmd)
                ));
            }
            Err(e) => return Err(format!("wait for {}: {e}", show(cmd))),
        }
    };
    if !status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            show(cmd),
            describe(status),
            tail(&read_all(err), 20)
        ));
    }
    Ok(read_all(out))
}

// ---------------------------------------------------------------------------------------------
// Many children at once
// ---------------------------------------------------------------------------------------------

/// The outcome of [`pool`]: wall time from the first start to the last exit, the time of each
/// child that succeeded (ms), the failures, and the stdout of the successes.
#[derive(Debug, Default)]
pub struct Batch {
    pub wall: Duration,
    pub each_ms: Vec<f64>,
    pub failures: Vec<Failed>,
    pub stdout: Vec<String>,
}

impl Batch {
    /// The first few distinct failure lines, for the report.
    pub fn failure_lines(&self, n: usize) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for f in &self.failures {
            let l = format!("{}: {}", f.status, f.first_line());
            if !lines.contains(&l) {
                lines.push(l);
            }
            if lines.len() == n {
                break;
            }
        }
        lines
    }
}

/// Run `count` commands made by `make(i)`, at most `concurrency` at a time (all of them released
/// together by a barrier when `concurrency >= count`). Stdout and stderr go to files; the
/// failures are collected, not fatal. Stops starting new ones after SIGINT/SIGTERM.
pub fn pool<F>(count: usize, concurrency: usize, make: F) -> Result<Batch>
where
    F: Fn(usize) -> Command + Sync,
{
    let workers = concurrency.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let barrier = Barrier::new(workers);
    let results: Mutex<Batch> = Mutex::new(Batch::default());
    let setup_error: Mutex<Option<String>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                barrier.wait();
                loop {
                    if crate::check_interrupted().is_err() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    let mut cmd = make(i);
                    match one(&mut cmd) {
                        Ok((d, Ok(out))) => {
                            if let Ok(mut b) = results.lock() {
                                b.each_ms.push(d.as_secs_f64() * 1e3);
                                b.stdout.push(out);
                            }
                        }
                        Ok((_, Err(f))) => {
                            if let Ok(mut b) = results.lock() {
                                b.failures.push(f);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut se) = setup_error.lock() {
                                se.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    let wall = start.elapsed();
    crate::check_interrupted()?;
    if let Some(e) = setup_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut b = results
        .into_inner()
        .map_err(|_| "a worker thread panicked".to_owned())?;
    b.wall = wall;
    Ok(b)
}

/// Spawn and wait, stdout and stderr in files; the wall time and stdout, or the failure.
fn one(cmd: &mut Command) -> Result<(Duration, std::result::Result<String, Failed>)> {
    let out = tempfile::tempfile().map_err(|e| format!("create a file for stdout: {e}"))?;
    let err = tempfile::tempfile().map_err(|e| format!("create a file for stderr: {e}"))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| format!("dup: {e}"))?)
        .stderr(err.try_clone().map_err(|e| format!("dup: {e}"))?);
    let start = Instant::now();
    let status = cmd.status();
    let d = start.elapsed();
    let status = status.map_err(|e| format!("spawn {}: {e}", show(cmd)))?;
    if status.success() {
        Ok((d, Ok(read_all(out))))
    } else {
        Ok((
            d,
            Err(Failed {
                status: describe(status),
                stderr: read_all(err),
            }),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// berth
// ---------------------------------------------------------------------------------------------

/// One berth store (`--root R`) with the berthd that `berth` starts for it. Dropping it removes
/// every container (`rm -f`), stops berthd, kills any shim left, unmounts and removes R.
#[derive(Debug)]
pub struct Berth {
    pub bin: PathBuf,
    pub root: PathBuf,
}

impl Berth {
    pub fn new(bin: PathBuf, root: PathBuf) -> Berth {
        Berth { bin, root }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        c
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("run")
    }

    /// berthd's pid from `S/berthd.pid`, if that process is alive and named berthd.
    pub fn daemon_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.state().join("berthd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (alive(pid) && comm(pid).is_some_and(|c| c.starts_with("berthd"))).then_some(pid)
    }

    /// `(container id, shim pid)` for every `S/shims/<id>/shim.pid` whose process is alive.
    pub fn shims(&self) -> Vec<(String, i32)> {
        let Ok(rd) = std::fs::read_dir(self.state().join("shims")) else {
            return Vec::new();
        };
        let mut v: Vec<(String, i32)> = rd
            .flatten()
            .filter_map(|e| {
                let pid = std::fs::read_to_string(e.path().join("shim.pid"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                alive(pid).then(|| (e.file_name().to_string_lossy().into_owned(), pid))
            })
            .collect();
        v.sort();
        v
    }

    /// Container ids from `berth ps -q` (`-a`: all, else running).
    pub fn ids(&self, all: bool) -> Result<Vec<String>> {
        let mut c = self.cmd();
        c.arg("ps").arg(if all { "-aq" } else { "-q" });
        let out = output_within(&mut c, Duration::from_secs(120))?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// `berth rm -f` of every container; the number removed and the time it took.
    pub fn remove_all(&self) -> Result<(usize, Duration)> {
        let ids = self.ids(true)?;
        if ids.is_empty() {
            return Ok((0, Duration::ZERO));
        }
        let mut c = self.cmd();
        c.args(["rm", "-f"]).args(&ids);
        let start = Instant::now();
        output_within(&mut c, Duration::from_secs(600))?;
        Ok((ids.len(), start.elapsed()))
    }

    /// Stop berthd (SIGTERM, then SIGKILL after 10 s).
    pub fn stop_daemon(&self) {
        if let Some(pid) = self.daemon_pid() {
            signal(pid, libc::SIGTERM);
            if !wait_gone(vec![pid], Duration::from_secs(10)) {
                eprintln!(
                    "berth-bench: cleanup: berthd {pid} ignored SIGTERM for 10 s; killing it"
                );
                signal(pid, libc::SIGKILL);
                wait_gone(vec![pid], Duration::from_secs(5));
            }
        }
    }

    fn cleanup(&self) {
        if !self.root.exists() {
            return;
        }
        if self.daemon_pid().is_some() {
            if let Err(e) = self.remove_all() {
                eprintln!("berth-bench: cleanup: berth rm -f: {e}");
            }
        }
        self.stop_daemon();
        // The default network outlives its containers (as Docker's does): remove it, and
        // anything a container left attached, with the root.
        if self.root.join("networks").exists() {
            let cfg = berth_net::Config::new(self.root.clone(), self.state());
            match berth_net::Manager::open(cfg) {
                Ok(m) => {
                    for a in m.all_attachments() {
                        let _ = m.detach_all(&a.container_id, false);
                    }
                    m.purge();
                }
                Err(e) => eprintln!("berth-bench: cleanup: networks: {e}"),
            }
        }
        let ids: Vec<String> = std::fs::read_dir(self.root.join("containers"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let left = self.shims();
        if !left.is_empty() {
            eprintln!(
                "berth-bench: cleanup: {} berth-shim processes outlived `rm -f`; killing them and their containers",
                left.len()
            );
        }
        for (_, pid) in left {
            if comm(pid).is_some_and(|c| c == "berth-shim") {
                kill_tree(pid);
            }
        }
        remove_cgroups(&["berth"], &ids);
        if !unmount_below(&self.root) {
            eprintln!(
                "berth-bench: cleanup: mounts left below {}; not removing it",
                self.root.display()
            );
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            eprintln!("berth-bench: cleanup: remove {}: {e}", self.root.display());
        }
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Remove the (empty, process-less) cgroup directories `<hierarchy>/<prefix>/*/<id>` and
/// `<hierarchy>/<prefix>/<id>` of the given container ids, in every hierarchy.
pub fn remove_cgroups(prefixes: &[&str], ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hier.flatten() {
        for prefix in prefixes {
            let base = h.path().join(prefix);
            let Ok(subs) = std::fs::read_dir(&base) else {
                continue;
            };
            let subs: Vec<PathBuf> = subs.flatten().map(|e| e.path()).collect();
            for id in ids {
                let _ = std::fs::remove_dir(base.join(id));
                for s in &subs {
                    let _ = std::fs::remove_dir(s.join(id));
                }
            }
        }
    }
}

/// Remove the (empty) cgroup directory `<hierarchy>/<name>` and the directories right below it,
/// in every hierarchy: containerd puts a container in `/<namespace>/<id>`.
pub fn remove_cgroup_tree(name: &str) {
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hier.flatten() {
        let base = h.path().join(name);
        if let Ok(subs) = std::fs::read_dir(&base) {
            for s in subs
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            {
                let _ = std::fs::remove_dir(s.path());
            }
        }
        let _ = std::fs::remove_dir(&base);
    }
}

// ---------------------------------------------------------------------------------------------
// containerd + ctr
// ---------------------------------------------------------------------------------------------

/// A private containerd (root, state, socket in `dir`) and `ctr` talking to it in one
/// namespace. Dropping it kills and deletes every task and container, stops containerd, kills
/// any shim of it left, and removes `dir` and its runc state in /run/containerd.
#[derive(Debug)]
pub struct Ctr {
    pub ctr: PathBuf,
    pub ns: String,
    pub daemon: Option<Containerd>,
    pub dir: PathBuf,
    /// The image's name in containerd, once imported.
    pub image: String,
    seq: AtomicUsize,
    had_run_containerd: bool,
}

impl Ctr {
    pub fn start(containerd: &Path, ctr: PathBuf, dir: PathBuf) -> Result<Ctr> {
        let had_run_containerd = Path::new("/run/containerd").exists();
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut me = Ctr {
            ctr,
            ns: format!("berth-bench-{}", std::process::id()),
            daemon: None,
            dir: dir.clone(),
            image: String::new(),
            seq: AtomicUsize::new(0),
            had_run_containerd,
        };
        me.daemon = Some(Containerd::start(containerd, &dir)?);
        Ok(me)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// `ctr images import ARCHIVE`; remembers the name containerd gave the image.
    pub fn import(&mut self, archive: &Path) -> Result<Duration> {
        let mut imp = self.cmd();
        imp.args(["images", "import"]).arg(archive);
        let t = run_checked(&mut imp, "ctr images import")?;
        let mut ls = self.cmd();
        ls.args(["images", "ls", "-q"]);
        self.image = output(&mut ls)?
            .lines()
            .next()
            .map(str::to_owned)
            .ok_or("ctr images import exited 0 but `ctr images ls` lists no image")?;
        Ok(t)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("-a").arg(self.socket()).arg("-n").arg(&self.ns);
        c
    }

    pub fn next_id(&self, what: &str) -> String {
        format!("{what}-{}", self.seq.fetch_add(1, Ordering::SeqCst))
    }

    /// containerd's pid.
    pub fn daemon_mem(&self) -> Option<Mem> {
        let d = self.daemon.as_ref()?;
        d.daemon.pid().and_then(Mem::of)
    }

    /// containerd-shim-runc-v2 processes of this containerd (their `-address` is our socket).
    pub fn shims(&self) -> Vec<i32> {
        find_processes("containerd-shim", &self.socket().display().to_string())
    }

    /// Container ids in our namespace.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut c = self.cmd();
        c.args(["containers", "ls", "-q"]);
        Ok(output_within(&mut c, Duration::from_secs(120))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Kill every task, delete it and its container; how many containers there were.
    pub fn remove_all(&self) -> Result<usize> {
        let ids = self.ids()?;
        let within = Duration::from_secs(60);
        for id in &ids {
            let mut k = self.cmd();
            k.args(["tasks", "kill", "-a", "-s", "SIGKILL", id]);
            let _ = output_within(&mut k, within);
        }
        let mut first_error = None;
        for id in &ids {
            let mut d = self.cmd();
            d.args(["tasks", "delete", "-f", id]);
            let _ = output_within(&mut d, within);
            let mut r = self.cmd();
            r.args(["containers", "delete", id]);
            if let Err(e) = output_within(&mut r, within) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(ids.len()),
            Some(e) => Err(e),
        }
    }

    fn cleanup(&mut self) {
        if self.daemon.is_some()
            && let Err(e) = self.remove_all()
        {
            eprintln!("berth-bench: cleanup: ctr: {e}");
        }
        if let Some(mut d) = self.daemon.take() {
            d.daemon.stop();
        }
        for pid in self.shims() {
            kill_tree(pid);
        }
        remove_cgroup_tree(&self.ns);
        // runc's state root of the runc v2 shim, and the shims' socket directory.
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.ns));
        if !self.had_run_containerd {
            // ctr keeps the fifos of a container's stdio in /run/containerd/fifo.
            let _ = std::fs::remove_dir_all("/run/containerd/fifo");
            for d in [
                "/run/containerd/runc",
                "/run/containerd/s",
                "/run/containerd",
            ] {
                let _ = std::fs::remove_dir(d);
            }
        }
        if !unmount_below(&self.dir) {
            eprintln!(
                "berth-bench: cleanup: mounts left below {}; not removing it",
                self.dir.display()
            );
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("berth-bench: cleanup: remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        self.cleanup();
    }
}

// ---------------------------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------------------------

/// podman with its own root, runroot and tmpdir in `dir`, cgroupfs, a file events log, runc
/// (crun 1.8 refuses hybrid cgroups) and its own `containers.conf` (`CONTAINERS_CONF`) whose
/// only other setting is `default_ulimits` = nofile at this process's hard limit and nproc at
/// the smaller of its hard limit and 32768: as root, podman otherwise asks for nofile=1048576
/// and nproc=4194304, which a process without CAP_SYS_RESOURCE cannot raise to (the runtime
/// fails with EPERM), and podman lowers its own nproc to 32768 before it starts conmon. Dropping it removes every container, unmounts and
/// removes `dir`.
#[derive(Debug)]
pub struct Podman {
    pub bin: PathBuf,
    pub dir: PathBuf,
    /// The image's name in podman's store, once loaded.
    pub image: String,
    /// Whether `/libpod_parent` (podman's cgroupfs parent, conmons in `/libpod_parent/conmon`)
    /// existed before the run; if not, its empty directories are removed at the end.
    had_libpod_parent: bool,
}

impl Podman {
    pub fn new(bin: PathBuf, dir: PathBuf) -> Result<Podman> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let me = Podman {
            bin,
            dir,
            image: String::new(),
            had_libpod_parent: Path::new("/sys/fs/cgroup/memory/libpod_parent").exists(),
        };
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile={n}:{n}\", \"nproc={p}:{p}\"]\n\n[engine]\nruntime = \"runc\"\n",
            n = hard_limit(libc::RLIMIT_NOFILE)?,
            p = hard_limit(libc::RLIMIT_NPROC)?.min(32768),
        );
        std::fs::write(me.conf(), conf)
            .map_err(|e| format!("write {}: {e}", me.conf().display()))?;
        Ok(me)
    }

    /// `podman load -i ARCHIVE`; remembers the name podman gave the image.
    pub fn load(&mut self, archive: &Path) -> Result<Duration> {
        let mut l = self.cmd();
        l.arg("load").arg("-i").arg(archive);
        let t = run_checked(&mut l, "podman load")?;
        let mut ls = self.cmd();
        ls.args(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        self.image = output(&mut ls)?
            .lines()
            .next()
            .map(str::to_owned)
            .ok_or("podman load exited 0 but `podman images` lists no image")?;
        Ok(t)
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("containers.conf")
    }

    pub fn cmd(&self) -> Command {
        let p = |s: &str| self.dir.join(s);
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(p("root"))
            .arg("--runroot")
            .arg(p("runroot"))
            .arg("--tmpdir")
            .arg(p("tmp"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(["--events-backend", "file"])
            .env("CONTAINERS_CONF", self.conf());
        c
    }

    /// conmon processes of this podman (their arguments name our directory).
    pub fn conmons(&self) -> Vec<i32> {
        find_processes("conmon", &self.dir.display().to_string())
    }

    pub fn remove_all(&self) -> Result<()> {
        let mut c = self.cmd();
        c.args(["rm", "-a", "-f", "-t", "0"]);
        output_within(&mut c, Duration::from_secs(300)).map(drop)
    }

    fn cleanup(&self) {
        if !self.dir.exists() {
            return;
        }
        if let Err(e) = self.remove_all() {
            eprintln!("berth-bench: cleanup: podman: {e}");
        }
        for pid in self.conmons() {
            kill_tree(pid);
        }
        if !self.had_libpod_parent {
            remove_cgroup_tree("libpod_parent");
        }
        if !unmount_below(&self.dir) {
            eprintln!(
                "berth-bench: cleanup: mounts left below {}; not removing it",
                self.dir.display()
            );
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("berth-bench: cleanup: remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn hard_limit(r: libc::__rlimit_resource_t) -> Result<libc::rlim_t> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: l is a valid, writable rlimit.
    if unsafe { libc::getrlimit(r, &raw mut l) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(l.rlim_max)
}

/// The work directory: removed (after unmounting anything below it) when dropped, after the
/// engines inside it are gone. By default it is the mount point of a fresh ext4 on a loop
/// device (the same kind of filesystem `berth-bench pull` uses), so every engine writes to a
/// filesystem with no history: on this machine's root filesystem (ext4 without a journal)
/// each new inode is looked for past those freed in the last minutes, so a start there costs
/// more after a pull or another bench than on a quiet machine.
#[derive(Debug)]
pub struct WorkDir {
    pub path: PathBuf,
    /// The loop filesystem mounted here (its sparse file is `<path>.img`), unless `--no-loop`.
    loop_fs: Option<LoopFs>,
}

impl WorkDir {
    pub fn new(parent: &Path, loop_fs: bool) -> Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix("bbe.")
            .tempdir_in(parent)
            .map_err(|e| format!("create a work directory in {}: {e}", parent.display()))?;
        let mut w = WorkDir {
            path: dir.keep(),
            loop_fs: None,
        };
        if loop_fs {
            let mut img = w.path.clone().into_os_string();
            img.push(".img");
            let img = PathBuf::from(img);
            match LoopFs::mount(&img, LOOP_FS_BYTES, &w.path) {
                Ok(fs) => w.loop_fs = Some(fs),
                Err(e) => {
                    let _ = std::fs::remove_file(&img);
                    return Err(e);
                }
            }
        }
        Ok(w)
    }

    /// What the stores are written to, for the report.
    pub fn describe(&self) -> String {
        match &self.loop_fs {
            Some(fs) => fs.describe(&self.path),
            None => format!("{} (the host's filesystem)", self.path.display()),
        }
    }

    /// `"loop-ext4"` or `"host"`, for the RESULT line.
    pub fn kind(&self) -> &'static str {
        if self.loop_fs.is_some() {
            "loop-ext4"
        } else {
            "host"
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Everything at or below the work directory, the loop filesystem itself last.
        if !unmount_below(&self.path) {
            eprintln!(
                "berth-bench: cleanup: mounts left below {}; not removing it",
                self.path.display()
            );
            return;
        }
        if let Some(fs) = &self.loop_fs {
            fs.detach();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("berth-bench: cleanup: remove {}: {e}", self.path.display());
        }
    }
}

/// Soft and hard `RLIMIT_NOFILE` and `RLIMIT_NPROC` of this process, the kernel's pid_max, and
/// the pids cgroup's limit of this process if it has one.
pub fn limits() -> serde_json::Value {
    let rl = |r: libc::__rlimit_resource_t| {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: l is a valid, writable rlimit.
        if unsafe { libc::getrlimit(r, &raw mut l) } == 0 {
            let show = |v: libc::rlim_t| {
                if v == libc::RLIM_INFINITY {
                    json!("unlimited")
                } else {
                    json!(v)
                }
            };
            json!({ "soft": show(l.rlim_cur), "hard": show(l.rlim_max) })
        } else {
            json!(null)
        }
    };
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let pids_cgroup = read("/proc/self/cgroup").and_then(|c| {
        c.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            (ctl == "pids").then(|| format!("/sys/fs/cgroup/pids{path}/pids.max"))
        })
    });
    json!({
        "nofile": rl(libc::RLIMIT_NOFILE),
        "nproc": rl(libc::RLIMIT_NPROC),
        "pid_max": read("/proc/sys/kernel/pid_max"),
        "threads_max": read("/proc/sys/kernel/threads-max"),
        "pids_cgroup_max": pids_cgroup.and_then(|p| read(&p)),
    })
}
