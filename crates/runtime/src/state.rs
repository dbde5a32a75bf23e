//! Container state on disk: `<root>/<id>/state.json`, written atomically (temp file + rename).
//!
//! The stored status is only what the runtime decided (`creating`, `created`, `running`); the
//! status a client sees is derived each time from the init process (alive? same start time so the
//! pid was not reused? a zombie?), the exec fifo (still there means not started) and the freezer.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use berth_cgroups::{CgroupPaths, FreezerState, Manager};
use oci_spec::runtime::{Hooks, Spec};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// Default state root, as `runc` uses `/run/runc`.
pub const DEFAULT_ROOT: &str = "/run/berth-runtime";

const STATE_FILE: &str = "state.json";
/// The container's config, copied at create: `exec` takes process defaults from it and `update`
/// records new limits in it. Kept out of `state.json` so the frequent commands (`state`,
/// `start`, `kill`, `delete`) never parse a whole config.
pub const CONFIG_FILE: &str = "config.json";
/// The fifo the init blocks on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";

/// A container's lifecycle status, with the OCI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is in progress.
    Creating,
    /// Created; the user process has not been started.
    Created,
    /// The user process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// Everything later commands need about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// The status the runtime last recorded.
    pub status: Status,
    /// Host pid of the container's init (0 until known).
    pub pid: i32,
    /// Start time of the init in clock ticks since boot (field 22 of /proc/pid/stat), to detect
    /// pid reuse.
    pub pid_start: u64,
    /// RFC 3339 creation time.
    pub created: String,
    /// Owner of the container (user name of the runtime's uid).
    pub owner: String,
    /// The container's cgroup.
    pub cgroup: CgroupPaths,
    /// Whether `--systemd-cgroup` was given at create.
    pub systemd_cgroup: bool,
    /// The compiled seccomp filter, reused for `exec`.
    pub seccomp: Option<berth_seccomp::Program>,
    /// `ociVersion` of the config.
    pub oci_version: String,
    /// The config's annotations.
    pub annotations: Option<HashMap<String, String>>,
    /// The config's hooks (poststart and poststop run after `create` returns).
    pub hooks: Option<Hooks>,
    /// The container's namespaces (for `exec`).
    pub namespaces: crate::namespaces::Plan,
    /// `linux.seccomp.listenerPath`, for `exec`'d processes.
    pub seccomp_listener: Option<PathBuf>,
}

impl ContainerState {
    /// The cgroup manager for this container.
    pub fn cgroup_manager(&self) -> Manager {
        Manager::from_paths(self.cgroup.clone())
    }

    /// The status as clients see it, derived from the live system.
    pub fn current_status(&self, dir: &Path) -> Status {
        if self.pid <= 0 {
            return self.status;
        }
        if !process_alive(self.pid, self.pid_start) {
            return Status::Stopped;
        }
        if self.status == Status::Creating {
            return Status::Creating;
        }
        if self.status == Status::Created && dir.join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if matches!(
            self.cgroup_manager().freezer_state(),
            Ok(FreezerState::Frozen | FreezerState::Freezing)
        ) {
            return Status::Paused;
        }
        Status::Running
    }

    /// The OCI state document (`state` output and hook stdin).
    pub fn oci_state(&self, status: Status) -> OciState {
        OciState {
            oci_version: self.oci_version.clone(),
            id: self.id.clone(),
            pid: if matches!(status, Status::Stopped) {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            annotations: self.annotations.clone().filter(|a| !a.is_empty()),
            owner: self.owner.clone(),
        }
    }
}

/// runc's `state` JSON: the OCI state plus `rootfs`, `created` and `owner`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// Spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Init pid (0 once stopped).
    pub pid: i32,
    /// Lifecycle status.
    pub status: Status,
    /// Bundle path.
    pub bundle: PathBuf,
    /// Rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Annotations, omitted when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
    /// Owner's user name.
    pub owner: String,
}

/// Where a runtime keeps its containers.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// A state root at `path` (created on first use, mode 0700).
    pub fn new(path: impl Into<PathBuf>) -> Root {
        Root { path: path.into() }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A container's directory.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.path.join(id)
    }

    /// Create the container's directory, failing if the id is taken.
    pub fn claim(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.path)
            .ctx(|| format!("create state root {}", self.path.display()))?;
        let dir = self.dir(id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Exists(id.to_string()))
            }
            Err(e) => Err(Error::sys(
                format!("create state directory {}", dir.display()),
                e,
            )),
        }
    }

    /// Load a container's state.
    pub fn load(&self, id: &str) -> Result<ContainerState> {
        validate_id(id)?;
        let file = self.dir(id).join(STATE_FILE);
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()));
            }
            Err(e) => return Err(Error::sys(format!("read {}", file.display()), e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::sys(
                format!("parse {}", file.display()),
                std::io::Error::other(e),
            )
        })
    }

    /// Write a container's state atomically.
    pub fn save(&self, state: &ContainerState) -> Result<()> {
        let dir = self.dir(&state.id);
        let tmp = dir.join(".state.json.tmp");
        let file = dir.join(STATE_FILE);
        let bytes = serde_json::to_vec(state)
            .map_err(|e| Error::sys("serialise container state", std::io::Error::other(e)))?;
        crate::replace::replace_file(rustix::fs::CWD, &file, &tmp, &bytes, 0o600)
            .ctx(|| format!("write {}", file.display()))
    }

    /// The config the container was created from.
    pub fn load_config(&self, id: &str) -> Result<Spec> {
        validate_id(id)?;
        let file = self.dir(id).join(CONFIG_FILE);
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.dir(id).exists() => {
                return Err(Error::NotFound(id.to_string()));
            }
            Err(e) => return Err(Error::sys(format!("read {}", file.display()), e)),
        };
        Ok(crate::spec::parse_json(&file, &bytes)?)
    }

    /// Write the container's config copy (atomically).
    pub fn save_config(&self, id: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.dir(id);
        let tmp = dir.join(".config.json.tmp");
        fs::write(&tmp, bytes).ctx(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, dir.join(CONFIG_FILE)).ctx(|| format!("rename {}", tmp.display()))
    }

    /// Every container id in the root (directories with a state file), sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::sys(
                    format!("read state root {}", self.path.display()),
                    e,
                ));
            }
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Take the container's lock (released when the returned fd is dropped), so two commands
    /// never change one container at once.
    pub fn lock(&self, id: &str) -> Result<OwnedFd> {
        let dir = self.dir(id);
        let fd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            if e == rustix::io::Errno::NOENT {
                Error::NotFound(id.to_string())
            } else {
                Error::errno(format!("open {}", dir.display()), e)
            }
        })?;
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)
            .ctx(|| format!("lock {}", dir.display()))?;
        Ok(fd)
    }

    /// Remove a container's directory.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::sys(format!("remove {}", dir.display()), e)),
        }
    }
}

/// Ids are path components: letters, digits, `_`, `+`, `-`, `.`; not `.` or `..`.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > 1024 {
        return bad("it is longer than 1024 characters");
    }
    if id == "." || id == ".." {
        return bad("it is a relative path component");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return bad("only letters, digits, '_', '+', '-' and '.' are allowed");
    }
    Ok(())
}

/// Fields of `/proc/<pid>/stat` we use: (state char, start time in ticks).
pub fn proc_stat(pid: i32) -> Option<(u8, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; parse after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.bytes().next()?;
    // After the state, start time is the 19th field (field 22 overall).
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether `pid` is alive, not a zombie, and is the process that started at `start`.
pub fn process_alive(pid: i32, start: u64) -> bool {
    match proc_stat(pid) {
        Some((state, s)) => s == start && state != b'Z' && state != b'X',
        None => false,
    }
}

/// The current time as RFC 3339 with nanoseconds, like runc's `created`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// The user name for `uid` from /etc/passwd, or `#uid`.
pub fn user_name(uid: u32) -> String {
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("#{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn own_process_is_alive_and_start_time_matters() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let (state, start) = proc_stat(pid).unwrap();
        assert_ne!(state, b'Z');
        assert!(process_alive(pid, start));
        assert!(!process_alive(pid, start + 1));
    }

    #[test]
    fn claim_refuses_a_taken_id() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().join("root"));
        root.claim("c1").unwrap();
        assert!(matches!(root.claim("c1"), Err(Error::Exists(_))));
        assert!(matches!(root.load("c1"), Err(Error::NotFound(_))));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    }
}
