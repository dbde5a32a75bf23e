//! Reading and writing cgroup files with errors that name the file and the value.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Write `value` to `dir/file`.
pub(crate) fn write(dir: &Path, file: &str, value: impl AsRef<str>) -> Result<()> {
    let path = dir.join(file);
    let value = value.as_ref();
    std::fs::write(&path, value).map_err(|source| Error::Write {
        path,
        value: value.to_string(),
        source,
    })
}

/// Read `dir/file`, trimmed.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Read `dir/file` as a number (`max` reads as `None`).
pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<Option<u64>> {
    let s = read(dir, file)?;
    if s == "max" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| Error::Parse {
        path: dir.join(file),
        content: s,
    })
}

/// Create `dir` and any missing parents, calling `init(new_dir)` on each directory created, from
/// the top down.
pub(crate) fn create_dirs(dir: &Path, init: &dyn Fn(&Path) -> Result<()>) -> Result<()> {
    let mut missing: Vec<&Path> = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => init(d)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create cgroup", d, e)),
        }
    }
    Ok(())
}

/// Every cgroup directory at or below `dir`, children before parents.
pub(crate) fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        out.push(d.to_path_buf());
    }
    if dir.is_dir() {
        walk(dir, &mut out);
    }
    out
}

/// Remove `dir` and its child cgroups. Processes that are exiting keep a cgroup busy for a
/// moment, so `EBUSY` is retried for up to two seconds. A missing directory is not an error.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    // The common case, a cgroup without children whose processes are gone, needs one rmdir.
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    for d in subtree(dir) {
        let mut delay = Duration::from_millis(1);
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(Error::Busy { path: d });
                }
                Err(e) => return Err(Error::io("remove cgroup", d, e)),
            }
        }
    }
    Ok(())
}

/// Pids listed in `cgroup.procs` of `dir` and every child cgroup. A missing cgroup has none.
pub(crate) fn procs(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    for d in subtree(dir) {
        let s = match std::fs::read_to_string(d.join("cgroup.procs")) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read", d.join("cgroup.procs"), e)),
        };
        pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}
