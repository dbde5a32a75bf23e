//! What the config promises, checked from inside the container by `berth-checker`:
//! namespaces, hostname, mounts and their flags, masked and read-only paths, capabilities,
//! seccomp, rlimits, ids, cgroup limits enforced by the kernel, user namespaces, hooks.

mod common;

use common::*;
use serde_json::json;

/// CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10).
const DEFAULT_CAPS: &str = "20000420";

#[test]
fn the_default_config_holds_inside_the_container() {
    let rt = runtime();
    let mut checks: Vec<String> = vec![
        "pid1".into(),
        format!("ns:pid!={}", host_ns("pid")),
        format!("ns:net!={}", host_ns("net")),
        format!("ns:mnt!={}", host_ns("mnt")),
        format!("ns:uts!={}", host_ns("uts")),
        format!("ns:ipc!={}", host_ns("ipc")),
        format!("ns:cgroup!={}", host_ns("cgroup")),
        "hostname=berth-test".into(),
        "uid=0".into(),
        "gid=0".into(),
        "cwd=/".into(),
        "umask=0022".into(),
        "nnp=1".into(),
        "env:TERM=xterm".into(),
        "env:HOME=/root".into(),
        format!("caps:eff={DEFAULT_CAPS}"),
        format!("caps:prm={DEFAULT_CAPS}"),
        format!("caps:bnd={DEFAULT_CAPS}"),
        "caps:inh=0".into(),
        "rlimit:nofile=1024:1024".into(),
        "fstype:/proc=proc".into(),
        "mount:/proc=rw".into(),
        "fstype:/dev=tmpfs".into(),
        "mount:/dev=nosuid".into(),
        "fstype:/dev/pts=devpts".into(),
        "mount:/dev/pts=nosuid,noexec".into(),
        "mount:/dev/shm=nosuid,noexec,nodev".into(),
        "fstype:/dev/mqueue=mqueue".into(),
        "mount:/sys=ro,nosuid,noexec,nodev".into(),
        "mount:/sys/fs/cgroup=ro".into(),
        "exists:/sys/fs/cgroup/memory/memory.limit_in_bytes".into(),
        "chardev:/dev/null=1:3".into(),
        "chardev:/dev/zero=1:5".into(),
        "chardev:/dev/full=1:7".into(),
        "chardev:/dev/random=1:8".into(),
        "chardev:/dev/urandom=1:9".into(),
        "chardev:/dev/tty=5:0".into(),
        "exists:/dev/fd/0".into(),
        "exists:/dev/stdin".into(),
        "exists:/dev/ptmx".into(),
        "absent:/dev/console".into(),
        "fds=0,1,2".into(),
    ];
    // Paths this kernel does not have (e.g. /proc/kcore without CONFIG_PROC_KCORE) are skipped
    // by the runtime as by runc, so only the ones present are checked.
    for (kind, path) in [
        ("masked", "/proc/kcore"),
        ("masked", "/proc/keys"),
        ("masked", "/proc/timer_list"),
        ("masked", "/sys/firmware"),
        ("masked", "/proc/acpi"),
        ("readonly", "/proc/sys"),
        ("readonly", "/proc/sysrq-trigger"),
        ("readonly", "/proc/bus"),
    ] {
        if std::path::Path::new(path).exists() {
            checks.push(format!("{kind}:{path}"));
        }
    }
    let refs: Vec<&str> = checks.iter().map(String::as_str).collect();
    let b = checker_bundle(&refs);
    let id = unique_id("iso");
    run_checks(&rt, &b, &id);
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn process_settings_apply() {
    let rt = runtime();
    let b = checker_bundle(&[
        "uid=1000",
        "gid=1000",
        "groups=10,20",
        "umask=0027",
        "cwd=/tmp",
        "env:FOO=bar",
        "nnp=0",
        "caps:eff=400",
        "caps:prm=400",
        "caps:bnd=420",
        "caps:inh=400",
        "caps:amb=400",
        "rlimit:nofile=100:200",
        "rlimit:core=0:0",
        "domainname=example.org",
        "hostname=box",
        "sysctl:net.ipv4.ip_forward=1",
        "sysctl:kernel.shmmni=1000",
        "mount:/=ro",
        "readonly:/etc",
        "mount:/scratch=rw,nosuid,noexec",
        "mount:/data=ro,nodev",
        "file:/data/hello=from the host",
        "seccomp:mkdirat=42",
    ]);
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("hello"), "from the host\n").unwrap();
    b.edit(|c| {
        let p = &mut c["process"];
        p["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o027});
        p["cwd"] = json!("/tmp");
        p["env"] = json!(["PATH=/bin", "FOO=bar"]);
        p["noNewPrivileges"] = json!(false);
        p["capabilities"] = json!({
            "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"]
        });
        p["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
        ]);
        c["hostname"] = json!("box");
        c["domainname"] = json!("example.org");
        c["root"]["readonly"] = json!(true);
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "1000"});
        c["mounts"].as_array_mut().unwrap().extend([
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "noexec", "mode=1777"]}),
            json!({"destination": "/data", "type": "bind", "source": host_dir.path(), "options": ["rbind", "ro", "nodev"]}),
        ]);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]
        });
    });
    let id = unique_id("proc");
    run_checks(&rt, &b, &id);
    assert_clean(&rt, &id, Some(b.path()));
    assert!(host_dir.path().join("hello").exists());
}

#[test]
fn the_kernel_enforces_memory_and_pids_limits() {
    let rt = runtime();
    let b = checker_bundle(&[
        "oom:134217728",
        "pids:16",
        "file:/sys/fs/cgroup/memory/memory.limit_in_bytes=33554432",
        "file:/sys/fs/cgroup/pids/pids.max=16",
        "file:/sys/fs/cgroup/cpu/cpu.shares=512",
        "file:/sys/fs/cgroup/cpu/cpu.cfs_quota_us=50000",
        "file:/sys/fs/cgroup/cpuset/cpuset.cpus=0",
    ]);
    b.edit(|c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
        c["linux"]["resources"]["pids"] = json!({"limit": 16});
        c["linux"]["resources"]["cpu"] =
            json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"});
    });
    let id = unique_id("limits");
    run_checks(&rt, &b, &id);
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn devices_cgroup_denies_what_is_not_allowed() {
    let rt = runtime();
    // A node for /dev/sda-like 8:0 that the allow-list does not cover: opening it is refused.
    let b = Bundle::busybox(&[
        "sh",
        "-c",
        "mknod /tmp/blk b 8 0 && (head -c1 /tmp/blk; echo rc=$?) 2>&1; head -c1 /dev/zero | wc -c",
    ]);
    b.edit(|c| {
        c["process"]["capabilities"]["bounding"] = json!(["CAP_MKNOD"]);
        c["process"]["capabilities"]["effective"] = json!(["CAP_MKNOD"]);
        c["process"]["capabilities"]["permitted"] = json!(["CAP_MKNOD"]);
    });
    let id = unique_id("devices");
    let (code, out, err) = run(&rt, &b, &id);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains("Operation not permitted") && out.contains("rc=1"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with('1'),
        "/dev/zero stays usable: {out}"
    );
    assert_clean(&rt, &id, Some(b.path()));
}

fn chown_tree(path: &std::path::Path, uid: u32) {
    let st = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn user_namespace_with_a_range_mapping() {
    let rt = runtime();
    let b = checker_bundle(&[
        "uid=0",
        "gid=0",
        "file:/proc/self/uid_map=0     100000      65536",
        format!("ns:user!={}", host_ns("user")).leak(),
        "caps:eff=20000420",
        "fstype:/sys=sysfs",
        "chardev:/dev/null=1:3",
    ]);
    chown_tree(&b.rootfs(), 100000);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let id = unique_id("userns");
    run_checks(&rt, &b, &id);
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn rootless_style_single_id_mapping() {
    // What `berth-runtime spec --rootless` produces for uid 1000: root in the container is uid
    // 1000 outside; no network namespace, so sysfs is bound from the host.
    let rt = runtime();
    let b = checker_bundle(&[
        "uid=0",
        "file:/proc/self/uid_map=0       1000          1",
        "mount:/sys=ro",
    ]);
    chown_tree(&b.rootfs(), 1000);
    std::fs::set_permissions(
        b.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let template = {
        let dir = tempfile::tempdir().unwrap();
        rt.ok(&[
            "spec",
            "--rootless",
            "--bundle",
            dir.path().to_str().unwrap(),
        ]);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        v
    };
    b.edit(|c| {
        let args = c["process"]["args"].clone();
        *c = template;
        c["process"]["args"] = args;
        c["process"]["terminal"] = json!(false);
        c["root"]["readonly"] = json!(false);
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    });
    let id = unique_id("rootless");
    run_checks(&rt, &b, &id);
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn joining_an_existing_namespace_by_path() {
    let rt = runtime();
    // A first container; a second one joins its network and uts namespaces by path.
    let a = Bundle::busybox(&["sleep", "1000"]);
    let ida = unique_id("ns-owner");
    rt.ok(&["run", "-d", "--bundle", a.path().to_str().unwrap(), &ida]);
    let pid = rt.state(&ida)["pid"].as_i64().unwrap();
    let net = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    let b = Bundle::busybox(&["sleep", "1000"]);
    b.edit(|c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            match n["type"].as_str() {
                Some("network") => n["path"] = json!(format!("/proc/{pid}/ns/net")),
                Some("uts") => n["path"] = json!(format!("/proc/{pid}/ns/uts")),
                _ => {}
            }
        }
        // Setting a hostname needs a UTS namespace of one's own.
        c.as_object_mut().unwrap().remove("hostname");
    });
    let idb = unique_id("ns-joiner");
    // Checked from the outside: the joiner's init is in the owner's network namespace.
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &idb]);
    let pidb = rt.state(&idb)["pid"].as_i64().unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(format!("/proc/{pidb}/ns/net"))
            .unwrap()
            .ino(),
        net.ino()
    );
    assert_ne!(
        std::fs::metadata(format!("/proc/{pidb}/ns/pid"))
            .unwrap()
            .ino(),
        std::fs::metadata(format!("/proc/{pid}/ns/pid"))
            .unwrap()
            .ino()
    );
    let out = rt.ok(&["exec", &idb, "hostname"]);
    assert_eq!(
        out.trim(),
        "berth-test",
        "uts joined from the first container"
    );
    rt.ok(&["delete", "-f", &idb]);
    rt.ok(&["delete", "-f", &ida]);
    assert_clean(&rt, &ida, Some(a.path()));
    assert_clean(&rt, &idb, Some(b.path()));
}

#[test]
fn hooks_run_in_order_with_the_state() {
    let rt = runtime();
    let b = Bundle::busybox(&["sh", "-c", "cat /hooks-in-container 2>/dev/null; echo main"]);
    let log = b.path().join("hooks.log");
    let hook = |name: &str| {
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!(
                "read -r state; echo \"{name} $(echo \"$state\" | grep -o '\"status\":\"[a-z]*\"') $(echo \"$state\" | grep -o '\"id\":\"[^\"]*\"') pid=$(echo \"$state\" | grep -o '\"pid\":[0-9]*' | cut -d: -f2)\" >> {}",
                log.display()
            )],
            "timeout": 5
        })
    };
    b.edit(|c| {
        c["hooks"] = json!({
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime1"), hook("createRuntime2")],
            "createContainer": [hook("createContainer")],
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer-in-container > /hooks-in-container"]}],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")]
        });
    });
    let id = unique_id("hooks");
    let (code, out, err) = run(&rt, &b, &id);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "startContainer-in-container\nmain\n",
        "startContainer runs in the container, before the program"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime1",
            "createRuntime2",
            "createContainer",
            "poststart",
            "poststop"
        ],
        "{text}"
    );
    for l in &lines[..4] {
        assert!(l.contains("\"status\":\"creating\""), "{l}");
    }
    assert!(lines[4].contains("\"status\":\"running\""), "{}", lines[4]);
    assert!(lines[5].contains("\"status\":\"stopped\""), "{}", lines[5]);
    for l in &lines {
        assert!(l.contains(&format!("\"id\":\"{id}\"")), "{l}");
    }
    let pid: i64 = lines[0].rsplit("pid=").next().unwrap().parse().unwrap();
    assert!(
        pid > 0
            && lines[..5]
                .iter()
                .all(|l| l.ends_with(&format!("pid={pid}"))),
        "{text}"
    );
    assert_clean(&rt, &id, Some(b.path()));
}

/// The init joins its cgroup in every hierarchy, v1 and cgroup2 alike, whether it moved itself
/// (no user namespace) or the runtime moved it (user namespace).
#[test]
fn the_init_is_in_its_cgroup_in_every_hierarchy() {
    let rt = runtime();
    for userns in [false, true] {
        let b = Bundle::busybox(&["sleep", "1000"]);
        if userns {
            chown_tree(&b.rootfs(), 100000);
            b.edit(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "user"}));
                c["linux"]["uidMappings"] =
                    json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
                c["linux"]["gidMappings"] =
                    json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            });
        }
        let id = unique_id("cgjoin");
        rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
        let pid = rt.state(&id)["pid"].as_i64().unwrap();
        let ours = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert_eq!(ours.lines().count(), theirs.lines().count(), "{theirs}");
        for line in theirs.lines() {
            let path = line.splitn(3, ':').nth(2).unwrap();
            assert!(
                path.ends_with(&format!("/{id}")),
                "userns={userns}: {line} is not the container's cgroup\n{theirs}"
            );
        }
        rt.ok(&["delete", "--force", &id]);
        assert_clean(&rt, &id, Some(b.path()));
    }
}
