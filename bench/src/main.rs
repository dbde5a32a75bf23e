//! `berth-bench`: starts `/bin/true` from one prepared bundle with berth-runtime, runc, crun
//! and a bare `unshare`+`chroot` floor, interleaved round-robin in one run, and prints medians,
//! percentiles and ratios; then the peak resident set of `create`; then one `RESULT {json}`
//! line for machines. `berth-bench pull` compares cold image pulls instead (`pull.rs`);
//! `berth-bench engine` the container engine against containerd and podman (`engine.rs`). See
//! README.md beside this crate.

mod args;
mod bundle;
mod engine;
mod engine_args;
mod engine_support;
mod pull;
mod pull_args;
mod pull_support;
mod rss;
mod runtime;
mod stats;
mod subject;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use args::{Parsed, USAGE};

/// Which benchmark the command line asked for.
enum Mode {
    Runtime(args::Args),
    Pull(pull_args::PullArgs),
    Engine(engine_args::EngineArgs),
}

/// Errors are messages for the operator: what failed, on what, and what to do.
type Result<T> = std::result::Result<T, String>;

fn main() {
    let mode = match args::parse() {
        Ok(Parsed::Run(a)) => Mode::Runtime(a),
        Ok(Parsed::Pull(a)) => Mode::Pull(a),
        Ok(Parsed::Engine(a)) => Mode::Engine(a),
        Ok(Parsed::Help(text)) => {
            print!("{text}");
            return;
        }
        Err(e) => {
            let usage = match std::env::args_os().nth(1) {
                Some(m) if m == "pull" => pull_args::USAGE,
                Some(m) if m == "engine" => engine_args::USAGE,
                _ => USAGE,
            };
            eprintln!("berth-bench: {e}\n\n{usage}");
            std::process::exit(2);
        }
    };
    catch_interrupts();
    // Every guard (containers, daemons, state roots, the bundle, scratch directories) is
    // dropped inside `run`, before exit.
    let result = match &mode {
        Mode::Runtime(a) => runtime::run(a),
        Mode::Pull(a) => pull::run(a),
        Mode::Engine(a) => engine::run(a),
    };
    if let Err(e) = result {
        eprintln!("berth-bench: error: {e}");
        std::process::exit(1);
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// On SIGINT or SIGTERM, let the current child finish, then stop through the normal error
/// path so the cleanup guards run (the release profile aborts on panic, so no guard may rely on
/// unwinding, and nothing here panics).
fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

/// An error once SIGINT or SIGTERM has arrived; checked before every child.
fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted; cleaned up".into())
    } else {
        Ok(())
    }
}

/// Containers, namespaces and cgroups need root: say so before anything else.
fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return Ok(());
    }
    Err(format!(
        "berth-bench must run as root (it creates containers, namespaces and cgroups); the effective uid is {euid}. Try: sudo {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    ))
}

/// `p` itself if it names a path (has a slash), else the first match in $PATH.
fn which(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

/// The first line of `BIN --version`.
fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(version unknown)".into())
}

/// What the figures depend on.
#[derive(Debug)]
struct Host {
    date: String,
    kernel: String,
    cpus: usize,
    cgroups: &'static str,
}

impl Host {
    fn probe() -> Host {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
        let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let cgroups = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "v2"
        } else if Path::new("/sys/fs/cgroup/unified").is_dir() {
            "hybrid"
        } else {
            "v1"
        };
        Host {
            date: utc_now(),
            kernel,
            cpus,
            cgroups,
        }
    }
}

/// Now as `YYYY-MM-DD HH:MM` UTC, without a date crate (Howard Hinnant's `civil_from_days`).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil(secs)
}

fn civil(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (hh, mm) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil(0), "1970-01-01 00:00");
        assert_eq!(super::civil(951_782_400), "2000-02-29 00:00");
        assert_eq!(super::civil(1_795_391_999), "2026-11-22 23:59");
    }
}
