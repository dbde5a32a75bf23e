use std::os::unix::fs::{MetadataExt, symlink};

use berth_api::v1::{ContainerConfig, Ulimit};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, LinuxNamespaceType, LinuxSeccompAction, LinuxSeccompOperator, Mount,
    PosixRlimitType,
};

use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
nohome:x:1001:1001::/:/bin/sh\n";

const GROUP: &str = "root:x:0:\n\
daemon:x:1:\n\
wheel:x:10:root,alice\n\
audio:x:29:alice\n\
alice:x:1000:\n\
staff:x:50:\n";

/// A fake rootfs and a directory of managed /etc files, removed on drop.
struct Fixture {
    root: tempfile::TempDir,
    etc: EtcFiles,
    _etc_dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(root.path().join("etc/group"), GROUP).unwrap();
        let etc_dir = tempfile::tempdir().unwrap();
        let etc = EtcFiles {
            hostname: etc_dir.path().join("hostname"),
            hosts: etc_dir.path().join("hosts"),
            resolv_conf: etc_dir.path().join("resolv.conf"),
        };
        Fixture {
            root,
            etc,
            _etc_dir: etc_dir,
        }
    }

    fn build_with(
        &self,
        config: &ContainerConfig,
        image: &ImageConfiguration,
        init: Option<&Path>,
    ) -> Result<Built, Error> {
        build(&Input {
            id: ID,
            config,
            image,
            rootfs: self.root.path(),
            etc: &self.etc,
            init_binary: init,
            cgroups_path: "/berth/default/x".into(),
        })
    }

    fn build(&self, config: &ContainerConfig) -> Result<Built, Error> {
        self.build_with(config, &image(serde_json::json!({"Cmd": ["sh"]})), None)
    }
}

fn image(config: serde_json::Value) -> ImageConfiguration {
    serde_json::from_value(serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap()
}

fn process(b: &Built) -> &oci_spec::runtime::Process {
    b.spec.process().as_ref().unwrap()
}

fn linux(b: &Built) -> &oci_spec::runtime::Linux {
    b.spec.linux().as_ref().unwrap()
}

fn env(b: &Built) -> Vec<String> {
    process(b).env().clone().unwrap()
}

fn mount_at<'a>(b: &'a Built, dest: &str) -> Option<&'a Mount> {
    b.spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(dest))
}

fn opts(m: &Mount) -> Vec<String> {
    m.options().clone().unwrap_or_default()
}

fn cap_names(b: &Built) -> Vec<String> {
    let caps = process(b).capabilities().as_ref().unwrap();
    let mut v: Vec<String> = caps
        .bounding()
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    v.sort();
    v
}

fn ns_types(b: &Built) -> Vec<LinuxNamespaceType> {
    linux(b)
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect()
}

fn syscall_rules<'a>(s: &'a LinuxSeccomp, name: &str) -> Vec<&'a oci_spec::runtime::LinuxSyscall> {
    s.syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.names().iter().any(|n| n == name))
        .collect()
}

fn allowed_unconditionally(s: &LinuxSeccomp, name: &str) -> bool {
    syscall_rules(s, name)
        .iter()
        .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
}

fn err_string(r: Result<Built, Error>) -> String {
    r.expect_err("expected an error").to_string()
}

// ---------------------------------------------------------------------------------------------
// Docker's defaults

#[test]
fn default_capabilities_are_dockers_14() {
    let caps = default_capabilities();
    assert_eq!(caps.len(), 14);
    for c in [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ] {
        assert!(caps.iter().any(|x| x == c), "{c} missing");
    }
    assert!(!caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
}

#[test]
fn every_known_capability_converts_to_oci() {
    let all: Vec<String> = caps::ALL.iter().map(|c| (*c).to_owned()).collect();
    let set = caps::to_oci(&all).unwrap();
    assert_eq!(set.len(), caps::ALL.len());
    assert!(set.contains(&Capability::CheckpointRestore));
}

#[test]
fn default_container_spec() {
    let f = Fixture::new();
    let b = f.build(&ContainerConfig::default()).unwrap();
    let p = process(&b);
    assert_eq!(p.args().clone().unwrap(), vec!["sh".to_owned()]);
    assert_eq!(p.cwd(), Path::new("/"));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.no_new_privileges(), Some(false));
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert!(p.oom_score_adj().is_none());
    assert!(p.rlimits().as_ref().is_none_or(|r| r.is_empty()));
    assert_eq!(b.stop_signal, libc::SIGTERM);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(b.spec.hostname().as_deref(), Some("0123456789ab"));
    assert_eq!(b.spec.root().as_ref().unwrap().path(), f.root.path());
    assert_eq!(b.spec.root().as_ref().unwrap().readonly(), Some(false));

    // Capabilities: the 14, bounding = effective = permitted, nothing inheritable or ambient.
    let mut want = default_capabilities();
    want.sort();
    assert_eq!(cap_names(&b), want);
    let caps = p.capabilities().as_ref().unwrap();
    assert_eq!(caps.effective(), caps.bounding());
    assert_eq!(caps.permitted(), caps.bounding());
    assert!(caps.inheritable().as_ref().is_none_or(|s| s.is_empty()));
    assert!(caps.ambient().as_ref().is_none_or(|s| s.is_empty()));

    // Env: PATH, HOSTNAME, HOME; no TERM without a tty.
    assert_eq!(
        env(&b),
        vec![
            format!("PATH={DEFAULT_PATH}"),
            "HOSTNAME=0123456789ab".into(),
            "HOME=/root".into()
        ]
    );

    let l = linux(&b);
    assert_eq!(
        l.masked_paths().clone().unwrap(),
        MASKED_PATHS
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
    );
    assert!(MASKED_PATHS.contains(&"/sys/devices/virtual/powercap"));
    assert!(MASKED_PATHS.contains(&"/proc/kcore"));
    assert_eq!(
        l.readonly_paths().clone().unwrap(),
        READONLY_PATHS
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        l.cgroups_path().as_deref(),
        Some(Path::new("/berth/default/x"))
    );
    assert_eq!(
        ns_types(&b),
        vec![
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Cgroup
        ]
    );
    let s = l.seccomp().as_ref().expect("default seccomp");
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(s.default_errno_ret(), Some(1));
    let r = l.resources().as_ref().unwrap();
    let dev = r.devices().as_ref().unwrap();
    assert_eq!(dev.len(), 1);
    assert!(!dev[0].allow());
    assert_eq!(dev[0].access().as_deref(), Some("rwm"));
    assert!(r.memory().is_none() && r.cpu().is_none() && r.pids().is_none());
    assert!(l.devices().as_ref().is_none_or(|d| d.is_empty()));
}

#[test]
fn default_mounts() {
    let f = Fixture::new();
    let b = f.build(&ContainerConfig::default()).unwrap();
    let dests: Vec<_> = b
        .spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        dests,
        vec![
            "/proc",
            "/dev",
            "/dev/pts",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/mqueue",
            "/dev/shm",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf"
        ]
    );
    let shm = mount_at(&b, "/dev/shm").unwrap();
    assert!(opts(shm).contains(&"size=67108864".to_owned()));
    assert!(opts(shm).contains(&"mode=1777".to_owned()));
    assert!(opts(mount_at(&b, "/sys").unwrap()).contains(&"ro".to_owned()));
    let cg = mount_at(&b, "/sys/fs/cgroup").unwrap();
    assert_eq!(cg.typ().as_deref(), Some("cgroup"));
    assert!(opts(cg).contains(&"ro".to_owned()));
    assert_eq!(
        mount_at(&b, "/proc").unwrap().typ().as_deref(),
        Some("proc")
    );
    assert_eq!(
        mount_at(&b, "/dev/mqueue").unwrap().typ().as_deref(),
        Some("mqueue")
    );
    assert!(opts(mount_at(&b, "/dev/pts").unwrap()).contains(&"newinstance".to_owned()));
    let hosts = mount_at(&b, "/etc/hosts").unwrap();
    assert_eq!(hosts.source().as_deref(), Some(f.etc.hosts.as_path()));
    assert!(opts(hosts).contains(&"rw".to_owned()));
    assert!(opts(hosts).contains(&"rbind".to_owned()));
    assert_eq!(
        mount_at(&b, "/etc/resolv.conf")
            .unwrap()
            .source()
            .as_deref(),
        Some(f.etc.resolv_conf.as_path())
    );
    assert_eq!(
        mount_at(&b, "/etc/hostname").unwrap().source().as_deref(),
        Some(f.etc.hostname.as_path())
    );
}

#[test]
fn spec_serialises_and_round_trips() {
    let f = Fixture::new();
    let b = f.build(&ContainerConfig::default()).unwrap();
    let json = serde_json::to_string(&b.spec).unwrap();
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, b.spec);
    assert!(json.contains("\"cgroupsPath\":\"/berth/default/x\""));
}

#[test]
fn tty_sets_term_and_terminal() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            tty: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(process(&b).terminal(), Some(true));
    assert!(env(&b).contains(&"TERM=xterm".to_owned()));
    let b = f
        .build(&ContainerConfig {
            tty: true,
            env: vec!["TERM=dumb".into()],
            ..Default::default()
        })
        .unwrap();
    assert!(env(&b).contains(&"TERM=dumb".to_owned()));
    assert!(!env(&b).contains(&"TERM=xterm".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// Env, args, working dir, stop signal

#[test]
fn env_merges_image_then_user() {
    let f = Fixture::new();
    let img = image(serde_json::json!({
        "Cmd": ["sh"],
        "Env": ["PATH=/opt/bin:/bin", "A=image", "B=image", "HOME=/img"]
    }));
    let config = ContainerConfig {
        env: vec![
            "B=user".into(),
            "C=user".into(),
            "A".into(),
            "HOSTNAME=custom".into(),
        ],
        ..Default::default()
    };
    let b = f.build_with(&config, &img, None).unwrap();
    assert_eq!(
        env(&b),
        vec![
            "PATH=/opt/bin:/bin".to_owned(),
            "HOSTNAME=custom".into(),
            "B=user".into(),
            "HOME=/img".into(),
            "C=user".into()
        ]
    );
}

#[test]
fn args_follow_dockers_entrypoint_cmd_rules() {
    let f = Fixture::new();
    let img = image(serde_json::json!({"Entrypoint": ["/ep", "-x"], "Cmd": ["default"]}));
    let args = |c: ContainerConfig| {
        process(&f.build_with(&c, &img, None).unwrap())
            .args()
            .clone()
            .unwrap()
    };
    assert_eq!(
        args(ContainerConfig::default()),
        vec!["/ep", "-x", "default"]
    );
    assert_eq!(
        args(ContainerConfig {
            cmd: vec!["mine".into()],
            ..Default::default()
        }),
        vec!["/ep", "-x", "mine"]
    );
    // --entrypoint replaces the image's and clears its Cmd...
    assert_eq!(
        args(ContainerConfig {
            entrypoint: vec!["/other".into()],
            entrypoint_set: true,
            ..Default::default()
        }),
        vec!["/other"]
    );
    // ...unless the user gave a command.
    assert_eq!(
        args(ContainerConfig {
            entrypoint: vec!["/other".into()],
            entrypoint_set: true,
            cmd: vec!["a".into()],
            ..Default::default()
        }),
        vec!["/other", "a"]
    );
    // --entrypoint "" clears it.
    assert_eq!(
        args(ContainerConfig {
            entrypoint_set: true,
            cmd: vec!["ls".into()],
            ..Default::default()
        }),
        vec!["ls"]
    );
    let e = err_string(f.build_with(
        &ContainerConfig {
            entrypoint_set: true,
            ..Default::default()
        },
        &img,
        None,
    ));
    assert!(e.starts_with("no command specified"), "{e}");
    let e = err_string(f.build_with(
        &ContainerConfig::default(),
        &image(serde_json::json!({})),
        None,
    ));
    assert!(e.starts_with("no command specified"), "{e}");
}

#[test]
fn working_dir_rules() {
    let f = Fixture::new();
    let img = image(serde_json::json!({"Cmd": ["sh"], "WorkingDir": "/app/src"}));
    let b = f
        .build_with(&ContainerConfig::default(), &img, None)
        .unwrap();
    assert_eq!(process(&b).cwd(), Path::new("/app/src"));
    assert!(
        f.root.path().join("app/src").is_dir(),
        "missing working dir is created in the rootfs"
    );
    let b = f
        .build_with(
            &ContainerConfig {
                working_dir: "/w".into(),
                ..Default::default()
            },
            &img,
            None,
        )
        .unwrap();
    assert_eq!(process(&b).cwd(), Path::new("/w"));
    let e = err_string(f.build(&ContainerConfig {
        working_dir: "rel".into(),
        ..Default::default()
    }));
    assert!(e.contains("needs to be an absolute path"), "{e}");
}

#[test]
fn working_dir_is_created_owned_by_the_user() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            working_dir: "/home/alice/work".into(),
            user: "alice".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(process(&b).cwd(), Path::new("/home/alice/work"));
    let md = std::fs::metadata(f.root.path().join("home/alice/work")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
}

#[test]
fn working_dir_never_escapes_the_rootfs() {
    let f = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    // An absolute symlink in the rootfs resolves inside it, not on the host.
    symlink(outside.path(), f.root.path().join("escape")).unwrap();
    f.build(&ContainerConfig {
        working_dir: "/escape/made".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(
        !outside.path().join("made").exists(),
        "created a directory outside the rootfs"
    );
    let inside = f
        .root
        .path()
        .join(outside.path().strip_prefix("/").unwrap())
        .join("made");
    assert!(inside.is_dir(), "{} should exist", inside.display());
}

#[test]
fn stop_signal_from_config_image_or_default() {
    let f = Fixture::new();
    let img = image(serde_json::json!({"Cmd": ["sh"], "StopSignal": "SIGINT"}));
    assert_eq!(
        f.build_with(&ContainerConfig::default(), &img, None)
            .unwrap()
            .stop_signal,
        libc::SIGINT
    );
    let c = ContainerConfig {
        stop_signal: "USR1".into(),
        ..Default::default()
    };
    assert_eq!(
        f.build_with(&c, &img, None).unwrap().stop_signal,
        libc::SIGUSR1
    );
    let c = ContainerConfig {
        stop_signal: "NOPE".into(),
        ..Default::default()
    };
    assert_eq!(
        err_string(f.build(&c)),
        r#"invalid argument "NOPE" for "--stop-signal": invalid signal: NOPE"#
    );
}

// ---------------------------------------------------------------------------------------------
// Users

fn user_of(f: &Fixture, spec: &str) -> Result<(u32, u32, Vec<u32>, Vec<String>), Error> {
    let b = f.build(&ContainerConfig {
        user: spec.into(),
        ..Default::default()
    })?;
    let u = process(&b).user();
    Ok((
        u.uid(),
        u.gid(),
        u.additional_gids().clone().unwrap_or_default(),
        env(&b),
    ))
}

#[test]
fn user_by_name_uid_and_group() {
    let f = Fixture::new();
    let (uid, gid, extra, env) = user_of(&f, "alice").unwrap();
    assert_eq!((uid, gid), (1000, 1000));
    assert_eq!(extra, vec![10, 29]);
    assert!(env.contains(&"HOME=/home/alice".to_owned()));
    let (uid, gid, extra, _) = user_of(&f, "1000").unwrap();
    assert_eq!((uid, gid, extra), (1000, 1000, vec![10, 29]));
    let (uid, gid, extra, _) = user_of(&f, "alice:staff").unwrap();
    assert_eq!((uid, gid), (1000, 50));
    assert!(extra.is_empty());
    let (uid, gid, _, _) = user_of(&f, "alice:77").unwrap();
    assert_eq!((uid, gid), (1000, 77));
    let (uid, gid, extra, env) = user_of(&f, "4242:4343").unwrap();
    assert_eq!((uid, gid, extra), (4242, 4343, vec![]));
    assert!(env.contains(&"HOME=/".to_owned()));
    let (uid, gid, _, _) = user_of(&f, "4242").unwrap();
    assert_eq!((uid, gid), (4242, 0));
    let (uid, gid, extra, _) = user_of(&f, "root").unwrap();
    assert_eq!((uid, gid, extra), (0, 0, vec![10]));
    let (_, _, _, env) = user_of(&f, "nohome").unwrap();
    assert!(env.contains(&"HOME=/".to_owned()));
}

#[test]
fn public_resolve_user() {
    let f = Fixture::new();
    let u = resolve_user(f.root.path(), "alice").unwrap();
    assert_eq!(
        u,
        ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10, 29],
            home: "/home/alice".into()
        }
    );
    assert_eq!(resolve_user(f.root.path(), "").unwrap().home, "/root");
}

#[test]
fn unknown_users_and_groups_are_errors() {
    let f = Fixture::new();
    assert_eq!(
        user_of(&f, "bob").unwrap_err().to_string(),
        "unable to find user bob: no matching entries in passwd file"
    );
    assert_eq!(
        user_of(&f, "alice:nogroup").unwrap_err().to_string(),
        "unable to find group nogroup: no matching entries in group file"
    );
    assert!(
        user_of(&f, "99999999999")
            .unwrap_err()
            .to_string()
            .contains("must be in range")
    );
}

#[test]
fn image_user_is_the_default() {
    let f = Fixture::new();
    let img = image(serde_json::json!({"Cmd": ["sh"], "User": "daemon"}));
    let b = f
        .build_with(&ContainerConfig::default(), &img, None)
        .unwrap();
    assert_eq!(process(&b).user().uid(), 1);
    let b = f
        .build_with(
            &ContainerConfig {
                user: "0".into(),
                ..Default::default()
            },
            &img,
            None,
        )
        .unwrap();
    assert_eq!(process(&b).user().uid(), 0);
}

#[test]
fn rootfs_without_etc_passes_numeric_ids_only() {
    let f = Fixture::new();
    std::fs::remove_dir_all(f.root.path().join("etc")).unwrap();
    let (uid, gid, _, env) = user_of(&f, "12:34").unwrap();
    assert_eq!((uid, gid), (12, 34));
    assert!(env.contains(&"HOME=/".to_owned()));
    assert!(user_of(&f, "alice").is_err());
}

#[test]
fn symlinked_passwd_resolves_inside_the_rootfs() {
    let f = Fixture::new();
    // A host file the container must never see.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(
        host.path().join("passwd"),
        "outsider:x:777:777::/:/bin/sh\n",
    )
    .unwrap();
    let passwd = f.root.path().join("etc/passwd");
    std::fs::remove_file(&passwd).unwrap();
    symlink(host.path().join("passwd"), &passwd).unwrap();
    assert!(
        user_of(&f, "outsider")
            .unwrap_err()
            .to_string()
            .contains("unable to find user outsider")
    );
    // A relative symlink climbing out with .. is clamped to the rootfs.
    std::fs::create_dir_all(f.root.path().join("real")).unwrap();
    std::fs::write(
        f.root.path().join("real/passwd"),
        "insider:x:555:556::/in:/bin/sh\n",
    )
    .unwrap();
    std::fs::remove_file(&passwd).unwrap();
    symlink("../../../../../../../../real/passwd", &passwd).unwrap();
    let (uid, gid, _, env) = user_of(&f, "insider").unwrap();
    assert_eq!((uid, gid), (555, 556));
    assert!(env.contains(&"HOME=/in".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// Capabilities, privileged, security options

#[test]
fn cap_add_and_drop() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            cap_add: vec!["sys_admin".into()],
            cap_drop: vec!["CAP_CHOWN".into(), "Net_Raw".into()],
            ..Default::default()
        })
        .unwrap();
    let caps = cap_names(&b);
    assert!(caps.contains(&"CAP_SYS_ADMIN".to_owned()));
    assert!(!caps.contains(&"CAP_CHOWN".to_owned()));
    assert!(!caps.contains(&"CAP_NET_RAW".to_owned()));
    assert_eq!(caps.len(), 13);
    // CAP_SYS_ADMIN unlocks its syscall group in the default profile.
    let s = linux(&b).seccomp().as_ref().unwrap();
    assert!(allowed_unconditionally(s, "mount"));
    assert!(allowed_unconditionally(s, "clone"));
    assert!(
        syscall_rules(s, "clone3")
            .iter()
            .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
    );

    let b = f
        .build(&ContainerConfig {
            cap_drop: vec!["all".into()],
            cap_add: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(cap_names(&b), vec!["CAP_NET_BIND_SERVICE".to_owned()]);

    let b = f
        .build(&ContainerConfig {
            cap_add: vec!["ALL".into()],
            cap_drop: vec!["SYS_MODULE".into()],
            ..Default::default()
        })
        .unwrap();
    let host = caps::host_bounding_set().unwrap();
    assert_eq!(cap_names(&b).len(), host.count_ones() as usize - 1);
    assert!(!cap_names(&b).contains(&"CAP_SYS_MODULE".to_owned()));
    assert!(cap_names(&b).contains(&"CAP_SYS_ADMIN".to_owned()));
}

#[test]
fn all_capabilities_are_limited_to_the_hosts_bounding_set() {
    let host = caps::host_bounding_set().expect("CapBnd in /proc/self/status");
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            privileged: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(cap_names(&b).len(), host.count_ones() as usize);
    // Without CAP_SYS_RESOURCE (24) and CAP_BPF (39) on the host, "all" has neither.
    let set = !(1u64 << 24) & !(1u64 << 39);
    let all = caps::resolve(&[], &[], true, Some(set)).unwrap();
    assert_eq!(all.len(), caps::ALL.len() - 2);
    assert!(!all.contains(&"CAP_SYS_RESOURCE".to_owned()) && !all.contains(&"CAP_BPF".to_owned()));
    assert!(all.contains(&"CAP_SYS_ADMIN".to_owned()));
    let added = caps::resolve(&["all".into()], &["chown".into()], false, Some(set)).unwrap();
    assert_eq!(added.len(), caps::ALL.len() - 3);
    assert_eq!(
        caps::resolve(&[], &[], true, None).unwrap().len(),
        caps::ALL.len()
    );
    // Explicitly added capabilities are kept (the runtime reports what it cannot grant).
    assert!(
        caps::resolve(&["SYS_RESOURCE".into()], &[], false, Some(set))
            .unwrap()
            .contains(&"CAP_SYS_RESOURCE".to_owned())
    );
}

#[test]
fn unknown_capability_is_an_error() {
    let f = Fixture::new();
    assert_eq!(
        err_string(f.build(&ContainerConfig {
            cap_add: vec!["FLY".into()],
            ..Default::default()
        })),
        r#"invalid argument "FLY" for "--cap-add": unknown capability: "CAP_FLY""#
    );
    assert!(
        err_string(f.build(&ContainerConfig {
            cap_drop: vec!["cap_nope".into()],
            ..Default::default()
        }))
        .contains("--cap-drop")
    );
}

#[test]
fn privileged_container() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            privileged: true,
            cap_drop: vec!["CHOWN".into()],
            ..Default::default()
        })
        .unwrap();
    assert!(
        cap_names(&b).contains(&"CAP_CHOWN".to_owned()),
        "privileged ignores drops"
    );
    assert!(cap_names(&b).contains(&"CAP_SYS_ADMIN".to_owned()));
    let l = linux(&b);
    assert!(l.seccomp().is_none());
    assert!(l.masked_paths().as_ref().is_some_and(|m| m.is_empty()));
    assert!(l.readonly_paths().as_ref().is_some_and(|m| m.is_empty()));
    assert!(opts(mount_at(&b, "/sys").unwrap()).contains(&"rw".to_owned()));
    assert!(opts(mount_at(&b, "/sys/fs/cgroup").unwrap()).contains(&"rw".to_owned()));
    let rules = l.resources().as_ref().unwrap().devices().clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    let devices = l.devices().clone().unwrap();
    let null = devices
        .iter()
        .find(|d| d.path() == Path::new("/dev/null"))
        .expect("/dev/null listed");
    assert_eq!((null.major(), null.minor()), (1, 3));
    assert!(!devices.iter().any(|d| d.path().starts_with("/dev/pts")));
}

#[test]
fn security_options() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            security_opt: vec!["seccomp=unconfined".into(), "no-new-privileges".into()],
            ..Default::default()
        })
        .unwrap();
    assert!(linux(&b).seccomp().is_none());
    assert_eq!(process(&b).no_new_privileges(), Some(true));
    let b = f
        .build(&ContainerConfig {
            security_opt: vec!["apparmor=unconfined".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(b.warnings.len(), 1);
    assert!(b.warnings[0].contains("apparmor=unconfined"));
    assert!(linux(&b).seccomp().is_some());
    assert!(
        err_string(f.build(&ContainerConfig {
            security_opt: vec!["bogus".into()],
            ..Default::default()
        }))
        .contains("--security-opt")
    );
}

#[test]
fn seccomp_profile_file_in_dockers_format() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    std::fs::write(
        &path,
        r#"{
          "defaultAction": "SCMP_ACT_ERRNO",
          "defaultErrnoRet": 38,
          "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                      {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
          "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
            {"names": ["uname"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "2.6"}},
            {"names": ["futex"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "999.0"}},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}
          ]
        }"#,
    )
    .unwrap();
    let c = ContainerConfig {
        security_opt: vec![format!("seccomp={}", path.display())],
        ..Default::default()
    };
    let b = f.build(&c).unwrap();
    let s = linux(&b).seccomp().as_ref().unwrap();
    assert_eq!(s.default_errno_ret(), Some(38));
    assert!(allowed_unconditionally(s, "read"));
    assert!(allowed_unconditionally(s, "getpid"), "legacy single name");
    assert!(allowed_unconditionally(s, "uname"));
    assert!(
        syscall_rules(s, "mount").is_empty(),
        "CAP_SYS_ADMIN is not in the default set"
    );
    assert!(
        syscall_rules(s, "chroot").is_empty(),
        "excluded: the container has CAP_SYS_CHROOT"
    );
    assert!(
        syscall_rules(s, "futex").is_empty(),
        "kernel too old for the rule"
    );
    let kill = syscall_rules(s, "kill");
    assert_eq!(kill[0].args().as_ref().unwrap()[0].value(), 9);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![
                oci_spec::runtime::Arch::ScmpArchX86_64,
                oci_spec::runtime::Arch::ScmpArchX86
            ]
        );
    }
    berth_seccomp::compile(s).expect("the resolved profile compiles");

    let c = ContainerConfig {
        security_opt: vec![format!("seccomp={}", path.display())],
        cap_add: vec!["SYS_ADMIN".into()],
        ..Default::default()
    };
    let b = f.build(&c).unwrap();
    assert!(allowed_unconditionally(
        linux(&b).seccomp().as_ref().unwrap(),
        "mount"
    ));
}

#[test]
fn seccomp_profile_in_oci_form() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oci.json");
    std::fs::write(&path, r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#).unwrap();
    let c = ContainerConfig {
        security_opt: vec![format!("seccomp:{}", path.display())],
        ..Default::default()
    };
    let b = f.build(&c).unwrap();
    let s = linux(&b).seccomp().as_ref().unwrap();
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
    assert_eq!(
        syscall_rules(s, "mkdir")[0].action(),
        LinuxSeccompAction::ScmpActErrno
    );
}

#[test]
fn bad_seccomp_profiles_name_the_file() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, "{ not json").unwrap();
    let c = ContainerConfig {
        security_opt: vec![format!("seccomp={}", path.display())],
        ..Default::default()
    };
    let e = err_string(f.build(&c));
    assert!(
        e.starts_with(&format!(
            "invalid seccomp profile {}: malformed JSON",
            path.display()
        )),
        "{e}"
    );
    std::fs::write(&path, r#"{"syscalls": []}"#).unwrap();
    assert!(err_string(f.build(&c)).contains("defaultAction"));
    std::fs::write(&path, r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#).unwrap();
    assert!(err_string(f.build(&c)).contains("either 'architectures' or 'archMap'"));
    std::fs::write(
        &path,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    assert!(err_string(f.build(&c)).contains("syscalls[0]: no syscall names"));
    let missing = dir.path().join("missing.json");
    let c = ContainerConfig {
        security_opt: vec![format!("seccomp={}", missing.display())],
        ..Default::default()
    };
    assert!(err_string(f.build(&c)).contains(&format!("{}: cannot read it", missing.display())));
}

// ---------------------------------------------------------------------------------------------
// The default seccomp profile

#[test]
fn default_seccomp_profile_shape() {
    let s = default_seccomp();
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(s.default_errno_ret(), Some(1));
    if cfg!(target_arch = "x86_64") {
        use oci_spec::runtime::Arch;
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        assert!(allowed_unconditionally(&s, "arch_prctl"));
        assert!(allowed_unconditionally(&s, "modify_ldt"));
        assert!(
            syscall_rules(&s, "set_tls").is_empty(),
            "arm-only syscall on amd64"
        );
    }
    for ok in [
        "read",
        "write",
        "execve",
        "openat",
        "futex",
        "clock_gettime",
        "socketpair",
        "chroot",
        "ptrace",
    ] {
        assert!(allowed_unconditionally(&s, ok), "{ok} should be allowed");
    }
    for denied in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "reboot",
        "init_module",
        "bpf",
        "kexec_load",
        "open_by_handle_at",
        "acct",
        "settimeofday",
    ] {
        assert!(
            !allowed_unconditionally(&s, denied),
            "{denied} should be denied"
        );
    }
    // clone: only without namespace flags.
    let clone = syscall_rules(&s, "clone");
    assert_eq!(clone.len(), 1);
    let a = clone[0].args().as_ref().unwrap()[0];
    assert_eq!(
        (a.index(), a.op(), a.value(), a.value_two()),
        (
            0,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            seccomp::CLONE_NS_FLAGS,
            Some(0)
        )
    );
    assert_eq!(seccomp::CLONE_NS_FLAGS, 0x7E02_0000);
    // clone3: ENOSYS.
    let clone3 = syscall_rules(&s, "clone3");
    assert_eq!(clone3.len(), 1);
    assert_eq!(
        (clone3[0].action(), clone3[0].errno_ret()),
        (LinuxSeccompAction::ScmpActErrno, Some(38))
    );
    // personality: only the listed personas.
    let mut personas: Vec<u64> = syscall_rules(&s, "personality")
        .iter()
        .map(|r| r.args().as_ref().unwrap()[0].value())
        .collect();
    personas.sort_unstable();
    assert_eq!(personas, vec![0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    // socket: anything but AF_VSOCK.
    let socket = syscall_rules(&s, "socket");
    assert_eq!(
        socket[0].args().as_ref().unwrap()[0].op(),
        LinuxSeccompOperator::ScmpCmpNe
    );
    assert_eq!(socket[0].args().as_ref().unwrap()[0].value(), 40);
}

#[test]
fn capability_groups_follow_the_capabilities() {
    let with = |c: &str| {
        let mut caps = default_capabilities();
        caps.push(c.to_owned());
        seccomp_for(&caps)
    };
    for (cap, sys) in [
        ("CAP_SYS_PTRACE", "kcmp"),
        ("CAP_SYS_MODULE", "init_module"),
        ("CAP_SYS_TIME", "settimeofday"),
        ("CAP_SYS_BOOT", "reboot"),
        ("CAP_SYS_RAWIO", "iopl"),
        ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
        ("CAP_SYS_NICE", "mbind"),
        ("CAP_SYSLOG", "syslog"),
        ("CAP_BPF", "bpf"),
        ("CAP_PERFMON", "perf_event_open"),
        ("CAP_SYS_PACCT", "acct"),
        ("CAP_SYS_TTY_CONFIG", "vhangup"),
    ] {
        assert!(
            !allowed_unconditionally(&default_seccomp(), sys),
            "{sys} without {cap}"
        );
        assert!(allowed_unconditionally(&with(cap), sys), "{sys} with {cap}");
    }
    // Without CAP_SYS_CHROOT, chroot goes.
    let no_chroot: Vec<String> = default_capabilities()
        .into_iter()
        .filter(|c| c != "CAP_SYS_CHROOT")
        .collect();
    assert!(!allowed_unconditionally(&seccomp_for(&no_chroot), "chroot"));
}

#[test]
fn default_seccomp_compiles_with_berth_seccomp() {
    let s = default_seccomp();
    let p = berth_seccomp::compile(&s).expect("default profile compiles");
    assert!(!p.instructions.is_empty());
    assert!(p.instructions.len() <= berth_seccomp::MAX_INSTRUCTIONS);
    let mut all = caps::ALL
        .iter()
        .map(|c| (*c).to_owned())
        .collect::<Vec<_>>();
    all.sort();
    berth_seccomp::compile(&seccomp_for(&all)).expect("profile with every capability compiles");
}

/// Load the compiled default profile in a forked child and check what it does to real
/// syscalls: the child reports one bit per failed expectation in its exit status.
#[test]
fn default_seccomp_behaves_like_dockers_in_a_child() {
    let prepared = berth_seccomp::compile(&default_seccomp())
        .unwrap()
        .prepare()
        .unwrap();
    // SAFETY: fork in a test process; the child only makes raw syscalls (prctl, seccomp,
    // unshare, clone3, personality, getpid) and `_exit`s without touching shared state.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut bad = 0;
        // SAFETY: PR_SET_NO_NEW_PRIVS with constant arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(100) };
        }
        if prepared.load().is_err() {
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(101) };
        }
        // SAFETY: unshare with a namespace flag; denied by the filter (EPERM).
        let rc = unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUTS) };
        if !(rc == -1 && errno() == libc::EPERM) {
            bad |= 1;
        }
        // SAFETY: clone3 with a null argument; the filter answers ENOSYS before the kernel
        // would look at it.
        let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
        if !(rc == -1 && errno() == libc::ENOSYS) {
            bad |= 2;
        }
        // SAFETY: personality query (0xffffffff) changes nothing.
        let rc = unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) };
        if rc == -1 {
            bad |= 4;
        }
        // SAFETY: personality(READ_IMPLIES_EXEC) is refused by the filter (not in the list).
        let rc = unsafe { libc::syscall(libc::SYS_personality, 0x0400_0000u64) };
        if !(rc == -1 && errno() == libc::EPERM) {
            bad |= 8;
        }
        // SAFETY: getpid has no side effects.
        if unsafe { libc::syscall(libc::SYS_getpid) } <= 0 {
            bad |= 16;
        }
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(bad) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(rc, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "failed expectations (bits): unshare=1 clone3=2 personality-query=4 personality-bad=8 getpid=16"
    );
}

// ---------------------------------------------------------------------------------------------
// Read-only, network modes

#[test]
fn read_only_root() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            read_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(b.spec.root().as_ref().unwrap().readonly(), Some(true));
    for p in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
        let o = opts(mount_at(&b, p).unwrap());
        assert!(
            o.contains(&"ro".to_owned()) && !o.contains(&"rw".to_owned()),
            "{p}: {o:?}"
        );
    }
    assert!(!opts(mount_at(&b, "/dev/shm").unwrap()).contains(&"ro".to_owned()));
}

#[test]
fn network_modes() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            network_mode: "host".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(!ns_types(&b).contains(&LinuxNamespaceType::Network));
    assert!(ns_types(&b).contains(&LinuxNamespaceType::Uts));
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    assert_eq!(b.spec.hostname().as_deref(), Some(host.as_str()));
    assert!(env(&b).contains(&format!("HOSTNAME={host}")));
    let b = f
        .build(&ContainerConfig {
            network_mode: "none".into(),
            hostname: "web".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(ns_types(&b).contains(&LinuxNamespaceType::Network));
    assert_eq!(b.spec.hostname().as_deref(), Some("web"));
    // Networks and `container:` modes get a namespace too; the engine sets its path.
    for mode in ["bridge", "container:x", "mynet"] {
        let b = f
            .build(&ContainerConfig {
                network_mode: mode.into(),
                ..Default::default()
            })
            .unwrap();
        assert!(
            ns_types(&b).contains(&LinuxNamespaceType::Network),
            "{mode}"
        );
        assert!(b.warnings.is_empty(), "{mode}: {:?}", b.warnings);
    }
}

#[test]
fn container_hostname_rules() {
    assert_eq!(
        container_hostname(ID, &ContainerConfig::default()),
        "0123456789ab"
    );
    assert_eq!(
        container_hostname(
            ID,
            &ContainerConfig {
                hostname: "h".into(),
                ..Default::default()
            }
        ),
        "h"
    );
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        container_hostname(
            ID,
            &ContainerConfig {
                network_mode: "host".into(),
                ..Default::default()
            }
        ),
        host
    );
}

// ---------------------------------------------------------------------------------------------
// Resources and rlimits

#[test]
fn memory_limits() {
    let f = Fixture::new();
    let mem = |c: ContainerConfig| {
        let b = f.build(&c).unwrap();
        let m = linux(&b).resources().as_ref().unwrap().memory().unwrap();
        (m.limit(), m.swap())
    };
    let g = 1 << 30;
    assert_eq!(
        mem(ContainerConfig {
            memory: g,
            ..Default::default()
        }),
        (Some(g), Some(2 * g))
    );
    assert_eq!(
        mem(ContainerConfig {
            memory: g,
            memory_swap: -1,
            ..Default::default()
        }),
        (Some(g), Some(-1))
    );
    assert_eq!(
        mem(ContainerConfig {
            memory: g,
            memory_swap: 3 * g,
            ..Default::default()
        }),
        (Some(g), Some(3 * g))
    );
    assert!(
        err_string(f.build(&ContainerConfig {
            memory: g,
            memory_swap: g / 2,
            ..Default::default()
        }))
        .contains("Minimum memoryswap limit")
    );
    assert!(
        err_string(f.build(&ContainerConfig {
            memory_swap: g,
            ..Default::default()
        }))
        .contains("always set the Memory limit")
    );
    assert!(
        err_string(f.build(&ContainerConfig {
            memory: 1024,
            ..Default::default()
        }))
        .contains("Minimum memory limit allowed is 6MB")
    );
}

#[test]
fn cpu_and_pids_limits() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            nano_cpus: 500_000_000,
            pids_limit: 100,
            ..Default::default()
        })
        .unwrap();
    let r = linux(&b).resources().as_ref().unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
    assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
    let b = f
        .build(&ContainerConfig {
            nano_cpus: 10_000_000,
            pids_limit: -1,
            ..Default::default()
        })
        .unwrap();
    let r = linux(&b).resources().as_ref().unwrap();
    assert_eq!(r.cpu().clone().unwrap().quota(), Some(1000));
    assert_eq!(r.pids().as_ref().unwrap().limit(), -1);
    let e = err_string(f.build(&ContainerConfig {
        nano_cpus: 100_000 * 1_000_000_000,
        ..Default::default()
    }));
    assert!(e.contains("Range of CPUs is from 0.01 to"), "{e}");
    assert!(
        err_string(f.build(&ContainerConfig {
            nano_cpus: 1,
            ..Default::default()
        }))
        .contains("Range of CPUs")
    );
}

#[test]
fn ulimits_become_rlimits() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            ulimits: vec![
                Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 2048,
                },
                Ulimit {
                    name: "core".into(),
                    soft: -1,
                    hard: -1,
                },
                Ulimit {
                    name: "nofile".into(),
                    soft: 10,
                    hard: 20,
                },
            ],
            ..Default::default()
        })
        .unwrap();
    let r = process(&b).rlimits().clone().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].typ(), r[0].soft(), r[0].hard()),
        (PosixRlimitType::RlimitNofile, 10, 20)
    );
    assert_eq!(
        (r[1].typ(), r[1].soft(), r[1].hard()),
        (PosixRlimitType::RlimitCore, u64::MAX, u64::MAX)
    );
    let e = err_string(f.build(&ContainerConfig {
        ulimits: vec![Ulimit {
            name: "bogus".into(),
            soft: 1,
            hard: 1,
        }],
        ..Default::default()
    }));
    assert!(e.contains("invalid ulimit type: bogus"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// --init, mounts

#[test]
fn init_binds_the_shim_and_prefixes_args() {
    let f = Fixture::new();
    let shim = Path::new("/usr/libexec/berth-shim");
    let img = image(serde_json::json!({"Entrypoint": ["/ep"], "Cmd": ["x"]}));
    let b = f
        .build_with(
            &ContainerConfig {
                init: true,
                ..Default::default()
            },
            &img,
            Some(shim),
        )
        .unwrap();
    assert_eq!(
        process(&b).args().clone().unwrap(),
        vec!["/sbin/berth-init", "init", "--", "/ep", "x"]
    );
    let m = mount_at(&b, "/sbin/berth-init").unwrap();
    assert_eq!(m.source().as_deref(), Some(shim));
    assert!(opts(m).contains(&"ro".to_owned()));
    let e = err_string(f.build_with(
        &ContainerConfig {
            init: true,
            ..Default::default()
        },
        &img,
        None,
    ));
    assert!(e.contains("--init needs the berth-shim binary"), "{e}");
    let b = f
        .build_with(&ContainerConfig::default(), &img, Some(shim))
        .unwrap();
    assert!(mount_at(&b, "/sbin/berth-init").is_none());
}

#[test]
fn volume_bind_creates_a_missing_source() {
    let f = Fixture::new();
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("new/dir");
    let mut m = parse::volume(&format!("{}:/data:ro", src.display())).unwrap();
    let b = f
        .build(&ContainerConfig {
            mounts: vec![m.clone()],
            ..Default::default()
        })
        .unwrap();
    assert!(src.is_dir());
    let mnt = mount_at(&b, "/data").unwrap();
    assert_eq!(mnt.source().as_deref(), Some(src.as_path()));
    assert_eq!(opts(mnt), vec!["rbind", "rprivate", "ro"]);
    // A propagation mode is kept.
    m.options.insert(0, "rshared".into());
    m.read_only = false;
    let b = f
        .build(&ContainerConfig {
            mounts: vec![m],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        opts(mount_at(&b, "/data").unwrap()),
        vec!["rbind", "rshared", "rw"]
    );
}

#[test]
fn mount_bind_does_not_create_the_source() {
    let f = Fixture::new();
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("absent");
    let m = parse::mount(&format!("type=bind,src={},dst=/data", src.display())).unwrap();
    let e = err_string(f.build(&ContainerConfig {
        mounts: vec![m],
        ..Default::default()
    }));
    assert_eq!(
        e,
        format!("bind source path does not exist: {}", src.display())
    );
    assert!(!src.exists());
    let m = parse::mount(&format!(
        "type=bind,src={},dst=/data,bind-nonrecursive",
        host.path().display()
    ))
    .unwrap();
    let b = f
        .build(&ContainerConfig {
            mounts: vec![m],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(opts(mount_at(&b, "/data").unwrap())[0], "bind");
}

#[test]
fn tmpfs_mounts_get_dockers_defaults() {
    let f = Fixture::new();
    let b = f
        .build(&ContainerConfig {
            tmpfs: vec!["/run:size=1m".into(), "/x:exec,ro".into()],
            mounts: vec![parse::mount("type=tmpfs,dst=/t,tmpfs-mode=700").unwrap()],
            ..Default::default()
        })
        .unwrap();
    let run = mount_at(&b, "/run").unwrap();
    assert_eq!(run.typ().as_deref(), Some("tmpfs"));
    assert_eq!(opts(run), vec!["nosuid", "nodev", "noexec", "size=1048576"]);
    assert_eq!(
        opts(mount_at(&b, "/x").unwrap()),
        vec!["nosuid", "nodev", "exec", "ro"]
    );
    assert_eq!(
        opts(mount_at(&b, "/t").unwrap()),
        vec!["nosuid", "nodev", "noexec", "mode=700"]
    );
    let e = err_string(f.build(&ContainerConfig {
        tmpfs: vec!["/run:bad".into()],
        ..Default::default()
    }));
    assert!(e.contains("--tmpfs"), "{e}");
}

#[test]
fn unresolved_volumes_are_refused() {
    let f = Fixture::new();
    let e = err_string(f.build(&ContainerConfig {
        mounts: vec![parse::volume("data:/d").unwrap()],
        ..Default::default()
    }));
    assert!(e.contains("volume mount at /d was not resolved"), "{e}");
    let e = err_string(f.build(&ContainerConfig {
        mounts: vec![parse::volume("/anon").unwrap()],
        ..Default::default()
    }));
    assert!(e.contains("volume mount at /anon was not resolved"), "{e}");
}

#[test]
fn user_mounts_replace_defaults_and_sort_parents_first() {
    let f = Fixture::new();
    let host = tempfile::tempdir().unwrap();
    let hs = host.path().display().to_string();
    let b = f
        .build(&ContainerConfig {
            mounts: vec![
                parse::volume(&format!("{hs}:/a/b/c")).unwrap(),
                parse::volume(&format!("{hs}:/a")).unwrap(),
                parse::volume(&format!("{hs}:/etc/hosts")).unwrap(),
            ],
            tmpfs: vec!["/dev/shm:size=1g".into()],
            ..Default::default()
        })
        .unwrap();
    let ms = b.spec.mounts().as_ref().unwrap();
    let shm: Vec<_> = ms
        .iter()
        .filter(|m| m.destination() == Path::new("/dev/shm"))
        .collect();
    assert_eq!(shm.len(), 1);
    assert!(opts(shm[0]).contains(&format!("size={}", 1u64 << 30)));
    let hosts: Vec<_> = ms
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].source().as_deref(), Some(host.path()));
    let pos = |d: &str| {
        ms.iter()
            .position(|m| m.destination() == Path::new(d))
            .unwrap()
    };
    assert!(pos("/a") < pos("/a/b/c"));
    assert!(pos("/proc") < pos("/a"));
}

#[test]
fn managed_etc_files_are_mounted_after_a_mount_on_etc() {
    let f = Fixture::new();
    let host = tempfile::tempdir().unwrap();
    let hs = host.path().display().to_string();
    let b = f
        .build(&ContainerConfig {
            mounts: vec![parse::volume(&format!("{hs}:/etc")).unwrap()],
            ..Default::default()
        })
        .unwrap();
    let ms = b.spec.mounts().as_ref().unwrap();
    let pos = |d: &str| {
        ms.iter()
            .position(|m| m.destination() == Path::new(d))
            .unwrap()
    };
    for f in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
        assert!(pos("/etc") < pos(f), "{f} must not be hidden by /etc");
    }
}

#[test]
fn duplicate_mount_points_are_errors() {
    let f = Fixture::new();
    let host = tempfile::tempdir().unwrap();
    let hs = host.path().display().to_string();
    let e = err_string(f.build(&ContainerConfig {
        mounts: vec![parse::volume(&format!("{hs}:/d")).unwrap()],
        tmpfs: vec!["/d/".into()],
        ..Default::default()
    }));
    assert!(e.starts_with("Duplicate mount point: /d"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// /etc files

struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    fn new(hosts: &str, resolv: &str, upstream: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hosts"), hosts).unwrap();
        std::fs::write(dir.path().join("resolv.conf"), resolv).unwrap();
        if let Some(u) = upstream {
            std::fs::write(dir.path().join("upstream"), u).unwrap();
        }
        FakeHost { dir }
    }

    fn write(
        &self,
        out: &Path,
        hostname: &str,
        mode: &str,
        dns: &[&str],
        extra: &[&str],
    ) -> Result<EtcFiles, Error> {
        let p = |n: &str| self.dir.path().join(n).to_str().unwrap().to_owned();
        let (h, r, u) = (p("hosts"), p("resolv.conf"), p("upstream"));
        let files = etc::HostFiles {
            hosts: &h,
            resolv_conf: &r,
            resolved_upstream: &u,
        };
        let dns: Vec<String> = dns.iter().map(|s| (*s).to_owned()).collect();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        etc::write_all(&files, out, hostname, mode, &dns, &extra)
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn etc_files_for_network_none() {
    let host = FakeHost::new(
        "10.0.0.1 hostonly\n",
        "search example.com\nnameserver 127.0.0.53\nnameserver 10.1.1.1\noptions ndots:2\n",
        None,
    );
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("c");
    let files = host
        .write(
            &dir,
            "abc",
            "none",
            &[],
            &["db:10.0.0.5", "v6:::1", "eq=1.2.3.4"],
        )
        .unwrap();
    assert_eq!(
        files,
        EtcFiles {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf")
        }
    );
    assert_eq!(read(&files.hostname), "abc\n");
    assert_eq!(
        read(&files.hosts),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\tabc\n10.0.0.5\tdb\n::1\tv6\n1.2.3.4\teq\n"
    );
    assert_eq!(
        read(&files.resolv_conf),
        "search example.com\nnameserver 10.1.1.1\noptions ndots:2\n"
    );
}

#[test]
fn etc_files_for_network_host() {
    let host = FakeHost::new(
        "10.0.0.1 hostonly\n",
        "nameserver 127.0.0.53\n",
        Some("nameserver 9.9.9.9\n"),
    );
    let out = tempfile::tempdir().unwrap();
    let files = host
        .write(out.path(), "myhost", "host", &[], &["x:10.9.9.9"])
        .unwrap();
    assert_eq!(read(&files.hosts), "10.0.0.1 hostonly\n10.9.9.9\tx\n");
    assert_eq!(
        read(&files.resolv_conf),
        "nameserver 127.0.0.53\n",
        "host network reaches the host's stub"
    );
    assert_eq!(read(&files.hostname), "myhost\n");
}

#[test]
fn resolv_conf_fallbacks_and_dns_override() {
    // Only the stub: systemd-resolved's upstream list is used.
    let host = FakeHost::new(
        "",
        "nameserver 127.0.0.53\noptions edns0\n",
        Some("nameserver 9.9.9.9\nsearch lan\n"),
    );
    let out = tempfile::tempdir().unwrap();
    let files = host.write(out.path(), "h", "none", &[], &[]).unwrap();
    assert_eq!(read(&files.resolv_conf), "nameserver 9.9.9.9\nsearch lan\n");
    // Only loopback and no upstream: Docker's public fallback.
    let host = FakeHost::new("", "nameserver 127.0.0.1\nsearch corp\n", None);
    let files = host.write(out.path(), "h", "", &[], &[]).unwrap();
    assert_eq!(
        read(&files.resolv_conf),
        "search corp\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    );
    // --dns replaces the nameservers and keeps the rest.
    let host = FakeHost::new("", "nameserver 10.1.1.1\nsearch corp\n", None);
    let files = host
        .write(
            out.path(),
            "h",
            "none",
            &["1.1.1.1", "2606:4700::1111"],
            &[],
        )
        .unwrap();
    assert_eq!(
        read(&files.resolv_conf),
        "search corp\nnameserver 1.1.1.1\nnameserver 2606:4700::1111\n"
    );
}

#[test]
fn bad_etc_values_write_nothing() {
    let host = FakeHost::new("", "nameserver 10.1.1.1\n", None);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("c");
    let e = host
        .write(&dir, "h", "none", &["not-an-ip"], &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"invalid argument "not-an-ip" for "--dns": not-an-ip is not an ip address"#
    );
    assert!(!dir.exists());
    let e = host
        .write(&dir, "h", "none", &[], &["nocolon"])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(r#"invalid argument "nocolon" for "--add-host""#),
        "{e}"
    );
    assert!(
        host.write(&dir, "h", "none", &[], &["a:999.1.1.1"])
            .unwrap_err()
            .to_string()
            .contains("invalid IP address")
    );
    assert!(
        host.write(&dir, "h", "none", &[], &["a:host-gateway"])
            .unwrap_err()
            .to_string()
            .contains("host-gateway")
    );
    assert!(!dir.exists());
}

#[test]
fn public_write_etc_files_uses_the_hosts_files() {
    let out = tempfile::tempdir().unwrap();
    let files = write_etc_files(out.path(), "pub", "none", &["10.0.0.2".into()], &[]).unwrap();
    assert_eq!(read(&files.hostname), "pub\n");
    assert!(read(&files.hosts).contains("127.0.1.1\tpub\n"));
    assert!(read(&files.resolv_conf).contains("nameserver 10.0.0.2\n"));
}
