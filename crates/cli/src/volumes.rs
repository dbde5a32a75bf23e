//! `berth volume create|ls|inspect|rm|prune`, with Docker's output and messages.

use std::collections::HashMap;

use berth_api::v1::{
    VolumeCreateRequest, VolumeListRequest, VolumePruneRequest, VolumeRef, VolumeRemoveRequest,
};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::Client;
use crate::containers::print_formatted;
use crate::output;
use crate::template::{self, Template};
use crate::{CliResult, Failure};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(InspectArgs),
    /// Remove one or more volumes (refused while a container uses them).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused anonymous volumes (with -a: every unused volume).
    Prune(PruneArgs),
}

#[derive(Args, Clone)]
pub struct CreateArgs {
    /// The volume's name (a generated one if none is given).
    pub name: Option<String>,
    /// The volume's name.
    #[arg(long = "name", conflicts_with = "name")]
    pub name_flag: Option<String>,
    /// Volume driver name.
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Driver specific options (KEY=VALUE).
    #[arg(short, long = "opt")]
    pub opt: Vec<String>,
    /// Set metadata on the volume (KEY[=VALUE]).
    #[arg(long)]
    pub label: Vec<String>,
}

#[derive(Args, Clone)]
pub struct LsArgs {
    /// Only display volume names.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output using a Go template, `table`, or `json`.
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output (dangling=true|false, name=, label=KEY[=VALUE], driver=).
    #[arg(short, long)]
    pub filter: Vec<String>,
}

#[derive(Args, Clone)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Format the output using a Go template.
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Args, Clone)]
pub struct RmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Do not fail on a volume that does not exist.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Clone)]
pub struct PruneArgs {
    /// Remove all unused volumes, not only anonymous ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (label=KEY[=VALUE], label!=KEY[=VALUE]).
    #[arg(long)]
    pub filter: Vec<String>,
}

fn key_values(
    flag: &str,
    list: &[String],
    need_value: bool,
) -> Result<HashMap<String, String>, Failure> {
    let mut out = HashMap::new();
    for s in list {
        let (k, v) = match s.split_once('=') {
            Some((k, v)) => (k, v),
            None if !need_value => (s.as_str(), ""),
            None => {
                return Err(Failure::new(format!(
                    "Error: invalid argument \"{s}\" for \"{flag}\": expected KEY=VALUE"
                )));
            }
        };
        if k.is_empty() {
            return Err(Failure::new(format!(
                "Error: invalid argument \"{s}\" for \"{flag}\": the key is empty"
            )));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

pub async fn run(c: &Client, cmd: VolumeCommand) -> CliResult {
    match cmd {
        VolumeCommand::Create(a) => create(c, a).await,
        VolumeCommand::Ls(a) => ls(c, a).await,
        VolumeCommand::Inspect(a) => inspect(c, a).await,
        VolumeCommand::Rm(a) => rm(c, a).await,
        VolumeCommand::Prune(a) => prune(c, a).await,
    }
}

async fn create(c: &Client, a: CreateArgs) -> CliResult {
    let name = a.name.or(a.name_flag).unwrap_or_default();
    let doc = c
        .volumes()
        .create(c.req(VolumeCreateRequest {
            name,
            driver: a.driver,
            options: key_values("--opt", &a.opt, true)?,
            labels: key_values("--label", &a.label, false)?,
        }))
        .await?
        .into_inner();
    let v: Value = serde_json::from_str(&doc.json)?;
    println!("{}", v["Name"].as_str().unwrap_or_default());
    Ok(())
}

async fn ls(c: &Client, a: LsArgs) -> CliResult {
    let list = c
        .volumes()
        .list(c.req(VolumeListRequest {
            filters: a.filter.clone(),
        }))
        .await?
        .into_inner()
        .volumes;
    if a.quiet {
        for v in &list {
            println!("{}", v.name);
        }
        return Ok(());
    }
    let rows: Vec<Value> = list
        .iter()
        .map(|v| {
            let mut labels: Vec<String> =
                v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect();
            labels.sort();
            json!({
                "Name": v.name,
                "Driver": v.driver,
                "Scope": "local",
                "Mountpoint": v.mountpoint,
                "Labels": labels.join(","),
                "Links": v.ref_count.to_string(),
                "Size": "N/A",
                "CreatedAt": v.created_at,
            })
        })
        .collect();
    let headers = json!({
        "Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
        "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE", "CreatedAt": "CREATED",
    });
    print_formatted(
        &rows,
        a.format.as_deref(),
        "table {{.Driver}}\t{{.Name}}",
        &headers,
    )
}

async fn inspect(c: &Client, a: InspectArgs) -> CliResult {
    let tpl = a
        .format
        .as_deref()
        .map(|f| Template::parse(&template::unescape(f)))
        .transpose()?;
    let mut docs = Vec::new();
    let mut missing = Vec::new();
    for n in &a.names {
        match c
            .volumes()
            .inspect(c.req(VolumeRef { name: n.clone() }))
            .await
        {
            Ok(d) => docs.push(serde_json::from_str::<Value>(&d.into_inner().json)?),
            Err(s) if s.code() == tonic::Code::NotFound => missing.push(Failure::from(s).msg),
            Err(s) => return Err(s.into()),
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
    last_failure(missing)
}

/// Print all but the last error; fail with the last (Docker's way with several names).
fn last_failure(mut errors: Vec<String>) -> CliResult {
    let Some(last) = errors.pop() else {
        return Ok(());
    };
    for e in errors {
        eprintln!("{e}");
    }
    Err(Failure::new(last))
}

async fn rm(c: &Client, a: RmArgs) -> CliResult {
    let mut errors = Vec::new();
    for n in &a.names {
        match c
            .volumes()
            .remove(c.req(VolumeRemoveRequest {
                name: n.clone(),
                force: a.force,
            }))
            .await
        {
            Ok(_) => println!("{n}"),
            Err(s) => errors.push(Failure::from(s).msg),
        }
    }
    last_failure(errors)
}

async fn prune(c: &Client, a: PruneArgs) -> CliResult {
    let what = if a.all {
        "all local volumes not used by at least one container"
    } else {
        "anonymous local volumes not used by at least one container"
    };
    if !a.force && !output::confirm(&format!("WARNING! This will remove {what}."))? {
        return Ok(());
    }
    let r = c
        .volumes()
        .prune(c.req(VolumePruneRequest {
            all: a.all,
            filters: a.filter.clone(),
        }))
        .await?
        .into_inner();
    crate::output::print_deleted("Volumes", &r.deleted);
    crate::output::print_reclaimed(r.space_reclaimed);
    Ok(())
}
