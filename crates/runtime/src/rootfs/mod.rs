//! The container's root filesystem: mounts, devices, `pivot_root`, masked and read-only paths.
//!
//! Runs in the container's init, in its new mount namespace, in two phases around the
//! `createRuntime`/`createContainer` hooks: [`prepare`] (propagation, rootfs bind, the config's
//! mounts, `/dev`) and [`enter`] (pivot, masked and read-only paths, sysctls, read-only root).
//! Every path inside the rootfs is resolved with [`safepath`], never with plain path strings.

mod copy;
pub mod devices;
mod mounts;
pub mod options;
pub mod safepath;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
pub(crate) use mounts::set_attr;
use safepath::{Root, fd_path};

/// One mount the container needs at `/sys/fs/cgroup` (see `berth_cgroups::ContainerMount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMount {
    /// Directory under the cgroup mount point (`""` for a pure v2 host).
    pub subdir: String,
    /// Host directory of the container's cgroup in that hierarchy.
    pub host_path: PathBuf,
    /// `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Mount data for a fresh mount.
    pub data: String,
}

impl From<berth_cgroups::ContainerMount> for CgroupMount {
    fn from(m: berth_cgroups::ContainerMount) -> CgroupMount {
        CgroupMount {
            subdir: m.subdir,
            host_path: m.host_path,
            fstype: m.fstype.to_string(),
            data: m.data,
        }
    }
}

/// What the rootfs setup needs to know beyond the config.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The config.
    pub spec: &'a Spec,
    /// Absolute rootfs path.
    pub rootfs: &'a Path,
    /// Absolute bundle path (relative mount sources are relative to it).
    pub bundle: &'a Path,
    /// The init runs in a user namespace (no mknod, locked mount flags).
    pub userns: bool,
    /// The container has its own cgroup namespace.
    pub cgroupns: bool,
    /// Mounts for a `cgroup` mount entry.
    pub cgroup_mounts: &'a [CgroupMount],
    /// Symlinks beside them.
    pub cgroup_symlinks: &'a [(String, String)],
}

/// The result of [`prepare`], consumed by [`enter`].
#[derive(Debug)]
pub struct Prepared {
    root: Root,
}

impl Prepared {
    /// The rootfs resolution root (for the console).
    pub fn root(&self) -> &Root {
        &self.root
    }
}

/// Phase one: make the rootfs a private mount, perform the config's mounts, populate `/dev`.
pub fn prepare(ctx: &Ctx<'_>) -> Result<Prepared> {
    let linux = ctx.spec.linux().as_ref();
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(options::propagation)
        .unwrap_or(MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC);
    rustix::mount::mount_change("/", prop)
        .ctx(|| format!("set propagation {prop:?} on / in the container's mount namespace"))?;
    if prop.contains(MountPropagationFlags::SHARED) {
        // pivot_root refuses a shared parent mount; make the one holding the rootfs private.
        make_parent_private(ctx.rootfs)?;
    }
    rustix::mount::mount_bind_recursive(ctx.rootfs, ctx.rootfs)
        .ctx(|| format!("bind mount the rootfs {} onto itself", ctx.rootfs.display()))?;

    let root = Root::open(ctx.rootfs)?;
    let mounts = ctx.spec.mounts().as_deref().unwrap_or_default();
    for m in mounts {
        mounts::mount_entry(&root, m, ctx)?;
    }
    // Populate /dev unless the config bind-mounts it from somewhere.
    let dev_is_bind = mounts.iter().any(|m| {
        safepath::relative(m.destination()) == Path::new("dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o == "bind" || o == "rbind"))
    });
    if !dev_is_bind {
        let configured = linux
            .and_then(|l| l.devices().as_deref())
            .unwrap_or_default();
        devices::create_all(&root, &devices::plan(configured), ctx.userns)?;
        devices::links(&root)?;
    }
    Ok(Prepared { root })
}

/// Phase two: switch into the rootfs and lock it down.
pub fn enter(prepared: Prepared, spec: &Spec, rootfs: &Path, no_pivot: bool) -> Result<()> {
    if no_pivot {
        move_root(rootfs)?;
    } else {
        pivot_root(rootfs)?;
    }
    let root = Root::open(Path::new("/"))?;
    let linux = spec.linux().as_ref();
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        for (key, value) in sysctl {
            let path = Path::new("proc/sys").join(key.replace('.', "/"));
            let fd = root
                .open_at(&path, OFlags::WRONLY, true)
                .ctx(|| format!("open sysctl {key} at /{}", path.display()))?;
            rustix::io::write(&fd, value.as_bytes()).ctx(|| format!("set sysctl {key}={value}"))?;
        }
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or_default()
    {
        readonly_path(&root, Path::new(p))?;
    }
    let masked = linux
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or_default();
    if !masked.is_empty() {
        let dev_null = open_dev_null(&root)?;
        for p in masked {
            mask_path(&root, Path::new(p), &dev_null)?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let root_dir = rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .ctx(|| "open the root filesystem")?;
        let flags = mounts::current_flags(&root_dir) | MountFlags::BIND | MountFlags::RDONLY;
        rustix::mount::mount_remount("/", flags, "")
            .ctx(|| "remount the root filesystem read-only")?;
    }
    drop(prepared);
    Ok(())
}

/// The container's `/dev/null`, checked to really be the null device: masking binds it over
/// files, and a container-controlled "null" (a symlink, a regular file, a procfs file) could
/// otherwise expose what it was meant to hide (CVE-2025-31133).
fn open_dev_null(root: &Root) -> Result<OwnedFd> {
    let fd = root
        .open_at(Path::new("/dev/null"), OFlags::PATH, true)
        .ctx(|| "open /dev/null in the container to mask paths with")?;
    let st = rustix::fs::fstat(&fd).ctx(|| "stat /dev/null")?;
    if FileType::from_raw_mode(st.st_mode) != FileType::CharacterDevice
        || st.st_rdev != rustix::fs::makedev(1, 3)
    {
        return Err(Error::Unsupported(
            "/dev/null in the container is not the null device (char 1:3); refusing to mask paths with it".into(),
        ));
    }
    Ok(fd)
}

fn mask_path(root: &Root, path: &Path, dev_null: &OwnedFd) -> Result<()> {
    let fd = match root.open_at(path, OFlags::PATH, false) {
        Ok(fd) => fd,
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(()),
        Err(e) => {
            return Err(Error::errno(
                format!("resolve masked path {}", path.display()),
                e,
            ));
        }
    };
    let st = rustix::fs::fstat(&fd).ctx(|| format!("stat masked path {}", path.display()))?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        rustix::mount::mount(
            "tmpfs",
            fd_path(&fd).as_str(),
            "tmpfs",
            MountFlags::RDONLY,
            Some(c"size=0"),
        )
        .ctx(|| format!("mask directory {}", path.display()))
    } else {
        rustix::mount::mount_bind(fd_path(dev_null).as_str(), fd_path(&fd).as_str())
            .ctx(|| format!("mask {}", path.display()))
    }
}

fn readonly_path(root: &Root, path: &Path) -> Result<()> {
    let fd = match root.open_at(path, OFlags::PATH, false) {
        Ok(fd) => fd,
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(()),
        Err(e) => {
            return Err(Error::errno(
                format!("resolve read-only path {}", path.display()),
                e,
            ));
        }
    };
    rustix::mount::mount_bind_recursive(fd_path(&fd).as_str(), fd_path(&fd).as_str())
        .ctx(|| format!("bind {} onto itself", path.display()))?;
    let fd = root
        .open_at(path, OFlags::PATH, false)
        .ctx(|| format!("reopen {}", path.display()))?;
    let flags = mounts::current_flags(&fd) | MountFlags::BIND | MountFlags::RDONLY;
    rustix::mount::mount_remount(fd_path(&fd).as_str(), flags, "")
        .ctx(|| format!("make {} read-only", path.display()))
}

/// Make the mount that contains `path` private (needed for `pivot_root` under a shared `/`).
fn make_parent_private(path: &Path) -> Result<()> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "read /proc/self/mountinfo")?;
    let mut best: Option<&str> = None;
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        if path.starts_with(mp) && best.is_none_or(|b| mp.len() > b.len()) {
            best = Some(mp);
        }
    }
    let mp = best.unwrap_or("/");
    rustix::mount::mount_change(mp, MountPropagationFlags::PRIVATE)
        .ctx(|| format!("make {mp} private"))
}

fn pivot_root(rootfs: &Path) -> Result<()> {
    let old = rustix::fs::open(
        "/",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open the old root")?;
    let new = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open the rootfs {}", rootfs.display()))?;
    rustix::process::fchdir(&new).ctx(|| "enter the rootfs")?;
    // pivot_root(".", ".") stacks the old root on top of the new one, so no put_old directory
    // is needed inside the image; we then detach it.
    rustix::process::pivot_root(".", ".")
        .ctx(|| format!("pivot_root into {}", rootfs.display()))?;
    rustix::process::fchdir(&old).ctx(|| "enter the old root")?;
    // Unmounting must not propagate to the host.
    rustix::mount::mount_change(
        ".",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .ctx(|| "make the old root a slave mount")?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).ctx(|| "detach the old root")?;
    rustix::process::chdir("/").ctx(|| "chdir to the new root")
}

fn move_root(rootfs: &Path) -> Result<()> {
    rustix::process::chdir(rootfs).ctx(|| format!("enter the rootfs {}", rootfs.display()))?;
    rustix::mount::mount_move(rootfs, "/").ctx(|| "move the rootfs onto / (--no-pivot)")?;
    rustix::process::chroot(".").ctx(|| "chroot into the rootfs (--no-pivot)")?;
    rustix::process::chdir("/").ctx(|| "chdir to the new root")
}
