//! `berth network ...`, `berth port`, and the network flags of `create`/`run`.

use berth_api::v1::{
    ContainerConfig, ContainerRef, NetworkConnectRequest, NetworkCreateRequest, NetworkListRequest,
    NetworkPruneRequest, NetworkRef, PortBinding, networks_client::NetworksClient,
};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::Client;
use crate::output::{self, print_tabbed};
use crate::template::{self, Template};
use crate::{CliResult, Failure};

fn bad(e: impl std::fmt::Display) -> Failure {
    Failure::new(format!("Error: {e}"))
}

fn networks(c: &Client) -> NetworksClient<tonic::transport::Channel> {
    NetworksClient::new(c.channel.clone())
}

/// `--network`, `--network-alias`, `--ip`, `-p`, `-P` into the container config.
pub fn apply_flags(o: &crate::ContainerOpts, cfg: &mut ContainerConfig) -> Result<(), Failure> {
    cfg.network_aliases = o.network_alias.clone();
    cfg.ip = o.ip.clone().unwrap_or_default();
    cfg.publish_all = o.publish_all;
    for p in &o.publish {
        let m = berth_net::parse_publish(p).map_err(bad)?;
        cfg.publish.push(PortBinding {
            host_ip: m.host_ip,
            host_port: u32::from(m.host_port),
            container_port: u32::from(m.container_port),
            protocol: m.protocol,
        });
    }
    if cfg.network_mode.starts_with("container:") && cfg.network_mode.len() == 10 {
        return Err(bad(
            "invalid --network container:: a container name or id is required",
        ));
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks.
    Inspect(InspectArgs),
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Remove all unused networks.
    Prune(PruneArgs),
    /// Connect a container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Subnet in CIDR format that represents a network segment.
    #[arg(long)]
    pub subnet: Option<String>,
    /// IPv4 Gateway for the master subnet.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Restrict external access to the network.
    #[arg(long)]
    pub internal: bool,
    /// Driver to manage the Network (bridge).
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Set metadata on a network (k=v).
    #[arg(long)]
    pub label: Vec<String>,
    pub name: String,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only display network IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Provide filter values (name=, id=, driver=).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Format the output using a Go template.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Format the output using a Go template.
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Do not error if the network does not exist.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// Add network-scoped alias for the container.
    #[arg(long)]
    pub alias: Vec<String>,
    /// IPv4 address.
    #[arg(long)]
    pub ip: Option<String>,
    pub network: String,
    pub container: String,
}

#[derive(Args)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network.
    #[arg(short, long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

#[derive(Args)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub port: Option<String>,
}

pub async fn network(c: &Client, cmd: NetworkCommand) -> CliResult {
    match cmd {
        NetworkCommand::Create(a) => {
            let mut labels = std::collections::HashMap::new();
            for l in &a.label {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                labels.insert(k.to_owned(), v.to_owned());
            }
            let r = networks(c)
                .create(c.req(NetworkCreateRequest {
                    name: a.name,
                    subnet: a.subnet.unwrap_or_default(),
                    gateway: a.gateway.unwrap_or_default(),
                    internal: a.internal,
                    labels,
                    driver: a.driver,
                }))
                .await?
                .into_inner();
            println!("{}", r.id);
        }
        NetworkCommand::Ls(a) => {
            let list = networks(c)
                .list(c.req(NetworkListRequest { filters: a.filter }))
                .await?
                .into_inner()
                .networks;
            let short = |id: &str| {
                if a.no_trunc {
                    id.to_owned()
                } else {
                    id.chars().take(12).collect()
                }
            };
            if a.quiet {
                for n in &list {
                    println!("{}", short(&n.id));
                }
            } else if let Some(f) = &a.format {
                let t = Template::parse(&template::unescape(f))?;
                for n in &list {
                    let v = serde_json::json!({"ID": short(&n.id), "Name": n.name,
                        "Driver": n.driver, "Scope": n.scope, "Internal": n.internal.to_string()});
                    println!("{}", t.render(&v)?);
                }
            } else {
                let mut lines = vec!["NETWORK ID\tNAME\tDRIVER\tSCOPE".to_owned()];
                for n in &list {
                    lines.push(format!(
                        "{}\t{}\t{}\t{}",
                        short(&n.id),
                        n.name,
                        n.driver,
                        n.scope
                    ));
                }
                print_tabbed(&lines);
            }
        }
        NetworkCommand::Inspect(a) => {
            let tpl = a
                .format
                .as_deref()
                .map(|f| Template::parse(&template::unescape(f)))
                .transpose()?;
            let mut docs = Vec::new();
            let mut err = None;
            for n in &a.names {
                match networks(c)
                    .inspect(c.req(NetworkRef { id: n.clone() }))
                    .await
                {
                    Ok(d) => docs.push(
                        serde_json::from_str::<Value>(&d.into_inner().json).unwrap_or(Value::Null),
                    ),
                    Err(s) => {
                        if let Some(e) = err.replace(Failure::from(s)) {
                            eprintln!("{}", e.msg);
                        }
                    }
                }
            }
            match &tpl {
                Some(t) => {
                    for d in &docs {
                        println!("{}", t.render(d)?);
                    }
                }
                None => println!("{}", output::pretty_json(&Value::Array(docs))),
            }
            if let Some(e) = err {
                return Err(e);
            }
        }
        NetworkCommand::Rm(a) => {
            let mut err = None;
            for n in &a.names {
                match networks(c)
                    .remove(c.req(NetworkRef { id: n.clone() }))
                    .await
                {
                    Ok(_) => println!("{n}"),
                    Err(s) if a.force && s.code() == tonic::Code::NotFound => {}
                    Err(s) => {
                        if let Some(e) = err.replace(Failure::from(s)) {
                            eprintln!("{}", e.msg);
                        }
                    }
                }
            }
            if let Some(e) = err {
                return Err(e);
            }
        }
        NetworkCommand::Prune(a) => {
            if !a.force
                && !output::confirm(
                    "WARNING! This will remove all custom networks not used by at least one container.",
                )?
            {
                return Ok(());
            }
            let r = networks(c)
                .prune(c.req(NetworkPruneRequest {}))
                .await?
                .into_inner();
            if !r.deleted.is_empty() {
                println!("Deleted Networks:");
                for n in r.deleted {
                    println!("{n}");
                }
            }
        }
        NetworkCommand::Connect(a) => {
            networks(c)
                .connect(c.req(NetworkConnectRequest {
                    network: a.network,
                    container: a.container,
                    aliases: a.alias,
                    ip: a.ip.unwrap_or_default(),
                    force: false,
                }))
                .await?;
        }
        NetworkCommand::Disconnect(a) => {
            networks(c)
                .disconnect(c.req(NetworkConnectRequest {
                    network: a.network,
                    container: a.container,
                    aliases: Vec::new(),
                    ip: String::new(),
                    force: a.force,
                }))
                .await?;
        }
    }
    Ok(())
}

/// `berth port CONTAINER [PRIVATE_PORT[/PROTO]]`: Docker's `80/tcp -> 0.0.0.0:32768` lines.
pub async fn port(c: &Client, a: PortArgs) -> CliResult {
    let doc = c
        .containers()
        .inspect(c.req(ContainerRef {
            id: a.container.clone(),
        }))
        .await?
        .into_inner()
        .json;
    let v: Value = serde_json::from_str(&doc).unwrap_or(Value::Null);
    let want = a.port.as_ref().map(|p| {
        if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut found = false;
    if let Some(ports) = v["NetworkSettings"]["Ports"].as_object() {
        let mut keys: Vec<&String> = ports.keys().collect();
        keys.sort_by_key(|k| {
            k.split('/')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0)
        });
        for k in keys {
            if want.as_ref().is_some_and(|w| w != k) {
                continue;
            }
            for b in ports[k].as_array().into_iter().flatten() {
                let ip = b["HostIp"].as_str().unwrap_or_default();
                let port = b["HostPort"].as_str().unwrap_or_default();
                found = true;
                if want.is_some() {
                    println!("{ip}:{port}");
                } else {
                    println!("{k} -> {ip}:{port}");
                }
            }
        }
    }
    if let (Some(w), false) = (&want, found) {
        return Err(bad(format!(
            "No public port '{w}' published for {}",
            a.container
        )));
    }
    Ok(())
}
