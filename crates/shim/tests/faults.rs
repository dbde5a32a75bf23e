//! The shim outlives its spawner; failed creations leave nothing behind.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use berth_shim::Status;
use common::*;

/// Not a test of its own: the spawner process of `the_shim_survives_its_spawner_being_killed`
/// (the test binary re-executed with BERTH_SHIM_TEST_SPAWN set).
#[test]
fn spawner_child() {
    let Ok(json) = std::env::var("BERTH_SHIM_TEST_SPAWN") else {
        return;
    };
    let cfg: berth_shim::ShimConfig = serde_json::from_str(&json).unwrap();
    let c = berth_shim::spawn(&shim_bin(), &cfg).unwrap();
    c.start().unwrap();
    let _stream = c.attach(None, false).unwrap();
    println!("SPAWNED");
    loop {
        std::thread::park();
    }
}

#[test]
fn the_shim_survives_its_spawner_being_killed() {
    let fx = Fixture::new(&[
        "sh",
        "-c",
        "trap 'echo bye; exit 7' USR1; echo up; while :; do sleep 0.05; done",
    ]);
    let cfg = fx.config(false, false);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "spawner_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "BERTH_SHIM_TEST_SPAWN",
            serde_json::to_string(&cfg).unwrap(),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let spawned = lines.any(|l| l.map(|l| l.contains("SPAWNED")).unwrap_or(false));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(spawned, "the spawner did not get the container started");

    let mut fx = fx;
    let c = berth_shim::connect(fx.bundle.path()).expect("connect after the spawner died");
    fx.client = Some(c);
    let c = fx.client();
    let st = c.state().unwrap();
    assert_eq!(st.status, Status::Running);
    let shim_pid = c.shim_pid().unwrap();
    let ppid = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    assert!(!ppid.contains(&format!(" {} ", child.id())), "{ppid}");
    // The container's init is the shim's child.
    let init_stat = std::fs::read_to_string(format!("/proc/{}/stat", st.pid)).unwrap();
    let init_ppid: i32 = init_stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(init_ppid, shim_pid);
    // Attach only once "up" is in the log: output from before an attach is not replayed, so
    // attaching earlier would race with the container's first line.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fx.log_entries().iter().any(|(_, l)| l == "up\n") {
        assert!(std::time::Instant::now() < deadline, "no \"up\" in the log");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let stream = c.attach(None, false).unwrap();
    c.kill(libc::SIGUSR1, false).unwrap();
    let (out, _, exit) = collect(&stream);
    assert_eq!(out, "bye\n");
    assert_eq!(exit.unwrap().code, 7);
    assert_eq!(c.wait().unwrap().code, 7);
    let log: Vec<String> = fx.log_entries().into_iter().map(|(_, l)| l).collect();
    assert_eq!(log, vec!["up\n", "bye\n"]);
}

#[test]
fn a_failed_create_leaves_nothing_behind() {
    let fx = Fixture::new(&["no-such-program", "arg"]);
    let cfg = fx.config(false, false);
    let err = berth_shim::spawn(&shim_bin(), &cfg).unwrap_err();
    assert!(matches!(err, berth_shim::Error::Runtime(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-program") && msg.contains("executable file not found"),
        "{msg}"
    );
    assert_eq!(err.exit_code_hint(), Some(127));
    assert!(berth_testutil::host::processes_with(&fx.id).is_empty());
    assert!(!fx.root.path().join(&fx.id).exists());
    assert!(berth_testutil::host::cgroup_dirs_named(&fx.id).is_empty());
    for f in [
        "shim.sock",
        "shim.pid",
        "console.sock",
        "init.pid",
        "runtime.log",
    ] {
        assert!(!fx.bundle.path().join(f).exists(), "{f} was left behind");
    }
}

#[test]
fn a_bad_config_fails_with_the_runtimes_message() {
    let fx = Fixture::new(&["true"]);
    fx.bundle
        .edit(|v| v["process"]["cwd"] = serde_json::json!("relative/cwd"));
    let cfg = fx.config(false, false);
    let err = berth_shim::spawn(&shim_bin(), &cfg).unwrap_err();
    assert!(err.to_string().contains("cwd"), "{err}");
    assert!(berth_testutil::host::processes_with(&fx.id).is_empty());
    assert!(!fx.root.path().join(&fx.id).exists());
}
