//! The CNI protocol (spec 1.0): run one plugin binary with the command in its environment and
//! its network configuration on stdin; parse its result or its error document.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::Error;

/// What every plugin of one invocation shares.
pub(crate) struct Invocation<'a> {
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub plugin_dirs: &'a [PathBuf],
}

/// The plugin binary called `typ` in the first directory that has it.
pub(crate) fn find_plugin(dirs: &[PathBuf], typ: &str) -> Result<PathBuf, Error> {
    if typ.is_empty() || typ.contains('/') {
        return Err(Error::Plugin {
            plugin: typ.to_owned(),
            message: "invalid plugin type".into(),
        });
    }
    dirs.iter()
        .map(|d| d.join(typ))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::PluginMissing {
            plugin: typ.to_owned(),
            dirs: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Run `command` (ADD, DEL, CHECK) of the plugin `conf["type"]` with `conf` on stdin; the
/// result document for ADD, `Value::Null` otherwise.
pub(crate) fn exec(inv: &Invocation, command: &str, conf: &Value) -> Result<Value, Error> {
    let typ = conf["type"].as_str().unwrap_or_default().to_owned();
    let bin = find_plugin(inv.plugin_dirs, &typ)?;
    let path = std::env::join_paths(inv.plugin_dirs).unwrap_or_default();
    let input = serde_json::to_vec(conf).unwrap_or_default();
    let started = std::time::Instant::now();
    let mut child = Command::new(&bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_PATH", &path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Plugin {
            plugin: typ.clone(),
            message: format!("cannot run {}: {e}", bin.display()),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading its config still reports its own error below.
        let _ = stdin.write_all(&input);
    }
    let out = child.wait_with_output().map_err(|e| Error::Plugin {
        plugin: typ.clone(),
        message: format!("cannot wait for {}: {e}", bin.display()),
    })?;
    tracing::debug!(
        "CNI {command} {typ} for {}: {:.1} ms",
        inv.container_id,
        started.elapsed().as_secs_f64() * 1e3
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        // CNI's error document: {"code": N, "msg": "...", "details": "..."}.
        let mut message = doc["msg"].as_str().unwrap_or_default().to_owned();
        if let Some(d) = doc["details"].as_str().filter(|d| !d.is_empty()) {
            message = format!("{message}: {d}");
        }
        if message.is_empty() {
            message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        }
        if message.is_empty() {
            message = format!("exited with {}", out.status);
        }
        return Err(Error::Plugin {
            plugin: typ,
            message: message.replace('\n', " "),
        });
    }
    if command == "ADD" && doc.is_null() {
        return Err(Error::Plugin {
            plugin: typ,
            message: "ADD printed no result".into(),
        });
    }
    Ok(doc)
}

/// The network configuration a plugin of a chain gets: its own entry plus the conflist's
/// `cniVersion` and `name`, the previous result and the runtime config it asked for.
pub(crate) fn plugin_conf(
    list: &Value,
    plugin: &Value,
    prev: Option<&Value>,
    runtime: &Value,
) -> Value {
    let mut conf = plugin.clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    if let Some(caps) = plugin["capabilities"].as_object() {
        let mut rc = serde_json::Map::new();
        for (k, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = runtime.get(k) {
                    rc.insert(k.clone(), v.clone());
                }
            }
        }
        if !rc.is_empty() {
            conf["runtimeConfig"] = Value::Object(rc);
        }
    }
    conf
}

/// ADD through the chain, each plugin getting the previous one's result. On a failure the
/// chain is deleted again (best effort) so nothing stays half configured.
pub(crate) fn add_list(inv: &Invocation, list: &Value, runtime: &Value) -> Result<Value, Error> {
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    let mut prev: Option<Value> = None;
    for p in &plugins {
        let conf = plugin_conf(list, p, prev.as_ref(), runtime);
        match exec(inv, "ADD", &conf) {
            Ok(r) => prev = Some(r),
            Err(e) => {
                if let Err(d) = del_list(inv, list, prev.as_ref(), runtime) {
                    tracing::warn!("undo of a failed CNI ADD: {d}");
                }
                return Err(e);
            }
        }
    }
    Ok(prev.unwrap_or(Value::Null))
}

/// DEL through the chain in reverse, every plugin tried; the first error is returned.
pub(crate) fn del_list(
    inv: &Invocation,
    list: &Value,
    prev: Option<&Value>,
    runtime: &Value,
) -> Result<(), Error> {
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    let mut first = None;
    for p in plugins.iter().rev() {
        let conf = plugin_conf(list, p, prev, runtime);
        if let Err(e) = exec(inv, "DEL", &conf) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plugin_conf_injects_only_declared_capabilities() {
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": []});
        let p = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let rt = json!({"portMappings": [{"hostPort": 1}], "ips": ["1.2.3.4/24"]});
        let c = plugin_conf(&list, &p, Some(&json!({"x": 1})), &rt);
        assert_eq!(c["name"], "n");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["prevResult"]["x"], 1);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 1);
        assert!(c["runtimeConfig"].get("ips").is_none());
    }

    #[test]
    fn missing_plugin_names_the_dirs() {
        let e = find_plugin(&[PathBuf::from("/nonexistent")], "bridge").unwrap_err();
        assert!(e.to_string().contains("/nonexistent"), "{e}");
        assert!(e.to_string().contains("bridge"), "{e}");
    }

    #[test]
    fn failing_plugin_reports_its_message() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bad");
        std::fs::write(
            &p,
            "#!/bin/sh\necho '{\"code\":7,\"msg\":\"boom\",\"details\":\"why\"}'\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dirs = [d.path().to_owned()];
        let inv = Invocation {
            container_id: "c",
            netns: Path::new("/nonexistent"),
            ifname: "eth0",
            plugin_dirs: &dirs,
        };
        let e = exec(&inv, "ADD", &json!({"type": "bad"})).unwrap_err();
        assert_eq!(e.to_string(), "CNI plugin bad failed: boom: why");
    }
}
