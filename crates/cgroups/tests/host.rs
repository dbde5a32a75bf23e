//! Integration tests against the host's real cgroup file systems (root only).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use berth_cgroups::{CgroupPaths, FreezerState, Hierarchy, Layout, Manager};
use oci_spec::runtime::LinuxResources;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests manage host cgroups and must run as root (CI runs them as root)"
    );
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "berth-cgtest-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Kills the child and removes the cgroup (then the parents a test made for it) even when an
/// assertion fails.
struct Guard {
    mgr: Manager,
    child: Option<Child>,
    parents: Vec<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.mgr.kill_all(libc::SIGKILL);
        let _ = self.mgr.thaw();
        let _ = self.mgr.destroy();
        for d in &self.parents {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A unique name, and a manager and its guard for the cgroup `/<name>` in every hierarchy (with
/// `child`, `/<name>/<child>`; the guard then removes `/<name>` too).
fn managed(tag: &str, child: Option<&str>) -> (Layout, String, Manager, Guard) {
    require_root();
    let layout = Layout::detect().unwrap();
    let name = unique(tag);
    let path = match child {
        Some(c) => format!("/{name}/{c}"),
        None => format!("/{name}"),
    };
    let mgr = Manager::resolve(&layout, Some(&path), &name, false).unwrap();
    let parents = match child {
        Some(_) => mgr
            .paths()
            .v1
            .values()
            .chain(mgr.paths().unified.iter())
            .map(|d| d.parent().unwrap().to_path_buf())
            .collect(),
        None => Vec::new(),
    };
    let g = Guard {
        mgr: mgr.clone(),
        child: None,
        parents,
    };
    (layout, name, mgr, g)
}

/// The v1 directory of `controller` (a mount may hold several, as `cpu,cpuacct`).
fn v1_dir<'a>(p: &'a CgroupPaths, controller: &str) -> Option<&'a Path> {
    p.v1.iter()
        .find(|(k, _)| k.split(',').any(|x| x == controller))
        .map(|(_, d)| d.as_path())
}

/// A shell that waits for a line on stdin, then probes two devices.
fn device_prober() -> Child {
    Command::new("sh")
        .arg("-c")
        .arg("read go; (: >/dev/null) 2>/dev/null && echo null-ok; (head -c1 /dev/zero >/dev/null) 2>/dev/null || echo zero-denied")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

fn pid(c: &Child) -> i32 {
    i32::try_from(c.id()).unwrap()
}

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

const DEVICES: &str = r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]"#;

fn probe_devices(g: &mut Guard) -> String {
    let mut child = g.child.take().unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn full_cycle_on_the_hosts_hierarchies() {
    let (layout, name, mgr, mut g) = managed("cycle", None);
    let r = resources(&format!(
        r#"{{"memory":{{"limit":67108864}},"pids":{{"limit":20}},"cpu":{{"shares":512,"quota":50000,"period":100000,"cpus":"0"}},"devices":{DEVICES}}}"#
    ));
    mgr.check(&r).unwrap();
    mgr.create().unwrap();
    mgr.apply(&r).unwrap();

    let read = |dir: &Path, f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let p = mgr.paths().clone();
    if layout.hierarchy() == Hierarchy::Unified {
        let dir = p.unified.as_deref().unwrap();
        assert_eq!(read(dir, "memory.max"), "67108864");
        assert_eq!(read(dir, "pids.max"), "20");
        assert_eq!(read(dir, "cpu.max"), "50000 100000");
    } else {
        let dir = |c: &str| v1_dir(&p, c).unwrap();
        assert_eq!(read(dir("memory"), "memory.limit_in_bytes"), "67108864");
        assert_eq!(read(dir("pids"), "pids.max"), "20");
        assert_eq!(read(dir("cpu"), "cpu.shares"), "512");
        assert_eq!(read(dir("cpu"), "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(dir("cpuset"), "cpuset.cpus"), "0");
        assert_eq!(read(dir("devices"), "devices.list"), "c 1:3 rwm");
    }

    g.child = Some(device_prober());
    let child_pid = pid(g.child.as_ref().unwrap());
    mgr.add_process(child_pid).unwrap();
    assert_eq!(mgr.procs().unwrap(), [child_pid]);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{child_pid}/cgroup"))
            .unwrap()
            .matches(&name)
            .count(),
        p.v1.len() + usize::from(p.unified.is_some())
    );

    mgr.freeze().unwrap();
    assert_eq!(mgr.freezer_state().unwrap(), FreezerState::Frozen);
    mgr.thaw().unwrap();
    assert_eq!(mgr.freezer_state().unwrap(), FreezerState::Thawed);

    assert_eq!(probe_devices(&mut g), "null-ok\nzero-denied\n");
    let stats = mgr.stats().unwrap();
    assert_eq!(stats.memory_limit, Some(67_108_864));
    assert_eq!(stats.pids_limit, Some(20));

    mgr.destroy().unwrap();
    for dir in p.v1.values().chain(p.unified.iter()) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    mgr.destroy().unwrap();
}

#[test]
fn kill_all_reaches_every_process_even_paused_ones() {
    let (_, _, mgr, mut g) = managed("kill", None);
    mgr.create().unwrap();
    let child = Command::new("sleep").arg("60").spawn().unwrap();
    mgr.add_process(pid(&child)).unwrap();
    g.child = Some(child);
    mgr.freeze().unwrap();
    mgr.kill_all(libc::SIGKILL).unwrap();
    mgr.thaw().unwrap();
    let status = g.child.as_mut().unwrap().wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    g.child = None;
    mgr.destroy().unwrap();
    assert!(mgr.procs().unwrap().is_empty());
}

/// The pure cgroup2 code paths (eBPF device filter, `cgroup.freeze`, `cgroup.kill`) on the host's
/// cgroup2 mount, which on a hybrid host is `/sys/fs/cgroup/unified`.
#[test]
fn cgroup2_device_filter_freeze_and_kill() {
    require_root();
    let layout = Layout::detect().unwrap();
    let probe = Manager::resolve(&layout, Some("/probe"), "probe", false).unwrap();
    let unified = probe
        .paths()
        .unified
        .clone()
        .expect("this host mounts cgroup2");
    let dir = unified.parent().unwrap().join(unique("v2"));
    let mgr = Manager::from_paths(CgroupPaths {
        v1: BTreeMap::new(),
        unified: Some(dir.clone()),
    });
    let mut g = Guard {
        mgr: mgr.clone(),
        child: None,
        parents: Vec::new(),
    };
    let r = resources(&format!(r#"{{"devices":{DEVICES}}}"#));
    mgr.check(&r).unwrap();
    mgr.create().unwrap();
    mgr.apply(&r).unwrap();
    // Applying again replaces the filter rather than stacking a second one.
    mgr.apply(&r).unwrap();

    g.child = Some(device_prober());
    let child_pid = pid(g.child.as_ref().unwrap());
    mgr.add_process(child_pid).unwrap();
    mgr.freeze().unwrap();
    assert_eq!(mgr.freezer_state().unwrap(), FreezerState::Frozen);
    mgr.thaw().unwrap();
    assert_eq!(probe_devices(&mut g), "null-ok\nzero-denied\n");

    let sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    mgr.add_process(pid(&sleeper)).unwrap();
    g.child = Some(sleeper);
    mgr.kill_all(libc::SIGKILL).unwrap();
    let status = g.child.as_mut().unwrap().wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    g.child = None;
    mgr.destroy().unwrap();
    assert!(!dir.exists());
}

#[test]
fn a_value_the_kernel_refuses_names_the_file_and_the_value() {
    let (_, _, mgr, _g) = managed("bad", None);
    mgr.create().unwrap();
    let err = mgr
        .apply(&resources(r#"{"cpu":{"cpus":"999"}}"#))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cpuset.cpus") && err.contains("\"999\""),
        "{err}"
    );
}

/// Two daemons creating the same `/berth/NAMESPACE` parents at once: the first has made a v1
/// cpuset but not yet copied its cpus and memory nodes in when the second creates a container
/// below it. The second must fill the empty parent in rather than copy its emptiness, which
/// would leave every later container there unable to take a task (`ENOSPC`).
#[test]
fn a_cpuset_parent_another_creator_left_empty_is_filled_in() {
    let (layout, _, mgr, mut g) = managed("cpuset", Some("ctr"));
    let Some(leaf) = v1_dir(mgr.paths(), "cpuset").map(Path::to_path_buf) else {
        assert_eq!(layout.hierarchy(), Hierarchy::Unified, "no v1 cpuset");
        return; // cgroup2 cpusets inherit their parent's effective set: nothing to fill in.
    };
    let parent = leaf.parent().unwrap();
    std::fs::create_dir(parent).unwrap();
    for f in ["cpuset.cpus", "cpuset.mems"] {
        std::fs::write(parent.join(f), "\n").unwrap();
        assert_eq!(std::fs::read_to_string(parent.join(f)).unwrap(), "\n");
    }

    mgr.create().unwrap();
    let child = Command::new("sleep").arg("60").spawn().unwrap();
    let child_pid = pid(&child);
    g.child = Some(child);
    mgr.add_process(child_pid).unwrap();
    assert_eq!(mgr.procs().unwrap(), [child_pid]);
    let root = parent.parent().unwrap();
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let want = std::fs::read_to_string(root.join(f)).unwrap();
        assert_eq!(std::fs::read_to_string(parent.join(f)).unwrap(), want);
        assert_eq!(std::fs::read_to_string(leaf.join(f)).unwrap(), want);
    }
}
