//! The runc verbs end to end through the real binary: create, start, state, list, ps, exec,
//! kill, pause, resume, update, delete, run; exit codes; terminals; output formats.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn wait_for_status(rt: &Runtime, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = rt.state(id);
        if st["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never became {want}: {st}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_returns_the_exit_code_and_cleans_up() {
    let rt = runtime();
    let b = Bundle::busybox(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    let id = unique_id("run");
    let (code, out, err) = run(&rt, &b, &id);
    assert_eq!(code, 7, "stderr: {err}");
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_clean(&rt, &id, Some(b.path()));

    // Killed by a signal: 128 + signal, as shells report it. (Without a pid namespace: an init
    // ignores SIGKILL sent from inside its own namespace.)
    let b = Bundle::busybox(&["sh", "-c", "kill -9 $$"]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let id = unique_id("run");
    let (code, _, err) = run(&rt, &b, &id);
    assert_eq!(code, 128 + 9, "stderr: {err}");
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn run_keep_leaves_a_stopped_container_to_delete() {
    let rt = runtime();
    let b = Bundle::busybox(&["true"]);
    let id = unique_id("keep");
    rt.ok(&["run", "--keep", "--bundle", b.path().to_str().unwrap(), &id]);
    assert_eq!(rt.state(&id)["status"], "stopped");
    rt.ok(&["delete", &id]);
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn create_start_state_kill_delete() {
    let rt = runtime();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique_id("life");
    let pid_file = b.path().join("init.pid");
    rt.ok(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);

    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["ociVersion"], "1.2.0");
    assert_eq!(
        st["bundle"],
        b.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(
        st["rootfs"],
        b.rootfs().canonicalize().unwrap().to_str().unwrap()
    );
    assert!(st["created"].as_str().unwrap().ends_with('Z'), "{st}");
    assert_eq!(st["owner"], "root");
    assert!(
        st.get("annotations").is_none(),
        "empty annotations are omitted: {st}"
    );
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());

    // Created containers can be listed; a second create with the same id is refused.
    let list: serde_json::Value =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.as_str() && c["status"] == "created")
    );
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains(&format!("container with id {id} already exists")),
        "{err}"
    );

    rt.ok(&["start", &id]);
    wait_for_status(&rt, &id, "running");
    assert_eq!(rt.state(&id)["pid"].as_i64().unwrap(), pid);
    let err = rt.fails(&["start", &id]);
    assert!(
        err.contains("cannot start an already running container"),
        "{err}"
    );

    // ps lists the container's processes.
    let pids: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(pids, vec![pid]);
    let table = rt.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert!(table.contains("sleep 1000"), "{table}");

    // Plain list output: runc's columns.
    let list = rt.ok(&["list"]);
    assert!(list.starts_with("ID"), "{list}");
    assert!(list.contains(&id) && list.contains("running"), "{list}");
    assert!(rt.ok(&["list", "-q"]).lines().any(|l| l == id));

    // A running container is not deleted without --force.
    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("is not stopped"), "{err}");

    rt.ok(&["kill", &id, "KILL"]);
    wait_for_status(&rt, &id, "stopped");
    assert_eq!(rt.state(&id)["pid"], 0);
    let err = rt.fails(&["kill", &id, "KILL"]);
    assert!(err.contains("container not running"), "{err}");
    rt.ok(&["delete", &id]);
    let err = rt.fails(&["state", &id]);
    assert!(err.contains("does not exist"), "{err}");
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn delete_of_a_created_container_kills_its_init() {
    let rt = runtime();
    let b = Bundle::busybox(&["true"]);
    let id = unique_id("created");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["delete", &id]);
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z ")),
        "the init of a deleted container still runs"
    );
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn exec_runs_in_the_container_with_its_exit_code() {
    let rt = runtime();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique_id("exec");
    rt.ok(&[
        "run",
        "--detach",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    wait_for_status(&rt, &id, "running");
    let init_pid = rt.state(&id)["pid"].as_i64().unwrap();

    let out = rt.run(&[
        "exec",
        "-e",
        "GREETING=hi",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(hostname); exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi /tmp berth-test\n");

    // Same pid namespace as the init: it sees `sleep` as pid 1.
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert_eq!(out.trim(), "sleep 1000");

    // As another user.
    let out = rt.ok(&["exec", "-u", "1000:1000", &id, "id"]);
    assert!(
        out.starts_with("uid=1000") && out.contains(" gid=1000"),
        "{out}"
    );

    // Detached, with a pid file; the process is in the container's cgroup.
    let pid_file = b.path().join("exec.pid");
    rt.ok(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "77",
    ]);
    let epid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let pids: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(
        pids.contains(&epid) && pids.contains(&init_pid),
        "{pids:?} lacks {epid}"
    );

    // A process.json.
    let p = json!({"args": ["sh", "-c", "echo from-json $X"], "env": ["X=1"], "cwd": "/", "user": {"uid": 0, "gid": 0}});
    let pj = b.path().join("process.json");
    std::fs::write(&pj, p.to_string()).unwrap();
    assert_eq!(
        rt.ok(&["exec", "--process", pj.to_str().unwrap(), &id]),
        "from-json 1\n"
    );

    // A command that does not exist.
    let err = rt.fails(&["exec", &id, "no-such-command"]);
    assert!(err.contains("executable file not found in $PATH"), "{err}");

    rt.ok(&["delete", "--force", &id]);
    assert_clean(&rt, &id, Some(b.path()));
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn pause_and_resume_freeze_the_container() {
    let rt = runtime();
    let b = Bundle::busybox(&["sh", "-c", "while true; do sleep 0.01; done"]);
    let id = unique_id("pause");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    wait_for_status(&rt, &id, "running");
    rt.ok(&["pause", &id]);
    assert_eq!(rt.state(&id)["status"], "paused");
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("paused"), "{err}");
    let err = rt.fails(&["pause", &id]);
    assert!(err.contains("not running"), "{err}");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.state(&id)["status"], "running");
    // Killing a paused container works too (it is thawed so the signal lands).
    rt.ok(&["pause", &id]);
    rt.ok(&["kill", "--all", &id, "KILL"]);
    wait_for_status(&rt, &id, "stopped");
    rt.ok(&["delete", &id]);
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn update_changes_limits_of_a_running_container() {
    let rt = runtime();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique_id("update");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    rt.ok(&["update", "--memory", "64m", "--pids-limit", "50", &id]);
    let out = rt.ok(&[
        "exec",
        &id,
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/pids/pids.max",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["67108864", "50"]
    );
    let res = json!({"pids": {"limit": 60}});
    let f = b.path().join("res.json");
    std::fs::write(&f, res.to_string()).unwrap();
    rt.ok(&["update", "--resources", f.to_str().unwrap(), &id]);
    let out = rt.ok(&[
        "exec",
        &id,
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/pids/pids.max",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["67108864", "60"],
        "memory kept, pids changed"
    );
    let err = rt.fails(&["update", "--memory", "lots", &id]);
    assert!(err.contains("--memory"), "{err}");
    rt.ok(&["delete", "--force", &id]);
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn console_socket_receives_the_terminal() {
    let rt = runtime();
    let b = Bundle::busybox(&["sh", "-c", "tty; echo size $(stty size)"]);
    b.edit(|c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["consoleSize"] = json!({"height": 40, "width": 100});
    });
    let id = unique_id("tty");
    let sock_path = b.path().join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    rt.ok(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--console-socket",
        sock_path.to_str().unwrap(),
        &id,
    ]);
    let (conn, _) = listener.accept().unwrap();
    let master = berth_runtime::console::recv_fd(&conn).expect("receive the pty master");
    rt.ok(&["start", &id]);
    let mut f = std::fs::File::from(master);
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.contains("size") || !out.ends_with('\n') {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
        assert!(
            Instant::now() < deadline,
            "no output from the terminal: {out:?}"
        );
    }
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("size 40 100"), "{out:?}");
    wait_for_status(&rt, &id, "stopped");
    rt.ok(&["delete", &id]);
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn a_terminal_without_a_console_socket_is_refused_by_create() {
    let rt = runtime();
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| c["process"]["terminal"] = json!(true));
    let id = unique_id("notty");
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("--console-socket"), "{err}");
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn run_with_a_terminal_relays_it() {
    // `script` gives berth-runtime a real terminal on its stdin/stdout.
    let rt = runtime();
    let b = Bundle::busybox(&["sh", "-c", "test -t 0 && test -t 1 && echo TTY-OK $(tty)"]);
    b.edit(|c| c["process"]["terminal"] = json!(true));
    let id = unique_id("runtty");
    let cmd = format!(
        "{} --root {} run --bundle {} {id}",
        BIN,
        rt.root().display(),
        b.path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("TTY-OK /dev/pts/0"),
        "{out:?}"
    );
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn version_features_and_spec() {
    let rt = runtime();
    let v = rt.ok(&["--version"]);
    let lines: Vec<&str> = v.lines().collect();
    assert!(lines[0].starts_with("berth-runtime version "), "{v}");
    assert!(lines[1].starts_with("commit: "), "{v}");
    assert_eq!(lines[2], "spec: 1.2.0");

    let f: serde_json::Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMax"], "1.2.0");
    assert_eq!(f["linux"]["cgroup"]["v1"], true);
    assert!(
        f["linux"]["seccomp"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "SCMP_ACT_ERRNO")
    );

    let dir = tempfile::tempdir().unwrap();
    rt.ok(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        spec.root().as_ref().unwrap().path().to_str(),
        Some("rootfs")
    );
    let err = rt.fails(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn errors_go_to_the_log_as_runc_json() {
    let rt = runtime();
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = rt
        .cmd()
        .args([
            "--log",
            log.path().to_str().unwrap(),
            "--log-format",
            "json",
            "state",
            "no-such-container",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = std::fs::read_to_string(log.path()).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert_eq!(last["msg"], "container no-such-container does not exist");
    assert!(last["time"].as_str().unwrap().contains('T'));
    // And one clear line on stderr.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "berth-runtime: container no-such-container does not exist\n"
    );
}
