//! End to end: the real `berth` binary against Debian's docker-registry on loopback, with
//! skopeo as the interop partner on the other side.

mod common;

use std::process::Command;

use berth_testutil::registry::{Auth, Registry};
use common::{
    Berth, Entry, busybox_layers, chain_top, layer, skopeo_push, with_image_root, write_layout,
};

fn push_busybox(reg: &Registry, repo: &str, creds: Option<&str>) -> String {
    let layout = tempfile::tempdir().unwrap();
    let md = write_layout(layout.path(), "v1", &busybox_layers(), ("linux", "amd64"));
    skopeo_push(layout.path(), "v1", &reg.addr(), repo, creds);
    md
}

#[test]
fn an_image_copied_in_by_skopeo_pulls_and_its_layers_are_applied() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::None);
    push_busybox(&reg, "e2e/busybox", None);
    let b = Berth::new();
    let name = format!("{}/e2e/busybox:v1", reg.addr());
    let out = b.ok(&["pull", &name]);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.trim_end().ends_with(&name), "{out}");

    let images = b.ok(&["images"]);
    assert!(
        images.contains(&format!("{}/e2e/busybox", reg.addr())),
        "{images}"
    );
    assert!(images.contains("v1"), "{images}");

    with_image_root(&b.root(), &chain_top(&b, &name), |root| {
        assert_eq!(
            std::fs::read_to_string(root.join("etc/berth-layer2")).unwrap(),
            "hello from layer 2\n"
        );
        assert!(
            !root.join("etc/group").exists(),
            "the whiteout hides layer 1's /etc/group"
        );
        assert!(root.join("etc/passwd").exists());
        // The busybox from layer 1 runs.
        let out = Command::new("chroot")
            .arg(root)
            .args(["/bin/busybox", "cat", "/etc/berth-layer2"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from layer 2\n");
    });

    // A second pull finds everything present.
    let again = b.ok(&["pull", &name]);
    assert!(again.contains("Image is up to date"), "{again}");
    b.assert_clean();
}

#[test]
fn an_image_pushed_by_berth_is_read_by_skopeo_and_its_save_by_skopeo_oci_archive() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::None);
    let b = Berth::new();
    // Import a rootfs tarball, tag it for the registry, push it.
    let (gz, _) = layer(&[
        Entry::Dir("etc"),
        Entry::File("etc/hello".into(), b"pushed by berth\n".to_vec()),
    ]);
    let tarball = b.dir.path().join("rootfs.tar.gz");
    std::fs::write(&tarball, &gz).unwrap();
    b.ok(&["import", tarball.to_str().unwrap(), "local/imported:v1"]);
    let dest = format!("{}/e2e/pushed:v1", reg.addr());
    b.ok(&["tag", "local/imported:v1", &dest]);
    b.ok(&["push", &dest]);

    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{dest}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);

    let copied = tempfile::tempdir().unwrap();
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{dest}"),
        ])
        .arg(format!("oci:{}:v1", copied.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Pushing again finds every blob present.
    b.ok(&["push", &dest]);

    // save -> skopeo reads the OCI archive; load into a fresh store gives the same image.
    let archive = b.dir.path().join("saved.tar");
    b.ok(&["save", "-o", archive.to_str().unwrap(), "local/imported:v1"]);
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:x", out_dir.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy oci-archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let b2 = Berth::new();
    let loaded = b2.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        loaded.contains("Loaded image: local/imported:v1"),
        "{loaded}"
    );
    let id1 = b.ok(&["images", "-q", "local/imported"]);
    let id2 = b2.ok(&["images", "-q", "local/imported"]);
    assert_eq!(id1, id2);
    with_image_root(&b2.root(), &chain_top(&b2, "local/imported:v1"), |root| {
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hello")).unwrap(),
            "pushed by berth\n"
        );
    });
    b.assert_clean();
    b2.assert_clean();
}

#[test]
fn basic_auth_needs_login_and_logout_forgets() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::Basic {
        user: "alice".into(),
        password: "s3cret".into(),
    });
    push_busybox(&reg, "e2e/private", Some("alice:s3cret"));
    let b = Berth::new();
    let name = format!("{}/e2e/private:v1", reg.addr());
    let err = b.fails(&["pull", &name]);
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("authentication"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");

    let bad = b.run(&["login", "-u", "alice", "-p", "wrong", &reg.addr()]);
    assert!(!bad.status.success());
    b.ok_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr()],
        b"s3cret\n",
    );
    let mode = std::fs::metadata(b.auth_file()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    b.ok(&["pull", &name]);
    b.ok(&["logout", &reg.addr()]);
    b.ok(&["rmi", &name]);
    let err = b.fails(&["pull", &name]);
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("authentication"),
        "{err}"
    );
}

#[test]
fn token_auth_pulls_with_credentials() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::Token {
        user: "bob".into(),
        password: "tok3n".into(),
    });
    push_busybox(&reg, "e2e/tok", Some("bob:tok3n"));
    let b = Berth::new();
    let name = format!("{}/e2e/tok:v1", reg.addr());
    b.fails(&["pull", &name]);
    b.ok_stdin(
        &["login", "-u", "bob", "--password-stdin", &reg.addr()],
        b"tok3n",
    );
    b.ok(&["pull", &name]);
    // Push back under another name with the same token flow.
    let dest = format!("{}/e2e/tok2:v1", reg.addr());
    b.ok(&["tag", &name, &dest]);
    b.ok(&["push", &dest]);
}

#[test]
fn a_corrupted_blob_is_refused_and_nothing_is_recorded() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::None);
    push_busybox(&reg, "e2e/corrupt", None);
    // Flip a byte in the biggest blob the registry holds (the busybox layer).
    let mut biggest: Option<(u64, std::path::PathBuf)> = None;
    for e in walk(reg.data_dir()) {
        if e.file_name().is_some_and(|n| n == "data") {
            let len = std::fs::metadata(&e).unwrap().len();
            if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
                biggest = Some((len, e));
            }
        }
    }
    let (_, path) = biggest.unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let b = Berth::new();
    let name = format!("{}/e2e/corrupt:v1", reg.addr());
    let err = b.fails(&["pull", &name]);
    assert!(
        err.contains("sha256:") && err.matches("sha256:").count() >= 2
            || err.contains("diff ID")
            || err.contains("gzip")
            || err.contains("corrupt"),
        "names the digests: {err}"
    );
    assert!(b.ok(&["images", "-q"]).trim().is_empty());
    b.assert_clean();
}

#[test]
fn bad_input_gets_one_clear_line() {
    berth_testutil::require_root();
    let b = Berth::new();
    let err = b.fails(&["pull", "Invalid/UPPER:case"]);
    assert!(err.contains("Invalid/UPPER"), "{err}");
    let err = b.fails(&["pull", "--platform", "linux", "busybox"]);
    assert!(err.contains("os/architecture"), "{err}");
    let err = b.fails(&["rmi", "nosuchimage"]);
    assert!(err.contains("nosuchimage"), "{err}");
    let err = b.fails(&["image", "inspect", "nosuchimage"]);
    assert!(err.contains("nosuchimage"), "{err}");

    let reg = Registry::start(Auth::None);
    let err = b.fails(&["pull", &format!("{}/e2e/absent:v1", reg.addr())]);
    assert!(err.contains("absent"), "{err}");
    // An arm64-only image has no manifest for this host.
    push_busybox_platform(&reg, "e2e/arm", ("linux", "arm64"));
    let err = b.fails(&["pull", &format!("{}/e2e/arm:v1", reg.addr())]);
    assert!(err.contains("platform") || err.contains("arm64"), "{err}");
}

fn push_busybox_platform(reg: &Registry, repo: &str, platform: (&str, &str)) {
    // skopeo copies a single-manifest layout as is; wrap it in an index so platform selection
    // applies.
    let layout = tempfile::tempdir().unwrap();
    let md = write_layout(
        layout.path(),
        "v1",
        &[layer(&[Entry::File("x".into(), b"x".to_vec())])],
        platform,
    );
    let manifest_len = std::fs::metadata(
        layout
            .path()
            .join("blobs/sha256")
            .join(md.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest_len,
                       "platform": {"os": platform.0, "architecture": platform.1}}],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let hex = common::sha256_hex(&bytes);
    std::fs::write(layout.path().join("blobs/sha256").join(&hex), &bytes).unwrap();
    std::fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{hex}"), "size": bytes.len(),
                           "annotations": {"org.opencontainers.image.ref.name": "v1"}}],
        }))
        .unwrap(),
    )
    .unwrap();
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.path().display()))
        .arg(format!("docker://{}/{repo}:v1", reg.addr()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
