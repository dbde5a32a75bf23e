//! Small helpers shared by the store's modules.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Create `dir` (and missing parents) with `mode` on the last component.
pub(crate) fn mkdir_all(dir: &Path, mode: u32) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(Error::io("create directory", dir))
}

/// fsync a directory so a rename or unlink inside it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    let f = fs::File::open(dir).map_err(Error::io("open directory", dir))?;
    rustix::fs::fsync(&f)
        .map_err(std::io::Error::from)
        .map_err(Error::io("fsync directory", dir))
}

/// Remove a directory tree; a missing tree is not an error.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove directory", dir)(e)),
    }
}

/// A process identity that survives pid reuse: the pid plus its start time (clock ticks after
/// boot, field 22 of `/proc/<pid>/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot.
    pub start: u64,
}

impl Owner {
    /// The calling process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the process is still running (same pid and the same start time).
    pub fn is_alive(&self) -> bool {
        match start_time(self.pid) {
            Some(start) => start == self.start,
            None => false,
        }
    }

    /// `<pid>-<start>`, used in temporary directory names.
    pub(crate) fn tag(&self) -> String {
        format!("{}-{}", self.pid, self.start)
    }

    /// Parse the tag written by [`Owner::tag`].
    pub(crate) fn from_tag(s: &str) -> Option<Owner> {
        let mut it = s.splitn(3, '-');
        let pid = it.next()?.parse().ok()?;
        let start = it.next()?.parse().ok()?;
        Some(Owner { pid, start })
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Validate a namespace name: containerd's rules (letters, digits, `.`, `_`, `-`; starting with a
/// letter or digit; at most 76 characters).
pub(crate) fn check_ns(ns: &str) -> Result<(), Error> {
    let bad = |why| Error::InvalidName {
        what: "namespace",
        value: ns.to_string(),
        why,
    };
    if ns.is_empty() || ns.len() > 76 {
        return Err(bad("must be 1 to 76 characters"));
    }
    if !ns.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("must start with a letter or digit"));
    }
    if !ns
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("may contain only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Validate a key (snapshot key, lease id, image name): non-empty, no NUL.
pub(crate) fn check_key(what: &'static str, key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidName {
            what,
            value: key.to_string(),
            why: "must not be empty",
        });
    }
    if key.contains('\0') {
        return Err(Error::InvalidName {
            what,
            value: key.to_string(),
            why: "must not contain NUL",
        });
    }
    Ok(())
}
