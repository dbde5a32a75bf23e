//! The shim process: `berth-shim shim --id ID --bundle DIR ... --report-fd 3`.
//!
//! Start-up: become subreaper, bind `BUNDLE/shim.sock`, create the container's stdio (pipes, or
//! a console socket that receives the pty master), run the runtime's `create`, report the
//! outcome on the report fd, then serve. The serve loop is single-threaded around poll(2) over
//! the listening socket, the clients, the container's output fds and a signalfd for SIGCHLD.
//! Every runtime operation runs as a child process (see [`runtime`]); the loop waits for it.

mod cgpool;
mod log;
mod runtime;

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, WaitOptions, WaitStatus};

use self::log::JsonLog;
pub(crate) use self::runtime::unblock_all_signals;
use self::runtime::{Runtime, Stdio3};
use crate::proto::{self, push_frame, take_frame};
use crate::text::{now_nanos, rfc3339_nanos};
use crate::{ExitInfo, LogOpts, Status};

/// The shim's socket, in the bundle.
pub(crate) const SOCKET: &str = "shim.sock";
/// The shim's pid, in the bundle.
pub(crate) const PID_FILE: &str = "shim.pid";
/// The main process's exit, in the bundle.
pub(crate) const EXIT_FILE: &str = "exit.json";
const CONSOLE_SOCKET: &str = "console.sock";
const INIT_PID_FILE: &str = "init.pid";

/// Stop reading a process's output while an attached client has this much unsent.
const BACKLOG_LIMIT: usize = 1 << 20;
/// Stop reading stdin frames while this much waits to be written to the process.
const STDIN_LIMIT: usize = 256 << 10;

struct Config {
    id: String,
    bundle: PathBuf,
    runtime_root: PathBuf,
    runtime: Option<PathBuf>,
    tty: bool,
    stdin: bool,
    log: Option<LogOpts>,
    /// `--cgroup PATH`: the container's cgroup path (for a standby shim's pool).
    cgroup: Option<String>,
    /// `--new-netns`: the container wants a new network namespace without a path.
    new_netns: bool,
    report_fd: Option<RawFd>,
    /// `--daemonize`: fork at once and go on in a new session in the child, so whoever
    /// spawned us only waits for a process that exits right away (see `client::spawn`).
    daemonize: bool,
}

fn parse_args(args: &[OsString]) -> Result<Config, String> {
    let mut id = None;
    let mut bundle = None;
    let mut runtime_root = None;
    let mut runtime = None;
    let (mut tty, mut stdin) = (false, false);
    let mut log_path: Option<PathBuf> = None;
    let (mut max_size, mut max_file) = (0u64, 1u32);
    let mut report_fd = None;
    let mut cgroup = None;
    let mut new_netns = false;
    let mut daemonize = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_ref() {
            "--id" => id = Some(value()?.to_string_lossy().into_owned()),
            "--bundle" => bundle = Some(PathBuf::from(value()?)),
            "--runtime-root" => runtime_root = Some(PathBuf::from(value()?)),
            "--runtime" => runtime = Some(PathBuf::from(value()?)),
            "--tty" => tty = true,
            "--stdin" => stdin = true,
            "--daemonize" => daemonize = true,
            "--cgroup" => cgroup = Some(value()?.to_string_lossy().into_owned()),
            "--new-netns" => new_netns = true,
            "--log" => log_path = Some(PathBuf::from(value()?)),
            "--log-max-size" => {
                max_size = value()?
                    .to_string_lossy()
                    .parse()
                    .map_err(|_| "--log-max-size needs a number".to_string())?;
            }
            "--log-max-file" => {
                max_file = value()?
                    .to_string_lossy()
                    .parse()
                    .map_err(|_| "--log-max-file needs a number".to_string())?;
            }
            "--report-fd" => {
                report_fd = Some(
                    value()?
                        .to_string_lossy()
                        .parse()
                        .map_err(|_| "--report-fd needs a number".to_string())?,
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Config {
        id: id.ok_or("--id is required")?,
        bundle: bundle.ok_or("--bundle is required")?,
        runtime_root: runtime_root.ok_or("--runtime-root is required")?,
        runtime,
        tty,
        stdin,
        log: log_path.map(|path| LogOpts {
            path,
            max_size,
            max_file,
        }),
        cgroup,
        new_netns,
        report_fd,
        daemonize,
    })
}

/// The report channel to `spawn()`: `pid N`, then `ok PID` or `err MESSAGE`.
struct Report(Option<OwnedFd>);

impl Report {
    /// Done reporting: close the channel. A report fd among 0-2 is pointed at /dev/null
    /// instead, so the standard fds never become free numbers that a later open would take.
    fn finish(self) {
        let Some(fd) = self.0 else { return };
        if fd.as_raw_fd() <= 2 {
            if let Ok(null) =
                rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            {
                let mut fd = fd;
                let _ = rustix::io::dup2(&null, &mut fd);
                // The standard fd stays open, on /dev/null now.
                std::mem::forget(fd);
            }
        }
    }

    fn send(&mut self, line: &str) {
        let Some(fd) = &self.0 else { return };
        let mut rest = line.as_bytes();
        while !rest.is_empty() {
            match rustix::io::write(fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// Entry point of `berth-shim shim ...`; returns the exit code.
pub(crate) fn main(args: &[OsString]) -> i32 {
    let received;
    let mut pool = None;
    let mut netns = None;
    let args = if args.iter().any(|a| a == "--standby") {
        // A standby shim (`client::Standby`): detach now, then wait for the container's
        // arguments on stdin; end-of-file without any means it is not needed. Named before
        // the fork, so the detached process has the name by the time its spawner returns.
        set_process_name(c"berth-standby");
        if args.iter().any(|a| a == "--daemonize") {
            if let Err(e) = daemonize() {
                eprintln!("berth-shim: {e}");
                return 1;
            }
        }
        // `--standby DIR` only tells `ps` whose shim this is; `--cgroup-pool PARENT` asks for
        // the container's cgroup directories to be made while waiting (`cgpool`).
        let mut own: Vec<OsString> = Vec::with_capacity(args.len());
        let mut pool_parent = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.to_str() {
                Some("--standby") => {
                    it.next();
                }
                Some("--cgroup-pool") => pool_parent = it.next().cloned(),
                Some("--daemonize") => {}
                _ => own.push(a.clone()),
            }
        }
        pool = pool_parent.and_then(|p| cgpool::Pool::create(&p.to_string_lossy()));
        netns = FreshNetns::make();
        received = match read_standby_args() {
            Ok(Some(more)) => more,
            Ok(None) => {
                if let Some(p) = &pool {
                    p.remove();
                }
                return 0;
            }
            Err(e) => {
                if let Some(p) = &pool {
                    p.remove();
                }
                eprintln!("berth-shim: {e}");
                return 1;
            }
        };
        set_process_name(c"berth-shim");
        own.extend(received);
        own
    } else {
        args.to_vec()
    };
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            if let Some(p) = &pool {
                p.remove();
            }
            eprintln!("berth-shim: {e}");
            return 2;
        }
    };
    let pooled = pool.map_or_else(Vec::new, |p| p.hand_to(cfg.cgroup.as_deref()));
    if let Some(n) = netns {
        if let Err(e) = n.hand_to(cfg.new_netns) {
            for d in &pooled {
                let _ = std::fs::remove_dir(d);
            }
            eprintln!("berth-shim: {e}");
            return 1;
        }
    }
    if cfg.daemonize {
        if let Err(e) = daemonize() {
            eprintln!("berth-shim: {e}");
            return 1;
        }
    }
    let mut report = Report(cfg.report_fd.map(|fd| {
        // SAFETY: `spawn()` placed the write end of its report pipe at this fd number for us;
        // nothing else in this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The runtime and the container must not inherit it (spawn() waits for its EOF).
        let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
        fd
    }));
    close_other_fds(cfg.report_fd.unwrap_or(2));
    report.send(&format!("pid {}\n", std::process::id()));
    match setup(&cfg) {
        Ok(mut shim) => {
            report.send(&format!("ok {}\n", shim.procs[0].pid));
            report.finish();
            shim.serve()
        }
        Err(e) => {
            // The runtime removed what it made of the cgroup; not what it never got to.
            for d in &pooled {
                let _ = std::fs::remove_dir(d);
            }
            report.send(&format!("err {}\n", e.replace('\n', " ")));
            report.finish();
            1
        }
    }
}

/// Set this process's name (`comm`, as `ps` and `/proc/PID/comm` show it); best effort.
fn set_process_name(name: &std::ffi::CStr) {
    let _ = rustix::thread::set_name(name);
}

/// A network namespace a standby shim made for itself while waiting (loopback up), with the
/// one it came from.
struct FreshNetns {
    original: OwnedFd,
}

/// Whether this process sits in a fresh network namespace made for its container (read by the
/// forked runtime, see `berth_runtime::Runtime::caller_netns_is_fresh`).
static IN_FRESH_NETNS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn in_fresh_netns() -> bool {
    IN_FRESH_NETNS.load(std::sync::atomic::Ordering::Relaxed)
}

impl FreshNetns {
    /// Move into a new network namespace with loopback up; `None` (and no change) if that
    /// cannot be done.
    fn make() -> Option<FreshNetns> {
        let original = rustix::fs::open(
            "/proc/self/ns/net",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        // SAFETY: this process is single-threaded here; a new network namespace changes no
        // memory or fd state.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }.ok()?;
        let n = FreshNetns { original };
        if berth_runtime::namespaces::loopback_up().is_err() {
            let _ = n.leave();
            return None;
        }
        Some(n)
    }

    /// Keep the namespace for a container that wants a new one (`wanted`), else go back to
    /// the original one: a container that shares the host's network must not get this one.
    fn hand_to(self, wanted: bool) -> Result<(), String> {
        if wanted {
            IN_FRESH_NETNS.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        self.leave()
    }

    fn leave(&self) -> Result<(), String> {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&self.original),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| format!("return to the original network namespace: {e}"))
    }
}

/// A standby shim's arguments: NUL-terminated strings on stdin until end-of-file (`None` if
/// there are none). Stdin is pointed at /dev/null afterwards.
fn read_standby_args() -> Result<Option<Vec<OsString>>, String> {
    use std::os::unix::ffi::OsStringExt;
    let mut buf = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| format!("read the arguments on stdin: {e}"))?;
    if let Ok(null) = rustix::fs::open("/dev/null", OFlags::RDONLY, Mode::empty()) {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        buf.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect(),
    ))
}

/// Fork; the parent exits at once and the child, no longer its spawner's child, starts a
/// new session. Done first thing, while the process is small and single-threaded.
fn daemonize() -> Result<(), String> {
    // Hold no directory of the spawner's busy (the client does not set one, see there); before
    // the fork, so that the shim is in `/` from its first instruction.
    let _ = rustix::process::chdir("/");
    // SAFETY: the shim is single-threaded here; the child goes on running our own code.
    match unsafe { libc::fork() } {
        -1 => return Err(format!("fork: {}", io::Error::last_os_error())),
        0 => {}
        // SAFETY: _exit ends the intermediate process without running anything else.
        _ => unsafe { libc::_exit(0) },
    }
    rustix::process::setsid().map_err(|e| format!("start a new session: {e}"))?;
    Ok(())
}

/// Close every fd above `keep` (and above 2): the shim holds nothing of its spawner's.
fn close_other_fds(keep: RawFd) {
    let first = u32::try_from(keep.max(2) + 1).unwrap_or(3);
    // SAFETY: close_range only closes descriptors; nothing in this fresh process owns any of
    // the fds above the report fd (std and this crate have opened none yet).
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
    }
}

/// One process whose stdio the shim holds: the container's main process or an exec.
struct Proc {
    /// `None` for the main process.
    exec_id: Option<String>,
    pid: i32,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    pty: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    close_stdin_when_written: bool,
    exit: Option<ExitInfo>,
}

impl Proc {
    fn new(exec_id: Option<String>) -> Proc {
        Proc {
            exec_id,
            pid: 0,
            out: None,
            err: None,
            stdin: None,
            pty: None,
            stdin_pending: Vec::new(),
            close_stdin_when_written: false,
            exit: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnState {
    /// Waiting for the request.
    Request,
    /// Attached to the stdio of `procs[target]`.
    Stream { target: usize, stdin: bool },
    /// Waiting for `procs[target]` to exit.
    Wait { target: usize },
    /// Answer sent: close once the output buffer is flushed.
    Closing,
}

struct Conn {
    sock: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    state: ConnState,
    dead: bool,
    /// The client shut its writing side down (a stream goes on delivering output).
    eof: bool,
}

impl Conn {
    fn send(&mut self, kind: u8, payload: &[u8]) {
        if self.dead {
            return;
        }
        push_frame(&mut self.outbuf, kind, payload);
        self.flush();
    }

    fn ok(&mut self, text: &str) {
        self.send(proto::OK, text.as_bytes());
    }

    fn fail(&mut self, who: u8, msg: &str) {
        let mut p = vec![who];
        p.extend_from_slice(msg.as_bytes());
        self.send(proto::ERR, &p);
        self.state = ConnState::Closing;
    }

    fn flush(&mut self) {
        while !self.outbuf.is_empty() && !self.dead {
            match self.sock.write(&self.outbuf) {
                Ok(0) => self.dead = true,
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.dead = true,
            }
        }
    }

    /// Gone, or done: answered and flushed.
    fn finished(&self) -> bool {
        self.dead || (self.state == ConnState::Closing && self.outbuf.is_empty())
    }
}

/// Where the OOM-kill counter of the container's memory cgroup is.
enum OomSource {
    V1(PathBuf),
    V2(PathBuf),
    None,
}

impl OomSource {
    fn of(pid: i32) -> OomSource {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return OomSource::None;
        };
        let mut unified = None;
        for line in text.lines() {
            let mut f = line.splitn(3, ':');
            let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            if ctrls.split(',').any(|c| c == "memory") {
                return OomSource::V1(
                    Path::new("/sys/fs/cgroup/memory")
                        .join(path.trim_start_matches('/'))
                        .join("memory.oom_control"),
                );
            }
            if ctrls.is_empty() {
                unified = Some(path.trim_start_matches('/').to_string());
            }
        }
        let Some(rel) = unified else {
            return OomSource::None;
        };
        for base in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
            let p = Path::new(base).join(&rel).join("memory.events");
            if p.exists() {
                return OomSource::V2(p);
            }
        }
        OomSource::None
    }

    fn oom_kills(&self) -> u64 {
        let path = match self {
            OomSource::V1(p) | OomSource::V2(p) => p,
            OomSource::None => return 0,
        };
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

struct Shim {
    cfg: Config,
    rt: Runtime,
    dir: OwnedFd,
    listener: UnixListener,
    sigfd: OwnedFd,
    status: Status,
    /// `procs[0]` is the main process; execs follow, never removed.
    procs: Vec<Proc>,
    conns: Vec<Conn>,
    log: Option<JsonLog>,
    oom: OomSource,
    oom_before: u64,
    console: Option<UnixListener>,
    /// The main process has exited: delete the container in the runtime at the end of this
    /// loop iteration (after the exit is reported), before the daemon asks.
    predelete_wanted: bool,
    /// The outcome of that early delete (built-in runtime only).
    predelete: Option<Result<(), String>>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("create a pipe: {e}"))
}

fn set_nonblocking(fd: &OwnedFd) {
    let _ = rustix::fs::fcntl_setfl(fd, OFlags::NONBLOCK);
}

/// Bind a unix socket named `name` inside `dir` (whatever the length of dir's path).
fn bind_in(dir: &OwnedFd, name: &str) -> Result<UnixListener, String> {
    let _ = rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty());
    rustix::process::fchdir(dir).map_err(|e| format!("enter the bundle: {e}"))?;
    let l = UnixListener::bind(name);
    let _ = rustix::process::chdir("/");
    let l = l.map_err(|e| format!("bind {name} in the bundle: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("set {name} non-blocking: {e}"))?;
    Ok(l)
}

fn signalfd_for_sigchld() -> Result<OwnedFd, String> {
    // SAFETY: plain libc calls on a local sigset; the shim is single-threaded so blocking
    // SIGCHLD for the process (via the only thread) is what we want.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: `set` is a valid sigset_t and SIGCHLD a valid signal.
    unsafe { libc::sigaddset(&mut set, libc::SIGCHLD) };
    // SAFETY: valid set pointer, null old-set pointer.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(format!("block SIGCHLD: {}", io::Error::last_os_error()));
    }
    // SAFETY: -1 asks for a new signalfd; `set` is valid.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(format!("create a signalfd: {}", io::Error::last_os_error()));
    }
    // SAFETY: signalfd returned a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setup(cfg: &Config) -> Result<Shim, String> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| format!("become a subreaper: {e}"))?;
    // SAFETY: setting a signal disposition to SIG_IGN has no memory-safety implications.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // SAFETY: as above.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let _ = rustix::process::chdir("/");
    let dir = rustix::fs::open(
        &cfg.bundle,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open the bundle {}: {e}", cfg.bundle.display()))?;
    let sigfd = signalfd_for_sigchld()?;
    let listener = bind_in(&dir, SOCKET)?;
    let rt = Runtime {
        bin: cfg.runtime.clone(),
        root: cfg.runtime_root.clone(),
        bundle: cfg.bundle.clone(),
        id: cfg.id.clone(),
    };
    let mut shim = Shim {
        cfg: Config {
            id: cfg.id.clone(),
            bundle: cfg.bundle.clone(),
            runtime_root: cfg.runtime_root.clone(),
            runtime: cfg.runtime.clone(),
            tty: cfg.tty,
            stdin: cfg.stdin,
            log: cfg.log.clone(),
            cgroup: None,
            new_netns: false,
            report_fd: None,
            daemonize: false,
        },
        rt,
        dir,
        listener,
        sigfd,
        status: Status::Created,
        procs: vec![Proc::new(None)],
        conns: Vec::new(),
        log: None,
        oom: OomSource::None,
        oom_before: 0,
        console: None,
        predelete_wanted: false,
        predelete: None,
    };
    match shim.create() {
        Ok(()) => Ok(shim),
        Err(e) => {
            shim.remove_files(&[SOCKET, CONSOLE_SOCKET, INIT_PID_FILE]);
            Err(e)
        }
    }
}

impl Shim {
    fn remove_files(&self, names: &[&str]) {
        for n in names {
            let _ = rustix::fs::unlinkat(&self.dir, *n, rustix::fs::AtFlags::empty());
        }
    }

    fn read_file(&self, name: &str) -> Option<String> {
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).ok()?;
        Some(s)
    }

    /// Write `name` in the bundle atomically ([`berth_runtime::replace::replace_file`]).
    fn write_file(&self, name: &str, data: &[u8]) -> Result<(), String> {
        let tmp = format!(".{name}.tmp");
        berth_runtime::replace::replace_file(
            self.dir.as_fd(),
            Path::new(name),
            Path::new(&tmp),
            data,
            0o644,
        )
        .map_err(|e| format!("write {name} in the bundle: {e}"))
    }

    /// Create the container; on failure leave nothing behind.
    fn create(&mut self) -> Result<(), String> {
        if let Some(opts) = &self.cfg.log {
            self.log = Some(JsonLog::open(opts)?);
        }
        let mut stdio = Stdio3::for_process();
        let mut args = vec!["create", "--bundle", ".", "--pid-file", INIT_PID_FILE];
        if self.cfg.tty {
            self.console = Some(bind_in(&self.dir, CONSOLE_SOCKET)?);
            args.extend(["--console-socket", CONSOLE_SOCKET]);
        } else {
            let (r, w) = pipe()?;
            set_nonblocking(&r);
            self.procs[0].out = Some(r);
            stdio.stdout = Some(w);
            let (r, w) = pipe()?;
            set_nonblocking(&r);
            self.procs[0].err = Some(r);
            stdio.stderr = Some(w);
            if self.cfg.stdin {
                let (r, w) = pipe()?;
                set_nonblocking(&w);
                self.procs[0].stdin = Some(w);
                stdio.stdin = Some(r);
            }
        }
        let id = self.cfg.id.clone();
        args.push(&id);
        let created = self.rt.run(&args, stdio);
        let result = created.and_then(|_| self.after_create());
        if let Err(e) = result {
            self.undo_create();
            return Err(e);
        }
        self.remove_files(&[CONSOLE_SOCKET, INIT_PID_FILE]);
        self.console = None;
        if let Err(e) = self.write_file(PID_FILE, std::process::id().to_string().as_bytes()) {
            self.undo_create();
            return Err(e);
        }
        Ok(())
    }

    fn after_create(&mut self) -> Result<(), String> {
        let pid: i32 = self
            .read_file(INIT_PID_FILE)
            .and_then(|s| s.trim().parse().ok())
            .ok_or("the runtime did not write the container's pid file")?;
        self.procs[0].pid = pid;
        if let Some(l) = &self.console {
            let master = recv_master(l)?;
            set_nonblocking(&master);
            self.procs[0].out = Some(dup(&master)?);
            if self.cfg.stdin {
                self.procs[0].stdin = Some(dup(&master)?);
            }
            self.procs[0].pty = Some(master);
        }
        self.oom = OomSource::of(pid);
        self.oom_before = self.oom.oom_kills();
        Ok(())
    }

    fn undo_create(&mut self) {
        let id = self.cfg.id.clone();
        let _ = self.rt.run(&["delete", "--force", &id], Stdio3::default());
        self.reap(false);
    }

    /// Reap every exited child; `track`: record the exits of our processes.
    fn reap(&mut self, track: bool) {
        while let Ok(Some((pid, st))) = rustix::process::wait(WaitOptions::NOHANG) {
            if track {
                self.exited(pid.as_raw_nonzero().get(), st);
            }
        }
    }

    fn exited(&mut self, pid: i32, st: WaitStatus) {
        let Some(k) = self
            .procs
            .iter()
            .position(|p| p.pid == pid && p.exit.is_none())
        else {
            return;
        };
        let (code, signal) = if let Some(c) = st.exit_status() {
            (c, None)
        } else if let Some(s) = st.terminating_signal() {
            (128 + s, Some(s))
        } else {
            return;
        };
        self.drain(k);
        let mut info = ExitInfo {
            code,
            signal,
            finished_at_unix_nanos: now_nanos(),
            oom_killed: false,
        };
        if k == 0 {
            info.oom_killed = self.oom.oom_kills() > self.oom_before;
            if let Some(log) = &mut self.log {
                log.flush_partial();
            }
            let json = format!(
                "{{\"code\":{},\"signal\":{},\"finished_at\":\"{}\",\"finished_at_unix_nanos\":{},\"oom_killed\":{}}}\n",
                info.code,
                info.signal.map_or("null".to_string(), |s| s.to_string()),
                rfc3339_nanos(info.finished_at_unix_nanos),
                info.finished_at_unix_nanos,
                info.oom_killed
            );
            let _ = self.write_file(EXIT_FILE, json.as_bytes());
            self.status = Status::Stopped;
            self.predelete_wanted = true;
        } else {
            // An exec's leftovers: its terminal or pipes may be held by its children; we stop
            // listening once it is gone.
            let p = &mut self.procs[k];
            p.out = None;
            p.err = None;
            p.stdin = None;
            p.pty = None;
            if let Some(name) = p.exec_id.clone() {
                let (a, b) = (format!("exec-{name}.json"), format!("exec-{name}.pid"));
                self.remove_files(&[a.as_str(), b.as_str()]);
            }
        }
        self.procs[k].exit = Some(info);
        let text = proto::encode_exit(&info);
        for c in &mut self.conns {
            match c.state {
                ConnState::Stream { target, .. } if target == k => {
                    c.send(proto::EXIT, text.as_bytes());
                    c.state = ConnState::Closing;
                    c.flush();
                }
                ConnState::Wait { target } if target == k => {
                    c.state = ConnState::Closing;
                    c.ok(&text);
                }
                _ => {}
            }
        }
    }

    /// Read what is buffered in `procs[k]`'s output without blocking.
    fn drain(&mut self, k: usize) {
        for stream in 0..2 {
            for _ in 0..1024 {
                if !self.read_output(k, stream) {
                    break;
                }
            }
        }
    }

    /// One read from an output fd; false when nothing more is there now.
    fn read_output(&mut self, k: usize, stream: usize) -> bool {
        let mut buf = [0u8; 32 * 1024];
        let p = &mut self.procs[k];
        let fd = if stream == 0 { &mut p.out } else { &mut p.err };
        let Some(f) = fd.as_ref() else {
            return false;
        };
        match rustix::io::read(f, &mut buf) {
            Ok(0) => {
                *fd = None;
                false
            }
            Ok(n) => {
                self.deliver(k, stream, &buf[..n]);
                true
            }
            Err(rustix::io::Errno::INTR) => true,
            Err(rustix::io::Errno::AGAIN) => false,
            // EIO: the pty's last slave fd closed.
            Err(_) => {
                *fd = None;
                false
            }
        }
    }

    fn deliver(&mut self, k: usize, stream: usize, data: &[u8]) {
        if k == 0 {
            if let Some(log) = &mut self.log {
                log.write(stream, data);
            }
        }
        let kind = if stream == 0 {
            proto::STDOUT
        } else {
            proto::STDERR
        };
        for c in &mut self.conns {
            if matches!(c.state, ConnState::Stream { target, .. } if target == k) {
                c.send(kind, data);
            }
        }
    }

    fn backlogged(&self, k: usize) -> bool {
        self.conns.iter().any(|c| {
            matches!(c.state, ConnState::Stream { target, .. } if target == k)
                && c.outbuf.len() > BACKLOG_LIMIT
        })
    }

    fn write_stdin(&mut self, k: usize) {
        let p = &mut self.procs[k];
        if let Some(fd) = &p.stdin {
            while !p.stdin_pending.is_empty() {
                match rustix::io::write(fd, &p.stdin_pending) {
                    Ok(n) => {
                        p.stdin_pending.drain(..n);
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(_) => {
                        // The reader is gone: nothing more will be read.
                        p.stdin_pending.clear();
                        p.stdin = None;
                        break;
                    }
                }
            }
        } else {
            p.stdin_pending.clear();
        }
        if p.stdin_pending.is_empty() && p.close_stdin_when_written {
            p.close_stdin_when_written = false;
            if p.pty.is_some() {
                // A terminal has no half-close: send EOF (^D) as a typing user would.
                if let Some(fd) = &p.stdin {
                    let _ = rustix::io::write(fd, b"\x04");
                }
            } else {
                p.stdin = None;
            }
        }
    }

    fn serve(&mut self) -> i32 {
        let trim = Trim::new();
        // Trim once the loop has been idle this long after any activity.
        let idle_ms = 250;
        let mut active = true;
        #[derive(Clone, Copy)]
        enum Tag {
            Listener,
            Signal,
            Out(usize, usize),
            Stdin(usize),
            Conn(usize),
        }
        loop {
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(8 + self.conns.len());
            let mut tags: Vec<Tag> = Vec::with_capacity(8 + self.conns.len());
            let mut add = |fd: RawFd, events: i16, tag: Tag| {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                tags.push(tag);
            };
            add(self.listener.as_raw_fd(), libc::POLLIN, Tag::Listener);
            add(self.sigfd.as_raw_fd(), libc::POLLIN, Tag::Signal);
            for (k, p) in self.procs.iter().enumerate() {
                if !self.backlogged(k) {
                    if let Some(fd) = &p.out {
                        add(fd.as_raw_fd(), libc::POLLIN, Tag::Out(k, 0));
                    }
                    if let Some(fd) = &p.err {
                        add(fd.as_raw_fd(), libc::POLLIN, Tag::Out(k, 1));
                    }
                }
                if let Some(fd) = &p.stdin {
                    if !p.stdin_pending.is_empty() {
                        add(fd.as_raw_fd(), libc::POLLOUT, Tag::Stdin(k));
                    }
                }
            }
            for (i, c) in self.conns.iter().enumerate() {
                let mut ev = 0;
                let stdin_full = match c.state {
                    ConnState::Stream { target, .. } => {
                        self.procs[target].stdin_pending.len() > STDIN_LIMIT
                    }
                    _ => false,
                };
                if !stdin_full && !c.eof {
                    ev |= libc::POLLIN;
                }
                if !c.outbuf.is_empty() {
                    ev |= libc::POLLOUT;
                }
                add(c.sock.as_raw_fd(), ev, Tag::Conn(i));
            }
            let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
            let timeout = if active { idle_ms } else { -1 };
            // SAFETY: `fds` is a valid array of `nfds` pollfd structures that lives across the
            // call; the descriptors are owned by `self` and stay open during it.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout) };
            if n == 0 {
                trim.run();
                active = false;
                continue;
            }
            active = true;
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return 1;
            }
            let mut exit_now = false;
            for (pfd, tag) in fds.iter().zip(tags.iter()) {
                if pfd.revents == 0 {
                    continue;
                }
                match *tag {
                    Tag::Out(k, s) => {
                        self.read_output(k, s);
                    }
                    Tag::Stdin(k) => self.write_stdin(k),
                    Tag::Conn(i) => {
                        if pfd.revents & libc::POLLOUT != 0 {
                            self.conns[i].flush();
                        }
                        if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 && self.conns[i].eof {
                            self.conns[i].dead = true;
                        }
                        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                            && self.conn_readable(i)
                        {
                            exit_now = true;
                            break;
                        }
                    }
                    Tag::Signal => {
                        let mut buf = [0u8; 128 * 8];
                        while matches!(rustix::io::read(&self.sigfd, &mut buf), Ok(n) if n > 0) {}
                        self.reap(true);
                    }
                    Tag::Listener => {
                        while let Ok((sock, _)) = self.listener.accept() {
                            if sock.set_nonblocking(true).is_ok() {
                                self.conns.push(Conn {
                                    sock,
                                    inbuf: Vec::new(),
                                    outbuf: Vec::new(),
                                    state: ConnState::Request,
                                    dead: false,
                                    eof: false,
                                });
                            }
                        }
                    }
                }
            }
            if exit_now {
                self.shutdown();
                return 0;
            }
            self.conns.retain(|c| !c.finished());
            if std::mem::take(&mut self.predelete_wanted) && self.predelete.is_none() {
                self.predelete = self.rt.delete_early();
            }
        }
    }

    /// Read from client `i` and act on complete frames. True when the shim should exit.
    fn conn_readable(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let c = &mut self.conns[i];
            if c.dead {
                return false;
            }
            match c.sock.read(&mut buf) {
                Ok(0) => {
                    if matches!(c.state, ConnState::Stream { .. }) {
                        c.eof = true;
                        break;
                    }
                    c.dead = true;
                    return false;
                }
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.dead = true;
                    return false;
                }
            }
            if c.inbuf.len() > proto::MAX_FRAME + 5 {
                break;
            }
        }
        loop {
            let frame = match take_frame(&mut self.conns[i].inbuf) {
                Ok(Some(f)) => f,
                Ok(None) => return false,
                Err(()) => {
                    self.conns[i].dead = true;
                    return false;
                }
            };
            let state = self.conns[i].state.clone();
            match (state, frame.0) {
                (ConnState::Request, proto::REQUEST) if self.request(i, &frame.1) => {
                    return true;
                }
                (ConnState::Request, proto::REQUEST) => {}
                (ConnState::Stream { target, stdin }, kind) => {
                    self.stream_frame(target, stdin, kind, &frame.1);
                }
                (ConnState::Request, _) => {
                    self.conns[i].dead = true;
                    return false;
                }
                // Waiting or closing: a client has nothing more to say.
                _ => {}
            }
        }
    }

    fn stream_frame(&mut self, k: usize, stdin: bool, kind: u8, payload: &[u8]) {
        match kind {
            proto::STDIN if stdin => {
                let p = &mut self.procs[k];
                if p.stdin.is_some() && !p.close_stdin_when_written {
                    p.stdin_pending.extend_from_slice(payload);
                    self.write_stdin(k);
                }
            }
            proto::CLOSE_STDIN if stdin => {
                self.procs[k].close_stdin_when_written = true;
                self.write_stdin(k);
            }
            proto::RESIZE if payload.len() == 4 => {
                let w = u16::from_be_bytes([payload[0], payload[1]]);
                let h = u16::from_be_bytes([payload[2], payload[3]]);
                let _ = self.resize(k, w, h);
            }
            _ => {}
        }
    }

    fn resize(&self, k: usize, width: u16, height: u16) -> Result<(), String> {
        let Some(pty) = &self.procs[k].pty else {
            return Err("the process has no terminal to resize".into());
        };
        rustix::termios::tcsetwinsize(
            pty,
            rustix::termios::Winsize {
                ws_row: height,
                ws_col: width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .map_err(|e| format!("resize the terminal: {e}"))
    }

    fn target(&self, word: Option<&str>) -> Result<usize, String> {
        match word {
            None | Some("-") => Ok(0),
            Some(id) => self
                .procs
                .iter()
                .position(|p| p.exec_id.as_deref() == Some(id))
                .ok_or_else(|| format!("no exec with id {id:?} in this container")),
        }
    }

    fn state_text(&self) -> String {
        let main = &self.procs[0];
        let status = match self.status {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        let exit = main
            .exit
            .as_ref()
            .map_or("-".to_string(), |e| proto::encode_exit(e).replace(' ', ","));
        let (dropped, error) = self
            .log
            .as_ref()
            .map_or((0, None), |l| (l.dropped, l.error.clone()));
        format!(
            "{status} {} {exit} {dropped}\n{}",
            main.pid,
            error.unwrap_or_default()
        )
    }

    /// Answer a `start` that ran whole: the state on success.
    fn started(&mut self, i: usize, r: Result<(), String>) {
        if r.is_ok() && self.status == Status::Created && self.procs[0].exit.is_none() {
            self.status = Status::Running;
        }
        // The state comes with the answer: the caller needs the pid and status next.
        match r {
            Ok(()) => {
                let t = self.state_text();
                self.conns[i].ok(&t);
            }
            Err(e) => self.conns[i].fail(b'r', &e),
        }
    }

    /// Handle one request on client `i`. True when the shim should exit (after `delete`).
    fn request(&mut self, i: usize, payload: &[u8]) -> bool {
        let (head, body) = match payload.iter().position(|&b| b == b'\n') {
            Some(n) => (&payload[..n], &payload[n + 1..]),
            None => (payload, &[][..]),
        };
        let head = String::from_utf8_lossy(head).into_owned();
        let words: Vec<&str> = head.split(' ').collect();
        let id = self.cfg.id.clone();
        self.conns[i].state = ConnState::Closing;
        let runtime_result = |c: &mut Conn, r: Result<Vec<u8>, String>| match r {
            Ok(_) => c.ok(""),
            Err(e) => c.fail(b'r', &e),
        };
        match words[0] {
            "state" => {
                let t = self.state_text();
                self.conns[i].ok(&t);
            }
            "start" => {
                // The built-in runtime: answer once the start can no longer fail, then let the
                // init run. Answering after the fifo write instead put the answer (and all the
                // daemon does once the container runs) behind the user program: the init,
                // woken on this CPU, ran first, and a short program (`true`) had exited
                // before the daemon heard of its start (traced: 1.3 ms).
                match self.rt.start_begin() {
                    Some(Ok(starting)) if !starting.has_poststart_hooks() => {
                        self.started(i, Ok(()));
                        if let Err(e) = starting.finish() {
                            // The init held the fifo open a moment ago: it died in between,
                            // and its exit tells the daemon the rest.
                            eprintln!("berth-shim: start: {}", berth_runtime::error::chain(&e));
                        }
                    }
                    Some(Ok(starting)) => {
                        let r = starting
                            .finish()
                            .map_err(|e| berth_runtime::error::chain(&e));
                        self.started(i, r);
                    }
                    Some(Err(e)) => self.conns[i].fail(b'r', &e),
                    None => {
                        let r = self.rt.start_external().map(drop);
                        self.started(i, r);
                    }
                }
            }
            "kill" => {
                let sig = words.get(1).copied().unwrap_or("15");
                let mut args = vec!["kill"];
                if words.get(2) == Some(&"1") {
                    args.push("--all");
                }
                args.extend([id.as_str(), sig]);
                let r = self.rt.run(&args, Stdio3::default());
                runtime_result(&mut self.conns[i], r);
            }
            "pause" | "resume" => {
                let r = self.rt.run(&[words[0], &id], Stdio3::default());
                if r.is_ok() && self.status != Status::Stopped {
                    self.status = if words[0] == "pause" {
                        Status::Paused
                    } else {
                        Status::Running
                    };
                }
                runtime_result(&mut self.conns[i], r);
            }
            "pids" => match self.rt.output(&["ps", "--format", "json", &id]) {
                Ok(out) => {
                    let text = String::from_utf8_lossy(&out);
                    let pids: Vec<String> = text
                        .split(|c: char| !c.is_ascii_digit())
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect();
                    self.conns[i].ok(&pids.join(" "));
                }
                Err(e) => self.conns[i].fail(b'r', &e),
            },
            "wait" | "wait-exec" => match self.target(words.get(1).copied()) {
                Ok(k) => match self.procs[k].exit {
                    Some(e) => self.conns[i].ok(&proto::encode_exit(&e)),
                    None => self.conns[i].state = ConnState::Wait { target: k },
                },
                Err(e) => self.conns[i].fail(b'x', &e),
            },
            "attach" => match self.target(words.get(1).copied()) {
                Ok(k) => {
                    let c = &mut self.conns[i];
                    c.ok("");
                    match self.procs[k].exit {
                        Some(e) => c.send(proto::EXIT, proto::encode_exit(&e).as_bytes()),
                        None => {
                            c.state = ConnState::Stream {
                                target: k,
                                stdin: words.get(2) == Some(&"1"),
                            }
                        }
                    }
                }
                Err(e) => self.conns[i].fail(b'x', &e),
            },
            "resize" => {
                let r = self.target(words.get(1).copied()).and_then(|k| {
                    let w = words.get(2).and_then(|s| s.parse().ok()).unwrap_or(80);
                    let h = words.get(3).and_then(|s| s.parse().ok()).unwrap_or(24);
                    self.resize(k, w, h)
                });
                match r {
                    Ok(()) => self.conns[i].ok(""),
                    Err(e) => self.conns[i].fail(b'x', &e),
                }
            }
            "exec" => {
                if let Err(e) = self.exec(i, &words, body) {
                    self.conns[i].fail(b'r', &e);
                }
            }
            "delete" => return self.delete(i),
            other => {
                let msg = format!("unknown request {other:?}");
                self.conns[i].fail(b'x', &msg);
            }
        }
        false
    }

    /// `exec ID TTY STDIN DETACH WIDTH HEIGHT` + the process JSON.
    fn exec(&mut self, i: usize, words: &[&str], body: &[u8]) -> Result<(), String> {
        let name = words.get(1).copied().unwrap_or("");
        if !proto::valid_exec_id(name) {
            return Err(format!(
                "invalid exec id {name:?}: use letters, digits, '_', '-', '.'"
            ));
        }
        if self
            .procs
            .iter()
            .any(|p| p.exec_id.as_deref() == Some(name))
        {
            return Err(format!("an exec with id {name:?} already exists"));
        }
        if self.procs[0].exit.is_some() {
            return Err("cannot exec in a stopped container".into());
        }
        let flag = |n: usize| words.get(n) == Some(&"1");
        let (tty, stdin, detach) = (flag(2), flag(3), flag(4));
        let size: Option<(u16, u16)> = match (
            words.get(5).and_then(|s| s.parse().ok()),
            words.get(6).and_then(|s| s.parse().ok()),
        ) {
            (Some(w), Some(h)) if w > 0 && h > 0 => Some((w, h)),
            _ => None,
        };
        let process_file = format!("exec-{name}.json");
        let pid_file = format!("exec-{name}.pid");
        self.write_file(&process_file, body)?;
        let mut proc = Proc::new(Some(name.to_string()));
        let mut stdio = Stdio3::for_process();
        let console = if tty {
            Some(bind_in(&self.dir, CONSOLE_SOCKET)?)
        } else {
            None
        };
        if !tty && !detach {
            let (r, w) = pipe()?;
            set_nonblocking(&r);
            proc.out = Some(r);
            stdio.stdout = Some(w);
            let (r, w) = pipe()?;
            set_nonblocking(&r);
            proc.err = Some(r);
            stdio.stderr = Some(w);
            if stdin {
                let (r, w) = pipe()?;
                set_nonblocking(&w);
                proc.stdin = Some(w);
                stdio.stdin = Some(r);
            }
        }
        let id = self.cfg.id.clone();
        let mut args = vec![
            "exec",
            "--process",
            &process_file,
            "--detach",
            "--pid-file",
            &pid_file,
        ];
        if tty {
            args.extend(["--console-socket", CONSOLE_SOCKET]);
        }
        args.push(&id);
        let result = self.rt.run(&args, stdio).and_then(|_| {
            let pid: i32 = self
                .read_file(&pid_file)
                .and_then(|s| s.trim().parse().ok())
                .ok_or("the runtime did not write the exec's pid file")?;
            proc.pid = pid;
            if let Some(l) = &console {
                let master = recv_master(l)?;
                set_nonblocking(&master);
                proc.out = Some(dup(&master)?);
                if stdin && !detach {
                    proc.stdin = Some(dup(&master)?);
                }
                proc.pty = Some(master);
            }
            Ok(())
        });
        if console.is_some() {
            self.remove_files(&[CONSOLE_SOCKET]);
        }
        if let Err(e) = result {
            self.remove_files(&[&process_file, &pid_file]);
            return Err(e);
        }
        self.procs.push(proc);
        let k = self.procs.len() - 1;
        if let Some((w, h)) = size {
            let _ = self.resize(k, w, h);
        }
        let pid = self.procs[k].pid;
        let c = &mut self.conns[i];
        c.ok(&pid.to_string());
        if !detach {
            c.state = ConnState::Stream { target: k, stdin };
        }
        // It may have exited already; its SIGCHLD is queued and handled by the loop.
        Ok(())
    }

    /// Kill what still runs, delete the container in the runtime, answer and exit.
    fn delete(&mut self, i: usize) -> bool {
        let id = self.cfg.id.clone();
        if self.procs[0].exit.is_none() {
            let _ = self
                .rt
                .run(&["kill", "--all", &id, "KILL"], Stdio3::default());
            if self.status == Status::Paused {
                let _ = self.rt.run(&["resume", &id], Stdio3::default());
            }
            let _ = self.rt.run(&["kill", &id, "KILL"], Stdio3::default());
            let pid = self.procs[0].pid;
            if let Some(p) = Pid::from_raw(pid) {
                if let Ok(Some((_, st))) = rustix::process::waitpid(Some(p), WaitOptions::empty()) {
                    self.exited(pid, st);
                }
            }
            self.reap(true);
        }
        self.predelete_wanted = false;
        if !matches!(self.predelete.take(), Some(Ok(()))) {
            // In this process with the built-in runtime, as the early delete is (the shim ends
            // next); a runtime binary is run.
            let r = match self.rt.delete_early() {
                Some(r) => r,
                None => self
                    .rt
                    .run(&["delete", "--force", &id], Stdio3::default())
                    .map(drop),
            };
            if let Err(e) = r {
                self.conns[i].fail(b'r', &e);
                return false;
            }
        }
        let exit = self.procs[0].exit.unwrap_or(ExitInfo {
            code: 137,
            signal: Some(libc::SIGKILL),
            finished_at_unix_nanos: now_nanos(),
            oom_killed: false,
        });
        // Gone from the file system before the answer: whoever sees the answer sees no socket.
        self.remove_files(&[SOCKET, PID_FILE]);
        self.conns[i].ok(&proto::encode_exit(&exit));
        self.conns[i].state = ConnState::Closing;
        true
    }

    /// Answer whoever still waits, flush (briefly blocking), remove our files.
    fn shutdown(&mut self) {
        let text = self.procs[0]
            .exit
            .as_ref()
            .map(proto::encode_exit)
            .unwrap_or_default();
        for c in &mut self.conns {
            match c.state {
                ConnState::Stream { .. } => c.send(proto::EXIT, text.as_bytes()),
                ConnState::Wait { .. } => c.ok(&text),
                _ => {}
            }
            c.state = ConnState::Closing;
            if !c.dead && !c.outbuf.is_empty() {
                let _ = c.sock.set_nonblocking(false);
                let _ = c
                    .sock
                    .set_write_timeout(Some(std::time::Duration::from_secs(1)));
                let _ = c.sock.write_all(&c.outbuf);
            }
        }
        if let Some(log) = &mut self.log {
            log.flush_partial();
        }
        self.remove_files(&[SOCKET, PID_FILE]);
        self.reap(false);
    }
}

/// Unmapping what the shim touched of its own executable when it goes idle.
///
/// The kernel maps file pages around each page fault (fault-around, 64 KiB), so a serve loop
/// that touches a few dozen scattered functions ends up with well over a megabyte of the binary
/// mapped. Those pages are clean and stay in the page cache; dropping our mappings of them once
/// the loop has been idle for a quarter of a second (MADV_DONTNEED) costs a few minor faults at the next
/// wake-up and keeps the idle resident set to what the loop really needs.
struct Trim {
    ranges: Vec<(usize, usize)>,
}

impl Trim {
    /// The read-only mappings of our executable that hold no private (modified) pages: text and
    /// read-only data, not RELRO (relocated at start-up) nor data.
    fn new() -> Trim {
        let exe_ino = std::fs::metadata("/proc/self/exe")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let mut ranges = Vec::new();
        let mut current: Option<(usize, usize)> = None;
        for line in smaps.lines() {
            let mut w = line.split_ascii_whitespace();
            let first = w.next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                current = None;
                let perms = w.next().unwrap_or("");
                let inode: u64 = w.nth(2).and_then(|i| i.parse().ok()).unwrap_or(0);
                if inode == exe_ino
                    && exe_ino != 0
                    && perms.starts_with('r')
                    && !perms.contains('w')
                    && perms.ends_with('p')
                {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        current = Some((a, b));
                    }
                }
            } else if first == "Anonymous:" {
                if let Some(r) = current.take() {
                    if w.next() == Some("0") {
                        ranges.push(r);
                    }
                }
            }
        }
        Trim { ranges }
    }

    fn run(&self) {
        for &(start, end) in &self.ranges {
            // SAFETY: the range is a private, read-only mapping of our own executable with no
            // modified pages (checked in `new`): MADV_DONTNEED only drops our page-table
            // entries, and any later access faults the same bytes back in from the file.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, String> {
    rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| format!("duplicate the terminal: {e}"))
}

/// Accept the runtime's connection on the console socket and take the pty master from it. The
/// runtime has exited by now, so its connection waits in the backlog.
fn recv_master(l: &UnixListener) -> Result<OwnedFd, String> {
    let (sock, _) = l
        .accept()
        .map_err(|e| format!("the runtime did not send the terminal: {e}"))?;
    let _ = sock.set_nonblocking(false);
    let fd: BorrowedFd<'_> = sock.as_fd();
    berth_runtime::console::recv_fd(fd).map_err(|e| berth_runtime::error::chain(&e))
}
