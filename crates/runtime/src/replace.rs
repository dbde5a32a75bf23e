//! Replacing a small file atomically without making the filesystem allocate or free inodes
//! and disk blocks each time.
//!
//! The usual way (write a temporary file, `rename` it over the old one) has two costs on ext4
//! that show on a container's start path, where the runtime state, the shim's files and the
//! engine's record are each replaced several times:
//!
//! - Renaming over an existing file makes ext4 allocate the new file's blocks at once
//!   (`auto_da_alloc`), so the next replacement frees real blocks, and with the `discard`
//!   mount option and no journal (this kind of machine) each free waits for the device: 0.2
//!   to 1 ms per file.
//! - Every replacement creates an inode and frees another. Without a journal, ext4 looks for
//!   a free inode past every inode freed in the last minutes (`recently_deleted`), so each
//!   new inode costs more the more were freed before it.
//!
//! [`replace_file`] swaps the two files instead (`renameat2(RENAME_EXCHANGE)`, no allocation
//! forced) and keeps the old version in the temporary file, which the next replacement
//! overwrites in place (no `O_TRUNC`, whose truncation to zero would make ext4 allocate at
//! close): from the second replacement on, no inode is created or freed. The path holds a
//! complete version at every instant, as with `rename`; the temporary file holds the previous
//! version, or a partly written one after a crash, and is never read.

use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, RenameFlags};

/// Write `data` to `name` (relative to `dir`, or absolute) atomically, through the temporary
/// file `tmp` in the same directory, created with `mode` if it is new. Afterwards `tmp` may
/// hold the previous version of `name` (whoever removes `name` for good removes `tmp` too,
/// usually with their directory).
pub fn replace_file(
    dir: BorrowedFd<'_>,
    name: &Path,
    tmp: &Path,
    data: &[u8],
    mode: u32,
) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    // Cut what is left of a longer previous version (a no-op when it was not longer).
    file.set_len(data.len() as u64)?;
    drop(file);
    match rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE) {
        // `tmp` now holds the old version, kept for the next replacement.
        Ok(()) => Ok(()),
        // No old version (ENOENT), or a filesystem without the exchange (EINVAL): a plain
        // rename, which replaces nothing in the first case.
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => {
            Ok(rustix::fs::renameat(dir, tmp, dir, name)?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_then_replaces_reusing_one_temporary_file() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let (name, tmp) = (
            d.path().join("state.json"),
            d.path().join(".state.json.tmp"),
        );
        replace_file(rustix::fs::CWD, &name, &tmp, b"one", 0o600).unwrap();
        assert_eq!(std::fs::read(&name).unwrap(), b"one");
        let mode = std::fs::metadata(&name).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The first write had nothing to replace: no temporary file is left.
        assert!(!tmp.exists());
        replace_file(rustix::fs::CWD, &name, &tmp, b"two, longer", 0o600).unwrap();
        assert_eq!(std::fs::read(&name).unwrap(), b"two, longer");
        // The previous version stays in the temporary file, for the next replacement.
        assert_eq!(std::fs::read(&tmp).unwrap(), b"one");
        let inodes = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let before = [inodes(&name), inodes(&tmp)];
        replace_file(rustix::fs::CWD, &name, &tmp, b"3", 0o600).unwrap();
        // Shorter than what the reused file held: nothing of that is left.
        assert_eq!(std::fs::read(&name).unwrap(), b"3");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"two, longer");
        // The same two inodes, swapped: none was created or freed.
        assert_eq!([inodes(&tmp), inodes(&name)], before);
        replace_file(rustix::fs::CWD, &name, &tmp, b"four", 0o600).unwrap();
        assert_eq!(std::fs::read(&name).unwrap(), b"four");
        assert_eq!([inodes(&name), inodes(&tmp)], before);
        let mut left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                std::ffi::OsString::from(".state.json.tmp"),
                std::ffi::OsString::from("state.json")
            ]
        );
    }

    #[test]
    fn names_relative_to_a_directory_fd_and_a_stale_temporary_file_is_overwritten() {
        let d = tempfile::tempdir().unwrap();
        // A temporary file left by a crash before its rename, with no version at the path.
        std::fs::write(d.path().join(".exit.json.tmp"), b"stale and longer").unwrap();
        let dir = std::fs::File::open(d.path()).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&dir);
        let (name, tmp) = (Path::new("exit.json"), Path::new(".exit.json.tmp"));
        replace_file(fd, name, tmp, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(d.path().join("exit.json")).unwrap(), b"new");
        // Nothing was replaced, so the temporary file became `exit.json`: none is left.
        assert!(!d.path().join(".exit.json.tmp").exists());
        // A stale temporary file next to an existing version: overwritten, not appended to.
        std::fs::write(d.path().join(".exit.json.tmp"), b"stale and longer").unwrap();
        replace_file(fd, name, tmp, b"newer", 0o644).unwrap();
        assert_eq!(std::fs::read(d.path().join("exit.json")).unwrap(), b"newer");
        assert_eq!(
            std::fs::read(d.path().join(".exit.json.tmp")).unwrap(),
            b"new"
        );
    }

    #[test]
    fn an_unwritable_directory_is_an_error_and_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let name = d.path().join("missing-dir/state.json");
        let tmp = d.path().join("missing-dir/.state.json.tmp");
        let e = replace_file(rustix::fs::CWD, &name, &tmp, b"x", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!d.path().join("missing-dir").exists());
    }
}
