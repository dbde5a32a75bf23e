//! Mount options from `config.json`, split into what `mount(2)` takes as flags, what it takes as
//! data, propagation changes and recursive attributes (`mount_setattr(2)`), as runc does.

use rustix::mount::{MountFlags, MountPropagationFlags};

/// `MOUNT_ATTR_*` bits for `mount_setattr`.
pub mod attr {
    /// Read-only.
    pub const RDONLY: u64 = 0x1;
    /// No set-uid.
    pub const NOSUID: u64 = 0x2;
    /// No device files.
    pub const NODEV: u64 = 0x4;
    /// No exec.
    pub const NOEXEC: u64 = 0x8;
    /// Atime field mask.
    pub const ATIME_MASK: u64 = 0x70;
    /// relatime.
    pub const RELATIME: u64 = 0x0;
    /// noatime.
    pub const NOATIME: u64 = 0x10;
    /// strictatime.
    pub const STRICTATIME: u64 = 0x20;
    /// nodiratime.
    pub const NODIRATIME: u64 = 0x80;
    /// nosymfollow.
    pub const NOSYMFOLLOW: u64 = 0x0020_0000;
}

/// A parsed option list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Flags for `mount(2)`.
    pub flags: MountFlags,
    /// Flags explicitly cleared (`rw`, `suid`, ...), so a remount does not keep them.
    pub cleared: MountFlags,
    /// Propagation changes applied after mounting, in order.
    pub propagation: Vec<MountPropagationFlags>,
    /// Recursive attributes to set (`MOUNT_ATTR_*`).
    pub rec_set: u64,
    /// Recursive attributes to clear.
    pub rec_clear: u64,
    /// Data string for the file system (`mode=755,size=65536k`).
    pub data: String,
    /// `bind` or `rbind` was given.
    pub bind: bool,
    /// `rbind` was given.
    pub recursive: bool,
    /// `idmap`/`ridmap` was given.
    pub idmap: bool,
    /// runc's `tmpcopyup` extension: copy the directory's content into a fresh tmpfs.
    pub tmpcopyup: bool,
}

impl Default for Parsed {
    fn default() -> Parsed {
        Parsed {
            flags: MountFlags::empty(),
            cleared: MountFlags::empty(),
            propagation: Vec::new(),
            rec_set: 0,
            rec_clear: 0,
            data: String::new(),
            bind: false,
            recursive: false,
            idmap: false,
            tmpcopyup: false,
        }
    }
}

/// The propagation named by an option (`rslave` etc.), with its recursive bit.
pub fn propagation(opt: &str) -> Option<MountPropagationFlags> {
    use MountPropagationFlags as P;
    Some(match opt {
        "private" => P::PRIVATE,
        "rprivate" => P::PRIVATE | P::REC,
        "shared" => P::SHARED,
        "rshared" => P::SHARED | P::REC,
        "slave" => P::DOWNSTREAM,
        "rslave" => P::DOWNSTREAM | P::REC,
        "unbindable" => P::UNBINDABLE,
        "runbindable" => P::UNBINDABLE | P::REC,
        _ => return None,
    })
}

/// `MS_I_VERSION` and `MS_MANDLOCK` from <sys/mount.h>, which rustix does not name.
const MS_I_VERSION: u32 = 1 << 23;
const MS_MANDLOCK: u32 = 64;

fn flag(opt: &str) -> Option<(bool, MountFlags)> {
    use MountFlags as F;
    Some(match opt {
        "async" => (false, F::SYNCHRONOUS),
        "atime" => (false, F::NOATIME),
        "defaults" => (true, F::empty()),
        "dev" => (false, F::NODEV),
        "diratime" => (false, F::NODIRATIME),
        "dirsync" => (true, F::DIRSYNC),
        "exec" => (false, F::NOEXEC),
        "iversion" => (true, F::from_bits_retain(MS_I_VERSION)),
        "noiversion" => (false, F::from_bits_retain(MS_I_VERSION)),
        "lazytime" => (true, F::LAZYTIME),
        "nolazytime" => (false, F::LAZYTIME),
        "loud" => (false, F::SILENT),
        "silent" => (true, F::SILENT),
        "mand" => (true, F::from_bits_retain(MS_MANDLOCK)),
        "nomand" => (false, F::from_bits_retain(MS_MANDLOCK)),
        "noatime" => (true, F::NOATIME),
        "nodev" => (true, F::NODEV),
        "nodiratime" => (true, F::NODIRATIME),
        "noexec" => (true, F::NOEXEC),
        "norelatime" => (false, F::RELATIME),
        "nostrictatime" => (false, F::STRICTATIME),
        "nosuid" => (true, F::NOSUID),
        "relatime" => (true, F::RELATIME),
        "ro" => (true, F::RDONLY),
        "rw" => (false, F::RDONLY),
        "strictatime" => (true, F::STRICTATIME),
        "suid" => (false, F::NOSUID),
        "sync" => (true, F::SYNCHRONOUS),
        "nosymfollow" => (true, F::NOSYMFOLLOW),
        "symfollow" => (false, F::NOSYMFOLLOW),
        _ => return None,
    })
}

fn recursive_attr(opt: &str) -> Option<(bool, u64)> {
    Some(match opt {
        "rro" => (true, attr::RDONLY),
        "rrw" => (false, attr::RDONLY),
        "rnosuid" => (true, attr::NOSUID),
        "rsuid" => (false, attr::NOSUID),
        "rnodev" => (true, attr::NODEV),
        "rdev" => (false, attr::NODEV),
        "rnoexec" => (true, attr::NOEXEC),
        "rexec" => (false, attr::NOEXEC),
        "rnodiratime" => (true, attr::NODIRATIME),
        "rdiratime" => (false, attr::NODIRATIME),
        "rrelatime" => (true, attr::RELATIME),
        "rnorelatime" => (false, attr::RELATIME),
        "rnoatime" => (true, attr::NOATIME),
        "ratime" => (false, attr::NOATIME),
        "rstrictatime" => (true, attr::STRICTATIME),
        "rnostrictatime" => (false, attr::STRICTATIME),
        "rnosymfollow" => (true, attr::NOSYMFOLLOW),
        "rsymfollow" => (false, attr::NOSYMFOLLOW),
        _ => return None,
    })
}

/// Parse an option list.
pub fn parse(opts: &[String]) -> Parsed {
    let mut p = Parsed::default();
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        let o = o.as_str();
        if o == "bind" {
            p.bind = true;
        } else if o == "rbind" {
            p.bind = true;
            p.recursive = true;
        } else if o == "idmap" || o == "ridmap" {
            p.idmap = true;
        } else if o == "tmpcopyup" {
            p.tmpcopyup = true;
        } else if let Some(prop) = propagation(o) {
            p.propagation.push(prop);
        } else if let Some((set, f)) = flag(o) {
            if set {
                p.flags |= f;
                p.cleared &= !f;
            } else {
                p.flags &= !f;
                p.cleared |= f;
            }
        } else if let Some((set, a)) = recursive_attr(o) {
            if set {
                p.rec_set |= a;
                p.rec_clear &= !a;
            } else {
                p.rec_clear |= a;
                p.rec_set &= !a;
            }
            if a == attr::NOATIME || a == attr::STRICTATIME || a == attr::RELATIME {
                p.rec_clear |= attr::ATIME_MASK;
            }
        } else if !o.is_empty() {
            data.push(o);
        }
    }
    p.data = data.join(",");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn docker_dev_tmpfs() {
        let p = parse(&v(&["nosuid", "strictatime", "mode=755", "size=65536k"]));
        assert_eq!(p.flags, MountFlags::NOSUID | MountFlags::STRICTATIME);
        assert_eq!(p.data, "mode=755,size=65536k");
        assert!(!p.bind);
    }

    #[test]
    fn rbind_ro_with_propagation() {
        let p = parse(&v(&["rbind", "ro", "rprivate", "nosuid"]));
        assert!(p.bind && p.recursive);
        assert_eq!(p.flags, MountFlags::RDONLY | MountFlags::NOSUID);
        assert_eq!(
            p.propagation,
            vec![MountPropagationFlags::PRIVATE | MountPropagationFlags::REC]
        );
        assert!(p.data.is_empty());
    }

    #[test]
    fn later_options_win() {
        let p = parse(&v(&["ro", "rw"]));
        assert!(!p.flags.contains(MountFlags::RDONLY));
        assert!(p.cleared.contains(MountFlags::RDONLY));
    }

    #[test]
    fn recursive_attributes() {
        let p = parse(&v(&["rbind", "rro", "rnosuid", "rnoatime"]));
        assert_eq!(p.rec_set, attr::RDONLY | attr::NOSUID | attr::NOATIME);
        assert_eq!(p.rec_clear, attr::ATIME_MASK);
    }

    #[test]
    fn devpts_data() {
        let p = parse(&v(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]));
        assert_eq!(p.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    }
}
