//! Deleting container directories off the request path.
//!
//! Removing a container deletes three trees: its bundle (`S/shims/<id>`), its record directory
//! (`R/containers/<id>`) and its snapshot (a metadata record and an upper directory). On ext4
//! mounted with `discard` (this kind of machine) each unlink of a written file can cost a
//! millisecond, and the snapshot record's commit syncs the metadata file, which waits behind
//! those discards: together they made the largest part of `berth rm` and of `berth run --rm`.
//!
//! So a removal first makes the bundle and the record directory unreachable with one atomic
//! `rename` each into a `.trash` directory beside them, and a single background thread deletes
//! the trees and then the snapshot (record and directory). Invariants:
//! * After [`Reaper::trash`] returns, nothing is left at the old path: a new container can
//!   never see or collide with the old one's files, and boot never loads a trashed record
//!   (boot only reads 64-hex-digit names).
//! * A container's snapshot is keyed by its id, which no other container ever has: between the
//!   removal and the thread's turn, nothing refers to it (the image GC waits for the thread,
//!   [`Reaper::settle`], so that the image's layers are not held by it).
//! * A daemon killed before the thread got to a tree leaves it in `.trash` (purged at the next
//!   boot by [`Reaper::purge`]) or a snapshot without a container (removed by boot's recovery),
//!   or a stray snapshot directory (collected by the store's GC).
//! * Mounts are never trashed: the caller unmounts the rootfs first.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

/// The trash directory's name inside the parent of what is trashed.
const TRASH: &str = ".trash";

/// The background deleter.
pub(crate) struct Reaper {
    tx: Mutex<Option<Sender<Job>>>,
}

/// One deletion, run on the reaper's thread in the order given.
type Job = Box<dyn FnOnce() + Send>;

impl Reaper {
    /// Start the deleting thread (if it cannot start, deletes happen inline).
    pub(crate) fn start() -> Reaper {
        let (tx, rx) = channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("berth-reaper".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                for job in rx {
                    job();
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
        self.later(Box::new(move || remove(&dir)));
    }

    /// Run `job` on the thread after what is queued (inline if there is no thread).
    pub(crate) fn later(&self, job: Job) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let job = match tx.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => job,
        };
        drop(tx);
        job();
    }

    /// Wait until everything queued so far is done (blocking; for the image GC).
    pub(crate) fn settle(&self) {
        let (done_tx, done_rx) = channel::<()>();
        self.later(Box::new(move || {
            let _ = done_tx.send(());
        }));
        let _ = done_rx.recv();
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
    fn settle_returns_only_after_the_jobs_queued_before_it() {
        let r = Reaper::start();
        let (tx, rx) = channel::<u32>();
        for i in 0..3 {
            let tx = tx.clone();
            r.later(Box::new(move || {
                std::thread::sleep(Duration::from_millis(30));
                tx.send(i).unwrap();
            }));
        }
        r.settle();
        let done: Vec<u32> = rx.try_iter().collect();
        assert_eq!(
            done,
            vec![0, 1, 2],
            "all ran, in the order given, before settle returned"
        );
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
