//! Resolving and creating paths inside the container's root without ever leaving it.
//!
//! Every lookup goes through `openat2(2)` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so `..`
//! and absolute symlinks are clamped to the rootfs (the CVE-2021-30465 class). Creation happens
//! relative to a directory fd that was itself resolved that way, one component at a time. Mounts
//! then target the resolved fd through `/proc/self/fd/N`, so a symlink swapped in after
//! resolution cannot redirect them.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Context, Error, Result};

/// A directory that paths are resolved beneath.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// The `/proc/self/fd/N` path that names an open fd, for `mount(2)`.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Normalise a container path into components below the root (`/a/./b/` -> `a/b`).
pub fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

impl Root {
    /// Open `path` as a resolution root.
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open root filesystem {}", path.display()))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The host path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Host path for a container path, for messages only (never for lookups).
    pub fn display(&self, rel: &Path) -> String {
        self.path.join(relative(rel)).display().to_string()
    }

    /// Resolve an existing path inside the root. `flags` adds to `O_CLOEXEC`; pass `OFlags::PATH`
    /// for a handle to mount on.
    pub fn open_at(&self, rel: &Path, flags: OFlags, no_symlinks: bool) -> Result<OwnedFd, Errno> {
        let rel = relative(rel);
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        let mut resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        if no_symlinks {
            resolve |= ResolveFlags::NO_SYMLINKS;
        }
        // The kernel returns EAGAIN when a rename or mount raced with the lookup; retry a little.
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &self.fd,
                rel,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            ) {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                r => return r,
            }
        }
    }

    /// `mkdir -p` inside the root; returns an `O_PATH` handle on the directory. A dangling
    /// symlink on the way is followed (clamped to the root) and its target created.
    pub fn mkdir_all(&self, rel: &Path, mode: u32) -> Result<OwnedFd> {
        self.mkdir_all_depth(&relative(rel), mode, 0)
    }

    fn mkdir_all_depth(&self, rel: &Path, mode: u32, links: u32) -> Result<OwnedFd> {
        match self.open_at(rel, OFlags::PATH | OFlags::DIRECTORY, false) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(Error::errno(
                    format!("resolve {} in the container", self.display(rel)),
                    e,
                ));
            }
        }
        // Find the deepest ancestor that resolves (usually the parent), then create the rest one
        // component at a time below it.
        let comps: Vec<Component<'_>> = rel.components().collect();
        let mut n = comps.len().saturating_sub(1);
        let mut parent = loop {
            let prefix: PathBuf = comps[..n].iter().collect();
            match self.open_at(&prefix, OFlags::PATH | OFlags::DIRECTORY, false) {
                Ok(fd) => break fd,
                Err(Errno::NOENT) if n > 0 => n -= 1,
                Err(e) => {
                    return Err(Error::errno(
                        format!("resolve {} in the container", self.display(&prefix)),
                        e,
                    ));
                }
            }
        };
        let mut prefix: PathBuf = comps[..n].iter().collect();
        for (i, comp) in comps.iter().enumerate().skip(n) {
            let up = prefix.clone();
            prefix.push(comp);
            let name = comp.as_os_str();
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    // Something is there but did not resolve: a dangling symlink.
                    if let Some(target) =
                        self.link_target(&parent, name, &up, &comps[i + 1..], links)?
                    {
                        return self.mkdir_all_depth(&target, mode, links + 1);
                    }
                }
                Err(e) => {
                    return Err(Error::errno(
                        format!(
                            "create directory {} in the container",
                            self.display(&prefix)
                        ),
                        e,
                    ));
                }
            }
            // We just made it: it must be a directory right here, not a link to elsewhere.
            parent = rustix::fs::openat2(
                &parent,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(|e| {
                Error::errno(
                    format!("open {} after creating it", self.display(&prefix)),
                    e,
                )
            })?;
        }
        Ok(parent)
    }

    /// If `dir/name` is a symlink, the path it points to (inside the root) followed by `rest`.
    fn link_target(
        &self,
        dir: &OwnedFd,
        name: &std::ffi::OsStr,
        up: &Path,
        rest: &[Component<'_>],
        links: u32,
    ) -> Result<Option<PathBuf>> {
        let Ok(target) = rustix::fs::readlinkat(dir, name, Vec::new()) else {
            return Ok(None);
        };
        if links >= 40 {
            return Err(Error::errno(
                format!("resolve {} in the container", self.display(&up.join(name))),
                Errno::LOOP,
            ));
        }
        let target = PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
        let mut path = if target.is_absolute() {
            relative(&target)
        } else {
            up.join(target)
        };
        for c in rest {
            path.push(c);
        }
        Ok(Some(path))
    }

    /// Make sure a regular file exists at `rel` (creating parents); returns an `O_PATH` handle.
    pub fn create_file(&self, rel: &Path, mode: u32) -> Result<OwnedFd> {
        let rel = relative(rel);
        match self.open_at(&rel, OFlags::PATH, false) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(Error::errno(
                    format!("resolve {} in the container", self.display(&rel)),
                    e,
                ));
            }
        }
        let (parent, name) = self.parent_and_name(&rel)?;
        match rustix::fs::openat(
            &parent,
            name.as_path(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(_) => {}
            Err(Errno::EXIST) => {
                let up = rel.parent().unwrap_or(Path::new("")).to_path_buf();
                if let Some(target) = self.link_target(&parent, name.as_os_str(), &up, &[], 0)? {
                    return self.create_file(&target, mode);
                }
            }
            Err(e) => {
                return Err(Error::errno(
                    format!("create file {} in the container", self.display(&rel)),
                    e,
                ));
            }
        }
        self.open_at(&rel, OFlags::PATH, false).ctx(|| {
            format!(
                "open {} after creating it (is it a dangling symlink?)",
                self.display(&rel)
            )
        })
    }

    /// The parent directory (created if needed) and final component of `rel`.
    pub fn parent_and_name(&self, rel: &Path) -> Result<(OwnedFd, PathBuf)> {
        let rel = relative(rel);
        let name = rel
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| Error::InvalidArgument(format!("{} has no file name", rel.display())))?;
        let parent = self.mkdir_all(rel.parent().unwrap_or(Path::new("")), 0o755)?;
        Ok((parent, name))
    }

    /// The root's own fd.
    pub fn fd(&self) -> impl AsFd + '_ {
        &self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn real(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(fd_path(fd)).unwrap()
    }

    #[test]
    fn symlinks_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        symlink("/../../../outside", root_path.join("abs")).unwrap();
        symlink("../../outside", root_path.join("etc/rel")).unwrap();
        let root = Root::open(&root_path).unwrap();

        // Both links are clamped to the root: creating beneath them stays inside.
        let fd = root.mkdir_all(Path::new("/abs/x"), 0o755).unwrap();
        assert_eq!(real(&fd), root_path.join("outside/x"));
        let fd = root.mkdir_all(Path::new("/etc/rel/y"), 0o755).unwrap();
        assert_eq!(real(&fd), root_path.join("outside/y"));
        assert!(!dir.path().join("outside/x").exists());
        assert!(!dir.path().join("outside/y").exists());

        let fd = root
            .create_file(Path::new("/../../etc/hosts"), 0o644)
            .unwrap();
        assert_eq!(real(&fd), root_path.join("etc/hosts"));

        // A dangling link as the final component of a file: its (clamped) target is created.
        symlink("/../../outside/file", root_path.join("etc/f")).unwrap();
        let fd = root.create_file(Path::new("/etc/f"), 0o644).unwrap();
        assert_eq!(real(&fd), root_path.join("outside/file"));
        assert!(!dir.path().join("outside/file").exists());

        // Link loops end with ELOOP instead of recursing forever.
        symlink("/loop2", root_path.join("loop1")).unwrap();
        symlink("/loop1", root_path.join("loop2")).unwrap();
        assert!(root.mkdir_all(Path::new("/loop1/x"), 0o755).is_err());
    }

    #[test]
    fn no_symlinks_mode_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        symlink("/etc", dir.path().join("proc")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert_eq!(
            root.open_at(Path::new("/proc"), OFlags::PATH, true)
                .unwrap_err(),
            Errno::LOOP
        );
        assert!(
            root.open_at(Path::new("/proc"), OFlags::PATH, false)
                .is_ok()
        );
    }

    #[test]
    fn relative_drops_root_and_dots() {
        assert_eq!(relative(Path::new("/a/./b/")), PathBuf::from("a/b"));
        assert_eq!(relative(Path::new("/")), PathBuf::from(""));
    }
}
