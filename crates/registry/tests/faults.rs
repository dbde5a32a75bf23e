//! Faults a real registry will not produce on demand, from tiny HTTP servers on 127.0.0.1
//! (std threads; each stops when its guard drops): wrong bytes, 5xx, cut connections,
//! servers that ignore `Range`, schema 1 manifests, mirrors.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use berth_registry::{BlobStream, Client, Config, Error, Reference, media_types, sha256_digest};
use futures_util::StreamExt as _;

/// What the fake server saw.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

/// What it answers.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close the connection.
    cut_after: Option<usize>,
}

impl Reply {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            cut_after: None,
        }
    }
    fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn cut(mut self, n: usize) -> Reply {
        self.cut_after = Some(n);
        self
    }
}

type Handler = dyn Fn(&Request, usize) -> Reply + Send + Sync;

struct FakeServer {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeServer {
    /// `handler(request, n)` answers the n-th request (0-based).
    fn start(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop2, reqs2) = (Arc::clone(&stop), Arc::clone(&requests));
        let counter = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = serve(conn, &*handler, &reqs2, &counter);
            }
        });
        FakeServer {
            addr,
            stop,
            thread: Some(thread),
            requests,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut conn: TcpStream,
    handler: &Handler,
    log: &Mutex<Vec<Request>>,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    // A client that stops reading must not wedge the server (and the test's Drop).
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Request {
        method,
        path,
        headers,
    };
    log.lock().expect("lock").push(req.clone());
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let reply = handler(&req, n);
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    if !reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        let n = reply
            .cut_after
            .unwrap_or(reply.body.len())
            .min(reply.body.len());
        conn.write_all(&reply.body[..n])?;
    }
    conn.flush()?;
    // Closing with unread request bytes pending would send RST; drain nothing (GETs only).
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}

fn client(max_retries: u32, mirrors: HashMap<String, Vec<String>>) -> Client {
    Client::new(Config {
        insecure: vec![],
        mirrors,
        auth_files: vec![],
        max_retries,
    })
    .expect("client")
    .with_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + i / 251) % 256).expect("byte"))
        .collect()
}

async fn collect(mut s: BlobStream) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A handler serving `blob` honouring `Range` (206), cutting the first response after
/// `cut` bytes.
fn range_server(blob: Vec<u8>, cut: Option<usize>, honour_range: bool) -> FakeServer {
    FakeServer::start(move |req, n| {
        let total = blob.len();
        let start = req
            .headers
            .get("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
        let mut reply = match start {
            Some(s) if honour_range => Reply::new(206, blob[s..].to_vec())
                .header("Content-Range", &format!("bytes {s}-{}/{total}", total - 1)),
            _ => Reply::new(200, blob.clone()),
        };
        if n == 0 {
            if let Some(c) = cut {
                reply = reply.cut(c);
            }
        }
        reply
    })
}

fn reference(server: &FakeServer) -> Reference {
    format!("{}/x/y:t", server.addr).parse().expect("ref")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_digest_mismatch_is_refused() {
    let served = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let wanted = sha256_digest(b"what we asked for");
    let s = FakeServer::start(move |_, _| {
        Reply::new(200, served.to_vec()).header("Content-Type", media_types::OCI_MANIFEST)
    });
    let c = client(2, HashMap::new());
    match c.get_manifest(&reference(&s), wanted.as_ref(), &[]).await {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wanted);
            assert_eq!(actual, sha256_digest(served));
            let msg = Error::DigestMismatch { expected, actual }.to_string();
            assert!(msg.contains(wanted.as_ref()) && msg.contains(sha256_digest(served).as_ref()));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }

    // By tag, with a Docker-Content-Digest header that does not match the body.
    let s = FakeServer::start(move |_, _| {
        Reply::new(200, served.to_vec())
            .header("Content-Type", media_types::OCI_MANIFEST)
            .header("Docker-Content-Digest", sha256_digest(b"other").as_ref())
    });
    assert!(matches!(
        c.get_manifest(&reference(&s), "t", &[]).await,
        Err(Error::DigestMismatch { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_type_from_body_and_schema1_refused() {
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
    let s = FakeServer::start(move |_, _| {
        Reply::new(200, body.to_vec()).header("Content-Type", "application/json")
    });
    let c = client(0, HashMap::new());
    let m = c
        .get_manifest(&reference(&s), "t", &[])
        .await
        .expect("manifest");
    assert_eq!(m.media_type, media_types::DOCKER_MANIFEST_LIST);
    assert_eq!(m.digest, sha256_digest(body));
    let accept = &s.requests()[0].headers["accept"];
    for t in media_types::MANIFEST_TYPES {
        assert!(accept.contains(t), "{accept}");
    }

    let s = FakeServer::start(|_, _| {
        Reply::new(
            200,
            br#"{"schemaVersion":1,"name":"x/y","tag":"t","fsLayers":[]}"#.to_vec(),
        )
        .header("Content-Type", media_types::DOCKER_SCHEMA1_SIGNED)
    });
    let e = c
        .get_manifest(&reference(&s), "t", &[])
        .await
        .expect_err("schema 1");
    assert!(matches!(e, Error::Schema1 { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("schema 1") && msg.contains("re-push"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_then_reported() {
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let s = FakeServer::start(move |_, n| match n {
        0 => Reply::new(503, "busy"),
        1 => Reply::new(429, "slow down"),
        2 => Reply::new(500, "oops"),
        _ => Reply::new(200, body.to_vec()).header("Content-Type", media_types::OCI_MANIFEST),
    });
    let c = client(5, HashMap::new());
    let m = c
        .get_manifest(&reference(&s), "t", &[])
        .await
        .expect("after retries");
    assert_eq!(m.digest, sha256_digest(body));
    assert_eq!(s.requests().len(), 4);

    // Always failing: max_retries + 1 attempts, then an error that says so.
    let s = FakeServer::start(|_, _| Reply::new(502, "bad gateway"));
    let e = client(3, HashMap::new())
        .get_manifest(&reference(&s), "t", &[])
        .await
        .expect_err("persistent 502");
    assert!(matches!(e, Error::Status { status: 502, .. }), "{e:?}");
    assert!(e.to_string().contains("after 4 attempts"), "{e}");
    assert_eq!(s.requests().len(), 4);

    // Connection refused: a network error after the retries.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let r: Reference = format!("127.0.0.1:{port}/x:t").parse().expect("ref");
    let e = client(2, HashMap::new())
        .get_manifest(&r, "t", &[])
        .await
        .expect_err("refused");
    assert!(matches!(e, Error::Network { .. }), "{e:?}");

    // A 404 is not retried and names the reference.
    let s =
        FakeServer::start(|_, _| Reply::new(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#));
    match client(3, HashMap::new())
        .get_manifest(&reference(&s), "t", &[])
        .await
    {
        Err(Error::NotFound { what }) => assert!(what.contains("x/y:t"), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(s.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connection_resumes_with_range() {
    let blob = data(200_000);
    let digest = sha256_digest(&blob);
    let s = range_server(blob.clone(), Some(70_000), true);
    let c = client(3, HashMap::new());
    let stream = c.blob(&reference(&s), &digest, 0).await.expect("open");
    assert_eq!(stream.size, Some(200_000));
    assert_eq!(collect(stream).await.expect("resumed"), blob);
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].headers.get("range"), None);
    let range = reqs[1]
        .headers
        .get("range")
        .expect("second request has Range");
    assert!(
        range.starts_with("bytes=") && range.ends_with('-'),
        "{range}"
    );
    assert_eq!(reqs[1].path, format!("/v2/x/y/blobs/{digest}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connection_resumes_when_range_is_ignored() {
    let blob = data(150_000);
    let digest = sha256_digest(&blob);
    let s = range_server(blob.clone(), Some(50_000), false);
    let c = client(3, HashMap::new());
    let stream = c.blob(&reference(&s), &digest, 0).await.expect("open");
    assert_eq!(collect(stream).await.expect("resumed"), blob);
    assert_eq!(s.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_resumes_from_offset() {
    let blob = data(100_000);
    let digest = sha256_digest(&blob);
    for honour in [true, false] {
        let s = range_server(blob.clone(), None, honour);
        let c = client(3, HashMap::new());
        let stream = c.blob(&reference(&s), &digest, 60_000).await.expect("open");
        assert_eq!(stream.size, Some(100_000));
        assert_eq!(stream.offset, 60_000);
        assert_eq!(
            collect(stream).await.expect("rest"),
            &blob[60_000..],
            "honour={honour}"
        );
        assert_eq!(
            s.requests()[0].headers.get("range").map(String::as_str),
            Some("bytes=60000-")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_cuts_end_in_a_clear_error() {
    let blob = data(50_000);
    let digest = sha256_digest(&blob);
    // The first response delivers 1000 bytes; every later one none at all.
    let b = blob.clone();
    let s = FakeServer::start(move |_, n| {
        Reply::new(200, b.clone()).cut(if n == 0 { 1000 } else { 0 })
    });
    let c = client(3, HashMap::new());
    let mut stream = c.blob(&reference(&s), &digest, 0).await.expect("open");
    let mut got = Vec::new();
    let err = loop {
        match stream.next().await {
            Some(Ok(chunk)) => got.extend_from_slice(&chunk),
            Some(Err(e)) => break e,
            None => panic!("stream ended without an error after {} bytes", got.len()),
        }
    };
    assert_eq!(got, &blob[..1000]);
    match &err {
        Error::Incomplete {
            digest: d,
            received,
            total,
            ..
        } => {
            assert_eq!(d, &digest);
            assert_eq!(*received, 1000);
            assert_eq!(*total, Some(50_000));
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(digest.as_ref()) && msg.contains("1000 of 50000"),
        "{msg}"
    );
    // One first request, then max_retries resumes.
    assert_eq!(s.requests().len(), 4);
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_before_the_registry() {
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let origin = FakeServer::start(move |_, _| {
        Reply::new(200, body.to_vec()).header("Content-Type", media_types::OCI_MANIFEST)
    });
    let broken = FakeServer::start(|_, _| Reply::new(404, "no"));
    let good = FakeServer::start(move |_, _| {
        Reply::new(200, body.to_vec()).header("Content-Type", media_types::OCI_MANIFEST)
    });
    let r = reference(&origin);

    // A mirror without the manifest: fall through to the registry.
    let mirrors = HashMap::from([(origin.addr.clone(), vec![broken.addr.clone()])]);
    let m = client(0, mirrors)
        .get_manifest(&r, "t", &[])
        .await
        .expect("via origin");
    assert_eq!(m.digest, sha256_digest(body));
    assert_eq!(broken.requests().len(), 1);
    assert_eq!(origin.requests().len(), 1);

    // A mirror that has it: the registry is not asked.
    let mirrors = HashMap::from([(
        origin.addr.clone(),
        vec![broken.addr.clone(), format!("http://{}", good.addr)],
    )]);
    client(0, mirrors)
        .get_manifest(&r, "t", &[])
        .await
        .expect("via mirror");
    assert_eq!(good.requests().len(), 1);
    assert_eq!(good.requests()[0].path, "/v2/x/y/manifests/t");
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_manifest_is_refused() {
    let s = FakeServer::start(|_, _| Reply::new(200, vec![b' '; 5 << 20]));
    let e = client(0, HashMap::new())
        .get_manifest(&reference(&s), "t", &[])
        .await
        .expect_err("too big");
    assert!(e.to_string().contains("limit"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_token_is_replaced_once() {
    // The registry accepts only the latest token the (same-server) token endpoint issued.
    let issued = Arc::new(AtomicUsize::new(0));
    let addr_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let (iss, cell) = (Arc::clone(&issued), Arc::clone(&addr_cell));
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let s = FakeServer::start(move |req, _| {
        if req.path.starts_with("/token") {
            assert!(
                req.path.contains("scope=repository%3Ax%2Fy%3Apull"),
                "{}",
                req.path
            );
            let n = iss.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::new(200, format!(r#"{{"token":"t{n}","expires_in":300}}"#));
        }
        let latest = format!("Bearer t{}", iss.load(Ordering::SeqCst));
        if req.headers.get("authorization") == Some(&latest) && !req.path.contains("revoke") {
            Reply::new(200, body.to_vec()).header("Content-Type", media_types::OCI_MANIFEST)
        } else {
            let realm = format!("http://{}/token", cell.lock().expect("lock"));
            Reply::new(401, "").header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{realm}",service="fake",scope="repository:x/y:pull""#),
            )
        }
    });
    *addr_cell.lock().expect("lock") = s.addr.clone();
    let c = client(0, HashMap::new());
    let r = reference(&s);
    c.get_manifest(&r, "t", &[]).await.expect("first pull");
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    // The cached token is reused.
    c.get_manifest(&r, "t", &[]).await.expect("second pull");
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    // The token server "revokes" t1 by issuing t2 elsewhere: our t1 is refused, replaced, retried.
    issued.fetch_add(1, Ordering::SeqCst);
    c.get_manifest(&r, "t", &[])
        .await
        .expect("pull after revocation");
    assert_eq!(issued.load(Ordering::SeqCst), 3);
    // Anonymous with a token that keeps being refused: a clear error, no loop.
    let e = c
        .get_manifest(&r, "revoke", &[])
        .await
        .expect_err("always refused");
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("berth login"), "{e}");
}

#[tokio::test]
async fn an_unresolvable_registry_fails_at_once_without_retries() {
    // `.invalid` never resolves (RFC 2606); the answer comes from the local resolver.
    let c = client(5, HashMap::new());
    let r: Reference = "registry.berth-test.invalid/library/busybox:latest"
        .parse()
        .unwrap();
    let err = c.get_manifest(&r, "latest", &[]).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("registry.berth-test.invalid"), "{msg}");
    assert!(
        !msg.contains("attempts"),
        "a DNS failure was retried: {msg}"
    );
}
