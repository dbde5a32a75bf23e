//! Filters loaded for real. Each test forks a child that sets `no_new_privs`, loads a compiled
//! program with the raw syscall and makes syscalls; the results come back through a pipe and
//! the exit status. Nothing needs privileges.
//!
//! Fork safety: the test harness is multi-threaded, so after `fork` the child only makes raw
//! syscalls on stack data: the program is prepared (allocated) before the fork, results are
//! written with `write(2)` and the child leaves with `_exit(2)`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use berth_seccomp::{Error, Program, compile, features};
use oci_spec::runtime::LinuxSeccomp;
use serde_json::{Value, json};

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug)]
struct Outcome {
    exit: Exit,
    results: Vec<i64>,
}

/// Exit code of a child whose load failed; its one result is the errno.
const LOAD_FAILED: i32 = 3;

fn program(v: Value) -> Program {
    let profile: LinuxSeccomp = serde_json::from_value(v).expect("test profile parses");
    compile(&profile).expect("test profile compiles")
}

fn errno() -> i64 {
    i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// A raw syscall: the result, or minus the errno.
#[allow(clippy::useless_conversion)] // c_long is i32 on 32-bit targets.
fn sys(nr: libc::c_long, a: [libc::c_long; 6]) -> i64 {
    // SAFETY: the tests only pass integers and pointers to live stack buffers, with lengths
    // matching those buffers.
    let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if rc == -1 { -errno() } else { i64::from(rc) }
}

fn ptr<T>(p: *const T) -> libc::c_long {
    p as libc::c_long
}

/// Write one result to the pipe (async-signal-safe).
fn put(fd: RawFd, v: i64) {
    let bytes = v.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live stack array.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and runs no atexit handlers, which is what a forked child of
    // a multi-threaded process needs.
    unsafe { libc::_exit(code) }
}

/// How the child prepares before loading.
#[derive(Clone, Copy)]
struct Setup {
    no_new_privs: bool,
    drop_caps: bool,
}

const NNP: Setup = Setup {
    no_new_privs: true,
    drop_caps: false,
};

/// Fork; in the child prepare per `setup`, load `prog`, run `body` and report its results.
fn in_child<const N: usize>(
    prog: &Program,
    setup: Setup,
    body: impl FnOnce(Option<&OwnedFd>) -> [i64; N],
) -> Outcome {
    spawn(prog, setup, body).finish()
}

/// A forked child still running.
struct Running {
    pid: libc::pid_t,
    results: OwnedFd,
}

/// [`in_child`] without waiting for the child.
fn spawn<const N: usize>(
    prog: &Program,
    setup: Setup,
    body: impl FnOnce(Option<&OwnedFd>) -> [i64; N],
) -> Running {
    let prepared = prog.prepare().expect("program is well formed");
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array. Non-blocking: the child writes a few
    // bytes into an empty pipe, and the parent reads only after the child has exited.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 just created both descriptors; each is owned once.
    let rd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let wr = unsafe { OwnedFd::from_raw_fd(fds[1]) };

    // SAFETY: the child below only makes raw syscalls on stack data and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let out = wr.as_raw_fd();
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads one rlimit; no core files from the SIGSYS tests.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        // SAFETY: PR_SET_DUMPABLE takes integers; a non-dumpable process is not core-dumped
        // even when core_pattern is a pipe (which ignores RLIMIT_CORE).
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        if setup.drop_caps {
            let header = libc_cap_header();
            let data = [CapData::default(); 2];
            // SAFETY: capset reads the version-3 header and two data structs from the stack.
            let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
            if rc != 0 {
                exit_now(5);
            }
        }
        if setup.no_new_privs {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            if rc != 0 {
                exit_now(6);
            }
        }
        let listener = match prepared.load() {
            Ok(l) => l,
            Err(Error::Load { errno, .. }) => {
                put(out, i64::from(errno));
                exit_now(LOAD_FAILED);
            }
            Err(_) => exit_now(4),
        };
        for v in body(listener.as_ref()) {
            put(out, v);
        }
        exit_now(0);
    }
    Running { pid, results: rd }
}

impl Running {
    /// Wait for the child and collect what it reported.
    fn finish(self) -> Outcome {
        let exit = wait(self.pid, Duration::from_secs(30));
        let mut results = Vec::new();
        loop {
            let mut bytes = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live stack array.
            let n = unsafe { libc::read(self.results.as_raw_fd(), bytes.as_mut_ptr().cast(), 8) };
            if n != 8 {
                break;
            }
            results.push(i64::from_ne_bytes(bytes));
        }
        Outcome { exit, results }
    }
}

/// `struct __user_cap_header_struct` for `_LINUX_CAPABILITY_VERSION_3`, pid 0 (self).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

fn libc_cap_header() -> CapHeader {
    CapHeader {
        version: 0x2008_0522,
        pid: 0,
    }
}

/// `struct __user_cap_data_struct`, all sets empty.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Wait for `pid`, killing it after `limit`.
fn wait(pid: libc::pid_t, limit: Duration) -> Exit {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a live integer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if r == pid {
            return if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                Exit::Code(libc::WEXITSTATUS(status))
            };
        }
        if Instant::now() > deadline {
            // SAFETY: pid is our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: reaps that child; the status pointer may be null.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            panic!("child {pid} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn neg(e: i32) -> i64 {
    -i64::from(e)
}

#[test]
fn denied_syscalls_return_the_configured_errno() {
    let p = program(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42},
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
        ],
    }));
    let path = c"/nonexistent-berth-seccomp-test/dir";
    let out = in_child(&p, NNP, |_| {
        let mut buf = [0u8; 256];
        [
            sys(
                libc::SYS_mkdirat,
                [libc::AT_FDCWD.into(), ptr(path.as_ptr()), 0o755, 0, 0, 0],
            ),
            sys(libc::SYS_getcwd, [ptr(buf.as_mut_ptr()), 256, 0, 0, 0, 0]),
            sys(libc::SYS_getpid, [0; 6]),
        ]
    });
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert_eq!(out.results[0], -42, "mkdirat");
    assert_eq!(out.results[1], neg(libc::EPERM), "getcwd");
    assert!(out.results[2] > 0, "getpid still works: {out:?}");
}

#[test]
fn arg_conditions_filter_only_matching_values() {
    let p = program(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 55,
             "args": [{"index": 0, "value": 0xffff_ffff_u64, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
             "args": [{"index": 0, "value": libc::AF_INET6, "op": "SCMP_CMP_EQ"}]},
            // Two conditions on one argument: either matches.
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
             "args": [{"index": 0, "value": libc::PRIO_PGRP, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": libc::PRIO_USER, "op": "SCMP_CMP_EQ"}]},
            {"names": ["eventfd2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 1, "value": libc::EFD_NONBLOCK, "valueTwo": libc::EFD_NONBLOCK,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
        ],
    }));
    let out = in_child(&p, NNP, |_| {
        let unix = sys(
            libc::SYS_socket,
            [libc::AF_UNIX.into(), libc::SOCK_STREAM.into(), 0, 0, 0, 0],
        );
        let efd = sys(
            libc::SYS_eventfd2,
            [0, libc::EFD_CLOEXEC.into(), 0, 0, 0, 0],
        );
        [
            sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            sys(
                libc::SYS_socket,
                [libc::AF_INET6.into(), libc::SOCK_DGRAM.into(), 0, 0, 0, 0],
            ),
            unix,
            sys(
                libc::SYS_getpriority,
                [libc::PRIO_PGRP.into(), 0, 0, 0, 0, 0],
            ),
            sys(
                libc::SYS_getpriority,
                [libc::PRIO_USER.into(), 0, 0, 0, 0, 0],
            ),
            sys(
                libc::SYS_getpriority,
                [libc::PRIO_PROCESS.into(), 0, 0, 0, 0, 0],
            ),
            sys(
                libc::SYS_eventfd2,
                [0, libc::EFD_NONBLOCK.into(), 0, 0, 0, 0],
            ),
            efd,
        ]
    });
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    let r = &out.results;
    assert_eq!(r[0], -55, "personality(0xffffffff)");
    assert_eq!(r[1], -77, "socket(AF_INET6)");
    assert!(r[2] >= 0, "socket(AF_UNIX) works: {r:?}");
    assert_eq!(r[3], -33, "getpriority(PRIO_PGRP)");
    assert_eq!(r[4], -33, "getpriority(PRIO_USER)");
    assert!(r[5] >= 0, "getpriority(PRIO_PROCESS) works: {r:?}");
    assert_eq!(r[6], -22, "eventfd2(EFD_NONBLOCK)");
    assert!(r[7] >= 0, "eventfd2(EFD_CLOEXEC) works: {r:?}");
}

#[test]
fn kill_process_kills_with_sigsys() {
    let p = program(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}],
    }));
    let out = in_child(&p, NNP, |_| [sys(libc::SYS_getppid, [0; 6])]);
    assert_eq!(out.exit, Exit::Signal(libc::SIGSYS), "{out:?}");
    assert!(out.results.is_empty());
}

#[test]
fn kill_and_trap_end_a_single_threaded_process_with_sigsys() {
    for action in ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"] {
        let p = program(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": action}],
        }));
        let out = in_child(&p, NNP, |_| [sys(libc::SYS_getppid, [0; 6])]);
        assert_eq!(out.exit, Exit::Signal(libc::SIGSYS), "{action}: {out:?}");
    }
}

#[test]
fn trace_without_a_tracer_fails_with_enosys() {
    let p = program(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_TRACE"}],
    }));
    let out = in_child(&p, NNP, |_| [sys(libc::SYS_getppid, [0; 6])]);
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert_eq!(out.results, [neg(libc::ENOSYS)]);
}

#[test]
fn deny_by_default_answers_new_syscalls_with_enosys() {
    // Largest listed syscall: exit_group. getcwd is below it, getrandom and clone3 above.
    let p = program(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["write", "exit", "exit_group", "getpid"], "action": "SCMP_ACT_ALLOW"}],
    }));
    let out = in_child(&p, NNP, |_| {
        let mut buf = [0u8; 64];
        [
            sys(libc::SYS_getpid, [0; 6]),
            sys(libc::SYS_getcwd, [ptr(buf.as_mut_ptr()), 64, 0, 0, 0, 0]),
            // Without a filter: 0 (nothing to read).
            sys(libc::SYS_getrandom, [ptr(buf.as_mut_ptr()), 0, 0, 0, 0, 0]),
            // Without a filter: EINVAL (no clone_args).
            sys(libc::SYS_clone3, [0; 6]),
        ]
    });
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    let r = &out.results;
    assert!(r[0] > 0, "getpid allowed: {r:?}");
    assert_eq!(r[1], neg(libc::EPERM), "getcwd gets the default errno");
    assert_eq!(
        r[2],
        neg(libc::ENOSYS),
        "getrandom is newer than the profile"
    );
    assert_eq!(r[3], neg(libc::ENOSYS), "clone3");
}

#[test]
fn docker_like_profile_loads() {
    let p = program(serde_json::from_str(include_str!("fixtures/docker-like.json")).unwrap());
    let path = c"/nonexistent-berth-seccomp-test/dir";
    let out = in_child(&p, NNP, |_| {
        let mut buf = [0u8; 64];
        [
            sys(libc::SYS_getpid, [0; 6]),
            sys(libc::SYS_getrandom, [ptr(buf.as_mut_ptr()), 8, 0, 0, 0, 0]),
            sys(
                libc::SYS_mkdirat,
                [libc::AT_FDCWD.into(), ptr(path.as_ptr()), 0o755, 0, 0, 0],
            ),
            sys(libc::SYS_kcmp, [0; 6]),
            sys(libc::SYS_clone3, [0; 6]),
            sys(
                libc::SYS_socket,
                [libc::AF_VSOCK.into(), libc::SOCK_STREAM.into(), 0, 0, 0, 0],
            ),
            sys(
                libc::SYS_socket,
                [libc::AF_UNIX.into(), libc::SOCK_STREAM.into(), 0, 0, 0, 0],
            ),
            sys(
                libc::SYS_unshare,
                [libc::CLONE_NEWUTS.into(), 0, 0, 0, 0, 0],
            ),
        ]
    });
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    let r = &out.results;
    assert!(r[0] > 0, "getpid: {r:?}");
    assert_eq!(r[1], 8, "getrandom");
    assert_eq!(r[2], neg(libc::ENOENT), "mkdirat runs and fails on its own");
    assert_eq!(r[3], neg(libc::EPERM), "kcmp is denied");
    assert_eq!(r[4], neg(libc::ENOSYS), "clone3 gets ENOSYS");
    assert_eq!(
        r[5],
        neg(libc::EAFNOSUPPORT),
        "socket(AF_VSOCK) gets its errnoRet"
    );
    assert!(r[6] >= 0, "socket(AF_UNIX): {r:?}");
    assert_eq!(r[7], neg(libc::EPERM), "unshare is denied");
}

#[test]
fn flags_are_accepted_by_the_kernel() {
    let p = program(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9}],
    }));
    let out = in_child(&p, NNP, |_| [sys(libc::SYS_getppid, [0; 6])]);
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert_eq!(out.results, [-9]);
}

#[test]
fn loading_without_no_new_privs_or_cap_sys_admin_fails_with_eacces() {
    let p = program(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}],
    }));
    let setup = Setup {
        no_new_privs: false,
        drop_caps: true,
    };
    let out = in_child(&p, setup, |_| [0]);
    assert_eq!(out.exit, Exit::Code(LOAD_FAILED), "{out:?}");
    assert_eq!(out.results, [i64::from(libc::EACCES)]);
    let message = Error::Load {
        errno: libc::EACCES,
        flags: p.flags,
    }
    .to_string();
    assert!(
        message.contains("set process.noNewPrivileges or keep CAP_SYS_ADMIN"),
        "{message}"
    );
}

#[test]
fn filters_stack() {
    let first = program(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 11}],
    }));
    let second = program(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 12}],
    }))
    .prepare()
    .unwrap();
    let out = in_child(&first, NNP, |_| {
        let loaded = i64::from(second.load().is_ok());
        [
            loaded,
            sys(libc::SYS_getppid, [0; 6]),
            sys(libc::SYS_getuid, [0; 6]),
        ]
    });
    assert_eq!(out.results, [1, -11, -12], "{out:?}");
}

// --- SCMP_ACT_NOTIFY: the child hands the listener over a socketpair, the parent answers. ---

/// Send `fd` over the unix socket `sock` with SCM_RIGHTS (async-signal-safe).
fn send_fd(sock: RawFd, fd: RawFd) -> i64 {
    let mut space = [0u64; 8];
    let mut byte = [b'x'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero msghdr is valid: null pointers and zero lengths.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    let space_len = unsafe { libc::CMSG_SPACE(4) };
    msg.msg_controllen = usize::try_from(space_len).unwrap_or(0);
    // SAFETY: CMSG_LEN only computes a size.
    let cmsg_len = unsafe { libc::CMSG_LEN(4) };
    // SAFETY: msg_control points at `space`, which is msg_controllen bytes or more.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return -1;
    }
    let header = libc::cmsghdr {
        cmsg_len: usize::try_from(cmsg_len).unwrap_or(0),
        cmsg_level: libc::SOL_SOCKET,
        cmsg_type: libc::SCM_RIGHTS,
    };
    // SAFETY: cmsg points at the start of `space`, which is 8-aligned and large enough.
    unsafe { cmsg.write(header) };
    // SAFETY: cmsg is a valid header inside `space`.
    let data = unsafe { libc::CMSG_DATA(cmsg) };
    // SAFETY: CMSG_LEN(4) bytes fit in `space`, so the data area has room for one int.
    unsafe { data.cast::<RawFd>().write_unaligned(fd) };
    // SAFETY: msg and every buffer it points to are live for the call.
    let rc = unsafe { libc::sendmsg(sock, &msg, 0) };
    if rc < 0 { -errno() } else { 0 }
}

/// Receive one fd sent with [`send_fd`], waiting at most `limit`.
fn recv_fd(sock: RawFd, limit: Duration) -> OwnedFd {
    assert!(
        poll_in(sock, limit),
        "no listener fd arrived within {limit:?}"
    );
    let mut space = [0u64; 8];
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero msghdr is valid: null pointers and zero lengths.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space);
    // SAFETY: msg and every buffer it points to are live for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert_eq!(n, 1, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: recvmsg filled msg_control/msg_controllen.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    assert!(!cmsg.is_null(), "no control message");
    // SAFETY: cmsg points at a header the kernel wrote inside `space`.
    let header = unsafe { cmsg.read() };
    assert_eq!(
        (header.cmsg_level, header.cmsg_type),
        (libc::SOL_SOCKET, libc::SCM_RIGHTS)
    );
    // SAFETY: cmsg is a valid header inside `space`.
    let data = unsafe { libc::CMSG_DATA(cmsg) };
    // SAFETY: an SCM_RIGHTS message carries at least one int after the header.
    let fd = unsafe { data.cast::<RawFd>().read_unaligned() };
    // SAFETY: the kernel installed this descriptor for us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn poll_in(fd: RawFd, limit: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: polls one live pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n == 1
}

/// Receive one notification and answer it with `(val, error)`; returns the notified syscall.
fn answer(listener: &OwnedFd, child: libc::pid_t, val: i64, error: i32) -> i32 {
    assert!(
        poll_in(listener.as_raw_fd(), Duration::from_secs(10)),
        "no notification arrived"
    );
    // SAFETY: the kernel wants a zeroed seccomp_notif to fill.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: SECCOMP_IOCTL_NOTIF_RECV writes one seccomp_notif to the pointer.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req,
        )
    };
    assert_eq!(rc, 0, "NOTIF_RECV: {}", std::io::Error::last_os_error());
    assert_eq!(
        i64::from(req.pid),
        i64::from(child),
        "notification from the child"
    );
    let mut resp = libc::seccomp_notif_resp {
        id: req.id,
        val,
        error,
        flags: 0,
    };
    // SAFETY: SECCOMP_IOCTL_NOTIF_SEND reads one seccomp_notif_resp from the pointer.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp,
        )
    };
    assert_eq!(rc, 0, "NOTIF_SEND: {}", std::io::Error::last_os_error());
    req.data.nr
}

#[test]
fn notify_hands_out_a_listener_that_answers_syscalls() {
    let waitkill = "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV";
    let flags: Vec<&str> = if features().supported_flags.iter().any(|f| f == waitkill) {
        vec![waitkill]
    } else {
        vec![]
    };
    let p = program(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/berth-test-agent.sock",
        "flags": flags,
        "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
    }));
    assert!(p.needs_listener());

    let mut pair = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: socketpair just created both descriptors; each is owned once.
    let ours = unsafe { OwnedFd::from_raw_fd(pair[0]) };
    // SAFETY: as above.
    let theirs = unsafe { OwnedFd::from_raw_fd(pair[1]) };
    let child_sock = theirs.as_raw_fd();
    let path = c"/nonexistent-berth-seccomp-test/dir";

    let child = spawn(&p, NNP, |listener| {
        let Some(listener) = listener else {
            return [-1000, 0, 0];
        };
        let sent = send_fd(child_sock, listener.as_raw_fd());
        let mkdir = [libc::AT_FDCWD.into(), ptr(path.as_ptr()), 0o755, 0, 0, 0];
        [
            sent,
            sys(libc::SYS_mkdirat, mkdir),
            sys(libc::SYS_mkdirat, mkdir),
        ]
    });
    drop(theirs);
    // Act as the seccomp agent.
    let listener = recv_fd(ours.as_raw_fd(), Duration::from_secs(10));
    let first = answer(&listener, child.pid, 4242, 0);
    let second = answer(&listener, child.pid, 0, -libc::EOWNERDEAD);
    let out = child.finish();
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    let mkdirat = i32::try_from(libc::SYS_mkdirat).unwrap();
    assert_eq!((first, second), (mkdirat, mkdirat));
    assert_eq!(out.results[0], 0, "listener sent");
    assert_eq!(
        out.results[1], 4242,
        "first mkdirat returns the agent's value"
    );
    assert_eq!(
        out.results[2],
        neg(libc::EOWNERDEAD),
        "second mkdirat returns the agent's error"
    );
}
