//! berth-net against the real CNI plugins (root): attach, the address inside the namespace,
//! published ports' rules, overlap and fault handling, and nothing left after detach + purge.

use std::path::Path;
use std::process::Command;

use berth_net::{AttachOptions, Config, CreateOptions, Manager, parse_publish};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Root {
    dir: tempfile::TempDir,
    m: Manager,
    /// Dropped after `Drop::drop` below has detached everything.
    _portmap: berth_testutil::host::PortmapChains,
}

impl Root {
    fn new(plugin_dirs: Option<Vec<std::path::PathBuf>>) -> Root {
        berth_testutil::require_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-net-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let mut cfg = Config::new(dir.path().join("root"), dir.path().join("state"));
        if let Some(d) = plugin_dirs {
            cfg.plugin_dirs = d;
        }
        let m = Manager::open(cfg).unwrap();
        Root {
            dir,
            m,
            _portmap: berth_testutil::host::portmap_chains(),
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for a in self.m.all_attachments() {
            let _ = self.m.detach_all(&a.container_id, false);
        }
        self.m.purge();
        let _ = self.dir.path();
    }
}

fn no_leftovers(r: &Root, bridge: &str, id: &str, subnet: &str) {
    let links = sh("ip -o link");
    assert!(!links.contains(bridge), "bridge {bridge} left: {links}");
    let rules = sh("iptables-save 2>/dev/null; nft list ruleset 2>/dev/null");
    assert!(!rules.contains(subnet), "rules for {subnet} left:\n{rules}");
    assert!(!rules.contains(&id[..12]), "rules for {id} left");
    let leases = sh(&format!("ls -R {}", r.m.ipam_dir().display()));
    assert!(
        !leases.contains("172.") && !leases.contains("10."),
        "{leases}"
    );
}

#[test]
fn attach_publish_detach_leaves_nothing() {
    let r = Root::new(None);
    let net = r.m.ensure_default().unwrap();
    assert_eq!(net.name, "bridge");
    assert_eq!(net.bridge, r.m.default_bridge_name());
    let id = berth_testutil::unique_id("nettest");
    let ns = r.m.create_netns(&id).unwrap();
    let att =
        r.m.attach(
            &id,
            &ns,
            &net,
            &AttachOptions {
                ifname: "eth0".into(),
                ports: vec![parse_publish("127.0.0.1::80").unwrap()],
                ..Default::default()
            },
        )
        .unwrap();
    let ip = att.ip.expect("an address");
    assert!(net.subnet.contains(&ip));
    assert_ne!(att.ports[0].host_port, 0);
    // The address is on eth0 inside the namespace, and loopback is up.
    let inside = sh(&format!("nsenter --net={} ip -o addr", ns.display()));
    assert!(inside.contains(&format!("eth0    inet {ip}/")), "{inside}");
    assert!(inside.contains("lo    inet 127.0.0.1"), "{inside}");
    // The bridge carries the gateway.
    let br = sh(&format!("ip -o addr show dev {}", net.bridge));
    assert!(br.contains(&format!("inet {}/", net.gateway)), "{br}");
    // The cache survives a new manager (daemon restart) and DEL uses it.
    let m2 = Manager::open(r.m.config().clone()).unwrap();
    assert_eq!(m2.attachments(&id).len(), 1);
    m2.detach_all(&id, false).unwrap();
    assert!(!ns.exists());
    assert!(m2.attachments(&id).is_empty());
    let subnet = net.subnet.to_string();
    let bridge = net.bridge.clone();
    r.m.purge();
    no_leftovers(&r, &bridge, &id, &subnet);
}

#[test]
fn a_published_host_port_is_refused_while_taken_and_free_again_after_detach() {
    let r = Root::new(None);
    let net = r.m.ensure_default().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = |m: &Manager, id: &str| {
        let ns = m.create_netns(id).unwrap();
        let res = m.attach(
            id,
            &ns,
            &net,
            &AttachOptions {
                ifname: "eth0".into(),
                ports: vec![parse_publish(&format!("127.0.0.1:{port}:80")).unwrap()],
                ..Default::default()
            },
        );
        if res.is_err() {
            m.detach_all(id, false).unwrap();
        }
        res
    };
    let (a, b, c) = (
        berth_testutil::unique_id("porta"),
        berth_testutil::unique_id("portb"),
        berth_testutil::unique_id("portc"),
    );
    publish(&r.m, &a).unwrap();
    let err = publish(&r.m, &b).unwrap_err().to_string();
    assert!(err.contains("already in use"), "{err}");
    assert!(r.m.attachments(&b).is_empty());
    // A manager opened later (a restarted daemon) knows the port from the cached results.
    let m2 = Manager::open(r.m.config().clone()).unwrap();
    let err = publish(&m2, &b).unwrap_err().to_string();
    assert!(err.contains("already in use"), "{err}");
    // Once the holder is gone, the port is free for the next container.
    r.m.detach_all(&a, false).unwrap();
    let att = publish(&r.m, &c).unwrap();
    assert_eq!(att.ports[0].host_port, port);
    r.m.detach_all(&c, false).unwrap();
}

#[test]
fn overlapping_subnet_is_refused() {
    let r = Root::new(None);
    let a =
        r.m.create(&CreateOptions {
            name: "a".into(),
            subnet: "10.213.0.0/16".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(a.gateway.to_string(), "10.213.0.1");
    let e =
        r.m.create(&CreateOptions {
            name: "b".into(),
            subnet: "10.213.5.0/24".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.to_string().contains("overlaps"), "{e}");
    // The same holds across roots (host-wide registry).
    let r2 = Root::new(None);
    let e =
        r2.m.create(&CreateOptions {
            name: "c".into(),
            subnet: "10.213.0.0/24".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.to_string().contains("overlaps"), "{e}");
    // Two default networks never collide.
    let d1 = r.m.ensure_default().unwrap();
    let d2 = r2.m.ensure_default().unwrap();
    assert_ne!(d1.bridge, d2.bridge);
    assert_ne!(d1.subnet, d2.subnet);
}

#[test]
fn missing_or_failing_plugin_leaves_nothing() {
    let plugins = tempfile::tempdir().unwrap();
    // `bridge` is the real one, `portmap` a fake that fails: the bridge's work must be undone.
    std::os::unix::fs::symlink("/usr/lib/cni/bridge", plugins.path().join("bridge")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/cni/host-local", plugins.path().join("host-local"))
        .unwrap();
    let fake = plugins.path().join("portmap");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$CNI_COMMAND\" = DEL ] && exit 0\necho '{\"code\":11,\"msg\":\"injected failure\"}'\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = Root::new(Some(vec![plugins.path().to_owned()]));
    let net = r.m.ensure_default().unwrap();
    let id = berth_testutil::unique_id("netfail");
    let ns = r.m.create_netns(&id).unwrap();
    let e =
        r.m.attach(
            &id,
            &ns,
            &net,
            &AttachOptions {
                ifname: "eth0".into(),
                ports: vec![parse_publish("127.0.0.1::80").unwrap()],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "CNI plugin portmap failed: injected failure");
    assert!(r.m.attachments(&id).is_empty());
    let inside = sh(&format!("nsenter --net={} ip -o link", ns.display()));
    assert!(!inside.contains("eth0"), "{inside}");
    r.m.remove_netns(&id).unwrap();

    // A missing plugin names itself and where it was looked for.
    let empty = tempfile::tempdir().unwrap();
    let r2 = Root::new(Some(vec![empty.path().to_owned()]));
    let net2 = r2.m.ensure_default().unwrap();
    let ns2 = r2.m.create_netns(&id).unwrap();
    let e =
        r2.m.attach(
            &id,
            &ns2,
            &net2,
            &AttachOptions {
                ifname: "eth0".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        e.to_string().starts_with("CNI plugin bridge not found in"),
        "{e}"
    );
    r2.m.remove_netns(&id).unwrap();
    let (b, s) = (net.bridge.clone(), net.subnet.to_string());
    r.m.purge();
    no_leftovers(&r, &b, &id, &s);
    assert!(!Path::new(&format!("/sys/class/net/{}", net2.bridge)).exists());
}
