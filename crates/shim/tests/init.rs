//! `berth-shim init -- CMD...` as a container's pid 1 (`--init`).

mod common;

use common::*;

fn with_init(fx: &Fixture, args: &[&str]) {
    let shim = shim_bin();
    let mut argv = vec!["/sbin/berth-init", "init", "--"];
    argv.extend_from_slice(args);
    fx.bundle.edit(|v| {
        v["process"]["args"] = serde_json::json!(argv);
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/sbin/berth-init",
            "type": "bind",
            "source": shim,
            "options": ["bind", "ro"]
        }));
    });
}

#[test]
fn init_forwards_signals_and_passes_the_exit_code_through() {
    let mut fx = Fixture::new(&[]);
    with_init(
        &fx,
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    let stream = c.attach(None, false).unwrap();
    c.start().unwrap();
    read_until(&stream, "ready\n");
    // pid 1 is berth-init, the shell its child.
    let pids = c.pids().unwrap();
    let init_pid = c.state().unwrap().pid;
    assert!(pids.len() >= 2 && pids.contains(&init_pid), "{pids:?}");
    let cmd = std::fs::read(format!("/proc/{init_pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmd).starts_with("/sbin/berth-init\0init\0--\0sh"));
    // berth-init blocks every signal for itself; its child must start with none blocked.
    for pid in pids.iter().filter(|&&p| p != init_pid) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("SigBlk:")) {
            assert_eq!(
                line.split_whitespace().nth(1),
                Some("0000000000000000"),
                "pid {pid}"
            );
        }
    }
    c.kill(libc::SIGTERM, false).unwrap();
    let (out, _, exit) = collect(&stream);
    assert_eq!(out, "got-term\n");
    assert_eq!(exit.unwrap().code, 42);
}

#[test]
fn init_reaps_orphans_and_reports_signal_deaths() {
    let mut fx = Fixture::new(&[]);
    // The subshell exits at once; its `sleep` child is orphaned onto pid 1, exits, and must be
    // reaped by it. The shell then polls (bounded) until no zombie is left and only pid 1 and
    // itself remain (counted by a glob in the shell itself: a counting pipeline would race
    // with its own processes), and kills itself.
    with_init(
        &fx,
        &[
            "sh",
            "-c",
            "( sleep 0.01 & ); i=0; while [ $i -lt 500 ]; do \
               z=$(cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z '); \
               set -- /proc/[0-9]*; n=$#; \
               if [ \"$z\" = 0 ] && [ \"$n\" -le 2 ]; then echo reaped; kill -KILL $$; fi; \
               i=$((i+1)); sleep 0.01; done; echo zombie-left; exit 1",
        ],
    );
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    let stream = c.attach(None, false).unwrap();
    c.start().unwrap();
    let (out, _, exit) = collect(&stream);
    assert_eq!(out, "reaped\n");
    let exit = exit.unwrap();
    // The shell died of SIGKILL: init exits 128+9 (it is not itself signalled).
    assert_eq!((exit.code, exit.signal), (137, None));
}

#[test]
fn init_reports_a_missing_command_as_127() {
    let mut fx = Fixture::new(&[]);
    with_init(&fx, &["no-such-program"]);
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    c.start().unwrap();
    assert_eq!(c.wait().unwrap().code, 127);
    let log: String = fx.log_entries().into_iter().map(|(_, l)| l).collect();
    assert!(log.contains("no-such-program"), "{log}");
}
