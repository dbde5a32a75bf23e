//! Measure an idle shim's memory: `cargo run --release -p berth-shim --example shim_rss -- SHIM_BIN`.
//!
//! Spawns the shim for a busybox `sleep` container, starts it, and prints the shim's VmRSS (from
//! /proc/PID/status) and Pss (from /proc/PID/smaps_rollup): idle after start, then again after an
//! attach, an exec and some logged output, then deletes the container.

use std::path::PathBuf;

use berth_shim::{ExecRequest, LogOpts, ShimConfig};
use berth_testutil::Bundle;

fn field(path: &str, name: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_string())
        .unwrap_or_default()
}

fn report(what: &str, pid: i32) {
    println!(
        "{what}: VmRSS {} Pss {} (Pss_Anon {}, Pss_File {})",
        field(&format!("/proc/{pid}/status"), "VmRSS:"),
        field(&format!("/proc/{pid}/smaps_rollup"), "Pss:"),
        field(&format!("/proc/{pid}/smaps_rollup"), "Pss_Anon:"),
        field(&format!("/proc/{pid}/smaps_rollup"), "Pss_File:"),
    );
}

fn main() {
    let shim: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .expect("usage: shim_rss SHIM_BIN");
    let bundle = Bundle::busybox(&["sh", "-c", "echo hello; exec sleep 1000"]);
    let root = tempfile::tempdir().unwrap();
    let cfg = ShimConfig {
        id: format!("rss-{}", std::process::id()),
        bundle: bundle.path().to_path_buf(),
        runtime_root: root.path().to_path_buf(),
        runtime: None,
        tty: false,
        stdin: false,
        log: Some(LogOpts {
            path: bundle.path().join("ctr-json.log"),
            max_size: 0,
            max_file: 1,
        }),
        cgroup: None,
        new_netns: false,
    };
    let c = berth_shim::spawn(&shim, &cfg).expect("spawn");
    let pid = c.shim_pid().unwrap();
    report("created", pid);
    c.start().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    report("running, idle", pid);
    let s = c.attach(None, false).unwrap();
    let mut p = berth_testutil::default_config(&["true"])["process"].clone();
    p["terminal"] = serde_json::json!(false);
    let h = c
        .exec(&ExecRequest {
            id: "e".into(),
            process: serde_json::from_value(p).unwrap(),
            stdin: false,
            detach: false,
            size: None,
        })
        .unwrap();
    while let Ok(Some(_)) = h.stream.as_ref().unwrap().recv() {}
    drop(s);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    report("after attach + exec + pids", pid);
    c.pids().unwrap();
    report("right after pids", pid);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    report("idle again", pid);
    if std::env::var_os("SHIM_RSS_SMAPS").is_some() {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        for l in smaps.lines() {
            if l.contains('-') && !l.starts_with(|c: char| c.is_ascii_uppercase())
                || l.starts_with("Rss:")
            {
                println!("{l}");
            }
        }
    }
    c.delete().unwrap();
}
