//! End to end with podman as the client: `podman --runtime berth-runtime` (4.3, Debian's
//! package, through conmon) with a private store runs, execs into, stops and removes
//! containers, with and without a terminal, and every test checks that nothing is left: no
//! container, no runtime state, no cgroup, no mount, no conmon.
//!
//! Root only; nothing is skipped. See `common/peers.rs` for the store and the image.

mod common;

use common::peers::{Podman, with_terminal};
use common::unique_id;

/// The tty probe: what the terminal shows proves stdin and stdout are the container's pty.
const TTY_PROBE: &str = "tty; test -t 0 && echo TTY-IN; test -t 1 && echo TTY-OUT; exit 3";

/// The id podman wrote to a `--cidfile`.
fn read_cid(path: &std::path::Path) -> String {
    let id =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let id = id.trim().to_string();
    assert_eq!(
        id.len(),
        64,
        "not a container id in {}: {id:?}",
        path.display()
    );
    id
}

#[test]
fn podman_run_rm_prints_the_output_and_applies_the_limits() {
    let pm = Podman::new();

    let cidfile = pm.dir().join("cid-echo");
    let out = pm.run_vec(&pm.run_argv(
        &["--rm", "--cidfile", cidfile.to_str().unwrap()],
        &["echo", "hi"],
    ));
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "hi\n", "{out}");
    pm.assert_clean(&read_cid(&cidfile));

    // The exit code comes back through conmon, the --ulimit values reach the process, and it
    // is the init of its own pid namespace.
    let cidfile = pm.dir().join("cid-limits");
    let out = pm.run_vec(&pm.run_argv(
        &["--rm", "--cidfile", cidfile.to_str().unwrap()],
        &["sh", "-c", "ulimit -Hn; ulimit -Sn; echo pid=$$; exit 3"],
    ));
    assert_eq!(out.code, 3, "{out}");
    let flags = pm.run_flags();
    let nofile = flags
        .iter()
        .find_map(|f| f.strip_prefix("nofile="))
        .and_then(|v| v.split(':').next())
        .expect("run_flags sets nofile");
    assert_eq!(out.stdout, format!("{nofile}\n{nofile}\npid=1\n"), "{out}");
    pm.assert_clean(&read_cid(&cidfile));
}

#[test]
fn podman_detached_container_exec_stop_and_remove() {
    let pm = Podman::new();

    let name = unique_id("berth-e2e-pod");
    let out = pm.run_vec(&pm.run_argv(&["--detach", "--name", &name], &["sleep", "1000"]));
    assert!(out.success(), "{out}");
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "podman run -d printed no id: {out}");
    let running = pm.ok(&["ps", "--quiet", "--no-trunc"]);
    assert!(
        running.lines().any(|l| l == id),
        "podman ps does not list {id}: {running}"
    );
    let state = pm.runtime_root().join(&id);
    assert!(
        state.is_dir(),
        "no runtime state {} while the container runs",
        state.display()
    );
    let cgroups = berth_testutil::host::cgroup_dirs_named(&format!("libpod-{id}"));
    assert!(
        !cgroups.is_empty(),
        "no cgroup libpod-{id} while the container runs"
    );
    let st = common::peers::runtime_state(&pm.runtime_root(), &id);
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["id"], id.as_str(), "{st}");

    // exec: output, the container's pid namespace, the exit code.
    let out = pm.podman(&["exec", &name, "sh", "-c", "echo exec-out; cat /proc/1/comm"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "exec-out\nsleep\n", "{out}");
    let out = pm.podman(&["exec", &name, "sh", "-c", "exit 5"]);
    assert_eq!(out.code, 5, "{out}");

    // rm -f on a running container: the runtime kills and deletes it.
    pm.ok(&["rm", "--force", "--time", "0", &name]);
    pm.assert_clean(&id);

    // stop (SIGTERM, which a pid 1 without a handler ignores, then SIGKILL), then rm.
    let name = unique_id("berth-e2e-pod");
    let out = pm.run_vec(&pm.run_argv(&["--detach", "--name", &name], &["sleep", "1000"]));
    assert!(out.success(), "{out}");
    let id = out.stdout.trim().to_string();
    pm.ok(&["stop", "--time", "1", &name]);
    let status = pm.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &name,
    ]);
    assert_eq!(status.trim(), "exited 137", "after podman stop");
    pm.ok(&["rm", &name]);
    pm.assert_clean(&id);
}

#[test]
fn podman_run_and_exec_with_a_terminal() {
    let pm = Podman::new();

    // run -it: the process gets a pty for stdin and stdout; the exit code still comes back.
    let cidfile = pm.dir().join("cid-tty");
    let out = with_terminal(&pm.run_argv(
        &[
            "--rm",
            "--interactive",
            "--tty",
            "--cidfile",
            cidfile.to_str().unwrap(),
        ],
        &["sh", "-c", TTY_PROBE],
    ));
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stdout.contains("/dev/pts/"),
        "no pty in the terminal's output: {out}"
    );
    assert!(
        out.stdout.contains("TTY-IN") && out.stdout.contains("TTY-OUT"),
        "{out}"
    );
    pm.assert_clean(&read_cid(&cidfile));

    // exec -it into a container that has no terminal of its own.
    let name = unique_id("berth-e2e-pod");
    let out = pm.run_vec(&pm.run_argv(&["--detach", "--name", &name], &["sleep", "1000"]));
    assert!(out.success(), "{out}");
    let id = out.stdout.trim().to_string();
    let out = with_terminal(&pm.argv(&[
        "exec",
        "--interactive",
        "--tty",
        &name,
        "sh",
        "-c",
        TTY_PROBE,
    ]));
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stdout.contains("/dev/pts/"),
        "no pty in the terminal's output: {out}"
    );
    assert!(
        out.stdout.contains("TTY-IN") && out.stdout.contains("TTY-OUT"),
        "{out}"
    );
    pm.ok(&["rm", "--force", "--time", "0", &name]);
    pm.assert_clean(&id);
}
