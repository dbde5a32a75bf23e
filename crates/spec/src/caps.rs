//! Capability sets: Docker's default 14, `--cap-add`/`--cap-drop` and `--privileged`.

use std::str::FromStr;

use oci_spec::runtime::Capability;

use crate::Error;

/// Docker's default capability set, in Docker's order.
pub(crate) const DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel (and oci-spec) knows, by number.
pub(crate) const ALL: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// "sys_admin", "CAP_SYS_ADMIN", "Sys_Admin" -> "CAP_SYS_ADMIN"; "all" -> "ALL".
fn normalize(flag: &str, name: &str) -> Result<String, Error> {
    let up = name.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::invalid(
            flag,
            name,
            format!("unknown capability: {full:?}"),
        ))
    }
}

/// This process's bounding set (bit n = capability n), from /proc/self/status; `None` if it
/// cannot be read.
pub(crate) fn host_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// "All capabilities" for `--privileged` and `--cap-add ALL`: every capability the kernel
/// knows that the daemon itself holds in its bounding set (`host`), since a runtime cannot
/// grant more (on a host without CAP_SYS_RESOURCE every privileged container would fail).
/// [`ALL`] is in kernel numbering order, so the index is the capability number.
fn all_available(host: Option<u64>) -> Vec<String> {
    ALL.iter()
        .enumerate()
        .filter(|(n, _)| host.is_none_or(|set| set & (1u64 << n) != 0))
        .map(|(_, c)| (*c).to_owned())
        .collect()
}

/// The container's capabilities (`CAP_` names) from Docker's rules: privileged -> all;
/// `--cap-add ALL` -> all minus the drops; `--cap-drop ALL` -> only the adds; else the
/// defaults minus the drops plus the adds. "All" is limited to `host`'s bounding set.
pub(crate) fn resolve(
    adds: &[String],
    drops: &[String],
    privileged: bool,
    host: Option<u64>,
) -> Result<Vec<String>, Error> {
    let adds = adds
        .iter()
        .map(|c| normalize("--cap-add", c))
        .collect::<Result<Vec<_>, _>>()?;
    let drops = drops
        .iter()
        .map(|c| normalize("--cap-drop", c))
        .collect::<Result<Vec<_>, _>>()?;
    if privileged {
        return Ok(all_available(host));
    }
    let has = |v: &[String], c: &str| v.iter().any(|x| x == c);
    let mut out: Vec<String> = if has(&adds, "ALL") {
        all_available(host)
            .into_iter()
            .filter(|c| !has(&drops, c))
            .collect()
    } else if has(&drops, "ALL") {
        adds
    } else {
        let mut v: Vec<String> = DEFAULT
            .iter()
            .filter(|c| !has(&drops, c))
            .map(|c| (*c).to_owned())
            .collect();
        v.extend(adds);
        v
    };
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(c.clone()));
    Ok(out)
}

/// `CAP_` names -> oci-spec capabilities (names come from [`ALL`], so they always convert).
pub(crate) fn to_oci(names: &[String]) -> Result<oci_spec::runtime::Capabilities, Error> {
    names
        .iter()
        .map(|n| {
            Capability::from_str(n.trim_start_matches("CAP_"))
                .map_err(|_| Error::Config(format!("capability {n} is unknown to oci-spec")))
        })
        .collect()
}
