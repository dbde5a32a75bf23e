//! Running the OCI runtime for one operation (create, start, kill, delete, exec, ...), always
//! with runc's command line and semantics.
//!
//! * With `--runtime BIN` (runc, crun, youki) the binary runs as a child process.
//! * Without, the berth-runtime library runs in a **forked copy of the shim** (no `execve`):
//!   the child calls the same entry point as `berth-shim runtime ARGS...` (`crate::helper`)
//!   and exits. No runtime binary is loaded, so an operation costs a `fork` of this small
//!   process instead of an exec and start-up of a 3 MB one (about 1 ms each), while the serve
//!   loop itself stays small (the child's pages are its own copy-on-write copies). The one
//!   exception is `start` ([`Runtime::start`]), which runs in the shim itself.
//!
//! Either way the operation runs with the bundle as its working directory, so the console
//! socket, pid files and process files are named relatively (bundle paths may exceed
//! `sun_path`), and reports errors in its `--log` file as runc does.

use std::ffi::{OsStr, OsString};
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::os::unix::process::CommandExt;

use crate::text::json_string_field;

/// In a forked child: the shim blocks SIGCHLD (for its signalfd); the runtime and what it starts
/// must not inherit that.
pub(crate) fn unblock_all_signals() -> std::io::Result<()> {
    // SAFETY: an all-zero sigset_t is a valid out-buffer that sigemptyset initialises.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: valid set pointer, null old-set pointer.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The runtime's log (`--log`, JSON lines); its last error is the message we report.
pub(crate) const RUNTIME_LOG: &str = "runtime.log";

/// How to invoke the runtime for one container.
pub(crate) struct Runtime {
    pub(crate) bin: Option<PathBuf>,
    pub(crate) root: PathBuf,
    pub(crate) bundle: PathBuf,
    pub(crate) id: String,
}

/// The container's stdio for a command that starts a process (create, exec); `None`: /dev/null.
#[derive(Default)]
pub(crate) struct Stdio3 {
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
    /// The command starts a process that inherits the runtime's stdio: never keep a pipe of
    /// ours there (it would stay open as long as the process runs).
    pub(crate) process: bool,
}

impl Stdio3 {
    pub(crate) fn for_process() -> Stdio3 {
        Stdio3 {
            process: true,
            ..Stdio3::default()
        }
    }
}

impl Runtime {
    /// The child process for a runtime binary (`--runtime BIN`); without one the operation
    /// is forked instead ([`Runtime::fork_helper`]).
    fn command(&self, args: &[&OsStr]) -> Command {
        let mut cmd = Command::new(self.bin.as_deref().unwrap_or(Path::new("/proc/self/exe")));
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(self.bundle.join(RUNTIME_LOG))
            .arg("--log-format")
            .arg("json")
            .args(args)
            .current_dir(&self.bundle)
            .stdin(Stdio::null());
        // SAFETY: `unblock_all_signals` only calls sigprocmask, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(unblock_all_signals);
        }
        cmd
    }

    /// `start` with an external runtime binary (one indivisible command); the built-in
    /// runtime's runs in two halves in the shim itself (`start_begin`).
    pub(crate) fn start_external(&self) -> Result<Vec<u8>, String> {
        self.run(&["start", &self.id], Stdio3::default())
    }

    /// The built-in runtime's start up to the init's release (checks done, exec fifo open),
    /// run here in the shim, not in a forked copy: it is small, allocates little, and waiting
    /// for a child to exit would cost more than the start itself. The shim answers before
    /// [`berth_runtime::Starting::finish`] lets the user program run. `None` with an external
    /// runtime binary ([`Runtime::start_external`]).
    pub(crate) fn start_begin(&self) -> Option<Result<berth_runtime::Starting, String>> {
        if self.bin.is_some() {
            return None;
        }
        Some(
            berth_runtime::Runtime::new(&self.root)
                .start_begin(&self.id)
                .map_err(|e| berth_runtime::error::chain(&e)),
        )
    }

    /// Run `args` with the process's stdio; the runtime's stdout is returned (for `ps`).
    pub(crate) fn run(&self, args: &[&str], stdio: Stdio3) -> Result<Vec<u8>, String> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.run_os(&args, stdio, false)
    }

    /// The same, capturing stdout.
    pub(crate) fn output(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.run_os(&args, Stdio3::default(), true)
    }

    fn run_os(&self, args: &[&OsStr], stdio: Stdio3, capture: bool) -> Result<Vec<u8>, String> {
        let verb = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = self.bundle.join(RUNTIME_LOG);
        let _ = std::fs::remove_file(&log);
        let starts_process = stdio.process;
        let name = self
            .bin
            .as_ref()
            .map_or_else(|| OsString::from("berth-runtime"), |b| b.as_os_str().into());
        let out = if self.bin.is_none() {
            self.fork_helper(args, stdio, capture)
        } else {
            let mut cmd = self.command(args);
            cmd.stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from));
            cmd.stdout(match (stdio.stdout, capture) {
                (Some(fd), _) => Stdio::from(fd),
                (None, true) => Stdio::piped(),
                (None, false) => Stdio::null(),
            });
            // The runtime's own stderr is the container's when it starts a process; otherwise
            // we keep it to report what it says if its log says nothing.
            cmd.stderr(match stdio.stderr {
                Some(fd) => Stdio::from(fd),
                None if starts_process => Stdio::null(),
                None => Stdio::piped(),
            });
            cmd.spawn().and_then(|c| c.wait_with_output())
        }
        .map_err(|e| format!("run {} {verb}: {e}", name.to_string_lossy()))?;
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if out.status.success() {
            return Ok(out.stdout);
        }
        let from_log = last_error(&logged);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(match from_log {
            Some(m) => m,
            None if !stderr.is_empty() => stderr,
            None => format!(
                "{} {verb} {} failed ({})",
                name.to_string_lossy(),
                self.id,
                out.status
            ),
        })
    }

    /// Run the berth-runtime library in a forked copy of this process (see the module docs):
    /// the child gets `stdio` as its fds 0-2 (/dev/null where absent; stdout captured through
    /// a pipe with `capture`), enters the bundle, unblocks signals, runs `crate::helper::main`
    /// and `_exit`s with its code. The shim is single-threaded, so the child may allocate.
    fn fork_helper(
        &self,
        args: &[&OsStr],
        stdio: Stdio3,
        capture: bool,
    ) -> std::io::Result<std::process::Output> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::ExitStatusExt;
        let devnull = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        let captured = if capture && stdio.stdout.is_none() {
            Some(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
        } else {
            None
        };
        let fd_in = stdio
            .stdin
            .as_ref()
            .map_or(devnull.as_raw_fd(), |f| f.as_raw_fd());
        let fd_out = match (&stdio.stdout, &captured) {
            (Some(f), _) => f.as_raw_fd(),
            (None, Some((_, w))) => w.as_raw_fd(),
            (None, None) => devnull.as_raw_fd(),
        };
        let fd_err = stdio
            .stderr
            .as_ref()
            .map_or(devnull.as_raw_fd(), |f| f.as_raw_fd());
        let (pid, done) = self.fork_runtime(args, [fd_in, fd_out, fd_err])?;
        // The parent's copies of the container's fds must go now: a pipe's reader sees EOF
        // only once every writer is closed.
        drop(stdio);
        drop(devnull);
        let mut stdout = Vec::new();
        if let Some((r, w)) = captured {
            drop(w);
            std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut stdout)?;
        }
        // The child reports its code before it exits: tearing the copy down takes longer than
        // a short operation, so after a success it is not waited for (the serve loop reaps it,
        // as any child). After a failure it is, so that nothing of the operation outlives it.
        if read_code(&done) == Some(0) {
            return Ok(std::process::Output {
                status: std::process::ExitStatus::from_raw(0),
                stdout,
                stderr: Vec::new(),
            });
        }
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        Ok(std::process::Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout,
            stderr: Vec::new(),
        })
    }

    /// `delete --force` of the container in this process (built-in runtime only, `None`
    /// otherwise), like [`Runtime::start`], since the shim is about to end and a forked copy
    /// would cost more than the delete itself: as soon as the main process has exited, before
    /// the daemon asks (its delete then finds it done), or for the daemon's delete when that
    /// comes first.
    pub(crate) fn delete_early(&self) -> Option<Result<(), String>> {
        if self.bin.is_some() {
            return None;
        }
        Some(
            berth_runtime::Runtime::new(&self.root)
                .delete(&self.id, true)
                .map_err(|e| berth_runtime::error::chain(&e)),
        )
    }

    /// Fork a child that runs `berth-shim runtime` with our `--root`/`--log` and `args` on the
    /// berth-runtime library: its fds 0-2 become `stdio`, it enters the bundle, unblocks
    /// signals, writes the operation's exit code (one byte) to a pipe and `_exit`s with it.
    /// Returns the child's pid and the pipe's reading end ([`read_code`]).
    fn fork_runtime(&self, args: &[&OsStr], stdio: [RawFd; 3]) -> std::io::Result<(i32, OwnedFd)> {
        let mut argv: Vec<OsString> = vec![
            "--root".into(),
            self.root.clone().into_os_string(),
            "--log".into(),
            self.bundle.join(RUNTIME_LOG).into_os_string(),
            "--log-format".into(),
            "json".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_os_string()));
        let (done_r, done_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // SAFETY: the shim is single-threaded, so the child is a complete copy of a consistent
        // process; it only runs our own code and leaves with `_exit`, never returning here.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            let code = (|| {
                for (fd, target) in stdio.into_iter().zip(0..) {
                    // SAFETY: dup2 onto the standard fds of this child; both are valid fds.
                    if unsafe { libc::dup2(fd, target) } < 0 {
                        return 127;
                    }
                }
                if std::env::set_current_dir(&self.bundle).is_err()
                    || unblock_all_signals().is_err()
                {
                    return 127;
                }
                let code = crate::helper::main(&argv);
                let _ = std::io::Write::flush(&mut std::io::stdout());
                code
            })();
            let _ = rustix::io::write(&done_w, &[u8::try_from(code).unwrap_or(1)]);
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        drop(done_w);
        Ok((pid, done_r))
    }
}

/// The exit code a forked runtime child wrote before exiting; `None` if it ended without
/// writing one (it died: its wait status tells how).
fn read_code(done: &OwnedFd) -> Option<u8> {
    let mut b = [0u8; 1];
    loop {
        match rustix::io::read(done, &mut b) {
            Ok(1) => return Some(b[0]),
            Err(rustix::io::Errno::INTR) => {}
            _ => return None,
        }
    }
}

/// The last error or fatal message in a runtime's JSON-lines log.
fn last_error(log: &str) -> Option<String> {
    log.lines()
        .filter(|l| {
            matches!(
                json_string_field(l, "level").as_deref(),
                Some("error" | "fatal")
            )
        })
        .filter_map(|l| json_string_field(l, "msg"))
        .next_back()
}
