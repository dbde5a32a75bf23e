//! Flags of `berth-bench engine`.

use std::path::PathBuf;

use crate::args::{Parsed, count, path};

pub const USAGE: &str = "\
usage: berth-bench engine [OPTIONS]

The container engine against its peers, in one run, on one locally built busybox image loaded
into every store: (1) `berth run --rm IMAGE true` against containerd (`ctr run --rm`), podman
(`podman run --rm --network none`) and the bare unshare+chroot floor, interleaved; (2) N
containers started with `run -d IMAGE sleep 1000` all at once, berth against ctr; (3) with
--containers running: `berth ps` and `berth ps -a` latency, berthd's RSS and the shims' RSS and
PSS, against containerd-shim-runc-v2, conmon and containerd. Everything is removed afterwards.
Prints tables and the targets, then one `RESULT {json}` line. Must run as root.

options:
      --runs N          timed rounds of part 1, each starting every subject once (default 30;
                        20 or more for meaningful p10/p90)
      --concurrent N    containers started at once in part 2, and at most in flight while
                        part 3 fills up (default 100)
      --containers N    running berth containers for part 3 (default 500)
      --ps-runs N       `berth ps` and `berth ps -a` invocations timed in part 3 (default 20)
      --peer-idle N     idle ctr and podman containers whose shim/conmon RSS is measured
                        (default 5)
      --bin-dir DIR     where `berth`, `berthd` and `berth-shim` are (default: the
                        workspace's target/dist, which scripts/build.sh fills, when it holds
                        berth; else the directory of this berth-bench executable)
      --berth PATH      the berth CLI (default: DIR/berth)
      --skip PARTS      leave out parts or peers, comma-separated: start, burst, load (the
                        three parts), ctr, podman, floor, bridge (peers of part 1; skipping
                        ctr also drops ctr from parts 2 and 3; bridge is berth on its
                        default network)
      --busybox PATH    a static busybox for the image (default /bin/busybox)
      --tmpdir DIR      where the stores go (default /tmp; keep the path short: sockets live
                        below it)
      --no-loop         write the stores to --tmpdir's own filesystem instead of a fresh
                        ext4 on a loop device mounted there
      --containerd PATH, --ctr PATH, --podman PATH
                        the peers (default: from $PATH)
  -h, --help            this text
";

/// What `--skip` accepts.
pub const SKIPPABLE: [&str; 7] = ["start", "burst", "load", "ctr", "podman", "floor", "bridge"];

/// What to run and with what.
#[derive(Debug)]
pub struct EngineArgs {
    pub runs: usize,
    pub concurrent: usize,
    pub containers: usize,
    pub ps_runs: usize,
    pub peer_idle: usize,
    pub bin_dir: PathBuf,
    pub berth: Option<PathBuf>,
    pub skip: Vec<String>,
    pub busybox: PathBuf,
    pub tmpdir: PathBuf,
    /// A fresh ext4 on a loop device for the stores (`--no-loop`: the host's filesystem).
    pub loop_fs: bool,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub podman: PathBuf,
}

impl EngineArgs {
    pub fn skipped(&self, what: &str) -> bool {
        self.skip.iter().any(|s| s == what)
    }
}

/// `scripts/build.sh`'s directory when it holds a `berth`, else the directory of the running
/// executable (where cargo puts the engine's glibc binaries too).
fn default_bin_dir() -> PathBuf {
    crate::args::built_dist().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// Parse the arguments after the `engine` mode word (which `p` starts at).
pub fn parse(mut p: lexopt::Parser) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut a = EngineArgs {
        runs: 30,
        concurrent: 100,
        containers: 500,
        ps_runs: 20,
        peer_idle: 5,
        bin_dir: default_bin_dir(),
        berth: None,
        skip: Vec::new(),
        busybox: PathBuf::from("/bin/busybox"),
        tmpdir: PathBuf::from("/tmp"),
        loop_fs: true,
        containerd: PathBuf::from("containerd"),
        ctr: PathBuf::from("ctr"),
        podman: PathBuf::from("podman"),
    };
    let mut mode_seen = false;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Value(v) if !mode_seen && v == "engine" => mode_seen = true,
            Long("runs") => a.runs = count(&mut p, "--runs")?,
            Long("concurrent") => a.concurrent = count(&mut p, "--concurrent")?,
            Long("containers") => a.containers = count(&mut p, "--containers")?,
            Long("ps-runs") => a.ps_runs = count(&mut p, "--ps-runs")?,
            Long("peer-idle") => a.peer_idle = count(&mut p, "--peer-idle")?,
            Long("bin-dir") => a.bin_dir = path(&mut p)?,
            Long("berth") => a.berth = Some(path(&mut p)?),
            Long("skip") => {
                let v = p.value().map_err(|e| e.to_string())?;
                for t in v.to_string_lossy().split(',').filter(|t| !t.is_empty()) {
                    if !SKIPPABLE.contains(&t) {
                        return Err(format!(
                            "--skip: unknown part or peer {t:?}; they are {}",
                            SKIPPABLE.join(", ")
                        ));
                    }
                    a.skip.push(t.to_owned());
                }
            }
            Long("busybox") => a.busybox = path(&mut p)?,
            Long("tmpdir") => a.tmpdir = path(&mut p)?,
            Long("no-loop") => a.loop_fs = false,
            Long("containerd") => a.containerd = path(&mut p)?,
            Long("ctr") => a.ctr = path(&mut p)?,
            Long("podman") => a.podman = path(&mut p)?,
            Short('h') | Long("help") => return Ok(Parsed::Help(USAGE)),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Parsed::Engine(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Parsed, String> {
        parse(lexopt::Parser::from_iter(
            std::iter::once("engine").chain(args.iter().copied()),
        ))
    }

    #[test]
    fn defaults_and_flags() {
        let Ok(Parsed::Engine(a)) = parse_args(&[]) else {
            panic!("no flags must parse");
        };
        assert_eq!(
            (a.runs, a.concurrent, a.containers, a.ps_runs),
            (30, 100, 500, 20)
        );
        assert!(a.berth.is_none());
        let Ok(Parsed::Engine(a)) = parse_args(&[
            "--runs",
            "5",
            "--containers",
            "40",
            "--concurrent",
            "10",
            "--skip",
            "podman,burst",
            "--bin-dir",
            "/x",
        ]) else {
            panic!("flags must parse");
        };
        assert_eq!((a.runs, a.containers, a.concurrent), (5, 40, 10));
        assert!(a.skipped("podman") && a.skipped("burst") && !a.skipped("ctr"));
        assert_eq!(a.bin_dir, PathBuf::from("/x"));
    }

    #[test]
    fn bad_flags() {
        assert!(parse_args(&["--skip", "docker"]).is_err());
        assert!(parse_args(&["--containers", "0"]).is_err());
        assert!(parse_args(&["extra"]).is_err());
        assert!(matches!(parse_args(&["-h"]), Ok(Parsed::Help(_))));
    }
}
