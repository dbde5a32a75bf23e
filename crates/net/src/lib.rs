//! Berth's container networks, built on CNI.
//!
//! A [`Manager`] owns `ROOT/networks/`: one record per network (`<name>.json`) and the CNI
//! conflist Berth generates for it (`<name>.conflist`: `bridge` with `host-local` IPAM whose
//! `dataDir` is `ROOT/networks/ipam`, then `portmap`), and the cached result of every
//! attachment (`results/<container>-<network>.json`), so a `DEL` always gets exactly what the
//! `ADD` returned and was run with, even after a daemon restart. It creates each container's
//! network namespace as a bind-mounted nsfs file under `STATE/netns/`. Subnets are picked from
//! a pool and claimed in a host-wide registry (under a lock) so that parallel Berth roots never
//! overlap; the default network's bridge name is derived from the root.

mod cni;
pub mod dns;
mod netns;
mod pool;
mod ports;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use ports::{PortMapping, parse_publish};

/// The default network's name, as Docker names it.
pub const DEFAULT_NETWORK: &str = "bridge";

/// Default CNI plugin directories (Debian's package, then the upstream tarball's place).
pub const DEFAULT_PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];

/// The host-wide directory of the subnet registry shared by every Berth root.
pub const DEFAULT_HOST_DIR: &str = "/run/berth-net";

/// Errors of this crate; each says what failed on what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such network.
    #[error("network {0} not found")]
    NotFound(String),
    /// The name is taken.
    #[error("network with name {0} already exists")]
    Exists(String),
    /// A bad value from the user.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which option.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The subnet overlaps another network or a host route.
    #[error(
        "invalid pool request: Pool overlaps with other one on this address space ({subnet} overlaps {other})"
    )]
    Overlap {
        /// The subnet asked for.
        subnet: String,
        /// What it overlaps.
        other: String,
    },
    /// The pool is exhausted.
    #[error(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    )]
    PoolExhausted,
    /// A host port is taken.
    #[error(
        "failed to bind host port {addr}/{proto}: address already in use (choose another host port or stop what listens there)"
    )]
    PortInUse {
        /// ip:port.
        addr: String,
        /// tcp or udp.
        proto: String,
    },
    /// The plugin binary is absent.
    #[error(
        "CNI plugin {plugin} not found in {dirs} (install containernetworking-plugins or set berthd's --cni-plugin-dir)"
    )]
    PluginMissing {
        /// The plugin type.
        plugin: String,
        /// The directories searched.
        dirs: String,
    },
    /// A plugin failed.
    #[error("CNI plugin {plugin} failed: {message}")]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// A file operation.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
    fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Where things live.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Berth root (records under `ROOT/networks`).
    pub root: PathBuf,
    /// The state directory (namespaces under `STATE/netns`).
    pub state: PathBuf,
    /// Where CNI plugin binaries are looked up, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// The host-wide subnet registry ([`DEFAULT_HOST_DIR`]).
    pub host_dir: PathBuf,
}

impl Config {
    /// Defaults for a root and state directory.
    pub fn new(root: PathBuf, state: PathBuf) -> Config {
        Config {
            root,
            state,
            plugin_dirs: DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
            host_dir: PathBuf::from(DEFAULT_HOST_DIR),
        }
    }
}

/// A network's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    /// Always `bridge` for now.
    pub driver: String,
    /// The IPv4 subnet.
    pub subnet: Ipv4Net,
    /// The gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// The Linux bridge.
    pub bridge: String,
    /// No route out, no masquerading.
    pub internal: bool,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// User labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Network {
    /// Whether this is the default network (no name resolution there, as in Docker).
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_NETWORK
    }
}

/// What `create` is asked.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The name.
    pub name: String,
    /// `--subnet` (empty: from the pool).
    pub subnet: String,
    /// `--gateway` (empty: the subnet's first host).
    pub gateway: String,
    /// `--internal`.
    pub internal: bool,
    /// `--label`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What one container asks of one network.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// `eth0`, `eth1`...
    pub ifname: String,
    /// `--ip`.
    pub ip: Option<Ipv4Addr>,
    /// Published ports (only on the first network).
    pub ports: Vec<PortMapping>,
    /// The container's name and `--network-alias`es, for name resolution.
    pub aliases: Vec<String>,
}

/// One container on one network: the cached CNI result and what it was run with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's name.
    pub network: String,
    /// The network's id.
    pub network_id: String,
    /// The container.
    pub container_id: String,
    /// The interface in the container.
    pub ifname: String,
    /// The namespace file the ADD ran against.
    pub netns: PathBuf,
    /// The exact conflist of the ADD (DEL runs the same chain).
    pub conflist: Value,
    /// The runtime config of the ADD (port mappings, requested IP).
    pub runtime: Value,
    /// The CNI result.
    pub result: Value,
    /// The container's address.
    pub ip: Option<Ipv4Addr>,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The interface's MAC address.
    pub mac: String,
    /// Published ports, host ports resolved.
    pub ports: Vec<PortMapping>,
    /// Names this container answers to on this network.
    pub aliases: Vec<String>,
}

/// The network manager of one root.
pub struct Manager {
    cfg: Config,
    claims: pool::Claims,
    lock: Mutex<()>,
    /// The host ports held for the published ports of each (container, network) attachment,
    /// while the container runs (see [`Manager::hold_ports`]).
    held: Mutex<std::collections::HashMap<(String, String), Vec<ports::Held>>>,
    /// Networks whose firewall rules (masquerade or isolation) are known to be in place.
    firewall: Mutex<std::collections::HashSet<String>>,
    /// The published ports of every attachment, by (container, network): read from the cached
    /// results on first use, then kept by attach and detach (one daemon writes a root's
    /// results). A start needs only these, and reading every result document for them made
    /// each start cost time and transient memory in proportion to the containers running.
    published: Mutex<Option<PublishedPorts>>,
}

type PublishedPorts = std::collections::HashMap<(String, String), Vec<PortMapping>>;

/// The part of a cached result that the published-ports index reads.
#[derive(Deserialize)]
struct PortsOnly {
    container_id: String,
    network: String,
    #[serde(default)]
    ports: Vec<PortMapping>,
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && c.all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

impl Manager {
    /// Open (creating its directories) the network state of a root.
    pub fn open(cfg: Config) -> Result<Manager, Error> {
        let m = Manager {
            claims: pool::Claims {
                dir: cfg.host_dir.clone(),
            },
            cfg,
            lock: Mutex::new(()),
            held: Mutex::new(std::collections::HashMap::new()),
            firewall: Mutex::new(std::collections::HashSet::new()),
            published: Mutex::new(None),
        };
        for d in [m.dir(), m.dir().join("results"), m.ipam_dir()] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
        }
        Ok(m)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn dir(&self) -> PathBuf {
        self.cfg.root.join("networks")
    }

    /// host-local's `dataDir` (its leases).
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir().join("ipam")
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.json"))
    }

    fn result_path(&self, container: &str, network: &str) -> PathBuf {
        self.dir()
            .join("results")
            .join(format!("{container}-{network}.json"))
    }

    /// The namespace file of a container.
    pub fn netns_path(&self, container: &str) -> PathBuf {
        self.cfg.state.join("netns").join(container)
    }

    /// The default network's bridge: `berth0` for the default root, else derived from the root
    /// so parallel roots never share one.
    pub fn default_bridge_name(&self) -> String {
        if self.cfg.root == Path::new("/var/lib/berth") {
            return "berth0".into();
        }
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(self.cfg.root.as_os_str().as_encoded_bytes());
        format!("berth{}", &hex::encode(h)[..9])
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every network, sorted by name (the default one only once it has been created).
    pub fn list(&self) -> Result<Vec<Network>, Error> {
        let dir = self.dir();
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
        let mut v: Vec<Network> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// A network by name, full id or unique id prefix; `bridge` is created on first use.
    pub fn get(&self, key: &str) -> Result<Network, Error> {
        if key == DEFAULT_NETWORK {
            return self.ensure_default();
        }
        if let Ok(b) = std::fs::read(self.record_path(key)) {
            if let Ok(n) = serde_json::from_slice(&b) {
                return Ok(n);
            }
        }
        let all = self.list()?;
        let mut hits = all
            .into_iter()
            .filter(|n| !key.is_empty() && n.id.starts_with(key));
        match (hits.next(), hits.next()) {
            (Some(n), None) => Ok(n),
            _ => Err(Error::NotFound(key.to_owned())),
        }
    }

    /// The host's address for `--add-host NAME:host-gateway` in the host's own namespace
    /// (`--network host`): the default network's gateway when its bridge carries it (what
    /// Docker gives, its default bridge's address), else the source address of the host's
    /// route to the outside. `None` when the host has neither.
    pub fn host_address(&self) -> Option<Ipv4Addr> {
        let default = std::fs::read(self.record_path(DEFAULT_NETWORK))
            .ok()
            .and_then(|b| serde_json::from_slice::<Network>(&b).ok());
        if let Some(n) = default {
            if source_toward(n.gateway) == Some(n.gateway) {
                return Some(n.gateway);
            }
        }
        // TEST-NET-1: never local, so this is the default route's source address.
        source_toward(Ipv4Addr::new(192, 0, 2, 1))
    }

    /// The default network, created (subnet from the pool) if missing.
    pub fn ensure_default(&self) -> Result<Network, Error> {
        let _g = self.guard();
        if let Ok(b) = std::fs::read(self.record_path(DEFAULT_NETWORK)) {
            if let Ok(n) = serde_json::from_slice(&b) {
                return Ok(n);
            }
        }
        self.create_locked(
            &CreateOptions {
                name: DEFAULT_NETWORK.into(),
                ..Default::default()
            },
            self.default_bridge_name(),
        )
    }

    /// `network create`.
    pub fn create(&self, opts: &CreateOptions) -> Result<Network, Error> {
        if !valid_name(&opts.name) {
            return Err(Error::invalid(
                "network name",
                &opts.name,
                "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
            ));
        }
        if matches!(opts.name.as_str(), "bridge" | "host" | "none" | "default") {
            return Err(Error::invalid(
                "network name",
                &opts.name,
                "it is a pre-defined network",
            ));
        }
        let _g = self.guard();
        if self.record_path(&opts.name).exists() {
            return Err(Error::Exists(opts.name.clone()));
        }
        self.create_locked(opts, String::new())
    }

    fn create_locked(&self, opts: &CreateOptions, bridge: String) -> Result<Network, Error> {
        let wanted: Option<Ipv4Net> = if opts.subnet.is_empty() {
            None
        } else {
            let n: Ipv4Net = opts.subnet.parse().map_err(|_| {
                Error::invalid(
                    "--subnet",
                    &opts.subnet,
                    "not an IPv4 CIDR (e.g. 10.10.0.0/24)",
                )
            })?;
            if n.prefix_len() > 30 {
                return Err(Error::invalid("--subnet", &opts.subnet, "too small"));
            }
            Some(n.trunc())
        };
        let id = random_id();
        let record = self.record_path(&opts.name);
        let host = self.claims.lock()?;
        let mut taken: Vec<(Ipv4Net, String)> = self
            .claims
            .live(&host)
            .into_iter()
            .map(|(n, o)| (n, self.owner_name(&o)))
            .collect();
        taken.extend(
            pool::host_routes()
                .into_iter()
                .map(|r| (r, format!("a host route ({r})"))),
        );
        let subnet = match wanted {
            Some(n) => {
                if let Some((o, what)) = taken.iter().find(|(t, _)| pool::overlaps(t, &n)) {
                    let _ = o;
                    return Err(Error::Overlap {
                        subnet: n.to_string(),
                        other: what.clone(),
                    });
                }
                n
            }
            None => pool::default_pool()
                .find(|p| !taken.iter().any(|(t, _)| pool::overlaps(t, p)))
                .ok_or(Error::PoolExhausted)?,
        };
        let gateway = if opts.gateway.is_empty() {
            subnet.hosts().next().ok_or(Error::PoolExhausted)?
        } else {
            let g: Ipv4Addr = opts
                .gateway
                .parse()
                .map_err(|_| Error::invalid("--gateway", &opts.gateway, "not an IPv4 address"))?;
            if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() {
                return Err(Error::invalid(
                    "--gateway",
                    &opts.gateway,
                    format!("not a host address of {subnet}"),
                ));
            }
            g
        };
        let bridge = if bridge.is_empty() {
            format!("br-{}", &id[..12])
        } else {
            bridge
        };
        let net = Network {
            name: opts.name.clone(),
            id,
            driver: "bridge".into(),
            subnet,
            gateway,
            bridge,
            internal: opts.internal,
            created: now_unix(),
            labels: opts.labels.clone(),
        };
        let conflist = self.conflist(&net);
        let cl = self.dir().join(format!("{}.conflist", net.name));
        std::fs::write(
            &cl,
            serde_json::to_vec_pretty(&conflist).unwrap_or_default(),
        )
        .map_err(|e| Error::io("write", &cl, e))?;
        let tmp = record.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&net).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &record))
            .map_err(|e| Error::io("write", &record, e))?;
        self.claims.claim(&host, &subnet, &record)?;
        drop(host);
        if net.internal {
            if let Err(e) = self.ensure_firewall(&net) {
                let _ = self.remove_locked(&net);
                return Err(e);
            }
        }
        Ok(net)
    }

    /// "network NAME", naming the other Berth root when the claim is not ours.
    fn owner_name(&self, record: &Path) -> String {
        let name = record
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if record.parent() == Some(self.dir().as_path()) {
            format!("network {name}")
        } else {
            let root = record
                .parent()
                .and_then(Path::parent)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!("network {name} of the Berth root {root}")
        }
    }

    /// The rule that masquerades what leaves a network for the outside (Docker's
    /// `-s SUBNET ! -o BRIDGE -j MASQUERADE`), tagged with the network's id.
    fn masq_rule(net: &Network, op: &str) -> Vec<String> {
        let comment = format!("berth network {} {}", net.name, &net.id[..12]);
        [
            "-w",
            "-t",
            "nat",
            op,
            "POSTROUTING",
            "-s",
            &net.subnet.to_string(),
            "!",
            "-o",
            &net.bridge,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "MASQUERADE",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// The firewall isolation of an internal network (Docker's `--internal`): two `FORWARD`
    /// rules, commented with the network's id, that drop whatever its bridge would forward to
    /// another interface and whatever another interface would forward into it. Traffic between
    /// its own containers (bridged, or `-i BRIDGE -o BRIDGE` with `br_netfilter`) is untouched.
    /// `op` is `-I` (insert at the top, ahead of any accepting rule), `-C` or `-D`.
    fn isolation_rules(net: &Network, op: &str) -> [Vec<String>; 2] {
        let comment = format!("berth network {} {} internal", net.name, &net.id[..12]);
        let rule = |out_negated: bool| -> Vec<String> {
            let mut v: Vec<&str> = vec!["-w", op, "FORWARD"];
            if out_negated {
                v.extend(["-i", &net.bridge, "!", "-o", &net.bridge]);
            } else {
                v.extend(["!", "-i", &net.bridge, "-o", &net.bridge]);
            }
            v.extend(["-m", "comment", "--comment", &comment, "-j", "DROP"]);
            v.into_iter().map(str::to_owned).collect()
        };
        [rule(true), rule(false)]
    }

    /// The chain isolating an ordinary network from the others (Docker isolates user-defined
    /// bridge networks from each other): `FORWARD` jumps there for what enters from the
    /// network's bridge; it returns for the bridge itself and drops whatever would go to
    /// another Berth bridge (`berth*`, `br-*`, the latter also Docker's).
    fn iso_chain(net: &Network) -> String {
        format!("BERTH-ISO-{}", &net.id[..12])
    }

    fn iso_jump(net: &Network, op: &str) -> Vec<String> {
        let comment = format!("berth network {} {} isolation", net.name, &net.id[..12]);
        let chain = Self::iso_chain(net);
        [
            "-w",
            op,
            "FORWARD",
            "-i",
            &net.bridge,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            &chain,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// Create (or refill) the isolation chain, then jump to it from the top of `FORWARD`.
    fn ensure_isolation(net: &Network) -> Result<(), Error> {
        let chain = Self::iso_chain(net);
        let rule = |args: &[&str]| -> Vec<String> {
            let mut v = vec!["-w".to_owned()];
            v.extend(args.iter().map(|s| (*s).to_owned()));
            v
        };
        // `-N` fails when the chain exists (a daemon restart): flush and refill it then.
        Self::iptables(&rule(&["-N", &chain]))?;
        Self::iptables(&rule(&["-F", &chain]))?;
        Self::iptables(&rule(&["-A", &chain, "-o", &net.bridge, "-j", "RETURN"]))?;
        Self::iptables(&rule(&["-A", &chain, "-o", "berth+", "-j", "DROP"]))?;
        Self::iptables(&rule(&["-A", &chain, "-o", "br-+", "-j", "DROP"]))?;
        if !Self::iptables(&Self::iso_jump(net, "-C"))? {
            Self::iptables(&Self::iso_jump(net, "-I"))?;
        }
        Ok(())
    }

    fn remove_isolation(net: &Network) {
        for _ in 0..8 {
            if !Self::iptables(&Self::iso_jump(net, "-D")).unwrap_or(false) {
                break;
            }
        }
        let chain = Self::iso_chain(net);
        let _ = Self::iptables(&["-w".into(), "-F".into(), chain.clone()]);
        let _ = Self::iptables(&["-w".into(), "-X".into(), chain]);
    }

    fn iptables(args: &[String]) -> Result<bool, Error> {
        let out = std::process::Command::new("iptables")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::io("run", Path::new("iptables"), e))?;
        if !out.status.success() && args.iter().any(|a| a == "-A" || a == "-I") {
            return Err(Error::Plugin {
                plugin: "iptables".into(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(out.status.success())
    }

    /// Put the network's firewall rules in place once: its masquerade rule and its isolation
    /// from other networks, or for an internal network (no masquerading) its isolation rules. Made when an internal network is
    /// created and checked again on each first use by this daemon (a host reboot drops them).
    pub fn ensure_firewall(&self, net: &Network) -> Result<(), Error> {
        let mut done = self.firewall.lock().unwrap_or_else(|p| p.into_inner());
        if done.contains(&net.id) {
            return Ok(());
        }
        if net.internal {
            for (check, insert) in Self::isolation_rules(net, "-C")
                .into_iter()
                .zip(Self::isolation_rules(net, "-I"))
            {
                if !Self::iptables(&check)? {
                    Self::iptables(&insert)?;
                }
            }
        } else {
            if !Self::iptables(&Self::masq_rule(net, "-C"))? {
                Self::iptables(&Self::masq_rule(net, "-A"))?;
            }
            Self::ensure_isolation(net)?;
        }
        done.insert(net.id.clone());
        Ok(())
    }

    fn remove_firewall(&self, net: &Network) {
        self.firewall
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&net.id);
        let mut rules = vec![Self::masq_rule(net, "-D")];
        rules.extend(Self::isolation_rules(net, "-D"));
        for r in &rules {
            for _ in 0..8 {
                if !Self::iptables(r).unwrap_or(false) {
                    break;
                }
            }
        }
        Self::remove_isolation(net);
    }

    /// The conflist Berth owns for a network.
    fn conflist(&self, net: &Network) -> Value {
        let mut range =
            json!({"subnet": net.subnet.to_string(), "gateway": net.gateway.to_string()});
        if net.internal {
            range.as_object_mut().map(|r| r.remove("gateway"));
        }
        json!({
            "cniVersion": "1.0.0",
            "name": net.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": true,
                    "isDefaultGateway": !net.internal,
                    // Masquerading is one rule per network that Berth owns (see
                    // `ensure_firewall`): per container it would cost iptables runs on
                    // every start and stop, and leak when the namespace is gone at DEL.
                    "ipMasq": false,
                    "hairpinMode": true,
                    "capabilities": {"ips": true},
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.subnet.to_string(), "gateway": net.gateway.to_string()}]],
                        "dataDir": self.ipam_dir(),
                    }
                },
                {
                    "type": "portmap",
                    "capabilities": {"portMappings": true},
                    "snat": true
                }
            ]
        })
    }

    fn read_conflist(&self, net: &Network) -> Value {
        let p = self.dir().join(format!("{}.conflist", net.name));
        std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| self.conflist(net))
    }

    /// `network rm`: the caller checks that no container uses it. Deletes the bridge, the
    /// leases and the subnet claim.
    pub fn remove(&self, key: &str) -> Result<Network, Error> {
        let net = self.get(key)?;
        let _g = self.guard();
        self.remove_locked(&net)?;
        Ok(net)
    }

    fn remove_locked(&self, net: &Network) -> Result<(), Error> {
        self.remove_firewall(net);
        netns::delete_bridge(&net.bridge)
            .map_err(|e| Error::io("delete the bridge", Path::new(&net.bridge), e))?;
        let record = self.record_path(&net.name);
        let _ = std::fs::remove_dir_all(self.ipam_dir().join(&net.name));
        let _ = std::fs::remove_file(self.dir().join(format!("{}.conflist", net.name)));
        let host = self.claims.lock()?;
        self.claims.release(&host, &net.subnet, &record);
        std::fs::remove_file(&record).map_err(|e| Error::io("remove", &record, e))
    }

    /// Remove every network record, bridge, lease and claim of this root (the default network
    /// included); attachments must be gone. For the test harness and uninstalls.
    pub fn purge(&self) {
        let _g = self.guard();
        for n in self.list().unwrap_or_default() {
            if let Err(e) = self.remove_locked(&n) {
                tracing::warn!("remove network {}: {e}", n.name);
            }
        }
    }

    /// A new network namespace for `container` (bridge and user networks).
    pub fn create_netns(&self, container: &str) -> Result<PathBuf, Error> {
        let p = self.netns_path(container);
        if p.exists() {
            netns::remove(&p).map_err(|e| Error::io("remove the stale namespace", &p, e))?;
        }
        netns::create(&p).map_err(|e| Error::io("create the network namespace", &p, e))?;
        Ok(p)
    }

    /// `container`'s namespace file made to share the namespace of process `pid`
    /// (`--network container:`).
    pub fn join_netns(&self, container: &str, pid: i32) -> Result<PathBuf, Error> {
        let p = self.netns_path(container);
        let _ = netns::remove(&p);
        netns::join(&p, pid).map_err(|e| Error::io("join the network namespace at", &p, e))?;
        Ok(p)
    }

    /// Remove `container`'s namespace file; idempotent.
    pub fn remove_netns(&self, container: &str) -> Result<(), Error> {
        let p = self.netns_path(container);
        netns::remove(&p).map_err(|e| Error::io("remove the network namespace", &p, e))
    }

    /// The cached attachments of `container`, ordered by interface.
    pub fn attachments(&self, container: &str) -> Vec<Attachment> {
        let dir = self.dir().join("results");
        let prefix = format!("{container}-");
        let mut v: Vec<Attachment> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .filter(|a: &Attachment| a.container_id == container)
            .collect();
        v.sort_by(|a, b| a.ifname.cmp(&b.ifname));
        v
    }

    /// Every cached attachment of this root.
    pub fn all_attachments(&self) -> Vec<Attachment> {
        let dir = self.dir().join("results");
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// ADD `container` (namespace `netns`) to `net`, caching the result. A host port in use
    /// fails before anything is configured; a plugin failure is undone by a DEL.
    pub fn attach(
        &self,
        container: &str,
        netns: &Path,
        net: &Network,
        opts: &AttachOptions,
    ) -> Result<Attachment, Error> {
        if let Some(ip) = opts.ip {
            if !net.subnet.contains(&ip) {
                return Err(Error::invalid(
                    "--ip",
                    &ip.to_string(),
                    format!("not in the subnet {} of network {}", net.subnet, net.name),
                ));
            }
        }
        let key = (container.to_owned(), net.name.clone());
        let (ports, held) = self.with_published(|published| {
            // Under the lock from the look at the others to recording ours, so two starts
            // never both take the same free port.
            let others: Vec<PortMapping> = published
                .iter()
                .filter(|((c, _), _)| c != container)
                .flat_map(|(_, p)| p.iter().cloned())
                .collect();
            let (ports, held) = ports::resolve(&opts.ports, &others)?;
            published.insert(key.clone(), ports.clone());
            Ok::<_, Error>((ports, held))
        })?;
        let attached = self.attach_resolved(container, netns, net, opts, ports, held);
        if attached.is_err() {
            self.with_published(|p| p.remove(&key));
        }
        attached
    }

    /// Run `f` on the published-ports index, read from the cached results the first time.
    fn with_published<R>(&self, f: impl FnOnce(&mut PublishedPorts) -> R) -> R {
        let mut g = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let map = g.get_or_insert_with(|| {
            let dir = self.dir().join("results");
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    serde_json::from_slice::<PortsOnly>(&std::fs::read(e.path()).ok()?).ok()
                })
                .map(|a| ((a.container_id, a.network), a.ports))
                .collect()
        });
        f(map)
    }

    fn attach_resolved(
        &self,
        container: &str,
        netns: &Path,
        net: &Network,
        opts: &AttachOptions,
        ports: Vec<PortMapping>,
        held: Vec<ports::Held>,
    ) -> Result<Attachment, Error> {
        let mut list = self.read_conflist(net);
        if ports.is_empty() {
            // Every plugin is a fork and exec of a Go binary: skip portmap when it has nothing
            // to do (the cached conflist records the chain actually run).
            if let Some(p) = list["plugins"].as_array_mut() {
                p.retain(|p| p["type"] != "portmap");
            }
        }
        let mut runtime = json!({});
        if !ports.is_empty() {
            runtime["portMappings"] = json!(
                ports
                    .iter()
                    .map(
                        |p| json!({"hostPort": p.host_port, "containerPort": p.container_port,
                    "protocol": p.protocol, "hostIP": p.host_ip})
                    )
                    .collect::<Vec<_>>()
            );
        }
        if let Some(ip) = opts.ip {
            runtime["ips"] = json!([format!("{ip}/{}", net.subnet.prefix_len())]);
        }
        let inv = cni::Invocation {
            container_id: container,
            netns,
            ifname: &opts.ifname,
            plugin_dirs: &self.cfg.plugin_dirs,
        };
        let result = cni::add_list(&inv, &list, &runtime)?;
        if let Err(e) = self.ensure_firewall(net) {
            let _ = cni::del_list(&inv, &list, Some(&result), &runtime);
            return Err(e);
        }
        let (ip, mac) = parse_result(&result, &opts.ifname);
        let att = Attachment {
            network: net.name.clone(),
            network_id: net.id.clone(),
            container_id: container.to_owned(),
            ifname: opts.ifname.clone(),
            netns: netns.to_owned(),
            conflist: list,
            runtime,
            result,
            ip,
            prefix: net.subnet.prefix_len(),
            gateway: (!net.internal).then_some(net.gateway),
            mac,
            ports,
            aliases: opts.aliases.clone(),
        };
        let p = self.result_path(container, &net.name);
        let tmp = p.with_extension("json.tmp");
        let written = std::fs::write(&tmp, serde_json::to_vec(&att).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &p));
        if let Err(e) = written {
            let _ = cni::del_list(&inv, &att.conflist, Some(&att.result), &att.runtime);
            return Err(Error::io("write", &p, e));
        }
        if !held.is_empty() {
            self.held_ports()
                .insert((container.to_owned(), net.name.clone()), held);
        }
        Ok(att)
    }

    fn held_ports(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), Vec<ports::Held>>>
    {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold the host ports of an attachment's published ports again (a restarted daemon, whose
    /// predecessor's sockets died with it, for its running containers). A port some other
    /// process took meanwhile is an error naming it; the others are held regardless.
    pub fn hold_ports(&self, att: &Attachment) -> Result<(), Error> {
        let mut held = Vec::new();
        let mut first = None;
        for p in &att.ports {
            match ports::reserve(p, p.host_port) {
                Ok((_, h)) => held.push(h),
                Err(_) => {
                    first.get_or_insert(Error::PortInUse {
                        addr: ports::addr_of(p, p.host_port).to_string(),
                        proto: p.protocol.clone(),
                    });
                }
            }
        }
        self.held_ports()
            .insert((att.container_id.clone(), att.network.clone()), held);
        first.map_or(Ok(()), Err)
    }

    /// DEL `container` from `network` with the cached result; the cache entry goes only once
    /// the DEL succeeded. Not attached: nothing to do.
    pub fn detach(&self, container: &str, network: &str) -> Result<(), Error> {
        let p = self.result_path(container, network);
        let Ok(b) = std::fs::read(&p) else {
            return Ok(());
        };
        let Ok(att) = serde_json::from_slice::<Attachment>(&b) else {
            let _ = std::fs::remove_file(&p);
            return Ok(());
        };
        // A namespace that is gone (host reboot) is given as empty: plugins then clean up
        // only their host side, as the CNI spec allows.
        let netns = if att.netns.exists() {
            att.netns.clone()
        } else {
            PathBuf::new()
        };
        let inv = cni::Invocation {
            container_id: container,
            netns: &netns,
            ifname: &att.ifname,
            plugin_dirs: &self.cfg.plugin_dirs,
        };
        cni::del_list(&inv, &att.conflist, Some(&att.result), &att.runtime)?;
        // The DNAT rules are gone: the host ports are free for others again.
        let key = (container.to_owned(), network.to_owned());
        self.held_ports().remove(&key);
        self.with_published(|p| p.remove(&key));
        std::fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))
    }

    /// Detach `container` from everything and remove its namespace file; every step is tried,
    /// the first error returned.
    ///
    /// Unless `shared` (other containers joined the namespace), the namespace file goes
    /// first: its last reference dropped, the kernel destroys the namespace and the veth pairs
    /// in it on its own, and the DELs (given an empty `CNI_NETNS`, as the CNI spec allows for
    /// a namespace that is gone) only release the address and the port mappings. That saves
    /// the plugins entering the namespace and deleting links synchronously on every stop.
    pub fn detach_all(&self, container: &str, shared: bool) -> Result<(), Error> {
        let mut first = None;
        if !shared {
            if let Err(e) = self.remove_netns(container) {
                first.get_or_insert(e);
            }
        }
        for a in self.attachments(container) {
            if let Err(e) = self.detach(container, &a.network) {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = self.remove_netns(container) {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }
}

/// The local address the kernel would send from to reach `ip` (itself when `ip` is local):
/// a route lookup by connecting a UDP socket, which sends nothing.
fn source_toward(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((ip, 9)).ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V4(a) if !a.is_unspecified() && !a.is_loopback() => Some(a),
        _ => None,
    }
}

/// The container interface's IPv4 address and MAC from a CNI 1.0 result.
fn parse_result(result: &Value, ifname: &str) -> (Option<Ipv4Addr>, String) {
    let ifaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let idx = ifaces
        .iter()
        .position(|i| i["name"] == ifname && i["sandbox"].as_str().is_some_and(|s| !s.is_empty()));
    let mac = idx
        .and_then(|i| ifaces[i]["mac"].as_str())
        .unwrap_or_default()
        .to_owned();
    let ip = result["ips"].as_array().and_then(|ips| {
        ips.iter()
            .filter(|ip| match (idx, ip["interface"].as_u64()) {
                (Some(i), Some(j)) => usize::try_from(j).ok() == Some(i),
                _ => true,
            })
            .filter_map(|ip| {
                ip["address"]
                    .as_str()?
                    .split('/')
                    .next()?
                    .parse::<IpAddr>()
                    .ok()
            })
            .find_map(|a| match a {
                IpAddr::V4(v) => Some(v),
                IpAddr::V6(_) => None,
            })
    });
    (ip, mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_bridge_result() {
        let r = json!({"cniVersion":"1.0.0","interfaces":[
            {"name":"berth1","mac":"aa"},{"name":"veth1","mac":"bb"},
            {"name":"eth0","mac":"02:42:ac:11:00:02","sandbox":"/run/x"}],
            "ips":[{"interface":2,"address":"172.17.0.2/16","gateway":"172.17.0.1"}]});
        let (ip, mac) = parse_result(&r, "eth0");
        assert_eq!(ip, Some(Ipv4Addr::new(172, 17, 0, 2)));
        assert_eq!(mac, "02:42:ac:11:00:02");
    }

    #[test]
    fn names() {
        assert!(valid_name("my-net.1"));
        assert!(!valid_name("-x"));
        assert!(!valid_name(""));
    }
}
