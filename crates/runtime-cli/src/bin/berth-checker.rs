//! `berth-checker`: a test tool that runs inside a container and asserts, from the container's
//! point of view, what its config promised. Each argument is one check; every check prints
//! `ok CHECK` or `FAIL CHECK: why`, and the exit status is 1 if any failed.
//!
//! It is a binary of this package only so the integration tests can find it
//! (`CARGO_BIN_EXE_berth-checker`); it is statically linked like every Berth binary, so it runs
//! in a rootfs that has nothing else.
//!
//! Checks:
//! - `pid1`: we are pid 1 of our pid namespace.
//! - `ns:KIND!=INODE`: our KIND namespace (`pid`, `net`, ...) is not the host's (inode given).
//! - `hostname=NAME`, `domainname=NAME`.
//! - `uid=N`, `gid=N`, `groups=A,B` (supplementary, sorted), `umask=0NNN`, `cwd=PATH`.
//! - `env:KEY=VALUE`.
//! - `caps:SET=HEXMASK` for SET in `eff`, `prm`, `inh`, `bnd`, `amb` (from /proc/self/status).
//! - `nnp=0|1`: no_new_privs.
//! - `mount:PATH=OPT[,OPT]`: the mount at PATH has these options (`ro`, `rw`, `nosuid`, ...).
//! - `fstype:PATH=TYPE`.
//! - `masked:PATH`: PATH reads as empty (a file masked with /dev/null or an empty read-only dir).
//! - `readonly:PATH`: creating or writing under PATH fails with EROFS.
//! - `rlimit:NAME=SOFT:HARD` (`nofile`, `nproc`, ...; `unlimited` allowed).
//! - `seccomp:mkdirat=ERRNO`: mkdirat fails with exactly this errno.
//! - `sysctl:KEY=VALUE` (dots, e.g. `net.ipv4.ip_forward=1`).
//! - `fds=LIST`: the open fds are exactly this comma-separated list (e.g. `0,1,2`).
//! - `file:PATH=CONTENT`: the file's content, trimmed.
//! - `exists:PATH`, `absent:PATH`, `chardev:PATH=MAJ:MIN`.
//! - `oom:BYTES`: a child that touches BYTES of memory is killed by the kernel (SIGKILL).
//! - `pids:N`: at most N processes can be forked before fork fails (the pids limit holds).
//! - `notwritable:PATH`: opening PATH for writing fails (e.g. `/proc/1/exe`).
//! - `tty`: stdin is a terminal.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::path::Path;

fn main() {
    let mut failed = 0;
    let out = std::io::stdout();
    for check in std::env::args().skip(1) {
        let result = run(&check);
        let mut o = out.lock();
        match result {
            Ok(()) => {
                let _ = writeln!(o, "ok {check}");
            }
            Err(why) => {
                failed += 1;
                let _ = writeln!(o, "FAIL {check}: {why}");
            }
        }
    }
    std::process::exit(i32::from(failed > 0));
}

type R = Result<(), String>;

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> R {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got:?}, expected {want:?}"))
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn run(check: &str) -> R {
    let (name, arg) = check.split_once(':').map_or((check, ""), |(a, b)| (a, b));
    let (key, val) = check.split_once('=').map_or((check, ""), |(a, b)| (a, b));
    match name {
        "pid1" => expect("pid", std::process::id(), 1),
        "ns" => {
            let (kind, inode) = arg.split_once("!=").ok_or("use ns:KIND!=INODE")?;
            let link = fs::read_link(format!("/proc/self/ns/{kind}")).map_err(|e| e.to_string())?;
            let link = link.to_string_lossy();
            if link.contains(&format!("[{inode}]")) {
                Err(format!("{kind} namespace is the host's ({link})"))
            } else {
                Ok(())
            }
        }
        "env" => {
            let (k, v) = arg.split_once('=').ok_or("use env:KEY=VALUE")?;
            expect(k, std::env::var(k).ok(), Some(v.to_string()))
        }
        "caps" => {
            let (set, mask) = arg.split_once('=').ok_or("use caps:SET=HEX")?;
            let field = match set {
                "eff" => "CapEff",
                "prm" => "CapPrm",
                "inh" => "CapInh",
                "bnd" => "CapBnd",
                "amb" => "CapAmb",
                _ => return Err(format!("unknown capability set {set}")),
            };
            let got = status_field(field)?;
            let got = u64::from_str_radix(&got, 16).map_err(|e| e.to_string())?;
            let want = u64::from_str_radix(mask.trim_start_matches("0x"), 16)
                .map_err(|e| e.to_string())?;
            if got == want {
                Ok(())
            } else {
                Err(format!("{field} is {got:#x}, expected {want:#x}"))
            }
        }
        "mount" => {
            let (path, opts) = arg.split_once('=').ok_or("use mount:PATH=OPTS")?;
            let (_, mopts) = mount_at(path)?;
            let missing: Vec<&str> = opts
                .split(',')
                .filter(|o| !mopts.split(',').any(|m| m == *o))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{path} is mounted with {mopts}, missing {missing:?}"
                ))
            }
        }
        "fstype" => {
            let (path, t) = arg.split_once('=').ok_or("use fstype:PATH=TYPE")?;
            expect(&format!("type of {path}"), mount_at(path)?.0, t.to_string())
        }
        "masked" => {
            let p = Path::new(arg);
            if p.is_dir() {
                let n = fs::read_dir(p).map_err(|e| e.to_string())?.count();
                expect(&format!("entries in {arg}"), n, 0)
            } else {
                let data = fs::read(p).map_err(|e| e.to_string())?;
                expect(&format!("bytes read from {arg}"), data.len(), 0)
            }
        }
        "readonly" => {
            // The mount holding the path is read-only (what `readonlyPaths` promises).
            let st = rustix::fs::statvfs(arg).map_err(|e| format!("statvfs: {e}"))?;
            if st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
                Ok(())
            } else {
                Err(format!("{arg} is on a writable mount"))
            }
        }
        "notwritable" => match fs::OpenOptions::new().write(true).open(arg) {
            Ok(_) => Err(format!("{arg} opened for writing")),
            Err(_) => Ok(()),
        },
        "rlimit" => {
            let (res, lim) = arg.split_once('=').ok_or("use rlimit:NAME=SOFT:HARD")?;
            let (soft, hard) = lim.split_once(':').ok_or("use SOFT:HARD")?;
            let label = match res {
                "nofile" => "Max open files",
                "nproc" => "Max processes",
                "core" => "Max core file size",
                "memlock" => "Max locked memory",
                "stack" => "Max stack size",
                "cpu" => "Max cpu time",
                _ => return Err(format!("unknown rlimit {res}")),
            };
            let limits = fs::read_to_string("/proc/self/limits").map_err(|e| e.to_string())?;
            let line = limits
                .lines()
                .find(|l| l.starts_with(label))
                .ok_or("no such limit")?;
            let cols: Vec<&str> = line[label.len()..].split_whitespace().collect();
            expect(
                &format!("{res} soft:hard"),
                format!("{}:{}", cols[0], cols[1]),
                format!("{soft}:{hard}"),
            )
        }
        "seccomp" => {
            let (call, want) = arg.split_once('=').ok_or("use seccomp:mkdirat=ERRNO")?;
            if call != "mkdirat" {
                return Err("only mkdirat is supported".into());
            }
            let want: i32 = want.parse().map_err(|_| "bad errno")?;
            let path = CString::new("/tmp/berth-checker-seccomp").map_err(|e| e.to_string())?;
            // SAFETY: mkdirat with a valid NUL-terminated path; only the return value is used.
            let rc = unsafe { libc::mkdirat(libc::AT_FDCWD, path.as_ptr(), 0o755) };
            let e = errno();
            let _ = fs::remove_dir("/tmp/berth-checker-seccomp");
            if rc == 0 {
                Err("mkdirat succeeded".into())
            } else {
                expect("mkdirat errno", e, want)
            }
        }
        "sysctl" => {
            let (k, v) = arg.split_once('=').ok_or("use sysctl:KEY=VALUE")?;
            let got = fs::read_to_string(format!("/proc/sys/{}", k.replace('.', "/")))
                .map_err(|e| e.to_string())?;
            expect(k, got.trim().to_string(), v.to_string())
        }
        "file" => {
            let (p, content) = arg.split_once('=').ok_or("use file:PATH=CONTENT")?;
            let got = fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
            expect(p, got.trim().to_string(), content.to_string())
        }
        "exists" => {
            if Path::new(arg).exists() {
                Ok(())
            } else {
                Err(format!("{arg} does not exist"))
            }
        }
        "absent" => {
            if Path::new(arg).exists() {
                Err(format!("{arg} exists"))
            } else {
                Ok(())
            }
        }
        "chardev" => {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let (p, dev) = arg.split_once('=').ok_or("use chardev:PATH=MAJ:MIN")?;
            let m = fs::metadata(p).map_err(|e| format!("{p}: {e}"))?;
            if !m.file_type().is_char_device() {
                return Err(format!("{p} is not a character device"));
            }
            let rdev = m.rdev();
            let got = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
            expect(p, got, dev.to_string())
        }
        "oom" => oom(arg.parse().map_err(|_| "use oom:BYTES")?),
        "pids" => pids(arg.parse().map_err(|_| "use pids:N")?),
        "tty" => {
            // SAFETY: isatty only inspects the descriptor.
            if unsafe { libc::isatty(0) } == 1 {
                Ok(())
            } else {
                Err("stdin is not a terminal".into())
            }
        }
        _ => simple(key, val),
    }
}

fn simple(key: &str, val: &str) -> R {
    match key {
        "hostname" => expect(
            "hostname",
            fs::read_to_string("/proc/sys/kernel/hostname")
                .map_err(|e| e.to_string())?
                .trim()
                .to_string(),
            val.to_string(),
        ),
        "domainname" => expect(
            "domainname",
            fs::read_to_string("/proc/sys/kernel/domainname")
                .map_err(|e| e.to_string())?
                .trim()
                .to_string(),
            val.to_string(),
        ),
        "uid" => {
            // SAFETY: getuid has no preconditions.
            expect(
                "uid",
                unsafe { libc::getuid() }.to_string(),
                val.to_string(),
            )
        }
        "gid" => {
            // SAFETY: getgid has no preconditions.
            expect(
                "gid",
                unsafe { libc::getgid() }.to_string(),
                val.to_string(),
            )
        }
        "groups" => {
            let got = status_field("Groups")?;
            let mut g: Vec<&str> = got.split_whitespace().collect();
            g.sort_unstable();
            let mut w: Vec<&str> = val.split(',').filter(|s| !s.is_empty()).collect();
            w.sort_unstable();
            expect("groups", g, w)
        }
        "umask" => expect("umask", status_field("Umask")?, val.to_string()),
        "nnp" => expect("NoNewPrivs", status_field("NoNewPrivs")?, val.to_string()),
        "fds" => {
            let mut fds: Vec<i32> = fs::read_dir("/proc/self/fd")
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            fds.sort_unstable();
            // read_dir holds one fd of its own while listing; it is the highest one.
            fds.pop();
            let want: Vec<i32> = val.split(',').filter_map(|s| s.parse().ok()).collect();
            expect("open fds", fds, want)
        }
        "cwd" => expect(
            "cwd",
            std::env::current_dir()
                .map_err(|e| e.to_string())?
                .display()
                .to_string(),
            val.to_string(),
        ),
        _ => Err(format!("unknown check {key:?}")),
    }
}

fn status_field(field: &str) -> Result<String, String> {
    let s = fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    s.lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
        .ok_or_else(|| format!("no {field} in /proc/self/status"))
}

/// (fstype, options) of the mount whose mount point is exactly `path` (the last one wins).
fn mount_at(path: &str) -> Result<(String, String), String> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mut found = None;
    for l in info.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() < 10 || f[4] != path {
            continue;
        }
        let sep = f.iter().position(|x| *x == "-").ok_or("bad mountinfo")?;
        let opts = format!("{},{}", f[5], f.get(sep + 3).copied().unwrap_or(""));
        found = Some((f[sep + 1].to_string(), opts));
    }
    found.ok_or_else(|| format!("nothing is mounted at {path}"))
}

fn wait_child(pid: i32) -> Result<i32, String> {
    let mut status = 0;
    // SAFETY: waiting for our own child into a valid int.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    Ok(status)
}

fn oom(bytes: usize) -> R {
    // SAFETY: fork in a single-threaded program; the child only allocates, touches and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut v: Vec<u8> = Vec::with_capacity(bytes);
        // Touch every page so the memory is really charged.
        for i in (0..bytes).step_by(4096) {
            v.push(0);
            if v.len() < i {
                v.resize(i, 1);
            }
        }
        v.resize(bytes, 1);
        std::process::exit(0);
    }
    let status = wait_child(pid)?;
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
        Ok(())
    } else {
        Err(format!(
            "a child touching {bytes} bytes was not OOM-killed (wait status {status:#x})"
        ))
    }
}

fn pids(limit: usize) -> R {
    let mut children = Vec::new();
    let mut refused = false;
    // Fork until the kernel refuses, well past the limit; children just wait to be killed.
    for _ in 0..limit * 4 + 8 {
        // SAFETY: fork in a single-threaded program; the child only pauses until killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: pause just sleeps until a signal arrives.
            unsafe { libc::pause() };
            std::process::exit(0);
        }
        if pid < 0 {
            refused = true;
            break;
        }
        children.push(pid);
    }
    let n = children.len();
    for c in &children {
        // SAFETY: killing and reaping our own children.
        unsafe { libc::kill(*c, libc::SIGKILL) };
        let _ = wait_child(*c);
    }
    if refused && n < limit {
        Ok(())
    } else {
        Err(format!(
            "forked {n} children (refused: {refused}) with a limit of {limit} tasks"
        ))
    }
}
