//! The last steps before the user's program runs, shared by the init and `exec`:
//! finding the program, limits, credentials, capabilities, seccomp, fd hygiene, `execve`.
//!
//! Order matters and follows runc: bounding set while we still have CAP_SETPCAP; seccomp without
//! no_new_privs while we still have CAP_SYS_ADMIN; keep-caps across the uid change; then the
//! capability sets; the cwd is checked to be inside the container (CVE-2024-21626); with
//! no_new_privs the filter is loaded last, right before `execve`, and every fd above the
//! preserved ones is close-on-exec.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Process;

use crate::error::{Context, Error, Result};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A program ready to exec.
#[derive(Debug)]
pub(super) struct Program {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn cstr(s: &[u8], what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} contains a NUL byte")))
}

/// Find `args[0]` like `execvp` (in the process env's PATH) and prepare argv/envp.
/// Runs inside the container's root.
pub(super) fn resolve(process: &Process) -> Result<Program> {
    let args = process.args().as_deref().unwrap_or_default();
    let name = args.first().map(String::as_str).unwrap_or("");
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(process.user().uid())));
    }
    let path = if name.contains('/') {
        PathBuf::from(name)
    } else {
        find_in_path(name, &path_var).ok_or_else(|| {
            Error::Child(format!(
                "exec: {name:?}: executable file not found in $PATH"
            ))
        })?
    };
    let meta = std::fs::metadata(&path).map_err(|e| {
        Error::Child(format!(
            "exec: {}: {}",
            path.display(),
            if e.kind() == std::io::ErrorKind::NotFound {
                "no such file or directory".to_string()
            } else {
                e.to_string()
            }
        ))
    })?;
    if meta.is_dir() {
        return Err(Error::Child(format!(
            "exec: {}: is a directory",
            path.display()
        )));
    }
    Ok(Program {
        path: cstr(path.as_os_str().as_bytes(), "process.args[0]")?,
        argv: args
            .iter()
            .map(|a| cstr(a.as_bytes(), "process.args"))
            .collect::<Result<_>>()?,
        envp: env
            .iter()
            .map(|e| cstr(e.as_bytes(), "process.env"))
            .collect::<Result<_>>()?,
    })
}

/// Fail now, as `execve` would later with EACCES, when the program is not a regular file or
/// the process may not execute it, so `create` reports it (Docker's exit 126) rather than the
/// start. Call it with the process's final credentials and working directory in place: the
/// check is `faccessat(X_OK, AT_EACCESS)`, which asks with exactly those (capabilities
/// included), like `os/exec.LookPath`. Anything it cannot decide is left to `execve`.
pub(super) fn check_executable(prog: &Program) -> Result<()> {
    use rustix::fs::{Access, AtFlags, FileType};
    use rustix::io::Errno;
    let denied = || {
        Error::Child(format!(
            "exec: {}: permission denied",
            prog.path.to_string_lossy()
        ))
    };
    let mode = match rustix::fs::stat(prog.path.as_c_str()) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => st.st_mode,
        Ok(_) | Err(Errno::ACCESS) => return Err(denied()),
        Err(_) => return Ok(()),
    };
    match rustix::fs::accessat(
        rustix::fs::CWD,
        prog.path.as_c_str(),
        Access::EXEC_OK,
        AtFlags::EACCESS,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::ACCESS) => Err(denied()),
        // Refused by a seccomp filter, say: fall back to the mode bits.
        Err(_) if mode & 0o111 == 0 => Err(denied()),
        Err(_) => Ok(()),
    }
}

fn find_in_path(name: &str, path_var: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path_var.split(':').find_map(|dir| {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(name);
        let m = std::fs::metadata(&p).ok()?;
        (m.is_file() && m.permissions().mode() & 0o111 != 0).then_some(p)
    })
}

fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

/// Limits, oom score and umask (before the credential change).
pub(super) fn limits(process: &Process) -> Result<()> {
    if let Some(rl) = process.rlimits() {
        crate::rlimits::apply(rl)?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).ctx(|| {
            format!("set oomScoreAdj to {adj} (lowering it needs CAP_SYS_RESOURCE, which this host may not grant)")
        })?;
    }
    if let Some(io) = process.io_priority() {
        let class: i64 = match io.class() {
            oci_spec::runtime::IOPriorityClass::IoprioClassRt => 1,
            oci_spec::runtime::IOPriorityClass::IoprioClassBe => 2,
            oci_spec::runtime::IOPriorityClass::IoprioClassIdle => 3,
        };
        let prio = (class << 13) | io.priority();
        // SAFETY: ioprio_set takes three integers; IOPRIO_WHO_PROCESS with pid 0 is the caller.
        let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, prio) };
        if rc < 0 {
            return Err(Error::sys(
                "set process.ioPriority",
                std::io::Error::last_os_error(),
            ));
        }
    }
    let umask = process.user().umask().unwrap_or(0o022);
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask & 0o777));
    Ok(())
}

/// Credentials and capabilities; returns with the final uid/gid and capability sets in place,
/// and the seccomp listener fd if the filter was loaded here and uses notifications.
pub(super) fn credentials(
    process: &Process,
    seccomp: Option<&berth_seccomp::Program>,
    userns: bool,
) -> Result<Option<std::os::fd::OwnedFd>> {
    let caps_cfg = process.capabilities().as_ref();
    let grantable = crate::caps::grantable();
    crate::caps::apply_bounding(caps_cfg, &grantable)?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    let mut listener = None;
    if !nnp {
        if let Some(p) = seccomp {
            // Without no_new_privs the kernel wants CAP_SYS_ADMIN to load a filter: do it now.
            listener = load_seccomp(p)?;
        }
    }
    let user = process.user();
    rustix::thread::set_keep_capabilities(true)
        .ctx(|| "keep capabilities across the uid change")?;
    let gids: Vec<rustix::process::Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    match rustix::thread::set_thread_groups(&gids) {
        Ok(()) => {}
        // A user namespace whose setgroups is denied cannot have supplementary groups.
        Err(rustix::io::Errno::PERM) if userns && gids.is_empty() => {}
        Err(e) => {
            return Err(Error::errno(
                format!("set additional groups {:?}", user.additional_gids()),
                e,
            ));
        }
    }
    let gid = rustix::process::Gid::from_raw(user.gid());
    let uid = rustix::process::Uid::from_raw(user.uid());
    rustix::thread::set_thread_res_gid(gid, gid, gid).ctx(|| {
        format!(
            "set gid {} (is it mapped in the container's user namespace?)",
            user.gid()
        )
    })?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).ctx(|| {
        format!(
            "set uid {} (is it mapped in the container's user namespace?)",
            user.uid()
        )
    })?;
    rustix::thread::set_keep_capabilities(false).ctx(|| "reset keep-capabilities")?;
    crate::caps::apply_sets(caps_cfg, &grantable)?;
    Ok(listener)
}

/// Send a seccomp notification fd to `listenerPath` with the container process state, as the
/// runtime spec describes.
pub(super) fn send_listener(
    path: &Path,
    metadata: Option<&str>,
    state: &crate::state::OciState,
    fd: std::os::fd::OwnedFd,
) -> Result<()> {
    let payload = serde_json::json!({
        "ociVersion": state.oci_version,
        "fds": ["seccompFd"],
        "pid": state.pid,
        "metadata": metadata.unwrap_or(""),
        "state": state,
    });
    let sock = crate::console::connect(path)?;
    crate::console::send_fd(&sock, std::os::fd::AsFd::as_fd(&fd), &payload.to_string()).map_err(
        |e| {
            Error::Child(format!(
                "send the seccomp listener fd to {}: {e}",
                path.display()
            ))
        },
    )
}

/// chdir to the process cwd and make sure it is inside the container.
pub(super) fn cwd(process: &Process) -> Result<()> {
    let cwd = process.cwd();
    rustix::process::chdir(cwd).ctx(|| format!("chdir to process.cwd {}", cwd.display()))?;
    let now = rustix::process::getcwd(Vec::new()).ctx(|| "read the working directory")?;
    // A cwd reached through a leaked host fd shows as "(unreachable)/..." (CVE-2024-21626).
    if !now.to_bytes().starts_with(b"/") {
        return Err(Error::Unsupported(format!(
            "the working directory {} is outside the container",
            now.to_string_lossy()
        )));
    }
    Ok(())
}

fn load_seccomp(p: &berth_seccomp::Program) -> Result<Option<std::os::fd::OwnedFd>> {
    Ok(p.load()?)
}

/// The last steps: no_new_privs, seccomp, fd hygiene, signal reset, execve. Only returns on error.
pub(super) fn exec(
    prog: &Program,
    process: &Process,
    seccomp: Option<&berth_seccomp::Program>,
    preserve_fds: u32,
    on_listener: impl FnOnce(std::os::fd::OwnedFd) -> Result<()>,
) -> Result<std::convert::Infallible> {
    if process.no_new_privileges().unwrap_or(false) {
        rustix::thread::set_no_new_privs(true).ctx(|| "set no_new_privs")?;
        if let Some(p) = seccomp {
            if let Some(listener) = load_seccomp(p)? {
                on_listener(listener)?;
            }
        }
    }
    // Every fd above the preserved ones (our own, and anything leaked to us) closes at exec.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    let rc =
        unsafe { libc::close_range(3 + preserve_fds, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if rc != 0 {
        return Err(Error::sys(
            "mark inherited fds close-on-exec",
            std::io::Error::last_os_error(),
        ));
    }
    reset_signals();
    let mut argv: Vec<*const libc::c_char> = prog.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = prog.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: path, argv and envp are NUL-terminated and outlive the call; on success the
    // process image is replaced.
    unsafe { libc::execve(prog.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = std::io::Error::last_os_error();
    let what = match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".to_string(),
        Some(libc::EACCES) => "permission denied".to_string(),
        _ => e.to_string(),
    };
    Err(Error::Child(format!(
        "exec: {}: {what}",
        prog.path.to_string_lossy()
    )))
}

/// The signals this process ignores, from `SigIgn` in `/proc/self/status` (bit n-1 is signal n).
fn ignored_signals() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Default dispositions and an empty mask: ignored signals survive exec (Rust ignores SIGPIPE,
/// and the caller may have ignored others), which the user's program must not inherit. Handled
/// signals need nothing: exec resets them.
fn reset_signals() {
    let ignored = ignored_signals().unwrap_or(u64::MAX);
    // The kernel's `struct sigaction` with SIG_DFL. The raw call, because glibc's wrappers refuse
    // the signals it reserves (32 and 33), which a caller may still have left ignored.
    let default = [0u64; 4];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || ignored & (1u64 << (sig - 1)) == 0 {
            continue;
        }
        // SAFETY: a valid kernel sigaction (handler SIG_DFL, no flags, empty mask) of the layout
        // rt_sigaction expects on this architecture, a null old-action pointer, sigset size 8.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                default.as_ptr(),
                0usize,
                8usize,
            )
        };
    }
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set behind the pointer it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: a set initialised by sigemptyset above and a null old-set pointer.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) };
}
