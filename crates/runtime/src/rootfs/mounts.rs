//! Performing one `mounts[]` entry of the config inside the rootfs.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;
use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::mount::MountFlags;

use super::Ctx;
use super::options::{self, Parsed};
use super::safepath::{Root, fd_path};
use crate::error::{Context, Error, Result};

/// Flags that a bind remount keeps when they are locked (inherited into a user namespace).
const LOCKABLE: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC)
    .union(MountFlags::RDONLY)
    .union(MountFlags::NOATIME)
    .union(MountFlags::NODIRATIME)
    .union(MountFlags::RELATIME);

/// Mount one entry.
pub(super) fn mount_entry(root: &Root, m: &Mount, ctx: &Ctx<'_>) -> Result<()> {
    let opts = options::parse(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = m.destination();
    if opts.bind || typ == "bind" {
        return bind(root, m, &opts, ctx);
    }
    match typ {
        "cgroup" | "cgroup2" => cgroup(root, dest, &opts, ctx),
        _ => filesystem(root, m, typ, &opts, ctx),
    }
}

fn source_path(m: &Mount, bundle: &Path) -> PathBuf {
    let src = m.source().clone().unwrap_or_default();
    if src.is_absolute() {
        src
    } else {
        bundle.join(src)
    }
}

fn bind(root: &Root, m: &Mount, opts: &Parsed, ctx: &Ctx<'_>) -> Result<()> {
    let dest = m.destination();
    let src = source_path(m, ctx.bundle);
    let meta = std::fs::metadata(&src)
        .ctx(|| format!("bind mount source {} for {}", src.display(), dest.display()))?;
    let target = if meta.is_dir() {
        root.mkdir_all(dest, 0o755)?
    } else {
        root.create_file(dest, 0o644)?
    };
    let mut flags = MountFlags::BIND;
    if opts.recursive {
        flags |= MountFlags::REC;
    }
    rustix::mount::mount(
        &src,
        fd_path(&target).as_str(),
        "",
        flags,
        None::<&std::ffi::CStr>,
    )
    .ctx(|| format!("bind mount {} on {}", src.display(), root.display(dest)))?;
    let mounted = reopen(root, dest)?;
    remount_bind(&mounted, opts, ctx.userns, &root.display(dest))?;
    finish(&mounted, opts, &root.display(dest))
}

/// Apply ro/nosuid/nodev/noexec/atime flags to a bind mount (they need a remount).
pub(super) fn remount_bind(
    mounted: &OwnedFd,
    opts: &Parsed,
    userns: bool,
    what: &str,
) -> Result<()> {
    let wanted = opts.flags & !(MountFlags::BIND | MountFlags::REC);
    if wanted.is_empty() {
        return Ok(());
    }
    let mut flags = MountFlags::BIND | wanted;
    if userns {
        // Flags inherited from a more privileged mount namespace are locked: a remount that
        // omits them fails with EPERM, so keep them unless the config cleared them explicitly.
        flags |= current_flags(mounted) & LOCKABLE & !opts.cleared;
    }
    rustix::mount::mount_remount(fd_path(mounted).as_str(), flags, "")
        .ctx(|| format!("remount {what} with {:?}", wanted))
}

/// The per-mount flags the mount holding `fd` has now.
pub(super) fn current_flags(fd: &OwnedFd) -> MountFlags {
    use rustix::fs::StatVfsMountFlags as S;
    let Ok(st) = rustix::fs::fstatvfs(fd) else {
        return MountFlags::empty();
    };
    let mut f = MountFlags::empty();
    for (s, m) in [
        (S::RDONLY, MountFlags::RDONLY),
        (S::NOSUID, MountFlags::NOSUID),
        (S::NODEV, MountFlags::NODEV),
        (S::NOEXEC, MountFlags::NOEXEC),
        (S::NOATIME, MountFlags::NOATIME),
        (S::NODIRATIME, MountFlags::NODIRATIME),
        (S::RELATIME, MountFlags::RELATIME),
    ] {
        if st.f_flag.contains(s) {
            f |= m;
        }
    }
    f
}

/// Open the mount that now sits on `dest` (the fd taken before mounting points underneath it).
fn reopen(root: &Root, dest: &Path) -> Result<OwnedFd> {
    root.open_at(dest, OFlags::PATH, false)
        .ctx(|| format!("reopen {} after mounting", root.display(dest)))
}

/// Propagation and recursive attributes, common to every kind of mount.
fn finish(mounted: &OwnedFd, opts: &Parsed, what: &str) -> Result<()> {
    for p in &opts.propagation {
        rustix::mount::mount_change(fd_path(mounted).as_str(), *p)
            .ctx(|| format!("set propagation {p:?} on {what}"))?;
    }
    if opts.rec_set != 0 || opts.rec_clear != 0 {
        set_attr_recursive(mounted, opts.rec_set, opts.rec_clear).ctx(|| {
            format!("apply recursive mount options on {what} (needs Linux 5.12 or newer)")
        })?;
    }
    Ok(())
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, ...)`.
pub(crate) fn set_attr_recursive(fd: &impl AsFd, set: u64, clear: u64) -> std::io::Result<()> {
    set_attr(fd, set, clear, true)
}

/// `mount_setattr` on one mount (or recursively).
pub(crate) fn set_attr(
    fd: &impl AsFd,
    set: u64,
    clear: u64,
    recursive: bool,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr reads `size_of::<mount_attr>()` bytes from a valid, initialised struct
    // and a NUL-terminated empty path; the fd is open for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn filesystem(root: &Root, m: &Mount, typ: &str, opts: &Parsed, ctx: &Ctx<'_>) -> Result<()> {
    let dest = m.destination();
    let strict = matches!(typ, "proc" | "sysfs");
    let target = if strict {
        // proc and sysfs must land on a real directory, never through a symlink (runc does the same).
        match root.open_at(dest, OFlags::PATH | OFlags::DIRECTORY, true) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => root.mkdir_all(dest, 0o755)?,
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return Err(Error::Unsupported(format!(
                    "mount destination {} for {typ} is a symlink or not a directory; {typ} must be mounted on a real directory",
                    dest.display()
                )));
            }
            Err(e) => return Err(Error::errno(format!("resolve {}", root.display(dest)), e)),
        }
    } else {
        root.mkdir_all(dest, 0o755)?
    };
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| typ.to_string());
    let flags = opts.flags & !(MountFlags::BIND | MountFlags::REC);
    let data = std::ffi::CString::new(opts.data.as_str()).map_err(|_| {
        Error::InvalidArgument(format!(
            "mount options for {} contain a NUL byte",
            dest.display()
        ))
    })?;
    let tmpcopy = if opts.tmpcopyup && typ == "tmpfs" {
        Some(
            root.open_at(dest, OFlags::RDONLY | OFlags::DIRECTORY, false)
                .ctx(|| {
                    format!(
                        "open {} to copy its content into the new tmpfs",
                        root.display(dest)
                    )
                })?,
        )
    } else {
        None
    };
    match rustix::mount::mount(
        source.as_str(),
        fd_path(&target).as_str(),
        typ,
        flags,
        Some(data.as_c_str()),
    ) {
        Ok(()) => {}
        Err(Errno::PERM) if ctx.userns && typ == "sysfs" => {
            // A user namespace that does not own its network namespace cannot mount sysfs; give
            // it the host's, read-only as configured (runc does the same).
            return bind_fallback(root, dest, "/sys", opts, ctx);
        }
        Err(Errno::PERM) if ctx.userns && typ == "mqueue" => {
            return bind_fallback(root, dest, "/dev/mqueue", opts, ctx);
        }
        Err(e) => {
            return Err(Error::errno(
                format!(
                    "mount {typ} on {} (options {:?})",
                    root.display(dest),
                    opts.data
                ),
                e,
            ));
        }
    }
    let mounted = reopen(root, dest)?;
    if let Some(from) = tmpcopy {
        let to = root
            .open_at(dest, OFlags::RDONLY | OFlags::DIRECTORY, false)
            .ctx(|| format!("open the new tmpfs on {}", root.display(dest)))?;
        super::copy::copy_dir(&from, &to)
            .ctx(|| format!("copy up {} into its tmpfs", root.display(dest)))?;
    }
    finish(&mounted, opts, &root.display(dest))
}

fn bind_fallback(root: &Root, dest: &Path, host: &str, opts: &Parsed, ctx: &Ctx<'_>) -> Result<()> {
    let target = root.mkdir_all(dest, 0o755)?;
    rustix::mount::mount(
        host,
        fd_path(&target).as_str(),
        "",
        MountFlags::BIND | MountFlags::REC,
        None::<&std::ffi::CStr>,
    )
    .ctx(|| {
        format!(
            "bind mount {host} on {} (fallback in a user namespace)",
            root.display(dest)
        )
    })?;
    let mounted = reopen(root, dest)?;
    remount_bind(&mounted, opts, ctx.userns, &root.display(dest))?;
    finish(&mounted, opts, &root.display(dest))
}

/// `/sys/fs/cgroup`: on v1 a tmpfs holding one mount per hierarchy; on v2 one cgroup2 mount.
/// With a cgroup namespace the hierarchies are mounted fresh (they show the container's cgroup
/// as their root); without one, or in a user namespace (where only cgroup2 may be mounted), the
/// container's own cgroup directories are bind-mounted.
fn cgroup(root: &Root, dest: &Path, opts: &Parsed, ctx: &Ctx<'_>) -> Result<()> {
    let ro = opts.flags.contains(MountFlags::RDONLY);
    let base = opts.flags & (MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC);
    let unified_only = ctx.cgroup_mounts.len() == 1 && ctx.cgroup_mounts[0].subdir.is_empty();
    if !unified_only {
        let target = root.mkdir_all(dest, 0o755)?;
        rustix::mount::mount(
            "tmpfs",
            fd_path(&target).as_str(),
            "tmpfs",
            base,
            Some(c"mode=755"),
        )
        .ctx(|| format!("mount tmpfs on {}", root.display(dest)))?;
    }
    for cm in ctx.cgroup_mounts {
        let sub = dest.join(&cm.subdir);
        let target = root.mkdir_all(&sub, 0o755)?;
        let what = root.display(&sub);
        if ctx.cgroupns && (!ctx.userns || cm.fstype == "cgroup2") {
            let flags = base
                | if ro {
                    MountFlags::RDONLY
                } else {
                    MountFlags::empty()
                };
            let data = std::ffi::CString::new(cm.data.as_str())
                .map_err(|_| Error::InvalidArgument("cgroup mount data contains NUL".into()))?;
            rustix::mount::mount(
                "cgroup",
                fd_path(&target).as_str(),
                cm.fstype.as_str(),
                flags,
                Some(data.as_c_str()),
            )
            .ctx(|| format!("mount {} ({}) on {what}", cm.fstype, cm.data))?;
        } else {
            rustix::mount::mount(
                &cm.host_path,
                fd_path(&target).as_str(),
                "",
                MountFlags::BIND,
                None::<&std::ffi::CStr>,
            )
            .ctx(|| format!("bind mount cgroup {} on {what}", cm.host_path.display()))?;
            let mounted = reopen(root, &sub)?;
            let mut p = Parsed {
                flags: base,
                ..Parsed::default()
            };
            if ro {
                p.flags |= MountFlags::RDONLY;
            }
            remount_bind(&mounted, &p, ctx.userns, &what)?;
        }
    }
    if !unified_only {
        for (link, target) in ctx.cgroup_symlinks {
            let (dir, name) = root.parent_and_name(&dest.join(link))?;
            match rustix::fs::symlinkat(target.as_str(), &dir, name.as_path()) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(Error::errno(
                        format!("symlink {link} -> {target} in {}", root.display(dest)),
                        e,
                    ));
                }
            }
        }
        if ro {
            let mounted = reopen(root, dest)?;
            rustix::mount::mount_remount(
                fd_path(&mounted).as_str(),
                base | MountFlags::RDONLY,
                "mode=755",
            )
            .ctx(|| format!("remount {} read-only", root.display(dest)))?;
        }
    }
    let mounted = reopen(root, dest)?;
    finish(&mounted, opts, &root.display(dest))
}
