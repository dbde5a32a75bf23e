//! Discovering the host's cgroup hierarchies and the caller's place in them.

use std::path::{Path, PathBuf};

use crate::{Error, Hierarchy, Result};

/// v1 controllers the kernel knows; other words in a `cgroup` mount's options are flags.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Mount {
    /// Controllers joined by `,` in the kernel's order (`cpu,cpuacct`), or `name=systemd`.
    pub key: String,
    /// Where the hierarchy is mounted.
    pub mountpoint: PathBuf,
    /// The caller's cgroup in this hierarchy, relative to the mount (no leading `/`).
    pub own: String,
}

/// The mounted cgroup2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V2Mount {
    pub mountpoint: PathBuf,
    pub own: String,
}

/// The host's cgroup layout, discovered from `/proc/self/mountinfo` and `/proc/self/cgroup`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub(crate) hierarchy: Hierarchy,
    pub(crate) v1: Vec<V1Mount>,
    pub(crate) unified: Option<V2Mount>,
}

impl Layout {
    /// Discover the layout of the running host.
    pub fn detect() -> Result<Layout> {
        let read = |p: &str| std::fs::read_to_string(p).map_err(|e| Error::io("read", p, e));
        Layout::parse(&read("/proc/self/mountinfo")?, &read("/proc/self/cgroup")?)
    }

    /// The kind of hierarchy.
    pub fn hierarchy(&self) -> Hierarchy {
        self.hierarchy
    }

    /// Build a layout from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn parse(mountinfo: &str, proc_cgroup: &str) -> Result<Layout> {
        let memberships: Vec<(Vec<&str>, &str)> = proc_cgroup
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ':');
                let _id = it.next()?;
                let ctrls = it.next()?;
                let path = it.next()?;
                let set = if ctrls.is_empty() {
                    Vec::new()
                } else {
                    ctrls.split(',').collect()
                };
                Some((set, path))
            })
            .collect();
        let own_of = |ctrls: &[&str]| -> Option<&str> {
            memberships
                .iter()
                .find(|(set, _)| set.len() == ctrls.len() && ctrls.iter().all(|c| set.contains(c)))
                .map(|(_, p)| *p)
        };

        let mut v1: Vec<V1Mount> = Vec::new();
        let mut unified: Option<V2Mount> = None;
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let (root, mountpoint) = (unescape(pre[3]), PathBuf::from(unescape(pre[4])));
            match post[0] {
                "cgroup" => {
                    let ctrls: Vec<&str> = post[2]
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .collect();
                    if ctrls.is_empty() {
                        continue;
                    }
                    let key = ctrls.join(",");
                    if v1.iter().any(|m| m.key == key) {
                        continue; // a second mount of the same hierarchy
                    }
                    let Some(own) = own_of(&ctrls) else { continue };
                    v1.push(V1Mount {
                        key,
                        mountpoint,
                        own: relative_to_root(own, &root),
                    });
                }
                "cgroup2" => {
                    let preferred = mountpoint == Path::new("/sys/fs/cgroup")
                        || mountpoint == Path::new("/sys/fs/cgroup/unified");
                    if unified.is_some() && !preferred {
                        continue;
                    }
                    let own = own_of(&[]).unwrap_or("/");
                    unified = Some(V2Mount {
                        mountpoint,
                        own: relative_to_root(own, &root),
                    });
                }
                _ => {}
            }
        }
        let hierarchy = match (v1.is_empty(), &unified) {
            (false, Some(_)) => Hierarchy::Hybrid,
            (false, None) => Hierarchy::Legacy,
            (true, Some(_)) => Hierarchy::Unified,
            (true, None) => {
                return Err(Error::Layout(
                    "no cgroup file system is mounted (none in /proc/self/mountinfo); mount cgroup2 at /sys/fs/cgroup"
                        .into(),
                ));
            }
        };
        Ok(Layout {
            hierarchy,
            v1,
            unified,
        })
    }
}

/// The caller's cgroup `own` (from `/proc/self/cgroup`) relative to a mount whose root is `root`.
fn relative_to_root(own: &str, root: &str) -> String {
    let own = own.trim_start_matches('/');
    let root = root.trim_start_matches('/');
    let rel = if root.is_empty() || root.starts_with("..") {
        own
    } else if own == root {
        ""
    } else {
        own.strip_prefix(root)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(own)
    };
    // Processes in a cgroup namespace see their own cgroup as `/`; anything above is `/..`.
    if rel.starts_with("..") {
        String::new()
    } else {
        rel.to_string()
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    pub(crate) const HYBRID_CGROUP: &str = "\
5:name=systemd:/user.slice
4:memory:/process_api/abc
3:cpuset:/
1:cpu,cpuacct:/
0::/
";

    #[test]
    fn hybrid_layout_keys_mounts_and_own_cgroups() {
        let l = Layout::parse(HYBRID_MOUNTINFO, HYBRID_CGROUP).unwrap();
        assert_eq!(l.hierarchy(), Hierarchy::Hybrid);
        let keys: Vec<&str> = l.v1.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["cpu,cpuacct", "cpuset", "memory", "name=systemd"]);
        assert_eq!(l.v1[2].own, "process_api/abc");
        assert_eq!(l.v1[3].own, "user.slice");
        assert_eq!(l.v1[0].own, "");
        let u = l.unified.unwrap();
        assert_eq!(u.mountpoint, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn pure_v2_layout() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = Layout::parse(mi, "0::/system.slice/x.service\n").unwrap();
        assert_eq!(l.hierarchy(), Hierarchy::Unified);
        assert!(l.v1.is_empty());
        assert_eq!(l.unified.unwrap().own, "system.slice/x.service");
    }

    #[test]
    fn legacy_layout_and_no_cgroups_error() {
        let mi = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let l = Layout::parse(mi, "4:memory:/a\n").unwrap();
        assert_eq!(l.hierarchy(), Hierarchy::Legacy);
        let err = Layout::parse("1 0 8:1 / / rw - ext4 /dev/sda rw\n", "").unwrap_err();
        assert!(err.to_string().contains("no cgroup file system"), "{err}");
    }

    #[test]
    fn own_cgroup_is_relative_to_the_mount_root() {
        assert_eq!(relative_to_root("/a/b", "/a"), "b");
        assert_eq!(relative_to_root("/a", "/a"), "");
        assert_eq!(relative_to_root("/a/b", "/"), "a/b");
        assert_eq!(relative_to_root("/../x", "/"), "");
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
