//! The `pull` mode: a cold pull + unpack of one large image from a private docker-registry on
//! loopback by `berth pull`, containerd (`ctr images pull`), `podman pull`, the GNU tar floor and
//! `skopeo copy` (fetch only), interleaved round by round, every store fresh for each pull.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value, json};

use crate::pull_args::{PullArgs, TOOLS};
use crate::pull_support::{
    Containerd, Daemon, HostCpu, Image, Measured, Running, Scratch, count_entries, drop_caches,
    measure, output, remove_tree, start_berthd, sync,
};
use crate::stats::Summary;
use crate::{Host, Result, check_interrupted, require_root, version, which};

/// The targets: berth's median pull against ctr's and the tar floor's, and its RSS.
const TARGET_VS_CTR: f64 = 0.25;
const TARGET_VS_FLOOR: f64 = 0.5;
const TARGET_RSS_MIB: f64 = 64.0;

/// The repository and tag the image is pushed as.
const REPO: &str = "bench/big:latest";
/// containerd namespace for the pulls.
const NAMESPACE: &str = "bench";

/// The resolved programs.
struct Tools {
    berth: PathBuf,
    /// berthd beside `berth`, where the pull's work happens; none for a stand-in script.
    berthd: Option<PathBuf>,
    containerd: PathBuf,
    ctr: PathBuf,
    podman: PathBuf,
    skopeo: PathBuf,
    tar: PathBuf,
}

/// One pull by one tool.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Wall time of the pull, seconds.
    secs: f64,
    /// `sync` right after it, seconds (writeback the tool left for later).
    sync_secs: f64,
    /// Peak RSS of the process we started (for the floor: the largest of the parallel tars).
    rss_kib: u64,
    /// Busy CPU seconds of the whole host during the pull (`HostCpu`; not during the sync).
    host_cpu_secs: f64,
    /// containerd only: the daemon's peak RSS (VmHWM of a daemon started for this pull) and
    /// its RSS just before the pull.
    daemon: Option<(u64, u64)>,
}

/// Everything a pull needs.
struct Ctx<'a> {
    tools: &'a Tools,
    image: &'a Image,
    scratch: &'a Scratch,
    reference: String,
}

pub fn run(a: &PullArgs) -> Result<()> {
    require_root()?;
    // The `/berth` cgroup parents the daemons make go when this returns, if they were new.
    let _cgroups = berth_testutil::host::berth_cgroups();
    let tools = resolve(a)?;
    let image = Image::open(&a.image)?;
    if !Path::new(berth_testutil::registry::DOCKER_REGISTRY).is_file() {
        return Err(format!(
            "{} not found: install Debian's docker-registry package (./scripts/deps.sh)",
            berth_testutil::registry::DOCKER_REGISTRY
        ));
    }
    let names: Vec<&'static str> = TOOLS
        .iter()
        .copied()
        .filter(|t| !a.skip.iter().any(|s| s == t))
        .collect();
    if names.is_empty() {
        return Err("--skip left no tool to run".into());
    }

    let host = Host::probe();
    println!(
        "berth-bench pull: {} UTC, kernel {}, {} cpus",
        host.date, host.kernel, host.cpus
    );
    let files = image
        .files
        .map_or_else(|| "? files".into(), |f| format!("{f} files"));
    let raw = image
        .uncompressed
        .map_or_else(|| "?".into(), |u| format!("{:.0} MB", mb(u)));
    println!(
        "  image {} ({} layers, {:.1} MB gzip, {raw} unpacked, {files}; manifest {})",
        image.dir.display(),
        image.layers.len(),
        mb(image.compressed()),
        image.manifest
    );
    println!(
        "  berth: {} ({}); berthd: {}",
        version(&tools.berth),
        tools.berth.display(),
        tools
            .berthd
            .as_ref()
            .map_or_else(|| "none beside it".into(), |p| p.display().to_string())
    );
    for bin in [
        &tools.containerd,
        &tools.ctr,
        &tools.podman,
        &tools.skopeo,
        &tools.tar,
    ] {
        println!("  {} ({})", version(bin), bin.display());
    }
    println!(
        "  before each pull: store emptied, sync{}",
        if a.drop_caches {
            ", page cache dropped (echo 3 > /proc/sys/vm/drop_caches)"
        } else {
            " (page cache kept: --keep-page-cache)"
        }
    );

    // podman's and skopeo's blob-info cache lives here whatever their storage root.
    let var_lib_containers = Path::new("/var/lib/containers").exists();
    let result = with_registry(a, &tools, &image, &names, &host);
    if !var_lib_containers {
        let _ = std::fs::remove_dir_all("/var/lib/containers");
    }
    result
}

fn with_registry(
    a: &PullArgs,
    tools: &Tools,
    image: &Image,
    names: &[&'static str],
    host: &Host,
) -> Result<()> {
    // Started before anything else exists: its start panics (aborting) only when the registry
    // cannot start at all, and then there is nothing else to clean up.
    let registry = berth_testutil::registry::Registry::start(berth_testutil::registry::Auth::None);
    let reference = format!("{}/{REPO}", registry.addr());
    println!("  registry: docker-registry on {}", registry.addr());
    let scratch = Scratch::new(a.tmpdir.as_deref(), a.loop_fs)?;
    println!("  stores in {}", scratch.describe());

    let mut push = Command::new(&tools.skopeo);
    push.args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:bench", image.dir.display()))
        .arg(format!("docker://{reference}"));
    let pushed = measure(&mut push).map_err(|e| format!("push the image: {e}"))?;
    println!(
        "  pushed as {reference} in {:.1} s (skopeo copy)",
        pushed.wall.as_secs_f64()
    );

    let ctx = Ctx {
        tools,
        image,
        scratch: &scratch,
        reference,
    };
    let n = names.len();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(a.runs); n];
    for round in 0..a.runs {
        for k in 0..n {
            check_interrupted()?;
            let i = (round + k) % n;
            if a.drop_caches {
                drop_caches()?;
            } else {
                sync();
            }
            let s = pull_once(names[i], &ctx, round)
                .map_err(|e| format!("round {}: {}: {e}", round + 1, names[i]))?;
            // One line per pull: a run takes minutes.
            eprintln!(
                "berth-bench: round {}/{}: {:<20} {:>7.2} s, then sync {:.2} s, peak RSS {:.1} MiB",
                round + 1,
                a.runs,
                label(names[i]),
                s.secs,
                s.sync_secs,
                kib_f64(s.rss_kib) / 1024.0
            );
            samples[i].push(s);
        }
    }
    report(a, names, &samples, image, host)
}

/// `p` resolved in $PATH, or an error naming the package.
fn tool(p: &Path, package: &str) -> Result<PathBuf> {
    which(p).ok_or_else(|| {
        format!(
            "{} not found: install Debian's {package} package (./scripts/deps.sh) or pass its path",
            p.display()
        )
    })
}

fn resolve(a: &PullArgs) -> Result<Tools> {
    let skipped = |t: &str| a.skip.iter().any(|s| s == t);
    let berth = if skipped("berth") {
        a.berth.clone()
    } else if a.berth.is_file() {
        std::fs::canonicalize(&a.berth)
            .map_err(|e| format!("resolve {}: {e}", a.berth.display()))?
    } else {
        return Err(format!(
            "no berth at {}: build it first with `cargo build --release -p berth-cli`, or pass --berth PATH",
            a.berth.display()
        ));
    };
    let berthd = berth
        .parent()
        .map(|d| d.join("berthd"))
        .filter(|p| p.is_file());
    Ok(Tools {
        berth,
        berthd,
        containerd: tool(&a.containerd, "containerd")?,
        ctr: tool(&a.ctr, "containerd")?,
        podman: tool(&a.podman, "podman")?,
        skopeo: tool(&a.skopeo, "skopeo")?,
        tar: tool(&a.tar, "tar")?,
    })
}

/// Check that a pull really unpacked: at least as many entries under `dir` as the image has
/// files (the figure `make-pull-image.sh` recorded).
fn check_unpacked(what: &str, dir: &Path, image: &Image) -> Result<()> {
    let Some(files) = image.files else {
        return Ok(());
    };
    let n = count_entries(dir);
    if n < files {
        return Err(format!(
            "{what} exited 0 but {} holds only {n} entries, fewer than the image's {files} files: it did not unpack the image",
            dir.display()
        ));
    }
    Ok(())
}

fn pull_once(name: &str, ctx: &Ctx, round: usize) -> Result<Sample> {
    let t = ctx.tools;
    let dir = ctx.scratch.fresh(&format!("{name}-{}", round + 1))?;
    let sample = match name {
        "berth" => {
            // berthd does the pull: started before it, as containerd is for ctr, and its peak
            // RSS is the pull's (the CLI only streams progress).
            let mut daemon = t
                .berthd
                .as_ref()
                .map(|bin| start_berthd(bin, &dir))
                .transpose()?;
            let before = daemon.as_ref().map(Daemon::rss_kib).transpose()?;
            let mut cmd = Command::new(&t.berth);
            cmd.arg("--root")
                .arg(&dir)
                .args(["pull", "-q"])
                .arg(&ctx.reference);
            let m = measure(&mut cmd)?;
            let mut s = simple(m);
            if let (Some(d), Some((before, _))) = (daemon.as_ref(), before) {
                let hwm = d.rss_kib()?.1;
                s.daemon = Some((hwm, before));
                s.rss_kib = hwm;
            }
            check_unpacked("berth pull", &dir, ctx.image)?;
            if let Some(d) = daemon.as_mut() {
                d.stop();
            }
            s
        }
        "ctr" => {
            let mut daemon = Containerd::start(&t.containerd, &dir)?;
            let (before, _) = daemon.daemon.rss_kib()?;
            let mut cmd = Command::new(&t.ctr);
            cmd.arg("-a")
                .arg(daemon.daemon.socket())
                .args(["-n", NAMESPACE, "images", "pull", "--plain-http"])
                .args(["--snapshotter", "overlayfs"])
                .arg(&ctx.reference);
            let m = measure(&mut cmd)?;
            let mut s = simple(m);
            s.daemon = Some((daemon.daemon.rss_kib()?.1, before));
            // The pull unpacked: one committed overlayfs snapshot per layer.
            let mut ls = Command::new(&t.ctr);
            ls.arg("-a").arg(daemon.daemon.socket()).args([
                "-n",
                NAMESPACE,
                "snapshots",
                "--snapshotter",
                "overlayfs",
                "ls",
            ]);
            let committed = output(&mut ls)?
                .lines()
                .filter(|l| l.split_whitespace().last() == Some("Committed"))
                .count();
            if committed < ctx.image.layers.len() {
                return Err(format!(
                    "ctr images pull exited 0 but containerd has {committed} committed snapshots for {} layers",
                    ctx.image.layers.len()
                ));
            }
            check_unpacked("ctr images pull", &daemon.root(), ctx.image)?;
            daemon.daemon.stop();
            s
        }
        "podman" => {
            let p = |s: &str| dir.join(s);
            let mut cmd = Command::new(&t.podman);
            cmd.arg("--root")
                .arg(p("root"))
                .arg("--runroot")
                .arg(p("runroot"))
                .arg("--tmpdir")
                .arg(p("tmp"))
                .args(["--storage-driver", "overlay", "--events-backend", "none"])
                .args(["--cgroup-manager", "cgroupfs"])
                .args(["pull", "--tls-verify=false", "-q"])
                .arg(&ctx.reference);
            let m = measure(&mut cmd)?;
            let s = simple(m);
            check_unpacked("podman pull", &p("root"), ctx.image)?;
            s
        }
        "floor" => floor(ctx, &dir)?,
        "skopeo" => {
            let mut cmd = Command::new(&t.skopeo);
            cmd.args(["copy", "--src-tls-verify=false"])
                .arg(format!("docker://{}", ctx.reference))
                .arg(format!("oci:{}:bench", dir.join("layout").display()));
            simple(measure(&mut cmd)?)
        }
        other => return Err(format!("unknown tool {other}")),
    };
    remove_tree(&dir)?;
    Ok(sample)
}

/// A sample from one process, with the `sync` that follows it.
fn simple(m: Measured) -> Sample {
    let sync_secs = sync().as_secs_f64();
    Sample {
        secs: m.wall.as_secs_f64(),
        sync_secs,
        rss_kib: m.maxrss_kib,
        host_cpu_secs: m.host_cpu_secs,
        daemon: None,
    }
}

/// GNU `tar -xzf` of every layer blob at once, each into its own fresh directory: the time
/// from the first spawn until the last one exits.
fn floor(ctx: &Ctx, dir: &Path) -> Result<Sample> {
    let cpu = HostCpu::now()?;
    let start = std::time::Instant::now();
    let mut running = Vec::with_capacity(ctx.image.layers.len());
    for (i, l) in ctx.image.layers.iter().enumerate() {
        let d = dir.join(format!("layer{i}"));
        std::fs::create_dir(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        let mut cmd = Command::new(&ctx.tools.tar);
        cmd.arg("-xzf").arg(&l.path).arg("-C").arg(&d);
        running.push(Running::spawn(&mut cmd)?);
    }
    let mut rss = 0;
    for r in running {
        rss = rss.max(r.wait()?);
    }
    let wall = start.elapsed();
    let s = simple(Measured {
        wall,
        maxrss_kib: rss,
        host_cpu_secs: cpu.busy_since()?,
    });
    check_unpacked("tar -xzf", dir, ctx.image)?;
    Ok(s)
}

fn mb(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "byte counts are far below 2^53")]
    let f = bytes as f64;
    f / 1e6
}

fn kib_f64(k: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "a KiB count is far below 2^53")]
    let f = k as f64;
    f
}

/// Round to three decimals for the RESULT line.
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn label(name: &str) -> &'static str {
    match name {
        "berth" => "berth pull",
        "ctr" => "ctr images pull",
        "podman" => "podman pull",
        "floor" => "floor: tar -xzf",
        "skopeo" => "skopeo copy (fetch)",
        _ => "?",
    }
}

fn report(
    a: &PullArgs,
    names: &[&'static str],
    samples: &[Vec<Sample>],
    image: &Image,
    host: &Host,
) -> Result<()> {
    let summary = |f: &dyn Fn(&Sample) -> f64, v: &[Sample]| {
        Summary::of(&v.iter().map(f).collect::<Vec<_>>())
    };
    let mut medians = Map::new();
    for (name, v) in names.iter().zip(samples) {
        if let Some(m) = summary(&|s| s.secs, v) {
            medians.insert((*name).into(), json!(m.median));
        }
    }
    let median = |n: &str| medians.get(n).and_then(Value::as_f64);
    let ratio = |num: Option<f64>, den: Option<f64>| num.zip(den).map(|(x, y)| x / y);
    let fmt_ratio = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.2}"));

    println!();
    println!(
        "cold pull + unpack, {} interleaved rounds, every store fresh; seconds (wall time of the command)",
        a.runs
    );
    println!(
        "{:<22} {:>8} {:>7} {:>7} {:>7} {:>9} {:>8} {:>11} {:>13} {:>10} {:>6}",
        "tool",
        "median",
        "min",
        "max",
        "x ctr",
        "x podman",
        "x floor",
        "sync after",
        "peak RSS MiB",
        "host CPU s",
        "busy"
    );
    let ncpu = f64::from(u32::try_from(host.cpus.max(1)).unwrap_or(1));
    let mut pulls = Map::new();
    let mut daemon_lines = Vec::new();
    for (name, v) in names.iter().zip(samples) {
        let secs = summary(&|s| s.secs, v).ok_or_else(|| format!("{name} has no samples"))?;
        let sync = summary(&|s| s.sync_secs, v).ok_or("no sync samples")?;
        let rss = summary(&|s| kib_f64(s.rss_kib), v).ok_or("no RSS samples")?;
        let cpu = summary(&|s| s.host_cpu_secs, v).ok_or("no CPU samples")?;
        // The share of the host's CPUs the pull kept busy (median CPU over median wall).
        let busy = cpu.median / (secs.median * ncpu);
        let (vs_ctr, vs_podman, vs_floor) = (
            ratio(Some(secs.median), median("ctr")),
            ratio(Some(secs.median), median("podman")),
            ratio(Some(secs.median), median("floor")),
        );
        println!(
            "{:<22} {:>8.2} {:>7.2} {:>7.2} {:>7} {:>9} {:>8} {:>11.2} {:>13.1} {:>10.2} {:>5.0}%",
            label(name),
            secs.median,
            secs.min,
            secs.max,
            fmt_ratio(vs_ctr),
            fmt_ratio(vs_podman),
            fmt_ratio(vs_floor),
            sync.median,
            rss.median / 1024.0,
            cpu.median,
            busy * 100.0,
        );
        let mut j = json!({
            "median_s": r3(secs.median), "min_s": r3(secs.min), "max_s": r3(secs.max),
            "samples_s": v.iter().map(|s| r3(s.secs)).collect::<Vec<_>>(),
            "sync_after_median_s": r3(sync.median),
            "peak_rss_kib": { "median": rss.median, "max": rss.max },
            "host_cpu_s": { "median": r3(cpu.median), "min": r3(cpu.min), "max": r3(cpu.max) },
            "host_busy_share": r3(busy),
            "ratio_to_ctr": vs_ctr.map(r3), "ratio_to_podman": vs_podman.map(r3),
            "ratio_to_floor": vs_floor.map(r3),
        });
        if *name == "ctr" {
            let hwm = summary(&|s| s.daemon.map_or(0.0, |(h, _)| kib_f64(h)), v)
                .ok_or("no containerd samples")?;
            let base = summary(&|s| s.daemon.map_or(0.0, |(_, b)| kib_f64(b)), v)
                .ok_or("no containerd samples")?;
            j["containerd_peak_rss_kib"] = json!({ "median": hwm.median, "max": hwm.max });
            j["containerd_rss_before_kib"] = json!({ "median": base.median });
            daemon_lines.push(format!(
                "containerd daemon (where ctr's pull work happens): peak RSS {:.1} MiB median (VmHWM of a fresh daemon per pull), {:.1} MiB before the pull",
                hwm.median / 1024.0,
                base.median / 1024.0
            ));
        }
        if *name == "berth"
            && let Some(base) = summary(&|s| s.daemon.map_or(0.0, |(_, b)| kib_f64(b)), v)
            && v.iter().all(|s| s.daemon.is_some())
        {
            j["berthd_rss_before_kib"] = json!({ "median": base.median });
            daemon_lines.push(format!(
                "berthd (where berth's pull work happens): its peak RSS is berth's row (VmHWM of a fresh daemon per pull); {:.1} MiB before the pull",
                base.median / 1024.0
            ));
        }
        pulls.insert((*name).into(), j);
    }
    println!(
        "peak RSS: ru_maxrss (wait4) of the process started; berth's: berthd's VmHWM; the floor's: the largest tar, with its gzip"
    );
    println!(
        "host CPU s: CPU time the whole host was busy during the command (user, system, irq on all {} CPUs: the tool, its daemon, the registry, the kernel's writeback), not during the sync after; busy: that over median wall x CPUs",
        host.cpus
    );
    for l in daemon_lines {
        println!("{l}");
    }

    let berth = median("berth");
    let berth_rss = names
        .iter()
        .zip(samples)
        .find(|(n, _)| **n == "berth")
        .and_then(|(_, v)| summary(&|s| kib_f64(s.rss_kib), v))
        .map(|m| m.median / 1024.0);
    let targets = [
        (
            "berth_vs_ctr",
            "berth median <= 0.25x ctr",
            ratio(berth, median("ctr")),
            TARGET_VS_CTR,
            "x",
        ),
        (
            "berth_vs_floor",
            "berth median <= 0.5x tar floor",
            ratio(berth, median("floor")),
            TARGET_VS_FLOOR,
            "x",
        ),
        (
            "berth_rss_mib",
            "berth peak RSS <= 64 MiB",
            berth_rss,
            TARGET_RSS_MIB,
            " MiB",
        ),
    ];
    println!();
    println!("targets");
    let mut tj = Map::new();
    for (key, text, value, limit, unit) in targets {
        match value {
            Some(v) => {
                let met = v <= limit;
                println!(
                    "  {text:<34} {v:>7.2}{unit:<4} {}",
                    if met { "met" } else { "NOT MET" }
                );
                tj.insert(
                    key.into(),
                    json!({ "value": r3(v), "limit": limit, "met": met }),
                );
            }
            None => println!("  {text:<34} not measured (a tool was skipped)"),
        }
    }

    let result = json!({
        "bench": "pull",
        "date": host.date,
        "kernel": host.kernel,
        "cpus": host.cpus,
        "runs": a.runs,
        "drop_caches": a.drop_caches,
        "image": {
            "layers": image.layers.len(),
            "compressed_bytes": image.compressed(),
            "uncompressed_bytes": image.uncompressed,
            "files": image.files,
            "manifest": image.manifest,
        },
        "pull": pulls,
        "targets": tj,
    });
    println!();
    println!("RESULT {result}");
    Ok(())
}
