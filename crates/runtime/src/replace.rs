//! Replacing a small file atomically without making the filesystem free disk blocks.
//!
//! The usual way (write a temporary file, `rename` it over the old one) has a cost on ext4
//! that shows on a container's start path: renaming over an existing file makes ext4
//! allocate the new file's blocks at once (`auto_da_alloc`), so the next replacement frees
//! real blocks, and with the `discard` mount option and no journal (this kind of machine)
//! each free waits for the device: 0.2 to 1 ms per file, several files per `berth run`.
//!
//! [`replace_file`] swaps the two files instead (`renameat2(RENAME_EXCHANGE)`, no
//! allocation forced) and unlinks the old version, which is still in delayed allocation and
//! frees nothing. The path holds a complete version at every instant, as with `rename`. A
//! crash between the swap and the unlink leaves the old version in the temporary file, which
//! the next replacement truncates.

use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, RenameFlags};

/// Write `data` to `name` (relative to `dir`, or absolute) atomically, through the temporary
/// file `tmp` in the same directory, created with `mode` if it is new.
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
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    std::fs::File::from(fd).write_all(data)?;
    match rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE) {
        // `tmp` now holds the old version.
        Ok(()) => {
            rustix::fs::unlinkat(dir, tmp, rustix::fs::AtFlags::empty())?;
            Ok(())
        }
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
    fn creates_then_replaces_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let (name, tmp) = (
            d.path().join("state.json"),
            d.path().join(".state.json.tmp"),
        );
        replace_file(rustix::fs::CWD, &name, &tmp, b"one", 0o600).unwrap();
        assert_eq!(std::fs::read(&name).unwrap(), b"one");
        let mode = std::fs::metadata(&name).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        replace_file(rustix::fs::CWD, &name, &tmp, b"two, longer", 0o600).unwrap();
        assert_eq!(std::fs::read(&name).unwrap(), b"two, longer");
        replace_file(rustix::fs::CWD, &name, &tmp, b"3", 0o600).unwrap();
        assert_eq!(std::fs::read(&name).unwrap(), b"3");
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn names_relative_to_a_directory_fd_and_a_stale_temporary_file_is_overwritten() {
        let d = tempfile::tempdir().unwrap();
        // What a crash between the swap and the unlink leaves: an old version in `tmp`.
        std::fs::write(d.path().join(".exit.json.tmp"), b"stale and longer").unwrap();
        let dir = std::fs::File::open(d.path()).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&dir);
        let (name, tmp) = (Path::new("exit.json"), Path::new(".exit.json.tmp"));
        replace_file(fd, name, tmp, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(d.path().join("exit.json")).unwrap(), b"new");
        assert!(!d.path().join(".exit.json.tmp").exists());
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
