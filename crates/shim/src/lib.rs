//! `berth-shim`: the per-container shim.
//!
//! One long-lived process per container. It owns the container's stdio (pipes, or the pty master
//! with a terminal), writes the json-file log, fans output out to attached clients, is the
//! subreaper and parent of the container's processes, records `BUNDLE/exit.json` when the main
//! process exits and keeps serving until `delete`. It outlives the daemon that spawned it; a new
//! daemon re-attaches with [`connect`].
//!
//! The library side ([`spawn`], [`connect`], [`Client`]) is blocking and is what the engine
//! calls (from `spawn_blocking`). The binary side (`berth-shim`) is the shim itself, plus
//! `berth-shim init -- CMD...` (a tiny pid 1 for `--init`).
//!
//! Deviations from / additions to the shared contract (also in
//! /work/notes/engine/A-api.md): `ShimConfig.runtime = None` runs the berth-runtime library
//! not inside the serve loop itself but in a forked copy of the shim (no exec of any runtime
//! binary; the same entry point as `berth-shim runtime ...`, with runc's command line), much as
//! `Some(runc)` runs runc as a child: the serve loop's resident set stays small and both cases
//! share one path (`server::runtime`). Additive API:
//! `ShimState::{log_dropped, log_error}`, `ExecRequest`/`ExecHandle` fields, `Client::wait_exec`,
//! `Client::shim_pid`, `Client::bundle`, `Stream::shutdown_write`, `Error::exit_code_hint`,
//! [`read_exit`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the engine configures one container's shim (passed on the shim's command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimConfig {
    /// The container id (also the runtime's id).
    pub id: String,
    /// The bundle directory (holds `config.json`; the shim puts `shim.sock`, `shim.pid`,
    /// `exit.json` there).
    pub bundle: PathBuf,
    /// The runtime's state root (`--root`).
    pub runtime_root: PathBuf,
    /// `None`: berth-runtime (the library linked into this binary); `Some`: a runc-compatible
    /// binary (runc, crun, youki).
    pub runtime: Option<PathBuf>,
    /// The container's process has a terminal (`process.terminal` in config.json).
    pub tty: bool,
    /// Keep the container's stdin open for attached clients (`-i`).
    pub stdin: bool,
    /// The json-file log; `None` = log driver "none".
    pub log: Option<LogOpts>,
    /// The container's cgroup path (`linux.cgroupsPath`), if the caller knows it: a standby
    /// shim started with a cgroup pool in the same parent hands its directories over.
    pub cgroup: Option<String>,
    /// The container asks for a new network namespace without a path (`--network none`): a
    /// standby shim may give it the fresh one it made while waiting (loopback already up).
    /// Must be false for any container that shares the host's network or joins another one.
    pub new_netns: bool,
}

/// json-file log options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOpts {
    /// The log file (`<id>-json.log`); rotated files are `<path>.1`, `<path>.2`, ...
    pub path: PathBuf,
    /// Rotate when the file would grow beyond this many bytes; 0 = never.
    pub max_size: u64,
    /// How many files to keep, the current one included (at least 1).
    pub max_file: u32,
}

/// How the container's main process (or an exec) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code; 128 + signal if it was killed by a signal.
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// When the shim reaped it, in nanoseconds since the Unix epoch.
    pub finished_at_unix_nanos: i64,
    /// The memory cgroup recorded an OOM kill.
    pub oom_killed: bool,
}

/// The container's status as the shim sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, waiting for `start`.
    Created,
    /// The main process runs.
    Running,
    /// Frozen.
    Paused,
    /// The main process has exited.
    Stopped,
}

/// The answer to [`Client::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimState {
    /// Created, running, paused or stopped.
    pub status: Status,
    /// The main process's pid (host namespace).
    pub pid: i32,
    /// Set once the main process has exited.
    pub exit: Option<ExitInfo>,
    /// Log entries dropped because writing the log failed (for example ENOSPC).
    pub log_dropped: u64,
    /// The last log write error, if any.
    pub log_error: Option<String>,
}

/// A process to run in the container ([`Client::exec`]).
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The exec id, chosen by the caller, unique within the container.
    pub id: String,
    /// The OCI process; `terminal: true` gives it a pty.
    pub process: oci_spec::runtime::Process,
    /// Keep its stdin open for the attached stream.
    pub stdin: bool,
    /// Do not attach: its output is discarded, the call returns once it runs.
    pub detach: bool,
    /// Initial terminal size (width, height) when it has a terminal.
    pub size: Option<(u16, u16)>,
}

/// A started exec.
#[derive(Debug)]
pub struct ExecHandle {
    /// The exec id.
    pub id: String,
    /// Its pid (host namespace).
    pub pid: i32,
    /// Its stdio, attached before it started (so no output is lost); `None` with `detach`.
    /// The stream ends with a [`Frame::Exit`].
    pub stream: Option<Stream>,
}

mod client;
mod error;
mod helper;
mod init;
mod proto;
mod server;
mod text;

pub use client::{
    Client, Frame, Standby, Stream, connect, report_complete, report_ok, report_outcome, spawn,
};
pub use error::{Error, Result};

/// The largest frame a shim sends (the bound a reader of [`Client::begin`]'s answer
/// should enforce).
pub const MAX_ANSWER: usize = proto::MAX_FRAME;

/// The `berth-shim` binary's entry point (after `berth_runtime::entrypoint()`): dispatches on
/// the first argument. Returns the process exit code.
pub fn main_entry() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mode = args.first().map(|a| a.to_string_lossy().into_owned());
    match mode.as_deref() {
        Some("shim") => server::main(&args[1..]),
        Some("runtime") => helper::main(&args[1..]),
        Some("init") => init::main(&args[1..]),
        _ => {
            eprintln!(
                "usage: berth-shim init -- COMMAND [ARG...]\n\
                 (the `shim` and `runtime` modes are started by berthd, not by hand)"
            );
            2
        }
    }
}

/// Read `BUNDLE/exit.json`, written by the shim when the main process exited. `None` if the
/// file is missing or unreadable (the process has not exited, or the shim died before).
pub fn read_exit(bundle: &Path) -> Option<ExitInfo> {
    #[derive(Deserialize)]
    struct File {
        code: i32,
        signal: Option<i32>,
        finished_at_unix_nanos: i64,
        oom_killed: bool,
    }
    let text = std::fs::read(bundle.join("exit.json")).ok()?;
    let f: File = serde_json::from_slice(&text).ok()?;
    Some(ExitInfo {
        code: f.code,
        signal: f.signal,
        finished_at_unix_nanos: f.finished_at_unix_nanos,
        oom_killed: f.oom_killed,
    })
}
