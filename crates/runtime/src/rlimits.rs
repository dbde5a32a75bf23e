//! POSIX rlimits: names, host limits, and applying them.

use oci_spec::runtime::{PosixRlimit, PosixRlimitType};
use rustix::process::{Resource, Rlimit};

use crate::error::{Context, Result};

/// The rlimit's name as the spec writes it.
pub fn name(t: PosixRlimitType) -> &'static str {
    match t {
        PosixRlimitType::RlimitCpu => "RLIMIT_CPU",
        PosixRlimitType::RlimitFsize => "RLIMIT_FSIZE",
        PosixRlimitType::RlimitData => "RLIMIT_DATA",
        PosixRlimitType::RlimitStack => "RLIMIT_STACK",
        PosixRlimitType::RlimitCore => "RLIMIT_CORE",
        PosixRlimitType::RlimitRss => "RLIMIT_RSS",
        PosixRlimitType::RlimitNproc => "RLIMIT_NPROC",
        PosixRlimitType::RlimitNofile => "RLIMIT_NOFILE",
        PosixRlimitType::RlimitMemlock => "RLIMIT_MEMLOCK",
        PosixRlimitType::RlimitAs => "RLIMIT_AS",
        PosixRlimitType::RlimitLocks => "RLIMIT_LOCKS",
        PosixRlimitType::RlimitSigpending => "RLIMIT_SIGPENDING",
        PosixRlimitType::RlimitMsgqueue => "RLIMIT_MSGQUEUE",
        PosixRlimitType::RlimitNice => "RLIMIT_NICE",
        PosixRlimitType::RlimitRtprio => "RLIMIT_RTPRIO",
        PosixRlimitType::RlimitRttime => "RLIMIT_RTTIME",
    }
}

fn resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::Cpu,
        PosixRlimitType::RlimitFsize => Resource::Fsize,
        PosixRlimitType::RlimitData => Resource::Data,
        PosixRlimitType::RlimitStack => Resource::Stack,
        PosixRlimitType::RlimitCore => Resource::Core,
        PosixRlimitType::RlimitRss => Resource::Rss,
        PosixRlimitType::RlimitNproc => Resource::Nproc,
        PosixRlimitType::RlimitNofile => Resource::Nofile,
        PosixRlimitType::RlimitMemlock => Resource::Memlock,
        PosixRlimitType::RlimitAs => Resource::As,
        PosixRlimitType::RlimitLocks => Resource::Locks,
        PosixRlimitType::RlimitSigpending => Resource::Sigpending,
        PosixRlimitType::RlimitMsgqueue => Resource::Msgqueue,
        PosixRlimitType::RlimitNice => Resource::Nice,
        PosixRlimitType::RlimitRtprio => Resource::Rtprio,
        PosixRlimitType::RlimitRttime => Resource::Rttime,
    }
}

/// "unlimited" for `RLIM_INFINITY`, the number otherwise.
pub fn show(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

/// The calling process's hard limit (`u64::MAX` for unlimited).
pub fn current_hard(t: PosixRlimitType) -> u64 {
    rustix::process::getrlimit(resource(t))
        .maximum
        .unwrap_or(u64::MAX)
}

/// Whether this process may raise hard limits (CAP_SYS_RESOURCE in its effective set).
pub fn can_raise_hard_limits() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false)
}

/// Apply every rlimit to the calling process.
pub fn apply(list: &[PosixRlimit]) -> Result<()> {
    for rl in list {
        let to = |v: u64| (v != u64::MAX).then_some(v);
        rustix::process::setrlimit(
            resource(rl.typ()),
            Rlimit {
                current: to(rl.soft()),
                maximum: to(rl.hard()),
            },
        )
        .ctx(|| {
            format!(
                "set {} to soft {} hard {} (current hard limit {})",
                name(rl.typ()),
                show(rl.soft()),
                show(rl.hard()),
                show(current_hard(rl.typ()))
            )
        })?;
    }
    Ok(())
}
