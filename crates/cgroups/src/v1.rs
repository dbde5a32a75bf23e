//! Writing resource limits to v1 controller hierarchies.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};

use crate::fsutil::{read_u64, write};
use crate::{Error, Manager, Result, v2};

/// Apply `r` to the v1 hierarchies of `m` (hugetlb goes to cgroup2 on hybrid hosts without a v1
/// hugetlb hierarchy).
pub(crate) fn apply(m: &Manager, r: &LinuxResources) -> Result<()> {
    if let Some(mem) = r.memory() {
        memory(m.need_v1("memory")?, mem)?;
    }
    if let Some(cpu) = r.cpu() {
        cpu_limits(m, cpu)?;
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        write(m.need_v1("pids")?, "pids.max", v)?;
    }
    if let Some(b) = r.block_io() {
        blkio(m.need_v1("blkio")?, b)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        match m.v1_dir("hugetlb") {
            Some(dir) => {
                for l in limits {
                    write(
                        dir,
                        &format!("hugetlb.{}.limit_in_bytes", l.page_size()),
                        l.limit().to_string(),
                    )?;
                }
            }
            None => v2::hugetlb(m.need_unified()?, limits)?,
        }
    }
    if let Some(net) = r.network() {
        if let Some(id) = net.class_id() {
            write(m.need_v1("net_cls")?, "net_cls.classid", id.to_string())?;
        }
        for p in net.priorities().as_deref().unwrap_or_default() {
            write(
                m.need_v1("net_prio")?,
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
            )?;
        }
    }
    if let Some(rules) = r.devices() {
        devices(m.need_v1("devices")?, rules)?;
    }
    Ok(())
}

fn memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    // An unlimited memory limit with swap left unset makes swap unlimited too.
    if limit == -1 && swap == 0 {
        swap = -1;
    }
    let has_memsw = dir.join("memory.memsw.limit_in_bytes").exists();
    let set_swap = |v: i64| -> Result<()> {
        if has_memsw {
            write(dir, "memory.memsw.limit_in_bytes", v.to_string())
        } else {
            Ok(()) // check() refused a finite swap limit; unlimited needs no write
        }
    };
    if limit != 0 && swap != 0 {
        // The kernel requires limit <= memsw at every moment: order the writes to keep it so.
        let current = read_u64(dir, "memory.limit_in_bytes")?.unwrap_or(u64::MAX);
        if swap == -1 || u64::try_from(swap).is_ok_and(|s| current < s) {
            set_swap(swap)?;
            write(dir, "memory.limit_in_bytes", limit.to_string())?;
        } else {
            write(dir, "memory.limit_in_bytes", limit.to_string())?;
            set_swap(swap)?;
        }
    } else if limit != 0 {
        write(dir, "memory.limit_in_bytes", limit.to_string())?;
    } else if swap != 0 {
        set_swap(swap)?;
    }
    if let Some(v) = m.reservation() {
        write(dir, "memory.soft_limit_in_bytes", v.to_string())?;
    }
    if m.kernel().is_some() {
        tracing::warn!(
            "linux.resources.memory.kernel is ignored: kernel memory limits are deprecated"
        );
    }
    if let Some(v) = m.kernel_tcp() {
        write(dir, "memory.kmem.tcp.limit_in_bytes", v.to_string())?;
    }
    if let Some(v) = m.swappiness() {
        write(dir, "memory.swappiness", v.to_string())?;
    }
    if m.disable_oom_killer() == Some(true) {
        write(dir, "memory.oom_control", "1")?;
    }
    Ok(())
}

fn cpu_limits(m: &Manager, c: &LinuxCpu) -> Result<()> {
    let wants_cpu = c.shares().is_some()
        || c.quota().is_some()
        || c.period().is_some()
        || c.realtime_runtime().is_some()
        || c.realtime_period().is_some()
        || c.idle().is_some()
        || c.burst().is_some();
    if wants_cpu {
        let dir = m.need_v1("cpu")?;
        if let Some(v) = c.shares().filter(|v| *v != 0) {
            write(dir, "cpu.shares", v.to_string())?;
        }
        if let Some(v) = c.period().filter(|v| *v != 0) {
            write(dir, "cpu.cfs_period_us", v.to_string())?;
        }
        if let Some(v) = c.quota().filter(|v| *v != 0) {
            write(dir, "cpu.cfs_quota_us", v.to_string())?;
        }
        if let Some(v) = c.burst() {
            write(dir, "cpu.cfs_burst_us", v.to_string())?;
        }
        if let Some(v) = c.realtime_period().filter(|v| *v != 0) {
            write(dir, "cpu.rt_period_us", v.to_string())?;
        }
        if let Some(v) = c.realtime_runtime().filter(|v| *v != 0) {
            write(dir, "cpu.rt_runtime_us", v.to_string())?;
        }
        if let Some(v) = c.idle() {
            write(dir, "cpu.idle", v.to_string())?;
        }
    }
    if c.cpus().is_some() || c.mems().is_some() {
        let dir = m.need_v1("cpuset")?;
        if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
            write(dir, "cpuset.mems", v)?;
        }
        if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
            write(dir, "cpuset.cpus", v)?;
        }
    }
    Ok(())
}

/// The file that takes a proportional weight, if the I/O scheduler offers one.
pub(crate) fn blkio_weight_file(dir: &Path) -> Option<&'static str> {
    ["blkio.weight", "blkio.bfq.weight"]
        .into_iter()
        .find(|f| dir.join(f).exists())
}

fn blkio(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    let weight_file = || {
        blkio_weight_file(dir).ok_or_else(|| {
            Error::Unsupported("blkio weight: no blkio.weight or blkio.bfq.weight file here".into())
        })
    };
    if let Some(w) = b.weight() {
        write(dir, weight_file()?, w.to_string())?;
    }
    if let Some(w) = b.leaf_weight() {
        write(dir, "blkio.leaf_weight", w.to_string())?;
    }
    for d in b.weight_device().as_deref().unwrap_or_default() {
        if let Some(w) = d.weight() {
            write(
                dir,
                &format!("{}_device", weight_file()?),
                format!("{}:{} {w}", d.major(), d.minor()),
            )?;
        }
        if let Some(w) = d.leaf_weight() {
            write(
                dir,
                "blkio.leaf_weight_device",
                format!("{}:{} {w}", d.major(), d.minor()),
            )?;
        }
    }
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ];
    for (file, list) in throttles {
        for d in list.as_deref().unwrap_or_default() {
            write(
                dir,
                file,
                format!("{}:{} {}", d.major(), d.minor(), d.rate()),
            )?;
        }
    }
    Ok(())
}

/// One rule in the v1 `devices.allow`/`devices.deny` syntax (`c 1:3 rwm`); `None` for rule
/// types the devices controller cannot express (FIFOs, which it never restricts).
pub(crate) fn device_rule(r: &LinuxDeviceCgroup) -> Option<String> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let t = match r.typ().unwrap_or(T::A) {
        T::A => 'a',
        T::B => 'b',
        T::C | T::U => 'c',
        T::P => return None,
    };
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or_else(|| "*".to_string(), |n| n.to_string())
    };
    let access = r
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    Some(format!(
        "{t} {}:{} {access}",
        num(r.major()),
        num(r.minor())
    ))
}

/// Deny everything, then apply each rule in order (a later rule overrides an earlier one).
fn devices(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    write(dir, "devices.deny", "a")?;
    for r in rules {
        let Some(rule) = device_rule(r) else { continue };
        let file = if r.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write(dir, file, rule)?;
    }
    Ok(())
}

/// New v1 cpusets start with no cpus and no memory nodes, and no task can join them: copy the
/// parent's. A parent that is itself still empty (another process made it and has not filled it
/// in yet, or died before it could) is filled in from its own parent first, so two creators racing
/// down the same path both end up with the hierarchy's values instead of copying an empty one.
pub(crate) fn init_cpuset(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if crate::fsutil::read(dir, file)?.is_empty() {
            let mut value = crate::fsutil::read(parent, file)?;
            if value.is_empty() {
                // The hierarchy's root is never empty, so this stops before leaving it.
                init_cpuset(parent)?;
                value = crate::fsutil::read(parent, file)?;
            }
            write(dir, file, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    #[test]
    fn device_rules_render_in_v1_syntax() {
        let r = |allow, typ, major, minor, access: &str| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(allow)
                .typ(typ)
                .access(access);
            if let Some(m) = major {
                b = b.major(m);
            }
            if let Some(m) = minor {
                b = b.minor(m);
            }
            device_rule(&b.build().unwrap())
        };
        assert_eq!(
            r(false, LinuxDeviceType::A, None, None, "rwm").as_deref(),
            Some("a *:* rwm")
        );
        assert_eq!(
            r(true, LinuxDeviceType::C, Some(1), Some(3), "rw").as_deref(),
            Some("c 1:3 rw")
        );
        assert_eq!(
            r(true, LinuxDeviceType::B, Some(8), None, "").as_deref(),
            Some("b 8:* rwm")
        );
        assert_eq!(
            r(true, LinuxDeviceType::U, Some(5), Some(1), "m").as_deref(),
            Some("c 5:1 m")
        );
        assert_eq!(r(true, LinuxDeviceType::P, None, None, "rwm"), None);
    }
}
