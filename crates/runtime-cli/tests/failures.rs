//! Bad input gets one clear line and a non-zero exit, and a failed `create` leaves nothing
//! behind (no state directory, cgroup, mount or process), at every failure point we can provoke.

mod common;

use common::*;
use serde_json::json;

/// `create` must fail with a message containing `want` and leave nothing behind.
fn create_fails(b: &Bundle, want: &str) -> String {
    let rt = runtime();
    let id = unique_id("fail");
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains(want), "expected {want:?} in: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("berth-runtime: "), "{err}");
    assert_clean(&rt, &id, Some(b.path()));
    assert!(
        rt.ids().is_empty(),
        "state left in the root: {:?}",
        rt.ids()
    );
    err
}

#[test]
fn malformed_config_names_the_field() {
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| c["process"]["user"]["uid"] = json!("root"));
    create_fails(
        &b,
        "field `process.user.uid`: invalid type: string \"root\", expected u32",
    );

    let b = Bundle::busybox(&["true"]);
    b.edit(|c| c["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "bogus"}]));
    create_fails(
        &b,
        "field `linux.namespaces[1].type`: unknown variant `bogus`",
    );

    let b = Bundle::busybox(&["true"]);
    std::fs::write(b.path().join("config.json"), "{ not json").unwrap();
    create_fails(&b, "config.json");
}

#[test]
fn missing_rootfs() {
    let b = Bundle::busybox(&["true"]);
    std::fs::remove_dir_all(b.rootfs()).unwrap();
    create_fails(&b, "does not exist");
}

#[test]
fn missing_bundle() {
    let rt = runtime();
    let err = rt.fails(&[
        "create",
        "--bundle",
        "/nonexistent/bundle",
        &unique_id("nob"),
    ]);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
}

#[test]
fn bad_ids_and_unknown_containers() {
    let rt = runtime();
    let b = Bundle::busybox(&["true"]);
    let err = rt.fails(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "../escape",
    ]);
    assert!(err.contains("invalid container id"), "{err}");
    for verb in ["start", "state", "delete", "pause", "resume", "ps"] {
        let err = rt.fails(&[verb, "nope"]);
        assert!(
            err.contains("container nope does not exist"),
            "{verb}: {err}"
        );
    }
    let err = rt.fails(&["kill", "nope", "TERM"]);
    assert!(err.contains("does not exist"), "{err}");
    // delete --force of a missing container succeeds, as runc's does.
    rt.ok(&["delete", "--force", "nope"]);
}

#[test]
fn unknown_signal() {
    let rt = runtime();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique_id("sig");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let err = rt.fails(&["kill", &id, "SIGBOGUS"]);
    assert!(err.contains("unknown signal \"SIGBOGUS\""), "{err}");
    assert_eq!(rt.state(&id)["status"], "running");
    rt.ok(&["delete", "-f", &id]);
}

#[test]
fn rlimit_above_the_hard_limit_names_both_values() {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .unwrap();
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| {
        c["process"]["rlimits"] =
            json!([{"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576}])
    });
    let caps = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = caps.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let has_sys_resource =
        u64::from_str_radix(eff.split_whitespace().nth(1).unwrap(), 16).unwrap() & (1 << 24) != 0;
    if has_sys_resource {
        // A host that can raise hard limits grants the request.
        let rt = runtime();
        let id = unique_id("rlimit");
        rt.ok(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
        return;
    }
    let err = create_fails(&b, "RLIMIT_NOFILE");
    assert!(err.contains("1048576") && err.contains(&hard), "{err}");
}

#[test]
fn unsupported_mount_type_and_namespace_setup() {
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/x", "type": "nosuchfs", "source": "x"}))
    });
    create_fails(&b, "unsupported mount type \"nosuchfs\"");

    let b = Bundle::busybox(&["true"]);
    b.edit(|c| {
        c["linux"]["namespaces"] = json!([{"type": "pid"}]);
        c.as_object_mut().unwrap().remove("hostname");
    });
    create_fails(&b, "needs a mount namespace");

    let b = Bundle::busybox(&["true"]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
        ns.push(json!({"type": "network", "path": "/proc/self/ns/nonexistent"}));
    });
    create_fails(&b, "cannot join");
}

#[test]
fn failure_after_the_cgroup_exists_cleans_up() {
    // cpuset.cpus names a cpu this machine does not have: the write fails after the cgroup
    // directory was created.
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| c["linux"]["resources"]["cpu"] = json!({"cpus": "999"}));
    create_fails(&b, "cpuset");
}

#[test]
fn failure_inside_the_init_cleans_up() {
    // A mount that fails in the init, after the child exists and is in its cgroup.
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=lots"]}))
    });
    create_fails(&b, "mount tmpfs on");

    // A bind mount whose source is missing.
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/x", "type": "bind", "source": "/nonexistent/source", "options": ["rbind"]}))
    });
    create_fails(&b, "/nonexistent/source");

    // A program that is not in the image: found at create, as runc does.
    let b = Bundle::busybox(&["no-such-program"]);
    create_fails(
        &b,
        "exec: \"no-such-program\": executable file not found in $PATH",
    );

    // A program that exists but cannot be executed: also found at create (Docker's exit 126).
    let b = Bundle::busybox(&["/etc/passwd"]);
    create_fails(&b, "exec: /etc/passwd: permission denied");
    // Not a regular file.
    let b = Bundle::busybox(&["/dev/null"]);
    create_fails(&b, "exec: /dev/null: permission denied");
    // Executable, but not by the process's uid: checked with its credentials.
    let b = Bundle::busybox(&["/only-root"]);
    let prog = b.rootfs().join("only-root");
    std::fs::copy(b.rootfs().join("bin/busybox"), &prog).unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    b.edit(|c| c["process"]["user"] = json!({"uid": 1000, "gid": 1000}));
    create_fails(&b, "exec: /only-root: permission denied");

    // A cwd that does not exist.
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| c["process"]["cwd"] = json!("/no/such/dir"));
    create_fails(&b, "/no/such/dir");

    // A uid that cannot be set (not mapped in the user namespace).
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 10}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 10}]);
        c["process"]["user"] = json!({"uid": 500, "gid": 0});
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["type"] != "cgroup");
    });
    std::process::Command::new("chown")
        .args(["-R", "100000:100000"])
        .arg(b.rootfs())
        .status()
        .unwrap();
    create_fails(&b, "uid 500");
}

#[test]
fn failing_create_runtime_hook_cleans_up() {
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| c["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo refused >&2; exit 4"]}]}));
    create_fails(
        &b,
        "createRuntime hook #0 (/bin/sh) exited with status 4: refused",
    );
}

#[test]
fn a_bad_seccomp_profile_fails_before_anything_is_created() {
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        })
    });
    create_fails(&b, "linux.seccomp.syscalls[0].args[0].index");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let rt = runtime();
    let out = rt.run(&["create", "--no-such-flag", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-such-flag") && err.lines().count() == 1,
        "{err}"
    );
}
