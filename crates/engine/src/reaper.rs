//! Deleting container directories off the request path.
//!
//! Removing a container deletes three trees: its bundle (`S/shims/<id>`), its record directory
//! (`R/containers/<id>`) and its snapshot's upper directory. On ext4 mounted with `discard`
//! (this kind of machine) each unlink of a written file can cost a millisecond, which made the
//! deletes the largest part of `berth rm` and of `berth run --rm`.
//!
//! So a removal first makes each tree unreachable with one atomic `rename` into a `.trash`
//! directory beside it (or, for a snapshot, by dropping its record: the directory is then a
//! stray), and a single background thread deletes the trees. Invariants:
//! * After [`Reaper::trash`] returns, nothing is left at the old path: a new container can
//!   never see or collide with the old one's files, and boot never loads a trashed record
//!   (boot only reads 64-hex-digit names).
//! * A daemon killed before the thread got to a tree leaves it in `.trash` (purged at the next
//!   boot by [`Reaper::purge`]) or as a stray snapshot directory (collected by the store's GC).
//! * Mounts are never trashed: the caller unmounts the rootfs first.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

/// The trash directory's name inside the parent of what is trashed.
const TRASH: &str = ".trash";

/// The background deleter.
pub(crate) struct Reaper {
    tx: Mutex<Option<Sender<PathBuf>>>,
}

impl Reaper {
    /// Start the deleting thread (if it cannot start, deletes happen inline).
    pub(crate) fn start() -> Reaper {
        let (tx, rx) = channel::<PathBuf>();
        let spawned = std::thread::Builder::new()
            .name("berth-reaper".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                for dir in rx {
                    remove(&dir);
                }
            });
        Reaper {
            tx: Mutex::new(spawned.is_ok().then_some(tx)),
        }
    }

    /// Make `dir` disappear now and delete it soon. A missing `dir` is fine.
    pub(crate) fn trash(&self, dir: &Path) {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return;
        };
        let bin = parent.join(TRASH);
        let _ = std::fs::create_dir(&bin);
        let mut target = bin.join(name);
        target
            .as_mut_os_string()
            .push(format!(".{}", crate::record::now_nanos()));
        match std::fs::rename(dir, &target) {
            Ok(()) => self.delete(target),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Another filesystem or no permission for the trash: delete in place.
            Err(_) => remove(dir),
        }
    }

    /// Delete `dir`, which nothing refers to any more, in the background.
    pub(crate) fn delete(&self, dir: PathBuf) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref().map(|tx| tx.send(dir)) {
            Some(Ok(())) => {}
            Some(Err(e)) => remove(&e.0),
            None => {}
        }
    }

    /// At boot: delete what a previous daemon trashed in `parent` but did not get to.
    pub(crate) fn purge(&self, parent: &Path) {
        if let Ok(rd) = std::fs::read_dir(parent.join(TRASH)) {
            for ent in rd.flatten() {
                self.delete(ent.path());
            }
        }
    }
}

fn remove(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot delete {}: {e}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn tree(dir: &Path) {
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), b"x").unwrap();
        std::fs::write(dir.join("g"), b"y").unwrap();
    }

    #[test]
    fn a_trashed_tree_is_gone_at_once_and_deleted_soon() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("0123");
        tree(&dir);
        let r = Reaper::start();
        r.trash(&dir);
        assert!(
            !dir.exists(),
            "the old path is free as soon as trash returns"
        );
        let bin = root.path().join(TRASH);
        eventually("the trash is emptied", || {
            std::fs::read_dir(&bin).map_or(true, |mut d| d.next().is_none())
        });
        r.trash(&root.path().join("missing"));
    }

    #[test]
    fn purge_deletes_what_a_killed_daemon_left() {
        let root = tempfile::tempdir().unwrap();
        let left = root.path().join(TRASH).join("0123.17");
        tree(&left);
        let r = Reaper::start();
        r.purge(root.path());
        eventually("the leftover is deleted", || !left.exists());
    }
}
