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
