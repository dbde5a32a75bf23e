//! The raw `seccomp(2)` calls: loading a program and probing what the running kernel supports.
//! Nothing here uses libseccomp.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::error::Error;

/// `SECCOMP_FILTER_FLAG_TSYNC`: synchronise all threads of the process to the new filter.
pub const FLAG_TSYNC: u32 = 1 << 0;
/// `SECCOMP_FILTER_FLAG_LOG`: log every action except `SECCOMP_RET_ALLOW`.
pub const FLAG_LOG: u32 = 1 << 1;
/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`: do not enable the speculative store bypass mitigation.
pub const FLAG_SPEC_ALLOW: u32 = 1 << 2;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: return a user-notification fd.
pub const FLAG_NEW_LISTENER: u32 = 1 << 3;
/// `SECCOMP_FILTER_FLAG_TSYNC_ESRCH`: report a TSYNC failure as `ESRCH` (needed to combine TSYNC
/// with NEW_LISTENER, whose success value is the fd rather than 0).
pub const FLAG_TSYNC_ESRCH: u32 = 1 << 4;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`: a notified task waits killably once received.
pub const FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;

/// The flags an OCI profile may name, with their bits.
pub(crate) const KNOWN_FLAGS: &[(&str, u32)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", FLAG_TSYNC),
    ("SECCOMP_FILTER_FLAG_LOG", FLAG_LOG),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", FLAG_SPEC_ALLOW),
    (
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        FLAG_WAIT_KILLABLE_RECV,
    ),
];

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`; returns the syscall's non-negative result
/// or the errno.
fn set_mode_filter(flags: u32, prog: *const libc::sock_fprog) -> Result<libc::c_long, i32> {
    // SAFETY: SECCOMP_SET_MODE_FILTER reads a `struct sock_fprog` at `prog` (and the
    // instructions it points to) and nothing else; callers pass either a valid fprog whose
    // buffer outlives the call, or null, which the kernel rejects with EFAULT without side
    // effects.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flags),
            prog,
        )
    };
    if rc < 0 { Err(errno()) } else { Ok(rc) }
}

/// The calling thread's errno, without allocating.
fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// Install `filters` on the calling thread. Async-signal-safe: no allocation, no locks.
pub(crate) fn load(filters: &[libc::sock_filter], flags: u32) -> Result<Option<OwnedFd>, Error> {
    let len = u16::try_from(filters.len()).map_err(|_| Error::Load {
        errno: libc::EINVAL,
        flags,
    })?;
    let fprog = libc::sock_fprog {
        len,
        filter: filters.as_ptr().cast_mut(),
    };
    let rc = set_mode_filter(flags, &fprog).map_err(|errno| Error::Load { errno, flags })?;
    if flags & FLAG_NEW_LISTENER != 0 {
        let fd = i32::try_from(rc).map_err(|_| Error::Load {
            errno: libc::EBADF,
            flags,
        })?;
        // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER a successful call returns a new
        // descriptor that nothing else in the process owns yet.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    if rc > 0 {
        // Without TSYNC_ESRCH a TSYNC failure returns the id of the thread that failed.
        return Err(Error::Tsync { tid: rc });
    }
    Ok(None)
}

/// Whether the running kernel accepts `flags` for `SECCOMP_SET_MODE_FILTER`. A null program
/// makes the kernel stop at EFAULT right after validating the flags (EINVAL when it does not
/// know one), so nothing is installed. Returns the errno on rejection.
pub(crate) fn probe_flags(flags: u32) -> Result<(), i32> {
    match set_mode_filter(flags, std::ptr::null()) {
        Err(libc::EFAULT) => Ok(()),
        Err(errno) => Err(errno),
        // Cannot happen with a null program; treat as unsupported rather than trusting it.
        Ok(_) => Err(libc::EINVAL),
    }
}

/// Whether the running kernel supports the return action `action` (`SECCOMP_RET_*` without
/// data). Kernels before 4.14 lack `SECCOMP_GET_ACTION_AVAIL` (EINVAL); they support exactly
/// the original actions. Any other failure (an outer filter denying `seccomp(2)`, a kernel
/// without seccomp) says nothing about the action: it counts as available and loading will
/// report the real problem.
pub(crate) fn action_available(action: u32) -> bool {
    let value: u32 = action;
    let no_flags: libc::c_ulong = 0;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 at the pointer, which is valid for the
    // duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            no_flags,
            &raw const value,
        )
    };
    if rc == 0 {
        return true;
    }
    match errno() {
        libc::EOPNOTSUPP => false,
        libc::EINVAL => matches!(
            action,
            libc::SECCOMP_RET_KILL_THREAD
                | libc::SECCOMP_RET_TRAP
                | libc::SECCOMP_RET_ERRNO
                | libc::SECCOMP_RET_TRACE
                | libc::SECCOMP_RET_ALLOW
        ),
        _ => true,
    }
}

/// The flags the running kernel accepts, by name.
pub(crate) fn supported_flag_names() -> Vec<String> {
    KNOWN_FLAGS
        .iter()
        .filter(|(_, bit)| probe_flags(probe_set(*bit)).is_ok())
        .map(|(name, _)| (*name).to_string())
        .collect()
}

/// The flag set to probe `bit` with: WAIT_KILLABLE_RECV is only valid with NEW_LISTENER.
pub(crate) fn probe_set(bit: u32) -> u32 {
    if bit == FLAG_WAIT_KILLABLE_RECV {
        bit | FLAG_NEW_LISTENER
    } else {
        bit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_bits_match_the_kernel_headers() {
        assert_eq!(
            libc::c_ulong::from(FLAG_TSYNC),
            libc::SECCOMP_FILTER_FLAG_TSYNC
        );
        assert_eq!(libc::c_ulong::from(FLAG_LOG), libc::SECCOMP_FILTER_FLAG_LOG);
        assert_eq!(
            libc::c_ulong::from(FLAG_SPEC_ALLOW),
            libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
        assert_eq!(
            libc::c_ulong::from(FLAG_NEW_LISTENER),
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        );
        assert_eq!(
            libc::c_ulong::from(FLAG_TSYNC_ESRCH),
            libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH
        );
        assert_eq!(
            libc::c_ulong::from(FLAG_WAIT_KILLABLE_RECV),
            libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        );
    }

    fn filters_installed() -> String {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .filter(|l| l.starts_with("Seccomp"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn probing_installs_nothing() {
        let before = filters_installed();
        // TSYNC has been supported since 3.17.
        assert_eq!(probe_flags(FLAG_TSYNC), Ok(()));
        assert_eq!(probe_flags(1 << 31), Err(libc::EINVAL));
        assert_eq!(filters_installed(), before);
    }

    #[test]
    fn basic_actions_are_available() {
        assert!(action_available(libc::SECCOMP_RET_ALLOW));
        assert!(action_available(libc::SECCOMP_RET_ERRNO));
        assert!(!action_available(0x1234_0000));
    }
}
