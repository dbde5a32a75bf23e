//! Containers on networks: the network mode checked at create, the namespace and CNI ADDs
//! before the shim is spawned, the DELs when the main process is gone, `/etc/hosts` of the
//! members of user-defined networks, and the `berth.v1.Networks` service. The CNI work itself
//! is in `berth-net`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use berth_api::v1::{
    ContainerConfig, Empty, JsonDocument, NetworkConnectRequest, NetworkCreateRequest,
    NetworkCreateResponse, NetworkListRequest, NetworkListResponse, NetworkPruneRequest,
    NetworkPruneResponse, NetworkRef, NetworkSummary, PortBinding, networks_server,
};
use berth_net::{Attachment, Network, PortMapping};
use oci_spec::image::ImageConfiguration;
use serde_json::{Value, json};
use tonic::{Request, Response, Status as RpcStatus};

use crate::Engine;
use crate::container::Container;
use crate::record::Record;

/// The berth-net error as a gRPC status: the message is the whole story, the code its kind.
pub(crate) fn net_status(e: &berth_net::Error) -> RpcStatus {
    use berth_net::Error as E;
    let msg = e.to_string();
    match e {
        E::NotFound(_) => RpcStatus::not_found(msg),
        E::Exists(_) => RpcStatus::already_exists(msg),
        E::Invalid { .. } | E::Overlap { .. } => RpcStatus::invalid_argument(msg),
        E::PortInUse { .. } | E::PoolExhausted => RpcStatus::failed_precondition(msg),
        _ => RpcStatus::internal(msg),
    }
}

/// The CNI ADDs of a start, running beside the shim's spawn.
pub(crate) struct PendingAttach(Option<tokio::task::JoinHandle<Result<(), RpcStatus>>>);

/// How a container's network mode is handled.
enum Mode<'a> {
    /// `host` or `none`: nothing to set up (none: a new namespace with loopback only).
    Plain,
    /// `container:<name|id>`.
    Container(&'a str),
    /// A network (default: `bridge`).
    Network(&'a str),
}

fn mode(network_mode: &str) -> Mode<'_> {
    match network_mode {
        "host" | "none" => Mode::Plain,
        "" | "default" => Mode::Network(berth_net::DEFAULT_NETWORK),
        m => match m.strip_prefix("container:") {
            Some(c) => Mode::Container(c),
            None => Mode::Network(m),
        },
    }
}

fn to_mapping(p: &PortBinding) -> Result<PortMapping, RpcStatus> {
    let bad = |what: &str| RpcStatus::invalid_argument(format!("invalid port binding: {what}"));
    Ok(PortMapping {
        host_ip: p.host_ip.clone(),
        host_port: u16::try_from(p.host_port).map_err(|_| bad("host port above 65535"))?,
        container_port: u16::try_from(p.container_port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("container port must be 1-65535"))?,
        protocol: if p.protocol.is_empty() {
            "tcp".into()
        } else {
            p.protocol.clone()
        },
    })
}

/// The networks a container is on by its configuration, in interface order: the network of
/// its network mode (unless disconnected), then those joined with `network connect`. Empty for
/// `host`, `none` and `container:` modes.
fn member_networks(conf: &ContainerConfig) -> Vec<String> {
    let Mode::Network(primary) = mode(&conf.network_mode) else {
        return Vec::new();
    };
    let mut v = Vec::with_capacity(1 + conf.networks.len());
    if !conf.network_mode_disconnected {
        v.push(primary.to_owned());
    }
    v.extend(conf.networks.iter().filter(|n| *n != primary).cloned());
    v
}

/// Docker's `0.0.0.0:8080->80/tcp`.
pub(crate) fn port_text(p: &PortMapping) -> String {
    let ip = if p.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        p.host_ip.as_str()
    };
    format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
}

const PEERS_MARK: &str = "# berth: containers on the same networks";

impl Engine {
    pub(crate) fn net(&self) -> &berth_net::Manager {
        &self.0.net
    }

    /// At create: check the network mode (`""` becomes `bridge`), the options that need a
    /// user-defined network, and add the image's exposed ports for `-P`.
    pub(crate) fn network_prepare(
        &self,
        ns: &str,
        cfg: &mut ContainerConfig,
        image: &ImageConfiguration,
    ) -> Result<(), RpcStatus> {
        if cfg.network_mode.is_empty() || cfg.network_mode == "default" {
            cfg.network_mode = berth_net::DEFAULT_NETWORK.into();
        }
        let user_net = match mode(&cfg.network_mode) {
            Mode::Plain => {
                cfg.publish.clear();
                cfg.publish_all = false;
                false
            }
            Mode::Container(other) => {
                self.find(ns, other)?;
                cfg.publish.clear();
                cfg.publish_all = false;
                false
            }
            Mode::Network(name) => {
                let net = self.net().get(name).map_err(|e| net_status(&e))?;
                !net.is_default()
            }
        };
        if !cfg.ip.is_empty() {
            cfg.ip.parse::<Ipv4Addr>().map_err(|_| {
                RpcStatus::invalid_argument(format!("invalid IPv4 address: {}", cfg.ip))
            })?;
            if !user_net {
                return Err(RpcStatus::invalid_argument(
                    "user specified IP address is supported on user defined networks only",
                ));
            }
        }
        if !cfg.network_aliases.is_empty() && !user_net {
            return Err(RpcStatus::invalid_argument(
                "network-scoped alias is supported only for containers in user defined networks",
            ));
        }
        for p in &cfg.publish {
            to_mapping(p)?;
        }
        // `host-gateway` must resolve before anything of the container is made.
        self.extra_hosts(ns, cfg)?;
        if cfg.publish_all {
            let exposed = image
                .config()
                .as_ref()
                .and_then(|c| c.exposed_ports().clone())
                .unwrap_or_default();
            for e in exposed {
                let (port, proto) = e.split_once('/').unwrap_or((&e, "tcp"));
                let Ok(port) = port.parse::<u32>() else {
                    continue;
                };
                if !cfg.publish.iter().any(|p| p.container_port == port) {
                    cfg.publish.push(PortBinding {
                        host_ip: String::new(),
                        host_port: 0,
                        container_port: port,
                        protocol: proto.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The `--add-host` entries with `host-gateway` replaced by the host's address as the
    /// container sees it. Docker gives its default bridge's address; Berth gives the gateway
    /// of the container's own (first) network, which is that bridge on the default network and
    /// the host's address nearest to the container on a user network. `--network host`: the
    /// default network's gateway when its bridge is up, else the host's default-route source
    /// address ([`berth_net::Manager::host_address`]); `container:` modes: that of the other
    /// container; `none` has no way to the host and is refused.
    pub(crate) fn extra_hosts(
        &self,
        ns: &str,
        cfg: &ContainerConfig,
    ) -> Result<Vec<String>, RpcStatus> {
        let mut gateway: Option<Ipv4Addr> = None;
        let mut out = Vec::with_capacity(cfg.extra_hosts.len());
        for h in &cfg.extra_hosts {
            let Some((name, ip)) = h.split_once('=').or_else(|| h.split_once(':')) else {
                out.push(h.clone());
                continue;
            };
            if ip.trim_start_matches('[').trim_end_matches(']') != "host-gateway" {
                out.push(h.clone());
                continue;
            }
            let gw = match gateway {
                Some(g) => g,
                None => {
                    let g = self.host_gateway(ns, &cfg.network_mode, h, 0)?;
                    gateway = Some(g);
                    g
                }
            };
            out.push(format!("{name}:{gw}"));
        }
        Ok(out)
    }

    fn host_gateway(
        &self,
        ns: &str,
        network_mode: &str,
        entry: &str,
        depth: u8,
    ) -> Result<Ipv4Addr, RpcStatus> {
        match network_mode {
            "none" => Err(RpcStatus::invalid_argument(format!(
                "invalid argument \"{entry}\" for --add-host: host-gateway has no address with --network none (the container has only loopback); give an IP address instead"
            ))),
            "host" => self.net().host_address().ok_or_else(|| {
                RpcStatus::failed_precondition(format!(
                    "invalid argument \"{entry}\" for --add-host: the host has no IPv4 address for host-gateway; give an IP address instead"
                ))
            }),
            m => match mode(m) {
                Mode::Network(n) => Ok(self.net().get(n).map_err(|e| net_status(&e))?.gateway),
                Mode::Container(other) if depth == 0 => {
                    let target = self.find(ns, other)?;
                    let m = target.lock().rec.config().network_mode;
                    self.host_gateway(ns, &m, entry, depth + 1)
                }
                _ => Err(RpcStatus::invalid_argument(format!(
                    "invalid argument \"{entry}\" for --add-host: host-gateway cannot be resolved with network mode {m}"
                ))),
            },
        }
    }

    /// The namespace path config.json names (`None`: the runtime makes a new one, or the
    /// host's with `host`). `container:` modes get a file of their own too, bound to the
    /// other container's namespace at start.
    pub(crate) fn network_ns_path(&self, id: &str, cfg: &ContainerConfig) -> Option<String> {
        match mode(&cfg.network_mode) {
            Mode::Plain => None,
            _ => Some(self.net().netns_path(id).to_string_lossy().into_owned()),
        }
    }

    /// Set the network namespace path of a freshly built spec.
    pub(crate) fn network_spec(
        &self,
        id: &str,
        cfg: &ContainerConfig,
        spec: &mut oci_spec::runtime::Spec,
    ) {
        let Some(path) = self.network_ns_path(id, cfg) else {
            return;
        };
        if let Some(linux) = spec.linux_mut() {
            if let Some(nss) = linux.namespaces_mut() {
                for n in nss.iter_mut() {
                    if n.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                        n.set_path(Some(path.clone().into()));
                    }
                }
            }
        }
    }

    /// Before the shim is spawned: the container's namespace file (the runtime joins it by
    /// path while it creates the container), then the CNI ADDs on a blocking thread while the
    /// shim starts: the container's process waits before `execve` until `Start`, which comes
    /// only after [`Engine::networks_attach_end`]. `container:` modes are bound here at once.
    pub(crate) async fn networks_attach_begin(
        &self,
        c: &Arc<Container>,
    ) -> Result<PendingAttach, RpcStatus> {
        let conf = c.lock().rec.config();
        if matches!(mode(&conf.network_mode), Mode::Plain) {
            // `none` or `host`: nothing to set up.
            return Ok(PendingAttach(None));
        }
        if !matches!(mode(&conf.network_mode), Mode::Network(_)) {
            let e = self.clone();
            let c = c.clone();
            tokio::task::spawn_blocking(move || e.networks_attach_blocking(&c))
                .await
                .map_err(|err| RpcStatus::internal(format!("network setup: {err}")))??;
            return Ok(PendingAttach(None));
        }
        self.net().create_netns(&c.id).map_err(|e| {
            RpcStatus::internal(format!(
                "failed to set up the network of container {}: {e}",
                c.name()
            ))
        })?;
        let e = self.clone();
        let c = c.clone();
        Ok(PendingAttach(Some(tokio::task::spawn_blocking(
            move || e.networks_attach_blocking(&c),
        ))))
    }

    /// Wait for the ADDs started by [`Engine::networks_attach_begin`], whatever the shim's
    /// spawn gave (`spawned`). A failed setup is undone (namespace and all) and a shim that
    /// was spawned meanwhile is deleted; the setup's error is returned.
    pub(crate) async fn networks_attach_end(
        &self,
        c: &Arc<Container>,
        pending: PendingAttach,
        spawned: Result<Result<berth_shim::Client, berth_shim::Error>, RpcStatus>,
    ) -> Result<Result<berth_shim::Client, berth_shim::Error>, RpcStatus> {
        let setup = match pending.0 {
            None => Ok(()),
            Some(h) => h
                .await
                .map_err(|err| RpcStatus::internal(format!("network setup: {err}")))
                .and_then(|r| r),
        };
        if let Err(st) = setup {
            if let Ok(Ok(client)) = spawned {
                let _ = tokio::task::spawn_blocking(move || client.delete()).await;
            }
            let e = self.clone();
            let id = c.id.clone();
            let _ = tokio::task::spawn_blocking(move || e.networks_detach(&id)).await;
            return Err(st);
        }
        spawned
    }

    fn networks_attach_blocking(&self, c: &Container) -> Result<(), RpcStatus> {
        let started = std::time::Instant::now();
        let res = self.networks_attach_inner(c);
        tracing::debug!(
            "network setup of {}: {:.1} ms",
            c.id,
            started.elapsed().as_secs_f64() * 1e3
        );
        res
    }

    fn networks_attach_inner(&self, c: &Container) -> Result<(), RpcStatus> {
        let (conf, name) = {
            let m = c.lock();
            (m.rec.config(), m.rec.name.clone())
        };
        let fail = |e: berth_net::Error| {
            let st = net_status(&e);
            RpcStatus::new(
                st.code(),
                format!("failed to set up the network of container {name}: {e}"),
            )
        };
        match mode(&conf.network_mode) {
            Mode::Plain => Ok(()),
            Mode::Container(other) => {
                let target = self.find(&c.ns, other)?;
                let pid = {
                    let m = target.lock();
                    if m.rec.status.is_active() {
                        m.rec.pid
                    } else {
                        0
                    }
                };
                if pid <= 0 {
                    return Err(RpcStatus::failed_precondition(format!(
                        "cannot join network namespace of a non running container: {other}"
                    )));
                }
                self.net().join_netns(&c.id, pid).map_err(fail)?;
                Ok(())
            }
            Mode::Network(_) => {
                let res = self.attach_all(c, &conf, &name);
                if let Err(err) = res {
                    if let Err(e) = self.net().detach_all(&c.id, true) {
                        tracing::warn!("undo the network setup of container {name}: {e}");
                    }
                    return Err(fail(err));
                }
                self.refresh_hosts_for(&c.id);
                Ok(())
            }
        }
    }

    fn attach_all(
        &self,
        c: &Container,
        conf: &ContainerConfig,
        name: &str,
    ) -> Result<(), berth_net::Error> {
        // Made by `networks_attach_begin` before the shim was spawned.
        let netns = self.net().netns_path(&c.id);
        if !netns.exists() {
            self.net().create_netns(&c.id)?;
        }
        let mut aliases = vec![name.to_owned(), c.id[..12].to_owned()];
        aliases.extend(conf.network_aliases.iter().cloned());
        let mut ports: Vec<PortMapping> = conf
            .publish
            .iter()
            .filter_map(|p| to_mapping(p).ok())
            .collect();
        // With every network disconnected the container keeps only loopback.
        for (i, n) in member_networks(conf).iter().enumerate() {
            let net = self.net().get(n)?;
            // Only the first network publishes ports; --ip belongs to the network mode's.
            let own_ip = i == 0 && !conf.network_mode_disconnected;
            let opts = berth_net::AttachOptions {
                ifname: format!("eth{i}"),
                ip: if own_ip { conf.ip.parse().ok() } else { None },
                ports: std::mem::take(&mut ports),
                aliases: aliases.clone(),
            };
            self.net().attach(&c.id, &netns, &net, &opts)?;
        }
        Ok(())
    }

    /// The main process is gone (or the container is removed): DEL from every network and
    /// drop the namespace file. Idempotent; errors are logged.
    /// Tear down every network attachment of `id`; true when all of it went.
    pub(crate) fn networks_detach(&self, id: &str) -> bool {
        let started = std::time::Instant::now();
        let nets: Vec<String> = self
            .net()
            .attachments(id)
            .into_iter()
            .map(|a| a.network)
            .collect();
        let done = match self.net().detach_all(id, self.netns_shared(id)) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("network teardown of container {id}: {e}");
                false
            }
        };
        for n in nets {
            self.refresh_hosts(&n);
        }
        tracing::debug!(
            "network teardown of {id}: {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        done
    }

    /// The main process exited: the network teardown on a blocking thread, beside the shim's
    /// delete. Correct because the container's init is gone, so its pid namespace holds no
    /// process any more (the kernel kills and reaps the rest before the init's exit is
    /// reported); containers that joined the namespace keep it (`netns_shared`).
    pub(crate) fn networks_detach_begin(&self, id: &str) -> tokio::task::JoinHandle<bool> {
        let e = self.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || e.networks_detach(&id))
    }

    /// Whether a running container joined `id`'s namespace (`--network container:`).
    fn netns_shared(&self, id: &str) -> bool {
        let name = self.index().by_id.get(id).map(|c| c.name());
        self.containers(None).into_iter().any(|c| {
            let m = c.lock();
            if !m.rec.status.is_active() {
                return false;
            }
            let conf = m.rec.config();
            match mode(&conf.network_mode) {
                Mode::Container(o) => o == id || Some(o) == name.as_deref() || id.starts_with(o),
                _ => false,
            }
        })
    }

    /// At boot: DEL what belongs to containers that are gone or no longer run.
    pub(crate) fn networks_reconcile(&self) {
        let running = |id: &str| {
            self.index()
                .by_id
                .get(id)
                .is_some_and(|c| c.lock().rec.status.is_active())
        };
        for a in self.net().all_attachments() {
            if !running(&a.container_id) {
                self.networks_detach(&a.container_id);
            } else if !a.ports.is_empty() {
                // The previous daemon's port reservations died with it.
                if let Err(e) = self.net().hold_ports(&a) {
                    tracing::warn!(
                        "container {}: cannot hold its published port again: {e}",
                        a.container_id
                    );
                }
            }
        }
        let dir = self.config().state.join("netns");
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !running(&id) {
                let _ = self.net().remove_netns(&id);
            }
        }
        // The name servers of networks whose containers kept running while berthd was down.
        let mut nets: Vec<String> = self
            .net()
            .all_attachments()
            .into_iter()
            .map(|a| a.network)
            .collect();
        nets.sort();
        nets.dedup();
        for n in nets {
            self.refresh_dns(&n);
        }
    }

    /// The attachments of a container (cached CNI results).
    pub(crate) fn container_attachments(&self, id: &str) -> Vec<Attachment> {
        self.net().attachments(id)
    }

    fn refresh_hosts_for(&self, id: &str) {
        for a in self.net().attachments(id) {
            self.refresh_hosts(&a.network);
        }
        // Also when on the default network only: its own address.
        self.write_hosts(id);
        self.write_resolv(id);
    }

    /// Rewrite `/etc/hosts` of every member of a network. The default network has no name
    /// resolution (as in Docker), so a start there never touches other containers' files.
    fn refresh_hosts(&self, network: &str) {
        if network == berth_net::DEFAULT_NETWORK {
            return;
        }
        let members: Vec<String> = self
            .net()
            .all_attachments()
            .into_iter()
            .filter(|a| a.network == network)
            .map(|a| a.container_id)
            .collect();
        self.refresh_dns(network);
        for id in members {
            self.write_hosts(&id);
        }
    }

    /// Start, update or stop the name server of a user-defined network: it runs while the
    /// network has containers, bound to the gateway (on the bridge once a container joined).
    fn refresh_dns(&self, network: &str) {
        let mut names = berth_net::dns::Names::new();
        for a in self.net().all_attachments() {
            if a.network != network {
                continue;
            }
            if let Some(ip) = a.ip {
                for alias in &a.aliases {
                    names
                        .entry(alias.to_ascii_lowercase())
                        .or_default()
                        .push(ip);
                }
            }
        }
        let mut servers = self.0.dns.lock().unwrap_or_else(|p| p.into_inner());
        let net = match self.net().get(network) {
            Ok(n) if !n.is_default() && !names.is_empty() => n,
            _ => {
                servers.remove(network);
                return;
            }
        };
        if !servers.contains_key(network) {
            let upstreams = if self.config().dns_upstreams.is_empty() {
                berth_net::dns::host_upstreams()
            } else {
                self.config().dns_upstreams.clone()
            };
            let addr = std::net::SocketAddr::new(net.gateway.into(), 53);
            match berth_net::dns::Responder::start(addr, upstreams) {
                Ok(r) => {
                    servers.insert(network.to_owned(), r);
                }
                Err(e) => {
                    tracing::warn!(
                        "network {network}: cannot serve DNS on {addr}: {e}; its containers use the host's resolvers"
                    );
                    return;
                }
            }
        }
        if let Some(r) = servers.get(network) {
            r.set_names(names);
        }
    }

    /// The name server of the container's first network, if that network runs one.
    fn dns_server_of(&self, id: &str) -> Option<std::net::IpAddr> {
        let first = self.net().attachments(id).into_iter().next()?;
        let servers = self.0.dns.lock().unwrap_or_else(|p| p.into_inner());
        servers.get(&first.network).map(|r| r.addr().ip())
    }

    /// resolv.conf of a container on a user-defined network without `--dns`: the network's
    /// name server, with the host's search and options lines. Written in place.
    fn write_resolv(&self, id: &str) {
        let own_dns = self
            .index()
            .by_id
            .get(id)
            .is_some_and(|c| !c.lock().rec.config().dns.is_empty());
        if own_dns {
            return;
        }
        let Some(server) = self.dns_server_of(id) else {
            return;
        };
        let dir = self.containers_dir(id);
        let (file, base) = (dir.join("resolv.conf"), dir.join("resolv.conf.base"));
        if !base.exists() && std::fs::copy(&file, &base).is_err() {
            return;
        }
        let text = std::fs::read_to_string(&base).unwrap_or_default();
        let mut out = vec![format!("nameserver {server}")];
        out.extend(
            text.lines()
                .filter(|l| l.starts_with("search") || l.starts_with("options"))
                .map(str::to_owned),
        );
        out.push(String::new());
        if let Err(e) = std::fs::write(&file, out.join("\n")) {
            tracing::warn!("write {}: {e}", file.display());
        }
    }

    /// The container's hosts file: what create wrote (kept as `hosts.base`) without the
    /// loopback hostname line, then its own address with its hostname, then the containers
    /// that share a user-defined network with it. Written in place (the file is bind-mounted).
    fn write_hosts(&self, id: &str) {
        let dir = self.containers_dir(id);
        let hosts = dir.join("hosts");
        let base = dir.join("hosts.base");
        if !base.exists() && std::fs::copy(&hosts, &base).is_err() {
            return;
        }
        let Ok(text) = std::fs::read_to_string(&base) else {
            return;
        };
        let hostname = std::fs::read_to_string(dir.join("hostname")).unwrap_or_default();
        let hostname = hostname.trim();
        let mine = self.net().attachments(id);
        let mut out: Vec<String> = text
            .lines()
            .filter(|l| mine.is_empty() || !l.starts_with("127.0.1.1\t"))
            .map(str::to_owned)
            .collect();
        if let Some(ip) = mine.first().and_then(|a| a.ip) {
            out.push(format!("{ip}\t{hostname}"));
        }
        let user_nets: Vec<&str> = mine
            .iter()
            .filter(|a| a.network != berth_net::DEFAULT_NETWORK)
            .map(|a| a.network.as_str())
            .collect();
        let mut peers = Vec::new();
        if !user_nets.is_empty() {
            for a in self.net().all_attachments() {
                if a.container_id != id && user_nets.contains(&a.network.as_str()) {
                    if let Some(ip) = a.ip {
                        peers.push(format!("{ip}\t{}", a.aliases.join(" ")));
                    }
                }
            }
        }
        if !peers.is_empty() {
            peers.sort();
            out.push(PEERS_MARK.into());
            out.extend(peers);
        }
        let mut s = out.join("\n");
        s.push('\n');
        if let Err(e) = std::fs::write(&hosts, s) {
            tracing::warn!("write {}: {e}", hosts.display());
        }
    }

    /// `NetworkSettings` of inspect, filled from the attachments.
    pub(crate) fn network_settings(&self, id: &str, conf: &ContainerConfig, doc: &mut Value) {
        let atts = self.container_attachments(id);
        let mut ports = serde_json::Map::new();
        for p in &conf.publish {
            let key = format!(
                "{}/{}",
                p.container_port,
                if p.protocol.is_empty() {
                    "tcp"
                } else {
                    &p.protocol
                }
            );
            ports.entry(key).or_insert(Value::Null);
        }
        let mut networks = serde_json::Map::new();
        for a in &atts {
            for p in &a.ports {
                let key = format!("{}/{}", p.container_port, p.protocol);
                let host_ip = if p.host_ip.is_empty() {
                    "0.0.0.0"
                } else {
                    &p.host_ip
                };
                let entry = ports.entry(key).or_insert(Value::Null);
                if !entry.is_array() {
                    *entry = json!([]);
                }
                if let Some(v) = entry.as_array_mut() {
                    v.push(json!({"HostIp": host_ip, "HostPort": p.host_port.to_string()}));
                }
            }
            networks.insert(
                a.network.clone(),
                json!({
                    "Aliases": a.aliases,
                    "NetworkID": a.network_id,
                    "EndpointID": "",
                    "Gateway": a.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    "IPAddress": a.ip.map(|g| g.to_string()).unwrap_or_default(),
                    "IPPrefixLen": a.prefix,
                    "MacAddress": a.mac,
                }),
            );
        }
        if networks.is_empty() {
            // Not attached (not running): the networks it will join. A container disconnected
            // from every network has none, as in Docker.
            let names = match mode(&conf.network_mode) {
                Mode::Network(_) => member_networks(conf),
                _ => vec![conf.network_mode.clone()],
            };
            for name in names {
                let id = self.net().get(&name).map(|n| n.id).unwrap_or_default();
                networks.insert(
                    name,
                    json!({"Aliases": null, "NetworkID": id, "EndpointID": "", "Gateway": "",
                        "IPAddress": "", "IPPrefixLen": 0, "MacAddress": ""}),
                );
            }
        }
        let first = atts.first();
        doc["NetworkSettings"] = json!({
            "Bridge": "",
            "SandboxKey": self.network_ns_path(id, conf).unwrap_or_default(),
            "IPAddress": first.and_then(|a| a.ip).map(|g| g.to_string()).unwrap_or_default(),
            "IPPrefixLen": first.map(|a| a.prefix).unwrap_or(0),
            "Gateway": first.and_then(|a| a.gateway).map(|g| g.to_string()).unwrap_or_default(),
            "MacAddress": first.map(|a| a.mac.clone()).unwrap_or_default(),
            "Ports": ports,
            "Networks": networks,
        });
        doc["HostConfig"]["NetworkMode"] = json!(conf.network_mode);
        let bindings: serde_json::Map<String, Value> = conf
            .publish
            .iter()
            .map(|p| {
                (
                    format!("{}/{}", p.container_port, if p.protocol.is_empty() { "tcp" } else { &p.protocol }),
                    json!([{"HostIp": p.host_ip, "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() }}]),
                )
            })
            .collect();
        doc["HostConfig"]["PortBindings"] = Value::Object(bindings);
        doc["HostConfig"]["PublishAllPorts"] = json!(conf.publish_all);
    }

    /// The ps PORTS and NETWORKS columns.
    pub(crate) fn network_columns(&self, id: &str, conf: &ContainerConfig) -> (String, String) {
        // `ps` runs this for every container: no file is read unless ports were published.
        let ports: Vec<String> = if conf.publish.is_empty() {
            Vec::new()
        } else {
            self.container_attachments(id)
                .iter()
                .flat_map(|a| a.ports.iter().map(port_text))
                .collect()
        };
        let nets: Vec<String> = match mode(&conf.network_mode) {
            Mode::Network(_) => member_networks(conf),
            _ => vec![conf.network_mode.clone()],
        };
        (ports.join(", "), nets.join(","))
    }

    fn network_users(&self, net: &Network) -> Vec<String> {
        self.containers(None)
            .into_iter()
            .filter_map(|c| {
                let m = c.lock();
                let conf = m.rec.config();
                let on = member_networks(&conf).contains(&net.name);
                on.then(|| m.rec.name.clone())
            })
            .collect()
    }

    fn network_doc(&self, net: &Network) -> Value {
        let mut containers = serde_json::Map::new();
        for a in self.net().all_attachments() {
            if a.network != net.name {
                continue;
            }
            let name = self
                .index()
                .by_id
                .get(&a.container_id)
                .map(|c| c.name())
                .unwrap_or_default();
            containers.insert(
                a.container_id.clone(),
                json!({
                    "Name": name,
                    "EndpointID": "",
                    "MacAddress": a.mac,
                    "IPv4Address": a.ip.map(|ip| format!("{ip}/{}", a.prefix)).unwrap_or_default(),
                    "IPv6Address": "",
                }),
            );
        }
        json!({
            "Name": net.name,
            "Id": net.id,
            "Created": crate::record::rfc3339(net.created.saturating_mul(1_000_000_000)),
            "Scope": "local",
            "Driver": net.driver,
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": {}, "Config": [
                {"Subnet": net.subnet.to_string(), "Gateway": net.gateway.to_string()}]},
            "Internal": net.internal,
            "Attachable": false,
            "Ingress": false,
            "ConfigOnly": false,
            "Containers": containers,
            "Options": {"com.docker.network.bridge.name": net.bridge},
            "Labels": net.labels,
        })
    }

    fn set_networks(&self, c: &Container, f: impl FnOnce(&mut ContainerConfig)) {
        let mut m = c.lock();
        let mut conf = m.rec.config();
        f(&mut conf);
        m.rec.config = Record::encode_config(&conf);
        self.save(c, &m.rec);
    }
}

/// `berth.v1.Networks`.
pub(crate) struct NetworksService {
    e: Engine,
}

impl NetworksService {
    pub(crate) fn new(e: Engine) -> Self {
        NetworksService { e }
    }
}

fn blocking_err(err: tokio::task::JoinError) -> RpcStatus {
    RpcStatus::internal(format!("network operation failed: {err}"))
}

#[tonic::async_trait]
impl networks_server::Networks for NetworksService {
    async fn create(
        &self,
        req: Request<NetworkCreateRequest>,
    ) -> Result<Response<NetworkCreateResponse>, RpcStatus> {
        let r = req.into_inner();
        if !r.driver.is_empty() && r.driver != "bridge" {
            return Err(RpcStatus::invalid_argument(format!(
                "plugin \"{}\" not found: berth supports the bridge driver",
                r.driver
            )));
        }
        let opts = berth_net::CreateOptions {
            name: r.name,
            subnet: r.subnet,
            gateway: r.gateway,
            internal: r.internal,
            labels: r.labels.into_iter().collect(),
        };
        let e = self.e.clone();
        let net = tokio::task::spawn_blocking(move || e.net().create(&opts))
            .await
            .map_err(blocking_err)?
            .map_err(|e| net_status(&e))?;
        self.e
            .emit("", "network", "create", &net.id, &[("name", &net.name)]);
        Ok(Response::new(NetworkCreateResponse { id: net.id }))
    }

    async fn list(
        &self,
        req: Request<NetworkListRequest>,
    ) -> Result<Response<NetworkListResponse>, RpcStatus> {
        let filters = req.into_inner().filters;
        // The default network is always listed, as Docker lists bridge, host and none.
        self.e.net().ensure_default().map_err(|e| net_status(&e))?;
        let mut nets: Vec<NetworkSummary> = self
            .e
            .net()
            .list()
            .map_err(|e| net_status(&e))?
            .into_iter()
            .map(|n| NetworkSummary {
                id: n.id,
                name: n.name,
                driver: n.driver,
                scope: "local".into(),
                subnet: n.subnet.to_string(),
                gateway: n.gateway.to_string(),
                internal: n.internal,
                created_unix: n.created,
            })
            .collect();
        for (name, driver) in [("host", "host"), ("none", "null")] {
            nets.push(NetworkSummary {
                id: format!("{:0>64}", name.len()),
                name: name.into(),
                driver: driver.into(),
                scope: "local".into(),
                ..Default::default()
            });
        }
        for f in &filters {
            let (k, v) = f.split_once('=').unwrap_or((f.as_str(), ""));
            nets.retain(|n| match k {
                "name" => n.name.contains(v),
                "id" => n.id.starts_with(v),
                "driver" => n.driver == v,
                _ => true,
            });
        }
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(NetworkListResponse { networks: nets }))
    }

    async fn inspect(&self, req: Request<NetworkRef>) -> Result<Response<JsonDocument>, RpcStatus> {
        let key = req.into_inner().id;
        let net = self.e.net().get(&key).map_err(|e| net_status(&e))?;
        Ok(Response::new(JsonDocument {
            json: self.e.network_doc(&net).to_string(),
        }))
    }

    async fn remove(&self, req: Request<NetworkRef>) -> Result<Response<Empty>, RpcStatus> {
        let key = req.into_inner().id;
        if matches!(key.as_str(), "bridge" | "host" | "none") {
            return Err(RpcStatus::permission_denied(format!(
                "{key} is a pre-defined network and cannot be removed"
            )));
        }
        let net = self.e.net().get(&key).map_err(|e| net_status(&e))?;
        let users = self.e.network_users(&net);
        if !users.is_empty() {
            return Err(RpcStatus::failed_precondition(format!(
                "error while removing network: network {} id {} has active endpoints (containers: {})",
                net.name,
                &net.id[..12],
                users.join(", ")
            )));
        }
        let e = self.e.clone();
        let name = net.name.clone();
        tokio::task::spawn_blocking(move || e.net().remove(&name))
            .await
            .map_err(blocking_err)?
            .map_err(|e| net_status(&e))?;
        self.e
            .emit("", "network", "destroy", &net.id, &[("name", &net.name)]);
        Ok(Response::new(Empty {}))
    }

    async fn prune(
        &self,
        _req: Request<NetworkPruneRequest>,
    ) -> Result<Response<NetworkPruneResponse>, RpcStatus> {
        let mut deleted = Vec::new();
        for net in self.e.net().list().map_err(|e| net_status(&e))? {
            if net.is_default() || !self.e.network_users(&net).is_empty() {
                continue;
            }
            let e = self.e.clone();
            let name = net.name.clone();
            let r = tokio::task::spawn_blocking(move || e.net().remove(&name))
                .await
                .map_err(blocking_err)?;
            match r {
                Ok(_) => deleted.push(net.name),
                Err(err) => tracing::warn!("prune network {}: {err}", net.name),
            }
        }
        Ok(Response::new(NetworkPruneResponse { deleted }))
    }

    async fn connect(
        &self,
        req: Request<NetworkConnectRequest>,
    ) -> Result<Response<Empty>, RpcStatus> {
        let ns = berth_api::namespace_of(&req).to_owned();
        let r = req.into_inner();
        let net = self.e.net().get(&r.network).map_err(|e| net_status(&e))?;
        let c = self.e.find(&ns, &r.container)?;
        let _op = c.op.lock().await;
        let conf = c.lock().rec.config();
        let primary = match mode(&conf.network_mode) {
            Mode::Network(n) => n == net.name,
            _ => false,
        };
        match mode(&conf.network_mode) {
            Mode::Network(_) if !member_networks(&conf).contains(&net.name) => {}
            Mode::Network(_) => {
                return Err(RpcStatus::already_exists(format!(
                    "endpoint with name {} already exists in network {}",
                    c.name(),
                    net.name
                )));
            }
            _ => {
                return Err(RpcStatus::invalid_argument(format!(
                    "container {} has network mode {}: it cannot be connected to a network",
                    c.name(),
                    conf.network_mode
                )));
            }
        }
        let running = c.lock().rec.status.is_active();
        if running {
            let e = self.e.clone();
            let c2 = c.clone();
            let netname = net.name.clone();
            tokio::task::spawn_blocking(move || -> Result<(), RpcStatus> {
                // The lowest free ethN: interfaces of disconnected networks leave gaps.
                let used: Vec<String> = e
                    .net()
                    .attachments(&c2.id)
                    .into_iter()
                    .map(|a| a.ifname)
                    .collect();
                let ifname = (0..)
                    .map(|i| format!("eth{i}"))
                    .find(|n| !used.contains(n))
                    .unwrap_or_default();
                let mut aliases = vec![c2.name(), c2.id[..12].to_owned()];
                aliases.extend(r.aliases);
                let opts = berth_net::AttachOptions {
                    ifname,
                    ip: r.ip.parse().ok(),
                    ports: Vec::new(),
                    aliases,
                };
                let netns = e.net().netns_path(&c2.id);
                let n = e.net().get(&netname).map_err(|e| net_status(&e))?;
                e.net()
                    .attach(&c2.id, &netns, &n, &opts)
                    .map_err(|e| net_status(&e))?;
                e.refresh_hosts_for(&c2.id);
                Ok(())
            })
            .await
            .map_err(blocking_err)??;
        }
        self.e.set_networks(&c, |conf| {
            if primary {
                conf.network_mode_disconnected = false;
            } else {
                conf.networks.push(net.name.clone());
            }
        });
        self.e.emit(
            "",
            "network",
            "connect",
            &net.id,
            &[("name", &net.name), ("container", &c.id)],
        );
        Ok(Response::new(Empty {}))
    }

    async fn disconnect(
        &self,
        req: Request<NetworkConnectRequest>,
    ) -> Result<Response<Empty>, RpcStatus> {
        let ns = berth_api::namespace_of(&req).to_owned();
        let r = req.into_inner();
        let net = self.e.net().get(&r.network).map_err(|e| net_status(&e))?;
        let c = self.e.find(&ns, &r.container)?;
        let _op = c.op.lock().await;
        let conf = c.lock().rec.config();
        if !member_networks(&conf).contains(&net.name) {
            return Err(RpcStatus::invalid_argument(format!(
                "container {} is not connected to network {}",
                c.name(),
                net.name
            )));
        }
        let primary = !conf.networks.contains(&net.name);
        let e = self.e.clone();
        let (id, netname) = (c.id.clone(), net.name.clone());
        tokio::task::spawn_blocking(move || {
            let r = e.net().detach(&id, &netname);
            e.refresh_hosts(&netname);
            e.write_hosts(&id);
            r
        })
        .await
        .map_err(blocking_err)?
        .map_err(|e| net_status(&e))?;
        self.e.set_networks(&c, |conf| {
            if primary {
                conf.network_mode_disconnected = true;
            } else {
                conf.networks.retain(|n| *n != net.name);
            }
        });
        self.e.emit(
            "",
            "network",
            "disconnect",
            &net.id,
            &[("name", &net.name), ("container", &c.id)],
        );
        Ok(Response::new(Empty {}))
    }
}
