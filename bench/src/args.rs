//! Command-line flags, parsed with `lexopt` (as `berth-runtime` is).

use std::path::PathBuf;

/// Warm-up rounds run before the timed ones and not counted.
pub const WARMUP_ROUNDS: usize = 3;

pub const USAGE: &str = "\
usage: berth-bench [runtime] [OPTIONS]
       berth-bench pull [OPTIONS]      (see `berth-bench pull --help`)
       berth-bench engine [OPTIONS]    (see `berth-bench engine --help`)

Times berth-runtime, runc, crun and a bare unshare+chroot floor starting /bin/true from one
prepared busybox bundle, interleaved round-robin, then measures the peak resident set of
`create`. Must run as root. Ends with one machine-readable `RESULT {json}` line.

modes:
  runtime              (default) the comparison above
  pull                 cold pull + unpack of a large image: berth, containerd, podman, tar
  engine               the engine (berthd, shims, the berth CLI) against containerd and podman

options:
      --runs N         timed rounds (default 30; 20 or more for meaningful p10/p90)
      --rss-runs N     `create` runs per runtime for the peak RSS median (default 10)
      --berth PATH     the berth-runtime binary (default: $CARGO_TARGET_DIR or the workspace's
                       target/, then x86_64-unknown-linux-gnu/release/berth-runtime)
      --busybox PATH   a static busybox for the rootfs (default /bin/busybox)
      --runc PATH      the runc binary (default: runc from $PATH)
      --crun PATH      the crun binary (default: crun from $PATH)
  -h, --help           this text
";

/// What to run and with what.
#[derive(Debug)]
pub struct Args {
    pub runs: usize,
    pub rss_runs: usize,
    pub berth: PathBuf,
    pub busybox: PathBuf,
    pub runc: PathBuf,
    pub crun: PathBuf,
}

/// The outcome of parsing: run a mode, or print a usage text and stop.
#[derive(Debug)]
pub enum Parsed {
    Run(Args),
    Pull(crate::pull_args::PullArgs),
    Engine(crate::engine_args::EngineArgs),
    Help(&'static str),
}

/// The default `berth-runtime`: the release build of this workspace.
fn default_berth() -> PathBuf {
    release_bin("berth-runtime")
}

/// This workspace's target directory (`$CARGO_TARGET_DIR` when set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        },
        PathBuf::from,
    )
}

/// `NAME` in the release build of this workspace.
pub fn release_bin(name: &str) -> PathBuf {
    target_dir()
        .join("x86_64-unknown-linux-gnu/release")
        .join(name)
}

/// The directory `scripts/build.sh` fills (the musl-built `berth` CLI beside the release
/// `berthd`, `berth-shim` and `berth-runtime`, as they are installed), if it holds a `berth`.
pub fn built_dist() -> Option<PathBuf> {
    Some(target_dir().join("dist")).filter(|d| d.join("berth").is_file())
}

pub fn count(p: &mut lexopt::Parser, flag: &str) -> Result<usize, String> {
    let v = p.value().map_err(|e| e.to_string())?;
    let s = v.to_string_lossy();
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} needs a positive whole number, not {s:?}")),
    }
}

pub fn path(p: &mut lexopt::Parser) -> Result<PathBuf, String> {
    p.value().map(PathBuf::from).map_err(|e| e.to_string())
}

/// Parse `std::env::args_os()`: `pull` as the first argument selects the pull benchmark,
/// anything else the runtime one.
pub fn parse() -> Result<Parsed, String> {
    use lexopt::prelude::*;
    if std::env::args_os().nth(1).is_some_and(|m| m == "pull") {
        return crate::pull_args::parse(lexopt::Parser::from_iter(std::env::args_os().skip(1)));
    }
    if std::env::args_os().nth(1).is_some_and(|m| m == "engine") {
        return crate::engine_args::parse(lexopt::Parser::from_iter(std::env::args_os().skip(1)));
    }
    let mut a = Args {
        runs: 30,
        rss_runs: 10,
        berth: default_berth(),
        busybox: PathBuf::from("/bin/busybox"),
        runc: PathBuf::from("runc"),
        crun: PathBuf::from("crun"),
    };
    let mut mode_seen = false;
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("runs") => a.runs = count(&mut p, "--runs")?,
            Long("rss-runs") => a.rss_runs = count(&mut p, "--rss-runs")?,
            Long("berth") => a.berth = path(&mut p)?,
            Long("busybox") => a.busybox = path(&mut p)?,
            Long("runc") => a.runc = path(&mut p)?,
            Long("crun") => a.crun = path(&mut p)?,
            Short('h') | Long("help") => return Ok(Parsed::Help(USAGE)),
            Value(v) if !mode_seen && v == "runtime" => mode_seen = true,
            Value(v) => {
                return Err(format!(
                    "unknown mode {:?}: the modes are `runtime`, `pull` and `engine` (which must come first)",
                    v.to_string_lossy()
                ));
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Parsed::Run(a))
}
