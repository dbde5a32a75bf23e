//! End-to-end network tests through the real binaries: user-defined networks with name
//! resolution, published ports from the host's loopback, `--network container:`, the default
//! bridge, bad input, and no host leftovers after everything is removed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::Berth;

fn berth() -> Berth {
    let b = Berth::new();
    b.busybox();
    b
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An httpd container serving `body` at `/` on port 80.
fn httpd_args<'a>(extra: &[&'a str], body: &'a str) -> Vec<String> {
    let mut v: Vec<String> = ["run", "-d"].iter().map(|s| s.to_string()).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(["busybox", "sh", "-c"].iter().map(|s| s.to_string()));
    v.push(format!(
        "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"
    ));
    v
}

fn run_httpd(b: &Berth, extra: &[&str], body: &str) -> String {
    let args = httpd_args(extra, body);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    b.ok(&refs).trim().to_owned()
}

/// A shell loop in a client container fetching `url` until it answers.
fn fetch_script(url: &str) -> String {
    format!("for i in $(seq 100); do wget -qO- {url} && exit 0; sleep 0.1; done; exit 1")
}

fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn eventually_get(addr: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Some(r) = http_get(addr) {
            if r.contains(want) {
                return r;
            }
            last = r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET {addr}: no {want:?} (last answer {last:?})");
}

fn subnet_of(b: &Berth, net: &str) -> String {
    let cfg = b.ok(&["network", "inspect", "-f", "{{json .IPAM.Config}}", net]);
    let v: serde_json::Value = serde_json::from_str(cfg.trim()).unwrap();
    v[0]["Subnet"].as_str().unwrap().to_owned()
}

fn inspect(b: &Berth, what: &str, format: &str) -> String {
    b.ok(&["inspect", "-f", format, what]).trim().to_owned()
}

/// Nothing of this root is left on the host: bridge, leases, namespaces, firewall rules.
fn assert_no_leftovers(b: &Berth, bridges: &[String], subnets: &[String], ids: &[String]) {
    let links = sh("ip -o link");
    for br in bridges {
        assert!(
            !links.contains(&format!(" {br}:")),
            "bridge {br} left:\n{links}"
        );
    }
    let rules = sh("iptables-save 2>/dev/null; ip6tables-save 2>/dev/null");
    // An internal network's isolation rules name its bridge.
    for br in bridges {
        assert!(
            !rules.contains(&format!(" {br} ")),
            "a rule for bridge {br} is left:\n{rules}"
        );
    }
    for s in subnets {
        assert!(
            !rules.contains(s.as_str()),
            "a rule for {s} is left:\n{rules}"
        );
    }
    for id in ids {
        assert!(
            !rules.contains(&id[..12]),
            "a rule for container {id} is left"
        );
    }
    let ipam = b.root().join("networks/ipam");
    let leases = sh(&format!("find {} -type f 2>/dev/null", ipam.display()));
    // host-local keeps one file per leased address, named by it.
    assert!(
        leases
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .all(|f| f.parse::<std::net::IpAddr>().is_err()),
        "leases left: {leases}"
    );
    let netns = sh(&format!(
        "ls {} 2>/dev/null",
        b.state().join("netns").display()
    ));
    assert!(netns.trim().is_empty(), "namespace files left: {netns}");
    let results = sh(&format!(
        "ls {}",
        b.root().join("networks/results").display()
    ));
    assert!(results.trim().is_empty(), "cached results left: {results}");
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name_and_alias() {
    let b = berth();
    let id = b.ok(&["network", "create", "appnet"]).trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    let ls = b.ok(&["network", "ls"]);
    assert!(ls.contains("appnet") && ls.contains("bridge"), "{ls}");
    let subnet = subnet_of(&b, "appnet");
    let bridge = b
        .ok(&[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.bridge.name\"}}",
            "appnet",
        ])
        .trim()
        .to_owned();
    let web = run_httpd(
        &b,
        &[
            "--name",
            "web",
            "--network",
            "appnet",
            "--network-alias",
            "www",
        ],
        "hello-from-web",
    );
    let ip = inspect(&b, "web", "{{.NetworkSettings.Networks.appnet.IPAddress}}");
    assert!(!ip.is_empty(), "web has no address on appnet");
    for name in ["web", "www"] {
        let out = b.ok(&[
            "run",
            "--rm",
            "--network",
            "appnet",
            "busybox",
            "sh",
            "-c",
            &fetch_script(&format!("http://{name}/")),
        ]);
        assert!(out.contains("hello-from-web"), "{name}: {out:?}");
    }
    // The network shows its member; removing it while used fails with one clear line.
    let members = b.ok(&["network", "inspect", "-f", "{{json .Containers}}", "appnet"]);
    assert!(members.contains(&web), "{members}");
    let (_, err) = b.exits(1, &["network", "rm", "appnet"]);
    assert!(err.contains("has active endpoints"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    b.ok(&["rm", "-f", "web"]);
    b.ok(&["network", "rm", "appnet"]);
    let (_, err) = b.exits(1, &["network", "inspect", "appnet"]);
    assert!(err.contains("not found"), "{err}");
    assert_no_leftovers(&b, &[bridge], &[subnet], &[web]);
}

#[test]
fn published_port_answers_on_the_hosts_loopback_and_port_lists_it() {
    let b = berth();
    let id = run_httpd(&b, &["-p", "127.0.0.1::80", "-p", "0:81"], "published");
    let ports = b.ok(&["port", &id]);
    let line = ports
        .lines()
        .find(|l| l.starts_with("80/tcp -> 127.0.0.1:"))
        .unwrap_or_else(|| panic!("{ports}"));
    let host_port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
    assert!(ports.contains("81/tcp -> 0.0.0.0:"), "{ports}");
    let one = b.ok(&["port", &id, "80"]);
    assert_eq!(one.trim(), format!("127.0.0.1:{host_port}"));
    eventually_get(&format!("127.0.0.1:{host_port}"), "published");
    let ps = b.ok(&["ps", "--format", "{{.Ports}}"]);
    assert!(
        ps.contains(&format!("127.0.0.1:{host_port}->80/tcp")),
        "{ps}"
    );
    let bindings = inspect(&b, &id, "{{json .NetworkSettings.Ports}}");
    assert!(
        bindings.contains(&format!("\"HostPort\":\"{host_port}\"")),
        "{bindings}"
    );

    // A fixed host port: from loopback too (0.0.0.0 binding, DNAT of locally sent traffic).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fixed = l.local_addr().unwrap().port();
    drop(l);
    let id2 = run_httpd(&b, &["-p", &format!("{fixed}:80")], "fixed");
    eventually_get(&format!("127.0.0.1:{fixed}"), "fixed");

    // The same host port again: a clear error, nothing configured, no container running.
    let args = httpd_args(&["--name", "clash", "-p", &format!("{fixed}:80")], "x");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, err) = b.exits(125, &refs);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let clash = inspect(&b, "clash", "{{.Id}}");
    assert!(b.net().attachments(&clash).is_empty());
    assert!(!b.state().join("netns").join(&clash).exists());
    // A port a host process holds.
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let (_, err) = b.exits(
        125,
        &[
            "run",
            "--rm",
            "-p",
            &format!("{held_port}:80"),
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("already in use"), "{err}");

    let subnet = subnet_of(&b, "bridge");
    b.ok(&["rm", "-f", &id, &id2, &clash]);
    // The default network itself stays (with its masquerade rule), as Docker's does.
    assert_no_leftovers(&b, &[], &[], &[id, id2, clash]);
    let rules = sh("iptables-save -t nat");
    assert!(!rules.contains(&format!("--dport {host_port} ")), "{rules}");
    assert!(!rules.contains(&format!("--dport {fixed} ")), "{rules}");
    // What the harness does when a test root goes: then nothing of the network is left.
    let bridge = b
        .ok(&[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.bridge.name\"}}",
            "bridge",
        ])
        .trim()
        .to_owned();
    b.stop_daemon();
    b.purge_networks();
    assert_no_leftovers(&b, &[bridge], &[subnet], &[]);
}

#[test]
fn network_container_mode_shares_the_namespace() {
    let b = berth();
    let a = run_httpd(&b, &["--name", "srv"], "shared-ns");
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "container:srv",
        "busybox",
        "sh",
        "-c",
        &fetch_script("http://127.0.0.1/"),
    ]);
    assert!(out.contains("shared-ns"), "{out:?}");
    let ip_a = inspect(&b, "srv", "{{.NetworkSettings.IPAddress}}");
    let inside = b.ok(&[
        "run",
        "--rm",
        "--network",
        "container:srv",
        "busybox",
        "ip",
        "-o",
        "addr",
    ]);
    assert!(inside.contains(&format!("inet {ip_a}/")), "{inside}");
    // Joining a container that does not run fails clearly.
    b.ok(&["stop", "-t", "1", "srv"]);
    let (_, err) = b.exits(
        125,
        &[
            "run",
            "--rm",
            "--network",
            "container:srv",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("non running container"), "{err}");
    b.ok(&["rm", "-f", &a]);
}

#[test]
fn default_bridge_gives_an_address_hosts_and_none_host_modes_work() {
    let b = berth();
    let out = b.ok(&[
        "run", "--rm", "--name", "c1", "busybox", "ip", "-o", "-4", "addr",
    ]);
    assert!(out.contains("eth0"), "{out}");
    assert!(out.contains("lo    inet 127.0.0.1"), "{out}");
    let hosts = b.ok(&[
        "run",
        "--rm",
        "--hostname",
        "hh",
        "busybox",
        "cat",
        "/etc/hosts",
    ]);
    let own = hosts
        .lines()
        .find(|l| l.ends_with("\thh"))
        .unwrap_or_else(|| panic!("{hosts}"));
    assert!(!own.starts_with("127."), "{hosts}");
    let none = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert!(!none.contains("eth0"), "{none}");
    let ls = b.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(
        ls.split_whitespace().collect::<Vec<_>>(),
        ["bridge", "host", "none"]
    );
    let ps = b.ok(&["run", "-d", "busybox", "sleep", "30"]);
    let nets = b.ok(&["ps", "--format", "{{.Networks}}"]);
    assert_eq!(nets.trim(), "bridge");
    let mode = inspect(&b, ps.trim(), "{{.HostConfig.NetworkMode}}");
    assert_eq!(mode, "bridge");
}

#[test]
fn bad_network_input_fails_with_one_clear_line() {
    let b = berth();
    let (_, err) = b.exits(
        125,
        &["run", "--rm", "--network", "nope", "busybox", "true"],
    );
    assert!(err.contains("network nope not found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    b.ok(&["network", "create", "--subnet", "10.231.0.0/16", "n1"]);
    let (_, err) = b.exits(1, &["network", "create", "--subnet", "10.231.7.0/24", "n2"]);
    assert!(err.contains("overlaps"), "{err}");
    let (_, err) = b.exits(1, &["network", "create", "--subnet", "10.232.0.0/16", "n1"]);
    assert!(err.contains("already exists"), "{err}");
    let (_, err) = b.exits(125, &["run", "--rm", "--ip", "10.9.9.9", "busybox", "true"]);
    assert!(err.contains("user defined networks"), "{err}");
    let (_, err) = b.exits(125, &["run", "--rm", "-p", "1:2:3:4", "busybox", "true"]);
    assert!(err.contains("--publish"), "{err}");
    // --ip on a user network is honoured.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "n1",
        "--ip",
        "10.231.3.4",
        "busybox",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(out.contains("inet 10.231.3.4/16"), "{out}");
    let pruned = b.ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("n1"), "{pruned}");
}

#[test]
fn a_missing_cni_plugin_fails_the_start_and_leaves_nothing() {
    let b = berth();
    let empty = tempfile::tempdir().unwrap();
    // The auto-started berthd inherits the environment of the first command.
    b.stop_daemon();
    let out = b
        .cmd(&["run", "--rm", "busybox", "true"])
        .env("BERTH_CNI_PLUGIN_DIRS", empty.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("CNI plugin bridge not found in"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let ids = b.ok(&["ps", "-aq", "--no-trunc"]);
    for id in ids.split_whitespace() {
        assert!(b.net().attachments(id).is_empty());
        assert!(!b.state().join("netns").join(id).exists());
    }
}

/// A resolver on loopback that answers every A query with 198.51.100.7 and counts them.
fn fake_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut resp = Message::new();
            resp.set_id(req.id())
                .set_message_type(MessageType::Response)
                .set_recursion_desired(true)
                .set_recursion_available(true);
            for q in req.queries() {
                if q.query_type() == hickory_proto::rr::RecordType::A {
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        5,
                        RData::A(A(std::net::Ipv4Addr::new(198, 51, 100, 7))),
                    ));
                }
                resp.add_query(q.clone());
            }
            let _ = sock.send_to(&resp.to_vec().unwrap(), from);
        }
    });
    (addr, count)
}

#[test]
fn network_dns_answers_names_and_forwards_the_rest_to_the_upstream() {
    let b = berth();
    let (upstream, queries) = fake_upstream();
    // The auto-started berthd takes its upstream from the environment of the first command.
    b.stop_daemon();
    let out = b
        .cmd(&["network", "create", "dnsnet"])
        .env("BERTH_DNS_UPSTREAMS", upstream.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gw = b
        .ok(&[
            "network",
            "inspect",
            "-f",
            "{{json .IPAM.Config}}",
            "dnsnet",
        ])
        .trim()
        .to_owned();
    let gw: serde_json::Value = serde_json::from_str(&gw).unwrap();
    let gw = gw[0]["Gateway"].as_str().unwrap().to_owned();
    let db = b.ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "dnsnet",
        "--network-alias",
        "database",
        "busybox",
        "sleep",
        "60",
    ]);
    let db_ip = inspect(
        &b,
        db.trim(),
        "{{.NetworkSettings.Networks.dnsnet.IPAddress}}",
    );
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "dnsnet",
        "busybox",
        "sh",
        "-c",
        "cat /etc/resolv.conf; nslookup database; nslookup db; nslookup upstream.example.test",
    ]);
    assert!(out.contains(&format!("nameserver {gw}")), "{out}");
    let after = |what: &str| out.split(what).nth(1).unwrap_or_default().to_owned();
    assert!(
        after("Name:\tdatabase").contains(&db_ip) || after("database").contains(&db_ip),
        "{out}"
    );
    assert!(
        after("upstream.example.test").contains("198.51.100.7"),
        "{out}"
    );
    assert!(queries.load(std::sync::atomic::Ordering::SeqCst) > 0);
    b.ok(&["rm", "-f", db.trim()]);
    b.ok(&["network", "rm", "dnsnet"]);
    // The name server is gone with the last container: nothing listens on the gateway.
    let ss = sh("ss -lunH");
    assert!(!ss.contains(&format!("{gw}:53")), "{ss}");
}

#[test]
fn a_daemon_restart_keeps_running_containers_networked_and_tears_down_the_exited() {
    let b = berth();
    b.ok(&["network", "create", "rnet"]);
    let web = run_httpd(&b, &["--name", "rweb", "--network", "rnet"], "still-here");
    let short = b
        .ok(&["run", "-d", "--network", "rnet", "busybox", "sleep", "1"])
        .trim()
        .to_owned();
    b.stop_daemon();
    // `short` exits while berthd is down; `rweb` keeps running under its shim.
    std::thread::sleep(Duration::from_secs(2));
    let ps = b.ok(&["ps", "-a", "--format", "{{.ID}} {{.State}}"]);
    assert!(ps.contains(&format!("{} exited", &short[..12])), "{ps}");
    // Boot reconciled: the exited container's DEL ran from the cached result.
    assert!(b.net().attachments(&short).is_empty());
    assert!(!b.state().join("netns").join(&short).exists());
    assert_eq!(b.net().attachments(&web).len(), 1);
    // Names and the name server work again for the one still running.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "rnet",
        "busybox",
        "sh",
        "-c",
        &fetch_script("http://rweb/"),
    ]);
    assert!(out.contains("still-here"), "{out:?}");
    let bridge = b
        .ok(&[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.bridge.name\"}}",
            "rnet",
        ])
        .trim()
        .to_owned();
    let subnet = subnet_of(&b, "rnet");
    b.ok(&["rm", "-f", &web, &short]);
    b.ok(&["network", "rm", "rnet"]);
    assert_no_leftovers(&b, &[bridge], &[subnet], &[web, short]);
}

fn bridge_of(b: &Berth, net: &str) -> String {
    b.ok(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
        net,
    ])
    .trim()
    .to_owned()
}

fn gateway_of(b: &Berth, net: &str) -> String {
    let cfg = b.ok(&["network", "inspect", "-f", "{{json .IPAM.Config}}", net]);
    let v: serde_json::Value = serde_json::from_str(cfg.trim()).unwrap();
    v[0]["Gateway"].as_str().unwrap().to_owned()
}

fn network_names(b: &Berth, ctr: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&inspect(b, ctr, "{{json .NetworkSettings.Networks}}")).unwrap();
    let mut names: Vec<String> = v
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The interfaces of a running container, loopback aside.
fn interfaces(b: &Berth, ctr: &str) -> Vec<String> {
    let out = b.ok(&["exec", ctr, "ip", "-o", "link"]);
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .filter(|n| n != "lo")
        .collect();
    v.sort();
    v
}

#[test]
fn disconnect_works_for_the_run_network_and_connect_brings_it_back() {
    let b = berth();
    b.ok(&["network", "create", "dnet"]);
    let dnet_bridge = bridge_of(&b, "dnet");
    let dnet_subnet = subnet_of(&b, "dnet");
    let id = b
        .ok(&["run", "-d", "--name", "dc", "busybox", "sleep", "300"])
        .trim()
        .to_owned();
    b.ok(&["network", "connect", "dnet", "dc"]);
    assert_eq!(interfaces(&b, "dc"), ["eth0", "eth1"]);
    assert_eq!(network_names(&b, "dc"), ["bridge", "dnet"]);

    // The network given at run (the default bridge) can be left like any other.
    b.ok(&["network", "disconnect", "bridge", "dc"]);
    assert_eq!(interfaces(&b, "dc"), ["eth1"]);
    assert_eq!(network_names(&b, "dc"), ["dnet"]);
    let dnet_ip = inspect(&b, "dc", "{{.NetworkSettings.Networks.dnet.IPAddress}}");
    assert_eq!(inspect(&b, "dc", "{{.NetworkSettings.IPAddress}}"), dnet_ip);
    let ps = b.ok(&["ps", "--filter", "name=dc", "--format", "{{.Networks}}"]);
    assert_eq!(ps.trim(), "dnet");
    // Then the last one: only loopback is left.
    b.ok(&["network", "disconnect", "dnet", "dc"]);
    assert!(interfaces(&b, "dc").is_empty());
    assert_eq!(network_names(&b, "dc"), Vec::<String>::new());
    assert_eq!(inspect(&b, "dc", "{{.NetworkSettings.IPAddress}}"), "");
    assert!(b.net().attachments(&id).is_empty());
    let (_, err) = b.exits(1, &["network", "disconnect", "bridge", "dc"]);
    assert!(err.contains("is not connected to network bridge"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Nothing uses dnet any more: it can go (and comes back for the rest of the test).
    b.ok(&["network", "rm", "dnet"]);
    b.ok(&["network", "create", "dnet"]);

    // connect works again, also for the network of the network mode (its interface: the
    // lowest free name).
    b.ok(&["network", "connect", "bridge", "dc"]);
    b.ok(&["network", "connect", "dnet", "dc"]);
    assert_eq!(interfaces(&b, "dc"), ["eth0", "eth1"]);
    assert_eq!(network_names(&b, "dc"), ["bridge", "dnet"]);
    assert_eq!(inspect(&b, "dc", "{{.HostConfig.NetworkMode}}"), "bridge");
    let (_, err) = b.exits(1, &["network", "connect", "bridge", "dc"]);
    assert!(err.contains("already exists"), "{err}");

    // A disconnect lasts across a restart.
    b.ok(&["network", "disconnect", "bridge", "dc"]);
    b.ok(&["restart", "-t", "1", "dc"]);
    assert_eq!(interfaces(&b, "dc"), ["eth0"]);
    assert_eq!(network_names(&b, "dc"), ["dnet"]);
    let on = inspect(&b, "dc", "{{.NetworkSettings.Networks.dnet.IPAddress}}");
    assert!(!on.is_empty());

    // A container not running yet: it starts with loopback only.
    b.ok(&["create", "--name", "st", "busybox", "ip", "-o", "link"]);
    b.ok(&["network", "disconnect", "bridge", "st"]);
    assert_eq!(network_names(&b, "st"), Vec::<String>::new());
    let out = b.ok(&["start", "-a", "st"]);
    assert!(out.contains("lo:") && !out.contains("eth0"), "{out}");
    let st = inspect(&b, "st", "{{.Id}}");

    b.ok(&["rm", "-f", &id, &st]);
    b.ok(&["network", "rm", "dnet"]);
    assert_no_leftovers(&b, &[dnet_bridge], &[dnet_subnet], &[id, st]);
}

/// Answer one HTTP request on `l` with `body`, in a thread.
fn serve_once(l: std::net::TcpListener, body: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    })
}

#[test]
fn add_host_host_gateway_resolves_to_the_hosts_address() {
    let b = berth();
    let hosts_line = |out: &str| -> String {
        out.lines()
            .find(|l| l.ends_with("\thg"))
            .unwrap_or_else(|| panic!("no hg line: {out}"))
            .split('\t')
            .next()
            .unwrap()
            .to_owned()
    };
    // The default bridge: its gateway, which is the host's address on that bridge.
    let out = b.ok(&[
        "run",
        "--rm",
        "--add-host",
        "hg:host-gateway",
        "busybox",
        "cat",
        "/etc/hosts",
    ]);
    let gw = gateway_of(&b, "bridge");
    assert_eq!(hosts_line(&out), gw, "{out}");
    // The host answers there: a server of this test on the bridge's address.
    let l = std::net::TcpListener::bind((gw.as_str(), 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let server = serve_once(l, "from-the-host");
    let out = b.ok(&[
        "run",
        "--rm",
        "--add-host",
        "hg:host-gateway",
        "busybox",
        "wget",
        "-qO-",
        &format!("http://hg:{port}/"),
    ]);
    assert!(out.contains("from-the-host"), "{out}");
    server.join().unwrap();
    // A user network: its own gateway. Inspect keeps what was given, as Docker's.
    b.ok(&["network", "create", "hgnet"]);
    let id = b
        .ok(&[
            "create",
            "--network",
            "hgnet",
            "--add-host",
            "hg:host-gateway",
            "busybox",
            "cat",
            "/etc/hosts",
        ])
        .trim()
        .to_owned();
    let out = b.ok(&["start", "-a", &id]);
    assert_eq!(hosts_line(&out), gateway_of(&b, "hgnet"), "{out}");
    assert_eq!(
        inspect(&b, &id, "{{json .HostConfig.ExtraHosts}}"),
        r#"["hg:host-gateway"]"#
    );
    // The host's network: an address of the host.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--add-host",
        "hg:host-gateway",
        "busybox",
        "cat",
        "/etc/hosts",
    ]);
    let ip = hosts_line(&out);
    let addrs = sh("ip -o -4 addr");
    assert!(
        addrs.contains(&format!("inet {ip}/")),
        "{ip} is no host address:\n{addrs}"
    );
    // No network: no way to the host, one clear line.
    let (_, err) = b.exits(
        125,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--add-host",
            "hg:host-gateway",
            "busybox",
            "true",
        ],
    );
    assert!(
        err.contains("host-gateway") && err.contains("--network none"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let bridge = bridge_of(&b, "hgnet");
    let subnet = subnet_of(&b, "hgnet");
    b.ok(&["rm", &id]);
    b.ok(&["network", "rm", "hgnet"]);
    assert_no_leftovers(&b, &[bridge], &[subnet], &[id]);
}

fn bind_error(addr: (&str, u16)) -> Option<i32> {
    std::net::TcpListener::bind(addr)
        .err()
        .and_then(|e| e.raw_os_error())
}

#[test]
fn a_published_port_is_held_while_the_container_runs_and_after_a_daemon_restart() {
    let b = berth();
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let id = run_httpd(
        &b,
        &["--name", "held", "-p", &format!("{port}:80")],
        "held-body",
    );
    // berthd holds the port: no host process can bind it, yet the DNAT still carries the
    // traffic from the host's loopback to the container.
    assert_eq!(bind_error(("0.0.0.0", port)), Some(libc::EADDRINUSE));
    assert_eq!(bind_error(("127.0.0.1", port)), Some(libc::EADDRINUSE));
    eventually_get(&format!("127.0.0.1:{port}"), "held-body");

    // A second container on the same host port: one line naming it, nothing left behind.
    let (_, err) = b.exits(
        125,
        &[
            "run",
            "-d",
            "--name",
            "clash2",
            "-p",
            &format!("{port}:80"),
            "busybox",
            "sleep",
            "30",
        ],
    );
    assert!(
        err.contains(&format!(":{port}/tcp")) && err.contains("already in use"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let clash = inspect(&b, "clash2", "{{.Id}}");
    assert!(b.net().attachments(&clash).is_empty());
    assert!(!b.state().join("netns").join(&clash).exists());
    let rules = sh("iptables-save");
    assert!(!rules.contains(&clash[..12]), "{rules}");

    // kill -9 of berthd: the new one holds the port again (live restore).
    let pid = b.daemon_pid().expect("berthd runs");
    // SAFETY: kill(2) of this test's own berthd.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    while b.daemon_pid().is_some() {
        std::thread::sleep(Duration::from_millis(10));
    }
    b.ok(&["ps", "-q"]);
    assert_eq!(bind_error(("0.0.0.0", port)), Some(libc::EADDRINUSE));
    eventually_get(&format!("127.0.0.1:{port}"), "held-body");

    // Stop releases it, start takes it again, rm releases it for good.
    b.ok(&["stop", "-t", "1", "held"]);
    assert_eq!(bind_error(("0.0.0.0", port)), None);
    b.ok(&["start", "held"]);
    assert_eq!(bind_error(("0.0.0.0", port)), Some(libc::EADDRINUSE));
    eventually_get(&format!("127.0.0.1:{port}"), "held-body");
    b.ok(&["rm", "-f", "held", "clash2"]);
    assert_eq!(bind_error(("0.0.0.0", port)), None);
    assert_no_leftovers(&b, &[], &[], &[id, clash]);
}

#[test]
fn an_internal_network_is_isolated_from_other_networks() {
    let b = berth();
    b.ok(&["network", "create", "--internal", "inet"]);
    b.ok(&["network", "create", "onet"]);
    let (ibr, obr) = (bridge_of(&b, "inet"), bridge_of(&b, "onet"));
    let (isub, osub) = (subnet_of(&b, "inet"), subnet_of(&b, "onet"));
    // Made with the network: one rule each way, dropping forwarded traffic.
    let rules = sh("iptables-save -t filter");
    let mine: Vec<String> = rules
        .lines()
        .filter(|l| l.contains(&format!(" {ibr} ")))
        .map(str::to_owned)
        .collect();
    assert_eq!(mine.len(), 2, "{rules}");
    assert!(mine.iter().all(|l| l.contains("-j DROP")), "{rules}");

    let ia = run_httpd(&b, &["--name", "ia", "--network", "inet"], "inside");
    let ob = run_httpd(&b, &["--name", "ob", "--network", "onet"], "outside");
    let ia_ip = inspect(&b, "ia", "{{.NetworkSettings.Networks.inet.IPAddress}}");
    let ob_ip = inspect(&b, "ob", "{{.NetworkSettings.Networks.onet.IPAddress}}");
    // On the internal network: containers reach each other.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "inet",
        "busybox",
        "sh",
        "-c",
        &fetch_script(&format!("http://{ia_ip}/")),
    ]);
    assert!(out.contains("inside"), "{out}");
    // Into the internal network from another one: dropped.
    // (busybox's `wget -T` crashes: `timeout` bounds it; 143 = killed, i.e. no answer at all.)
    let into = b.ok(&[
        "run",
        "--rm",
        "--network",
        "onet",
        "busybox",
        "sh",
        "-c",
        &format!("timeout 3 wget -qO- http://{ia_ip}/; echo rc=$?"),
    ]);
    assert!(
        into.contains("rc=143") && !into.contains("inside"),
        "{into}"
    );
    // Out of it, even with a route the container adds itself: dropped.
    let script = format!(
        "ip route add {osub} via {} && echo ROUTED && timeout 3 wget -qO- http://{ob_ip}/; echo rc=$?",
        gateway_of(&b, "inet")
    );
    let text = b.ok(&[
        "run",
        "--rm",
        "--network",
        "inet",
        "--cap-add",
        "NET_ADMIN",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert!(text.contains("ROUTED"), "the route was not added: {text}");
    assert!(
        text.contains("rc=143") && !text.contains("outside"),
        "{text}"
    );
    // Control: it is the isolation rules that drop it. Without them (and without onet's own
    // isolation from other networks, which drops its side of the exchange too) the same
    // request passes.
    let onet_jump: Vec<String> = sh("iptables-save -t filter")
        .lines()
        .filter(|l| l.starts_with(&format!("-A FORWARD -i {obr} ")) && l.contains("BERTH-ISO-"))
        .map(str::to_owned)
        .collect();
    assert_eq!(onet_jump.len(), 1, "onet's isolation jump: {onet_jump:?}");
    for rule in mine.iter().chain(&onet_jump) {
        let del = rule.replacen("-A ", "-D ", 1);
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("iptables -w {del}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "iptables -D: {out:?}");
    }
    let into = b.ok(&[
        "run",
        "--rm",
        "--network",
        "onet",
        "busybox",
        "sh",
        "-c",
        &fetch_script(&format!("http://{ia_ip}/")),
    ]);
    assert!(into.contains("inside"), "{into}");

    b.ok(&["rm", "-f", &ia, &ob]);
    b.ok(&["network", "rm", "inet", "onet"]);
    assert_no_leftovers(&b, &[ibr, obr], &[isub, osub], &[ia, ob]);
    // berthd --remove-networks removes them too.
    b.ok(&["network", "create", "--internal", "inet2"]);
    let br2 = bridge_of(&b, "inet2");
    assert!(sh("iptables-save").contains(&format!(" {br2} ")));
    b.stop_daemon();
    let berthd = std::path::Path::new(common::BIN).with_file_name("berthd");
    let out = Command::new(berthd)
        .arg("--root")
        .arg(b.root())
        .arg("--state")
        .arg(b.state())
        .arg("--remove-networks")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_no_leftovers(&b, &[br2], &[], &[]);
}

/// Like Docker's user-defined bridge networks, ordinary networks are isolated from each other
/// (and from the default bridge): a container reaches another only over a network they share.
#[test]
fn ordinary_networks_are_isolated_from_each_other() {
    let b = berth();
    b.ok(&["network", "create", "n1"]);
    b.ok(&["network", "create", "n2"]);
    let (br1, br2) = (bridge_of(&b, "n1"), bridge_of(&b, "n2"));
    let (s1, s2) = (subnet_of(&b, "n1"), subnet_of(&b, "n2"));
    let id1 = b
        .ok(&["network", "inspect", "-f", "{{.Id}}", "n1"])
        .trim()
        .to_owned();
    let a1 = run_httpd(&b, &["--name", "a1", "--network", "n1"], "on-n1");
    let ip = inspect(&b, "a1", "{{.NetworkSettings.Networks.n1.IPAddress}}");
    // Over the network they share: reachable.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "n1",
        "busybox",
        "sh",
        "-c",
        &fetch_script(&format!("http://{ip}/")),
    ]);
    assert!(out.contains("on-n1"), "{out}");
    // From another network, and from the default bridge: dropped.
    // (busybox's `wget -T` crashes: `timeout` bounds it; 143 = killed, i.e. no answer at all.)
    for net in ["n2", "bridge"] {
        let out = b.ok(&[
            "run",
            "--rm",
            "--network",
            net,
            "busybox",
            "sh",
            "-c",
            &format!("timeout 3 wget -qO- http://{ip}/; echo rc=$?"),
        ]);
        assert!(
            out.contains("rc=143") && !out.contains("on-n1"),
            "from {net}: {out}"
        );
    }
    // A container on n2 that joins n1 too reaches it.
    let c2 = b
        .ok(&[
            "run",
            "-d",
            "--name",
            "c2",
            "--network",
            "n2",
            "busybox",
            "sleep",
            "60",
        ])
        .trim()
        .to_owned();
    b.ok(&["network", "connect", "n1", "c2"]);
    let out = b.ok(&[
        "exec",
        "c2",
        "sh",
        "-c",
        &fetch_script(&format!("http://{ip}/")),
    ]);
    assert!(out.contains("on-n1"), "{out}");
    // The isolation chain lives as long as its network.
    let chain = format!(":BERTH-ISO-{} ", &id1[..12]);
    assert!(sh("iptables-save -t filter").contains(&chain));
    b.ok(&["rm", "-f", &a1, &c2]);
    b.ok(&["network", "rm", "n1", "n2"]);
    let rules = sh("iptables-save -t filter");
    assert!(!rules.contains(&chain), "{rules}");
    assert_no_leftovers(&b, &[br1, br2], &[s1, s2], &[a1, c2]);
}

/// `--network none` gives each container a network namespace of its own with the loopback
/// interface up (as Docker's), whether its shim was started ahead of need or not; `--network
/// host` shares the host's, even right after a `none` container (whose standby shim had made a
/// namespace for it).
#[test]
fn none_has_its_own_namespace_with_loopback_up_and_host_shares_the_hosts() {
    let b = Berth::new();
    b.busybox();
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_ns = host_ns.to_string_lossy().into_owned();
    let script = "readlink /proc/self/ns/net; cat /sys/class/net/lo/flags; \
                  ping -c 1 -W 2 127.0.0.1 >/dev/null && echo ping-ok";
    // Several in a row (the standby shim's path), then a burst (fresh shims' path).
    for _ in 0..3 {
        let out = b.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            script,
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_ne!(
            lines[0], host_ns,
            "a none container in the host's namespace: {out}"
        );
        let flags = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16).unwrap();
        assert_eq!(flags & 1, 1, "loopback is down: {out}");
        assert_eq!(lines[2], "ping-ok", "{out}");
        let out = b.ok(&[
            "run",
            "--rm",
            "--network",
            "host",
            "busybox",
            "readlink",
            "/proc/self/ns/net",
        ]);
        assert_eq!(
            out.trim(),
            host_ns,
            "a host container outside the host's namespace"
        );
    }
    let outs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    b.run(&[
                        "run",
                        "--rm",
                        "--network",
                        "none",
                        "busybox",
                        "sh",
                        "-c",
                        script,
                    ])
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for out in outs {
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_ne!(lines[0], host_ns, "{text}");
        assert_eq!(lines[2], "ping-ok", "{text}");
    }
}
