//! Copying a directory tree between two open directories (for runc's `tmpcopyup` option).
//!
//! Everything is relative to directory fds with `O_NOFOLLOW`, so the copy cannot be redirected
//! out of either tree by symlinks.

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Copy the contents of `from` into `to`: directories, regular files, symlinks, with mode and
/// ownership. Other file types are skipped.
pub(super) fn copy_dir(from: &OwnedFd, to: &OwnedFd) -> std::io::Result<()> {
    let mut dir = rustix::fs::Dir::read_from(from)?;
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = rustix::fs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                rustix::fs::mkdirat(to, name, mode)?;
                let sub_from = rustix::fs::openat(
                    from,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let sub_to = rustix::fs::openat(
                    to,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                copy_dir(&sub_from, &sub_to)?;
                rustix::fs::fchmod(&sub_to, mode)?;
            }
            FileType::RegularFile => {
                let src = rustix::fs::openat(
                    from,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let dst = rustix::fs::openat(
                    to,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    mode,
                )?;
                let mut left = u64::try_from(st.st_size).unwrap_or(0);
                while left > 0 {
                    let n = rustix::fs::copy_file_range(
                        &src,
                        None,
                        &dst,
                        None,
                        usize::try_from(left).unwrap_or(usize::MAX),
                    )?;
                    if n == 0 {
                        break;
                    }
                    left = left.saturating_sub(n as u64);
                }
                rustix::fs::fchmod(&dst, mode)?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(from, name, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), to, name)?;
            }
            _ => continue,
        }
        let uid = rustix::fs::Uid::from_raw(st.st_uid);
        let gid = rustix::fs::Gid::from_raw(st.st_gid);
        rustix::fs::chownat(to, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(())
}
