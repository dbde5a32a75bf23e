//! Writing resource limits to a cgroup2 directory.

use std::path::Path;

use oci_spec::runtime::{LinuxHugepageLimit, LinuxMemory, LinuxResources};

use crate::fsutil::{read, write};
use crate::{Error, Result, bpf};

/// Apply `r` to the cgroup2 directory `dir` (a pure-v2 host).
pub(crate) fn apply(dir: &Path, r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        enable(dir, "memory")?;
        memory(dir, m)?;
    }
    if let Some(c) = r.cpu() {
        if c.shares().is_some_and(|s| s != 0)
            || c.quota().is_some()
            || c.period().is_some()
            || c.idle().is_some()
        {
            enable(dir, "cpu")?;
        }
        if let Some(s) = c.shares().filter(|s| *s != 0) {
            write(dir, "cpu.weight", shares_to_weight(s).to_string())?;
        }
        if c.quota().is_some() || c.period().is_some() {
            let current = read(dir, "cpu.max").unwrap_or_else(|_| "max 100000".into());
            let (cur_quota, cur_period) = current.split_once(' ').unwrap_or(("max", "100000"));
            let quota = match c.quota() {
                Some(q) if q > 0 => q.to_string(),
                Some(_) => "max".to_string(),
                None => cur_quota.to_string(),
            };
            let period = c
                .period()
                .filter(|p| *p != 0)
                .map_or_else(|| cur_period.to_string(), |p| p.to_string());
            write(dir, "cpu.max", format!("{quota} {period}"))?;
        }
        if let Some(b) = c.burst() {
            write(dir, "cpu.max.burst", b.to_string())?;
        }
        if let Some(i) = c.idle() {
            write(dir, "cpu.idle", i.to_string())?;
        }
        if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
            return Err(Error::Unsupported(
                "cpu.realtimeRuntime/realtimePeriod: cgroup v2 has no realtime limits".into(),
            ));
        }
        if c.cpus().is_some() || c.mems().is_some() {
            enable(dir, "cpuset")?;
        }
        if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
            write(dir, "cpuset.mems", v)?;
        }
        if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
            write(dir, "cpuset.cpus", v)?;
        }
    }
    if let Some(p) = r.pids() {
        enable(dir, "pids")?;
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        write(dir, "pids.max", v)?;
    }
    if let Some(b) = r.block_io() {
        enable(dir, "io")?;
        if let Some(w) = b.weight() {
            let file = if dir.join("io.bfq.weight").exists() {
                "io.bfq.weight"
            } else {
                "io.weight"
            };
            write(dir, file, format!("default {}", blkio_to_io_weight(w)))?;
        }
        for d in b.weight_device().as_deref().unwrap_or_default() {
            if let Some(w) = d.weight() {
                write(
                    dir,
                    "io.weight",
                    format!("{}:{} {}", d.major(), d.minor(), blkio_to_io_weight(w)),
                )?;
            }
        }
        let throttles = [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ];
        for (key, list) in throttles {
            for d in list.as_deref().unwrap_or_default() {
                write(
                    dir,
                    "io.max",
                    format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()),
                )?;
            }
        }
    }
    if let Some(limits) = r.hugepage_limits() {
        hugetlb(dir, limits)?;
    }
    if r.network().is_some() {
        return Err(Error::Unsupported(
            "linux.resources.network: cgroup v2 has no net_cls/net_prio".into(),
        ));
    }
    if let Some(rules) = r.devices() {
        bpf::attach_device_filter(dir, rules)?;
    }
    Ok(())
}

fn memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let limit = m.limit();
    if let Some(l) = limit {
        write(
            dir,
            "memory.max",
            if l > 0 { l.to_string() } else { "max".into() },
        )?;
    }
    if let Some(v) = swap_max(limit, m.swap())? {
        write(dir, "memory.swap.max", v)?;
    }
    if let Some(r) = m.reservation() {
        write(
            dir,
            "memory.low",
            if r > 0 { r.to_string() } else { "max".into() },
        )?;
    }
    if m.swappiness().is_some()
        || m.kernel().is_some()
        || m.kernel_tcp().is_some()
        || m.disable_oom_killer().is_some()
    {
        tracing::warn!(
            "memory swappiness, kernel, kernelTCP and disableOOMKiller have no cgroup v2 equivalent; ignored"
        );
    }
    Ok(())
}

/// OCI's `swap` is memory plus swap; cgroup2's `memory.swap.max` is swap alone.
pub(crate) fn swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>> {
    match (limit, swap) {
        (_, None | Some(0)) => Ok(None),
        (_, Some(-1)) => Ok(Some("max".into())),
        (Some(l), Some(s)) if l > 0 && s >= l => Ok(Some((s - l).to_string())),
        (Some(l), Some(s)) if l > 0 => Err(Error::Invalid(format!(
            "memory.swap ({s}) is less than memory.limit ({l}); in the OCI spec swap counts memory plus swap"
        ))),
        (_, Some(s)) => Err(Error::Invalid(format!(
            "memory.swap ({s}) needs a finite memory.limit on cgroup v2 (swap alone is swap minus limit)"
        ))),
    }
}

/// cgroup v1 `cpu.shares` (2..262144) to cgroup2 `cpu.weight` (1..10000), as runc converts.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// v1 blkio weight (10..1000) to cgroup2 io weight (1..10000).
pub(crate) fn blkio_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// Write hugetlb limits to the cgroup2 directory `dir`.
pub(crate) fn hugetlb(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<()> {
    enable(dir, "hugetlb")?;
    for l in limits {
        write(
            dir,
            &format!("hugetlb.{}.max", l.page_size()),
            l.limit().to_string(),
        )?;
    }
    Ok(())
}

/// Make `controller` available in `dir` by enabling it in every ancestor's `cgroup.subtree_control`
/// from the hierarchy's root down.
pub(crate) fn enable(dir: &Path, controller: &str) -> Result<()> {
    let mut chain = Vec::new();
    let mut cur = dir.parent();
    while let Some(d) = cur {
        if !d.join("cgroup.controllers").exists() {
            break;
        }
        chain.push(d);
        cur = d.parent();
    }
    for d in chain.into_iter().rev() {
        let enabled = read(d, "cgroup.subtree_control")?;
        if enabled.split_whitespace().any(|c| c == controller) {
            continue;
        }
        let available = read(d, "cgroup.controllers")?;
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(Error::Unsupported(format!(
                "the {controller} controller is not available in {} (it offers: {available})",
                d.display()
            )));
        }
        write(d, "cgroup.subtree_control", format!("+{controller}"))?;
    }
    Ok(())
}

/// Controllers available to a cgroup at `dir` (which may not exist yet).
pub(crate) fn available(dir: &Path) -> Vec<String> {
    let existing = dir
        .ancestors()
        .find(|d| d.join("cgroup.controllers").exists());
    existing
        .and_then(|d| read(d, "cgroup.controllers").ok())
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_the_kernel_ranges() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 4950);
    }

    #[test]
    fn swap_is_converted_from_memory_plus_swap() {
        assert_eq!(swap_max(Some(100), None).unwrap(), None);
        assert_eq!(
            swap_max(Some(100), Some(-1)).unwrap().as_deref(),
            Some("max")
        );
        assert_eq!(
            swap_max(Some(100), Some(300)).unwrap().as_deref(),
            Some("200")
        );
        assert_eq!(
            swap_max(Some(100), Some(100)).unwrap().as_deref(),
            Some("0")
        );
        assert!(
            swap_max(Some(100), Some(50))
                .unwrap_err()
                .to_string()
                .contains("less than memory.limit")
        );
        assert!(
            swap_max(None, Some(50))
                .unwrap_err()
                .to_string()
                .contains("finite memory.limit")
        );
    }
}
