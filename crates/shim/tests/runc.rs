//! The shim driving runc (`ShimConfig.runtime = Some(runc)`).

mod common;

use berth_shim::{ExecRequest, Status};
use common::*;

#[test]
fn runc_lifecycle_io_exec_pause_kill_delete() {
    let mut fx = Fixture::new(&[
        "sh",
        "-c",
        "echo from-runc; while read l; do echo got-$l; done; exit 9",
    ])
    .with_runtime(runc());
    let cfg = fx.config(false, true);
    let c = fx.spawn(&cfg);
    let st = c.state().unwrap();
    assert_eq!(st.status, Status::Created);
    let stream = c.attach(None, true).unwrap();
    c.start().unwrap();
    assert_eq!(read_until(&stream, "from-runc\n"), "from-runc\n");
    // runc's init is a child of the shim (the shim is a subreaper, runc has exited).
    let shim_pid = c.shim_pid().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", st.pid)).unwrap();
    let ppid: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, shim_pid);

    let mut v =
        berth_testutil::default_config(&["sh", "-c", "echo exec-out; exit 6"])["process"].clone();
    v["terminal"] = serde_json::json!(false);
    let h = c
        .exec(&ExecRequest {
            id: "x1".into(),
            process: serde_json::from_value(v).unwrap(),
            stdin: false,
            detach: false,
            size: None,
        })
        .unwrap();
    let (out, _, exit) = collect(h.stream.as_ref().unwrap());
    assert_eq!((out.as_str(), exit.unwrap().code), ("exec-out\n", 6));

    c.pause().unwrap();
    assert_eq!(c.state().unwrap().status, Status::Paused);
    c.resume().unwrap();
    assert!(c.pids().unwrap().contains(&st.pid));

    stream.send_stdin(b"a\n").unwrap();
    assert_eq!(read_until(&stream, "got-a\n"), "got-a\n");
    stream.close_stdin().unwrap();
    let (_, _, exit) = collect(&stream);
    assert_eq!(exit.unwrap().code, 9);
    assert_eq!(c.wait().unwrap().code, 9);
    let log: Vec<String> = fx.log_entries().into_iter().map(|(_, l)| l).collect();
    assert_eq!(log, vec!["from-runc\n", "got-a\n"]);
    fx.client().delete().unwrap();
    fx.client = None;
    assert!(!fx.root.path().join(&fx.id).exists());
}

#[test]
fn runc_kill_and_failed_create() {
    let mut fx = Fixture::new(&["sleep", "1000"]).with_runtime(runc());
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    c.start().unwrap();
    c.kill(libc::SIGKILL, false).unwrap();
    let exit = c.wait().unwrap();
    assert_eq!((exit.code, exit.signal), (137, Some(9)));

    let bad = Fixture::new(&["no-such-program"]).with_runtime(runc());
    let err = berth_shim::spawn(&shim_bin(), &bad.config(false, false)).unwrap_err();
    assert!(
        err.to_string().contains("executable file not found"),
        "{err}"
    );
    assert_eq!(err.exit_code_hint(), Some(127));
    assert!(!bad.root.path().join(&bad.id).exists());
    assert!(berth_testutil::host::cgroup_dirs_named(&bad.id).is_empty());
}
