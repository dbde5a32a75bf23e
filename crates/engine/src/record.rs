//! The container record, `ROOT/containers/<id>/container.json`: everything berthd must remember
//! about a container across restarts. Written whole to a temporary file and swapped in for the
//! old one ([`Record::save`]; no fsync: a record lost to a power cut is reconciled at boot like
//! a killed daemon).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use berth_api::v1::ContainerConfig;
use prost::Message;
use serde::{Deserialize, Serialize};

pub(crate) const RECORD_FILE: &str = "container.json";

/// Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether a process of the container is alive (or about to be, for restarting).
    pub(crate) fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: String,
    pub name: String,
    pub namespace: String,
    /// Nanoseconds since the epoch.
    pub created: i64,
    /// The image as the user typed it.
    pub image: String,
    /// The image's full name (or its id when it was given by id).
    pub image_ref: String,
    /// `sha256:...` of the image config.
    pub image_id: String,
    /// The request, protobuf-encoded (base64).
    pub config: String,
    /// Resolved process: args[0] and the rest.
    pub path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub stop_signal: i32,
    pub status: Status,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub oom_killed: bool,
    pub started_at: i64,
    pub finished_at: i64,
    pub restart_count: u32,
    /// The container was stopped or killed by a user (no restart, also at boot).
    pub manually_stopped: bool,
    /// False until create has finished: a record still false at boot is removed.
    pub complete: bool,
    /// Runtime binary (None: berth-runtime in the shim).
    pub runtime: Option<PathBuf>,
    pub runtime_name: String,
    pub cgroups_path: String,
    /// The json-file log (None: driver "none").
    pub log_path: Option<PathBuf>,
    pub log_max_size: u64,
    pub log_max_file: u32,
    pub log_driver: String,
    /// The user's mounts as resolved at create (volumes named, bind sources absolute), for
    /// inspect's `Mounts`, volume in-use checks and `rm -v`.
    #[serde(default)]
    pub mount_points: Vec<crate::volumes::MountPoint>,
}

/// Whether restart policy `policy` restarts a container whose main process exited with
/// `code` after `restarts` restarts (Docker's rules: `always` and `unless-stopped` do,
/// `on-failure` does on a non-zero code until `maximum_retry_count` restarts, when set).
pub(crate) fn policy_restarts(
    policy: &berth_api::v1::RestartPolicy,
    code: i32,
    restarts: u32,
) -> bool {
    match policy.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            code != 0
                && (policy.maximum_retry_count <= 0
                    || i64::from(restarts) < i64::from(policy.maximum_retry_count))
        }
        _ => false,
    }
}

impl Record {
    pub(crate) fn config(&self) -> ContainerConfig {
        base64::engine::general_purpose::STANDARD
            .decode(&self.config)
            .ok()
            .and_then(|b| ContainerConfig::decode(b.as_slice()).ok())
            .unwrap_or_default()
    }

    pub(crate) fn encode_config(c: &ContainerConfig) -> String {
        base64::engine::general_purpose::STANDARD.encode(c.encode_to_vec())
    }

    /// Write the record into `dir` atomically ([`berth_runtime::replace::replace_file`]: a
    /// record is rewritten at each change of state, and a plain rename over the old one costs
    /// a block discard on this kind of machine).
    pub(crate) fn save(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        berth_runtime::replace::replace_file(
            rustix::fs::CWD,
            &dir.join(RECORD_FILE),
            &dir.join(".container.json.tmp"),
            &bytes,
            0o644,
        )
    }

    pub(crate) fn load(dir: &Path) -> std::io::Result<Record> {
        let bytes = std::fs::read(dir.join(RECORD_FILE))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// RFC 3339 with nanoseconds, UTC, as Docker prints times (`0001-01-01T00:00:00Z` for zero).
pub(crate) fn rfc3339(nanos: i64) -> String {
    if nanos <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A new container id: 64 lowercase hex digits from the kernel's random pool.
pub(crate) fn new_id() -> String {
    use std::io::Read;
    let mut buf = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        // No /dev/urandom: fall back to time and pid, still unique per call.
        let t = now_nanos().to_le_bytes();
        buf[..8].copy_from_slice(&t);
        buf[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        buf[12..20].copy_from_slice(&n.to_le_bytes());
    }
    let mut s = String::with_capacity(64);
    for b in buf {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_like_docker() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_764_524_739_123_456_789),
            "2025-11-30T17:45:39.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn ids_are_64_hex() {
        let a = new_id();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, new_id());
    }
}
