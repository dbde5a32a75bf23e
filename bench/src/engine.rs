//! The `engine` mode: the container engine (the `berth` CLI, berthd, one berth-shim per
//! container) against containerd (`ctr`) and podman, on one busybox image loaded into every
//! store: start latency of `run --rm IMAGE true` (and the bare unshare+chroot floor), many
//! `run -d` at once, and `ps` latency and memory with hundreds of containers running.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::args::WARMUP_ROUNDS;
use crate::engine_args::EngineArgs;
use crate::engine_support::{
    Batch, Berth, BusyboxImage, Ctr, IMAGE_TAG, Mem, Podman, WorkDir, limits, pool,
};
use crate::stats::Summary;
use crate::subject::{run_checked, timed};
use crate::{Host, Result, check_interrupted, require_root, version, which};

/// The targets.
const TARGET_VS_CTR: f64 = 0.1;
const TARGET_VS_FLOOR: f64 = 3.0;
const TARGET_PS_MS: f64 = 50.0;
const TARGET_BERTHD_MIB: f64 = 20.0;
const TARGET_SHIM_MIB: f64 = 1.5;
/// Issue #5: what the default bridge network may add to `run --rm` over `--network none`.
const TARGET_BRIDGE_ADDED_MS: f64 = 15.0;

/// The programs, resolved.
struct Tools {
    berth: PathBuf,
    berthd: Option<PathBuf>,
    shim: Option<PathBuf>,
    containerd: Option<PathBuf>,
    ctr: Option<PathBuf>,
    podman: Option<PathBuf>,
}

fn resolve(a: &EngineArgs) -> Result<Tools> {
    let berth = a.berth.clone().unwrap_or_else(|| a.bin_dir.join("berth"));
    if !berth.is_file() {
        return Err(format!(
            "no berth at {}: build it with ./scripts/build.sh, or pass --bin-dir DIR / --berth PATH",
            berth.display()
        ));
    }
    let berth =
        std::fs::canonicalize(&berth).map_err(|e| format!("resolve {}: {e}", berth.display()))?;
    // berth starts the berthd found beside itself.
    let beside = |n: &str| berth.parent().map(|d| d.join(n)).filter(|p| p.is_file());
    let peer = |p: &Path, what: &str, skip: bool| -> Result<Option<PathBuf>> {
        if skip {
            return Ok(None);
        }
        which(p).map(Some).ok_or_else(|| {
            format!(
                "{} not found: install Debian's {what} package (./scripts/deps.sh), pass its path, or --skip it",
                p.display()
            )
        })
    };
    let no_ctr = a.skipped("ctr");
    for tool in ["unshare", "chroot", "tar", "sha256sum"] {
        if which(Path::new(tool)).is_none() {
            return Err(format!(
                "{tool} not found in $PATH (Debian packages util-linux, coreutils, tar)"
            ));
        }
    }
    Ok(Tools {
        berthd: beside("berthd"),
        shim: beside("berth-shim"),
        berth,
        containerd: peer(&a.containerd, "containerd", no_ctr)?,
        ctr: peer(&a.ctr, "containerd", no_ctr)?,
        podman: peer(&a.podman, "podman", a.skipped("podman"))?,
    })
}

/// Everything the parts share.
struct Engines {
    image: BusyboxImage,
    // Dropped in this order (each removes its containers and daemon): berth, ctr, podman last,
    // so that podman's cgroup parent is empty when it removes it.
    berth: Berth,
    ctr: Option<Ctr>,
    podman: Option<Podman>,
}

pub fn run(a: &EngineArgs) -> Result<()> {
    require_root()?;
    // The `/berth` cgroup parents the daemons make go when this returns, if they were new.
    let _cgroups = berth_testutil::host::berth_cgroups();
    let tools = resolve(a)?;
    if a.runs < 20 && !a.skipped("start") {
        eprintln!(
            "berth-bench: warning: {} rounds are too few for meaningful p10/p90; use --runs 20 or more",
            a.runs
        );
    }
    let host = Host::probe();
    println!(
        "berth-bench engine: {} UTC, kernel {}, {} cpus, cgroups {}",
        host.date, host.kernel, host.cpus, host.cgroups
    );
    println!("  {} ({})", version(&tools.berth), tools.berth.display());
    match (&tools.berthd, &tools.shim) {
        (Some(d), Some(s)) => println!(
            "  berthd: {} ({}); berth-shim: {}",
            version(d),
            d.display(),
            s.display()
        ),
        _ => println!(
            "  warning: berthd or berth-shim is missing beside {}",
            tools.berth.display()
        ),
    }
    for bin in [&tools.containerd, &tools.ctr, &tools.podman]
        .into_iter()
        .flatten()
    {
        println!("  {} ({})", version(bin), bin.display());
    }
    let lim = limits();
    println!(
        "  limits of this process (berthd inherits them): open files {}/{} (soft/hard), processes {}/{}, pid_max {}, pids cgroup max {}",
        lim["nofile"]["soft"],
        lim["nofile"]["hard"],
        lim["nproc"]["soft"],
        lim["nproc"]["hard"],
        lim["pid_max"].as_str().unwrap_or("?"),
        lim["pids_cgroup_max"].as_str().unwrap_or("none"),
    );

    let work = WorkDir::new(&a.tmpdir, a.loop_fs)?;
    println!("  stores: {}", work.describe());
    let image = BusyboxImage::build(&a.busybox, &work.path.join("image"))?;
    println!(
        "  image {IMAGE_TAG}: static busybox from {} with {} applet links, one layer of {} KiB ({})",
        a.busybox.display(),
        image.applets,
        image.layer_bytes / 1024,
        image.archive.display()
    );
    let result = with_engines(a, &tools, &work, image, &host, lim);
    println!("cleaning up (every container, daemon, mount and directory of this run)");
    result
}

fn with_engines(
    a: &EngineArgs,
    tools: &Tools,
    work: &WorkDir,
    image: BusyboxImage,
    host: &Host,
    lim: Value,
) -> Result<()> {
    // The guards exist before the first command that could create something.
    let mut eng = Engines {
        image,
        berth: Berth::new(tools.berth.clone(), work.path.join("b")),
        ctr: None,
        podman: None,
    };
    // berth: the first command starts berthd for the root.
    let mut load = eng.berth.cmd();
    load.arg("load").arg("-i").arg(&eng.image.archive);
    let t = run_checked(&mut load, "berth load (which also starts berthd)")?;
    let berthd = eng.berth.daemon_pid().ok_or_else(|| {
        format!(
            "berth load exited 0, but no live berthd is named in {}",
            eng.berth.state().join("berthd.pid").display()
        )
    })?;
    println!(
        "  berth: store {}, berthd pid {berthd}, `berth load` (with berthd's start) {:.0} ms",
        eng.berth.root.display(),
        t.as_secs_f64() * 1e3
    );
    if let (Some(containerd), Some(ctr)) = (&tools.containerd, &tools.ctr) {
        let c = Ctr::start(containerd, ctr.clone(), work.path.join("c"))?;
        let c = eng.ctr.insert(c);
        let t = c.import(&eng.image.archive)?;
        println!(
            "  ctr: private containerd in {} (namespace {}), import {:.0} ms as {}",
            c.dir.display(),
            c.ns,
            t.as_secs_f64() * 1e3,
            c.image
        );
    }
    if let Some(podman) = &tools.podman {
        let p = Podman::new(podman.clone(), work.path.join("p"))?;
        let p = eng.podman.insert(p);
        let t = p.load(&eng.image.archive)?;
        println!(
            "  podman: root in {} (runc, cgroupfs, file events), load {:.0} ms as {}",
            p.dir.display(),
            t.as_secs_f64() * 1e3,
            p.image
        );
    }

    let mut result = Map::new();
    let mut targets: Vec<Target> = Vec::new();
    if !a.skipped("start") {
        start_true(a, &eng, &mut result, &mut targets)?;
    }
    if !a.skipped("burst") {
        burst(a, &eng, &mut result)?;
    }
    if !a.skipped("load") {
        under_load(a, &eng, &mut result, &mut targets)?;
    }

    println!();
    println!("targets");
    let mut tj = Map::new();
    for t in &targets {
        match t.value {
            Some(v) => {
                let met = if t.strict { v < t.limit } else { v <= t.limit };
                println!(
                    "  {:<40} {:>8.2}{:<5} {}",
                    t.text,
                    v,
                    t.unit,
                    if met { "met" } else { "NOT MET" }
                );
                tj.insert(
                    t.key.into(),
                    json!({ "value": r3(v), "limit": t.limit, "met": met }),
                );
            }
            None => {
                println!("  {:<40} not measured", t.text);
                tj.insert(
                    t.key.into(),
                    json!({ "value": null, "limit": t.limit, "met": null }),
                );
            }
        }
    }
    result.insert("bench".into(), json!("engine"));
    result.insert("date".into(), json!(host.date));
    result.insert("kernel".into(), json!(host.kernel));
    result.insert("cpus".into(), json!(host.cpus));
    result.insert("cgroups".into(), json!(host.cgroups));
    result.insert("stores_fs".into(), json!(work.kind()));
    result.insert("limits".into(), lim);
    result.insert("targets".into(), Value::Object(tj));
    println!();
    println!("RESULT {}", Value::Object(result));
    drop(eng);
    Ok(())
}

/// One target line.
struct Target {
    key: &'static str,
    text: String,
    value: Option<f64>,
    limit: f64,
    unit: &'static str,
    /// `<` rather than `<=`.
    strict: bool,
}

// ---------------------------------------------------------------------------------------------
// Part 1: run --rm IMAGE true
// ---------------------------------------------------------------------------------------------

fn label(name: &str) -> &'static str {
    match name {
        "berth" => "berth run --rm --network none",
        "berth-bridge" => "berth run --rm (bridge)",
        "ctr" => "ctr run --rm",
        "podman" => "podman run --rm --network none",
        "floor" => "floor (unshare+chroot)",
        _ => "?",
    }
}

/// The command that starts `true` once in a container of `name`.
fn start_cmd(name: &str, eng: &Engines) -> Result<Command> {
    Ok(match name {
        // Without a network, like ctr's default and podman's `--network none`: the peers
        // are compared with the same work.
        "berth" => {
            let mut c = eng.berth.cmd();
            c.args(["run", "--rm", "--network", "none", IMAGE_TAG, "true"]);
            c
        }
        // The default network (CNI bridge, host-local): the cost of networking is the
        // difference of the two medians, timed in the same interleaved rounds.
        "berth-bridge" => {
            let mut c = eng.berth.cmd();
            c.args(["run", "--rm", IMAGE_TAG, "true"]);
            c
        }
        "ctr" => {
            let ctr = eng.ctr.as_ref().ok_or("no ctr")?;
            let mut c = ctr.cmd();
            c.args(["run", "--rm", &ctr.image])
                .arg(ctr.next_id("true"))
                .arg("true");
            c
        }
        "podman" => {
            let p = eng.podman.as_ref().ok_or("no podman")?;
            let mut c = p.cmd();
            c.args(["run", "--rm", "--network", "none", &p.image, "true"]);
            c
        }
        "floor" => {
            let mut c = Command::new("unshare");
            c.args([
                "--mount", "--pid", "--fork", "--uts", "--ipc", "--net", "chroot",
            ]);
            c.arg(&eng.image.rootfs).arg("/bin/true");
            c
        }
        other => return Err(format!("unknown subject {other}")),
    })
}

fn start_true(
    a: &EngineArgs,
    eng: &Engines,
    result: &mut Map<String, Value>,
    targets: &mut Vec<Target>,
) -> Result<()> {
    let mut names: Vec<&'static str> = vec!["berth"];
    if !a.skipped("bridge") {
        names.push("berth-bridge");
    }
    if eng.ctr.is_some() {
        names.push("ctr");
    }
    if eng.podman.is_some() {
        names.push("podman");
    }
    if !a.skipped("floor") {
        names.push("floor");
    }
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    // Warm-up: berth must work; a peer that fails is reported and left out.
    for round in 0..WARMUP_ROUNDS {
        let mut keep = Vec::new();
        for name in &names {
            check_interrupted()?;
            let mut cmd = start_cmd(name, eng)?;
            match timed(&mut cmd)? {
                Ok(_) => keep.push(*name),
                Err(f) if name.starts_with("berth") => {
                    return Err(format!(
                        "warm-up round {}: `berth run --rm {IMAGE_TAG} true` failed ({}): {}",
                        round + 1,
                        f.status,
                        f.text()
                    ));
                }
                Err(f) => {
                    errors.push((name, format!("not runnable here: {}", f.first_line())));
                }
            }
        }
        names = keep;
    }
    let progress = std::io::stderr().is_terminal();
    let n = names.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(a.runs); n];
    for round in 0..a.runs {
        for k in 0..n {
            check_interrupted()?;
            let i = (round + k) % n;
            let mut cmd = start_cmd(names[i], eng)?;
            match timed(&mut cmd)? {
                Ok(d) => samples[i].push(d.as_secs_f64() * 1e3),
                Err(f) => {
                    return Err(format!(
                        "round {}: {} failed ({}): {}",
                        round + 1,
                        label(names[i]),
                        f.status,
                        f.text()
                    ));
                }
            }
        }
        if progress {
            eprint!("\rberth-bench: start: round {}/{}", round + 1, a.runs);
        }
    }
    if progress {
        eprintln!();
    }
    let left = eng.berth.ids(true)?;

    let sums: Vec<(&str, Summary)> = names
        .iter()
        .zip(&samples)
        .filter_map(|(n, s)| Summary::of(s).map(|m| (*n, m)))
        .collect();
    let median = |n: &str| sums.iter().find(|(m, _)| *m == n).map(|(_, s)| s.median);
    let ratio = |x: f64, d: Option<f64>| d.map(|d| x / d);
    let fr = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
    println!();
    println!(
        "start `true` (part 1): wall time of spawn+wait, {} interleaved rounds after {WARMUP_ROUNDS} warm-up rounds, ms",
        a.runs
    );
    println!(
        "{:<32} {:>8} {:>8} {:>8} {:>7} {:>9} {:>8}",
        "subject", "median", "p10", "p90", "x ctr", "x podman", "x floor"
    );
    let mut j = Map::new();
    for (name, s) in &sums {
        let (c, p, f) = (
            ratio(s.median, median("ctr")),
            ratio(s.median, median("podman")),
            ratio(s.median, median("floor")),
        );
        println!(
            "{:<32} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>9} {:>8}",
            label(name),
            s.median,
            s.p10,
            s.p90,
            fr(c),
            fr(p),
            fr(f)
        );
        j.insert(
            (*name).into(),
            json!({
                "median_ms": r3(s.median), "p10_ms": r3(s.p10), "p90_ms": r3(s.p90),
                "min_ms": r3(s.min), "max_ms": r3(s.max),
                "ratio_to_ctr": c.map(r3), "ratio_to_podman": p.map(r3), "ratio_to_floor": f.map(r3),
            }),
        );
    }
    for (name, e) in &errors {
        println!("{:<32} {e}", label(name));
        j.insert((*name).into(), json!({ "error": e }));
    }
    if !left.is_empty() {
        println!(
            "  note: {} containers are left in `berth ps -a` after {} `run --rm`s",
            left.len(),
            a.runs + WARMUP_ROUNDS
        );
    }
    j.insert("berth_left_after_rm".into(), json!(left.len()));
    let added = median("berth").and_then(|n| median("berth-bridge").map(|b| b - n));
    if let Some(d) = added {
        println!("  the default bridge network adds {d:.2} ms to the median of berth run --rm");
        j.insert("bridge_added_ms".into(), json!(r3(d)));
    }
    result.insert("start_true".into(), Value::Object(j));
    result.insert("runs".into(), json!(a.runs));
    result.insert("warmup_rounds".into(), json!(WARMUP_ROUNDS));
    let berth = median("berth");
    targets.push(Target {
        key: "bridge_added_ms",
        text: format!("bridge adds <= {TARGET_BRIDGE_ADDED_MS} ms to run --rm"),
        value: added,
        limit: TARGET_BRIDGE_ADDED_MS,
        unit: "ms",
        strict: false,
    });
    targets.push(Target {
        key: "berth_vs_ctr",
        text: format!("berth run --rm median <= {TARGET_VS_CTR}x ctr"),
        value: berth.and_then(|b| ratio(b, median("ctr"))),
        limit: TARGET_VS_CTR,
        unit: "x",
        strict: false,
    });
    targets.push(Target {
        key: "berth_vs_floor",
        text: format!("berth run --rm median <= {TARGET_VS_FLOOR}x floor"),
        value: berth.and_then(|b| ratio(b, median("floor"))),
        limit: TARGET_VS_FLOOR,
        unit: "x",
        strict: false,
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 2: N x run -d at once
// ---------------------------------------------------------------------------------------------

/// `berth run -d IMAGE sleep 1000`.
fn berth_run_d(berth: &Berth) -> Command {
    let mut c = berth.cmd();
    c.args(["run", "-d", IMAGE_TAG, "sleep", "1000"]);
    c
}

fn ctr_run_d(ctr: &Ctr, id: &str) -> Command {
    let mut c = ctr.cmd();
    c.args(["run", "-d", &ctr.image, id, "sleep", "1000"]);
    c
}

/// Count the running tasks of a ctr namespace.
fn ctr_running(ctr: &Ctr) -> Result<usize> {
    let mut c = ctr.cmd();
    c.args(["tasks", "ls"]);
    Ok(crate::pull_support::output(&mut c)?
        .lines()
        .filter(|l| l.split_whitespace().last() == Some("RUNNING"))
        .count())
}

fn batch_json(b: &Batch, running: usize) -> Value {
    let s = Summary::of(&b.each_ms);
    json!({
        "wall_s": r3(b.wall.as_secs_f64()),
        "each_median_ms": s.map(|s| r3(s.median)),
        "each_p90_ms": s.map(|s| r3(s.p90)),
        "each_max_ms": s.map(|s| r3(s.max)),
        "succeeded": b.each_ms.len(),
        "failed": b.failures.len(),
        "failures": b.failure_lines(5),
        "running_after": running,
    })
}

fn burst(a: &EngineArgs, eng: &Engines, result: &mut Map<String, Value>) -> Result<()> {
    let n = a.concurrent;
    let berth = &eng.berth;
    let b = pool(n, n, |_| berth_run_d(berth))?;
    let b_running = berth.ids(false)?.len();
    let (removed, b_rm) = berth.remove_all()?;
    let mut rows = vec![("berth run -d", b, b_running, Some((removed, b_rm)))];
    if let Some(ctr) = &eng.ctr {
        let c = pool(n, n, |i| ctr_run_d(ctr, &format!("burst-{i}")))?;
        let c_running = ctr_running(ctr)?;
        let start = Instant::now();
        let removed = ctr.remove_all()?;
        rows.push(("ctr run -d", c, c_running, Some((removed, start.elapsed()))));
    }
    let ctr_wall = rows
        .iter()
        .find(|r| r.0.starts_with("ctr"))
        .map(|r| r.1.wall.as_secs_f64());
    println!();
    println!(
        "{n} containers started at once (part 2): `run -d IMAGE sleep 1000`, {n} processes released together"
    );
    println!(
        "{:<16} {:>8} {:>7} {:>14} {:>9} {:>9} {:>7} {:>8} {:>14}",
        "engine",
        "total s",
        "x ctr",
        "each median ms",
        "p90 ms",
        "max ms",
        "failed",
        "running",
        "remove all s"
    );
    let mut j = Map::new();
    j.insert("n".into(), json!(n));
    for (name, b, running, rm) in &rows {
        let s = Summary::of(&b.each_ms);
        let f = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
        let ratio = ctr_wall.map(|c| b.wall.as_secs_f64() / c);
        println!(
            "{:<16} {:>8.2} {:>7} {:>14} {:>9} {:>9} {:>7} {:>8} {:>14}",
            name,
            b.wall.as_secs_f64(),
            ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}")),
            f(s.map(|s| s.median)),
            f(s.map(|s| s.p90)),
            f(s.map(|s| s.max)),
            b.failures.len(),
            running,
            rm.map_or_else(|| "-".into(), |(_, d)| format!("{:.2}", d.as_secs_f64())),
        );
        for l in b.failure_lines(3) {
            println!("    failure: {l}");
        }
        let mut bj = batch_json(b, *running);
        bj["ratio_to_ctr"] = json!(ratio.map(r3));
        bj["remove_all_s"] = json!(rm.map(|(_, d)| r3(d.as_secs_f64())));
        j.insert(
            if name.starts_with("berth") {
                "berth"
            } else {
                "ctr"
            }
            .into(),
            bj,
        );
    }
    println!(
        "  remove all: berth `rm -f ID...` (one command); ctr: `tasks kill -s SIGKILL`, `tasks delete -f`, `containers delete` per container, one after another"
    );
    result.insert("burst".into(), Value::Object(j));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 3: hundreds running
// ---------------------------------------------------------------------------------------------

/// Median, min, max of one field over processes.
fn mem_row(name: &str, mems: &[Mem]) -> Option<Value> {
    let f = |g: &dyn Fn(&Mem) -> u64| {
        #[allow(clippy::cast_precision_loss, reason = "KiB counts are far below 2^53")]
        let v: Vec<f64> = mems.iter().map(|m| g(m) as f64).collect();
        Summary::of(&v)
    };
    let rss = f(&|m| m.rss)?;
    let pss = f(&|m| m.pss)?;
    let uss = f(&|m| m.uss)?;
    let hwm = f(&|m| m.hwm)?;
    println!(
        "{:<40} {:>6} {:>9.0} {:>8.0} {:>8.0} {:>9.0} {:>9.0} {:>8.0}",
        name,
        mems.len(),
        rss.median,
        rss.min,
        rss.max,
        pss.median,
        uss.median,
        hwm.median
    );
    Some(json!({
        "count": mems.len(),
        "rss_kib": { "median": rss.median, "min": rss.min, "max": rss.max },
        "pss_kib": { "median": pss.median, "min": pss.min, "max": pss.max },
        "uss_kib": { "median": uss.median },
        "hwm_kib": { "median": hwm.median },
        "threads": mems.first().map(|m| m.threads),
        "fds": mems.first().map(|m| m.fds),
    }))
}

/// Memory of idle peer containers: `peer_idle` ctr and podman containers, then removed.
fn peers_idle(a: &EngineArgs, eng: &Engines) -> Result<(Vec<Mem>, Vec<Mem>, Option<Mem>)> {
    let (mut shims, mut conmons, mut containerd) = (Vec::new(), Vec::new(), None);
    if let Some(ctr) = &eng.ctr {
        let b = pool(a.peer_idle, a.peer_idle, |i| {
            ctr_run_d(ctr, &format!("idle-{i}"))
        })?;
        if let Some(l) = b.failure_lines(1).first() {
            return Err(format!("ctr run -d (idle containers): {l}"));
        }
        std::thread::sleep(Duration::from_secs(1));
        shims = ctr.shims().into_iter().filter_map(Mem::of).collect();
        containerd = ctr.daemon_mem();
        ctr.remove_all()?;
    }
    if let Some(p) = &eng.podman {
        let b = pool(a.peer_idle, a.peer_idle, |_| {
            let mut c = p.cmd();
            c.args(["run", "-d", "--network", "none", &p.image, "sleep", "1000"]);
            c
        })?;
        if let Some(l) = b.failure_lines(1).first() {
            return Err(format!("podman run -d (idle containers): {l}"));
        }
        std::thread::sleep(Duration::from_secs(1));
        conmons = p.conmons().into_iter().filter_map(Mem::of).collect();
        p.remove_all()?;
    }
    Ok((shims, conmons, containerd))
}

#[allow(
    clippy::too_many_lines,
    reason = "one straight sequence: fill, time ps, measure, report, remove"
)]
fn under_load(
    a: &EngineArgs,
    eng: &Engines,
    result: &mut Map<String, Value>,
    targets: &mut Vec<Target>,
) -> Result<()> {
    let (ctr_shims, conmons, containerd) = peers_idle(a, eng)?;
    let berth = &eng.berth;
    let daemon = berth
        .daemon_pid()
        .ok_or("berthd is no longer running (its pid file names no live berthd)")?;
    let idle = Mem::of(daemon);

    let n = a.containers;
    let progress = std::io::stderr().is_terminal();
    if progress {
        eprintln!(
            "berth-bench: starting {n} berth containers, {} at a time",
            a.concurrent
        );
    }
    let fill = pool(n, a.concurrent, |_| berth_run_d(berth))?;
    let running = berth.ids(false)?.len();
    std::thread::sleep(Duration::from_secs(1));

    // `ps` and `ps -a`, interleaved, after two untimed of each.
    let mut ps = Vec::new();
    let mut ps_a = Vec::new();
    for i in 0..a.ps_runs + 2 {
        for (all, v) in [(false, &mut ps), (true, &mut ps_a)] {
            check_interrupted()?;
            let mut c = berth.cmd();
            c.arg("ps");
            if all {
                c.arg("-a");
            }
            match timed(&mut c)? {
                Ok(d) if i >= 2 => v.push(d.as_secs_f64() * 1e3),
                Ok(_) => {}
                Err(f) => {
                    return Err(format!(
                        "berth ps{} with {running} running failed ({}): {}",
                        if all { " -a" } else { "" },
                        f.status,
                        f.text()
                    ));
                }
            }
        }
    }
    let ps_lines = {
        let mut c = berth.cmd();
        c.arg("ps");
        crate::pull_support::output(&mut c)?.lines().count()
    };
    let berthd = Mem::of(daemon);
    let shim_pids = berth.shims();
    let shims: Vec<Mem> = shim_pids.iter().filter_map(|(_, p)| Mem::of(*p)).collect();
    let (removed, rm_time) = berth.remove_all()?;
    let after_rm = Mem::of(daemon);

    let fill_s = Summary::of(&fill.each_ms);
    println!();
    println!(
        "{n} berth containers `run -d IMAGE sleep 1000`, {} at a time (part 3): {:.2} s in all, each median {} ms p90 {} ms; {} failed; {running} running",
        a.concurrent,
        fill.wall.as_secs_f64(),
        fill_s.map_or_else(|| "-".into(), |s| format!("{:.1}", s.median)),
        fill_s.map_or_else(|| "-".into(), |s| format!("{:.1}", s.p90)),
        fill.failures.len(),
    );
    for l in fill.failure_lines(5) {
        println!("    failure: {l}");
    }
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>8}",
        format!("with {running} running, {} runs, ms", a.ps_runs),
        "median",
        "p10",
        "p90",
        "max"
    );
    let mut psj = Map::new();
    for (name, v) in [("berth ps", &ps), ("berth ps -a", &ps_a)] {
        let s = Summary::of(v).ok_or("no ps samples")?;
        println!(
            "{:<40} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name, s.median, s.p10, s.p90, s.max
        );
        psj.insert(
            if name.ends_with("-a") { "ps_a" } else { "ps" }.into(),
            json!({ "median_ms": r3(s.median), "p10_ms": r3(s.p10), "p90_ms": r3(s.p90), "max_ms": r3(s.max) }),
        );
    }
    println!("  `berth ps` printed {ps_lines} lines (a header and one per running container)");

    println!();
    println!(
        "memory, KiB (VmRSS and VmHWM from /proc/PID/status; PSS and USS = Private_* from smaps_rollup)"
    );
    println!(
        "{:<40} {:>6} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "process", "count", "RSS med", "min", "max", "PSS med", "USS med", "HWM med"
    );
    let mut mj = Map::new();
    let mut put = |key: &str, name: String, mems: &[Mem]| {
        if let Some(v) = mem_row(&name, mems) {
            mj.insert(key.into(), v);
        }
    };
    put(
        "berthd_idle",
        "berthd, before (no containers)".into(),
        &idle.into_iter().collect::<Vec<_>>(),
    );
    put(
        "berthd_loaded",
        format!("berthd, {running} running"),
        &berthd.into_iter().collect::<Vec<_>>(),
    );
    put(
        "berthd_after_rm",
        "berthd, after removing them".into(),
        &after_rm.into_iter().collect::<Vec<_>>(),
    );
    put(
        "berth_shim",
        format!("berth-shim, {running} running"),
        &shims,
    );
    put(
        "containerd_shim",
        format!("containerd-shim-runc-v2, {} idle", ctr_shims.len()),
        &ctr_shims,
    );
    put(
        "conmon",
        format!("conmon (podman), {} idle", conmons.len()),
        &conmons,
    );
    put(
        "containerd",
        "containerd, after parts 1 and 2".into(),
        &containerd.into_iter().collect::<Vec<_>>(),
    );
    if let Some(m) = berthd {
        println!(
            "  berthd with {running} running: {} threads, {} open fds",
            m.threads, m.fds
        );
    }
    println!(
        "  `berth rm -f` of {removed}: {:.2} s",
        rm_time.as_secs_f64()
    );

    let f64_of = |m: Option<Mem>| {
        #[allow(clippy::cast_precision_loss, reason = "KiB counts are far below 2^53")]
        m.map(|m| m.rss as f64 / 1024.0)
    };
    let shim_median = {
        #[allow(clippy::cast_precision_loss, reason = "KiB counts are far below 2^53")]
        let v: Vec<f64> = shims.iter().map(|m| m.rss as f64 / 1024.0).collect();
        Summary::of(&v).map(|s| s.median)
    };
    result.insert(
        "load".into(),
        json!({
            "containers": n,
            "concurrent": a.concurrent,
            "fill": batch_json(&fill, running),
            "ps_runs": a.ps_runs,
            "ps_lines": ps_lines,
            "latency": psj,
            "memory": mj,
            "rm_all_s": r3(rm_time.as_secs_f64()),
            "removed": removed,
        }),
    );
    let ps_median = Summary::of(&ps).map(|s| s.median);
    targets.push(Target {
        key: "ps_ms",
        text: format!("berth ps with {running} running < {TARGET_PS_MS} ms"),
        value: ps_median,
        limit: TARGET_PS_MS,
        unit: " ms",
        strict: true,
    });
    targets.push(Target {
        key: "berthd_rss_mib",
        text: format!("berthd RSS with {running} running <= {TARGET_BERTHD_MIB} MiB"),
        value: f64_of(berthd),
        limit: TARGET_BERTHD_MIB,
        unit: " MiB",
        strict: false,
    });
    targets.push(Target {
        key: "shim_rss_mib",
        text: format!("berth-shim RSS median <= {TARGET_SHIM_MIB} MiB"),
        value: shim_median,
        limit: TARGET_SHIM_MIB,
        unit: " MiB",
        strict: false,
    });
    Ok(())
}

/// Round to three decimals for the RESULT line.
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
