//! End to end with containerd as the client: a private `containerd` (1.6, Debian's package)
//! drives `berth-runtime` through its runc v2 shim (`ctr run --runc-binary`). Containers are
//! run, exec'd into, killed and removed, with and without a terminal, and every test checks
//! that nothing is left: no task, no runtime state, no cgroup, no mount, no shim.
//!
//! Root only; nothing is skipped. See `common/peers.rs` for the daemon and the image.

mod common;

use std::time::Duration;

use common::peers::{Containerd, with_terminal};
use common::unique_id;

/// The tty probe: what the terminal shows proves stdin and stdout are the container's pty.
const TTY_PROBE: &str = "tty; test -t 0 && echo TTY-IN; test -t 1 && echo TTY-OUT; exit 3";

fn wait_for_task(ctd: &Containerd, id: &str, want: &str) {
    common::peers::wait_until(
        &format!("task {id} is {want}"),
        Duration::from_secs(30),
        || ctd.task_status(id).as_deref() == Some(want),
    );
}

#[test]
fn ctr_run_rm_prints_the_output_and_returns_the_exit_code() {
    let ctd = Containerd::start();

    let id = unique_id("berth-e2e-ctr");
    let out = ctd.run_vec(&ctd.run_argv(&["--rm"], &id, &["/bin/echo", "hello"]));
    assert!(out.success(), "{out}\n{}", ctd.log_tail(40));
    assert_eq!(out.stdout, "hello\n", "{out}");
    ctd.assert_clean(&id);

    // The exit code comes back through the shim, stderr is kept apart, and the process is the
    // init of its own pid namespace.
    let id = unique_id("berth-e2e-ctr");
    let out = ctd.run_vec(&ctd.run_argv(
        &["--rm"],
        &id,
        &["/bin/sh", "-c", "echo pid=$$; echo oops >&2; exit 3"],
    ));
    assert_eq!(out.code, 3, "{out}\n{}", ctd.log_tail(40));
    assert_eq!(out.stdout, "pid=1\n", "{out}");
    assert!(out.stderr.contains("oops"), "{out}");
    ctd.assert_clean(&id);
}

#[test]
fn ctr_detached_container_exec_kill_and_remove() {
    let ctd = Containerd::start();
    let id = unique_id("berth-e2e-ctr");

    let out = ctd.run_vec(&ctd.run_argv(&["--detach"], &id, &["/bin/sleep", "1000"]));
    assert!(out.success(), "{out}\n{}", ctd.log_tail(40));
    wait_for_task(&ctd, &id, "RUNNING");

    // The runtime holds the container in the private root, in the cgroup ctr asked for.
    let state = common::peers::entries(&ctd.runtime_root());
    assert_eq!(
        state,
        std::slice::from_ref(&id),
        "berth-runtime's state root"
    );
    let cgroups = berth_testutil::host::cgroup_dirs_named(&id);
    assert!(
        !cgroups.is_empty(),
        "no cgroup /{id} while the container runs"
    );
    let st = common::peers::runtime_state(&ctd.runtime_root(), &id);
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["id"], id.as_str(), "{st}");

    // exec: output, the container's pid namespace, the exit code.
    let out = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "probe",
        "--fifo-dir",
        &ctd.dir().join("fifo").display().to_string(),
        &id,
        "/bin/sh",
        "-c",
        "echo exec-out; cat /proc/1/comm",
    ]);
    assert!(out.success(), "{out}\n{}", ctd.log_tail(40));
    assert_eq!(out.stdout, "exec-out\nsleep\n", "{out}");
    let out = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "fails",
        "--fifo-dir",
        &ctd.dir().join("fifo").display().to_string(),
        &id,
        "/bin/sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(out.code, 5, "{out}\n{}", ctd.log_tail(40));

    // ps goes through the runtime's `ps --format json`.
    let ps = ctd.ok(&["task", "ps", &id]);
    assert!(
        ps.lines().count() >= 2,
        "ctr task ps lists no process: {ps}"
    );

    ctd.ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    wait_for_task(&ctd, &id, "STOPPED");
    ctd.ok(&["task", "delete", &id]);
    ctd.ok(&["containers", "delete", &id]);
    ctd.assert_clean(&id);
}

#[test]
fn ctr_run_and_exec_with_a_terminal() {
    let ctd = Containerd::start();

    // run -t: the process gets a pty for stdin and stdout; the exit code still comes back.
    let id = unique_id("berth-e2e-ctr");
    let out = with_terminal(&ctd.run_argv(&["--rm", "--tty"], &id, &["/bin/sh", "-c", TTY_PROBE]));
    assert_eq!(out.code, 3, "{out}\n{}", ctd.log_tail(40));
    assert!(
        out.stdout.contains("/dev/pts/"),
        "no pty in the terminal's output: {out}"
    );
    assert!(
        out.stdout.contains("TTY-IN") && out.stdout.contains("TTY-OUT"),
        "{out}"
    );
    ctd.assert_clean(&id);

    // exec -t into a container that has no terminal of its own.
    let id = unique_id("berth-e2e-ctr");
    let out = ctd.run_vec(&ctd.run_argv(&["--detach"], &id, &["/bin/sleep", "1000"]));
    assert!(out.success(), "{out}\n{}", ctd.log_tail(40));
    wait_for_task(&ctd, &id, "RUNNING");
    let mut argv = ctd.ctr_args();
    let fifo = ctd.dir().join("fifo").display().to_string();
    argv.extend(
        [
            "task",
            "exec",
            "--tty",
            "--exec-id",
            "tty",
            "--fifo-dir",
            &fifo,
            &id,
            "/bin/sh",
            "-c",
            TTY_PROBE,
        ]
        .map(String::from),
    );
    let out = with_terminal(&argv);
    assert_eq!(out.code, 3, "{out}\n{}", ctd.log_tail(40));
    assert!(
        out.stdout.contains("/dev/pts/"),
        "no pty in the terminal's output: {out}"
    );
    assert!(
        out.stdout.contains("TTY-IN") && out.stdout.contains("TTY-OUT"),
        "{out}"
    );

    ctd.ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    wait_for_task(&ctd, &id, "STOPPED");
    ctd.ok(&["task", "delete", &id]);
    ctd.ok(&["containers", "delete", &id]);
    ctd.assert_clean(&id);
}
