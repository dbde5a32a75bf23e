//! Running the OCI runtime: always as a child process with runc's command line.
//!
//! With `--runtime BIN` that is the given binary (runc, crun, youki); without, it is this very
//! executable in its `runtime` mode (see `crate::helper`), which drives the berth-runtime
//! library. The serve loop therefore never executes the runtime library's code itself, which
//! keeps its resident set small, and both cases share one code path.
//!
//! Every command runs with the bundle as its working directory, so the console socket, pid
//! files and process files are named relatively (bundle paths may exceed `sun_path`).

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
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
    fn command(&self, args: &[&OsStr]) -> Command {
        let mut cmd = match &self.bin {
            Some(bin) => Command::new(bin),
            None => {
                let mut c = Command::new("/proc/self/exe");
                c.arg("runtime");
                c
            }
        };
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
        let mut cmd = self.command(args);
        let starts_process = stdio.process;
        cmd.stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from));
        cmd.stdout(match (stdio.stdout, capture) {
            (Some(fd), _) => Stdio::from(fd),
            (None, true) => Stdio::piped(),
            (None, false) => Stdio::null(),
        });
        // The runtime's own stderr is the container's when it starts a process; otherwise we
        // keep it to report what it says if its log says nothing.
        cmd.stderr(match stdio.stderr {
            Some(fd) => Stdio::from(fd),
            None if starts_process => Stdio::null(),
            None => Stdio::piped(),
        });
        let name = self
            .bin
            .as_ref()
            .map_or_else(|| OsString::from("berth-runtime"), |b| b.as_os_str().into());
        let out = cmd
            .spawn()
            .and_then(|c| c.wait_with_output())
            .map_err(|e| format!("run {} {verb}: {e}", name.to_string_lossy()))?;
        // The Command (and its copies of the container's fds) is dropped by now.
        drop(cmd);
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if out.status.success() {
            return Ok(out.stdout);
        }
        let from_log = logged
            .lines()
            .filter(|l| {
                matches!(
                    json_string_field(l, "level").as_deref(),
                    Some("error" | "fatal")
                )
            })
            .filter_map(|l| json_string_field(l, "msg"))
            .next_back();
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
}
