//! System verbs: version, info, system df, system prune, events.

use std::io::Write;

use berth_api::v1::{DfRequest, EventsRequest, InfoRequest, SystemPruneRequest, VersionRequest};
use serde_json::{Value, json};

use crate::client::Client;
use crate::containers::{parse_time, print_formatted};
use crate::output::{self, human_size};
use crate::template::{self, Template};
use crate::{CliResult, EventsArgs, FormatArgs, SystemPruneArgs};

fn client_version() -> Value {
    json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": berth_api::API_VERSION,
        "Os": std::env::consts::OS,
        "Arch": match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        },
    })
}

pub async fn version(c: &Client, a: FormatArgs) -> CliResult {
    let client = client_version();
    let server = match c.system().version(c.req(VersionRequest {})).await {
        Ok(v) => {
            let v = v.into_inner();
            Some(json!({
                "Version": v.version,
                "ApiVersion": v.api_version,
                "GitCommit": v.git_commit,
                "Os": v.os,
                "Arch": v.arch,
                "KernelVersion": v.kernel_version,
                "DefaultRuntime": v.default_runtime,
            }))
        }
        Err(s) => {
            if a.format.is_none() {
                print_client(&client);
            }
            return Err(s.into());
        }
    };
    let doc = json!({"Client": client, "Server": server});
    if let Some(f) = &a.format {
        if f == "json" {
            println!("{}", serde_json::to_string(&doc)?);
        } else {
            println!("{}", template::render(&template::unescape(f), &doc)?);
        }
        return Ok(());
    }
    print_client(&doc["Client"]);
    let s = &doc["Server"];
    println!();
    println!("Server: Berth Engine");
    println!(" Engine:");
    println!(
        "  Version:          {}",
        s["Version"].as_str().unwrap_or("")
    );
    println!(
        "  API version:      {}",
        s["ApiVersion"].as_str().unwrap_or("")
    );
    println!(
        "  Git commit:       {}",
        s["GitCommit"].as_str().unwrap_or("")
    );
    println!(
        "  OS/Arch:          {}/{}",
        s["Os"].as_str().unwrap_or(""),
        s["Arch"].as_str().unwrap_or("")
    );
    println!(
        "  Kernel:           {}",
        s["KernelVersion"].as_str().unwrap_or("")
    );
    println!(
        "  Default runtime:  {}",
        s["DefaultRuntime"].as_str().unwrap_or("")
    );
    Ok(())
}

fn print_client(c: &Value) {
    println!("Client:");
    println!(
        " Version:           {}",
        c["Version"].as_str().unwrap_or("")
    );
    println!(
        " API version:       {}",
        c["ApiVersion"].as_str().unwrap_or("")
    );
    println!(
        " OS/Arch:           {}/{}",
        c["Os"].as_str().unwrap_or(""),
        c["Arch"].as_str().unwrap_or("")
    );
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => template::go_string(other),
    }
}

pub async fn info(c: &Client, a: FormatArgs) -> CliResult {
    let doc = c.system().info(c.req(InfoRequest {})).await?.into_inner();
    let v: Value = serde_json::from_str(&doc.json)?;
    if let Some(f) = &a.format {
        if f == "json" {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            println!("{}", template::render(&template::unescape(f), &v)?);
        }
        return Ok(());
    }
    let cv = client_version();
    println!("Client:");
    println!(" Version:    {}", cv["Version"].as_str().unwrap_or(""));
    println!();
    println!("Server:");
    let known: &[(&str, &str)] = &[
        ("Containers", "Containers"),
        ("ContainersRunning", " Running"),
        ("ContainersPaused", " Paused"),
        ("ContainersStopped", " Stopped"),
        ("Images", "Images"),
        ("ServerVersion", "Server Version"),
        ("Driver", "Storage Driver"),
        ("LoggingDriver", "Logging Driver"),
        ("CgroupDriver", "Cgroup Driver"),
        ("CgroupVersion", "Cgroup Version"),
        ("DefaultRuntime", "Default Runtime"),
        ("KernelVersion", "Kernel Version"),
        ("OperatingSystem", "Operating System"),
        ("OSType", "OSType"),
        ("Architecture", "Architecture"),
        ("NCPU", "CPUs"),
        ("MemTotal", "Total Memory"),
        ("Name", "Name"),
        ("ID", "ID"),
        ("DockerRootDir", "Berth Root Dir"),
        ("BerthRootDir", "Berth Root Dir"),
        ("Debug", "Debug Mode"),
    ];
    let obj = v.as_object().cloned().unwrap_or_default();
    for (key, label) in known {
        if let Some(x) = obj.get(*key) {
            let shown = if *key == "MemTotal" {
                x.as_u64().map_or_else(|| scalar(x), output::bytes_size)
            } else {
                scalar(x)
            };
            println!(" {label}: {shown}");
        }
    }
    if let Some(r) = obj.get("Runtimes").and_then(Value::as_object) {
        let mut names: Vec<&String> = r.keys().collect();
        names.sort();
        println!(
            " Runtimes: {}",
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    for (k, x) in &obj {
        if known.iter().any(|(kk, _)| kk == k) || k == "Runtimes" {
            continue;
        }
        match x {
            Value::Object(_) | Value::Array(_) => println!(" {k}: {}", serde_json::to_string(x)?),
            other => println!(" {k}: {}", scalar(other)),
        }
    }
    Ok(())
}

pub async fn df(c: &Client, a: FormatArgs) -> CliResult {
    let r = c.system().df(c.req(DfRequest {})).await?.into_inner();
    let rows: Vec<Value> = r
        .rows
        .iter()
        .map(|row| {
            let size = u64::try_from(row.size).unwrap_or(0);
            let recl = u64::try_from(row.reclaimable).unwrap_or(0);
            #[allow(clippy::cast_precision_loss)] // a display percentage
            let pct = if size > 0 {
                (recl as f64 / size as f64 * 100.0).round()
            } else {
                0.0
            };
            json!({
                "Type": row.kind,
                "TotalCount": row.total.to_string(),
                "Active": row.active.to_string(),
                "Size": human_size(size),
                "Reclaimable": if size > 0 { format!("{} ({pct}%)", human_size(recl)) } else { human_size(recl) },
            })
        })
        .collect();
    let headers = json!({
        "Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
        "Reclaimable": "RECLAIMABLE",
    });
    print_formatted(
        &rows,
        a.format.as_deref(),
        "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
        &headers,
    )
}

pub async fn prune(c: &Client, sa: SystemPruneArgs) -> CliResult {
    let a = &sa.base;
    let images = if a.all {
        "  - all images without at least one container associated to them"
    } else {
        "  - all dangling images"
    };
    if !a.force
        && !output::confirm(&format!(
            "WARNING! This will remove:\n  - all stopped containers\n{}{images}",
            if sa.volumes {
                "  - all anonymous volumes not used by at least one container\n"
            } else {
                ""
            }
        ))?
    {
        return Ok(());
    }
    let r = c
        .system()
        .prune(c.req(SystemPruneRequest {
            all: a.all,
            volumes: sa.volumes,
        }))
        .await?
        .into_inner();
    crate::output::print_deleted("Containers", &r.containers_deleted);
    crate::output::print_deleted("Volumes", &r.volumes_deleted);
    crate::output::print_deleted("Images", &r.images_deleted);
    crate::output::print_reclaimed(r.space_reclaimed);
    Ok(())
}

fn event_json(e: &berth_api::v1::Event) -> Value {
    let secs = e.time_unix_nanos.div_euclid(1_000_000_000);
    json!({
        "Type": e.r#type,
        "Action": e.action,
        "Status": e.action,
        "ID": e.id,
        "id": e.id,
        "From": e.attributes.get("image").cloned().unwrap_or_default(),
        "Actor": {"ID": e.id, "Attributes": e.attributes},
        "Scope": "local",
        "Namespace": e.namespace,
        "time": secs,
        "Time": secs,
        "timeNano": e.time_unix_nanos,
        "TimeNano": e.time_unix_nanos,
    })
}

pub async fn events(c: &Client, a: EventsArgs) -> CliResult {
    let since = a.since.as_deref().map(parse_time).transpose()?.unwrap_or(0);
    let until = a.until.as_deref().map(parse_time).transpose()?.unwrap_or(0);
    let tpl = match a.format.as_deref() {
        None | Some("json") => None,
        Some(f) => Some(Template::parse(&template::unescape(f))?),
    };
    let mut stream = c
        .system()
        .events(c.req(EventsRequest {
            filters: a.filter.clone(),
            since_unix_nanos: since,
            until_unix_nanos: until,
        }))
        .await?
        .into_inner();
    while let Some(e) = stream.message().await? {
        let line = if a.format.as_deref() == Some("json") {
            serde_json::to_string(&event_json(&e))?
        } else if let Some(t) = &tpl {
            t.render(&event_json(&e))?
        } else {
            let mut attrs: Vec<String> = e
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            attrs.sort();
            format!(
                "{} {} {} {} ({})",
                crate::containers::rfc3339_nanos(e.time_unix_nanos),
                e.r#type,
                e.action,
                e.id,
                attrs.join(", ")
            )
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}
