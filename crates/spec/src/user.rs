//! `-u user[:group]` resolved against the image's /etc/passwd and /etc/group.
//!
//! The files are read through the host path of the rootfs with `openat2(RESOLVE_IN_ROOT)`,
//! so a symlinked `/etc/passwd` (or `/etc`) resolves inside the rootfs and never reaches the
//! host's files. Kernels without `openat2` fall back to walking the path with `O_NOFOLLOW`,
//! which rejects symlinks.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::Error;

/// The process identity a user spec resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id: the group given, else the user's passwd group, else 0.
    pub gid: u32,
    /// Supplementary groups: the user's /etc/group memberships (none when a group is given).
    pub additional_gids: Vec<u32>,
    /// The user's home directory from passwd, else "/".
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

const MAX_ID: i64 = 2_147_483_647;

/// Open `rel` (relative to the rootfs) for reading without leaving the rootfs.
/// `Ok(None)` when it does not exist.
fn open_in_root(rootfs: &Path, rel: &str) -> Result<Option<OwnedFd>, Error> {
    let ctx = |e: Errno| {
        Error::io(
            format!(
                "open {} in the container's rootfs {}",
                rel,
                rootfs.display()
            ),
            std::io::Error::from(e),
        )
    };
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(ctx)?;
    match rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => return Ok(Some(fd)),
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
        Err(Errno::NOSYS | Errno::PERM) => {}
        Err(e) => return Err(ctx(e)),
    }
    // No openat2: walk component by component refusing symlinks.
    let mut dir = root;
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." {
            return Err(Error::Config(format!(
                "refusing to read {rel}: path leaves the rootfs"
            )));
        }
        let last = i + 1 == parts.len();
        let flags = if last {
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC
        } else {
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
        };
        match rustix::fs::openat(&dir, *part, flags, Mode::empty()) {
            Ok(fd) => dir = fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(Error::Config(format!(
                    "refusing to read /{rel} in the container's rootfs: it is a symlink and this kernel lacks openat2"
                )));
            }
            Err(e) => return Err(ctx(e)),
        }
    }
    Ok(Some(dir))
}

fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>, Error> {
    let Some(fd) = open_in_root(rootfs, rel)? else {
        return Ok(None);
    };
    let mut f = std::fs::File::from(fd);
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| {
        Error::io(
            format!("read /{rel} in the container's rootfs {}", rootfs.display()),
            e,
        )
    })?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: (*f.first()?).to_owned(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|s| (*s).to_owned()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: (*f.first()?).to_owned(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn numeric(what: &str, s: &str) -> Result<Option<u32>, Error> {
    match s.parse::<i64>() {
        Ok(n) if (0..=MAX_ID).contains(&n) => Ok(Some(u32::try_from(n).unwrap_or(0))),
        Ok(_) => Err(Error::Config(format!(
            "{what} {s}: uids and gids must be in range 0-{MAX_ID}"
        ))),
        Err(_) => Ok(None),
    }
}

/// Resolve `spec` ("", "name", "uid", "name:group", "uid:gid", ...) in the rootfs.
pub(crate) fn resolve(rootfs: &Path, spec: &str) -> Result<ResolvedUser, Error> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = read_in_root(rootfs, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let uid_num = numeric("user", user)?;
    let entry = passwd
        .iter()
        .find(|e| e.name == user)
        .or_else(|| uid_num.and_then(|u| passwd.iter().find(|e| e.uid == u)));
    let (uid, mut gid, home, name) = match (entry, uid_num) {
        (Some(e), _) => (e.uid, e.gid, e.home.clone(), Some(e.name.clone())),
        (None, Some(u)) => (u, 0, String::new(), None),
        (None, None) => {
            return Err(Error::Config(format!(
                "unable to find user {user}: no matching entries in passwd file"
            )));
        }
    };
    let needs_groups = group.is_some_and(|g| !g.is_empty()) || name.is_some();
    let groups = if needs_groups {
        read_in_root(rootfs, "etc/group")?
            .map(|t| parse_group(&t))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut additional_gids = Vec::new();
    match group.filter(|g| !g.is_empty()) {
        Some(g) => {
            let gid_num = numeric("group", g)?;
            let found = groups
                .iter()
                .find(|e| e.name == g)
                .or_else(|| gid_num.and_then(|n| groups.iter().find(|e| e.gid == n)));
            gid = match (found, gid_num) {
                (Some(e), _) => e.gid,
                (None, Some(n)) => n,
                (None, None) => {
                    return Err(Error::Config(format!(
                        "unable to find group {g}: no matching entries in group file"
                    )));
                }
            };
        }
        None => {
            if let Some(name) = &name {
                for g in groups
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == name))
                {
                    if g.gid != gid && !additional_gids.contains(&g.gid) {
                        additional_gids.push(g.gid);
                    }
                }
            }
        }
    }
    let home = if home.is_empty() {
        "/".to_owned()
    } else {
        home
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}
