//! Loading and validating `config.json`.
//!
//! Parsing goes through `serde_path_to_error`, so a malformed config names the exact field
//! (`process.rlimits[0].type`). Validation then checks what the types cannot: paths, namespace
//! combinations, limits this host can grant. Everything here runs before `create` touches the
//! system, so a bad config leaves nothing behind.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimit, Process, Spec};

use crate::namespaces;
use crate::rlimits;

/// A config problem, with the file and (where known) the JSON field.
#[derive(Debug, thiserror::Error)]
pub struct SpecError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Dotted JSON path of the offending field, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}", self.file.display())?;
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl SpecError {
    fn field(file: &Path, field: impl Into<String>, problem: impl Into<String>) -> SpecError {
        SpecError {
            file: file.to_path_buf(),
            field: Some(field.into()),
            problem: problem.into(),
        }
    }
}

/// Parse JSON into `T`, naming the failing field on error.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    file: &Path,
    bytes: &[u8],
) -> Result<T, SpecError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        SpecError {
            file: file.to_path_buf(),
            field: (path != ".").then_some(path),
            problem: inner.to_string(),
        }
    })
}

/// Read and parse `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    read(bundle).map(|(spec, _)| spec)
}

/// Read and parse `<bundle>/config.json`, keeping its bytes.
pub fn read(bundle: &Path) -> Result<(Spec, Vec<u8>), SpecError> {
    let file = bundle.join("config.json");
    let bytes = std::fs::read(&file).map_err(|e| SpecError {
        file: file.clone(),
        field: None,
        problem: format!("cannot read it: {e}"),
    })?;
    Ok((parse_json(&file, &bytes)?, bytes))
}

/// Resolve `root.path` against the bundle.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf, SpecError> {
    let file = bundle.join("config.json");
    let root = spec.root().as_ref().ok_or_else(|| {
        SpecError::field(
            &file,
            "root",
            "missing: a Linux container needs a root filesystem",
        )
    })?;
    let path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(SpecError::field(
            &file,
            "root.path",
            format!("rootfs {} is not a directory", path.display()),
        )),
        Err(e) => Err(SpecError::field(
            &file,
            "root.path",
            format!(
                "rootfs {} does not exist or cannot be read: {e}",
                path.display()
            ),
        )),
    }
}

/// Check everything about `spec` that the type system does not, for `create`.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    let file = bundle.join("config.json");
    let version = spec.version();
    if !version.starts_with("1.") {
        return Err(SpecError::field(
            &file,
            "ociVersion",
            format!("unsupported version {version:?}: berth-runtime implements runtime-spec 1.x"),
        ));
    }
    let process = spec.process().as_ref().ok_or_else(|| {
        SpecError::field(&file, "process", "missing: `create` needs a process to run")
    })?;
    validate_process(process, &file, "process")?;

    let linux = spec.linux().as_ref().ok_or_else(|| {
        SpecError::field(
            &file,
            "linux",
            "missing: berth-runtime runs Linux containers only",
        )
    })?;

    let mut seen = HashSet::new();
    let nss = linux.namespaces().as_deref().unwrap_or_default();
    for (i, ns) in nss.iter().enumerate() {
        let name = namespaces::proc_name(ns.typ());
        if !seen.insert(ns.typ()) {
            return Err(SpecError::field(
                &file,
                format!("linux.namespaces[{i}]"),
                format!("namespace {name} is listed twice"),
            ));
        }
        if !namespaces::host_supports(ns.typ()) {
            return Err(SpecError::field(
                &file,
                format!("linux.namespaces[{i}].type"),
                format!("the kernel does not support {name} namespaces (no /proc/self/ns/{name})"),
            ));
        }
        if let Some(path) = ns.path() {
            if let Err(e) = std::fs::metadata(path) {
                return Err(SpecError::field(
                    &file,
                    format!("linux.namespaces[{i}].path"),
                    format!("cannot join {name} namespace at {}: {e}", path.display()),
                ));
            }
        }
    }
    let has_new = |t: LinuxNamespaceType| nss.iter().any(|n| n.typ() == t && n.path().is_none());
    let has_any = |t: LinuxNamespaceType| nss.iter().any(|n| n.typ() == t);

    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if has_new(LinuxNamespaceType::User) {
        if linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
            || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty())
        {
            return Err(SpecError::field(
                &file,
                "linux.uidMappings",
                "a new user namespace needs both uidMappings and gidMappings",
            ));
        }
    } else if maps && !has_any(LinuxNamespaceType::User) {
        return Err(SpecError::field(
            &file,
            "linux.uidMappings",
            "uid/gid mappings are set but there is no user namespace to apply them to",
        ));
    }

    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        && !has_new(LinuxNamespaceType::Uts)
    {
        return Err(SpecError::field(
            &file,
            "hostname",
            "setting the hostname needs a new UTS namespace (add {\"type\": \"uts\"} to linux.namespaces)",
        ));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty())
        && !has_new(LinuxNamespaceType::Uts)
    {
        return Err(SpecError::field(
            &file,
            "domainname",
            "setting the domain name needs a new UTS namespace",
        ));
    }
    if !has_any(LinuxNamespaceType::Mount) {
        return Err(SpecError::field(
            &file,
            "linux.namespaces",
            "berth-runtime needs a mount namespace to set up the root filesystem (add {\"type\": \"mount\"})",
        ));
    }
    if has_any(LinuxNamespaceType::Time) {
        if let Some(offsets) = linux.time_offsets() {
            for k in offsets.keys() {
                if k != "monotonic" && k != "boottime" {
                    return Err(SpecError::field(
                        &file,
                        format!("linux.timeOffsets.{k}"),
                        "only the monotonic and boottime clocks can be offset",
                    ));
                }
            }
            if !has_new(LinuxNamespaceType::Time) && !offsets.is_empty() {
                return Err(SpecError::field(
                    &file,
                    "linux.timeOffsets",
                    "time offsets need a new time namespace, not a joined one",
                ));
            }
        }
    } else if linux.time_offsets().as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(SpecError::field(
            &file,
            "linux.timeOffsets",
            "time offsets need a time namespace",
        ));
    }

    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            check_sysctl(key, &has_new)
                .map_err(|p| SpecError::field(&file, format!("linux.sysctl.{key}"), p))?;
        }
    }

    for (i, m) in spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let dest = m.destination();
        if dest.as_os_str().is_empty() {
            return Err(SpecError::field(
                &file,
                format!("mounts[{i}].destination"),
                "is empty",
            ));
        }
        let typ = m.typ().as_deref().unwrap_or("");
        let opts = m.options().as_deref().unwrap_or_default();
        let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind && !typ.is_empty() && typ != "cgroup" && typ != "cgroup2" && !fs_supported(typ)
        {
            return Err(SpecError::field(
                &file,
                format!("mounts[{i}].type"),
                format!(
                    "unsupported mount type {typ:?} for {}: the kernel does not list it in /proc/filesystems",
                    dest.display()
                ),
            ));
        }
        if is_bind && m.source().is_none() {
            return Err(SpecError::field(
                &file,
                format!("mounts[{i}].source"),
                "a bind mount needs a source",
            ));
        }
        if opts.iter().any(|o| o == "idmap" || o == "ridmap")
            || m.uid_mappings().is_some()
            || m.gid_mappings().is_some()
        {
            return Err(SpecError::field(
                &file,
                format!("mounts[{i}]"),
                "idmapped mounts are not supported by berth-runtime yet",
            ));
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        if crate::rootfs::options::propagation(prop).is_none() {
            return Err(SpecError::field(
                &file,
                "linux.rootfsPropagation",
                format!(
                    "unknown propagation {prop:?}: use private, rprivate, slave, rslave, shared, rshared, unbindable or runbindable"
                ),
            ));
        }
    }
    Ok(())
}

/// Validate a process (from config.json or an exec process.json) at JSON path `at`.
pub fn validate_process(process: &Process, file: &Path, at: &str) -> Result<(), SpecError> {
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::field(
            file,
            format!("{at}.args"),
            "must name a program to run",
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(SpecError::field(
            file,
            format!("{at}.cwd"),
            format!("{:?} is not an absolute path", process.cwd()),
        ));
    }
    for (i, env) in process
        .env()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if !env.contains('=') || env.starts_with('=') {
            return Err(SpecError::field(
                file,
                format!("{at}.env[{i}]"),
                format!("{env:?} is not of the form KEY=value"),
            ));
        }
    }
    if let Some(rl) = process.rlimits() {
        check_rlimits(rl)
            .map_err(|(i, p)| SpecError::field(file, format!("{at}.rlimits[{i}]"), p))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(SpecError::field(
                file,
                format!("{at}.oomScoreAdj"),
                format!("{adj} is outside -1000..1000"),
            ));
        }
    }
    Ok(())
}

fn check_rlimits(list: &[PosixRlimit]) -> Result<(), (usize, String)> {
    let mut seen = Vec::new();
    let can_raise = rlimits::can_raise_hard_limits();
    for (i, rl) in list.iter().enumerate() {
        let name = rlimits::name(rl.typ());
        if seen.contains(&rl.typ()) {
            return Err((i, format!("{name} is listed twice")));
        }
        seen.push(rl.typ());
        if rl.soft() > rl.hard() {
            return Err((
                i,
                format!(
                    "{name}: soft limit {} is above hard limit {}",
                    rl.soft(),
                    rl.hard()
                ),
            ));
        }
        if !can_raise {
            let current = rlimits::current_hard(rl.typ());
            if rl.hard() > current {
                return Err((
                    i,
                    format!(
                        "{name}: requested hard limit {} is above this host's hard limit {} and berth-runtime cannot raise it (no CAP_SYS_RESOURCE); ask for at most {}",
                        rlimits::show(rl.hard()),
                        rlimits::show(current),
                        rlimits::show(current)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Which namespace a sysctl lives in; refuse those that would change the host.
fn check_sysctl(key: &str, has_new: &dyn Fn(LinuxNamespaceType) -> bool) -> Result<(), String> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if key.contains("..") || key.contains('/') && key.split('/').any(|c| c == "..") {
        return Err("is not a valid sysctl name".into());
    }
    let key = key.replace('/', ".");
    let (needed, what) = if IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
        (LinuxNamespaceType::Ipc, "an IPC")
    } else if key.starts_with("net.") {
        (LinuxNamespaceType::Network, "a network")
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        (LinuxNamespaceType::Uts, "a UTS")
    } else {
        return Err(format!(
            "{key} is not namespaced: setting it would change the host"
        ));
    };
    if has_new(needed) {
        Ok(())
    } else {
        Err(format!(
            "{key} needs {what} namespace of the container's own"
        ))
    }
}

fn fs_supported(typ: &str) -> bool {
    // Read once per process; /proc/filesystems is small.
    static FILESYSTEMS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let list = FILESYSTEMS
        .get_or_init(|| std::fs::read_to_string("/proc/filesystems").unwrap_or_default());
    list.lines()
        .any(|l| l.split_whitespace().last() == Some(typ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bundle(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    const MINIMAL: &str = r#"{
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}
    }"#;

    #[test]
    fn minimal_config_is_valid() {
        let b = write_bundle(MINIMAL);
        let spec = load(b.path()).unwrap();
        validate(&spec, b.path()).unwrap();
        assert_eq!(
            rootfs_path(&spec, b.path()).unwrap(),
            b.path().join("rootfs")
        );
    }

    #[test]
    fn malformed_field_is_named() {
        let b = write_bundle(&MINIMAL.replace(r#""uid": 0"#, r#""uid": "root""#));
        let err = load(b.path()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("process.user.uid"), "{err}");
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn unknown_rlimit_is_named() {
        let b = write_bundle(&MINIMAL.replace(
            r#""cwd": "/","#,
            r#""cwd": "/", "rlimits": [{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}],"#,
        ));
        let err = load(b.path()).unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some("process.rlimits[0].type"),
            "{err}"
        );
    }

    #[test]
    fn missing_rootfs_is_reported() {
        let b = write_bundle(&MINIMAL.replace("\"rootfs\"", "\"nope\""));
        let spec = load(b.path()).unwrap();
        let err = rootfs_path(&spec, b.path()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn relative_cwd_is_refused() {
        let b = write_bundle(&MINIMAL.replace(r#""cwd": "/""#, r#""cwd": "tmp""#));
        let spec = load(b.path()).unwrap();
        let err = validate(&spec, b.path()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("process.cwd"));
    }

    #[test]
    fn hostname_needs_uts_namespace() {
        let b = write_bundle(&MINIMAL.replace(r#""root":"#, r#""hostname": "box", "root":"#));
        let spec = load(b.path()).unwrap();
        let err = validate(&spec, b.path()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("hostname"));
    }

    #[test]
    fn soft_above_hard_is_refused() {
        let b = write_bundle(&MINIMAL.replace(
            r#""cwd": "/","#,
            r#""cwd": "/", "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 20}],"#,
        ));
        let spec = load(b.path()).unwrap();
        let err = validate(&spec, b.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("soft limit 20 is above hard limit 10"),
            "{err}"
        );
    }

    #[test]
    fn host_sysctl_is_refused() {
        let b = write_bundle(&MINIMAL.replace(
            r#""namespaces""#,
            r#""sysctl": {"vm.swappiness": "10"}, "namespaces""#,
        ));
        let spec = load(b.path()).unwrap();
        let err = validate(&spec, b.path()).unwrap_err();
        assert!(err.to_string().contains("not namespaced"), "{err}");
    }

    #[test]
    fn net_sysctl_needs_network_namespace() {
        let with = MINIMAL.replace(
            r#""namespaces": [{"type": "mount"}"#,
            r#""sysctl": {"net.ipv4.ip_forward": "1"}, "namespaces": [{"type": "network"}, {"type": "mount"}"#,
        );
        let b = write_bundle(&with);
        validate(&load(b.path()).unwrap(), b.path()).unwrap();
        let without = MINIMAL.replace(
            r#""namespaces""#,
            r#""sysctl": {"net.ipv4.ip_forward": "1"}, "namespaces""#,
        );
        let b = write_bundle(&without);
        assert!(validate(&load(b.path()).unwrap(), b.path()).is_err());
    }

    #[test]
    fn duplicate_namespace_is_refused() {
        let b = write_bundle(
            &MINIMAL.replace(r#"{"type": "pid"}"#, r#"{"type": "pid"}, {"type": "pid"}"#),
        );
        let err = validate(&load(b.path()).unwrap(), b.path()).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }

    #[test]
    fn user_namespace_needs_mappings() {
        let b = write_bundle(
            &MINIMAL.replace(r#"{"type": "pid"}"#, r#"{"type": "pid"}, {"type": "user"}"#),
        );
        let err = validate(&load(b.path()).unwrap(), b.path()).unwrap_err();
        assert!(err.to_string().contains("uidMappings"), "{err}");
    }

    #[test]
    fn unknown_mount_type_is_refused() {
        let b = write_bundle(&MINIMAL.replace(
            r#""linux""#,
            r#""mounts": [{"destination": "/x", "type": "nosuchfs", "source": "x"}], "linux""#,
        ));
        let err = validate(&load(b.path()).unwrap(), b.path()).unwrap_err();
        assert!(err.to_string().contains("unsupported mount type"), "{err}");
    }
}
