//! What the pull benchmark stands on: timed children with their peak RSS, the page cache, a
//! scratch directory that is unmounted and removed even on error, a private containerd, and
//! the OCI layout of the bench image.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Result;
use crate::subject::{describe, read_all, show};

// ---------------------------------------------------------------------------------------------
// Timed children
// ---------------------------------------------------------------------------------------------

/// A child started with `fork` (so that its `ru_maxrss` is its own: see `rss.rs`), stdin and
/// stdout `/dev/null`, stderr in a file. Killed and reaped when dropped unwaited.
#[derive(Debug)]
pub struct Running {
    pid: libc::pid_t,
    what: String,
    err: File,
    reaped: bool,
}

/// How a child ended: its wall time from spawn, its peak RSS, and the busy CPU time of the
/// whole host meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub wall: Duration,
    pub maxrss_kib: u64,
    /// CPU seconds the host was busy (all CPUs) between spawn and exit: [`HostCpu`].
    pub host_cpu_secs: f64,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Result<Running> {
        let err = tempfile::tempfile().map_err(|e| format!("create a file for stderr: {e}"))?;
        let err_for_child = err
            .try_clone()
            .map_err(|e| format!("dup the stderr file: {e}"))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_for_child));
        // SAFETY: the hook does nothing, so it cannot break anything between fork and exec; it
        // only makes std fork instead of posix_spawn (see rss.rs).
        unsafe {
            cmd.pre_exec(|| Ok(()));
        }
        let what = show(cmd);
        let child: Child = cmd.spawn().map_err(|e| format!("spawn {what}: {e}"))?;
        let pid = libc::pid_t::try_from(child.id())
            .map_err(|e| format!("pid {} out of range: {e}", child.id()))?;
        // std's Child does not wait when dropped; we reap the pid ourselves with wait4.
        drop(child);
        Ok(Running {
            pid,
            what,
            err,
            reaped: false,
        })
    }

    /// Wait for the child; an error unless it exited 0. Returns its peak RSS in KiB.
    pub fn wait(mut self) -> Result<u64> {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is a plain C struct of integers, for which all zero bytes are valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = loop {
            // SAFETY: pid is our own unreaped child; status and usage are valid and writable.
            let r = unsafe { libc::wait4(self.pid, &raw mut status, 0, &raw mut usage) };
            if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break r;
            }
        };
        if r < 0 {
            return Err(format!(
                "wait4 {}: {}",
                self.what,
                std::io::Error::last_os_error()
            ));
        }
        self.reaped = true;
        let exit = std::process::ExitStatus::from_raw(status);
        if !exit.success() {
            let err = self.err.try_clone().map(read_all).unwrap_or_default();
            return Err(format!(
                "{} failed ({}): {}",
                self.what,
                describe(exit),
                tail(&err, 20)
            ));
        }
        u64::try_from(usage.ru_maxrss)
            .map_err(|e| format!("ru_maxrss {} out of range: {e}", usage.ru_maxrss))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: pid is our own child, not yet reaped, so it names no other process.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            let mut status: libc::c_int = 0;
            // SAFETY: as above; a null rusage pointer is allowed by waitpid.
            unsafe {
                libc::waitpid(self.pid, &raw mut status, 0);
            }
        }
    }
}

/// Run `cmd` to completion, timing spawn+wait; an error unless it exits 0.
pub fn measure(cmd: &mut Command) -> Result<Measured> {
    let cpu = HostCpu::now()?;
    let start = Instant::now();
    let maxrss_kib = Running::spawn(cmd)?.wait()?;
    Ok(Measured {
        wall: start.elapsed(),
        maxrss_kib,
        host_cpu_secs: cpu.busy_since()?,
    })
}

/// The host's busy CPU time so far: every CPU's user, nice, system, irq and softirq time from
/// the `cpu` line of `/proc/stat` (idle, iowait and steal, time the hypervisor gave to others,
/// are not ours). Over a pull it counts everything the pull made the machine do: the tool, its
/// daemon, the registry serving it, the kernel's writeback and journal while it ran.
#[derive(Debug, Clone, Copy)]
pub struct HostCpu(u64);

impl HostCpu {
    pub fn now() -> Result<HostCpu> {
        let stat =
            std::fs::read_to_string("/proc/stat").map_err(|e| format!("read /proc/stat: {e}"))?;
        Ok(HostCpu(busy_ticks(&stat)?))
    }

    /// CPU seconds the host was busy since `self`.
    pub fn busy_since(self) -> Result<f64> {
        let ticks = HostCpu::now()?.0.saturating_sub(self.0);
        // `/proc/stat` counts in the kernel's USER_HZ (the auxiliary vector's AT_CLKTCK).
        let hz = rustix::param::clock_ticks_per_second().max(1);
        #[allow(clippy::cast_precision_loss, reason = "tick counts are far below 2^53")]
        Ok(ticks as f64 / hz as f64)
    }
}

/// The busy ticks in `/proc/stat`'s text: the `cpu` line's user, nice, system, irq and softirq.
fn busy_ticks(stat: &str) -> Result<u64> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("/proc/stat has no \"cpu\" line")?;
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("/proc/stat: {line:?}: {e}"))?;
    if f.len() < 7 {
        return Err(format!("/proc/stat: {line:?}: fewer than 7 fields"));
    }
    // user nice system idle iowait irq softirq [steal guest guest_nice]
    Ok(f[0] + f[1] + f[2] + f[5] + f[6])
}

/// Run `cmd` to completion and return its standard output; an error with its stderr unless it
/// exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn {}: {e}", show(cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            show(cmd),
            describe(out.status),
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` non-empty lines of `s`, or a note that there were none.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(no output on stderr)".into();
    }
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Page cache
// ---------------------------------------------------------------------------------------------

/// `sync`, timed: the writeback a pull left behind.
pub fn sync() -> Duration {
    let start = Instant::now();
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    start.elapsed()
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: the next pull reads its blobs from disk and finds
/// no dentries or inodes of the previous one.
pub fn drop_caches() -> Result<()> {
    sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| format!("drop the page cache (/proc/sys/vm/drop_caches): {e}; pass --keep-page-cache to run without"))
}

// ---------------------------------------------------------------------------------------------
// Mounts and the scratch directory
// ---------------------------------------------------------------------------------------------

/// Undo the octal escapes (`\040` for a space, ...) of a mountinfo field.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(Ok(oct)) = b.get(i + 1..i + 4).map(std::str::from_utf8)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    out.dedup();
    out
}

/// Unmount (lazily, deepest first) everything at or below `dir`; true when nothing is left.
pub fn unmount_below(dir: &Path) -> bool {
    for _ in 0..3 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            return true;
        }
        for m in mounts {
            let _ = umount_detach(&m);
        }
    }
    mounts_below(dir).is_empty()
}

fn umount_detach(target: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated path that lives across the call.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Unmount everything below `dir`, then remove it; never recurses into a mount it could not
/// remove (the directory is left, and the error says where).
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !unmount_below(dir) {
        return Err(format!(
            "{} still has mounts below it after unmounting; left in place: {:?}",
            dir.display(),
            mounts_below(dir)
        ));
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("remove {}: {e}", dir.display()))
}

/// Size of the sparse file behind the scratch filesystem: one pull at a time lives there.
pub const LOOP_FS_BYTES: u64 = 16 << 30;

/// A fresh ext4 in a sparse file on a loop device with direct I/O (so pages are not cached
/// twice), mounted by [`LoopFs::mount`]. Whoever holds it unmounts everything on it, then
/// calls [`LoopFs::detach`].
#[derive(Debug)]
pub struct LoopFs {
    dev: String,
    img: PathBuf,
}

impl LoopFs {
    /// Make the sparse file `img` (`bytes` long), an ext4 in it, and mount that on the
    /// existing directory `mnt`. On an error nothing is left attached or mounted (the file is
    /// left to the caller).
    pub fn mount(img: &Path, bytes: u64, mnt: &Path) -> Result<LoopFs> {
        File::create(img)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| format!("create the sparse file {}: {e}", img.display()))?;
        output(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .args(["-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"])
                .arg(img),
        )
        .map_err(|e| format!("{e} (Debian package e2fsprogs; or pass --no-loop)"))?;
        let dev = output(
            Command::new("losetup")
                .args(["--find", "--show", "--direct-io=on"])
                .arg(img),
        )
        .map_err(|e| format!("{e} (no free loop device? pass --no-loop)"))?;
        let fs = LoopFs {
            dev: dev.trim().to_owned(),
            img: img.to_path_buf(),
        };
        if let Err(e) = output(
            Command::new("mount")
                .args(["-t", "ext4"])
                .arg(&fs.dev)
                .arg(mnt),
        ) {
            fs.detach();
            return Err(e);
        }
        Ok(fs)
    }

    /// For the report: what `mnt`, where it is mounted, is.
    pub fn describe(&self, mnt: &Path) -> String {
        format!(
            "{} (a fresh ext4 on {}, direct I/O, backed by the sparse file {})",
            mnt.display(),
            self.dev,
            self.img.display()
        )
    }

    /// Detach the device (after its filesystem was unmounted) and remove the sparse file;
    /// errors are printed, not returned: this runs during cleanup.
    pub fn detach(&self) {
        if let Err(e) = output(Command::new("losetup").arg("-d").arg(&self.dev)) {
            eprintln!("berth-bench: cleanup: {e}");
        }
        if let Err(e) = std::fs::remove_file(&self.img)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("berth-bench: cleanup: remove {}: {e}", self.img.display());
        }
    }
}

/// The benchmark's temporary directory: every store, extraction and daemon root lives below
/// its work directory. By default that is a private ext4 on a loop device (direct I/O, so pages
/// are not cached twice) backed by a sparse file in the temporary directory: every tool writes
/// to the same fresh filesystem, and removing a gigabyte-sized store between pulls takes a
/// second or two instead of a minute on a host filesystem mounted with `discard`. Dropping it
/// unmounts everything below it, detaches the loop device and removes the directory.
#[derive(Debug)]
pub struct Scratch {
    base: PathBuf,
    work: PathBuf,
    loop_fs: Option<LoopFs>,
}

impl Scratch {
    pub fn new(parent: Option<&Path>, loop_fs: bool) -> Result<Scratch> {
        let mut b = tempfile::Builder::new();
        b.prefix("berth-bench-pull-");
        let dir = match parent {
            Some(p) => b.tempdir_in(p),
            None => b.tempdir(),
        }
        .map_err(|e| format!("create a scratch directory: {e}"))?;
        let base = dir.keep();
        let mut s = Scratch {
            work: base.clone(),
            base,
            loop_fs: None,
        };
        if loop_fs {
            s.make_loop_fs()?;
        }
        Ok(s)
    }

    fn make_loop_fs(&mut self) -> Result<()> {
        let mnt = self.base.join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| format!("create {}: {e}", mnt.display()))?;
        self.loop_fs = Some(LoopFs::mount(
            &self.base.join("fs.img"),
            LOOP_FS_BYTES,
            &mnt,
        )?);
        self.work = mnt;
        Ok(())
    }

    /// What the stores are written to, for the report.
    pub fn describe(&self) -> String {
        match &self.loop_fs {
            Some(fs) => fs.describe(&self.work),
            None => format!("{} (the host's filesystem)", self.work.display()),
        }
    }

    /// A fresh, empty directory `name` below the work directory (emptied if it existed).
    pub fn fresh(&self, name: &str) -> Result<PathBuf> {
        let d = self.work.join(name);
        remove_tree(&d)?;
        std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        Ok(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let unmounted = unmount_below(&self.base);
        if let Some(fs) = &self.loop_fs {
            fs.detach();
        }
        if !unmounted {
            eprintln!(
                "berth-bench: cleanup: {} still has mounts below it; left in place: {:?}",
                self.base.display(),
                mounts_below(&self.base)
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.base) {
            eprintln!("berth-bench: cleanup: remove {}: {e}", self.base.display());
        }
    }
}

/// Entries (files, directories, links, ...) at or below `dir`, not counting `dir` itself and
/// never following symbolic links.
pub fn count_entries(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            n += 1;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// A private containerd
// ---------------------------------------------------------------------------------------------

/// Plugins a pull does not need (and that would otherwise probe the host).
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

/// A daemon the bench started in its own process group, with its log in a file; stopped
/// (SIGTERM, then SIGKILL after 10 s) when dropped.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Start `cmd` with its output in `log` and wait (at most 30 s) until `socket` accepts.
    pub fn start(
        name: &'static str,
        mut cmd: Command,
        socket: PathBuf,
        log: PathBuf,
    ) -> Result<Daemon> {
        let out = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("dup {name}'s log: {e}"))?;
        // Its own process group: a Ctrl-C reaches the bench, which then stops it in order.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        let mut me = Daemon {
            name,
            child: Some(child),
            socket,
            log,
        };
        me.wait_ready()?;
        Ok(me)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "{} exited during start-up ({}): {}",
                    self.name,
                    describe(status),
                    self.log_tail()
                ));
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not open {} within 30 s: {}",
                    self.name,
                    self.socket.display(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 20)
    }

    /// `(VmRSS, VmHWM)` of the daemon in KiB: now, and the peak since it started.
    pub fn rss_kib(&self) -> Result<(u64, u64)> {
        let name = self.name;
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| format!("{name} is not running"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("read /proc/{pid}/status of {name}: {e}"))?;
        let field = |field: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Stop the daemon and wait for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: pid is our own child, not yet reaped, so it names no other process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A containerd whose root, state, temp dir, socket and log are all in `dir`. The caller
/// removes `dir` after stopping it.
#[derive(Debug)]
pub struct Containerd {
    pub daemon: Daemon,
    dir: PathBuf,
}

impl Containerd {
    pub fn start(bin: &Path, dir: &Path) -> Result<Containerd> {
        let p = |s: &str| dir.join(s).display().to_string();
        for d in ["root", "state", "tmp"] {
            std::fs::create_dir_all(dir.join(d))
                .map_err(|e| format!("create {}: {e}", dir.join(d).display()))?;
        }
        let disabled = CONTAINERD_DISABLED_PLUGINS
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ntemp = {tmp:?}\nplugin_dir = \"\"\n\
             disabled_plugins = [{disabled}]\n\n[grpc]\n  address = {sock:?}\n\n[ttrpc]\n  address = {ttrpc:?}\n\n\
             [debug]\n  address = \"\"\n  level = \"warn\"\n\n[metrics]\n  address = \"\"\n",
            root = p("root"),
            state = p("state"),
            tmp = p("tmp"),
            sock = p("containerd.sock"),
            ttrpc = p("containerd.sock.ttrpc"),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("write {}: {e}", config_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&config_path);
        let daemon = Daemon::start(
            "containerd",
            cmd,
            dir.join("containerd.sock"),
            dir.join("containerd.log"),
        )?;
        Ok(Containerd {
            daemon,
            dir: dir.to_path_buf(),
        })
    }

    /// Where containerd keeps content and snapshots.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

/// A berthd for the store `root` (its state, socket and pid file in `root/run`), started the
/// way `berth` would start it, but by the bench, so that the pull's time does not include the
/// daemon's start, as ctr's does not include containerd's.
pub fn start_berthd(bin: &Path, root: &Path) -> Result<Daemon> {
    let mut cmd = Command::new(bin);
    cmd.arg("--root").arg(root);
    std::fs::create_dir_all(root).map_err(|e| format!("create {}: {e}", root.display()))?;
    Daemon::start(
        "berthd",
        cmd,
        root.join("run").join("berth.sock"),
        root.join("berthd.log"),
    )
}

// ---------------------------------------------------------------------------------------------
// The image
// ---------------------------------------------------------------------------------------------

/// One layer blob of the bench image.
#[derive(Debug)]
pub struct Layer {
    pub path: PathBuf,
    pub size: u64,
}

/// The bench image's OCI layout, read far enough to find its layers, plus what
/// `make-pull-image.sh` wrote about it in `summary.json` beside the layout, when present.
#[derive(Debug)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: String,
    pub layers: Vec<Layer>,
    pub files: Option<u64>,
    pub uncompressed: Option<u64>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("{digest:?} is not a sha256 digest"))?;
    Ok(dir.join("blobs/sha256").join(hex))
}

impl Image {
    /// Read the manifest tagged `bench` in the layout at `dir`.
    pub fn open(dir: &Path) -> Result<Image> {
        let index = read_json(&dir.join("index.json")).map_err(|e| {
            format!(
                "{e}; build the image with `bench/scripts/make-pull-image.sh` (or pass --image DIR)"
            )
        })?;
        let desc = index["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter().find(|d| {
                    d["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some("bench")
                })
            })
            .ok_or_else(|| {
                format!(
                    "{}/index.json has no manifest tagged `bench`",
                    dir.display()
                )
            })?;
        let manifest = desc["digest"]
            .as_str()
            .ok_or("the index entry has no digest")?
            .to_owned();
        let m = read_json(&blob_path(dir, &manifest)?)?;
        let mut layers = Vec::new();
        for l in m["layers"].as_array().ok_or("the manifest has no layers")? {
            let digest = l["digest"].as_str().ok_or("a layer has no digest")?;
            let path = blob_path(dir, digest)?;
            let size = std::fs::metadata(&path)
                .map_err(|e| format!("layer blob {}: {e}", path.display()))?
                .len();
            layers.push(Layer { path, size });
        }
        let summary = dir
            .parent()
            .map(|p| p.join("summary.json"))
            .and_then(|p| read_json(&p).ok());
        let field = |k: &str| summary.as_ref().and_then(|s| s[k].as_u64());
        Ok(Image {
            dir: dir.to_path_buf(),
            manifest,
            layers,
            files: field("files"),
            uncompressed: field("uncompressed_bytes"),
        })
    }

    pub fn compressed(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_ticks_leave_out_idle_iowait_and_steal() {
        let stat = "cpu  100 2 30 5000 40 6 7 800 0 0\ncpu0 50 1 15 2500 20 3 3 400 0 0\n";
        assert_eq!(busy_ticks(stat).unwrap(), 100 + 2 + 30 + 6 + 7);
        assert!(busy_ticks("cpu0 1 2 3 4 5 6 7\n").is_err());
        assert!(busy_ticks("cpu  1 2 3\n").is_err());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("  \n", 2), "(no output on stderr)");
    }

    #[test]
    fn counts_entries_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/", d.path().join("root-link")).unwrap();
        assert_eq!(count_entries(d.path()), 4);
    }

    #[test]
    fn reads_a_layout() {
        let d = tempfile::tempdir().unwrap();
        let oci = d.path().join("oci");
        std::fs::create_dir_all(oci.join("blobs/sha256")).unwrap();
        let (l, m) = ("a".repeat(64), "b".repeat(64));
        std::fs::write(oci.join("blobs/sha256").join(&l), "12345").unwrap();
        std::fs::write(
            oci.join("blobs/sha256").join(&m),
            format!(r#"{{"layers":[{{"digest":"sha256:{l}","size":5}}]}}"#),
        )
        .unwrap();
        std::fs::write(
            oci.join("index.json"),
            format!(
                r#"{{"manifests":[{{"digest":"sha256:{m}","annotations":{{"org.opencontainers.image.ref.name":"bench"}}}}]}}"#
            ),
        )
        .unwrap();
        std::fs::write(d.path().join("summary.json"), r#"{"files":7}"#).unwrap();
        let img = Image::open(&oci).unwrap();
        assert_eq!(img.manifest, format!("sha256:{m}"));
        assert_eq!(
            (img.layers.len(), img.compressed(), img.files),
            (1, 5, Some(7))
        );
        assert!(Image::open(d.path()).is_err());
    }
}
