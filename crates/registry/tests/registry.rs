//! Against a real registry: Debian's docker-registry (distribution 2.8) on a loopback port,
//! without auth, with htpasswd basic auth, and with token auth.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_registry::{
    BlobStream, Client, Config, Digest, Error, Reference, auth, media_types, sha256_digest,
};
use berth_testutil::registry::{Auth, Registry};
use bytes::Bytes;
use futures_util::StreamExt as _;

fn client(auth_files: Vec<PathBuf>) -> Client {
    Client::new(Config {
        auth_files,
        max_retries: 3,
        ..Config::default()
    })
    .expect("client")
    .with_backoff(Duration::from_millis(10), Duration::from_millis(100))
}

/// Deterministic, incompressible-looking test data.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn write_blob(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, Digest, u64) {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write blob file");
    (
        p,
        sha256_digest(bytes),
        u64::try_from(bytes.len()).expect("len"),
    )
}

async fn collect(mut s: BlobStream) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn manifest(config: &(PathBuf, Digest, u64), layers: &[&(PathBuf, Digest, u64)]) -> Bytes {
    let layers: Vec<_> = layers
        .iter()
        .map(|(_, d, s)| serde_json::json!({"mediaType": media_types::OCI_LAYER_GZIP, "digest": d.to_string(), "size": s}))
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::OCI_CONFIG, "digest": config.1.to_string(), "size": config.2},
        "layers": layers,
    });
    Bytes::from(serde_json::to_vec(&m).expect("encode manifest"))
}

/// Push a config and one layer and a manifest tagged `tag`; returns the manifest digest.
async fn push_image(c: &Client, r: &Reference, dir: &Path, tag: &str) -> Result<Digest, Error> {
    let config = write_blob(
        dir,
        "config.json",
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let layer = write_blob(dir, "layer.bin", &data(300_000, 7));
    for b in [&config, &layer] {
        if c.blob_exists(r, &b.1).await?.is_none() {
            c.upload_blob(r, &b.1, b.2, &b.0, None).await?;
        }
    }
    c.put_manifest(
        r,
        tag,
        media_types::OCI_MANIFEST,
        manifest(&config, &[&layer]),
    )
    .await
}

#[tokio::test]
async fn push_mount_and_pull_without_auth() {
    let reg = Registry::start(Auth::None);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(vec![]);
    let r: Reference = format!("{}/test/app:v1", reg.addr()).parse().expect("ref");

    // Monolithic upload.
    let config = write_blob(
        dir.path(),
        "config",
        br#"{"architecture":"amd64","os":"linux"}"#,
    );
    assert_eq!(c.blob_exists(&r, &config.1).await.expect("head"), None);
    c.upload_blob(&r, &config.1, config.2, &config.0, None)
        .await
        .expect("monolithic upload");
    assert_eq!(
        c.blob_exists(&r, &config.1).await.expect("head"),
        Some(config.2)
    );

    // Chunked upload: 2.5 chunks.
    let layer_bytes = data(2_621_440 + 12_345, 1);
    let layer = write_blob(dir.path(), "layer", &layer_bytes);
    c.upload_blob(&r, &layer.1, layer.2, &layer.0, Some(1 << 20))
        .await
        .expect("chunked upload");
    assert_eq!(
        c.blob_exists(&r, &layer.1).await.expect("head"),
        Some(layer.2)
    );

    // A second, small layer uploaded with a chunk size bigger than it (monolithic path).
    let small = write_blob(dir.path(), "small", &data(1000, 2));
    c.upload_blob(&r, &small.1, small.2, &small.0, Some(1 << 20))
        .await
        .expect("small upload");

    // Cross-repository mount.
    let other: Reference = format!("{}/test/other:v1", reg.addr())
        .parse()
        .expect("ref");
    assert_eq!(c.blob_exists(&other, &layer.1).await.expect("head"), None);
    assert!(c.mount_blob(&other, &layer.1, &r).await.expect("mount"));
    assert_eq!(
        c.blob_exists(&other, &layer.1).await.expect("head"),
        Some(layer.2)
    );
    // Mounting a blob the source does not have is declined (and the upload cancelled).
    let unknown = sha256_digest(b"nobody has this");
    assert!(
        !c.mount_blob(&other, &unknown, &r)
            .await
            .expect("mount unknown")
    );
    // Another registry cannot mount.
    let elsewhere: Reference = "quay.io/x/y:1".parse().expect("ref");
    assert!(
        !c.mount_blob(&other, &layer.1, &elsewhere)
            .await
            .expect("mount cross-registry")
    );

    // Manifest by tag and by digest.
    let body = manifest(&config, &[&layer, &small]);
    let digest = c
        .put_manifest(&r, "v1", media_types::OCI_MANIFEST, body.clone())
        .await
        .expect("put manifest");
    assert_eq!(digest, sha256_digest(&body));
    let m = c.get_manifest(&r, "v1", &[]).await.expect("get by tag");
    assert_eq!(m.bytes, body);
    assert_eq!(m.media_type, media_types::OCI_MANIFEST);
    assert_eq!(m.digest, digest);
    let m = c
        .get_manifest(&r, digest.as_ref(), &[media_types::OCI_MANIFEST])
        .await
        .expect("get by digest");
    assert_eq!(m.bytes, body);
    // Put by digest too.
    let d2 = c
        .put_manifest(
            &other,
            digest.as_ref(),
            media_types::OCI_MANIFEST,
            body.clone(),
        )
        .await;
    // `other` lacks the config and the small layer: the registry refuses; that is a Status error.
    assert!(
        matches!(d2, Err(Error::Status { status: 400, .. })),
        "{d2:?}"
    );

    // Not found, naming the reference.
    match c.get_manifest(&r, "nope", &[]).await {
        Err(Error::NotFound { what }) => assert!(what.contains("test/app:nope"), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match c.blob(&r, &unknown, 0).await {
        Err(Error::NotFound { what }) => assert!(what.contains(unknown.as_ref()), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    // Stream the blob, whole and from an offset.
    let s = c.blob(&r, &layer.1, 0).await.expect("blob");
    assert_eq!(s.size, Some(layer.2));
    assert_eq!(collect(s).await.expect("read blob"), layer_bytes);
    let s = c
        .blob(&r, &layer.1, 1_000_000)
        .await
        .expect("blob from offset");
    assert_eq!(s.size, Some(layer.2));
    assert_eq!(
        collect(s).await.expect("read rest"),
        &layer_bytes[1_000_000..]
    );
    // From the end: nothing left.
    let s = c.blob(&r, &layer.1, layer.2).await.expect("blob at end");
    assert!(collect(s).await.expect("read nothing").is_empty());
}

#[tokio::test]
async fn basic_auth() {
    let reg = Registry::start(Auth::Basic {
        user: "alice".into(),
        password: "s3cret".into(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let r: Reference = format!("{}/team/app:1", reg.addr()).parse().expect("ref");

    // No credentials: a clear refusal.
    let anon = client(vec![dir.path().join("none.json")]);
    match push_image(&anon, &r, dir.path(), "1").await {
        Err(Error::Unauthorized { message, .. }) => {
            assert!(message.contains("berth login"), "{message}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }

    // Credentials from a config.json.
    let file = dir.path().join("auth/config.json");
    auth::store(&file, &reg.addr(), "alice", "s3cret").expect("store");
    let c = client(vec![file.clone()]);
    let digest = push_image(&c, &r, dir.path(), "1")
        .await
        .expect("push with basic auth");
    let m = c
        .get_manifest(&r, "1", &[])
        .await
        .expect("pull with basic auth");
    assert_eq!(m.digest, digest);

    // Wrong credentials in the file.
    let bad = dir.path().join("bad.json");
    auth::store(&bad, &reg.addr(), "alice", "wrong").expect("store");
    match client(vec![bad]).get_manifest(&r, "1", &[]).await {
        Err(Error::Unauthorized { message, .. }) => assert!(message.contains("alice"), "{message}"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }

    // login: good and bad; after a good login the client uses the credentials.
    let fresh = client(vec![]);
    match fresh.login(&reg.addr(), "alice", "nope").await {
        Err(Error::Unauthorized { message, .. }) => {
            assert!(message.contains("wrong user name or password"), "{message}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    fresh
        .login(&reg.addr(), "alice", "s3cret")
        .await
        .expect("login");
    assert_eq!(
        fresh
            .get_manifest(&r, "1", &[])
            .await
            .expect("pull after login")
            .digest,
        digest
    );
}

#[tokio::test]
async fn token_auth() {
    let reg = Registry::start(Auth::Token {
        user: "bob".into(),
        password: "tok-pw".into(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let r: Reference = format!("{}/team/app:1", reg.addr()).parse().expect("ref");
    let file = dir.path().join("auth/config.json");
    auth::store(&file, &reg.addr(), "bob", "tok-pw").expect("store");
    let c = client(vec![file]);

    let digest = push_image(&c, &r, dir.path(), "1")
        .await
        .unwrap_or_else(|e| panic!("push with a token: {e}\n{}", reg.log()));
    let m = c
        .get_manifest(&r, "1", &[])
        .await
        .expect("pull with a token");
    assert_eq!(m.digest, digest);
    let layer = write_blob(dir.path(), "layer.bin", &data(300_000, 7));
    let s = c.blob(&r, &layer.1, 0).await.expect("blob with a token");
    assert_eq!(collect(s).await.expect("read"), data(300_000, 7));
    // Mount needs push on the target and pull on the source: two scopes in one token.
    let other: Reference = format!("{}/team/other:1", reg.addr()).parse().expect("ref");
    assert!(
        c.mount_blob(&other, &layer.1, &r)
            .await
            .expect("mount with a token")
    );

    // Anonymous: the token service hands out a token that grants nothing.
    let anon = client(vec![]);
    match anon.get_manifest(&r, "1", &[]).await {
        Err(Error::Unauthorized { message, .. }) => {
            assert!(message.contains("berth login"), "{message}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }

    // Bad credentials: the token service refuses them.
    let bad_file = dir.path().join("bad.json");
    auth::store(&bad_file, &reg.addr(), "bob", "wrong").expect("store");
    match client(vec![bad_file]).get_manifest(&r, "1", &[]).await {
        Err(Error::Unauthorized { message, .. }) => {
            assert!(message.contains("refused the credentials"), "{message}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }

    // login through the token service.
    let fresh = client(vec![]);
    assert!(matches!(
        fresh.login(&reg.addr(), "bob", "nope").await,
        Err(Error::Unauthorized { .. })
    ));
    fresh
        .login(&reg.addr(), "bob", "tok-pw")
        .await
        .expect("login");
    assert_eq!(
        fresh
            .get_manifest(&r, "1", &[])
            .await
            .expect("pull after login")
            .digest,
        digest
    );
}
