//! `linux.cgroupsPath` semantics (runc's): cgroupfs paths and systemd `slice:prefix:name`.

use crate::{Error, Result};

/// A container's cgroup as named by the spec, before it is placed in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecPath {
    /// Absolute paths start at each hierarchy's mount; relative ones at the caller's own cgroup.
    pub absolute: bool,
    /// Clean, `/`-separated, no leading `/`, never empty.
    pub rel: String,
}

/// Resolve the configured path. An empty or absent path means `<id>` below the caller's cgroup;
/// with `systemd`, the path is `slice:prefix:name` and becomes `<slice dirs>/<prefix>-<name>.scope`.
pub(crate) fn spec_path(cgroups_path: Option<&str>, id: &str, systemd: bool) -> Result<SpecPath> {
    let raw = cgroups_path.unwrap_or("");
    if systemd {
        let rel = systemd_path(raw, id)?;
        return Ok(SpecPath {
            absolute: true,
            rel,
        });
    }
    if raw.is_empty() {
        return Ok(SpecPath {
            absolute: false,
            rel: clean(id),
        });
    }
    let rel = clean(raw);
    if rel.is_empty() {
        return Err(Error::InvalidPath(format!(
            "cgroupsPath {raw:?} names the root cgroup; a container needs a cgroup of its own"
        )));
    }
    Ok(SpecPath {
        absolute: raw.starts_with('/'),
        rel,
    })
}

/// Clean a path lexically as if it were rooted: `.` dropped, `..` clamped at the top.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn systemd_path(raw: &str, id: &str) -> Result<String> {
    let owned;
    let raw = if raw.is_empty() {
        owned = format!("system.slice:berth:{id}");
        owned.as_str()
    } else {
        raw
    };
    let parts: Vec<&str> = raw.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(Error::InvalidPath(format!(
            "with --systemd-cgroup, cgroupsPath must be \"slice:prefix:name\", got {raw:?}"
        )));
    };
    if name.is_empty() || name.contains('/') || prefix.contains('/') {
        return Err(Error::InvalidPath(format!(
            "systemd cgroupsPath {raw:?}: bad unit name"
        )));
    }
    let in_raw = |e: Error| {
        Error::InvalidPath(format!(
            "{} in {raw:?}",
            e.to_string().trim_start_matches("cgroupsPath: ")
        ))
    };
    let slice = expand_slice(if slice.is_empty() {
        "system.slice"
    } else {
        slice
    })
    .map_err(in_raw)?;
    let unit = if name.ends_with(".slice") {
        expand_slice(name)
            .map_err(in_raw)?
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(if slice.is_empty() {
        unit
    } else {
        format!("{slice}/{unit}")
    })
}

/// `a-b-c.slice` -> `a.slice/a-b.slice/a-b-c.slice`; `-.slice` (the root slice) -> ``.
fn expand_slice(slice: &str) -> Result<String> {
    let bad = || Error::InvalidPath(format!("invalid systemd slice name {slice:?}"));
    let base = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if base == "-" {
        return Ok(String::new());
    }
    if base.is_empty()
        || base.contains('/')
        || base.starts_with('-')
        || base.ends_with('-')
        || base.contains("--")
    {
        return Err(bad());
    }
    let mut out = Vec::new();
    let mut prefix = String::new();
    for (i, comp) in base.split('-').enumerate() {
        if i > 0 {
            prefix.push('-');
        }
        prefix.push_str(comp);
        out.push(format!("{prefix}.slice"));
    }
    Ok(out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(abs: bool, rel: &str) -> SpecPath {
        SpecPath {
            absolute: abs,
            rel: rel.into(),
        }
    }

    #[test]
    fn cgroupfs_paths_follow_runc() {
        assert_eq!(spec_path(None, "c1", false).unwrap(), sp(false, "c1"));
        assert_eq!(spec_path(Some(""), "c1", false).unwrap(), sp(false, "c1"));
        assert_eq!(
            spec_path(Some("/default/c1"), "c1", false).unwrap(),
            sp(true, "default/c1")
        );
        assert_eq!(
            spec_path(Some("kube/./pod//c1"), "c1", false).unwrap(),
            sp(false, "kube/pod/c1")
        );
        assert_eq!(
            spec_path(Some("/../../etc/x"), "c1", false).unwrap(),
            sp(true, "etc/x")
        );
        let err = spec_path(Some("/.."), "c1", false).unwrap_err();
        assert!(err.to_string().contains("root cgroup"), "{err}");
    }

    #[test]
    fn systemd_paths_expand_slices() {
        assert_eq!(
            spec_path(Some("system.slice:docker:abc"), "x", true).unwrap(),
            sp(true, "system.slice/docker-abc.scope")
        );
        assert_eq!(
            spec_path(Some("kubepods-besteffort-pod1.slice:cri:abc"), "x", true).unwrap(),
            sp(
                true,
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-abc.scope"
            )
        );
        assert_eq!(
            spec_path(Some(":p:n"), "x", true).unwrap(),
            sp(true, "system.slice/p-n.scope")
        );
        assert_eq!(
            spec_path(Some("-.slice::n"), "x", true).unwrap(),
            sp(true, "n.scope")
        );
        assert_eq!(
            spec_path(None, "x", true).unwrap(),
            sp(true, "system.slice/berth-x.scope")
        );
        assert_eq!(
            spec_path(Some("a.slice:p:b-c.slice"), "x", true).unwrap(),
            sp(true, "a.slice/b-c.slice")
        );
        for bad in ["/abs/path", "a:b", "bad:p:n", "a--b.slice:p:n"] {
            let err = spec_path(Some(bad), "x", true).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }
}
