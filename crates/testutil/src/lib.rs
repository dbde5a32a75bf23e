//! Test fixtures shared by Berth's integration and end-to-end tests: a busybox root filesystem
//! built from Debian's `busybox-static`, OCI bundles around it, unique ids, and a runtime
//! handle whose `Drop` force-deletes every container it created, so a failing test leaves no
//! process, cgroup or state behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

/// Where Debian's busybox-static installs its static binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Fail loudly (never skip) when a test's host precondition is missing.
pub fn require(cond: bool, what: &str) {
    assert!(
        cond,
        "test precondition missing: {what}. Run ./scripts/deps.sh (as root) to install what the tests need."
    );
}

/// Assert that the command described by `what` succeeded; returns its stdout.
pub fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Assert that the command described by `what` failed; returns its stderr.
pub fn failed(what: &str, out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{what} unexpectedly succeeded: stdout {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Require root: privileged tests never skip silently.
pub fn require_root() {
    require(
        rustix_uid() == 0,
        "these tests create containers and must run as root",
    );
}

fn rustix_uid() -> u32 {
    // Read our uid from /proc to avoid a libc dependency here.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

/// A process-unique id with a readable prefix.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Build a busybox root filesystem in `dir`: `/bin/busybox` plus its applets as symlinks,
/// `/etc/passwd` and `/etc/group`, and the usual empty mount points.
pub fn busybox_rootfs(dir: &Path) {
    require(
        Path::new(BUSYBOX).exists(),
        "/bin/busybox (Debian package busybox-static)",
    );
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "root",
        "run",
        "var/tmp",
        "home/user",
    ] {
        std::fs::create_dir_all(dir.join(d)).expect("create rootfs directory");
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox")).expect("copy busybox into rootfs");
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("run busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("write passwd");
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n",
    )
    .expect("write group");
    // Let a non-root container user write /tmp.
    let _ = Command::new("chmod")
        .arg("1777")
        .arg(dir.join("tmp"))
        .status();
}

/// A bundle directory (rootfs + config.json) that is removed when dropped.
#[derive(Debug)]
pub struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// A busybox bundle with [`default_config`] running `args`.
    pub fn busybox(args: &[&str]) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("berth-bundle-")
            .tempdir()
            .expect("create bundle dir");
        busybox_rootfs(&dir.path().join("rootfs"));
        let b = Bundle { dir };
        b.write_config(&default_config(args));
        b
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The current config.
    pub fn config(&self) -> Value {
        let bytes = std::fs::read(self.path().join("config.json")).expect("read config.json");
        serde_json::from_slice(&bytes).expect("parse config.json")
    }

    /// Replace config.json.
    pub fn write_config(&self, v: &Value) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(v).expect("encode config"),
        )
        .expect("write config.json");
    }

    /// Edit config.json in place.
    pub fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut v = self.config();
        f(&mut v);
        self.write_config(&v);
    }
}

/// The config `runc spec` writes, without a terminal, running `args`: fresh pid, network, ipc,
/// uts, mount and cgroup namespaces, the default mounts, masked and read-only paths.
pub fn default_config(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "berth-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// A `berth-runtime` binary bound to a private state root. Dropping it force-deletes every
/// container left in that root.
#[derive(Debug)]
pub struct Runtime {
    bin: PathBuf,
    root: tempfile::TempDir,
}

impl Runtime {
    /// Use the binary at `bin` (tests pass `env!("CARGO_BIN_EXE_berth-runtime")`).
    pub fn new(bin: impl Into<PathBuf>) -> Runtime {
        let root = tempfile::Builder::new()
            .prefix("berth-rt-")
            .tempdir()
            .expect("create state root");
        Runtime {
            bin: bin.into(),
            root,
        }
    }

    /// The binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A command with `--root` set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path());
        c
    }

    /// Run with `args` and capture everything. Output goes through files, not pipes: a
    /// detached container keeps the runtime's stdio, and waiting for a pipe to close would wait
    /// for the container.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().expect("create a file for stdout");
        let err = tempfile::tempfile().expect("create a file for stderr");
        let status = self
            .cmd()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("dup stdout file"))
            .stderr(err.try_clone().expect("dup stderr file"))
            .status()
            .expect("spawn berth-runtime");
        let read = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut v = Vec::new();
            f.seek(std::io::SeekFrom::Start(0))
                .expect("rewind output file");
            f.read_to_end(&mut v).expect("read output file");
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
        succeeded(&format!("berth-runtime {args:?}"), &self.run(args))
    }

    /// Run and require failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        failed(&format!("berth-runtime {args:?}"), &self.run(args))
    }

    /// `state ID` parsed.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state output is JSON")
    }

    /// Ids of the containers in this root.
    pub fn ids(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = self.cmd().args(["delete", "--force", &id]).output();
        }
    }
}

pub mod registry;

/// Host-side facts tests compare against.
pub mod host {
    use std::path::PathBuf;

    /// Every cgroup directory (v1 controllers and the unified hierarchy) whose name ends in `id`.
    pub fn cgroup_dirs_named(id: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        fn walk(dir: &std::path::Path, id: &str, out: &mut Vec<PathBuf>, depth: u32) {
            if depth > 6 {
                return;
            }
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let p = e.path();
                    if e.file_name().to_string_lossy() == id {
                        out.push(p.clone());
                    }
                    walk(&p, id, out, depth + 1);
                }
            }
        }
        walk(std::path::Path::new("/sys/fs/cgroup"), id, &mut out, 0);
        out
    }

    /// Mount points on the host whose path contains `needle`.
    pub fn mounts_containing(needle: &str) -> Vec<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.contains(needle))
            .collect()
    }

    /// Wait (at most 5 s) for the idle standby shims among `processes_with(needle)` to exit
    /// on their own, as they do once their daemon is gone: killing one instead would leave
    /// the cgroup directories it made while waiting.
    pub fn let_standby_shims_finish(needle: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while processes_with(needle).into_iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "berth-standby")
        }) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The processes that have `needle` in their command line.
    pub fn processes_with(needle: &str) -> Vec<u32> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if pid == std::process::id() {
                    continue;
                }
                if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                    if String::from_utf8_lossy(&cmd).contains(needle) {
                        out.push(pid);
                    }
                }
            }
        }
        out
    }

    /// The nat chains CNI's `portmap` plugin shares between all its users on a host.
    const PORTMAP_CHAINS: [&str; 3] = [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "CNI-HOSTPORT-SETMARK",
    ];
    /// The built-in nat chains `portmap` jumps to them from.
    const PORTMAP_FROM: [&str; 3] = ["PREROUTING", "OUTPUT", "POSTROUTING"];

    /// How many guards of one kind this process holds, and whether what they guard existed
    /// before the first of them began (then it is not this process's to remove).
    struct Holders(std::sync::Mutex<(usize, bool)>);

    impl Holders {
        const fn new() -> Holders {
            Holders(std::sync::Mutex::new((0, false)))
        }

        /// One more holder; the first asks `existed`.
        fn hold(&self, existed: impl FnOnce() -> bool) {
            let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if h.0 == 0 {
                h.1 = existed();
            }
            h.0 += 1;
        }

        /// One holder fewer. When that was the last and what they guard appeared meanwhile,
        /// returns the lock, held while the caller removes it so that no new holder starts.
        fn release(&self) -> Option<std::sync::MutexGuard<'_, (usize, bool)>> {
            let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
            h.0 -= 1;
            (h.0 == 0 && !h.1).then_some(h)
        }
    }

    /// Tests of this process holding a [`PortmapChains`].
    static PORTMAP_USERS: Holders = Holders::new();

    /// Held by a test that may publish ports. `portmap` creates its shared chains on first use
    /// and never removes them; when the last holder in this process is dropped (also when its
    /// test failed), chains that did not exist before the first holder began are removed
    /// again, unless a port mapping is still in them.
    #[must_use = "the chains are checked when the guard is dropped"]
    pub struct PortmapChains(());

    /// Start holding a [`PortmapChains`].
    pub fn portmap_chains() -> PortmapChains {
        PORTMAP_USERS.hold(|| iptables(&["-S", PORTMAP_CHAINS[0]]).is_some());
        PortmapChains(())
    }

    impl Drop for PortmapChains {
        fn drop(&mut self) {
            let Some(_last) = PORTMAP_USERS.release() else {
                return;
            };
            // Still holding a mapping (a leak another check reports): leave them.
            match iptables(&["-S", PORTMAP_CHAINS[0]]) {
                Some(rules) if rules.lines().all(|l| l.starts_with("-N ")) => {}
                _ => return,
            }
            // Every rule that jumps to one of them, whatever portmap's version put around the
            // target (`-S` prints it quoted for a shell, as `-D` takes it back).
            for from in PORTMAP_FROM {
                let Some(rules) = iptables(&["-S", from]) else {
                    continue;
                };
                for rule in rules.lines().filter(|r| jumps_to_portmap(r)) {
                    let Some(spec) = rule.strip_prefix("-A ") else {
                        continue;
                    };
                    let _ = std::process::Command::new("sh")
                        .args(["-c", &format!("iptables -w -t nat -D {spec}")])
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
            for chain in PORTMAP_CHAINS {
                let _ = iptables(&["-F", chain]);
                let _ = iptables(&["-X", chain]);
            }
        }
    }

    /// Tests of this process holding a [`BerthCgroups`].
    static BERTH_CGROUP_USERS: Holders = Holders::new();

    /// Held by fixtures that start berthd. Containers' cgroups are made below `/berth/NS` in
    /// every hierarchy, and those parents outlive the daemon (as Docker's `/docker` does).
    /// When the last holder in this process is dropped, a `/berth` that did not exist before
    /// the first holder began is removed, namespaces and all, once it is empty; an exiting
    /// standby shim may hold its pool for a moment, so this waits up to 3 s. Anything still
    /// in use there (a leak another check reports) is left alone.
    #[must_use = "the cgroups are checked when the guard is dropped"]
    pub struct BerthCgroups(());

    /// Start holding a [`BerthCgroups`].
    pub fn berth_cgroups() -> BerthCgroups {
        BERTH_CGROUP_USERS.hold(|| !berth_cgroup_dirs().is_empty());
        BerthCgroups(())
    }

    impl Drop for BerthCgroups {
        fn drop(&mut self) {
            let Some(_last) = BERTH_CGROUP_USERS.release() else {
                return;
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            loop {
                for top in berth_cgroup_dirs() {
                    for ns in subdirs(&top) {
                        for pool in subdirs(&ns) {
                            if pool
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with(".pool-"))
                            {
                                let _ = std::fs::remove_dir(&pool);
                            }
                        }
                        let _ = std::fs::remove_dir(&ns);
                    }
                    let _ = std::fs::remove_dir(&top);
                }
                if berth_cgroup_dirs().is_empty() || std::time::Instant::now() > deadline {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    /// `/sys/fs/cgroup/berth` (unified) and `/sys/fs/cgroup/*/berth` (each v1 hierarchy) that
    /// exist.
    pub fn berth_cgroup_dirs() -> Vec<PathBuf> {
        let root = std::path::Path::new("/sys/fs/cgroup");
        let mut out: Vec<PathBuf> = subdirs(root).iter().map(|h| h.join("berth")).collect();
        out.push(root.join("berth"));
        out.retain(|d| d.is_dir());
        out
    }

    /// The directories directly in `dir` (none if it cannot be read).
    fn subdirs(dir: &std::path::Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a rule of `iptables -S` jumps to one of portmap's chains.
    fn jumps_to_portmap(rule: &str) -> bool {
        let words: Vec<&str> = rule.split_whitespace().collect();
        words
            .windows(2)
            .any(|w| (w[0] == "-j" || w[0] == "-g") && PORTMAP_CHAINS.contains(&w[1]))
    }

    /// `iptables -w -t nat ARGS`: its output if it succeeded.
    fn iptables(args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("iptables")
            .args(["-w", "-t", "nat"])
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
