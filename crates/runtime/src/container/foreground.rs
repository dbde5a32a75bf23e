//! Running a container process in the foreground (`run`, `exec` without `--detach`): forward
//! signals to it, relay its terminal if we hold the master, and return its exit code.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};
use rustix::termios::Termios;

use crate::error::{Context, Error, Result};

/// Signals we do not forward: synchronous faults are ours, SIGKILL/SIGSTOP cannot be caught.
const NOT_FORWARDED: &[i32] = &[
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGSYS,
];

/// Blocks the forwardable signals (so none is lost between spawning and waiting) and reads
/// them from a signalfd. Dropping it restores the previous mask.
#[derive(Debug)]
pub(crate) struct Signals {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl Signals {
    /// Block and start collecting signals. Call before spawning the process.
    pub(crate) fn block() -> Result<Signals> {
        // SAFETY: sigset_t is plain data; sigfillset/sigdelset initialise and edit it in place.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t.
        unsafe { libc::sigfillset(&mut set) };
        for s in NOT_FORWARDED {
            // SAFETY: `set` is a valid, initialised sigset_t.
            unsafe { libc::sigdelset(&mut set, *s) };
        }
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid; this only changes the calling thread's mask.
        if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) } != 0 {
            return Err(Error::sys("block signals", std::io::Error::last_os_error()));
        }
        // SAFETY: creates a new fd from a valid set; we take ownership of it below.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: restoring the mask we saved.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            return Err(Error::sys("create a signalfd", e));
        }
        // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Signals { fd, old })
    }

    fn next(&self) -> Option<i32> {
        let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match rustix::io::read(&self.fd, &mut buf) {
            Ok(n) if n == buf.len() => {
                // ssi_signo is the first u32 of signalfd_siginfo.
                let signo = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                i32::try_from(signo).ok()
            }
            _ => None,
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: restoring the mask saved in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Puts our terminal in raw mode while relaying, and restores it.
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(
                stdin.as_fd(),
                rustix::termios::OptionalActions::Now,
                &raw,
            );
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin().as_fd(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

fn copy_winsize(master: BorrowedFd<'_>) {
    if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdin().as_fd()) {
        let _ = rustix::termios::tcsetwinsize(master, ws);
    }
}

/// Wait for `pid` (our child) to exit; returns its exit code (128+n when killed by signal n).
pub(crate) fn wait(pid: i32, signals: &Signals, tty: Option<OwnedFd>) -> Result<i32> {
    let _raw = tty.as_ref().map(|_| RawMode::enter());
    if let Some(m) = &tty {
        copy_winsize(m.as_fd());
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = tty.is_some();
    let mut master_open = tty.is_some();
    let mut exit: Option<i32> = reap(pid);
    let mut buf = vec![0u8; 32 * 1024];
    while exit.is_none() || master_open {
        let mut fds = vec![PollFd::new(&signals.fd, PollFlags::IN)];
        if let Some(m) = tty.as_ref().filter(|_| master_open) {
            fds.push(PollFd::new(m, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        // Once the process is gone, only drain what is left of its output.
        let timeout = if exit.is_some() {
            Some(&rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            })
        } else {
            None
        };
        match rustix::event::poll(&mut fds, timeout) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::errno("wait for the container", e)),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut i = 1;
        if ready[0] {
            while let Some(sig) = signals.next() {
                match sig {
                    libc::SIGCHLD => {
                        if let Some(code) = reap(pid) {
                            exit = Some(code);
                        }
                    }
                    libc::SIGWINCH => {
                        if let Some(m) = &tty {
                            copy_winsize(m.as_fd());
                        }
                    }
                    s => {
                        if let (Some(p), Some(sig)) =
                            (rustix::process::Pid::from_raw(pid), signal_from(s))
                        {
                            let _ = rustix::process::kill_process(p, sig);
                        }
                    }
                }
                if sig == libc::SIGCHLD {
                    break;
                }
            }
        }
        if let Some(m) = tty.as_ref().filter(|_| master_open) {
            if ready[i] {
                match rustix::io::read(m, &mut buf) {
                    Ok(0) | Err(_) => master_open = false,
                    Ok(n) => {
                        if write_all(stdout.as_fd(), &buf[..n]).is_err() {
                            master_open = false;
                        }
                    }
                }
            }
            i += 1;
        }
        if stdin_open && ready.get(i).copied().unwrap_or(false) {
            match rustix::io::read(&stdin, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if let Some(m) = &tty {
                        let _ = write_all(m.as_fd(), &buf[..n]);
                    }
                }
            }
        }
    }
    exit.map_or_else(|| reap_blocking(pid), Ok)
}

fn signal_from(n: i32) -> Option<rustix::process::Signal> {
    rustix::process::Signal::from_named_raw(n).or_else(|| {
        // Real-time signals have no name in rustix; build them from the raw number.
        // SAFETY: `n` comes from the kernel's signalfd, so it is a valid signal number.
        Some(unsafe { rustix::process::Signal::from_raw_unchecked(n) })
    })
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> rustix::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reap whatever children have exited (we may be a subreaper); return `pid`'s code if it did.
fn reap(pid: i32) -> Option<i32> {
    let mut code = None;
    loop {
        // `wait` is waitpid(-1): any child. (`waitpid(None)` would be pid 0, only children in
        // our process group, which a container init with a terminal has left.)
        match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
            Ok(Some((p, st))) => {
                if p.as_raw_nonzero().get() == pid {
                    code = Some(exit_code(st));
                }
            }
            _ => return code,
        }
    }
}

fn reap_blocking(pid: i32) -> Result<i32> {
    let p = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| Error::InvalidArgument("bad pid".into()))?;
    loop {
        match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => return Ok(exit_code(st)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::errno(format!("wait for process {pid}"), e)),
            Ok(None) => continue,
        }
    }
}

fn exit_code(st: rustix::process::WaitStatus) -> i32 {
    if let Some(c) = st.exit_status() {
        c
    } else if let Some(s) = st.terminating_signal() {
        128 + s
    } else {
        255
    }
}

/// Become a subreaper so orphans of the container are reparented to us (as `runc run` does).
pub(crate) fn become_subreaper() -> Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .ctx(|| "become a child subreaper")
}
