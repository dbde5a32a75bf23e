//! Control groups for Berth containers: v1 (legacy), v2 (unified) and hybrid hosts.
//!
//! A container's cgroup is resolved once at create time from `linux.cgroupsPath` ([`Manager::resolve`],
//! runc's semantics) into one directory per mounted hierarchy ([`CgroupPaths`]). The paths are
//! stored in the container's state, so every later command rebuilds the manager with
//! [`Manager::from_paths`] without looking at the host again. Which writes to make follows from the
//! paths: any v1 directory means v1 controllers (hybrid hosts also get the cgroup2 directory, for
//! hugetlb and `unified` keys); only a cgroup2 directory means a pure v2 host.
//!
//! There is no systemd driver: with `--systemd-cgroup` the `slice:prefix:name` path is translated
//! to the directories systemd would use and managed through the file system.

mod bpf;
mod fsutil;
mod layout;
mod path;
mod v1;
mod v2;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use layout::Layout;

/// Errors from cgroup operations. Each names the cgroup file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host's cgroup mounts could not be understood.
    #[error("cgroup layout: {0}")]
    Layout(String),
    /// A file-system operation on a cgroup failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The kernel refused a value.
    #[error("write {value:?} to {}: {source}", path.display())]
    Write {
        /// The cgroup file.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// A cgroup file held something unexpected.
    #[error("unexpected content {content:?} in {}", path.display())]
    Parse {
        /// The cgroup file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// `linux.cgroupsPath` is unusable.
    #[error("cgroupsPath: {0}")]
    InvalidPath(String),
    /// A resource value is invalid.
    #[error("linux.resources: {0}")]
    Invalid(String),
    /// The host lacks what a resource needs.
    #[error("linux.resources: {0}")]
    Unsupported(String),
    /// A cgroup could not be removed because processes stay in it.
    #[error("remove cgroup {}: still busy after 2s (processes remain in it)", path.display())]
    Busy {
        /// The cgroup directory.
        path: PathBuf,
    },
    /// The freezer did not reach the wanted state.
    #[error("freeze {}: {what}", path.display())]
    Freezer {
        /// The cgroup directory.
        path: PathBuf,
        /// What went wrong.
        what: String,
    },
    /// The cgroup2 device filter could not be installed.
    #[error("devices: {0}")]
    Bpf(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which cgroup hierarchies the host has mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hierarchy {
    /// Only v1 controller hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 mount (usually at `/sys/fs/cgroup/unified`).
    Hybrid,
    /// cgroup2 only, at `/sys/fs/cgroup`.
    Unified,
}

/// Where one container's cgroup lives, resolved once at create time and stored in the container
/// state so later commands (`kill --all`, `pause`, `delete`, `ps`, `update`) need no re-resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CgroupPaths {
    /// v1: hierarchy key (its controllers joined by `,` as mounted, e.g. `memory`, `cpu,cpuacct`,
    /// or `name=systemd`) -> absolute directory.
    pub v1: BTreeMap<String, PathBuf>,
    /// cgroup2 directory (the whole cgroup on pure v2; the unified part on hybrid).
    pub unified: Option<PathBuf>,
}

/// One mount the container needs at `/sys/fs/cgroup` for its `cgroup` mount entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMount {
    /// Path relative to `/sys/fs/cgroup` inside the container (`""` for pure v2, `memory`,
    /// `cpu,cpuacct`, `systemd`, `unified`).
    pub subdir: String,
    /// Host directory of this container's cgroup in that hierarchy (bind source).
    pub host_path: PathBuf,
    /// File-system type for a fresh mount when the container has a cgroup namespace.
    pub fstype: &'static str,
    /// Mount data for a fresh mount (`memory`, `none,name=systemd`, empty for cgroup2).
    pub data: String,
}

/// Freezer state of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    /// Processes run.
    Thawed,
    /// Processes are frozen.
    Frozen,
    /// In transition.
    Freezing,
}

/// Resource usage figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Memory usage in bytes.
    pub memory_usage: Option<u64>,
    /// Memory limit in bytes (`None` when unlimited).
    pub memory_limit: Option<u64>,
    /// Total CPU time in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Current number of tasks.
    pub pids_current: Option<u64>,
    /// Task limit (`None` when unlimited).
    pub pids_limit: Option<u64>,
}

/// Move the calling thread into each v1 cgroup directory in `dirs`, by writing `0` to its
/// `tasks` file. For a single-threaded process that moves the whole process, and the kernel
/// does it without the global threadgroup lock that a write to `cgroup.procs` takes (whose RCU
/// grace period costs about a millisecond and sometimes tens). Call it only while
/// single-threaded.
pub fn join_self(dirs: &[PathBuf]) -> Result<()> {
    for dir in dirs {
        fsutil::write(dir, "tasks", "0")?;
    }
    Ok(())
}

/// Operations on one container's cgroup.
#[derive(Debug, Clone)]
pub struct Manager {
    paths: CgroupPaths,
}

impl Manager {
    /// Resolve a container's cgroup from `linux.cgroupsPath` with runc's semantics: empty means
    /// `<id>` below the caller's own cgroup, an absolute path starts at each hierarchy's root, a
    /// relative one at the caller's cgroup; with `systemd`, `slice:prefix:name`.
    pub fn resolve(
        layout: &Layout,
        cgroups_path: Option<&str>,
        id: &str,
        systemd: bool,
    ) -> Result<Manager> {
        let sp = path::spec_path(cgroups_path, id, systemd)?;
        let place = |mountpoint: &Path, own: &str| -> PathBuf {
            if sp.absolute || own.is_empty() {
                mountpoint.join(&sp.rel)
            } else {
                mountpoint.join(own).join(&sp.rel)
            }
        };
        let mut paths = CgroupPaths::default();
        for m in &layout.v1 {
            paths.v1.insert(m.key.clone(), place(&m.mountpoint, &m.own));
        }
        paths.unified = layout
            .unified
            .as_ref()
            .map(|u| place(&u.mountpoint, &u.own));
        Ok(Manager { paths })
    }

    /// Rebuild a manager from stored paths.
    pub fn from_paths(paths: CgroupPaths) -> Manager {
        Manager { paths }
    }

    /// The resolved paths (to store in the container state).
    pub fn paths(&self) -> &CgroupPaths {
        &self.paths
    }

    fn pure_v2(&self) -> Option<&Path> {
        if self.paths.v1.is_empty() {
            self.paths.unified.as_deref()
        } else {
            None
        }
    }

    /// The v1 directory of the hierarchy that holds `controller`.
    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.paths
            .v1
            .iter()
            .find(|(k, _)| k.split(',').any(|c| c == controller))
            .map(|(_, p)| p.as_path())
    }

    fn need_v1(&self, controller: &str) -> Result<&Path> {
        self.v1_dir(controller).ok_or_else(|| {
            Error::Unsupported(format!(
                "the {controller} cgroup controller is not mounted on this host"
            ))
        })
    }

    fn need_unified(&self) -> Result<&Path> {
        self.paths.unified.as_deref().ok_or_else(|| {
            Error::Unsupported("no cgroup2 hierarchy is mounted on this host".into())
        })
    }

    fn has(&self, controller: &str) -> bool {
        match self.pure_v2() {
            Some(dir) => v2::available(dir).iter().any(|c| c == controller),
            None => self.v1_dir(controller).is_some(),
        }
    }

    fn need(&self, controller: &str, what: &str) -> Result<()> {
        if self.has(controller) {
            Ok(())
        } else {
            let kind = if self.pure_v2().is_some() {
                "cgroup2 controller"
            } else {
                "cgroup controller"
            };
            Err(Error::Unsupported(format!(
                "{what} needs the {controller} {kind}, which this host does not provide"
            )))
        }
    }

    /// Check, without touching anything, that `resources` can be applied on this host.
    pub fn check(&self, r: &LinuxResources) -> Result<()> {
        let v2 = self.pure_v2().is_some();
        if let Some(m) = r.memory() {
            self.need("memory", "memory")?;
            let (limit, swap) = (m.limit(), m.swap());
            if let (Some(l), Some(s)) = (limit, swap) {
                if l > 0 && s > 0 && s < l {
                    return Err(Error::Invalid(format!(
                        "memory.swap ({s}) is less than memory.limit ({l}); in the OCI spec swap counts memory plus swap"
                    )));
                }
            }
            if v2 {
                v2::swap_max(limit, swap)?;
            } else if swap.is_some_and(|s| s > 0) {
                let dir = self.need_v1("memory")?;
                let root = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
                if !root.join("memory.memsw.limit_in_bytes").exists() {
                    return Err(Error::Unsupported(
                        "memory.swap is set but this kernel does not account swap (no memory.memsw.limit_in_bytes); \
                         remove the swap limit or boot with swapaccount=1"
                            .into(),
                    ));
                }
            }
            if m.swappiness().is_some_and(|s| s > 100) {
                return Err(Error::Invalid(format!(
                    "memory.swappiness {} is out of range 0..=100",
                    m.swappiness().unwrap_or_default()
                )));
            }
        }
        if let Some(c) = r.cpu() {
            if c.shares().is_some()
                || c.quota().is_some()
                || c.period().is_some()
                || c.idle().is_some()
            {
                self.need("cpu", "cpu shares/quota/period")?;
            }
            if c.cpus().is_some() || c.mems().is_some() {
                self.need("cpuset", "cpu.cpus/mems")?;
            }
            if v2 && (c.realtime_runtime().is_some() || c.realtime_period().is_some()) {
                return Err(Error::Unsupported(
                    "cpu.realtimeRuntime/realtimePeriod: cgroup v2 has no realtime limits".into(),
                ));
            }
        }
        if r.pids().is_some() {
            self.need("pids", "pids.limit")?;
        }
        if let Some(b) = r.block_io() {
            self.need(if v2 { "io" } else { "blkio" }, "blockIO")?;
            if !v2
                && (b.weight().is_some()
                    || b.weight_device().as_ref().is_some_and(|w| !w.is_empty()))
            {
                let dir = self.need_v1("blkio")?;
                let root = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
                if v1::blkio_weight_file(root).is_none() {
                    return Err(Error::Unsupported(
                        "blockIO.weight is set but this host's blkio controller has no weight file \
                         (blkio.weight or blkio.bfq.weight: the I/O scheduler offers no proportional weight)"
                            .into(),
                    ));
                }
            }
        }
        if r.hugepage_limits().as_ref().is_some_and(|l| !l.is_empty()) {
            let unified_has = self
                .paths
                .unified
                .as_deref()
                .is_some_and(|u| v2::available(u).iter().any(|c| c == "hugetlb"));
            if !self.has("hugetlb") && !unified_has {
                return Err(Error::Unsupported("hugepageLimits need the hugetlb cgroup controller, which this host does not provide".into()));
            }
        }
        if let Some(n) = r.network() {
            if v2 {
                return Err(Error::Unsupported(
                    "linux.resources.network: cgroup v2 has no net_cls/net_prio".into(),
                ));
            }
            if n.class_id().is_some() {
                self.need("net_cls", "network.classID")?;
            }
            if n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
                self.need("net_prio", "network.priorities")?;
            }
        }
        if r.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(Error::Unsupported(
                "linux.resources.rdma is not supported by Berth".into(),
            ));
        }
        if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            self.need_unified()?;
            for key in u.keys() {
                if key.contains('/') || key.starts_with('.') || !key.contains('.') {
                    return Err(Error::Invalid(format!(
                        "unified key {key:?} is not a cgroup file name"
                    )));
                }
            }
        }
        if let Some(rules) = r.devices() {
            for d in rules {
                if let Some(a) = d.access() {
                    if let Some(bad) = a.chars().find(|c| !"rwm".contains(*c)) {
                        return Err(Error::Invalid(format!(
                            "devices: access {a:?} has {bad:?}; use r, w and m"
                        )));
                    }
                }
            }
            if !v2 {
                self.need("devices", "devices")?;
            }
        }
        Ok(())
    }

    /// Create the cgroup directories (and the missing ancestors, with v1 cpusets initialised).
    pub fn create(&self) -> Result<()> {
        for (key, dir) in &self.paths.v1 {
            if key.split(',').any(|c| c == "cpuset") {
                fsutil::create_dirs(dir, &v1::init_cpuset)?;
            } else {
                fsutil::create_dirs(dir, &|_| Ok(()))?;
            }
        }
        if let Some(dir) = &self.paths.unified {
            fsutil::create_dirs(dir, &|_| Ok(()))?;
        }
        Ok(())
    }

    /// Write resource limits.
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        match self.pure_v2() {
            Some(dir) => v2::apply(dir, r)?,
            None => v1::apply(self, r)?,
        }
        if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            let dir = self.need_unified()?;
            for (key, value) in u {
                if let Some((controller, _)) = key.split_once('.') {
                    if controller != "cgroup" {
                        v2::enable(dir, controller)?;
                    }
                }
                fsutil::write(dir, key, value)?;
            }
        }
        Ok(())
    }

    /// The cgroup2 directory, if the host mounts cgroup2.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.paths.unified.as_deref()
    }

    /// The v1 directories (empty on a pure v2 host).
    pub fn v1_dirs(&self) -> Vec<PathBuf> {
        self.paths.v1.values().cloned().collect()
    }

    /// Move a process into the cgroup2 directory only (see [`join_self`] for the v1 ones).
    pub fn add_process_unified(&self, pid: i32) -> Result<()> {
        match &self.paths.unified {
            Some(dir) => fsutil::write(dir, "cgroup.procs", pid.to_string()),
            None => Ok(()),
        }
    }

    /// Move a process into every hierarchy of this cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.paths.v1.values().chain(self.paths.unified.iter()) {
            fsutil::write(dir, "cgroup.procs", pid.to_string())?;
        }
        Ok(())
    }

    /// The directory whose `cgroup.procs` lists the container's processes.
    fn procs_dir(&self) -> Option<&Path> {
        self.pure_v2()
            .or_else(|| self.v1_dir("pids"))
            .or_else(|| self.v1_dir("memory"))
            .or_else(|| self.paths.v1.values().next().map(PathBuf::as_path))
    }

    /// Pids of every process in the cgroup and its children.
    pub fn procs(&self) -> Result<Vec<i32>> {
        match self.procs_dir() {
            Some(dir) => fsutil::procs(dir),
            None => Ok(Vec::new()),
        }
    }

    /// Freeze every process; waits until the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Thaw.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        if let Some(dir) = self.v1_dir("freezer") {
            if !dir.exists() {
                return Ok(());
            }
            let want = if frozen { "FROZEN" } else { "THAWED" };
            loop {
                fsutil::write(dir, "freezer.state", want)?;
                if fsutil::read(dir, "freezer.state")? == want {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = fsutil::write(dir, "freezer.state", "THAWED");
                    return Err(Error::Freezer {
                        path: dir.into(),
                        what: format!("not {want} after 5s"),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let Some(dir) = self.paths.unified.as_deref() else {
            return Err(Error::Unsupported(
                "pause needs the freezer cgroup controller".into(),
            ));
        };
        if !dir.exists() {
            return Ok(());
        }
        fsutil::write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        while !fsutil::read(dir, "cgroup.events")?
            .lines()
            .any(|l| l == want)
        {
            if Instant::now() > deadline {
                if frozen {
                    let _ = fsutil::write(dir, "cgroup.freeze", "0");
                }
                return Err(Error::Freezer {
                    path: dir.into(),
                    what: format!("cgroup.events did not show {want:?} after 5s"),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Current freezer state (a cgroup that no longer exists is thawed).
    pub fn freezer_state(&self) -> Result<FreezerState> {
        if let Some(dir) = self.v1_dir("freezer") {
            if !dir.exists() {
                return Ok(FreezerState::Thawed);
            }
            return Ok(match fsutil::read(dir, "freezer.state")?.as_str() {
                "FROZEN" => FreezerState::Frozen,
                "FREEZING" => FreezerState::Freezing,
                _ => FreezerState::Thawed,
            });
        }
        let Some(dir) = self.paths.unified.as_deref().filter(|d| d.exists()) else {
            return Ok(FreezerState::Thawed);
        };
        if fsutil::read(dir, "cgroup.freeze")? != "1" {
            return Ok(FreezerState::Thawed);
        }
        let frozen = fsutil::read(dir, "cgroup.events")?
            .lines()
            .any(|l| l == "frozen 1");
        Ok(if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Freezing
        })
    }

    /// Send `signal` to every process in the cgroup. The cgroup is frozen meanwhile (where a
    /// freezer exists) so that no process can fork out of reach; on cgroup2 SIGKILL uses
    /// `cgroup.kill`.
    pub fn kill_all(&self, signal: i32) -> Result<()> {
        if let Some(dir) = self.pure_v2() {
            if signal == libc::SIGKILL && dir.join("cgroup.kill").exists() {
                return fsutil::write(dir, "cgroup.kill", "1");
            }
        }
        if self.is_empty()? {
            return Ok(());
        }
        let was = self.freezer_state().unwrap_or(FreezerState::Thawed);
        let froze = was == FreezerState::Thawed && self.freeze().is_ok();
        let pids = self.procs();
        let mut result = Ok(());
        for pid in pids.as_deref().unwrap_or_default() {
            let Some(p) = rustix::process::Pid::from_raw(*pid) else {
                continue;
            };
            // SAFETY: the caller passes a signal number it has validated.
            let sig = unsafe { rustix::process::Signal::from_raw_unchecked(signal) };
            match rustix::process::kill_process(p, sig) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => {
                    result = Err(Error::io(
                        "signal process in cgroup",
                        format!("/proc/{pid}"),
                        e.into(),
                    ));
                }
            }
        }
        if froze {
            self.thaw()?;
        }
        pids?;
        result
    }

    /// Whether no process is left in the cgroup or its children, from a hierarchical counter
    /// where one exists (cgroup2 `populated`, v1 `pids.current`), else by listing them.
    pub fn is_empty(&self) -> Result<bool> {
        if let Some(dir) = self.pure_v2() {
            return match fsutil::read(dir, "cgroup.events") {
                Ok(ev) => Ok(ev.lines().any(|l| l == "populated 0")),
                Err(_) if !dir.exists() => Ok(true),
                Err(e) => Err(e),
            };
        }
        if let Some(dir) = self.v1_dir("pids") {
            match fsutil::read_u64(dir, "pids.current") {
                Ok(n) => return Ok(n == Some(0)),
                Err(_) if !dir.exists() => return Ok(true),
                Err(_) => {}
            }
        }
        Ok(self.procs()?.is_empty())
    }

    /// Remove the cgroup directories (child cgroups first). Missing directories are fine, so
    /// this can be repeated.
    pub fn destroy(&self) -> Result<()> {
        for dir in self.paths.v1.values().chain(self.paths.unified.iter()) {
            fsutil::remove_tree(dir)?;
        }
        Ok(())
    }

    /// Usage figures.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if let Some(dir) = self.pure_v2() {
            s.memory_usage = fsutil::read_u64(dir, "memory.current").ok().flatten();
            s.memory_limit = fsutil::read_u64(dir, "memory.max").ok().flatten();
            s.cpu_usage_ns = fsutil::read(dir, "cpu.stat").ok().and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("usage_usec ")?
                        .parse::<u64>()
                        .ok()
                        .map(|u| u * 1000)
                })
            });
            s.pids_current = fsutil::read_u64(dir, "pids.current").ok().flatten();
            s.pids_limit = fsutil::read_u64(dir, "pids.max").ok().flatten();
            return Ok(s);
        }
        if let Some(dir) = self.v1_dir("memory") {
            s.memory_usage = fsutil::read_u64(dir, "memory.usage_in_bytes")?;
            // v1 reports "unlimited" as a huge page-aligned number.
            s.memory_limit = fsutil::read_u64(dir, "memory.limit_in_bytes")?
                .filter(|l| *l < (i64::MAX as u64) / 2);
        }
        if let Some(dir) = self.v1_dir("cpuacct") {
            s.cpu_usage_ns = fsutil::read_u64(dir, "cpuacct.usage")?;
        }
        if let Some(dir) = self.v1_dir("pids") {
            s.pids_current = fsutil::read_u64(dir, "pids.current")?;
            s.pids_limit = fsutil::read_u64(dir, "pids.max")?;
        }
        Ok(s)
    }

    /// The mounts a container needs at `/sys/fs/cgroup`.
    pub fn container_mounts(&self) -> Vec<ContainerMount> {
        if let Some(dir) = self.pure_v2() {
            return vec![ContainerMount {
                subdir: String::new(),
                host_path: dir.to_path_buf(),
                fstype: "cgroup2",
                data: String::new(),
            }];
        }
        let mut out: Vec<ContainerMount> = self
            .paths
            .v1
            .iter()
            .map(|(key, dir)| match key.strip_prefix("name=") {
                Some(name) => ContainerMount {
                    subdir: name.to_string(),
                    host_path: dir.clone(),
                    fstype: "cgroup",
                    data: format!("none,{key}"),
                },
                None => ContainerMount {
                    subdir: key.clone(),
                    host_path: dir.clone(),
                    fstype: "cgroup",
                    data: key.clone(),
                },
            })
            .collect();
        if let Some(dir) = &self.paths.unified {
            out.push(ContainerMount {
                subdir: "unified".into(),
                host_path: dir.clone(),
                fstype: "cgroup2",
                data: String::new(),
            });
        }
        out
    }

    /// Symlinks a container needs beside its mounts at `/sys/fs/cgroup`, as (link name, target):
    /// `cpu -> cpu,cpuacct` and `cpuacct -> cpu,cpuacct` where controllers are co-mounted.
    pub fn container_symlinks(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for key in self
            .paths
            .v1
            .keys()
            .filter(|k| k.contains(',') && !k.starts_with("name="))
        {
            for part in key.split(',') {
                if !self.paths.v1.contains_key(part) {
                    out.push((part.to_string(), key.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hybrid() -> Layout {
        let mi = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        Layout::parse(
            mi,
            "5:name=systemd:/\n4:memory:/pa/x\n1:cpu,cpuacct:/\n0::/u\n",
        )
        .unwrap()
    }

    #[test]
    fn resolve_places_relative_paths_under_the_callers_cgroup() {
        let m = Manager::resolve(&hybrid(), None, "c1", false).unwrap();
        let p = m.paths();
        assert_eq!(p.v1["memory"], Path::new("/sys/fs/cgroup/memory/pa/x/c1"));
        assert_eq!(
            p.v1["cpu,cpuacct"],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/c1")
        );
        assert_eq!(p.v1["name=systemd"], Path::new("/sys/fs/cgroup/systemd/c1"));
        assert_eq!(
            p.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/u/c1"))
        );
        let m = Manager::resolve(&hybrid(), Some("/default/c1"), "c1", false).unwrap();
        assert_eq!(
            m.paths().v1["memory"],
            Path::new("/sys/fs/cgroup/memory/default/c1")
        );
    }

    #[test]
    fn container_mounts_and_symlinks_cover_every_hierarchy() {
        let m = Manager::resolve(&hybrid(), Some("/x"), "x", false).unwrap();
        let mounts = m.container_mounts();
        let summary: Vec<(&str, &str, &str)> = mounts
            .iter()
            .map(|c| (c.subdir.as_str(), c.fstype, c.data.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("cpu,cpuacct", "cgroup", "cpu,cpuacct"),
                ("memory", "cgroup", "memory"),
                ("systemd", "cgroup", "none,name=systemd"),
                ("unified", "cgroup2", ""),
            ]
        );
        assert_eq!(
            m.container_symlinks(),
            [
                ("cpu".to_string(), "cpu,cpuacct".to_string()),
                ("cpuacct".to_string(), "cpu,cpuacct".to_string())
            ]
        );
        let v2 = Manager::from_paths(CgroupPaths {
            v1: BTreeMap::new(),
            unified: Some("/sys/fs/cgroup/x".into()),
        });
        assert_eq!(v2.container_mounts()[0].subdir, "");
        assert!(v2.container_symlinks().is_empty());
    }

    #[test]
    fn check_names_the_missing_controller() {
        let m = Manager::resolve(&hybrid(), Some("/x"), "x", false).unwrap();
        let r: LinuxResources = serde_json::from_str(r#"{"pids":{"limit":10}}"#).unwrap();
        let err = m.check(&r).unwrap_err().to_string();
        assert!(
            err.contains("pids") && err.contains("does not provide"),
            "{err}"
        );
        let r: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":200,"swap":100}}"#).unwrap();
        let err = m.check(&r).unwrap_err().to_string();
        assert!(
            err.contains("memory.swap (100) is less than memory.limit (200)"),
            "{err}"
        );
        let r: LinuxResources = serde_json::from_str(r#"{"unified":{"../x":"1"}}"#).unwrap();
        assert!(m.check(&r).unwrap_err().to_string().contains("\"../x\""));
        let r: LinuxResources =
            serde_json::from_str(r#"{"devices":[{"allow":true,"access":"rx"}]}"#).unwrap();
        let err = m.check(&r).unwrap_err().to_string();
        assert!(err.contains("access \"rx\" has 'x'"), "{err}");
    }
}
