//! Docker-shaped views of a container: `inspect` JSON and `ps` rows, and `ps` filters.

use berth_api::v1::{ContainerConfig, ContainerSummary};
use serde_json::{Value, json};

use crate::container::Container;
use crate::record::{Record, Status, now_nanos, rfc3339};

/// Docker's "Up 3 seconds" / "Exited (0) 2 minutes ago" / "Created".
pub(crate) fn status_text(r: &Record) -> String {
    let now = now_nanos();
    match r.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", human_duration(now - r.started_at)),
        Status::Paused => format!("Up {} (Paused)", human_duration(now - r.started_at)),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            r.exit_code,
            human_duration(now - r.finished_at)
        ),
        Status::Removing => "Removal In Progress".into(),
        Status::Exited | Status::Dead if r.started_at == 0 && r.finished_at == 0 => {
            "Created".into()
        }
        Status::Exited => format!(
            "Exited ({}) {} ago",
            r.exit_code,
            human_duration(now - r.finished_at)
        ),
        Status::Dead => "Dead".into(),
    }
}

/// go-units' HumanDuration.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
pub(crate) fn human_duration(nanos: i64) -> String {
    let secs = nanos.max(0) / 1_000_000_000;
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if secs / 60 == 1 {
        "About a minute".into()
    } else if secs / 60 < 60 {
        format!("{} minutes", secs / 60)
    } else if (secs as f64 / 3600.0).round() as i64 == 1 {
        "About an hour".into()
    } else if secs / 3600 < 48 {
        format!("{} hours", (secs as f64 / 3600.0).round() as i64)
    } else if secs / 3600 < 24 * 7 * 2 {
        plural(secs / 86_400, "day")
    } else if secs / 3600 < 24 * 30 * 2 {
        plural(secs / (86_400 * 7), "week")
    } else if secs / 3600 < 24 * 365 * 2 {
        plural(secs / (86_400 * 30), "month")
    } else {
        plural(secs / (86_400 * 365), "year")
    }
}

/// Docker's quoting of the command column: args joined by spaces.
fn command(r: &Record) -> String {
    let mut parts = vec![r.path.clone()];
    parts.extend(r.args.iter().cloned());
    parts.join(" ")
}

fn network_name(conf: &ContainerConfig) -> &str {
    match conf.network_mode.as_str() {
        "host" => "host",
        _ => "none",
    }
}

pub(crate) fn summary(c: &Container) -> (ContainerSummary, Record) {
    let m = c.lock();
    let r = &m.rec;
    let conf = r.config();
    let s = ContainerSummary {
        id: r.id.clone(),
        names: vec![r.name.clone()],
        image: r.image.clone(),
        image_id: r.image_id.clone(),
        command: command(r),
        created_unix: r.created / 1_000_000_000,
        state: if r.status == Status::Exited && r.started_at == 0 {
            "created".into()
        } else {
            r.status.as_str().into()
        },
        status: status_text(r),
        labels: conf.labels.clone().into_iter().collect(),
        exit_code: r.exit_code,
        pid: r.pid,
        mounts: conf.mounts.iter().map(|m| m.source.clone()).collect(),
        networks: network_name(&conf).into(),
        ports: String::new(),
    };
    (s, r.clone())
}

/// Whether a container matches every `ps --filter` (same keys OR, different keys AND).
pub(crate) fn matches(
    s: &ContainerSummary,
    r: &Record,
    filters: &[(String, String)],
    created_of: &dyn Fn(&str) -> Option<i64>,
) -> bool {
    use std::collections::BTreeMap;
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in filters {
        by_key.entry(k.as_str()).or_default().push(v.as_str());
    }
    by_key.iter().all(|(k, vals)| {
        vals.iter().any(|v| match *k {
            "id" => s.id.starts_with(v),
            "name" => s.names.iter().any(|n| n.contains(v)),
            "label" => match v.split_once('=') {
                Some((lk, lv)) => s.labels.get(lk).is_some_and(|x| x == lv),
                None => s.labels.contains_key(*v),
            },
            "status" => s.state == *v,
            "exited" => s.state == "exited" && v.parse::<i32>().is_ok_and(|n| n == s.exit_code),
            "ancestor" => {
                r.image == *v
                    || r.image_ref == *v
                    || r.image_id == *v
                    || r.image_id.trim_start_matches("sha256:").starts_with(v)
                    || berth_image::familiar_name(&r.image_ref) == *v
                    || berth_image::familiar_name(&r.image_ref) == format!("{v}:latest")
            }
            "before" => created_of(v).is_some_and(|t| r.created < t),
            "since" => created_of(v).is_some_and(|t| r.created > t),
            "network" => s.networks == *v,
            _ => false,
        })
    })
}

pub(crate) fn inspect(c: &Container, dir: &std::path::Path) -> Value {
    let m = c.lock();
    let r = &m.rec;
    let conf = r.config();
    let st = r.status;
    let restart = conf.restart.clone().unwrap_or_default();
    let log = conf.log.clone().unwrap_or_default();
    let mounts: Vec<Value> = if !r.mount_points.is_empty() {
        r.mount_points
            .iter()
            .map(crate::volumes::MountPoint::to_docker)
            .collect()
    } else {
        conf.mounts
            .iter()
            .map(|mt| {
                json!({
                    "Type": mt.r#type,
                    "Source": mt.source,
                    "Destination": mt.target,
                    "Mode": if mt.read_only { "ro" } else { "" },
                    "RW": !mt.read_only,
                    "Propagation": "rprivate",
                })
            })
            .collect()
    };
    let net = network_name(&conf);
    let etc = |f: &str| dir.join(f).to_string_lossy().into_owned();
    json!({
        "Id": r.id,
        "Created": rfc3339(r.created),
        "Path": r.path,
        "Args": r.args,
        "State": {
            "Status": if st == Status::Exited && r.started_at == 0 { "created" } else { st.as_str() },
            "Running": matches!(st, Status::Running | Status::Paused | Status::Restarting),
            "Paused": st == Status::Paused,
            "Restarting": st == Status::Restarting,
            "OOMKilled": r.oom_killed,
            "Dead": st == Status::Dead,
            "Pid": r.pid,
            "ExitCode": r.exit_code,
            "Error": r.error,
            "StartedAt": rfc3339(r.started_at),
            "FinishedAt": rfc3339(r.finished_at),
        },
        "Image": r.image_id,
        "ResolvConfPath": etc("resolv.conf"),
        "HostnamePath": etc("hostname"),
        "HostsPath": etc("hosts"),
        "LogPath": r.log_path.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
        "Name": format!("/{}", r.name),
        "RestartCount": r.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "Namespace": r.namespace,
        "HostConfig": {
            "NetworkMode": if conf.network_mode.is_empty() { "none" } else { conf.network_mode.as_str() },
            "RestartPolicy": {
                "Name": if restart.name.is_empty() { "no" } else { restart.name.as_str() },
                "MaximumRetryCount": restart.maximum_retry_count,
            },
            "AutoRemove": conf.auto_remove,
            "LogConfig": {
                "Type": r.log_driver,
                "Config": log.options,
            },
            "Runtime": r.runtime_name,
            "Privileged": conf.privileged,
            "ReadonlyRootfs": conf.read_only,
            "CapAdd": conf.cap_add,
            "CapDrop": conf.cap_drop,
            "SecurityOpt": conf.security_opt,
            "Memory": conf.memory,
            "MemorySwap": conf.memory_swap,
            "NanoCpus": conf.nano_cpus,
            "PidsLimit": if conf.pids_limit == 0 { Value::Null } else { json!(conf.pids_limit) },
            "Ulimits": conf.ulimits.iter().map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard})).collect::<Vec<_>>(),
            "Init": conf.init,
            "Dns": conf.dns,
            "ExtraHosts": conf.extra_hosts,
            "Tmpfs": tmpfs_map(&conf.tmpfs),
            "Binds": conf.mounts.iter().filter(|m| m.r#type == "bind").map(|m| {
                if m.read_only { format!("{}:{}:ro", m.source, m.target) } else { format!("{}:{}", m.source, m.target) }
            }).collect::<Vec<_>>(),
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": r.hostname,
            "Domainname": "",
            "User": r.user,
            "AttachStdin": conf.open_stdin,
            "Tty": conf.tty,
            "OpenStdin": conf.open_stdin,
            "StdinOnce": conf.stdin_once,
            "Env": r.env,
            "Cmd": if conf.cmd.is_empty() { Value::Null } else { json!(conf.cmd) },
            "Entrypoint": if conf.entrypoint.is_empty() { Value::Null } else { json!(conf.entrypoint) },
            "Image": r.image,
            "WorkingDir": r.working_dir,
            "Labels": conf.labels,
            "StopSignal": signal_name(r.stop_signal),
            "StopTimeout": conf.stop_timeout,
        },
        "NetworkSettings": {
            "IPAddress": "",
            "Gateway": "",
            "MacAddress": "",
            "Ports": {},
            "Networks": { net: {
                "IPAddress": "",
                "Gateway": "",
                "MacAddress": "",
                "NetworkID": net,
            }},
        },
    })
}

/// `SIGTERM` for 15 and so on (the common ones); the number otherwise.
/// Docker's `HostConfig.Tmpfs`: `{"/path": "options"}` (null when there are none).
fn tmpfs_map(tmpfs: &[String]) -> Value {
    if tmpfs.is_empty() {
        return Value::Null;
    }
    let m: serde_json::Map<String, Value> = tmpfs
        .iter()
        .map(|t| {
            let (path, opts) = t.split_once(':').unwrap_or((t, ""));
            (path.to_owned(), json!(opts))
        })
        .collect();
    Value::Object(m)
}

pub(crate) fn signal_name(n: i32) -> String {
    let name = match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        12 => "SIGUSR2",
        15 => "SIGTERM",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        28 => "SIGWINCH",
        37 => "SIGRTMIN+3",
        _ => return n.to_string(),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        let s = 1_000_000_000;
        assert_eq!(super::human_duration(0), "Less than a second");
        assert_eq!(super::human_duration(3 * s), "3 seconds");
        assert_eq!(super::human_duration(90 * s), "About a minute");
        assert_eq!(super::human_duration(600 * s), "10 minutes");
        assert_eq!(super::human_duration(3 * 86_400 * s), "3 days");
    }
}
