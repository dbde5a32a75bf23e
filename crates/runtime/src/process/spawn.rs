//! Starting a process that will become (or join) a container: the parent side of the fork chain.
//!
//! ```text
//!  runtime ──clone(CLONE_NEW*)──▶ trampoline ──execveat(sealed self)──▶ `berth-runtime init`
//!     │                              (raw syscalls only)                  (reads InitConfig)
//!     └─(joining pid/user/time ns)─▶ helper ──setns…, clone(CLONE_PARENT)──▶ trampoline …
//! ```
//!
//! Invariants:
//! - Between `clone` and `execveat` the child runs only raw system calls on buffers prepared
//!   before the clone: no allocation, no locks, no panics. That makes spawning safe even from a
//!   multi-threaded caller, and keeps the window where the child shares our memory tiny.
//! - The child re-executes berth-runtime from [`SealedExe`], a read-only detached mount of our
//!   own binary (or a sealed memfd copy), so no process in the container ever has the host's
//!   writable binary as its `/proc/self/exe` (CVE-2019-5736). The one exception is an
//!   *inline* init ([`Request::inline_init`]): only for a single-threaded caller (so the child
//!   may allocate) and a child that is the first process of a new pid namespace (so no other
//!   process of the container exists to open its `/proc/PID/exe` before it execs the user's
//!   program); it closes every fd it was not given and becomes the init without an exec.
//! - The user namespace is created in the same `clone` as the others, so it owns them; its maps
//!   are written by the parent before the child executes anything.

use std::ffi::{CString, c_char};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use oci_spec::runtime::Spec;

use rustix::fs::{Mode, OFlags};

use super::channel::Channel;
use crate::error::{Context, Error, Result};
use crate::namespaces::{self, NsKind, Plan};

/// The environment variable that tells `berth-runtime` it is a container init, and on which fd
/// its setup channel is.
pub const INIT_ENV: &str = "_BERTH_INIT";

/// A read-only handle on our own executable for children to exec (see module doc).
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
}

impl SealedExe {
    /// A read-only, detached bind mount of `/proc/self/exe`; a sealed memfd copy where the new
    /// mount API is unavailable.
    pub fn open() -> Result<SealedExe> {
        match detached_readonly_self() {
            Ok(fd) => Ok(SealedExe { fd }),
            Err(e) => {
                tracing::debug!(
                    "read-only bind of own binary failed ({e}); using a sealed memfd copy"
                );
                memfd_copy_self().map(|fd| SealedExe { fd })
            }
        }
    }

    /// The fd to `execveat`.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn detached_readonly_self() -> std::io::Result<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let fd = rustix::mount::open_tree(
        rustix::fs::CWD,
        "/proc/self/exe",
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    use crate::rootfs::options::attr;
    crate::rootfs::set_attr(&fd, attr::RDONLY | attr::NOSUID | attr::NODEV, 0, false)?;
    Ok(fd)
}

fn memfd_copy_self() -> Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let src = rustix::fs::open(
        "/proc/self/exe",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /proc/self/exe")?;
    let size = rustix::fs::fstat(&src)
        .ctx(|| "stat /proc/self/exe")?
        .st_size;
    let mfd = rustix::fs::memfd_create(
        "berth-runtime",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .ctx(|| "create a memfd for a sealed copy of berth-runtime")?;
    let mut left = u64::try_from(size).unwrap_or(0);
    while left > 0 {
        let n = rustix::fs::sendfile(
            &mfd,
            &src,
            None,
            usize::try_from(left).unwrap_or(usize::MAX),
        )
        .ctx(|| "copy berth-runtime into a memfd")?;
        if n == 0 {
            break;
        }
        left = left.saturating_sub(n as u64);
    }
    rustix::fs::fcntl_add_seals(
        &mfd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )
    .ctx(|| "seal the memfd copy of berth-runtime")?;
    Ok(mfd)
}

/// What to start.
#[derive(Debug, Default)]
pub struct Request {
    /// Namespaces to create and join.
    pub plan: Plan,
    /// uid_map / gid_map contents for a new user namespace.
    pub id_maps: Option<(String, String)>,
    /// timens_offsets content for a new time namespace.
    pub time_offsets: Option<String>,
    /// A pid namespace to enter before forking (for `exec`).
    pub pid_ns: Option<OwnedFd>,
    /// Fds the child must inherit across its exec (close-on-exec is cleared in the child).
    pub keep_fds: Vec<RawFd>,
    /// A cgroup2 directory to start the child in (`clone3` with `CLONE_INTO_CGROUP`), so it
    /// never has to be migrated there (the setup helper, when one is needed, clones it so).
    pub cgroup2: Option<RawFd>,
    /// Let the child become the init without re-executing our binary, when that is safe (see
    /// `inline_is_safe` in this module). Only for callers that know they are single-threaded.
    pub inline_init: bool,
    /// The container's spec as the caller parsed it: an inline init (a copy of the caller's
    /// memory) uses it instead of parsing `config.json` again. It must stay alive and unchanged
    /// until `spawn` returns.
    pub inline_spec: Option<NonNull<Spec>>,
}

/// A started child: its host pid and our end of its setup channel.
#[derive(Debug)]
pub struct Spawned {
    /// Host pid.
    pub pid: i32,
    /// Setup channel.
    pub channel: Channel,
    /// The child was born in `Request::cgroup2`.
    pub in_cgroup2: bool,
    /// The executable the child re-executed. Closing it dissolves its detached mount, which
    /// waits for an RCU grace period: drop it while the child is busy, not before it is
    /// configured. `None` when the child runs the init inline (no re-exec).
    pub exe: Option<SealedExe>,
}

/// Everything the child side needs, prepared before `clone` (see module invariants).
struct Prepared {
    /// Run the init in the cloned child itself instead of re-executing `exe_fd`.
    inline: bool,
    inline_spec: Option<NonNull<Spec>>,
    exe_fd: RawFd,
    argv: [*const c_char; 3],
    envp: [*const c_char; 2],
    keep: Vec<RawFd>,
    sync_fd: RawFd,
    wait_for_maps: bool,
    joins: Vec<(RawFd, libc::c_int)>,
    new_time: Option<(CString, Vec<u8>)>,
    report_fd: RawFd,
    /// For the setup helper: the cgroup2 directory to clone the init into, or -1.
    cgroup2: RawFd,
}

/// Start a child per `req`.
pub fn spawn(req: Request) -> Result<Spawned> {
    let inline = req.inline_init && inline_is_safe(&req);
    let (parent, child) = Channel::pair()?;
    let child_fd = child.fd().as_raw_fd();

    let arg0 = c"berth-runtime";
    let arg1 = c"init";
    let env = CString::new(format!("{INIT_ENV}={child_fd}"))
        .map_err(|_| Error::InvalidArgument("bad fd".into()))?;

    // Namespaces joined by path (all but mount, which the init joins itself after its exec).
    let mut join_fds: Vec<OwnedFd> = Vec::new();
    let mut joins = Vec::new();
    if let Some(fd) = &req.pid_ns {
        joins.push((fd.as_raw_fd(), libc::CLONE_NEWPID));
    }
    for (kind, path) in &req.plan.join {
        if *kind == NsKind::Mount {
            continue;
        }
        let fd = namespaces::open(path)?;
        let flag = i32::try_from(namespaces::clone_flag((*kind).into())).unwrap_or(0);
        joins.push((fd.as_raw_fd(), flag));
        join_fds.push(fd);
    }
    let new_time = if req
        .plan
        .creates(oci_spec::runtime::LinuxNamespaceType::Time)
    {
        Some((
            c"/proc/self/timens_offsets".to_owned(),
            req.time_offsets.clone().unwrap_or_default().into_bytes(),
        ))
    } else {
        None
    };
    let needs_helper = !joins.is_empty() || new_time.is_some();
    // The setup helper always re-executes (`inline_is_safe` rules it out anyway).
    let inline = inline && !needs_helper;
    let exe = if inline {
        None
    } else {
        Some(SealedExe::open()?)
    };
    let (report_r, report_w) = if needs_helper {
        let (r, w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ctx(|| "create a pipe")?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };

    let mut keep = req.keep_fds.clone();
    keep.push(child_fd);
    let prep = Prepared {
        inline,
        inline_spec: req.inline_spec,
        exe_fd: exe.as_ref().map_or(-1, SealedExe::fd),
        argv: [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()],
        envp: [env.as_ptr(), std::ptr::null()],
        keep,
        sync_fd: child_fd,
        wait_for_maps: req.id_maps.is_some(),
        joins,
        new_time,
        report_fd: report_w.as_ref().map_or(-1, |w| w.as_raw_fd()),
        cgroup2: req.cgroup2.filter(|_| needs_helper).unwrap_or(-1),
    };
    // Time and cgroup namespaces are never created by this clone: the helper unshares the time
    // namespace (so offsets can be set before anyone enters it) and the init unshares the cgroup
    // namespace once it has been moved into its cgroup.
    let flags = req.plan.new_flags
        & !(namespaces::clone_flag(oci_spec::runtime::LinuxNamespaceType::Time)
            | namespaces::clone_flag(oci_spec::runtime::LinuxNamespaceType::Cgroup));

    let mut in_cgroup2 = false;
    let pid = if needs_helper {
        // SAFETY: the child only runs `helper`, which uses raw syscalls on `prep` and never
        // returns (it exits), so it cannot touch state shared with the parent.
        let helper = unsafe { raw_clone(u64::from(libc::SIGCHLD.unsigned_abs())) }
            .ctx(|| "fork a setup helper")?;
        if helper == 0 {
            helper_main(&prep, flags);
        }
        drop(report_w);
        // The pid and whether it was born in its cgroup2 directory (8 bytes, one write), or a
        // negative errno (4 bytes).
        let mut buf = [0u8; 8];
        let n =
            rustix::io::read(report_r.as_ref().expect("helper pipe exists"), &mut buf).unwrap_or(0);
        let status = wait(helper);
        let v = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if n < 4 || v <= 0 {
            let errno = if n >= 4 { -v } else { 0 };
            return Err(Error::sys(
                format!("the setup helper could not start the container process (helper {status})"),
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        in_cgroup2 = n == 8 && buf[4] == 1;
        v
    } else {
        let into = req.cgroup2.and_then(|fd| {
            // SAFETY: as above; `trampoline` never returns.
            match unsafe { raw_clone3_into_cgroup(flags, fd, libc::SIGCHLD) } {
                Ok(0) => trampoline(&prep),
                Ok(pid) => Some(Ok(pid)),
                Err(e) if refused_into_cgroup(&e) => None,
                Err(e) => Some(Err(e)),
            }
        });
        match into {
            Some(r) => {
                in_cgroup2 = true;
                r.ctx(|| format!("clone the container process with namespace flags {flags:#x} into its cgroup"))?
            }
            None => {
                // SAFETY: as above; `trampoline` never returns.
                let pid = unsafe { raw_clone(flags | u64::from(libc::SIGCHLD.unsigned_abs())) }
                    .ctx(|| {
                        format!("clone the container process with namespace flags {flags:#x}")
                    })?;
                if pid == 0 {
                    trampoline(&prep);
                }
                pid
            }
        }
    };
    drop(child);
    drop(join_fds);

    let spawned = Spawned {
        pid,
        channel: parent,
        in_cgroup2,
        exe,
    };
    if let Some((uid_map, gid_map)) = &req.id_maps {
        if let Err(e) = write_maps(pid, uid_map, gid_map) {
            kill_and_reap(pid);
            return Err(e);
        }
        if let Err(e) = rustix::io::write(spawned.channel.fd(), b"U") {
            kill_and_reap(pid);
            return Err(Error::errno(
                "signal the container process that its id maps are written",
                e,
            ));
        }
    }
    Ok(spawned)
}

fn write_maps(pid: i32, uid_map: &str, gid_map: &str) -> Result<()> {
    for (file, content) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, content)
            .ctx(|| format!("write {path} ({})", content.trim().replace('\n', "; ")))?;
    }
    Ok(())
}

/// SIGKILL and reap a child we started.
pub fn kill_and_reap(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
    wait(pid);
}

/// Reap a child and describe how it ended.
pub fn wait(pid: i32) -> String {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return "invalid pid".into();
    };
    loop {
        match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => {
                return if let Some(c) = st.exit_status() {
                    format!("exited with status {c}")
                } else if let Some(s) = st.terminating_signal() {
                    format!("was killed by signal {s}")
                } else {
                    "ended".into()
                };
            }
            Err(rustix::io::Errno::INTR) => continue,
            _ => return "could not be waited for".into(),
        }
    }
}

/// `clone(2)` with fork semantics (no new stack): returns 0 in the child.
///
/// # Safety
/// In the child, only async-signal-safe operations may run until it execs or exits.
unsafe fn raw_clone(flags: u64) -> std::io::Result<i32> {
    // SAFETY: with a null stack pointer clone behaves like fork; the other arguments are unused
    // because no CLONE_*TID/SETTLS flags are passed. The caller upholds the child-side contract.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(i32::try_from(ret).unwrap_or(0))
    }
}

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Did `clone3` refuse `CLONE_INTO_CGROUP` itself (a kernel before 5.7, or a cgroup that cannot
/// take the process directly, the "no internal processes" rule)? Then a plain clone and a
/// migration do instead. Allocates nothing (the setup helper calls it between clone and exec).
fn refused_into_cgroup(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOSYS
                | libc::E2BIG
                | libc::EINVAL
                | libc::EOPNOTSUPP
                | libc::EBUSY
                | libc::EBADF
        )
    )
}

/// `clone3(2)` with fork semantics into the cgroup2 directory `cgroup_fd`: returns 0 in the
/// child. `exit_signal` must be 0 with `CLONE_PARENT` (the child then signals our parent, as
/// we would).
///
/// # Safety
/// As for [`raw_clone`].
unsafe fn raw_clone3_into_cgroup(
    flags: u64,
    cgroup_fd: RawFd,
    exit_signal: libc::c_int,
) -> std::io::Result<i32> {
    let mut args = CloneArgs {
        flags: flags | CLONE_INTO_CGROUP,
        exit_signal: u64::from(exit_signal.unsigned_abs()),
        cgroup: u64::try_from(cgroup_fd).unwrap_or_default(),
        ..CloneArgs::default()
    };
    // SAFETY: a zero stack makes clone3 behave like fork; `args` is a valid, fully initialised
    // clone_args of the size passed. The caller upholds the child-side contract.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::from_mut(&mut args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(i32::try_from(ret).unwrap_or(0))
    }
}

fn sys_exit(code: i32) -> ! {
    // SAFETY: _exit ends the process immediately without running parent-owned destructors or
    // atexit handlers, which is what a forked child must do.
    unsafe { libc::_exit(code) }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The helper: join namespaces, maybe unshare a time namespace, clone the trampoline as a
/// sibling (CLONE_PARENT, so the runtime can wait for it), report its pid, exit.
fn helper_main(p: &Prepared, flags: u64) -> ! {
    // Join in order; the user namespace comes last (namespaces::JOIN_ORDER).
    for &(fd, flag) in &p.joins {
        // SAFETY: setns on an fd the parent opened for this purpose; no memory is touched.
        if unsafe { libc::setns(fd, flag) } != 0 {
            report(p.report_fd, -errno());
            sys_exit(1);
        }
    }
    if let Some((path, offsets)) = &p.new_time {
        // SAFETY: unshare only changes this process's namespace for its future children.
        if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
            report(p.report_fd, -errno());
            sys_exit(1);
        }
        if !offsets.is_empty() {
            // SAFETY: `path` is a valid NUL-terminated string prepared before the clone.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            // SAFETY: writing a prepared buffer of the stated length to an fd we just opened.
            if fd < 0 || unsafe { libc::write(fd, offsets.as_ptr().cast(), offsets.len()) } < 0 {
                report(p.report_fd, -errno());
                sys_exit(1);
            }
        }
    }
    let flags = flags | u64::from(libc::CLONE_PARENT.unsigned_abs());
    // Into its cgroup2 directory when there is one (a migration by `cgroup.procs` later would
    // take the kernel's global threadgroup lock: see `container/create.rs`), else a plain clone,
    // also when the kernel or the cgroup refuses (as in `spawn`).
    let mut into = 0u8;
    let cloned = if p.cgroup2 >= 0 {
        // SAFETY: the grandchild runs only `trampoline` (same contract as ours).
        match unsafe { raw_clone3_into_cgroup(flags, p.cgroup2, 0) } {
            Err(e) if refused_into_cgroup(&e) => {
                // SAFETY: as below.
                unsafe { raw_clone(flags) }
            }
            r => {
                into = 1;
                r
            }
        }
    } else {
        // SAFETY: the grandchild runs only `trampoline` (same contract as ours).
        unsafe { raw_clone(flags) }
    };
    match cloned {
        Ok(0) => trampoline(p),
        Ok(pid) => {
            report_started(p.report_fd, pid, into);
            sys_exit(0)
        }
        Err(e) => {
            report(p.report_fd, -e.raw_os_error().unwrap_or(libc::EIO));
            sys_exit(1)
        }
    }
}

/// The helper's report of success: the pid, and 1 if it was born in its cgroup2 directory.
fn report_started(fd: RawFd, pid: i32, into_cgroup2: u8) {
    let p = pid.to_le_bytes();
    let b = [p[0], p[1], p[2], p[3], into_cgroup2, 0, 0, 0];
    // SAFETY: writing 8 bytes from a stack buffer to the report pipe (atomic: < PIPE_BUF).
    let _ = unsafe { libc::write(fd, b.as_ptr().cast(), 8) };
}

fn report(fd: RawFd, v: i32) {
    let b = v.to_le_bytes();
    // SAFETY: writing 4 bytes from a stack buffer to the report pipe.
    let _ = unsafe { libc::write(fd, b.as_ptr().cast(), 4) };
}

/// The child between clone and exec (see module invariants).
/// May the child run the init without re-executing our binary? Only when
/// - this process has a single thread: the child is then a consistent copy that may allocate
///   and take locks (with other threads, one could hold the allocator's lock at the clone);
/// - the child is the first process of a new pid namespace: until it execs the user's program
///   its `/proc/PID/exe` is our binary on the host, and no other process of the container
///   exists yet that could open it (the reason runc and we otherwise re-exec a sealed copy);
/// - no setup helper is involved (joined namespaces, a time namespace).
fn inline_is_safe(req: &Request) -> bool {
    // Namespaces joined by path (but the mount one, which the init joins itself) and a new
    // time namespace are the setup helper's work.
    let needs_helper = req.plan.join.iter().any(|(k, _)| *k != NsKind::Mount)
        || req
            .plan
            .creates(oci_spec::runtime::LinuxNamespaceType::Time);
    req.pid_ns.is_none()
        && !needs_helper
        && req.plan.creates(oci_spec::runtime::LinuxNamespaceType::Pid)
        && single_threaded()
}

/// Does this process have exactly one thread (`Threads:` in /proc/self/status)?
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .is_some_and(|n| n.trim() == "1")
    })
}

/// In an inline init: close every fd but 0-2, `sync` and `keep`. The child holds copies of
/// all its parent's fds, which an exec would have closed (they are close-on-exec); an init
/// waiting to be started must not keep, say, its shim's listening socket alive.
fn close_all_but(keep: &[RawFd], sync: RawFd) {
    let mut open: Vec<u32> = keep
        .iter()
        .chain(std::iter::once(&sync))
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd > 2)
        .collect();
    open.sort_unstable();
    let mut next = 3u32;
    for fd in open {
        if fd > next {
            // SAFETY: close_range only closes descriptors; the ones kept are outside the range.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0u32) };
        }
        next = next.max(fd + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0u32) };
}

fn trampoline(p: &Prepared) -> ! {
    // Die with the runtime until the init is ready (the init clears this before running user code).
    // (If the runtime is already gone, the init sees end-of-file on its setup channel and exits.)
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    for &fd in &p.keep {
        // SAFETY: clearing FD_CLOEXEC on an fd that stays open; no memory is touched.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    if p.wait_for_maps {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a stack buffer from the sync socket.
        if unsafe { libc::read(p.sync_fd, b.as_mut_ptr().cast(), 1) } != 1 {
            sys_exit(1);
        }
        // Become root of the new user namespace so the exec below keeps our capabilities there.
        // SAFETY: raw credential syscalls with integer arguments (no libc thread broadcast).
        if unsafe { libc::syscall(libc::SYS_setresgid, 0, 0, 0) } != 0 {
            sys_exit(errno());
        }
        // SAFETY: as above.
        if unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) } != 0 {
            sys_exit(errno());
        }
    }
    if p.inline {
        close_all_but(&p.keep, p.sync_fd);
        super::run_inline(p.sync_fd, p.inline_spec);
    }
    // SAFETY: argv and envp are NUL-terminated arrays of pointers to NUL-terminated strings that
    // live in this (copied) address space until the exec replaces it.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            p.exe_fd,
            c"".as_ptr(),
            p.argv.as_ptr(),
            p.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    sys_exit(errno())
}
