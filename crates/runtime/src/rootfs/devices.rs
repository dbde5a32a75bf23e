//! Device nodes and the standard `/dev` links.
//!
//! Outside a user namespace nodes are made with `mknod`; inside one (where `mknod` is refused)
//! the host's node is bind-mounted over an empty file, as runc does.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};
use rustix::fs::{FileType, Mode};
use rustix::io::Errno;
use rustix::mount::MountFlags;

use super::safepath::{Root, fd_path};
use crate::error::{Context, Error, Result};

/// A device to create in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Path in the container.
    pub path: PathBuf,
    /// `c`, `b`, `u` or `p`.
    pub kind: LinuxDeviceType,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The devices every container gets (runtime-spec "Default Devices").
pub fn defaults() -> Vec<Device> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Device {
        path: Path::new("/dev").join(name),
        kind: LinuxDeviceType::C,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// The defaults plus the config's devices (a config entry replaces a default with its path).
pub fn plan(configured: &[LinuxDevice]) -> Vec<Device> {
    let mut out: Vec<Device> = defaults()
        .into_iter()
        .filter(|d| !configured.iter().any(|c| c.path() == &d.path))
        .collect();
    out.extend(configured.iter().map(|c| Device {
        path: c.path().clone(),
        kind: c.typ(),
        major: c.major(),
        minor: c.minor(),
        mode: c.file_mode().unwrap_or(0o666) & 0o7777,
        uid: c.uid().unwrap_or(0),
        gid: c.gid().unwrap_or(0),
    }));
    out
}

/// Device-cgroup rules that let the container use its default devices and the pty machinery,
/// appended after the config's own rules (runc does the same).
pub fn default_cgroup_rules() -> Vec<LinuxDeviceCgroup> {
    let rule = |t: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(t)
            .access(access.to_string());
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("static device rule is valid")
    };
    use LinuxDeviceType::{B, C};
    vec![
        rule(C, None, None, "m"),
        rule(B, None, None, "m"),
        rule(C, Some(1), Some(3), "rwm"),
        rule(C, Some(1), Some(5), "rwm"),
        rule(C, Some(1), Some(7), "rwm"),
        rule(C, Some(1), Some(8), "rwm"),
        rule(C, Some(1), Some(9), "rwm"),
        rule(C, Some(5), Some(0), "rwm"),
        rule(C, Some(5), Some(1), "rwm"),
        rule(C, Some(5), Some(2), "rwm"),
        rule(C, Some(136), None, "rwm"),
    ]
}

/// Create every device in the plan.
pub(super) fn create_all(root: &Root, devices: &[Device], userns: bool) -> Result<()> {
    for d in devices {
        if userns {
            bind_host(root, d)?;
        } else {
            make(root, d)?;
        }
    }
    Ok(())
}

fn make(root: &Root, d: &Device) -> Result<()> {
    let (dir, name) = root.parent_and_name(&d.path)?;
    let kind = match d.kind {
        LinuxDeviceType::C | LinuxDeviceType::U => FileType::CharacterDevice,
        LinuxDeviceType::B => FileType::BlockDevice,
        LinuxDeviceType::P => FileType::Fifo,
        LinuxDeviceType::A => {
            return Err(Error::InvalidArgument(format!(
                "device {}: type \"a\" is only valid in cgroup rules",
                d.path.display()
            )));
        }
    };
    let dev = rustix::fs::makedev(
        u32::try_from(d.major).map_err(|_| bad_number(d))?,
        u32::try_from(d.minor).map_err(|_| bad_number(d))?,
    );
    match rustix::fs::mknodat(&dir, name.as_path(), kind, Mode::from_raw_mode(d.mode), dev) {
        Ok(()) => {}
        Err(Errno::EXIST) => {
            // Replace whatever the image had there: it may not be the device the config asks for.
            rustix::fs::unlinkat(&dir, name.as_path(), rustix::fs::AtFlags::empty())
                .ctx(|| format!("remove existing {}", root.display(&d.path)))?;
            rustix::fs::mknodat(&dir, name.as_path(), kind, Mode::from_raw_mode(d.mode), dev)
                .ctx(|| format!("create device {}", root.display(&d.path)))?;
        }
        Err(e) => {
            return Err(Error::errno(
                format!("create device {}", root.display(&d.path)),
                e,
            ));
        }
    }
    rustix::fs::chownat(
        &dir,
        name.as_path(),
        Some(rustix::fs::Uid::from_raw(d.uid)),
        Some(rustix::fs::Gid::from_raw(d.gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("chown device {}", root.display(&d.path)))?;
    // mknod applies the umask; set the exact mode.
    rustix::fs::chmodat(
        &dir,
        name.as_path(),
        Mode::from_raw_mode(d.mode),
        rustix::fs::AtFlags::empty(),
    )
    .ctx(|| format!("chmod device {}", root.display(&d.path)))
}

fn bad_number(d: &Device) -> Error {
    Error::InvalidArgument(format!(
        "device {}: major {} / minor {} out of range",
        d.path.display(),
        d.major,
        d.minor
    ))
}

fn bind_host(root: &Root, d: &Device) -> Result<()> {
    let target = root.create_file(&d.path, 0o644)?;
    rustix::mount::mount(
        &d.path,
        fd_path(&target).as_str(),
        "",
        MountFlags::BIND,
        None::<&std::ffi::CStr>,
    )
    .ctx(|| {
        format!(
            "bind mount host device {} into the container",
            d.path.display()
        )
    })
}

/// `/dev/fd`, `/dev/std{in,out,err}`, `/dev/core` and `/dev/ptmx`.
pub(super) fn links(root: &Root) -> Result<()> {
    let mut links = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "/dev/core"));
    }
    for (target, link) in links {
        let (dir, name) = root.parent_and_name(Path::new(link))?;
        match rustix::fs::symlinkat(target, &dir, name.as_path()) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Error::errno(format!("symlink {link} -> {target}"), e)),
        }
    }
    // /dev/ptmx must be the container's own devpts instance.
    let (dir, name) = root.parent_and_name(Path::new("/dev/ptmx"))?;
    match rustix::fs::unlinkat(&dir, name.as_path(), rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(Error::errno("remove /dev/ptmx", e)),
    }
    rustix::fs::symlinkat("pts/ptmx", &dir, name.as_path()).ctx(|| "symlink /dev/ptmx -> pts/ptmx")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceBuilder;

    #[test]
    fn config_devices_replace_defaults() {
        let fuse = LinuxDeviceBuilder::default()
            .path("/dev/fuse")
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .build()
            .unwrap();
        let null = LinuxDeviceBuilder::default()
            .path("/dev/null")
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .file_mode(0o600u32)
            .build()
            .unwrap();
        let plan = plan(&[fuse, null]);
        assert_eq!(plan.len(), 7);
        let null = plan
            .iter()
            .find(|d| d.path == Path::new("/dev/null"))
            .unwrap();
        assert_eq!(null.mode, 0o600);
        assert!(
            plan.iter()
                .any(|d| d.path == Path::new("/dev/fuse") && d.major == 10)
        );
    }

    #[test]
    fn default_rules_allow_default_devices() {
        let rules = default_cgroup_rules();
        for d in defaults() {
            assert!(
                rules
                    .iter()
                    .any(|r| r.major() == Some(d.major) && r.minor() == Some(d.minor)),
                "{d:?}"
            );
        }
    }
}
