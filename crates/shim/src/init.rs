//! `berth-shim init -- COMMAND [ARG...]`: a minimal pid 1 for containers run with `--init`.
//!
//! It starts the command as its only direct child, forwards every signal it receives to it,
//! reaps every zombie reparented to it, and exits with the command's status (128 + signal if
//! the command was killed). If the command cannot be started it exits 127 (not found) or 126.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Pid, WaitOptions};

/// Entry point; returns the exit code.
pub(crate) fn main(args: &[OsString]) -> i32 {
    let args = match args.first() {
        Some(a) if a == "--" => &args[1..],
        _ => args,
    };
    let Some(program) = args.first() else {
        eprintln!("berth-init: usage: berth-init init -- COMMAND [ARG...]");
        return 2;
    };
    // Block everything before the child exists so no signal is lost; the child unblocks them
    // before it execs.
    let all = full_sigset();
    // SAFETY: a valid sigset; we are single-threaded.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut()) } != 0 {
        eprintln!(
            "berth-init: block signals: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    let mut cmd = Command::new(program);
    cmd.args(&args[1..]);
    // SAFETY: `unblock_all_signals` only calls sigprocmask, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(crate::server::unblock_all_signals);
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-init: exec {}: {e}", program.to_string_lossy());
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let child_pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    // We reap with waitpid(-1) ourselves; the handle is not needed.
    drop(child);
    loop {
        // SAFETY: zeroed siginfo_t is a valid out-buffer for sigwaitinfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid set and out pointer.
        let sig = unsafe { libc::sigwaitinfo(&all, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig == libc::SIGCHLD {
            if let Some(code) = reap_all(child_pid) {
                return code;
            }
            continue;
        }
        // SAFETY: sending a signal we received to our own child.
        unsafe { libc::kill(child_pid, sig) };
    }
}

fn full_sigset() -> libc::sigset_t {
    // SAFETY: sigfillset initialises the set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigfillset(&mut set) };
    set
}

/// Reap every exited child; the command's exit code once it has exited.
fn reap_all(child: i32) -> Option<i32> {
    let mut result = None;
    while let Ok(Some((pid, st))) = rustix::process::wait(WaitOptions::NOHANG) {
        if Some(pid) == Pid::from_raw(child) {
            result = st
                .exit_status()
                .or_else(|| st.terminating_signal().map(|s| 128 + s));
        }
    }
    result
}
