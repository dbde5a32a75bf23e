//! Credentials in docker-compatible `config.json` files, and `WWW-Authenticate` challenges.
//!
//! A file looks like `{"auths": {"<registry>": {"auth": base64("user:password")}}}`; Docker
//! Hub's key is `https://index.docker.io/v1/`. Keys are compared after normalisation (scheme
//! and path dropped, Docker Hub's aliases folded into `docker.io`), so entries written by
//! Docker, Podman or skopeo are found. Credential helpers (`credsStore`, `credHelpers`) are
//! not run.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::Error;
use crate::reference::DOCKER_HUB;

/// The key Docker uses for Docker Hub in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// The credential files Berth reads, in order: its own (`$BERTH_AUTH_FILE`, else
/// `$XDG_CONFIG_HOME/berth/config.json`, else `~/.config/berth/config.json`), then Docker's
/// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`). The first is where
/// `berth login` writes.
pub fn default_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut files = Vec::new();
    if let Some(f) = env("BERTH_AUTH_FILE") {
        files.push(f);
    } else if let Some(x) = env("XDG_CONFIG_HOME") {
        files.push(x.join("berth/config.json"));
    } else if let Some(h) = &home {
        files.push(h.join(".config/berth/config.json"));
    }
    if let Some(d) = env("DOCKER_CONFIG") {
        files.push(d.join("config.json"));
    } else if let Some(h) = &home {
        files.push(h.join(".docker/config.json"));
    }
    files
}

/// The registry a `config.json` key (or a user's `berth login` argument) designates:
/// scheme and path dropped, Docker Hub's aliases folded into `docker.io`.
pub fn normalize_registry(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        h => h.to_string(),
    }
}

fn read_json(file: &Path) -> Result<Option<Map<String, Value>>, Error> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read credentials file", file, e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(Error::AuthFile {
            path: file.to_path_buf(),
            reason: "not a JSON object".into(),
        }),
        Err(e) => Err(Error::AuthFile {
            path: file.to_path_buf(),
            reason: format!("invalid JSON: {e}"),
        }),
    }
}

fn decode_entry(file: &Path, key: &str, v: &Value) -> Result<Option<(String, String)>, Error> {
    if let Some(a) = v
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let bad = |why: &str| Error::AuthFile {
            path: file.to_path_buf(),
            reason: format!("auths.{key:?}.auth {why}"),
        };
        let raw = STANDARD
            .decode(a.trim())
            .map_err(|_| bad("is not valid base64"))?;
        let s = String::from_utf8(raw).map_err(|_| bad("is not UTF-8"))?;
        let (u, p) = s
            .split_once(':')
            .ok_or_else(|| bad("does not decode to user:password"))?;
        return Ok(Some((u.to_string(), p.to_string())));
    }
    let user = v.get("username").and_then(Value::as_str);
    let pass = v.get("password").and_then(Value::as_str);
    match (user, pass) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some((u.to_string(), p.to_string()))),
        _ => Ok(None),
    }
}

/// The first credentials for `registry` found in `files` (in order); missing files are
/// skipped, malformed ones are an error.
pub fn lookup(files: &[PathBuf], registry: &str) -> Result<Option<(String, String)>, Error> {
    lookup_with(files, registry, |file| Ok(read_json(file)?.map(Arc::new)))
}

fn lookup_with(
    files: &[PathBuf],
    registry: &str,
    mut read: impl FnMut(&Path) -> Result<Option<Arc<Map<String, Value>>>, Error>,
) -> Result<Option<(String, String)>, Error> {
    let want = normalize_registry(registry);
    for file in files {
        let Some(json) = read(file)? else {
            continue;
        };
        let Some(auths) = json.get("auths").and_then(Value::as_object) else {
            continue;
        };
        // An exact key wins over an equivalent one.
        let mut keys: Vec<&String> = auths.keys().collect();
        keys.sort_by_key(|k| k.as_str() != registry);
        for key in keys {
            if normalize_registry(key) == want {
                if let Some(c) = decode_entry(file, key, &auths[key.as_str()])? {
                    return Ok(Some(c));
                }
            }
        }
    }
    Ok(None)
}

/// What identifies a version of a credentials file without reading it: device, inode (an
/// atomic replace, as [`store`] and Docker do, changes it), size, and modification and
/// status-change times to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Credential files read through a cache that is checked against each file's metadata on
/// every lookup: a file is parsed again as soon as it changes (a `berth login` or `berth
/// logout` by another process), and a missing file is looked for again every time. Only
/// parsed contents are kept, never a lookup's answer, so "no credentials" is not remembered
/// either.
#[derive(Debug, Default)]
pub(crate) struct FileCache {
    files: HashMap<PathBuf, (Stamp, Arc<Map<String, Value>>)>,
}

impl FileCache {
    /// As [`lookup`], re-reading only the files that changed since the last call.
    pub(crate) fn lookup(
        &mut self,
        files: &[PathBuf],
        registry: &str,
    ) -> Result<Option<(String, String)>, Error> {
        lookup_with(files, registry, |file| self.read(file))
    }

    fn read(&mut self, file: &Path) -> Result<Option<Arc<Map<String, Value>>>, Error> {
        let stamp = match std::fs::metadata(file) {
            Ok(m) => Stamp::of(&m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.files.remove(file);
                return Ok(None);
            }
            Err(e) => {
                self.files.remove(file);
                return Err(Error::io("read credentials file", file, e));
            }
        };
        if let Some((s, json)) = self.files.get(file) {
            if *s == stamp {
                return Ok(Some(json.clone()));
            }
        }
        // Stamped before reading: a change in between makes the next call read again.
        match read_json(file) {
            Ok(Some(json)) => {
                let json = Arc::new(json);
                self.files.insert(file.to_path_buf(), (stamp, json.clone()));
                Ok(Some(json))
            }
            other => {
                self.files.remove(file);
                Ok(other?.map(Arc::new))
            }
        }
    }
}

/// Record credentials for `registry` in `file` (created 0600, parent directories 0700),
/// keeping every other key in it; replaces entries for the same registry under other
/// spellings. The file is replaced atomically.
pub fn store(file: &Path, registry: &str, user: &str, password: &str) -> Result<(), Error> {
    if user.contains(':') {
        return Err(Error::AuthFile {
            path: file.to_path_buf(),
            reason: format!("user name {user:?} contains ':', which config.json cannot store"),
        });
    }
    let mut json = read_json(file)?.unwrap_or_default();
    let want = normalize_registry(registry);
    let auths = json
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(Error::AuthFile {
            path: file.to_path_buf(),
            reason: "\"auths\" is not an object".into(),
        });
    };
    auths.retain(|k, _| normalize_registry(k) != want);
    let key = if want == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        want
    };
    let mut entry = Map::new();
    entry.insert(
        "auth".into(),
        Value::String(STANDARD.encode(format!("{user}:{password}"))),
    );
    auths.insert(key, Value::Object(entry));
    write_atomic(file, &json)
}

/// Remove the credentials for `registry` from `file`; `false` if there were none.
pub fn erase(file: &Path, registry: &str) -> Result<bool, Error> {
    let Some(mut json) = read_json(file)? else {
        return Ok(false);
    };
    let want = normalize_registry(registry);
    let Some(Value::Object(auths)) = json.get_mut("auths") else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|k, _| normalize_registry(k) != want);
    if auths.len() == before {
        return Ok(false);
    }
    write_atomic(file, &json)?;
    Ok(true)
}

fn write_atomic(file: &Path, json: &Map<String, Value>) -> Result<(), Error> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io("create directory", &dir, e))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.json".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut body =
        serde_json::to_vec_pretty(&Value::Object(json.clone())).map_err(|e| Error::AuthFile {
            path: file.to_path_buf(),
            reason: format!("encode: {e}"),
        })?;
    body.push(b'\n');
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An existing temp file keeps its old mode; make sure it is private.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write credentials file", file, e)
    })
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        error: Option<String>,
    },
}

/// Parse the challenges in `WWW-Authenticate` header values; Bearer is preferred over Basic.
pub(crate) fn parse_challenges<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for v in values {
        let v = v.trim();
        let (scheme, params) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let p = parse_params(params);
            let get = |k: &str| {
                p.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            if let Some(realm) = get("realm") {
                return Some(Challenge::Bearer {
                    realm,
                    service: get("service"),
                    scope: get("scope"),
                    error: get("error"),
                });
            }
        } else if scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(Challenge::Basic)
}

/// `k1="v1",k2=v2` with quoted strings that may contain commas and `\"`.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                val.push(n);
                            }
                        }
                        '"' => break,
                        c => val.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_string(), val.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn challenges() {
        let c = parse_challenges(
            [r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push",error="insufficient_scope""#]
                .into_iter(),
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
                error: Some("insufficient_scope".into()),
            })
        );
        assert_eq!(
            parse_challenges([r#"Basic realm="x""#].into_iter()),
            Some(Challenge::Basic)
        );
        assert!(matches!(
            parse_challenges([r#"Basic realm="x""#, "bearer realm=http://t/token"].into_iter()),
            Some(Challenge::Bearer { realm, service: None, .. }) if realm == "http://t/token"
        ));
        assert_eq!(parse_challenges(["Negotiate"].into_iter()), None);
    }

    #[test]
    fn normalisation_of_keys() {
        assert_eq!(normalize_registry(DOCKER_HUB_AUTH_KEY), "docker.io");
        assert_eq!(normalize_registry("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_registry("https://quay.io"), "quay.io");
        assert_eq!(
            normalize_registry("http://localhost:5000/v2/"),
            "localhost:5000"
        );
    }

    #[test]
    fn store_lookup_erase_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a/b/config.json");
        // Existing unrelated keys survive.
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &file,
            r#"{"auths":{"https://quay.io":{"auth":"b2xkOm9sZA=="},"other.io":{"auth":"bzpw"}},"psFormat":"table"}"#,
        )
        .expect("seed");
        store(&file, "quay.io", "alice", "p:w").expect("store");
        store(&file, "docker.io", "bob", "hub").expect("store hub");
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let files = vec![dir.path().join("missing.json"), file.clone()];
        assert_eq!(
            lookup(&files, "quay.io").expect("lookup"),
            Some(("alice".into(), "p:w".into()))
        );
        assert_eq!(
            lookup(&files, "index.docker.io").expect("lookup"),
            Some(("bob".into(), "hub".into()))
        );
        assert_eq!(
            lookup(&files, "other.io").expect("lookup"),
            Some(("o".into(), "p".into()))
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
        assert_eq!(v["psFormat"], "table");
        assert!(v["auths"][DOCKER_HUB_AUTH_KEY]["auth"].is_string());
        assert!(
            v["auths"].get("https://quay.io").is_none(),
            "old spelling replaced"
        );
        assert!(erase(&file, "quay.io").expect("erase"));
        assert!(!erase(&file, "quay.io").expect("erase again"));
        assert_eq!(lookup(&files, "quay.io").expect("lookup"), None);
        assert!(!erase(&dir.path().join("none.json"), "x").expect("erase missing file"));
        // A new file in a new directory: 0700 directory, 0600 file.
        let fresh = dir.path().join("new/config.json");
        store(&fresh, "localhost:5000", "u", "p").expect("store fresh");
        let dmode = std::fs::metadata(dir.path().join("new"))
            .expect("stat dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        // The first file in the list wins.
        let files = vec![fresh.clone(), file.clone()];
        store(&file, "localhost:5000", "later", "x").expect("store");
        assert_eq!(
            lookup(&files, "localhost:5000").expect("lookup"),
            Some(("u".into(), "p".into()))
        );
    }

    #[test]
    fn malformed_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.json");
        std::fs::write(&file, "{nope").expect("write");
        let e = lookup(std::slice::from_ref(&file), "x")
            .expect_err("bad json")
            .to_string();
        assert!(
            e.contains("config.json") && e.contains("invalid JSON"),
            "{e}"
        );
        std::fs::write(&file, r#"{"auths":{"x":{"auth":"!!"}}}"#).expect("write");
        let e = lookup(&[file], "x").expect_err("bad base64").to_string();
        assert!(e.contains("base64"), "{e}");
    }

    #[test]
    fn default_files_follow_the_environment() {
        // Read-only check of the shape; the environment is process-global, so do not set it.
        let files = default_files();
        assert!(files.len() <= 2);
        assert!(
            files.iter().all(
                |f| f.ends_with("config.json") || std::env::var_os("BERTH_AUTH_FILE").is_some()
            )
        );
    }
}
