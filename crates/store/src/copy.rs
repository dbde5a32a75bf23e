//! Tree copy and disk usage for the native snapshotter: a copy that keeps owners, modes,
//! extended attributes, device nodes, FIFOs, sockets, symlinks, hard links (within the tree) and
//! timestamps.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

use crate::Error;

/// Copy the contents of `src` into the existing directory `dst`, and `src`'s own attributes to
/// `dst`.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), Error> {
    let mut links = HashMap::new();
    copy_dir(src, dst, &mut links)?;
    let meta = fs::symlink_metadata(src).map_err(Error::io("stat", src))?;
    copy_attrs(src, dst, &meta)
}

fn copy_dir(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> Result<(), Error> {
    for entry in fs::read_dir(src).map_err(Error::io("read directory", src))? {
        let entry = entry.map_err(Error::io("read directory", src))?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&s).map_err(Error::io("stat", &s))?;
        let ft = FileType::from_raw_mode(meta.mode());
        match ft {
            FileType::Directory => {
                fs::create_dir(&d).map_err(Error::io("create directory", &d))?;
                copy_dir(&s, &d, links)?;
            }
            FileType::Symlink => {
                let target = fs::read_link(&s).map_err(Error::io("read symlink", &s))?;
                symlink(&target, &d).map_err(Error::io("create symlink", &d))?;
            }
            _ if meta.nlink() > 1 && links.contains_key(&(meta.dev(), meta.ino())) => {
                let first = &links[&(meta.dev(), meta.ino())];
                fs::hard_link(first, &d).map_err(Error::io("create hard link", &d))?;
                continue; // attributes are shared with the first link
            }
            FileType::RegularFile => {
                fs::copy(&s, &d).map_err(Error::io("copy file", &s))?;
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                rustix::fs::mknodat(
                    CWD,
                    &d,
                    ft,
                    Mode::from_raw_mode(meta.mode() & 0o7777),
                    meta.rdev(),
                )
                .map_err(|e| Error::io("create node", &d)(e.into()))?;
            }
            FileType::Unknown => continue,
        }
        if ft != FileType::Directory && meta.nlink() > 1 {
            links.insert((meta.dev(), meta.ino()), d.clone());
        }
        copy_attrs(&s, &d, &meta)?;
    }
    Ok(())
}

/// Owner, then mode (chown clears set-id bits), xattrs, then timestamps (last: the other steps
/// change ctime/mtime of directories).
fn copy_attrs(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), Error> {
    let is_link = meta.file_type().is_symlink();
    rustix::fs::chownat(
        CWD,
        dst,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io("change owner of", dst)(e.into()))?;
    if !is_link {
        rustix::fs::chmodat(
            CWD,
            dst,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            AtFlags::empty(),
        )
        .map_err(|e| Error::io("change mode of", dst)(e.into()))?;
    }
    copy_xattrs(src, dst)?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io("set times of", dst)(e.into()))
}

fn copy_xattrs(src: &Path, dst: &Path) -> Result<(), Error> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(src, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(Error::io("list xattrs of", src)(e.into())),
    };
    let mut value = vec![0u8; 64 * 1024];
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::OsStr::from_bytes(name);
        let len = match rustix::fs::lgetxattr(src, name, &mut value[..]) {
            Ok(len) => len,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(Error::io("read xattr of", src)(e.into())),
        };
        rustix::fs::lsetxattr(dst, name, &value[..len], XattrFlags::empty())
            .map_err(|e| Error::io("set xattr on", dst)(e.into()))?;
    }
    Ok(())
}

/// Disk usage of a tree: (bytes allocated, inodes), hard links counted once.
pub(crate) fn usage(dir: &Path) -> Result<(u64, u64), Error> {
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).map_err(Error::io("stat", &p))?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        inodes += 1;
        bytes += meta.blocks() * 512;
        if meta.is_dir() {
            for e in fs::read_dir(&p).map_err(Error::io("read directory", &p))? {
                stack.push(e.map_err(Error::io("read directory", &p))?.path());
            }
        }
    }
    Ok((bytes, inodes))
}
