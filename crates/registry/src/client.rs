//! The distribution-API client: endpoints (scheme, mirrors, Docker Hub's API host),
//! authentication (basic, bearer tokens cached per registry and scope), retries with
//! exponential backoff, and the pull and push operations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use oci_spec::image::{Digest, DigestAlgorithm};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderName};

use crate::auth::{self, Challenge};
use crate::blob::BlobStream;
use crate::media_types;
use crate::reference::{DOCKER_HUB, Reference};
use crate::{Error, sha256_digest};

/// The largest manifest accepted (as containerd): bigger ones are refused before reading.
pub const MANIFEST_MAX: u64 = 4 << 20;
const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));
const BODY_SNIPPET: usize = 512;
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// Client settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Registries (`host[:port]`, or a host alone for every port) spoken to over plain HTTP.
    /// Loopback registries (`localhost`, 127.0.0.0/8, `::1`) always are.
    pub insecure: Vec<String>,
    /// Pull mirrors per registry (`docker.io` -> [`mirror.example:5000`, `http://10.0.0.1`]),
    /// tried in order before the registry itself. A mirror without a scheme follows the same
    /// rules as a registry.
    pub mirrors: HashMap<String, Vec<String>>,
    /// Credential files, searched in order (see [`auth::default_files`]).
    pub auth_files: Vec<PathBuf>,
    /// Retries after the first attempt for 5xx, 429, connection errors and cut-short bodies.
    pub max_retries: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            insecure: Vec::new(),
            mirrors: HashMap::new(),
            auth_files: auth::default_files(),
            max_retries: 5,
        }
    }
}

/// A manifest (or index) as fetched: its exact bytes, media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The bytes the digest covers.
    pub bytes: Bytes,
    /// The media type (`Content-Type`, or the body's `mediaType` when the registry sends a
    /// generic one).
    pub media_type: String,
    /// The digest of `bytes` (verified when the manifest was requested by digest).
    pub digest: Digest,
}

/// The distribution-API client. Cheap to clone; clones share connections, credentials and
/// tokens.
///
/// Credential files are consulted on every authenticated request (re-parsed only when they
/// change), so a `berth login` or `berth logout` done by another process after the client was
/// made takes effect on its next request; bearer tokens are only reused with the
/// credentials they were issued for.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    pub(crate) backoff: Backoff,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    /// Built at the first request: loading the system's root certificates costs memory and
    /// time that a daemon which never pulls should not pay.
    http: std::sync::OnceLock<reqwest::Client>,
    pub(crate) config: Config,
    state: Mutex<State>,
    /// Parsed credential files, refreshed when they change.
    files: Mutex<auth::FileCache>,
}

/// Exponential backoff between retries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// The wait before retry number `n` (1-based).
    pub(crate) fn delay(&self, n: u32) -> Duration {
        let mul = 1u32 << n.saturating_sub(1).min(16);
        self.base.saturating_mul(mul).min(self.max)
    }
}

#[derive(Default)]
struct State {
    /// Credentials by registry host from a successful `login` on this client; they win over
    /// the credential files.
    logins: HashMap<String, (String, String)>,
    /// The scheme each host asked for.
    schemes: HashMap<String, HostAuth>,
    /// Bearer tokens by host and scope (each remembers the credentials it was issued for).
    tokens: HashMap<(String, String), Token>,
}

#[derive(Clone, Debug)]
enum HostAuth {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Clone)]
struct Token {
    token: String,
    expires: Instant,
    /// The credentials the token service was given (`None`: anonymous); the token is only
    /// used while they are still the host's credentials.
    creds: Option<(String, String)>,
}

/// Where requests for a registry go.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `scheme://host[:port][/prefix]` without a trailing slash.
    base: String,
    /// The name credentials and tokens are keyed by.
    host: String,
    mirror: bool,
}

/// The access a request needs, as token scopes (`repository:<name>:<actions>`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope(Vec<String>);

impl Scope {
    fn pull(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull")])
    }
    fn push(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }
    fn key(&self) -> String {
        self.0.join(" ")
    }
    /// Whether a token granted for `granted` also covers this scope.
    fn covered_by(&self, granted: &str) -> bool {
        let parse = |s: &str| -> Option<(String, String, Vec<String>)> {
            let (typ, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some((
                typ.to_string(),
                name.to_string(),
                actions.split(',').map(str::to_string).collect(),
            ))
        };
        let have: Vec<_> = granted.split(' ').filter_map(parse).collect();
        self.0.iter().all(|want| {
            let Some((t, n, acts)) = parse(want) else {
                return false;
            };
            have.iter()
                .any(|(ht, hn, ha)| *ht == t && *hn == n && acts.iter().all(|a| ha.contains(a)))
        })
    }
}

fn is_loopback(host: &str) -> bool {
    let h = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once("]:").map_or(host, |(h, _)| h);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(BODY_SNIPPET)]);
    s.trim().to_string()
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `Content-Length` from the header itself (a HEAD response has no body to size).
pub(crate) fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// Compute a digest of `bytes` with the algorithm of `like`.
fn digest_like(like: &Digest, bytes: &[u8]) -> Option<Digest> {
    use sha2::Digest as _;
    let s = match like.algorithm() {
        DigestAlgorithm::Sha256 => return Some(sha256_digest(bytes)),
        DigestAlgorithm::Sha384 => format!("sha384:{}", hex::encode(sha2::Sha384::digest(bytes))),
        DigestAlgorithm::Sha512 => format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes))),
        _ => return None,
    };
    s.parse().ok()
}

async fn read_body_limited(
    resp: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Bytes, Error> {
    if content_length(resp.headers()).is_some_and(|n| n > limit) {
        return Err(Error::Protocol {
            what: what.to_string(),
            reason: format!("response is larger than the {limit}-byte limit for manifests"),
        });
    }
    let mut buf = BytesMut::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| Error::Network {
            what: what.to_string(),
            source,
        })?;
        if u64::try_from(buf.len() + chunk.len()).unwrap_or(u64::MAX) > limit {
            return Err(Error::Protocol {
                what: what.to_string(),
                reason: format!("response is larger than the {limit}-byte limit for manifests"),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A file's byte range as a streaming request body (read in 256 KiB pieces, never whole).
fn file_body(path: &Path, offset: u64, len: u64) -> Result<reqwest::Body, Error> {
    use std::io::Seek as _;
    use tokio::io::AsyncReadExt as _;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open blob", path, e))?;
    f.seek(std::io::SeekFrom::Start(offset))
        .map_err(|e| Error::io("seek in blob", path, e))?;
    let f = tokio::fs::File::from_std(f);
    let stream = futures_util::stream::unfold((f, len), |(mut f, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let n = usize::try_from(remaining.min(256 << 10)).unwrap_or(256 << 10);
        let mut buf = vec![0u8; n];
        match f.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob file is shorter than its declared size",
                )),
                (f, 0),
            )),
            Ok(got) => {
                buf.truncate(got);
                let left = remaining - u64::try_from(got).unwrap_or(remaining);
                Some((Ok(Bytes::from(buf)), (f, left)))
            }
            Err(e) => Some((Err(e), (f, 0))),
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

impl Client {
    /// A client with `config`. The HTTP stack is built on first use; the system's root
    /// certificates are read on the first TLS handshake (`tls.rs`).
    pub fn new(config: Config) -> Result<Client, Error> {
        Ok(Client {
            inner: Arc::new(Inner {
                http: std::sync::OnceLock::new(),
                config,
                state: Mutex::new(State::default()),
                files: Mutex::new(auth::FileCache::default()),
            }),
            backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
        })
    }

    /// The same client with a different retry backoff (first wait `base`, doubling up to
    /// `max`); tests use short ones.
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Client {
        self.backoff = Backoff { base, max };
        self
    }

    /// The HTTP client, built on first use.
    fn http(&self) -> Result<&reqwest::Client, Error> {
        if let Some(h) = self.inner.http.get() {
            return Ok(h);
        }
        let built = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(60))
            .use_preconfigured_tls(crate::tls::client_config())
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(self.inner.http.get_or_init(|| built))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock only guards maps; a panic while holding it cannot leave them torn.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn max_retries(&self) -> u32 {
        self.inner.config.max_retries
    }

    fn scheme_for(&self, host: &str) -> &'static str {
        let insecure = self
            .inner
            .config
            .insecure
            .iter()
            .any(|i| i == host || (!i.contains(':') && i == strip_port(host)));
        if insecure || is_loopback(host) {
            "http"
        } else {
            "https"
        }
    }

    /// The registry itself.
    pub(crate) fn origin(&self, registry: &str) -> Endpoint {
        let api_host = if registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        Endpoint {
            base: format!("{}://{api_host}", self.scheme_for(registry)),
            host: registry.to_string(),
            mirror: false,
        }
    }

    /// Mirrors (in order), then the registry.
    pub(crate) fn pull_endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut eps = Vec::new();
        for m in self
            .inner
            .config
            .mirrors
            .get(registry)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let m = m.trim_end_matches('/');
            let (base, host) = if let Some((scheme, rest)) = m.split_once("://") {
                (
                    format!("{scheme}://{rest}"),
                    rest.split('/').next().unwrap_or(rest).to_string(),
                )
            } else {
                let host = m.split('/').next().unwrap_or(m).to_string();
                (format!("{}://{m}", self.scheme_for(&host)), host)
            };
            eps.push(Endpoint {
                base,
                host,
                mirror: true,
            });
        }
        eps.push(self.origin(registry));
        eps
    }

    /// Credentials for `host`: from `login` on this client, else the credential files as
    /// they are now (neither a found entry nor the lack of one is remembered).
    fn creds(&self, host: &str) -> Result<Option<(String, String)>, Error> {
        if let Some(c) = self.state().logins.get(host) {
            return Ok(Some(c.clone()));
        }
        self.inner
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lookup(&self.inner.config.auth_files, host)
    }

    /// A live token for `host` covering `scope` issued for `creds`. Tokens issued for other
    /// credentials (before a login, logout or password change) are dropped.
    fn cached_token(
        &self,
        host: &str,
        scope: &Scope,
        creds: Option<&(String, String)>,
    ) -> Option<String> {
        let mut st = self.state();
        let now = Instant::now();
        st.tokens
            .retain(|(h, _), t| h != host || (t.creds.as_ref() == creds && t.expires > now));
        if let Some(t) = st.tokens.get(&(host.to_string(), scope.key())) {
            return Some(t.token.clone());
        }
        st.tokens
            .iter()
            .find(|((h, s), _)| h == host && scope.covered_by(s))
            .map(|(_, t)| t.token.clone())
    }

    /// The `Authorization` header to send to `ep` for `scope`, fetching a token if the host
    /// wants bearer tokens and none is cached.
    async fn authorization(&self, ep: &Endpoint, scope: &Scope) -> Result<Option<String>, Error> {
        let scheme = self.state().schemes.get(&ep.host).cloned();
        match scheme {
            None => Ok(None),
            Some(HostAuth::Basic) => Ok(self.creds(&ep.host)?.map(|(u, p)| basic(&u, &p))),
            Some(HostAuth::Bearer { realm, service }) => {
                let creds = self.creds(&ep.host)?;
                if let Some(t) = self.cached_token(&ep.host, scope, creds.as_ref()) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self
                    .fetch_token(&ep.host, &realm, service.as_deref(), scope, creds.as_ref())
                    .await?;
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// Ask a token service for a token covering `scope`, and cache it.
    async fn fetch_token(
        &self,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        creds: Option<&(String, String)>,
    ) -> Result<String, Error> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| Error::Protocol {
            what: format!("token service of {host}"),
            reason: format!("realm {realm:?} is not a URL: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &scope.0 {
                q.append_pair("scope", s);
            }
        }
        let what = format!("token request to {realm} for {host}");
        let mut attempt = 0;
        let resp = loop {
            let mut req = self.http()?.get(url.clone());
            if let Some((u, p)) = creds {
                req = req.header(header::AUTHORIZATION, basic(u, p));
            }
            let retry_reason = match req.send().await {
                Ok(r)
                    if r.status().is_server_error()
                        || r.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    format!("status {}", r.status())
                }
                Ok(r) => break r,
                Err(e) if attempt < self.max_retries() => e.to_string(),
                Err(source) => return Err(Error::Network { what, source }),
            };
            attempt += 1;
            if attempt > self.max_retries() {
                return Err(Error::Protocol {
                    what,
                    reason: format!("{retry_reason} after {attempt} attempts"),
                });
            }
            tracing::debug!("{what}: {retry_reason}; retrying");
            tokio::time::sleep(self.backoff.delay(attempt)).await;
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = match creds {
                Some((u, _)) => format!(
                    "the token service {realm} refused the credentials of user {u:?} for {host}; check them and run `berth login {host}` again"
                ),
                None => format!(
                    "the token service {realm} refused anonymous access to {host}; run `berth login {host}`"
                ),
            };
            return Err(Error::Unauthorized {
                registry: host.to_string(),
                message,
            });
        }
        let body = read_body_limited(resp, 1 << 20, &what).await?;
        if !status.is_success() {
            return Err(Error::Status {
                what,
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let tr: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            what: what.clone(),
            reason: format!("token response is not the expected JSON: {e}"),
        })?;
        let token = tr
            .token
            .filter(|t| !t.is_empty())
            .or(tr.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| Error::Protocol {
                what: what.clone(),
                reason: "token response has no token".into(),
            })?;
        // The spec's default lifetime is 60 s; renew a little early.
        let life = Duration::from_secs(tr.expires_in.unwrap_or(60).max(1));
        let expires = Instant::now()
            + life
                .saturating_sub(Duration::from_secs(10))
                .max(Duration::from_secs(1));
        self.state().tokens.insert(
            (host.to_string(), scope.key()),
            Token {
                token: token.clone(),
                expires,
                creds: creds.cloned(),
            },
        );
        Ok(token)
    }

    /// Learn the scheme a 401 asks for (and remember it for the host).
    fn learn_challenge(&self, ep: &Endpoint, headers: &HeaderMap) -> Option<Challenge> {
        let challenge = auth::parse_challenges(
            headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let scheme = match &challenge {
            Some(Challenge::Basic) => HostAuth::Basic,
            Some(Challenge::Bearer { realm, service, .. }) => HostAuth::Bearer {
                realm: realm.clone(),
                service: service.clone(),
            },
            None => return None,
        };
        self.state().schemes.insert(ep.host.clone(), scheme);
        challenge
    }

    fn no_challenge(&self, ep: &Endpoint) -> Error {
        Error::Unauthorized {
            registry: ep.host.clone(),
            message: format!(
                "{} requires authentication but sent no usable WWW-Authenticate challenge (Basic or Bearer)",
                ep.host
            ),
        }
    }

    /// React to a first 401: learn the host's scheme, drop refused tokens, get a fresh token.
    /// `Err` when there is nothing to retry with.
    async fn handle_challenge(
        &self,
        ep: &Endpoint,
        scope: &Scope,
        headers: &HeaderMap,
    ) -> Result<(), Error> {
        let creds = self.creds(&ep.host)?;
        match self.learn_challenge(ep, headers) {
            None => Err(self.no_challenge(ep)),
            Some(Challenge::Basic) => match creds {
                None => Err(self.need_login(ep)),
                Some(_) => Ok(()),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope: wanted,
                ..
            }) => {
                // Whatever token we sent (expired, revoked) is no good.
                self.state()
                    .tokens
                    .retain(|(h, s), _| !(h == &ep.host && scope.covered_by(s)));
                let mut scope = scope.clone();
                if let Some(w) = wanted {
                    for s in w.split(' ').filter(|s| !s.is_empty()) {
                        if !scope.0.iter().any(|x| x == s) {
                            scope.0.push(s.to_string());
                        }
                    }
                }
                self.fetch_token(&ep.host, &realm, service.as_deref(), &scope, creds.as_ref())
                    .await
                    .map(drop)
            }
        }
    }

    /// Explain a 401 that came back although we answered the first challenge.
    fn refusal(&self, ep: &Endpoint, scope: &Scope, headers: &HeaderMap) -> Error {
        let creds = match self.creds(&ep.host) {
            Ok(c) => c,
            Err(e) => return e,
        };
        match (self.learn_challenge(ep, headers), creds) {
            (None, _) => self.no_challenge(ep),
            (_, None) => self.need_login(ep),
            (Some(Challenge::Basic), Some((u, _))) => Error::Unauthorized {
                registry: ep.host.clone(),
                message: format!(
                    "{} rejected the credentials of user {u:?}; run `berth login {}` again",
                    ep.host, ep.host
                ),
            },
            (Some(Challenge::Bearer { error, .. }), Some((u, _))) => {
                self.state()
                    .tokens
                    .retain(|(h, s), _| !(h == &ep.host && scope.covered_by(s)));
                Error::Unauthorized {
                    registry: ep.host.clone(),
                    message: format!(
                        "user {u:?} is not allowed {} on {}{}",
                        scope.key(),
                        ep.host,
                        error.map(|e| format!(" ({e})")).unwrap_or_default()
                    ),
                }
            }
        }
    }

    fn need_login(&self, ep: &Endpoint) -> Error {
        Error::Unauthorized {
            registry: ep.host.clone(),
            message: format!(
                "{} requires authentication and no credentials were found for it; run `berth login {}`",
                ep.host, ep.host
            ),
        }
    }

    /// Send a request built by `build` (called again for every attempt, so streaming bodies
    /// are re-created), authenticating and retrying 5xx, 429 and connection errors. Returns
    /// any other response for the caller to interpret (401 and 403 become
    /// `Error::Unauthorized`).
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        scope: &Scope,
        what: &str,
        build: &(dyn Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder, Error> + Send + Sync),
    ) -> Result<reqwest::Response, Error> {
        let mut failures = 0u32;
        let mut challenged = false;
        loop {
            let authz = self.authorization(ep, scope).await?;
            let mut req = build(self.http()?)?;
            if let Some(a) = &authz {
                req = req.header(header::AUTHORIZATION, a);
            }
            let reason = match req.send().await {
                // A name that does not resolve will not resolve a second later either (and
                // offline every retry would only add its back-off): fail at once, as Docker.
                Err(e) if e.is_builder() || e.is_redirect() || unresolvable(&e) => {
                    return Err(Error::Network {
                        what: what.to_string(),
                        source: e,
                    });
                }
                Err(e) => {
                    if failures >= self.max_retries() {
                        return Err(Error::Network {
                            what: format!("{what} (after {} attempts)", failures + 1),
                            source: e,
                        });
                    }
                    e.to_string()
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED {
                        let headers = resp.headers().clone();
                        if challenged {
                            return Err(self.refusal(ep, scope, &headers));
                        }
                        challenged = true;
                        self.handle_challenge(ep, scope, &headers).await?;
                        continue;
                    }
                    if status == StatusCode::FORBIDDEN {
                        let body = resp.bytes().await.unwrap_or_default();
                        return Err(Error::Unauthorized {
                            registry: ep.host.clone(),
                            message: format!(
                                "{what}: access denied{}",
                                if body.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {}", snippet(&body))
                                }
                            ),
                        });
                    }
                    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                        return Ok(resp);
                    }
                    let retry_after = header_str(resp.headers(), header::RETRY_AFTER)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(30)));
                    let body = resp.bytes().await.unwrap_or_default();
                    if failures >= self.max_retries() {
                        return Err(Error::Status {
                            what: format!("{what} (after {} attempts)", failures + 1),
                            status: status.as_u16(),
                            body: snippet(&body),
                        });
                    }
                    failures += 1;
                    let wait = self
                        .backoff
                        .delay(failures)
                        .max(retry_after.unwrap_or_default());
                    tracing::debug!("{what}: status {status}; retry {failures} in {wait:?}");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            failures += 1;
            let wait = self.backoff.delay(failures);
            tracing::debug!("{what}: {reason}; retry {failures} in {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }

    /// Fetch a manifest or index. `reference` is a tag or a digest; a digest is verified
    /// against the bytes. `accept` lists the media types to ask for (empty: OCI and Docker
    /// v2 manifests and indexes). Mirrors are tried first.
    pub async fn get_manifest(
        &self,
        r: &Reference,
        reference: &str,
        accept: &[&str],
    ) -> Result<Manifest, Error> {
        let mut last = None;
        for ep in self.pull_endpoints(&r.registry) {
            match self.get_manifest_from(&ep, r, reference, accept).await {
                Ok(m) => return Ok(m),
                Err(e) if ep.mirror => {
                    tracing::debug!("mirror {} failed, trying the next: {e}", ep.base);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no endpoint".into())))
    }

    async fn get_manifest_from(
        &self,
        ep: &Endpoint,
        r: &Reference,
        reference: &str,
        accept: &[&str],
    ) -> Result<Manifest, Error> {
        let url = format!("{}/v2/{}/manifests/{reference}", ep.base, r.repository);
        let what = format!("GET {url}");
        let accept = if accept.is_empty() {
            media_types::MANIFEST_TYPES.join(", ")
        } else {
            accept.join(", ")
        };
        let display = if reference.contains(':') {
            format!("{}@{reference}", r.name())
        } else {
            format!("{}:{reference}", r.name())
        };
        let resp = self
            .send(ep, &Scope::pull(&r.repository), &what, &|http| {
                Ok(http.get(&url).header(header::ACCEPT, &accept))
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                what: format!("manifest {display}"),
            });
        }
        let headers = resp.headers().clone();
        let body = read_body_limited(resp, MANIFEST_MAX, &what).await?;
        if !status.is_success() {
            return Err(Error::Status {
                what,
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        let ct = header_str(&headers, header::CONTENT_TYPE)
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let body_type = json
            .as_ref()
            .and_then(|j| j.get("mediaType"))
            .and_then(|m| m.as_str())
            .map(str::to_string);
        let schema_version = json
            .as_ref()
            .and_then(|j| j.get("schemaVersion"))
            .and_then(serde_json::Value::as_u64);
        let media_type = if ct.is_empty() || ct == "application/json" || ct == "text/plain" {
            body_type.unwrap_or_else(|| {
                if schema_version == Some(1) {
                    media_types::DOCKER_SCHEMA1_MANIFEST.to_string()
                } else {
                    ct.clone()
                }
            })
        } else {
            ct
        };
        if media_types::is_schema1(&media_type) || schema_version == Some(1) {
            return Err(Error::Schema1 {
                what: display,
                media_type,
            });
        }
        let digest = match reference.parse::<Digest>() {
            Ok(expected) if reference.contains(':') => {
                let actual = digest_like(&expected, &body).ok_or_else(|| Error::Protocol {
                    what: what.clone(),
                    reason: format!("unsupported digest algorithm {}", expected.algorithm()),
                })?;
                if actual != expected {
                    return Err(Error::DigestMismatch { expected, actual });
                }
                expected
            }
            _ => {
                let actual = sha256_digest(&body);
                if let Some(claimed) = header_str(&headers, DOCKER_CONTENT_DIGEST)
                    .and_then(|v| v.trim().parse::<Digest>().ok())
                {
                    if let Some(ours) = digest_like(&claimed, &body) {
                        if ours != claimed {
                            return Err(Error::DigestMismatch {
                                expected: claimed,
                                actual: ours,
                            });
                        }
                    }
                }
                actual
            }
        };
        Ok(Manifest {
            bytes: body,
            media_type,
            digest,
        })
    }

    /// Stream a blob from byte `offset` (0 for all of it; more to resume a download the
    /// caller has partly on disk). The stream resumes by itself (with `Range`) when the
    /// connection breaks, up to `max_retries` times in a row without progress. It does not
    /// verify the digest: the caller hashes what it stores (it alone sees the first `offset`
    /// bytes).
    pub async fn blob(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, Error> {
        let mut last = None;
        for ep in self.pull_endpoints(&r.registry) {
            match BlobStream::open(self.clone(), ep.clone(), r.clone(), digest.clone(), offset)
                .await
            {
                Ok(s) => return Ok(s),
                Err(e) if ep.mirror => {
                    tracing::debug!("mirror {} failed, trying the next: {e}", ep.base);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no endpoint".into())))
    }

    /// Issue one blob GET from `offset`; used by [`BlobStream`] to open and to resume.
    pub(crate) async fn blob_request(
        &self,
        ep: &Endpoint,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<reqwest::Response, Error> {
        let url = format!("{}/v2/{}/blobs/{digest}", ep.base, r.repository);
        let what = format!("GET {url}");
        let resp = self
            .send(ep, &Scope::pull(&r.repository), &what, &|http| {
                let mut req = http.get(&url);
                if offset > 0 {
                    req = req.header(header::RANGE, format!("bytes={offset}-"));
                }
                Ok(req)
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                what: format!("blob {digest} in {}", r.name()),
            });
        }
        if !status.is_success() && status != StatusCode::RANGE_NOT_SATISFIABLE {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(Error::Status {
                what,
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        Ok(resp)
    }

    /// The size of a blob in `r`'s repository, or `None` when the registry does not have it
    /// there.
    pub async fn blob_exists(&self, r: &Reference, digest: &Digest) -> Result<Option<u64>, Error> {
        let ep = self.origin(&r.registry);
        let url = format!("{}/v2/{}/blobs/{digest}", ep.base, r.repository);
        let what = format!("HEAD {url}");
        let resp = self
            .send(&ep, &Scope::pull(&r.repository), &what, &|http| {
                Ok(http.head(&url))
            })
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(content_length(resp.headers()).unwrap_or(0))),
            s => Err(Error::Status {
                what,
                status: s.as_u16(),
                body: String::new(),
            }),
        }
    }

    /// Ask the registry to link a blob from another repository (same registry) into `r`'s.
    /// `true` when mounted; `false` when not (different registry, blob unknown there, or the
    /// registry declined), in which case the caller uploads it.
    pub async fn mount_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        from: &Reference,
    ) -> Result<bool, Error> {
        if from.registry != r.registry {
            return Ok(false);
        }
        let ep = self.origin(&r.registry);
        let url = format!("{}/v2/{}/blobs/uploads/", ep.base, r.repository);
        let what = format!("POST {url}?mount={digest}&from={}", from.repository);
        let mut scope = Scope::push(&r.repository);
        if from.repository != r.repository {
            scope.0.push(format!("repository:{}:pull", from.repository));
        }
        let from_repo = from.repository.clone();
        let digest_s = digest.to_string();
        let resp = self
            .send(&ep, &scope, &what, &|http| {
                Ok(http
                    .post(&url)
                    .query(&[("mount", digest_s.as_str()), ("from", from_repo.as_str())])
                    .header(header::CONTENT_LENGTH, "0"))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // Not mounted; the registry opened an upload we do not use: cancel it.
                if let Some(loc) = header_str(resp.headers(), header::LOCATION) {
                    if let Ok(u) = self.resolve(&ep, loc) {
                        let what = format!("DELETE {u}");
                        let _ = self
                            .send(&ep, &scope, &what, &|http| Ok(http.delete(u.clone())))
                            .await;
                    }
                }
                Ok(false)
            }
            StatusCode::NOT_FOUND => Ok(false),
            s => {
                let body = resp.bytes().await.unwrap_or_default();
                Err(Error::Status {
                    what,
                    status: s.as_u16(),
                    body: snippet(&body),
                })
            }
        }
    }

    fn resolve(&self, ep: &Endpoint, location: &str) -> Result<reqwest::Url, Error> {
        let base = reqwest::Url::parse(&format!("{}/", ep.base)).map_err(|e| Error::Protocol {
            what: format!("upload to {}", ep.base),
            reason: format!("bad endpoint URL: {e}"),
        })?;
        base.join(location).map_err(|e| Error::Protocol {
            what: format!("upload to {}", ep.base),
            reason: format!("bad Location {location:?}: {e}"),
        })
    }

    fn upload_location(
        &self,
        ep: &Endpoint,
        resp: &reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Url, Error> {
        let loc = header_str(resp.headers(), header::LOCATION).ok_or_else(|| Error::Protocol {
            what: what.to_string(),
            reason: "the registry sent no Location for the upload".into(),
        })?;
        self.resolve(ep, loc)
    }

    /// Upload the blob at `path` (`size` bytes, digest `digest`) into `r`'s repository,
    /// streaming it from disk: in one PUT, or in PATCH requests of `chunk_size` bytes then a
    /// closing PUT.
    pub async fn upload_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        path: &Path,
        chunk_size: Option<u64>,
    ) -> Result<(), Error> {
        let on_disk = std::fs::metadata(path)
            .map_err(|e| Error::io("stat blob", path, e))?
            .len();
        if on_disk < size {
            return Err(Error::Protocol {
                what: format!("upload of {}", path.display()),
                reason: format!("the file has {on_disk} bytes, fewer than the blob's {size}"),
            });
        }
        let ep = self.origin(&r.registry);
        let scope = Scope::push(&r.repository);
        let start_url = format!("{}/v2/{}/blobs/uploads/", ep.base, r.repository);
        let what = format!("POST {start_url}");
        let resp = self
            .send(&ep, &scope, &what, &|http| {
                Ok(http.post(&start_url).header(header::CONTENT_LENGTH, "0"))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            let s = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(Error::Status {
                what,
                status: s.as_u16(),
                body: snippet(&body),
            });
        }
        let mut location = self.upload_location(&ep, &resp, &what)?;
        let chunk = chunk_size.filter(|c| *c > 0 && *c < size);
        let digest_s = digest.to_string();
        let (put_offset, put_len) = if let Some(chunk) = chunk {
            let mut offset = 0u64;
            while offset < size {
                let n = chunk.min(size - offset);
                let what = format!("PATCH {location} (bytes {offset}-{})", offset + n - 1);
                let loc = location.clone();
                let resp = self
                    .send(&ep, &scope, &what, &|http| {
                        Ok(http
                            .patch(loc.clone())
                            .header(header::CONTENT_TYPE, "application/octet-stream")
                            .header(header::CONTENT_LENGTH, n.to_string())
                            .header(
                                header::CONTENT_RANGE,
                                format!("{offset}-{}", offset + n - 1),
                            )
                            .body(file_body(path, offset, n)?))
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    let s = resp.status();
                    let body = resp.bytes().await.unwrap_or_default();
                    return Err(Error::Status {
                        what,
                        status: s.as_u16(),
                        body: snippet(&body),
                    });
                }
                location = self.upload_location(&ep, &resp, &what)?;
                offset += n;
            }
            (size, 0)
        } else {
            (0, size)
        };
        location.query_pairs_mut().append_pair("digest", &digest_s);
        let what = format!("PUT {location}");
        let resp = self
            .send(&ep, &scope, &what, &|http| {
                let req = http
                    .put(location.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, put_len.to_string());
                Ok(if put_len == 0 {
                    req
                } else {
                    req.body(file_body(path, put_offset, put_len)?)
                })
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::CREATED
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::OK
        {
            return Ok(());
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(Error::Status {
            what,
            status: status.as_u16(),
            body: snippet(&body),
        })
    }

    /// Store a manifest under `reference` (a tag or its digest) with `media_type`. Returns
    /// its digest (the registry's `Docker-Content-Digest`, checked against the bytes).
    pub async fn put_manifest(
        &self,
        r: &Reference,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<Digest, Error> {
        let ours = sha256_digest(&body);
        if reference.contains(':') {
            if let Ok(expected) = reference.parse::<Digest>() {
                let actual = digest_like(&expected, &body).unwrap_or_else(|| ours.clone());
                if actual != expected {
                    return Err(Error::DigestMismatch { expected, actual });
                }
            }
        }
        let ep = self.origin(&r.registry);
        let url = format!("{}/v2/{}/manifests/{reference}", ep.base, r.repository);
        let what = format!("PUT {url}");
        let resp = self
            .send(&ep, &Scope::push(&r.repository), &what, &|http| {
                Ok(http
                    .put(&url)
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        let status = resp.status();
        if !(status == StatusCode::CREATED || status == StatusCode::OK) {
            let b = resp.bytes().await.unwrap_or_default();
            return Err(Error::Status {
                what,
                status: status.as_u16(),
                body: snippet(&b),
            });
        }
        match header_str(resp.headers(), DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.trim().parse::<Digest>().ok())
        {
            Some(claimed) => {
                let actual = digest_like(&claimed, &body).unwrap_or_else(|| ours.clone());
                if actual != claimed {
                    return Err(Error::DigestMismatch {
                        expected: actual,
                        actual: claimed,
                    });
                }
                Ok(claimed)
            }
            None => Ok(ours),
        }
    }

    /// Check `user`/`password` against `registry`'s `/v2/` (directly for basic auth, through
    /// the token service for bearer auth). On success the client uses them for that registry
    /// from now on; storing them is the caller's choice ([`auth::store`]).
    pub async fn login(&self, registry: &str, user: &str, password: &str) -> Result<(), Error> {
        let host = auth::normalize_registry(registry);
        let ep = self.origin(&host);
        let url = format!("{}/v2/", ep.base);
        let what = format!("GET {url}");
        let creds = (user.to_string(), password.to_string());
        let get = |authz: Option<String>| {
            let url = url.clone();
            let what = what.clone();
            async move {
                let mut attempt = 0;
                loop {
                    let mut req = self.http()?.get(&url);
                    if let Some(a) = &authz {
                        req = req.header(header::AUTHORIZATION, a);
                    }
                    match req.send().await {
                        Ok(r) if !r.status().is_server_error() || attempt >= self.max_retries() => {
                            return Ok(r);
                        }
                        Ok(_) => {}
                        Err(source) if attempt >= self.max_retries() => {
                            return Err(Error::Network { what, source });
                        }
                        Err(_) => {}
                    }
                    attempt += 1;
                    tokio::time::sleep(self.backoff.delay(attempt)).await;
                }
            }
        };
        let refused = || Error::Unauthorized {
            registry: host.clone(),
            message: format!("login to {host} failed: wrong user name or password for {user:?}"),
        };
        let first = get(None).await?;
        let status = first.status();
        let scheme = if status == StatusCode::UNAUTHORIZED {
            let challenge = auth::parse_challenges(
                first
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            match challenge {
                Some(Challenge::Basic) => {
                    let r = get(Some(basic(user, password))).await?;
                    if !r.status().is_success() {
                        return Err(refused());
                    }
                    Some(HostAuth::Basic)
                }
                Some(Challenge::Bearer { realm, service, .. }) => {
                    let token = self
                        .fetch_token(
                            &host,
                            &realm,
                            service.as_deref(),
                            &Scope::default(),
                            Some(&creds),
                        )
                        .await
                        .map_err(|e| match e {
                            Error::Unauthorized { .. } => refused(),
                            e => e,
                        })?;
                    let r = get(Some(format!("Bearer {token}"))).await?;
                    if !r.status().is_success() {
                        return Err(refused());
                    }
                    Some(HostAuth::Bearer { realm, service })
                }
                None => {
                    return Err(Error::Unauthorized {
                        registry: host.clone(),
                        message: format!(
                            "{host} requires authentication but sent no Basic or Bearer challenge"
                        ),
                    });
                }
            }
        } else if status.is_success() {
            None
        } else {
            let body = first.bytes().await.unwrap_or_default();
            return Err(Error::Status {
                what,
                status: status.as_u16(),
                body: snippet(&body),
            });
        };
        let mut st = self.state();
        st.logins.insert(host.clone(), creds);
        st.tokens.retain(|(h, _), _| h != &host);
        if let Some(s) = scheme {
            st.schemes.insert(host, s);
        }
        Ok(())
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Whether a request failed because the registry's host name could not be resolved.
fn unresolvable(e: &reqwest::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(x) = src {
        let text = x.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return true;
        }
        src = x.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(insecure: &[&str], mirrors: &[(&str, &[&str])]) -> Client {
        Client::new(Config {
            insecure: insecure.iter().map(|s| s.to_string()).collect(),
            mirrors: mirrors
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            auth_files: vec![],
            max_retries: 5,
        })
        .expect("client")
    }

    #[test]
    fn endpoints_and_schemes() {
        let c = client(
            &["myreg:5000", "plain.local"],
            &[("docker.io", &["mirror.example", "http://10.1.1.1:5000/"])],
        );
        assert_eq!(c.origin("docker.io").base, "https://registry-1.docker.io");
        assert_eq!(c.origin("quay.io").base, "https://quay.io");
        assert_eq!(c.origin("localhost:5000").base, "http://localhost:5000");
        assert_eq!(c.origin("127.0.0.9:80").base, "http://127.0.0.9:80");
        assert_eq!(c.origin("[::1]:5000").base, "http://[::1]:5000");
        assert_eq!(c.origin("myreg:5000").base, "http://myreg:5000");
        assert_eq!(c.origin("myreg:6000").base, "https://myreg:6000");
        assert_eq!(c.origin("plain.local:1234").base, "http://plain.local:1234");
        let eps: Vec<_> = c
            .pull_endpoints("docker.io")
            .into_iter()
            .map(|e| (e.base, e.mirror))
            .collect();
        assert_eq!(
            eps,
            vec![
                ("https://mirror.example".to_string(), true),
                ("http://10.1.1.1:5000".to_string(), true),
                ("https://registry-1.docker.io".to_string(), false),
            ]
        );
        assert_eq!(c.pull_endpoints("quay.io").len(), 1);
    }

    #[test]
    fn scope_coverage() {
        let s = Scope::pull("a/b");
        assert!(s.covered_by("repository:a/b:pull,push"));
        assert!(s.covered_by("repository:x:pull repository:a/b:pull"));
        assert!(!s.covered_by("repository:a/c:pull"));
        assert!(!Scope::push("a/b").covered_by("repository:a/b:pull"));
    }

    #[test]
    fn credential_files_are_read_fresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("auth/config.json");
        let c = Client::new(Config {
            insecure: vec![],
            mirrors: HashMap::new(),
            auth_files: vec![file.clone()],
            max_retries: 0,
        })
        .expect("client");
        let host = "reg.example:5000";
        // No file yet, then a file without the host: none, and that is not remembered.
        assert_eq!(c.creds(host).expect("creds"), None);
        auth::store(&file, "other.example", "x", "y").expect("store other");
        assert_eq!(c.creds(host).expect("creds"), None);
        // `berth login` by another process.
        auth::store(&file, host, "alice", "s3cret").expect("store");
        assert_eq!(
            c.creds(host).expect("creds"),
            Some(("alice".into(), "s3cret".into()))
        );
        // A new password (same length, so only the inode and times tell).
        auth::store(&file, host, "alice", "s3cre7").expect("store again");
        assert_eq!(
            c.creds(host).expect("creds"),
            Some(("alice".into(), "s3cre7".into()))
        );
        // An in-place rewrite (as some tools do) is seen too.
        std::fs::write(
            &file,
            r#"{"auths":{"reg.example:5000":{"auth":"Ym9iOnB3"},"other.example":{"auth":"eDp5"}}}"#,
        )
        .expect("rewrite");
        assert_eq!(
            c.creds(host).expect("creds"),
            Some(("bob".into(), "pw".into()))
        );
        // `berth logout`: gone on the next look.
        assert!(auth::erase(&file, host).expect("erase"));
        assert_eq!(c.creds(host).expect("creds"), None);
        assert_eq!(
            c.creds("other.example").expect("creds"),
            Some(("x".into(), "y".into()))
        );
        std::fs::remove_file(&file).expect("rm");
        assert_eq!(c.creds("other.example").expect("creds"), None);
    }

    #[test]
    fn tokens_are_tied_to_their_credentials() {
        let c = client(&[], &[]);
        let host = "reg.example";
        let alice = ("alice".to_string(), "pw".to_string());
        c.state().tokens.insert(
            (host.to_string(), Scope::pull("a/b").key()),
            Token {
                token: "t-alice".into(),
                expires: Instant::now() + Duration::from_secs(60),
                creds: Some(alice.clone()),
            },
        );
        assert_eq!(
            c.cached_token(host, &Scope::pull("a/b"), Some(&alice)),
            Some("t-alice".into())
        );
        // After a logout (no credentials) or a new login the token is not used, and dropped.
        assert_eq!(c.cached_token(host, &Scope::pull("a/b"), None), None);
        assert!(c.state().tokens.is_empty());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        };
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(2), Duration::from_millis(400));
        assert_eq!(b.delay(5), Duration::from_millis(3200));
        assert_eq!(b.delay(6), Duration::from_secs(5));
        assert_eq!(b.delay(40), Duration::from_secs(5));
    }
}
