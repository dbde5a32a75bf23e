//! `config.toml` and its merge with the flags.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default config file.
pub const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";

/// The file's contents; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    /// `unix:///path` or a path.
    pub host: Option<String>,
    pub default_runtime: Option<String>,
    /// The `berth-shim` binary (default: next to berthd).
    pub shim: Option<PathBuf>,
    #[serde(default)]
    pub runtimes: BTreeMap<String, Runtime>,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub registry: Registry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub path: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub driver: Option<String>,
    #[serde(rename = "max-size")]
    pub max_size: Option<SizeValue>,
    #[serde(rename = "max-file")]
    pub max_file: Option<u32>,
}

/// `"10m"` or a number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    #[serde(default)]
    pub mirrors: HashMap<String, Vec<String>>,
    #[serde(default)]
    pub insecure: Vec<String>,
}

/// Errors reading the config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the config file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad config file {}: {reason}", .path.display())]
    Parse { path: PathBuf, reason: String },
}

/// Read `path`; a missing default file is an empty config, a missing explicit one an error.
pub fn load(path: &Path, explicit: bool) -> Result<File, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(File::default());
        }
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let f: File = toml::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        reason: e.to_string().trim().replace('\n', " "),
    })?;
    if let Some(SizeValue::Text(s)) = &f.log.max_size {
        if berth_engine::parse_size(s).is_none() {
            return Err(Error::Parse {
                path: path.to_path_buf(),
                reason: format!("[log] max-size = {s:?} is not a size (use e.g. \"10m\")"),
            });
        }
    }
    Ok(f)
}

/// `unix:///path` or `/path` -> the path.
pub fn socket_path(host: &str) -> Result<PathBuf, String> {
    if let Some(p) = host.strip_prefix("unix://") {
        return Ok(PathBuf::from(p));
    }
    if host.contains("://") {
        return Err(format!(
            "unsupported host {host:?}: berthd listens on unix sockets only (unix:///path)"
        ));
    }
    Ok(PathBuf::from(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let f: File = toml::from_str(
            r#"
root = "/srv/berth"
default_runtime = "runc"
[runtimes.runc]
path = "/usr/bin/runc"
[log]
driver = "json-file"
max-size = "10m"
max-file = 3
[registry]
mirrors = { "docker.io" = ["mirror.local:5000"] }
insecure = ["localhost:5000"]
"#,
        )
        .unwrap();
        assert_eq!(f.root.as_deref(), Some(Path::new("/srv/berth")));
        assert_eq!(f.runtimes["runc"].path, Path::new("/usr/bin/runc"));
        assert_eq!(f.log.max_file, Some(3));
        assert!(matches!(f.log.max_size, Some(SizeValue::Text(ref s)) if s == "10m"));
        assert_eq!(f.registry.mirrors["docker.io"], vec!["mirror.local:5000"]);
    }

    #[test]
    fn unknown_keys_are_refused_and_missing_default_is_fine() {
        assert!(toml::from_str::<File>("rooot = \"/x\"").is_err());
        let f = load(Path::new("/nonexistent/berth.toml"), false).unwrap();
        assert!(f.root.is_none());
        assert!(load(Path::new("/nonexistent/berth.toml"), true).is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            socket_path("unix:///run/x.sock").unwrap(),
            Path::new("/run/x.sock")
        );
        assert_eq!(
            socket_path("/tmp/b.sock").unwrap(),
            Path::new("/tmp/b.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:2375").is_err());
    }
}
