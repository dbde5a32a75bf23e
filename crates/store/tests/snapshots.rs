//! Integration tests (root): overlay and native snapshots with real mounts, GC and check on an
//! overlay store. Every mount is undone by a guard, even when an assertion fails.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_store::{
    Descriptor, Error, ImageRecord, Kind, LeaseResource, ProblemKind, SnapshotterKind, Store,
};
use berth_testutil::require_root;
use rustix::fs::{CWD, FileType, Mode, XattrFlags};

const NS: &str = "default";

/// Unmounts on drop (lazily if the mount is busy).
struct Mounted(PathBuf);

impl Mounted {
    fn new(mounts: &[berth_store::Mount], target: &Path) -> Mounted {
        fs::create_dir_all(target).unwrap();
        berth_store::mount(mounts, target).unwrap();
        Mounted(target.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if berth_store::unmount(&self.0).is_err() {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn whiteout(path: &Path) {
    rustix::fs::mknodat(CWD, path, FileType::CharacterDevice, Mode::empty(), 0).unwrap();
}

fn overlay_store() -> (tempfile::TempDir, Store) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), SnapshotterKind::Overlay).unwrap();
    assert!(s.snapshots.is_overlay());
    (dir, s)
}

#[test]
fn overlay_chain_whiteouts_views_and_remove() {
    let (dir, s) = overlay_store();
    let sn = &s.snapshots;

    // Layer 1, prepared with a parent chain of its own (none).
    sn.prepare(NS, "extract-1", None).unwrap();
    let up1 = sn.upper_dir(NS, "extract-1").unwrap();
    fs::write(up1.join("keep"), "keep").unwrap();
    fs::write(up1.join("gone"), "gone").unwrap();
    fs::create_dir(up1.join("dir")).unwrap();
    fs::write(up1.join("dir/old"), "old").unwrap();

    // Layer 2, unpacked detached (in parallel with layer 1 in a real pull).
    let up2 = sn.prepare_detached(NS, "extract-2").unwrap();
    whiteout(&up2.join("gone"));
    fs::create_dir(up2.join("dir")).unwrap();
    rustix::fs::setxattr(
        up2.join("dir"),
        "trusted.overlay.opaque",
        b"y",
        XattrFlags::empty(),
    )
    .unwrap();
    fs::write(up2.join("dir/new"), "new").unwrap();
    fs::write(up2.join("top"), "top").unwrap();

    // Layer 2 cannot be committed on a parent that is not committed yet.
    assert!(matches!(
        sn.commit_with_parent(NS, "L2", "extract-2", Some("extract-1")),
        Err(Error::SnapshotState { .. })
    ));
    sn.commit(NS, "L1", "extract-1").unwrap();
    sn.commit_with_parent(NS, "L2", "extract-2", Some("L1"))
        .unwrap();
    assert_eq!(
        sn.stat(NS, "L2").unwrap().unwrap().parent.as_deref(),
        Some("L1")
    );
    assert!(sn.stat(NS, "extract-2").unwrap().is_none());

    // A container's writable layer.
    let mounts = sn.prepare(NS, "ctr", Some("L2")).unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].typ, "overlay");
    let target = dir.path().join("mnt");
    {
        let _m = Mounted::new(&mounts, &target);
        assert_eq!(fs::read_to_string(target.join("keep")).unwrap(), "keep");
        assert_eq!(fs::read_to_string(target.join("top")).unwrap(), "top");
        assert!(
            !target.join("gone").exists(),
            "whiteout hides the lower file"
        );
        assert!(
            !target.join("dir/old").exists(),
            "opaque dir hides the lower dir's content"
        );
        assert_eq!(fs::read_to_string(target.join("dir/new")).unwrap(), "new");
        fs::write(target.join("written"), "w").unwrap();
    }
    let ctr_upper = sn.upper_dir(NS, "ctr").unwrap();
    assert_eq!(
        fs::read_to_string(ctr_upper.join("written")).unwrap(),
        "w",
        "writes land in the upper dir"
    );
    assert!(!up2.join("written").exists(), "committed layers untouched");

    // Views: two layers -> read-only overlay; one layer -> read-only bind.
    for (key, parent, typ) in [("v2", "L2", "overlay"), ("v1", "L1", "bind")] {
        let mounts = sn.view(NS, key, Some(parent)).unwrap();
        assert_eq!(mounts[0].typ, typ);
        assert_eq!(sn.stat(NS, key).unwrap().unwrap().kind, Kind::View);
        let target = dir.path().join(key);
        let _m = Mounted::new(&mounts, &target);
        assert!(target.join("keep").exists());
        let err = fs::write(target.join("x"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{key}: {err}");
    }
    assert!(matches!(
        sn.commit(NS, "nope", "v1"),
        Err(Error::SnapshotState { .. })
    ));

    // Remove refuses while children exist.
    let err = sn.remove(NS, "L1").unwrap_err();
    assert!(matches!(err, Error::HasChildren { .. }), "{err}");
    assert!(
        err.to_string().contains("L2") && err.to_string().contains("v1"),
        "{err}"
    );
    for k in ["ctr", "v2", "v1", "L2", "L1"] {
        sn.remove(NS, k).unwrap();
    }
    assert!(sn.list(NS).unwrap().is_empty());
    assert!(s.check(false).unwrap().problems.is_empty());
}

#[test]
fn overlay_long_chain_mounts() {
    // 150 layers: the lowerdir list (~30 bytes a layer here) is over one page, which plain
    // mount(2) refuses; berth_store::mount passes the layers one by one.
    const LAYERS: usize = 150;
    let (dir, s) = overlay_store();
    let sn = &s.snapshots;
    let mut parent: Option<String> = None;
    for i in 0..LAYERS {
        let key = format!("extract-{i}");
        sn.prepare(NS, &key, parent.as_deref()).unwrap();
        fs::write(
            sn.upper_dir(NS, &key).unwrap().join(format!("f{i}")),
            i.to_string(),
        )
        .unwrap();
        let name = format!("L{i}");
        sn.commit(NS, &name, &key).unwrap();
        parent = Some(name);
    }
    let mounts = sn.prepare(NS, "ctr", parent.as_deref()).unwrap();
    let lower = mounts[0]
        .options
        .iter()
        .find(|o| o.starts_with("lowerdir="))
        .unwrap();
    assert!(
        lower.len() > 4096,
        "the test must exceed one page ({} bytes)",
        lower.len()
    );
    let target = dir.path().join("mnt");
    let _m = Mounted::new(&mounts, &target);
    for i in [0, LAYERS / 2, LAYERS - 1] {
        assert_eq!(
            fs::read_to_string(target.join(format!("f{i}"))).unwrap(),
            i.to_string()
        );
    }
}

#[test]
fn native_forced_copies_everything() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), SnapshotterKind::Native).unwrap();
    assert!(!s.snapshots.is_overlay());
    let sn = &s.snapshots;
    sn.prepare(NS, "extract-1", None).unwrap();
    let up = sn.upper_dir(NS, "extract-1").unwrap();
    fs::write(up.join("suid"), "x").unwrap();
    rustix::fs::chown(
        up.join("suid"),
        Some(rustix::fs::Uid::from_raw(1234)),
        Some(rustix::fs::Gid::from_raw(5678)),
    )
    .unwrap();
    fs::set_permissions(up.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("suid", up.join("link")).unwrap();
    fs::write(up.join("h1"), "hard").unwrap();
    fs::hard_link(up.join("h1"), up.join("h2")).unwrap();
    fs::create_dir(up.join("d")).unwrap();
    rustix::fs::mknodat(
        CWD,
        up.join("d/null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        up.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(up.join("h1"), "user.test", b"v", XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(up.join("d"), "trusted.test", b"t", XattrFlags::empty()).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    fs::File::open(up.join("d"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    sn.commit(NS, "L1", "extract-1").unwrap();

    let mounts = sn.prepare(NS, "ctr", Some("L1")).unwrap();
    assert_eq!(mounts[0].typ, "bind");
    let c = sn.upper_dir(NS, "ctr").unwrap();
    let m = fs::metadata(c.join("suid")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o4755));
    assert_eq!(fs::read_link(c.join("link")).unwrap(), Path::new("suid"));
    assert_eq!(
        fs::metadata(c.join("h1")).unwrap().ino(),
        fs::metadata(c.join("h2")).unwrap().ino()
    );
    let dev = fs::symlink_metadata(c.join("d/null")).unwrap();
    assert_eq!(dev.rdev(), rustix::fs::makedev(1, 3));
    assert!(
        FileType::from_raw_mode(fs::symlink_metadata(c.join("fifo")).unwrap().mode())
            == FileType::Fifo
    );
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(c.join("h1"), "user.test", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"v");
    let n = rustix::fs::getxattr(c.join("d"), "trusted.test", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"t");
    assert_eq!(fs::metadata(c.join("d")).unwrap().mtime(), 1_000_000);

    let target = dir.path().join("mnt");
    {
        let _m = Mounted::new(&mounts, &target);
        fs::write(target.join("new"), "n").unwrap();
    }
    assert!(c.join("new").exists());
    assert!(!up.join("new").exists(), "the parent is untouched");
    let view = sn.view(NS, "v", Some("L1")).unwrap();
    let vt = dir.path().join("view");
    {
        let _m = Mounted::new(&view, &vt);
        assert!(vt.join("suid").exists());
        assert_eq!(
            fs::write(vt.join("x"), "x").unwrap_err().raw_os_error(),
            Some(libc::EROFS)
        );
    }
    assert!(matches!(
        sn.prepare_detached(NS, "x"),
        Err(Error::Unsupported { .. })
    ));
    drop(s);
    assert!(matches!(
        Store::open_with(dir.path(), SnapshotterKind::Overlay),
        Err(Error::Unsupported { .. })
    ));
}

fn image(name: &str, target: &berth_store::Digest) -> ImageRecord {
    ImageRecord {
        name: name.into(),
        target: Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: target.clone(),
            size: 0,
        },
        created: 0,
        updated: 0,
        labels: BTreeMap::new(),
    }
}

#[test]
fn gc_and_check_on_overlay() {
    let (_dir, s) = overlay_store();
    let sn = &s.snapshots;
    // A pulled image, following the lease contract.
    s.meta.create_lease(NS, "pull", None).unwrap();
    let manifest_bytes = b"{\"manifest\":true}";
    let layer_bytes = b"layer".repeat(1000);
    let config = s.content.put(b"{\"config\":true}", None).unwrap();
    let manifest =
        berth_store::Digest::try_from(format!("sha256:{}", sha256_hex(manifest_bytes))).unwrap();
    let layer =
        berth_store::Digest::try_from(format!("sha256:{}", sha256_hex(&layer_bytes))).unwrap();
    for d in [&manifest, &layer, &config] {
        s.meta
            .lease_add(NS, "pull", LeaseResource::Content(d.clone()))
            .unwrap();
    }
    let mut w = s
        .content
        .writer("layer", Some(&layer), Some(layer_bytes.len() as u64))
        .unwrap();
    std::io::Write::write_all(&mut w, &layer_bytes).unwrap();
    w.commit().unwrap();
    s.meta
        .lease_add(NS, "pull", LeaseResource::Snapshot("extract-x".into()))
        .unwrap();
    let up = sn.prepare_detached(NS, "extract-x").unwrap();
    fs::write(up.join("file"), "content").unwrap();
    // GC in the middle of the pull keeps everything the lease names.
    let mid = s.gc().unwrap();
    assert_eq!(
        (mid.blobs_removed, mid.snapshots_removed),
        (0, 0),
        "{mid:?}"
    );
    sn.commit_with_parent(NS, "sha256:chain", "extract-x", None)
        .unwrap();
    s.content.put(manifest_bytes, Some(&manifest)).unwrap();
    s.meta
        .set_children(&manifest, &[config.clone(), layer.clone()])
        .unwrap();
    s.meta
        .set_snapshot_ref(NS, &config, "sha256:chain")
        .unwrap();
    s.meta.put_image(NS, &image("img", &manifest)).unwrap();
    s.meta.delete_lease(NS, "pull").unwrap();

    // Garbage: a blob and a committed snapshot nobody references, a leased blob.
    let junk = s.content.put(b"junk", None).unwrap();
    sn.prepare(NS, "extract-junk", None).unwrap();
    sn.commit(NS, "junk", "extract-junk").unwrap();
    s.meta.create_lease(NS, "keep", None).unwrap();
    let leased = s.content.put(b"leased", None).unwrap();
    s.meta
        .lease_add(NS, "keep", LeaseResource::Content(leased.clone()))
        .unwrap();

    let r = s.gc().unwrap();
    assert_eq!((r.blobs_removed, r.snapshots_removed), (1, 1), "{r:?}");
    assert!(s.content.size(&junk).unwrap().is_none());
    assert!(s.content.size(&leased).unwrap().is_some());
    for d in [&manifest, &config, &layer] {
        assert!(s.content.size(d).unwrap().is_some(), "{d} kept");
    }
    assert!(sn.stat(NS, "sha256:chain").unwrap().is_some());
    assert!(sn.stat(NS, "junk").unwrap().is_none());
    assert!(s.check(false).unwrap().problems.is_empty());

    // Corrupt a blob (flip one byte) and add a stray directory: check reports, repair fixes.
    let p = s.content.path(&leased);
    let mut b = fs::read(&p).unwrap();
    b[0] ^= 1;
    fs::write(&p, b).unwrap();
    fs::create_dir_all(sn.dir().join("4242/fs")).unwrap();
    let r = s.check(false).unwrap();
    let kinds: Vec<_> = r.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [ProblemKind::CorruptBlob, ProblemKind::StrayDir],
        "{r}"
    );
    assert!(!r.is_clean());
    let r = s.check(true).unwrap();
    assert!(r.problems.iter().all(|p| p.repaired), "{r}");
    let r = s.check(false).unwrap();
    assert!(r.problems.is_empty() && r.is_clean(), "{r}");
    assert!(!sn.dir().join("4242").exists());
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}
