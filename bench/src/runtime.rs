//! The `runtime` mode: start latency of `/bin/true` against runc, crun and the floor, and the
//! peak resident set of `create`.

use std::io::IsTerminal;
use std::process::Command;

use serde_json::{Map, Value, json};

use crate::args::{Args, WARMUP_ROUNDS};
use crate::bundle::Bundle;
use crate::stats::Summary;
use crate::subject::{self, Oci, Subject, timed};
use crate::{Host, Result, check_interrupted, require_root, version, which};

/// The targets: berth's median start against runc and the floor, `create`'s RSS.
const TARGET_VS_RUNC: f64 = 0.25;
const TARGET_VS_FLOOR: f64 = 2.0;
const TARGET_RSS_KIB: f64 = 3072.0;

pub fn run(a: &Args) -> Result<()> {
    require_root()?;
    if !a.berth.is_file() {
        return Err(format!(
            "no berth-runtime at {}: build it first with `cargo build --release -p berth-runtime-cli`, or pass --berth PATH",
            a.berth.display()
        ));
    }
    let berth = std::fs::canonicalize(&a.berth)
        .map_err(|e| format!("resolve {}: {e}", a.berth.display()))?;
    let runc = which(&a.runc).ok_or_else(|| {
        format!(
            "runc not found ({}): install it with ./scripts/deps.sh or pass --runc PATH",
            a.runc.display()
        )
    })?;
    let crun = which(&a.crun);
    for tool in ["unshare", "chroot"] {
        if which(std::path::Path::new(tool)).is_none() {
            return Err(format!(
                "{tool} not found in $PATH (Debian packages util-linux and coreutils)"
            ));
        }
    }
    if a.runs < 20 {
        eprintln!(
            "berth-bench: warning: {} rounds are too few for meaningful p10/p90; use --runs 20 or more",
            a.runs
        );
    }

    let host = Host::probe();
    println!(
        "berth-bench runtime: {} UTC, kernel {}, {} cpus, cgroups {}",
        host.date, host.kernel, host.cpus, host.cgroups
    );
    println!("  {} ({})", version(&berth), berth.display());
    println!("  {} ({})", version(&runc), runc.display());
    if let Some(c) = &crun {
        println!("  {} ({})", version(c), c.display());
    }

    // Declared before the subjects, so dropped after them: containers go before their bundle.
    let bundle = Bundle::prepare(&a.busybox, &berth)?;
    println!(
        "  bundle {} (static busybox from {}, /bin/true, config.json from `berth-runtime spec`)",
        bundle.path().display(),
        a.busybox.display()
    );
    let mut subjects = vec![
        Subject::Oci(Oci::new("berth", berth)?),
        Subject::Oci(Oci::new("runc", runc)?),
    ];
    let mut crun_error = None;
    match crun {
        Some(c) => subjects.push(Subject::Oci(Oci::new("crun", c)?)),
        None => crun_error = Some(format!("not installed ({})", a.crun.display())),
    }
    subjects.push(Subject::Floor {
        rootfs: bundle.rootfs(),
    });

    let progress = std::io::stderr().is_terminal();
    if let Some(e) = warm_up(&mut subjects, &bundle)? {
        crun_error = Some(e);
    }
    let samples = time_rounds(&mut subjects, &bundle, a.runs, progress)?;
    let starts = print_starts(&subjects, &samples, crun_error.as_deref(), a.runs)?;
    let rss = measure_rss(&mut subjects, &bundle, a.rss_runs, progress)?;
    let rss_json = print_rss(&rss, a.rss_runs)?;

    let vs_runc = starts.berth / starts.runc;
    let vs_floor = starts.berth / starts.floor;
    let berth_rss = rss
        .iter()
        .find(|(n, _)| *n == "berth")
        .and_then(|(_, v)| Summary::of(v))
        .ok_or("berth has no RSS samples")?
        .median;
    let met = |ok: bool| if ok { "met" } else { "NOT MET" };
    println!();
    println!("targets");
    println!(
        "  berth median <= {TARGET_VS_RUNC}x runc          {vs_runc:>6.2}x     {}",
        met(vs_runc <= TARGET_VS_RUNC)
    );
    println!(
        "  berth median <= {TARGET_VS_FLOOR}x floor            {vs_floor:>6.2}x     {}",
        met(vs_floor <= TARGET_VS_FLOOR)
    );
    println!(
        "  berth create peak RSS <= {TARGET_RSS_KIB} KiB {berth_rss:>6.0} KiB  {}",
        met(berth_rss <= TARGET_RSS_KIB)
    );

    let result = json!({
        "bench": "runtime",
        "date": host.date,
        "kernel": host.kernel,
        "cpus": host.cpus,
        "cgroups": host.cgroups,
        "runs": a.runs,
        "warmup_rounds": WARMUP_ROUNDS,
        "rss_runs": a.rss_runs,
        "start_true": starts.json,
        "rss_kib": rss_json,
        "targets": {
            "berth_vs_runc": { "value": r3(vs_runc), "limit": TARGET_VS_RUNC, "met": vs_runc <= TARGET_VS_RUNC },
            "berth_vs_floor": { "value": r3(vs_floor), "limit": TARGET_VS_FLOOR, "met": vs_floor <= TARGET_VS_FLOOR },
            "berth_create_rss_kib": { "value": berth_rss, "limit": TARGET_RSS_KIB, "met": berth_rss <= TARGET_RSS_KIB },
        },
    });
    println!();
    println!("RESULT {result}");
    Ok(())
}

/// Warm page caches, cgroup hierarchies and the binaries. crun gets one try: if it fails, it is
/// dropped (deleting whatever it left) and the returned message says why.
fn warm_up(subjects: &mut Vec<Subject>, bundle: &Bundle) -> Result<Option<String>> {
    let mut crun_error = None;
    for round in 0..WARMUP_ROUNDS {
        for s in subjects.iter_mut() {
            check_interrupted()?;
            let mut cmd = s.command(bundle.path());
            if let Err(f) = timed(&mut cmd)? {
                if s.name() == "crun" && round == 0 {
                    crun_error = Some(format!("not runnable here: {}", f.first_line()));
                } else {
                    return Err(format!(
                        "warm-up: {} failed ({}): {}",
                        subject::show(&cmd),
                        f.status,
                        f.text()
                    ));
                }
            }
        }
        if crun_error.is_some() {
            subjects.retain(|s| s.name() != "crun");
        }
    }
    Ok(crun_error)
}

/// `runs` rounds, each starting every subject once, the first one rotating so that none always
/// runs first. Returns milliseconds per subject, in the order of `subjects`.
fn time_rounds(
    subjects: &mut [Subject],
    bundle: &Bundle,
    runs: usize,
    progress: bool,
) -> Result<Vec<Vec<f64>>> {
    let n = subjects.len();
    let mut samples = vec![Vec::with_capacity(runs); n];
    for round in 0..runs {
        if progress {
            eprint!("\rberth-bench: round {}/{runs}", round + 1);
        }
        for k in 0..n {
            check_interrupted()?;
            let i = (round + k) % n;
            let mut cmd = subjects[i].command(bundle.path());
            match timed(&mut cmd)? {
                Ok(d) => samples[i].push(d.as_secs_f64() * 1e3),
                Err(f) => {
                    return Err(format!(
                        "round {}: {} failed ({}): {}",
                        round + 1,
                        subject::show(&cmd),
                        f.status,
                        f.text()
                    ));
                }
            }
        }
    }
    if progress {
        eprintln!();
    }
    Ok(samples)
}

/// The medians the targets need, and the timing part of the RESULT line.
struct Starts {
    berth: f64,
    runc: f64,
    floor: f64,
    json: Value,
}

fn print_starts(
    subjects: &[Subject],
    samples: &[Vec<f64>],
    crun_error: Option<&str>,
    runs: usize,
) -> Result<Starts> {
    let mut rows = Vec::with_capacity(subjects.len());
    for (s, v) in subjects.iter().zip(samples) {
        let m = Summary::of(v).ok_or_else(|| format!("{} has no samples", s.name()))?;
        rows.push((s.label(), s.name(), m));
    }
    let median_of = |name: &str| {
        rows.iter()
            .find(|(_, n, _)| *n == name)
            .map(|(_, _, m)| m.median)
            .ok_or_else(|| format!("{name} has no samples"))
    };
    let (berth, runc, floor) = (median_of("berth")?, median_of("runc")?, median_of("floor")?);

    println!();
    println!(
        "start /bin/true: wall time of spawn+wait, {runs} interleaved rounds after {WARMUP_ROUNDS} warm-up rounds"
    );
    println!(
        "{:<24} {:>10} {:>9} {:>9} {:>8} {:>8}",
        "runtime", "median ms", "p10 ms", "p90 ms", "x runc", "x floor"
    );
    let mut json = Map::new();
    for (label, name, m) in &rows {
        // crun's row, when it could not run, goes where it would have been: before the floor.
        if let Some(e) = crun_error.filter(|_| *name == "floor") {
            println!("{:<24} {e}", "crun");
            json.insert("crun".into(), json!({ "error": e }));
        }
        println!(
            "{label:<24} {:>10.2} {:>9.2} {:>9.2} {:>8.2} {:>8.2}",
            m.median,
            m.p10,
            m.p90,
            m.median / runc,
            m.median / floor
        );
        json.insert(
            (*name).into(),
            json!({
                "median_ms": r3(m.median), "p10_ms": r3(m.p10), "p90_ms": r3(m.p90),
                "min_ms": r3(m.min), "max_ms": r3(m.max),
                "ratio_to_runc": r3(m.median / runc), "ratio_to_floor": r3(m.median / floor),
            }),
        );
    }
    Ok(Starts {
        berth,
        runc,
        floor,
        json: Value::Object(json),
    })
}

/// Peak RSS of `create` for every OCI runtime still in the running, interleaved, each
/// container force-deleted at once; plus a static busybox `true` measured the same way, as a
/// reference for what a trivial static program costs (see `rss.rs`). KiB per runtime name,
/// `reference` last.
fn measure_rss(
    subjects: &mut [Subject],
    bundle: &Bundle,
    runs: usize,
    progress: bool,
) -> Result<Vec<(&'static str, Vec<f64>)>> {
    if progress {
        eprintln!("berth-bench: peak RSS of create, {runs} runs each");
    }
    let mut ocis: Vec<&mut Oci> = subjects
        .iter_mut()
        .filter_map(|s| match s {
            Subject::Oci(o) => Some(o),
            Subject::Floor { .. } => None,
        })
        .collect();
    let mut out: Vec<(&'static str, Vec<f64>)> = ocis
        .iter()
        .map(|o| (o.name, Vec::with_capacity(runs)))
        .chain([("reference", Vec::with_capacity(runs))])
        .collect();
    let busybox = bundle.rootfs().join("bin/busybox");
    for _ in 0..runs {
        for (o, (_, v)) in ocis.iter_mut().zip(out.iter_mut()) {
            check_interrupted()?;
            let (mut cmd, id) = o.create_cmd(bundle.path());
            let kib = crate::rss::measure(&mut cmd)?;
            o.delete(&id)?;
            v.push(kib_f64(kib));
        }
        let mut cmd = Command::new(&busybox);
        cmd.arg("true");
        let kib = crate::rss::measure(&mut cmd)?;
        if let Some((_, v)) = out.last_mut() {
            v.push(kib_f64(kib));
        }
    }
    Ok(out)
}

fn print_rss(rss: &[(&'static str, Vec<f64>)], runs: usize) -> Result<Value> {
    println!();
    println!(
        "peak RSS of `create` (ru_maxrss from wait4), {runs} runs each; the container's init is not counted"
    );
    println!(
        "{:<28} {:>10} {:>9} {:>9}",
        "runtime", "median KiB", "min KiB", "max KiB"
    );
    let mut json = Map::new();
    for (name, v) in rss {
        let m = Summary::of(v).ok_or_else(|| format!("{name} has no RSS samples"))?;
        let (label, key) = match *name {
            "reference" => (
                "(reference: busybox true)".to_owned(),
                "reference_busybox_true".to_owned(),
            ),
            "berth" => ("berth-runtime create".to_owned(), "berth_create".to_owned()),
            other => (format!("{other} create"), format!("{other}_create")),
        };
        println!(
            "{label:<28} {:>10.0} {:>9.0} {:>9.0}",
            m.median, m.min, m.max
        );
        json.insert(
            key,
            json!({ "median_kib": m.median, "min_kib": m.min, "max_kib": m.max }),
        );
    }
    Ok(Value::Object(json))
}

/// Round to three decimals for the RESULT line.
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn kib_f64(k: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "a KiB count is far below 2^53")]
    let f = k as f64;
    f
}
