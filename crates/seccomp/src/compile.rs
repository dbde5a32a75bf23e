//! OCI profile -> libseccomp filter -> BPF, with the runtime-spec's validation rules and
//! runc's compatibility behaviour (see the crate docs for the list).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{
    ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall, ScmpVersion,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::arch::{self, ArchInfo};
use crate::bpf::{self, Insn, LastSyscall};
use crate::error::Error;
use crate::kernel::{
    self, FLAG_NEW_LISTENER, FLAG_TSYNC, FLAG_TSYNC_ESRCH, FLAG_WAIT_KILLABLE_RECV,
};
use crate::{NOTIFY_FORBIDDEN_SYSCALLS, Program};

/// Rules above this count get libseccomp's binary-tree layout (as runc does; libseccomp
/// <= 2.5.4 miscompiles the tree for an empty rule set, so small sets keep the linear layout).
const BINARY_TREE_THRESHOLD: usize = 32;

/// Syscalls take at most six arguments.
const MAX_ARG_INDEX: usize = 5;

const ENOSYS: u16 = 38;
const EPERM: u16 = 1;

/// Compile `profile`; see [`crate::compile`].
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<Program, Error> {
    let native = arch::native().ok_or_else(|| {
        Error::unsupported(
            "linux.seccomp",
            "this host's CPU architecture is not one libseccomp filters can be built for",
        )
    })?;
    let mut kernel_actions = ActionCheck::default();

    let default = action(
        profile.default_action(),
        profile.default_errno_ret(),
        "linux.seccomp.defaultAction",
        "linux.seccomp.defaultErrnoRet",
    )?;
    if default == ScmpAction::Notify {
        return Err(Error::invalid(
            "linux.seccomp.defaultAction",
            "SCMP_ACT_NOTIFY cannot be the default action: every syscall the runtime makes \
             before the agent has the listener would block; notify specific syscalls instead",
        ));
    }
    kernel_actions.check(default, "linux.seccomp.defaultAction")?;

    let rules = profile.syscalls().as_deref().unwrap_or_default();
    let notify_rule = rules
        .iter()
        .position(|r| r.action() == LinuxSeccompAction::ScmpActNotify);
    if let Some(i) = notify_rule {
        let has_path = profile
            .listener_path()
            .as_ref()
            .is_some_and(|p| !p.as_os_str().is_empty());
        if !has_path {
            return Err(Error::invalid(
                "linux.seccomp.listenerPath",
                format!(
                    "linux.seccomp.syscalls[{i}] uses SCMP_ACT_NOTIFY, which needs a \
                     listenerPath to send the notification fd to: set it, or use another action"
                ),
            ));
        }
    }

    let mut flags = flags(
        profile.flags().as_deref().unwrap_or_default(),
        notify_rule.is_some(),
    )?;
    if notify_rule.is_some() {
        flags |= FLAG_NEW_LISTENER;
        if flags & FLAG_TSYNC != 0 {
            // The kernel refuses TSYNC with NEW_LISTENER unless failures come back as ESRCH.
            flags |= FLAG_TSYNC_ESRCH;
        }
        kernel::probe_flags(flags).map_err(|errno| {
            Error::unsupported(
                "linux.seccomp.syscalls",
                format!(
                    "SCMP_ACT_NOTIFY needs seccomp user notification (Linux 5.0, with TSYNC Linux \
                     5.7), which the running kernel rejects: {}",
                    std::io::Error::from_raw_os_error(errno)
                ),
            )
        })?;
    }

    let mut ctx = ScmpFilterContext::new(default).map_err(|e| {
        Error::libseccomp(
            format!("create a filter with default action {default:?}"),
            e,
        )
    })?;
    let version = ScmpVersion::current()
        .map(|v| v.to_string())
        .unwrap_or_else(|_| "(unknown version)".into());

    let mut arches: Vec<&'static ArchInfo> = vec![native];
    for (i, oci) in profile
        .architectures()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = format!("linux.seccomp.architectures[{i}]");
        let info = match arch::oci_name(*oci) {
            None => native,
            Some(name) => arch::by_name(name).ok_or_else(|| {
                Error::unsupported(&field, format!("unknown architecture {name}"))
            })?,
        };
        if arches.iter().any(|a| a.name == info.name) {
            continue;
        }
        ctx.add_arch(info.scmp)
            .map_err(|e| arch_error(&field, info, native, &version, e))?;
        arches.push(info);
    }

    let mut warnings = Vec::new();
    let mut added = 0usize;
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let names = rule.names();
        if names.is_empty() {
            return Err(Error::invalid(
                format!("{field}.names"),
                "is empty: list at least one syscall name",
            ));
        }
        let act = action(
            rule.action(),
            rule.errno_ret(),
            &format!("{field}.action"),
            &format!("{field}.errnoRet"),
        )?;
        let conditions = conditions(rule.args().as_deref().unwrap_or_default(), &field)?;
        for (j, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.names[{j}]"),
                    "is an empty string",
                ));
            }
            if act == ScmpAction::Notify && NOTIFY_FORBIDDEN_SYSCALLS.contains(&name.as_str()) {
                return Err(Error::invalid(
                    format!("{field}.names[{j}]"),
                    format!(
                        "SCMP_ACT_NOTIFY cannot be used for `{name}`: the runtime makes this \
                         syscall after loading the filter to hand the listener fd over, so the \
                         container would hang"
                    ),
                ));
            }
        }
        if act == default {
            // libseccomp rejects rules that repeat the default action; they change nothing.
            continue;
        }
        kernel_actions.check(act, &format!("{field}.action"))?;
        for (j, name) in names.iter().enumerate() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                warnings.push(format!(
                    "{field}.names[{j}]: syscall `{name}` is unknown to libseccomp {version}; \
                     the rule is ignored for it"
                ));
                continue;
            };
            for group in &conditions {
                ctx.add_rule_conditional(act, nr, group).map_err(|e| {
                    Error::libseccomp(format!("add the rule for `{name}` ({field})"), e)
                })?;
                added += 1;
            }
        }
    }

    // Compatibility with runc/crun and with the profiles Docker and podman ship: libcs probe
    // clone3 and fall back to clone only on ENOSYS, so a deny-by-default profile that does not
    // mention clone3 must not answer it with EPERM.
    let hostile_default = !matches!(
        default,
        ScmpAction::Allow | ScmpAction::Log | ScmpAction::Trace(_)
    );
    let enosys_default = default == ScmpAction::Errno(i32::from(ENOSYS));
    let mentions = |syscall: &str| rules.iter().any(|r| r.names().iter().any(|n| n == syscall));
    if hostile_default && !enosys_default && !mentions("clone3") {
        if let Ok(nr) = ScmpSyscall::from_name("clone3") {
            ctx.add_rule(ScmpAction::Errno(i32::from(ENOSYS)), nr)
                .map_err(|e| Error::libseccomp("add the implicit ENOSYS rule for clone3", e))?;
            added += 1;
        }
    }

    if added > BINARY_TREE_THRESHOLD {
        // Only an optimisation: older libseccomp lacks it, and the linear layout is correct.
        let _ = ctx.set_ctl_optimize(2);
    }

    let mut program = export(&ctx)?;
    if hostile_default && !enosys_default {
        let last = last_syscalls(&arches, rules.iter().flat_map(|r| r.names().iter()));
        let mut stub = bpf::enosys_stub(&last).map_err(Error::Malformed)?;
        stub.append(&mut program);
        program = stub;
    }
    if program.len() > bpf::MAX_INSTRUCTIONS {
        return Err(Error::TooLarge {
            instructions: program.len(),
            max: bpf::MAX_INSTRUCTIONS,
        });
    }
    bpf::validate(&program).map_err(Error::Malformed)?;

    Ok(Program {
        instructions: program.iter().map(|i| i.pack()).collect(),
        flags,
        warnings,
    })
}

/// The libseccomp action for an OCI action and its optional errno, validating the errno.
fn action(
    act: LinuxSeccompAction,
    errno_ret: Option<u32>,
    action_field: &str,
    errno_field: &str,
) -> Result<ScmpAction, Error> {
    use LinuxSeccompAction as A;
    let data = || -> Result<u16, Error> {
        match errno_ret {
            None => Ok(EPERM),
            Some(v) => u16::try_from(v).map_err(|_| {
                Error::invalid(
                    errno_field,
                    format!("{v} is out of range: seccomp return data has 16 bits (0 to 65535)"),
                )
            }),
        }
    };
    if errno_ret.is_some() && !matches!(act, A::ScmpActErrno | A::ScmpActTrace) {
        return Err(Error::invalid(
            errno_field,
            format!(
                "only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno, but {action_field} is \
                 {act}: remove the errno or change the action"
            ),
        ));
    }
    Ok(match act {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(i32::from(data()?)),
        A::ScmpActTrace => ScmpAction::Trace(data()?),
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActNotify => ScmpAction::Notify,
    })
}

/// Remembers which actions the running kernel was asked about.
#[derive(Default)]
struct ActionCheck {
    checked: Vec<u32>,
}

impl ActionCheck {
    fn check(&mut self, act: ScmpAction, field: &str) -> Result<(), Error> {
        let (ret, name, since) = match act {
            ScmpAction::KillThread => {
                (libc::SECCOMP_RET_KILL_THREAD, "SCMP_ACT_KILL_THREAD", "3.5")
            }
            ScmpAction::KillProcess => (
                libc::SECCOMP_RET_KILL_PROCESS,
                "SCMP_ACT_KILL_PROCESS",
                "4.14",
            ),
            ScmpAction::Trap => (libc::SECCOMP_RET_TRAP, "SCMP_ACT_TRAP", "3.5"),
            ScmpAction::Errno(_) => (libc::SECCOMP_RET_ERRNO, "SCMP_ACT_ERRNO", "3.5"),
            ScmpAction::Trace(_) => (libc::SECCOMP_RET_TRACE, "SCMP_ACT_TRACE", "3.5"),
            ScmpAction::Log => (libc::SECCOMP_RET_LOG, "SCMP_ACT_LOG", "4.14"),
            ScmpAction::Notify => (libc::SECCOMP_RET_USER_NOTIF, "SCMP_ACT_NOTIFY", "5.0"),
            _ => (libc::SECCOMP_RET_ALLOW, "SCMP_ACT_ALLOW", "3.5"),
        };
        if self.checked.contains(&ret) {
            return Ok(());
        }
        if !kernel::action_available(ret) {
            return Err(Error::unsupported(
                field,
                format!(
                    "{name} needs Linux {since} or later; the running kernel does not offer it"
                ),
            ));
        }
        self.checked.push(ret);
        Ok(())
    }
}

/// The `SECCOMP_FILTER_FLAG_*` bits for the profile's `flags`, checked against the kernel.
fn flags(list: &[LinuxSeccompFilterFlag], notify: bool) -> Result<u32, Error> {
    let mut bits = 0;
    for (i, flag) in list.iter().enumerate() {
        let field = format!("linux.seccomp.flags[{i}]");
        let name = flag.to_string();
        let bit = kernel::KNOWN_FLAGS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, bit)| *bit)
            .ok_or_else(|| Error::unsupported(&field, format!("unknown flag {name}")))?;
        if bit == FLAG_WAIT_KILLABLE_RECV && !notify {
            return Err(Error::invalid(
                &field,
                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to SCMP_ACT_NOTIFY rules and \
                 the kernel rejects it without them: remove it or add a notify rule",
            ));
        }
        kernel::probe_flags(kernel::probe_set(bit)).map_err(|errno| {
            Error::unsupported(
                &field,
                format!(
                    "the running kernel does not support {name} ({}); remove the flag \
                     (`berth-runtime features` lists the supported ones)",
                    std::io::Error::from_raw_os_error(errno)
                ),
            )
        })?;
        bits |= bit;
    }
    Ok(bits)
}

/// The argument conditions of one rule as libseccomp rule groups. Conditions on distinct
/// arguments are ANDed in one rule; when any argument index repeats, libseccomp cannot express
/// the rule, and (like runc) every condition becomes a rule of its own, i.e. they are ORed.
fn conditions(
    args: &[oci_spec::runtime::LinuxSeccompArg],
    field: &str,
) -> Result<Vec<Vec<ScmpArgCompare>>, Error> {
    let mut out = Vec::with_capacity(args.len());
    let mut seen = [0usize; MAX_ARG_INDEX + 1];
    for (k, arg) in args.iter().enumerate() {
        let index = arg.index();
        if index > MAX_ARG_INDEX {
            return Err(Error::invalid(
                format!("{field}.args[{k}].index"),
                format!("{index} is out of range: syscalls have at most six arguments (0 to 5)"),
            ));
        }
        seen[index] += 1;
        let (op, datum) = match arg.op() {
            LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
            LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
            LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
            LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
            LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
            LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
            // `value` is the mask, `valueTwo` what the masked argument must equal.
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                ScmpCompareOp::MaskedEqual(arg.value()),
                arg.value_two().unwrap_or(0),
            ),
        };
        let index = u32::try_from(index).map_err(|_| {
            Error::invalid(
                format!("{field}.args[{k}].index"),
                "does not fit in 32 bits",
            )
        })?;
        out.push(ScmpArgCompare::new(index, op, datum));
    }
    if seen.iter().any(|&n| n > 1) {
        Ok(out.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![out])
    }
}

/// Why libseccomp refused an architecture.
fn arch_error(
    field: &str,
    info: &ArchInfo,
    native: &ArchInfo,
    version: &str,
    e: libseccomp::error::SeccompError,
) -> Error {
    match e.errno() {
        Some(libseccomp::error::SeccompErrno::EDOM) => Error::unsupported(
            field,
            format!(
                "{} cannot share a filter with this host's {} (different byte order); remove it",
                info.name, native.name
            ),
        ),
        Some(libseccomp::error::SeccompErrno::EINVAL) => Error::unsupported(
            field,
            format!(
                "{} is not supported by the linked libseccomp {version}",
                info.name
            ),
        ),
        _ => Error::libseccomp(format!("add architecture {} ({field})", info.name), e),
    }
}

/// Per architecture in the filter, the largest syscall number among `names` (what runc's
/// `-ENOSYS` patch uses as "the newest syscall this profile knows about").
fn last_syscalls<'a>(
    arches: &[&'static ArchInfo],
    names: impl Iterator<Item = &'a String> + Clone,
) -> Vec<LastSyscall> {
    arches
        .iter()
        .filter_map(|arch| {
            let nr = names
                .clone()
                .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch.scmp).ok())
                .filter_map(|s| u32::try_from(s.as_raw_syscall()).ok())
                .max()?;
            Some(LastSyscall { arch, nr })
        })
        .collect()
}

/// Export the filter as BPF through a memfd and decode it.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<Insn>, Error> {
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Export(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file)
        .map_err(|e| Error::libseccomp("export the filter as BPF", e))?;
    file.seek(SeekFrom::Start(0)).map_err(Error::Export)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(Error::Export)?;
    let chunks = bytes.chunks_exact(8);
    if !chunks.remainder().is_empty() {
        return Err(Error::Export(std::io::Error::other(format!(
            "libseccomp wrote {} bytes, not a whole number of 8-byte instructions",
            bytes.len()
        ))));
    }
    Ok(chunks
        .map(|c| Insn::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}
