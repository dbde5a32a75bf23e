//! Flags of `berth-bench pull`.

use std::path::PathBuf;

use crate::args::{Parsed, built_dist, count, path, release_bin};

/// Where `bench/scripts/make-pull-image.sh` caches the image by default.
pub const DEFAULT_IMAGE: &str = "/var/cache/berth-bench/pull-image/oci";

pub const USAGE: &str = "\
usage: berth-bench pull [OPTIONS]

Cold pull + unpack of one large image from a private docker-registry on loopback, timed in one
run, interleaved round by round, with every store emptied (and the page cache dropped) before
each pull: `berth pull`, containerd (`ctr images pull`, which unpacks into overlayfs
snapshots), `podman pull`, the floor (GNU `tar -xzf` of the same layer blobs, all layers in
parallel) and `skopeo copy` (fetch only). Prints medians, ratios, peak RSS and the targets, then
one `RESULT {json}` line. Must run as root. Build the image first with
bench/scripts/make-pull-image.sh.

options:
      --runs N            timed rounds, each pulling once with every tool (default 5)
      --image DIR         the image, an OCI layout with the tag `bench`
                          (default /var/cache/berth-bench/pull-image/oci)
      --berth PATH        the berth binary, with berthd beside it (default: $CARGO_TARGET_DIR
                          or the workspace's target/, then dist/berth, which scripts/build.sh
                          fills, else x86_64-unknown-linux-gnu/release/berth)
      --keep-page-cache   do not drop the page cache before each pull (`sync` still runs)
      --skip TOOLS        leave out tools, comma-separated: berth, ctr, podman, floor, skopeo
                          (the ratios to a skipped tool are then missing)
      --tmpdir DIR        where the scratch directory goes (default $TMPDIR or /tmp)
      --no-loop           write the stores to --tmpdir's own filesystem instead of a fresh
                          ext4 on a loop device there (slow to clean on a `discard` mount)
      --containerd PATH, --ctr PATH, --podman PATH, --skopeo PATH, --tar PATH
                          the peers (default: from $PATH)
  -h, --help              this text
";

/// The tools a round can run, in table order.
pub const TOOLS: [&str; 5] = ["berth", "ctr", "podman", "floor", "skopeo"];

/// What to run and with what.
#[derive(Debug)]
pub struct PullArgs {
    pub runs: usize,
    pub image: PathBuf,
    pub berth: PathBuf,
    pub drop_caches: bool,
    pub skip: Vec<String>,
    pub tmpdir: Option<PathBuf>,
    pub loop_fs: bool,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub podman: PathBuf,
    pub skopeo: PathBuf,
    pub tar: PathBuf,
}

/// `scripts/build.sh`'s `berth` when it was run, else cargo's release build.
fn default_berth() -> PathBuf {
    built_dist().map_or_else(|| release_bin("berth"), |d| d.join("berth"))
}

/// Parse the arguments after the `pull` mode word (which `p` starts at).
pub fn parse(mut p: lexopt::Parser) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut a = PullArgs {
        runs: 5,
        image: PathBuf::from(DEFAULT_IMAGE),
        berth: default_berth(),
        drop_caches: true,
        skip: Vec::new(),
        tmpdir: None,
        loop_fs: true,
        containerd: PathBuf::from("containerd"),
        ctr: PathBuf::from("ctr"),
        podman: PathBuf::from("podman"),
        skopeo: PathBuf::from("skopeo"),
        tar: PathBuf::from("tar"),
    };
    let mut mode_seen = false;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Value(v) if !mode_seen && v == "pull" => mode_seen = true,
            Long("runs") => a.runs = count(&mut p, "--runs")?,
            Long("image") => a.image = path(&mut p)?,
            Long("berth") => a.berth = path(&mut p)?,
            Long("keep-page-cache") => a.drop_caches = false,
            Long("skip") => {
                let v = p.value().map_err(|e| e.to_string())?;
                for t in v.to_string_lossy().split(',').filter(|t| !t.is_empty()) {
                    if !TOOLS.contains(&t) {
                        return Err(format!(
                            "--skip: unknown tool {t:?}; the tools are {}",
                            TOOLS.join(", ")
                        ));
                    }
                    a.skip.push(t.to_owned());
                }
            }
            Long("tmpdir") => a.tmpdir = Some(path(&mut p)?),
            Long("no-loop") => a.loop_fs = false,
            Long("containerd") => a.containerd = path(&mut p)?,
            Long("ctr") => a.ctr = path(&mut p)?,
            Long("podman") => a.podman = path(&mut p)?,
            Long("skopeo") => a.skopeo = path(&mut p)?,
            Long("tar") => a.tar = path(&mut p)?,
            Short('h') | Long("help") => return Ok(Parsed::Help(USAGE)),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Parsed::Pull(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Parsed, String> {
        parse(lexopt::Parser::from_iter(
            std::iter::once("pull").chain(args.iter().copied()),
        ))
    }

    #[test]
    fn defaults_and_flags() {
        let Ok(Parsed::Pull(a)) = parse_args(&[]) else {
            panic!("no flags must parse");
        };
        assert_eq!(a.runs, 5);
        assert!(a.drop_caches);
        assert!(
            a.berth.ends_with("dist/berth")
                || a.berth.ends_with("x86_64-unknown-linux-gnu/release/berth")
        );
        let Ok(Parsed::Pull(a)) = parse_args(&[
            "--runs",
            "3",
            "--skip",
            "podman,skopeo",
            "--keep-page-cache",
            "--berth",
            "/x/berth",
        ]) else {
            panic!("flags must parse");
        };
        assert_eq!((a.runs, a.drop_caches), (3, false));
        assert_eq!(a.skip, ["podman", "skopeo"]);
        assert_eq!(a.berth, PathBuf::from("/x/berth"));
    }

    #[test]
    fn bad_flags() {
        assert!(parse_args(&["--skip", "docker"]).is_err());
        assert!(parse_args(&["--runs", "0"]).is_err());
        assert!(parse_args(&["extra"]).is_err());
        assert!(matches!(parse_args(&["--help"]), Ok(Parsed::Help(_))));
    }
}
