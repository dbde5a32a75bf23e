//! The default seccomp profile and `--security-opt seccomp=PATH` profiles.
//!
//! Both go through one [`Profile`] type: Docker's profile format, of which the OCI
//! `LinuxSeccomp` form is a subset (same field names; Docker adds `archMap`, the legacy
//! single `name`, and per-rule `includes`/`excludes` on capabilities, architectures and the
//! minimum kernel). [`Profile::resolve`] evaluates those conditions for the container's
//! capabilities, the host's architecture and kernel, and yields the OCI profile the runtime
//! compiles (`berth_seccomp::compile`).
//!
//! The default profile is an equivalent of moby's: deny with `EPERM` by default, allow a
//! list of ordinary syscalls, allow `personality` only for the harmless personas, `clone`
//! only without namespace flags and `clone3` fails with `ENOSYS` (so libcs fall back to the
//! filtered `clone`) unless the container has `CAP_SYS_ADMIN`, and add privileged syscall
//! groups for the capabilities that govern them.

use std::path::Path;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

use crate::Error;

/// A seccomp profile in Docker's format (which accepts the OCI form too).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<std::path::PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// Docker's legacy single-name form.
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    /// Go architecture names ("amd64", "arm64", ...), matched against the host's.
    #[serde(default)]
    arches: Vec<String>,
    /// "4.8": the rule applies from this kernel version on.
    #[serde(default)]
    min_kernel: Option<String>,
}

/// The host as rules see it.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// Go architecture name of the host ("amd64", "arm64", ...).
    pub goarch: &'static str,
    /// Kernel (major, minor).
    pub kernel: (u32, u32),
}

impl Host {
    pub(crate) fn current() -> Self {
        let goarch = if cfg!(target_arch = "x86_64") {
            "amd64"
        } else if cfg!(target_arch = "aarch64") {
            "arm64"
        } else if cfg!(target_arch = "x86") {
            "386"
        } else if cfg!(target_arch = "arm") {
            "arm"
        } else if cfg!(target_arch = "riscv64") {
            "riscv64"
        } else if cfg!(target_arch = "s390x") {
            "s390x"
        } else if cfg!(target_arch = "powerpc64") {
            "ppc64le"
        } else {
            "unknown"
        };
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        Host {
            goarch,
            kernel: parse_kernel(&release).unwrap_or((0, 0)),
        }
    }

    /// The seccomp architectures of the host's Go architecture name.
    fn seccomp_arch(&self) -> Option<Arch> {
        Some(match self.goarch {
            "amd64" => Arch::ScmpArchX86_64,
            "arm64" => Arch::ScmpArchAarch64,
            "386" => Arch::ScmpArchX86,
            "arm" => Arch::ScmpArchArm,
            "riscv64" => Arch::ScmpArchRiscv64,
            "s390x" => Arch::ScmpArchS390x,
            "ppc64le" => Arch::ScmpArchPpc64le,
            _ => return None,
        })
    }
}

/// "6.1.0-18-amd64" -> (6, 1).
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

impl Filter {
    /// Includes: every condition holds.
    fn all_hold(&self, caps: &[String], host: &Host) -> Result<bool, String> {
        if !self.caps.iter().all(|c| caps.iter().any(|h| h == c)) {
            return Ok(false);
        }
        if !self.arches.is_empty() && !self.arches.iter().any(|a| a == host.goarch) {
            return Ok(false);
        }
        if let Some(k) = &self.min_kernel {
            let min = parse_kernel(k).ok_or_else(|| format!("invalid minKernel {k:?}"))?;
            if host.kernel < min {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Excludes: any condition holds.
    fn any_holds(&self, caps: &[String], host: &Host) -> Result<bool, String> {
        if self.caps.iter().any(|c| caps.iter().any(|h| h == c)) {
            return Ok(true);
        }
        if self.arches.iter().any(|a| a == host.goarch) {
            return Ok(true);
        }
        if let Some(k) = &self.min_kernel {
            let min = parse_kernel(k).ok_or_else(|| format!("invalid minKernel {k:?}"))?;
            if host.kernel >= min {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Profile {
    /// Parse a profile file (Docker's format or OCI `LinuxSeccomp`).
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::SeccompProfile {
            path: path.to_owned(),
            reason,
        };
        let data = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        serde_json::from_slice(&data).map_err(|e| bad(format!("malformed JSON: {e}")))
    }

    /// The OCI profile for a container with `caps` on `host`.
    pub(crate) fn resolve(&self, caps: &[String], host: &Host) -> Result<LinuxSeccomp, String> {
        if self.architectures.as_ref().is_some_and(|a| !a.is_empty())
            && self.arch_map.as_ref().is_some_and(|a| !a.is_empty())
        {
            return Err("use either 'architectures' or 'archMap', not both".into());
        }
        let mut arches: Vec<Arch> = self.architectures.clone().unwrap_or_default();
        if let (Some(map), Some(native)) = (&self.arch_map, host.seccomp_arch()) {
            if let Some(e) = map.iter().find(|e| e.architecture == native) {
                arches.push(e.architecture);
                arches.extend(e.sub_architectures.iter().copied());
            }
        }
        let mut syscalls = Vec::new();
        for (i, rule) in self.syscalls.iter().flatten().enumerate() {
            let ctx = |e: String| format!("syscalls[{i}]: {e}");
            if let Some(inc) = &rule.includes {
                if !inc.all_hold(caps, host).map_err(ctx)? {
                    continue;
                }
            }
            if let Some(exc) = &rule.excludes {
                if exc.any_holds(caps, host).map_err(ctx)? {
                    continue;
                }
            }
            let mut names = rule.names.clone();
            if let Some(n) = &rule.name {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
            if names.is_empty() {
                return Err(ctx("no syscall names (\"names\")".into()));
            }
            let mut s = LinuxSyscall::default();
            s.set_names(names);
            s.set_action(rule.action);
            s.set_errno_ret(rule.errno_ret);
            s.set_args(rule.args.clone().filter(|a| !a.is_empty()));
            syscalls.push(s);
        }
        let mut out = LinuxSeccomp::default();
        out.set_default_action(self.default_action);
        out.set_default_errno_ret(self.default_errno_ret);
        out.set_architectures((!arches.is_empty()).then_some(arches));
        out.set_flags(self.flags.clone().filter(|f| !f.is_empty()));
        out.set_listener_path(self.listener_path.clone());
        out.set_listener_metadata(self.listener_metadata.clone());
        out.set_syscalls(Some(syscalls));
        Ok(out)
    }

    /// Berth's default profile (an equivalent of moby's, written as our own table).
    pub(crate) fn default_profile() -> Self {
        let mut rules = Vec::new();
        let mut add = |names: &str,
                       action: LinuxSeccompAction,
                       args: Vec<LinuxSeccompArg>,
                       inc: Filter,
                       exc: Option<Filter>| {
            rules.push(Rule {
                names: names.split_whitespace().map(str::to_owned).collect(),
                name: None,
                action,
                errno_ret: None,
                args: (!args.is_empty()).then_some(args),
                includes: Some(inc),
                excludes: exc,
            });
        };
        let allow = LinuxSeccompAction::ScmpActAllow;
        let always = Filter::default;
        let cap = |c: &str| Filter {
            caps: vec![c.to_owned()],
            ..Filter::default()
        };
        let arches = |a: &[&str]| Filter {
            arches: a.iter().map(|s| (*s).to_owned()).collect(),
            ..Filter::default()
        };
        for group in ALLOWED {
            add(group, allow, vec![], always(), None);
        }
        add(
            "ptrace process_vm_readv process_vm_writev",
            allow,
            vec![],
            Filter {
                min_kernel: Some("4.8".into()),
                ..Filter::default()
            },
            None,
        );
        // Any socket family but vsock.
        add(
            "socket",
            allow,
            vec![arg(0, AF_VSOCK, LinuxSeccompOperator::ScmpCmpNe)],
            always(),
            None,
        );
        // personality(2) only for Linux/Linux32, optionally with UNAME26, and queries.
        for persona in [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
            add(
                "personality",
                allow,
                vec![arg(0, persona, LinuxSeccompOperator::ScmpCmpEq)],
                always(),
                None,
            );
        }
        add("arch_prctl", allow, vec![], arches(&["amd64", "x32"]), None);
        add(
            "modify_ldt",
            allow,
            vec![],
            arches(&["amd64", "x32", "386"]),
            None,
        );
        add(
            "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
            allow,
            vec![],
            arches(&["arm", "arm64"]),
            None,
        );
        add(
            "sync_file_range2 swapcontext",
            allow,
            vec![],
            arches(&["ppc64le"]),
            None,
        );
        add(
            "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
            allow,
            vec![],
            arches(&["s390", "s390x"]),
            None,
        );
        add(
            "riscv_flush_icache",
            allow,
            vec![],
            arches(&["riscv64"]),
            None,
        );
        // Capability-governed groups.
        for (c, names) in CAP_GROUPS {
            add(names, allow, vec![], cap(c), None);
        }
        // clone(2) without namespace flags for everyone else (flags are arg 1 on s390).
        let no_ns = |index| arg_masked(index, CLONE_NS_FLAGS, 0);
        add(
            "clone",
            allow,
            vec![no_ns(0)],
            always(),
            Some(Filter {
                caps: vec!["CAP_SYS_ADMIN".into()],
                arches: vec!["s390".into(), "s390x".into()],
                min_kernel: None,
            }),
        );
        add(
            "clone",
            allow,
            vec![no_ns(1)],
            arches(&["s390", "s390x"]),
            Some(cap("CAP_SYS_ADMIN")),
        );
        // clone3 passes its flags in memory, which seccomp cannot inspect: ENOSYS makes libcs
        // fall back to clone(2).
        rules.push(Rule {
            names: vec!["clone3".into()],
            name: None,
            action: LinuxSeccompAction::ScmpActErrno,
            errno_ret: Some(ENOSYS),
            args: None,
            includes: None,
            excludes: Some(cap("CAP_SYS_ADMIN")),
        });
        Profile {
            default_action: LinuxSeccompAction::ScmpActErrno,
            default_errno_ret: Some(EPERM),
            architectures: None,
            arch_map: Some(vec![
                ArchMapEntry {
                    architecture: Arch::ScmpArchX86_64,
                    sub_architectures: vec![Arch::ScmpArchX86, Arch::ScmpArchX32],
                },
                ArchMapEntry {
                    architecture: Arch::ScmpArchAarch64,
                    sub_architectures: vec![Arch::ScmpArchArm],
                },
                ArchMapEntry {
                    architecture: Arch::ScmpArchS390x,
                    sub_architectures: vec![Arch::ScmpArchS390],
                },
                ArchMapEntry {
                    architecture: Arch::ScmpArchRiscv64,
                    sub_architectures: vec![],
                },
            ]),
            flags: None,
            listener_path: None,
            listener_metadata: None,
            syscalls: Some(rules),
        }
    }
}

fn arg(index: usize, value: u64, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op)
        .build()
        .expect("every field of a seccomp argument is set")
}

fn arg_masked(index: usize, mask: u64, value: u64) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(mask)
        .value_two(value)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .expect("every field of a seccomp argument is set")
}

#[allow(clippy::cast_sign_loss)]
const EPERM: u32 = libc::EPERM as u32;
#[allow(clippy::cast_sign_loss)]
const ENOSYS: u32 = libc::ENOSYS as u32;
#[allow(clippy::cast_sign_loss)]
const AF_VSOCK: u64 = libc::AF_VSOCK as u64;

/// CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
/// CLONE_NEWCGROUP.
#[allow(clippy::cast_sign_loss)]
pub(crate) const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// Syscalls every container may make, by area. Names unknown on an architecture (or to the
/// linked libseccomp) are skipped by the compiler with a warning.
const ALLOWED: &[&str] = &[
    // processes, threads, signals, identity
    "execve execveat exit exit_group fork vfork wait4 waitid waitpid kill tkill tgkill
     getpid getppid gettid getpgid getpgrp getsid setpgid setsid set_tid_address
     pidfd_open pidfd_send_signal process_mrelease restart_syscall rseq
     rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
     rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sigaltstack sigprocmask sigreturn
     signalfd signalfd4 pause alarm capget capset prctl seccomp
     getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getgroups getgroups32
     getresuid getresuid32 getresgid getresgid32 setuid setuid32 setgid setgid32
     setreuid setreuid32 setregid setregid32 setresuid setresuid32 setresgid setresgid32
     setfsuid setfsuid32 setfsgid setfsgid32 setgroups setgroups32
     getpriority setpriority getrlimit setrlimit ugetrlimit prlimit64 getrusage times
     get_robust_list set_robust_list get_thread_area set_thread_area
     sched_getaffinity sched_setaffinity sched_getattr sched_setattr sched_getparam
     sched_setparam sched_getscheduler sched_setscheduler sched_get_priority_max
     sched_get_priority_min sched_rr_get_interval sched_rr_get_interval_time64 sched_yield
     ioprio_get ioprio_set getcpu landlock_add_rule landlock_create_ruleset
     landlock_restrict_self",
    // memory
    "brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall munlock
     munlockall membarrier memfd_create memfd_secret remap_file_pages pkey_alloc pkey_free
     pkey_mprotect",
    // files and directories
    "open openat openat2 creat close close_range read readv pread64 preadv preadv2 write writev
     pwrite64 pwritev pwritev2 lseek _llseek dup dup2 dup3 fcntl fcntl64 ioctl flock
     fsync fdatasync sync syncfs sync_file_range fallocate fadvise64 fadvise64_64 readahead
     truncate truncate64 ftruncate ftruncate64 sendfile sendfile64 splice tee vmsplice
     copy_file_range stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx statfs
     statfs64 fstatfs fstatfs64 access faccessat faccessat2 readlink readlinkat getcwd chdir
     fchdir getdents getdents64 mkdir mkdirat mknod mknodat rmdir rename renameat renameat2
     link linkat symlink symlinkat unlink unlinkat chmod fchmod fchmodat chown chown32 fchown
     fchown32 fchownat lchown lchown32 umask utime utimes utimensat utimensat_time64 futimesat
     getxattr lgetxattr fgetxattr setxattr lsetxattr fsetxattr listxattr llistxattr flistxattr
     removexattr lremovexattr fremovexattr name_to_handle_at inotify_init inotify_init1
     inotify_add_watch inotify_rm_watch fanotify_mark pipe pipe2",
    // polling, events, asynchronous I/O
    "select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64 epoll_create
     epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait epoll_pwait2
     eventfd eventfd2 io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents
     io_pgetevents_time64 io_uring_setup io_uring_enter io_uring_register",
    // time
    "time gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64
     clock_nanosleep clock_nanosleep_time64 nanosleep adjtimex clock_adjtime clock_adjtime64
     getitimer setitimer timer_create timer_delete timer_getoverrun timer_gettime
     timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
     timerfd_gettime64 timerfd_settime timerfd_settime64",
    // sockets (socket(2) itself is filtered below)
    "socketpair socketcall bind connect listen accept accept4 getsockname getpeername
     getsockopt setsockopt shutdown send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg
     recvmmsg_time64",
    // System V and POSIX IPC, futexes
    "ipc msgget msgctl msgsnd msgrcv semget semctl semop semtimedop semtimedop_time64 shmget
     shmctl shmat shmdt mq_open mq_unlink mq_getsetattr mq_notify mq_timedsend
     mq_timedsend_time64 mq_timedreceive mq_timedreceive_time64 futex futex_time64
     futex_waitv",
    // system information
    "uname sysinfo getrandom",
];

/// Syscalls a capability grants, as moby's profile groups them.
const CAP_GROUPS: &[(&str, &str)] = &[
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    (
        "CAP_SYS_ADMIN",
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount
         mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname
         sethostname setns syslog umount umount2 unshare",
    ),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "init_module finit_module delete_module"),
    ("CAP_SYS_PACCT", "acct"),
    (
        "CAP_SYS_PTRACE",
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    ),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    (
        "CAP_SYS_TIME",
        "settimeofday stime clock_settime clock_settime64",
    ),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    (
        "CAP_SYS_NICE",
        "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    ),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
];

/// The default profile for a container with `caps` on this host.
pub(crate) fn default_for(caps: &[String]) -> LinuxSeccomp {
    // Building and resolving the profile costs a few hundred microseconds of every create;
    // its result depends only on the capability set (and the host, fixed for a process's
    // life), so the last few are kept.
    static CACHE: std::sync::Mutex<Vec<(Vec<String>, LinuxSeccomp)>> =
        std::sync::Mutex::new(Vec::new());
    const KEEP: usize = 8;
    let mut key = caps.to_vec();
    key.sort();
    key.dedup();
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, hit)) = cache.iter().find(|(k, _)| *k == key) {
        return hit.clone();
    }
    let resolved = Profile::default_profile()
        .resolve(caps, &Host::current())
        .expect("the built-in profile has no malformed conditions");
    if cache.len() >= KEEP {
        cache.remove(0);
    }
    cache.push((key, resolved.clone()));
    resolved
}
