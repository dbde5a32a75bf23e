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

    with_image_root(&b, &chain_top(&b, &name), |root| {
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
    with_image_root(&b2, &chain_top(&b2, "local/imported:v1"), |root| {
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

    let err = b.fails(&["load", "-i", "/etc/passwd"]);
    assert!(err.contains("not a tar archive"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = b.fails(&["import", "/etc/passwd", "local/x:1"]);
    assert!(err.contains("not a tar archive"), "{err}");
    assert!(b.ok(&["images", "-q"]).trim().is_empty());

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

#[test]
fn docker_schema2_zstd_and_native_snapshots_pull_by_tag_and_digest() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::None);
    let layers = busybox_layers();
    let gzip = tempfile::tempdir().unwrap();
    write_layout(gzip.path(), "v1", &layers, ("linux", "amd64"));
    let zstd = tempfile::tempdir().unwrap();
    write_layout(
        zstd.path(),
        "v1",
        &common::zstd_layers(&layers),
        ("linux", "amd64"),
    );
    // skopeo converts the first to Docker schema 2. The zstd layout goes in through berth itself
    // (load of the layout as a tar, then push): skopeo 1.9 recompresses zstd layers to gzip.
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
        ])
        .arg(format!("oci:{}:v1", gzip.path().display()))
        .arg(format!("docker://{}/e2e/docker:v1", reg.addr()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pusher = Berth::new();
    let tar = pusher.dir.path().join("zstd-layout.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(zstd.path())
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let zstd_name = format!("{}/e2e/zstd:v1", reg.addr());
    let loaded = pusher.ok(&["load", "-i", tar.to_str().unwrap()]);
    let id = loaded.trim().rsplit(' ').next().unwrap().to_owned();
    pusher.ok(&["tag", &id, &zstd_name]);
    pusher.ok(&["push", &zstd_name]);
    for snapshotter in ["overlayfs", "native"] {
        let b = Berth::new();
        for repo in ["e2e/docker", "e2e/zstd"] {
            let name = format!("{}/{repo}:v1", reg.addr());
            b.ok(&["--snapshotter", snapshotter, "pull", "-q", &name]);
            let v: serde_json::Value =
                serde_json::from_str(&b.ok(&["image", "inspect", &name])).unwrap();
            let mt = v[0]["Layers"][0]["mediaType"].as_str().unwrap().to_owned();
            if repo == "e2e/docker" {
                assert_eq!(mt, "application/vnd.docker.image.rootfs.diff.tar.gzip");
            } else {
                assert!(mt.ends_with("+zstd"), "{mt}");
            }
            with_image_root(&b, &chain_top(&b, &name), |root| {
                assert_eq!(
                    std::fs::read_to_string(root.join("etc/berth-layer2")).unwrap(),
                    "hello from layer 2\n"
                );
                assert!(
                    !root.join("etc/group").exists(),
                    "whiteout applied ({snapshotter})"
                );
                assert!(root.join("bin/busybox").exists());
            });
            // The same image by digest.
            let digest = v[0]["Descriptor"]["digest"].as_str().unwrap().to_owned();
            let by_digest = format!("{}/{repo}@{digest}", reg.addr());
            b.ok(&["pull", "-q", &by_digest]);
            assert!(b.ok(&["images", "--digests"]).contains(&digest));
        }
        b.assert_clean();
    }
}

#[test]
fn docker_archives_from_skopeo_load_and_platforms_are_selectable() {
    berth_testutil::require_root();
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), "v1", &busybox_layers(), ("linux", "amd64"));
    let b = Berth::new();
    let archive = b.dir.path().join("docker-save.tar");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:v1", layout.path().display()))
        .arg(format!(
            "docker-archive:{}:example/app:v1",
            archive.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded = b.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: example/app:v1"), "{loaded}");
    with_image_root(&b, &chain_top(&b, "example/app:v1"), |root| {
        assert!(root.join("etc/berth-layer2").exists());
        assert!(!root.join("etc/group").exists());
    });
    // A save of that loads back into a fresh store from stdin.
    let saved = b.dir.path().join("resaved.tar");
    b.ok(&["save", "-o", saved.to_str().unwrap(), "example/app:v1"]);
    let b2 = Berth::new();
    b2.ok_stdin(&["load"], &std::fs::read(&saved).unwrap());
    assert_eq!(b.ok(&["images", "-q"]), b2.ok(&["images", "-q"]));

    // An arm64-only index: refused for this host, pulled with --platform.
    let reg = Registry::start(Auth::None);
    push_busybox_platform(&reg, "e2e/arm64", ("linux", "arm64"));
    let name = format!("{}/e2e/arm64:v1", reg.addr());
    let err = b.fails(&["pull", &name]);
    assert!(
        err.contains("linux/arm64"),
        "names what the index offers: {err}"
    );
    b.ok(&["pull", "-q", "--platform", "linux/arm64", &name]);
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["image", "inspect", &name])).unwrap();
    assert_eq!(v[0]["Architecture"], "arm64");
    b.assert_clean();
}

#[test]
fn malicious_layers_are_refused_and_nothing_escapes() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::None);
    let outside = tempfile::tempdir().unwrap();
    // A symlink to a host directory, then a file "through" it: the link is resolved inside the
    // layer (where that directory does not exist), so the entry is refused; never written on
    // the host.
    let contained = {
        // Point the link at the real outside directory.
        let target = outside.path().to_str().unwrap().to_owned();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, "evil", &target).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "evil/pwned", &b"x"[..]).unwrap();
        gzip_tar(b.into_inner().unwrap())
    };
    // A raw `../` name (the tar crate's builder refuses to write one; write the header by hand).
    let escaping = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let name = b"../../../../../../tmp/berth-escape-test";
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        gzip_tar(b.into_inner().unwrap())
    };
    for (repo, layer) in [("e2e/contained", contained), ("e2e/escaping", escaping)] {
        let layout = tempfile::tempdir().unwrap();
        write_layout(layout.path(), "v1", &[layer], ("linux", "amd64"));
        skopeo_push(layout.path(), "v1", &reg.addr(), repo, None);
    }
    let b = Berth::new();
    let err = b.fails(&["pull", "-q", &format!("{}/e2e/contained:v1", reg.addr())]);
    assert!(err.contains("evil/pwned"), "names the entry: {err}");
    assert!(
        !outside.path().join("pwned").exists(),
        "a file escaped through a symlink"
    );
    let err = b.fails(&["pull", "-q", &format!("{}/e2e/escaping:v1", reg.addr())]);
    assert!(err.contains(".."), "names the bad path: {err}");
    assert!(!std::path::Path::new("/tmp/berth-escape-test").exists());
    assert!(
        b.ok(&["images", "-q"]).trim().is_empty(),
        "nothing recorded"
    );
    // No extraction snapshot is left behind either (berthd holds the store: stop it first).
    b.stop_daemon();
    let store = berth_store::Store::open(&b.root()).unwrap();
    assert!(store.snapshots.list("default").unwrap().is_empty());
    drop(store);
    b.assert_clean();
}

fn gzip_tar(tar: Vec<u8>) -> (Vec<u8>, String) {
    use std::io::Write;
    let diff = common::sha256_hex(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff)
}
