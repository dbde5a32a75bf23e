//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a loopback
//! port with its storage in a temporary directory, optionally behind htpasswd basic auth or
//! token auth served by a small token server in this process.
//!
//! Dropping the [`Registry`] kills the registry process, stops the token server and removes the
//! temporary directory, so a failing test leaves nothing behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::require;

/// Where Debian's `docker-registry` package installs the registry.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
/// `htpasswd` from apache2-utils (bcrypt hashes for the registry's htpasswd auth).
pub const HTPASSWD: &str = "/usr/bin/htpasswd";
/// The `service` the token-auth registry announces and expects as the token audience.
pub const TOKEN_SERVICE: &str = "berth-test-registry";
/// The issuer the token server signs as.
pub const TOKEN_ISSUER: &str = "berth-test-token-issuer";

/// How the registry authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may pull and push.
    None,
    /// htpasswd basic auth with one user.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// Bearer tokens from a token server (in this process) that checks these basic credentials.
    /// Anonymous token requests get a token granting nothing.
    Token {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

/// A running `docker-registry`; see the module documentation.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: String,
    token: Option<TokenServer>,
    data: PathBuf,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Start a registry on `127.0.0.1:<free port>` and wait until `/v2/` answers.
    ///
    /// A start that fails (most likely the port was taken between our probe and the
    /// registry's bind) is retried from scratch with a fresh port.
    pub fn start(auth: Auth) -> Registry {
        require(
            Path::new(DOCKER_REGISTRY).exists(),
            "/usr/bin/docker-registry (Debian package docker-registry)",
        );
        let mut last = String::new();
        for _ in 0..10 {
            match Registry::try_start(&auth) {
                Ok(r) => return r,
                Err(log) => last = log,
            }
        }
        panic!("docker-registry did not start after 10 attempts; last log:\n{last}");
    }

    fn try_start(auth: &Auth) -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("create registry temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("create registry data dir");

        let mut token = None;
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                require(
                    Path::new(HTPASSWD).exists(),
                    "/usr/bin/htpasswd (Debian package apache2-utils)",
                );
                let out = Command::new(HTPASSWD)
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("run htpasswd");
                assert!(
                    out.status.success(),
                    "htpasswd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, &out.stdout).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token { user, password } => {
                let server = TokenServer::start(dir.path(), user, password);
                let yaml = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    server.addr,
                    server.cert.display()
                );
                token = Some(server);
                yaml
            }
        };

        let addr = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n  secret: berth-test-secret\n{auth_yaml}",
            data.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config.yml");
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).expect("create registry log");
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup registry log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut reg = Registry {
            child,
            addr,
            token,
            data,
            dir,
        };
        match reg.wait_ready() {
            Ok(()) => Ok(reg),
            // Dropping `reg` kills the process and removes the directory.
            Err(()) => Err(reg.log()),
        }
    }

    fn wait_ready(&mut self) -> Result<(), ()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(());
            }
            if let Some(status) = http_status(&self.addr, "/v2/") {
                // 200 without auth, 401 with; anything from the registry means it is serving.
                if status == 200 || status == 401 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(())
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The registry's storage root directory (filesystem driver `rootdirectory`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The registry's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The token server's `host:port`, when the registry uses token auth.
    pub fn token_addr(&self) -> Option<String> {
        self.token.as_ref().map(|t| t.addr.clone())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The token server stops in its own Drop; the temp dir is removed by TempDir.
    }
}

/// A free loopback port (the kernel's pick for a port-0 bind, released at once).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The status of a plain `GET path` on `addr`, or `None` if nothing answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The token server: issues RS256 JWTs signed with a key whose self-signed certificate is the
/// registry's `rootcertbundle`; the certificate travels in the JWT header (`x5c`).
#[derive(Debug)]
struct TokenServer {
    addr: String,
    cert: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Issuer {
    user: String,
    password: String,
    key: PathBuf,
    x5c: String,
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=berth-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl x509");
        assert!(der.status.success(), "openssl x509 -outform DER failed");
        let issuer = Arc::new(Issuer {
            user: user.to_string(),
            password: password.to_string(),
            key,
            x5c: STANDARD.encode(&der.stdout),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let addr = listener
            .local_addr()
            .expect("token server addr")
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let issuer = Arc::clone(&issuer);
                std::thread::spawn(move || {
                    let _ = serve_token(conn, &issuer);
                });
            }
        });
        TokenServer {
            addr,
            cert,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_token(mut conn: TcpStream, issuer: &Issuer) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/token" {
        return respond(&mut conn, 404, "{\"error\":\"not found\"}");
    }
    let mut scopes = Vec::new();
    let mut service = String::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_string)),
            "service" => service = v,
            _ => {}
        }
    }
    let authenticated = match authorization {
        None => false,
        Some(a) => {
            let Some(b64) = a.strip_prefix("Basic ") else {
                return respond(&mut conn, 401, "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}");
            };
            let expected = format!("{}:{}", issuer.user, issuer.password);
            if STANDARD.decode(b64.trim()).ok().as_deref() != Some(expected.as_bytes()) {
                return respond(
                    &mut conn,
                    401,
                    "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"bad credentials\"}]}",
                );
            }
            true
        }
    };
    if !service.is_empty() && service != TOKEN_SERVICE {
        return respond(&mut conn, 400, "{\"error\":\"unknown service\"}");
    }
    // The authenticated user gets every action asked for; anonymous gets nothing.
    let mut access = Vec::new();
    if authenticated {
        for s in &scopes {
            let Some((typ, rest)) = s.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
            access.push(serde_json::json!({"type": typ, "name": name, "actions": actions}));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let subject = if authenticated {
        issuer.user.as_str()
    } else {
        ""
    };
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [issuer.x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": subject,
        "aud": TOKEN_SERVICE,
        "exp": now + 600,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": format!("{}-{now}", std::process::id()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = sign_rs256(&issuer.key, signing_input.as_bytes())?;
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": 600,
    });
    respond(&mut conn, 200, &body.to_string())
}

fn sign_rs256(key: &Path, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("openssl stdin"))?
        .write_all(data)?;
    let mut sig = Vec::new();
    child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("openssl stdout"))?
        .read_to_end(&mut sig)?;
    let status = child.wait()?;
    if !status.success() {
        return Err(std::io::Error::other("openssl dgst -sign failed"));
    }
    Ok(sig)
}

fn respond(conn: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let extra = if status == 401 {
        "WWW-Authenticate: Basic realm=\"berth-test-token\"\r\n"
    } else {
        ""
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One raw request; returns (status, headers, body).
    fn get(addr: &str, path: &str, auth: Option<&str>) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
        )
        .expect("write request");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read response");
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_string(), body.to_string())
    }

    #[test]
    fn no_auth_answers_200() {
        let r = Registry::start(Auth::None);
        assert_eq!(get(&r.addr(), "/v2/", None).0, 200);
        assert!(r.data_dir().is_dir());
    }

    #[test]
    fn basic_auth_checks_credentials() {
        let r = Registry::start(Auth::Basic {
            user: "alice".into(),
            password: "secret".into(),
        });
        assert_eq!(get(&r.addr(), "/v2/", None).0, 401);
        let good = format!("Basic {}", STANDARD.encode("alice:secret"));
        assert_eq!(get(&r.addr(), "/v2/", Some(&good)).0, 200);
        let bad = format!("Basic {}", STANDARD.encode("alice:wrong"));
        assert_eq!(get(&r.addr(), "/v2/", Some(&bad)).0, 401);
    }

    #[test]
    fn token_auth_issues_tokens_the_registry_accepts() {
        let r = Registry::start(Auth::Token {
            user: "bob".into(),
            password: "pw".into(),
        });
        let (status, head, _) = get(&r.addr(), "/v2/x/tags/list", None);
        assert_eq!(status, 401);
        assert!(head.contains("Bearer realm="), "{head}");
        let tok = r.token_addr().expect("token server");
        let basic = format!("Basic {}", STANDARD.encode("bob:pw"));
        let (st, _, body) = get(
            &tok,
            &format!("/token?service={TOKEN_SERVICE}&scope=repository:x:pull"),
            Some(&basic),
        );
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("token json");
        let t = v["token"].as_str().expect("token").to_string();
        // Repository does not exist: 404 NAME_UNKNOWN means the token was accepted.
        let (st, _, body) = get(&r.addr(), "/v2/x/tags/list", Some(&format!("Bearer {t}")));
        assert_eq!(st, 404, "{body}\n{}", r.log());
        // Bad credentials are refused by the token server.
        let bad = format!("Basic {}", STANDARD.encode("bob:nope"));
        let (st, _, _) = get(&tok, "/token?scope=repository:x:pull", Some(&bad));
        assert_eq!(st, 401);
        // Anonymous tokens grant nothing.
        let (st, _, body) = get(&tok, "/token?scope=repository:x:pull", None);
        assert_eq!(st, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("token json");
        let t = v["token"].as_str().expect("token").to_string();
        let (st, _, _) = get(&r.addr(), "/v2/x/tags/list", Some(&format!("Bearer {t}")));
        assert_eq!(st, 401);
    }
}
