//! Peak resident set of one child process, from `wait4`'s `ru_maxrss` (KiB).
//!
//! A process's `ru_maxrss` also keeps the high-water mark of the memory it had *before* its
//! `execve`: the kernel folds the old address space's peak into it. `Command` normally spawns
//! with `posix_spawn`, whose child borrows this whole process's memory until it executes, and
//! would report our own peak. A `pre_exec` hook makes `Command` use a real `fork`: the child
//! then starts from a copy holding only our anonymous pages (about 120 KiB, measured), far
//! below any figure reported here, so the figure is the program's own peak. GNU `time -f %M`
//! forks the same way and gives the same numbers.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use crate::Result;
use crate::subject::{describe, read_all, show};

/// Run `cmd` to completion and return its peak RSS in KiB (children it waited for included,
/// children it left running, such as a created container's init, not).
pub fn measure(cmd: &mut Command) -> Result<u64> {
    let err = tempfile::tempfile().map_err(|e| format!("create a file for stderr: {e}"))?;
    let err_for_child = err
        .try_clone()
        .map_err(|e| format!("dup the stderr file: {e}"))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_for_child));
    // SAFETY: the hook does nothing, so it cannot break anything between fork and exec; it
    // exists only to make std fork instead of posix_spawn (see the module comment).
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", show(cmd)))?;
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|e| format!("pid {} out of range: {e}", child.id()))?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: pid is our own unreaped child (std's Child never waits unless asked, and we
        // do not ask); status and usage are valid, writable and live for the call.
        let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break r;
        }
    };
    if r < 0 {
        return Err(format!(
            "wait4 {}: {}",
            show(cmd),
            std::io::Error::last_os_error()
        ));
    }
    let exit = std::process::ExitStatus::from_raw(status);
    if !exit.success() {
        return Err(format!(
            "{} failed ({}): {}",
            show(cmd),
            describe(exit),
            read_all(err).trim()
        ));
    }
    u64::try_from(usage.ru_maxrss)
        .map_err(|e| format!("ru_maxrss {} out of range: {e}", usage.ru_maxrss))
}
