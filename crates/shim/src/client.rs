//! The library side: start a shim, talk to it.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};
use crate::proto::{self, read_frame, write_frame};
use crate::{ExecHandle, ExecRequest, ExitInfo, ShimConfig, ShimState, Status};

/// Start the shim for `cfg` (fork/exec `shim_bin`, detached from the caller) and wait until it
/// has created the container (not started) or failed. On failure nothing is left behind and the
/// error carries the runtime's message.
///
/// The shim is not the caller's child (it forks itself and calls `setsid`), so the caller
/// never reaps it; if the caller is a child subreaper, the shim becomes its child when the
/// intermediate process exits and the caller must reap it.
pub fn spawn(shim_bin: &Path, cfg: &ShimConfig) -> Result<Client> {
    spawn_via(None, shim_bin, cfg)
}

/// A shim started ahead of need ([`Standby::start`]): executed, detached, and blocked reading
/// its container's arguments from a pipe. Handing it a container ([`Standby::spawn`]) skips
/// the spawn, exec and start-up of a fresh shim (about 1.5 ms) on the container's start path.
/// Dropping it closes the pipe: the waiting shim reads end-of-file and exits.
///
/// Its command line names the directory of the shims it is for (`--standby DIR`), so the
/// shims of one state directory can be found with `ps` or `/proc` like fresh ones; while it
/// waits its process name (`comm`) is `berth-standby`, and `berth-shim` once it has a container.
#[derive(Debug)]
pub struct Standby {
    bin: PathBuf,
    args: OwnedFd,
    report: OwnedFd,
}

impl Standby {
    /// Start a shim that waits for its arguments; `shims_dir` is the directory its
    /// container's bundle will be in (it is only shown on the command line). With
    /// `cgroup_pool` (a cgroup path such as `/berth/default`) it makes a container's cgroup
    /// directories there while it waits, for a container whose [`ShimConfig::cgroup`] is in
    /// that parent (removed if it gets another one, or none).
    pub fn start(shim_bin: &Path, shims_dir: &Path, cgroup_pool: Option<&str>) -> Result<Standby> {
        let (report, report_w) = pipe("the shim's report pipe")?;
        let (args_r, args) = pipe("the shim's argument pipe")?;
        let mut cmd = Command::new(shim_bin);
        cmd.args(["shim", "--standby"]).arg(shims_dir);
        if let Some(parent) = cgroup_pool {
            cmd.args(["--cgroup-pool", parent]);
        }
        start_detached(cmd, shim_bin, Stdio::from(args_r), report_w)?;
        Ok(Standby {
            bin: shim_bin.to_path_buf(),
            args,
            report,
        })
    }

    /// [`spawn`] with this shim; if it is gone (it never took the arguments), with a fresh one.
    pub fn spawn(self, cfg: &ShimConfig) -> Result<Client> {
        let bin = self.bin.clone();
        spawn_via(Some(self), &bin, cfg)
    }

    /// [`Standby::spawn`] in steps, for callers on an async runtime: hand the container's
    /// arguments over and return the shim's report pipe (read it until [`report_complete`],
    /// then [`report_outcome`]). `None` if the shim is gone (nothing was created).
    pub fn give(self, cfg: &ShimConfig) -> Option<OwnedFd> {
        let mut buf = Vec::new();
        for a in shim_args(cfg) {
            buf.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()));
            buf.push(0);
        }
        let mut pipe = std::fs::File::from(self.args);
        std::io::Write::write_all(&mut pipe, &buf).ok()?;
        Some(self.report)
    }
}

/// Whether a shim's report so far is complete (it says whether the container was created).
pub fn report_complete(text: &str) -> bool {
    let done = text.lines().any(|l| l.starts_with("ok ")) || text.contains("\nerr ");
    done && text.ends_with('\n')
}

/// Whether a complete report says the container was created.
pub fn report_ok(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("ok "))
}

/// What a shim's whole report (read to completion or end-of-file; `read`: how the reading
/// ended) means: the shim's client, or why the container could not be created. `None`: the
/// shim ended before it even reported its pid (it never took the container). After a failure
/// this blocks until the shim has exited.
pub fn report_outcome(
    text: &str,
    read: std::io::Result<()>,
    cfg: &ShimConfig,
) -> Option<Result<Client>> {
    match outcome_of(text, read, cfg) {
        Reported::NoPid => None,
        Reported::Outcome(r) => Some(r),
    }
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::io(format!("create {what}"), e.into()))
}

fn spawn_via(standby: Option<Standby>, shim_bin: &Path, cfg: &ShimConfig) -> Result<Client> {
    match standby {
        Some(sb) => match hand_over(sb, cfg) {
            Handed::Done(r) => r,
            // The standby shim was gone before it took the arguments: nothing was created.
            Handed::Gone => spawn_shim(shim_bin, cfg),
        },
        None => spawn_shim(shim_bin, cfg),
    }
}

/// The container's part of the shim's command line.
fn shim_args(cfg: &ShimConfig) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec![
        "--id".into(),
        cfg.id.clone().into(),
        "--bundle".into(),
        cfg.bundle.clone().into(),
        "--runtime-root".into(),
        cfg.runtime_root.clone().into(),
    ];
    if let Some(rt) = &cfg.runtime {
        a.extend(["--runtime".into(), rt.clone().into()]);
    }
    if let Some(cg) = &cfg.cgroup {
        a.extend(["--cgroup".into(), cg.clone().into()]);
    }
    if cfg.new_netns {
        a.push("--new-netns".into());
    }
    if cfg.tty {
        a.push("--tty".into());
    }
    if cfg.stdin {
        a.push("--stdin".into());
    }
    if let Some(log) = &cfg.log {
        a.extend([
            "--log".into(),
            log.path.clone().into(),
            "--log-max-size".into(),
            log.max_size.to_string().into(),
            "--log-max-file".into(),
            log.max_file.to_string().into(),
        ]);
    }
    a
}

enum Handed {
    Done(Result<Client>),
    Gone,
}

/// Give a standby shim its arguments (NUL-terminated, then end-of-file) and read its report.
fn hand_over(sb: Standby, cfg: &ShimConfig) -> Handed {
    let mut buf = Vec::new();
    for a in shim_args(cfg) {
        buf.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()));
        buf.push(0);
    }
    let mut pipe = std::fs::File::from(sb.args);
    if std::io::Write::write_all(&mut pipe, &buf).is_err() {
        return Handed::Gone;
    }
    drop(pipe);
    match read_report(sb.report, cfg) {
        Reported::NoPid => Handed::Gone,
        Reported::Outcome(r) => Handed::Done(r),
    }
}

fn spawn_shim(shim_bin: &Path, cfg: &ShimConfig) -> Result<Client> {
    let (report_r, report_w) = pipe("the shim's report pipe")?;
    let mut cmd = Command::new(shim_bin);
    cmd.arg("shim").args(shim_args(cfg));
    // The report pipe is the shim's stdout; `--daemonize` makes the process we spawn fork
    // and exit, so the shim is not our child and we reap only that intermediate process.
    start_detached(cmd, shim_bin, Stdio::null(), report_w)?;
    match read_report(report_r, cfg) {
        Reported::Outcome(r) => r,
        Reported::NoPid => Err(Error::ShimDied(format!(
            "the shim for container {} exited before it started",
            cfg.id
        ))),
    }
}

/// Run `cmd` (a shim) with `--report-fd 1 --daemonize`: its stdout is `report_w`, it forks
/// and its first process exits at once, which is reaped here. std spawns with posix_spawn (a
/// vfork), which does not copy this (large, multi-threaded) process the way fork would, as
/// long as nothing needs code between fork and exec: no `pre_exec` hook, and no
/// `current_dir`, since in a static binary std cannot find glibc's
/// `posix_spawn_file_actions_addchdir_np` and falls back to fork (the shim enters `/`
/// itself). `cmd`, and with it our copy of `report_w`, is dropped before returning, so a
/// reader of the report sees end-of-file once the shim is gone.
fn start_detached(
    mut cmd: Command,
    shim_bin: &Path,
    stdin: Stdio,
    report_w: OwnedFd,
) -> Result<()> {
    cmd.args(["--report-fd", "1", "--daemonize"])
        .stdin(stdin)
        .stdout(Stdio::from(report_w))
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("start the shim {}", shim_bin.display()), e))?;
    let _ = child.wait();
    Ok(())
}

enum Reported {
    /// The shim ended before it even reported its pid (nothing was created).
    NoPid,
    Outcome(Result<Client>),
}

/// Read the shim's report until the outcome line (or EOF if the shim died).
fn read_report(report_r: OwnedFd, cfg: &ShimConfig) -> Reported {
    let mut text = String::new();
    let mut report = std::fs::File::from(report_r);
    let mut buf = [0u8; 4096];
    let read = loop {
        match report.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                if report_complete(&text) {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    outcome_of(&text, read, cfg)
}

fn outcome_of(text: &str, read: std::io::Result<()>, cfg: &ShimConfig) -> Reported {
    let mut shim_pid = None;
    let mut outcome = None;
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("pid ") {
            shim_pid = p.trim().parse::<i32>().ok();
        } else if let Some(p) = line.strip_prefix("ok ") {
            outcome = Some(Ok(p.trim().to_string()));
        } else if let Some(m) = line.strip_prefix("err ") {
            outcome = Some(Err(m.to_string()));
        }
    }
    Reported::Outcome(match (outcome, read) {
        (None, Ok(_)) if shim_pid.is_none() => return Reported::NoPid,
        (Some(Ok(_)), _) => connect(&cfg.bundle),
        (Some(Err(msg)), _) => {
            // The shim exits right after reporting: make sure it is gone before returning.
            if let Some(pid) = shim_pid {
                wait_gone(pid);
            }
            Err(Error::Runtime(msg))
        }
        (None, Err(e)) => Err(Error::io("read the shim's report", e)),
        (None, Ok(_)) => {
            if let Some(pid) = shim_pid {
                wait_gone(pid);
            }
            Err(Error::ShimDied(format!(
                "container {} was created (see the runtime state under {})",
                cfg.id,
                cfg.runtime_root.display()
            )))
        }
    })
}

/// Block until process `pid` (not our child) has exited.
fn wait_gone(pid: i32) {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    while let Err(rustix::io::Errno::INTR) = rustix::event::poll(&mut fds, None) {}
}

/// Re-attach to the running shim of `bundle` (after a daemon restart).
pub fn connect(bundle: &Path) -> Result<Client> {
    let dir = rustix::fs::open(
        bundle,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open the bundle {}", bundle.display()), e.into()))?;
    let client = Client {
        bundle: bundle.to_path_buf(),
        dir,
    };
    // Prove someone listens.
    drop(client.connection()?);
    Ok(client)
}

/// A handle on one container's shim. Every call opens its own connection, so a `Client` can be
/// shared between threads (one thread blocked in [`Client::wait`] does not block the others).
#[derive(Debug)]
pub struct Client {
    bundle: PathBuf,
    dir: OwnedFd,
}

fn runtime_or_refused(payload: &[u8]) -> Error {
    let msg = String::from_utf8_lossy(payload.get(1..).unwrap_or_default()).into_owned();
    match payload.first() {
        Some(b'r') => Error::Runtime(msg),
        _ => Error::Refused(msg),
    }
}

impl Client {
    /// The bundle this shim serves.
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    fn socket_path(&self) -> PathBuf {
        let direct = self.bundle.join(crate::server::SOCKET);
        if direct.as_os_str().len() < 100 {
            direct
        } else {
            PathBuf::from(format!(
                "/proc/self/fd/{}/{}",
                self.dir.as_raw_fd(),
                crate::server::SOCKET
            ))
        }
    }

    fn connection(&self) -> Result<UnixStream> {
        let path = self.socket_path();
        UnixStream::connect(&path).map_err(|source| Error::Connect {
            path: self.bundle.join(crate::server::SOCKET),
            source,
        })
    }

    /// Send one request; the answer's text and the connection (for streams).
    fn call(&self, head: &str, body: &[u8]) -> Result<(String, UnixStream)> {
        let sock = self.connection()?;
        let mut payload = head.as_bytes().to_vec();
        if !body.is_empty() {
            payload.push(b'\n');
            payload.extend_from_slice(body);
        }
        let io = |e| Error::io(format!("talk to the shim of {}", self.bundle.display()), e);
        write_frame(&sock, proto::REQUEST, &payload).map_err(io)?;
        match read_frame(&sock).map_err(io)? {
            Some((proto::OK, p)) => Ok((String::from_utf8_lossy(&p).into_owned(), sock)),
            Some((proto::ERR, p)) => Err(runtime_or_refused(&p)),
            Some((k, _)) => Err(Error::Protocol(format!(
                "unexpected frame {:?} in answer to {head:?}",
                char::from(k)
            ))),
            None => Err(Error::ShimDied(format!("it answered {head:?}"))),
        }
    }

    fn simple(&self, head: &str) -> Result<String> {
        self.call(head, &[]).map(|(t, _)| t)
    }

    fn exit_from(text: &str) -> Result<ExitInfo> {
        proto::decode_exit(text).ok_or_else(|| Error::Protocol(format!("bad exit {text:?}")))
    }

    /// The shim's own pid (from `BUNDLE/shim.pid`).
    pub fn shim_pid(&self) -> Result<i32> {
        let path = self.bundle.join(crate::server::PID_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        text.trim()
            .parse()
            .map_err(|_| Error::Protocol(format!("{} holds {text:?}", path.display())))
    }

    /// Status, pid and exit of the main process.
    pub fn state(&self) -> Result<ShimState> {
        Self::parse_state(&self.simple("state")?)
    }

    /// Decode a shim's state text (the answer to `state`, and to `start`).
    pub fn parse_state(text: &str) -> Result<ShimState> {
        let (first, error) = text.split_once('\n').unwrap_or((text, ""));
        let w: Vec<&str> = first.split(' ').collect();
        let bad = || Error::Protocol(format!("bad state {text:?}"));
        let status = match w.first().copied() {
            Some("created") => Status::Created,
            Some("running") => Status::Running,
            Some("paused") => Status::Paused,
            Some("stopped") => Status::Stopped,
            _ => return Err(bad()),
        };
        let pid = w.get(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let exit = match w.get(2).copied() {
            Some("-") => None,
            Some(e) => Some(Self::exit_from(&e.replace(',', " "))?),
            None => return Err(bad()),
        };
        let log_dropped = w.get(3).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        Ok(ShimState {
            status,
            pid,
            exit,
            log_dropped,
            log_error: (!error.is_empty()).then(|| error.to_string()),
        })
    }

    /// Start the created container (release its init). The answer is its state right after
    /// the start (`None` from an older shim, which answers nothing); see
    /// [`Client::started_state`].
    pub fn start(&self) -> Result<Option<ShimState>> {
        Self::started_state(&self.simple("start")?)
    }

    /// Signal the main process (`all`: every process of the container).
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        self.simple(&format!("kill {signal} {}", u8::from(all)))
            .map(drop)
    }

    /// Block until the main process has exited (immediate if it has).
    pub fn wait(&self) -> Result<ExitInfo> {
        Self::exit_from(&self.simple("wait")?)
    }

    /// One request for callers on an async runtime that read the answer frame themselves
    /// (berthd waits on many shims at once, with no thread per container): connect, send
    /// `head`, return the connection. Neither step blocks on a listening shim. The answer is
    /// one frame, `[kind u8][len u32 big-endian][payload]` (at most [`crate::MAX_ANSWER`]
    /// bytes); decode it with [`Client::answer`], then [`Client::exit_of`] (`wait`, `delete`)
    /// or [`Client::started_state`] (`start`).
    pub fn begin(&self, head: &str) -> Result<UnixStream> {
        let sock = self.connection()?;
        write_frame(&sock, proto::REQUEST, head.as_bytes())
            .map_err(|e| Error::io(format!("talk to the shim of {}", self.bundle.display()), e))?;
        Ok(sock)
    }

    /// The text of the answer frame `(kind, payload)` to `head`, or the error it carries.
    pub fn answer(&self, head: &str, kind: u8, payload: &[u8]) -> Result<String> {
        match kind {
            proto::OK => Ok(String::from_utf8_lossy(payload).into_owned()),
            proto::ERR => Err(runtime_or_refused(payload)),
            k => Err(Error::Protocol(format!(
                "unexpected frame {:?} in answer to {head:?}",
                char::from(k)
            ))),
        }
    }

    /// [`Client::start`]'s answer: the state right after the start (an older shim answers
    /// nothing; `None` then).
    pub fn started_state(text: &str) -> Result<Option<ShimState>> {
        if text.is_empty() {
            return Ok(None);
        }
        Self::parse_state(text).map(Some)
    }

    /// The answer to `wait` or `delete`: the exit of the main process.
    pub fn exit_of(text: &str) -> Result<ExitInfo> {
        Self::exit_from(text)
    }

    /// Freeze the container.
    pub fn pause(&self) -> Result<()> {
        self.simple("pause").map(drop)
    }

    /// Thaw the container.
    pub fn resume(&self) -> Result<()> {
        self.simple("resume").map(drop)
    }

    /// The container's processes (host pids).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let text = self.simple("pids")?;
        text.split_ascii_whitespace()
            .map(|p| {
                p.parse()
                    .map_err(|_| Error::Protocol(format!("bad pid list {text:?}")))
            })
            .collect()
    }

    /// Run a process in the container. Without `detach` the returned handle's stream is
    /// attached before the process starts, so none of its output is lost.
    pub fn exec(&self, req: &ExecRequest) -> Result<ExecHandle> {
        if !proto::valid_exec_id(&req.id) {
            return Err(Error::Refused(format!(
                "invalid exec id {:?}: use letters, digits, '_', '-', '.'",
                req.id
            )));
        }
        // The initial size goes into the process itself so the runtime sets it before the
        // program runs (a resize after the start would race with it).
        let mut process = req.process.clone();
        if let Some((w, h)) = req.size {
            if process.terminal().unwrap_or(false) && process.console_size().is_none() {
                let size = oci_spec::runtime::BoxBuilder::default()
                    .width(u64::from(w))
                    .height(u64::from(h))
                    .build()
                    .map_err(|e| Error::Protocol(format!("console size: {e}")))?;
                process.set_console_size(Some(size));
            }
        }
        let body = serde_json::to_vec(&process)
            .map_err(|e| Error::Protocol(format!("serialise the exec's process: {e}")))?;
        let tty = req.process.terminal().unwrap_or(false);
        let (w, h) = req.size.unwrap_or((0, 0));
        let head = format!(
            "exec {} {} {} {} {w} {h}",
            req.id,
            u8::from(tty),
            u8::from(req.stdin),
            u8::from(req.detach)
        );
        let (text, sock) = self.call(&head, &body)?;
        let pid = text
            .trim()
            .parse()
            .map_err(|_| Error::Protocol(format!("bad exec answer {text:?}")))?;
        Ok(ExecHandle {
            id: req.id.clone(),
            pid,
            stream: (!req.detach).then_some(Stream { sock }),
        })
    }

    /// Block until exec `exec_id` has exited.
    pub fn wait_exec(&self, exec_id: &str) -> Result<ExitInfo> {
        Self::exit_from(&self.simple(&format!("wait-exec {exec_id}"))?)
    }

    /// Attach to the stdio of the main process (`target: None`) or of an exec. Output produced
    /// while nobody was attached is not replayed. If the process has exited, the stream
    /// delivers only its [`Frame::Exit`].
    pub fn attach(&self, target: Option<&str>, stdin: bool) -> Result<Stream> {
        let head = format!("attach {} {}", target.unwrap_or("-"), u8::from(stdin));
        let (_, sock) = self.call(&head, &[])?;
        Ok(Stream { sock })
    }

    /// Resize the terminal of the main process (`None`) or of an exec.
    pub fn resize(&self, exec_id: Option<&str>, width: u16, height: u16) -> Result<()> {
        self.simple(&format!(
            "resize {} {width} {height}",
            exec_id.unwrap_or("-")
        ))
        .map(drop)
    }

    /// Delete the container in the runtime (force: kills it if it runs) and let the shim exit.
    /// Returns how the main process ended. `BUNDLE/exit.json` stays for the caller to remove.
    pub fn delete(&self) -> Result<ExitInfo> {
        let shim = self.shim_pid().ok();
        let text = self.simple("delete")?;
        let exit = Self::exit_from(&text)?;
        // The shim exits right after answering; return once it has.
        if let Some(pid) = shim {
            wait_gone(pid);
        }
        Ok(exit)
    }
}

/// What an attached stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Output on stdout (with a terminal, all output).
    Stdout(Vec<u8>),
    /// Output on stderr.
    Stderr(Vec<u8>),
    /// The process exited; nothing follows.
    Exit(ExitInfo),
}

/// An attached stdio stream: frames both ways (stdin, close-stdin and resize in; stdout, stderr
/// and exit out). Use [`Stream::try_clone`] to write from one thread while another reads.
#[derive(Debug)]
pub struct Stream {
    sock: UnixStream,
}

impl Stream {
    /// Another handle on the same stream.
    pub fn try_clone(&self) -> Result<Stream> {
        let sock = self
            .sock
            .try_clone()
            .map_err(|e| Error::io("duplicate the attach socket", e))?;
        Ok(Stream { sock })
    }

    /// Two handles: one to read with, one to write with.
    pub fn into_split(self) -> Result<(Stream, Stream)> {
        let other = self.try_clone()?;
        Ok((self, other))
    }

    /// The next frame; `None` when the shim closed the stream (after [`Frame::Exit`], or if
    /// the shim went away).
    pub fn recv(&self) -> Result<Option<Frame>> {
        let frame = read_frame(&self.sock).map_err(|e| Error::io("read the attach stream", e))?;
        Ok(match frame {
            None => None,
            Some((proto::STDOUT, p)) => Some(Frame::Stdout(p)),
            Some((proto::STDERR, p)) => Some(Frame::Stderr(p)),
            Some((proto::EXIT, p)) => Some(Frame::Exit(Client::exit_from(
                &String::from_utf8_lossy(&p),
            )?)),
            Some((k, _)) => {
                return Err(Error::Protocol(format!(
                    "unexpected frame {:?} on an attach stream",
                    char::from(k)
                )));
            }
        })
    }

    fn send(&self, kind: u8, payload: &[u8]) -> Result<()> {
        write_frame(&self.sock, kind, payload).map_err(|e| Error::io("write the attach stream", e))
    }

    /// Send bytes to the process's stdin (ignored unless attached with `stdin`).
    pub fn send_stdin(&self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(64 * 1024) {
            self.send(proto::STDIN, chunk)?;
        }
        Ok(())
    }

    /// Close the process's stdin (with a terminal: send EOF, ^D).
    pub fn close_stdin(&self) -> Result<()> {
        self.send(proto::CLOSE_STDIN, &[])
    }

    /// Resize the process's terminal.
    pub fn resize(&self, width: u16, height: u16) -> Result<()> {
        let mut p = width.to_be_bytes().to_vec();
        p.extend_from_slice(&height.to_be_bytes());
        self.send(proto::RESIZE, &p)
    }

    /// Stop writing: the shim sees no more frames from this stream (reading goes on).
    pub fn shutdown_write(&self) -> Result<()> {
        self.sock
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| Error::io("shut the attach stream down", e))
    }
}
