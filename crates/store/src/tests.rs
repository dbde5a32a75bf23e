//! Unit tests: no root needed (native snapshots, no mounts).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), SnapshotterKind::Native).unwrap();
    (dir, s)
}

fn digest_of(b: &[u8]) -> Digest {
    Digest::from_str(&format!("sha256:{}", hex::encode(Sha256::digest(b)))).unwrap()
}

fn image(name: &str, target: &Digest) -> ImageRecord {
    ImageRecord {
        name: name.into(),
        target: Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: target.clone(),
            size: 1,
        },
        created: 1,
        updated: 1,
        labels: BTreeMap::new(),
    }
}

// ---- content ----

#[test]
fn write_commit_read() {
    let (_d, s) = store();
    let data = b"hello world".repeat(1000);
    let want = digest_of(&data);
    let mut w = s
        .content
        .writer("k1", Some(&want), Some(data.len() as u64))
        .unwrap();
    assert_eq!(w.offset(), 0);
    w.write_all(&data).unwrap();
    assert_eq!(w.offset(), data.len() as u64);
    assert_eq!(w.commit().unwrap(), want);
    assert_eq!(s.content.read(&want).unwrap(), data);
    assert_eq!(s.content.size(&want).unwrap(), Some(data.len() as u64));
    assert_eq!(
        s.content.list().unwrap(),
        vec![(want.clone(), data.len() as u64)]
    );
    s.content.verify(&want).unwrap();
    assert!(
        s.content.ingests().unwrap().is_empty(),
        "ingest removed after commit"
    );
    // Committing the same content again is a no-op success.
    let mut w = s.content.writer("k2", Some(&want), None).unwrap();
    w.write_all(&data).unwrap();
    assert_eq!(w.commit().unwrap(), want);
    assert!(s.content.ingests().unwrap().is_empty());
}

#[test]
fn resume_after_drop() {
    let (_d, s) = store();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let want = digest_of(&data);
    {
        let mut w = s
            .content
            .writer("layer", Some(&want), Some(data.len() as u64))
            .unwrap();
        w.write_all(&data[..123_456]).unwrap();
        w.flush().unwrap();
        // Dropped without commit: a killed pull.
    }
    assert_eq!(
        s.content.size(&want).unwrap(),
        None,
        "nothing visible before commit"
    );
    let mut w = s
        .content
        .writer("layer", Some(&want), Some(data.len() as u64))
        .unwrap();
    assert_eq!(w.offset(), 123_456);
    w.write_all(&data[123_456..]).unwrap();
    assert_eq!(w.commit().unwrap(), want);
    s.content.verify(&want).unwrap();
}

#[test]
fn digest_mismatch_commits_nothing() {
    let (_d, s) = store();
    let wrong = digest_of(b"something else");
    let mut w = s.content.writer("bad", Some(&wrong), None).unwrap();
    w.write_all(b"actual bytes").unwrap();
    let err = w.commit().unwrap_err();
    let actual = digest_of(b"actual bytes");
    match &err {
        Error::DigestMismatch {
            expected,
            actual: a,
        } => {
            assert_eq!(*expected, wrong);
            assert_eq!(*a, actual);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(wrong.as_ref()) && msg.contains(actual.as_ref()),
        "{msg}"
    );
    assert!(s.content.list().unwrap().is_empty());
    assert!(
        s.content.ingests().unwrap().is_empty(),
        "ingest removed on mismatch"
    );
    // put with a wrong expected digest is refused too.
    assert!(matches!(
        s.content.put(b"x", Some(&wrong)),
        Err(Error::DigestMismatch { .. })
    ));
    assert!(s.content.list().unwrap().is_empty());
}

#[test]
fn size_limits() {
    let (_d, s) = store();
    let mut w = s.content.writer("short", None, Some(10)).unwrap();
    w.write_all(b"12345").unwrap();
    assert!(matches!(
        w.commit(),
        Err(Error::SizeMismatch {
            expected: 10,
            actual: 5,
            ..
        })
    ));
    let mut w = s.content.writer("long", None, Some(3)).unwrap();
    assert!(
        w.write_all(b"12345").is_err(),
        "writing past the expected size fails"
    );
    w.abort().unwrap();
    assert!(s.content.list().unwrap().is_empty());
    assert!(s.content.ingests().unwrap().is_empty());
}

#[test]
fn concurrent_writer_same_key_is_busy() {
    let (_d, s) = store();
    let w = s.content.writer("same", None, None).unwrap();
    assert!(matches!(
        s.content.writer("same", None, None),
        Err(Error::IngestBusy { .. })
    ));
    assert!(s.content.ingests().unwrap()[0].busy);
    drop(w);
    let w = s.content.writer("same", None, None).unwrap();
    w.abort().unwrap();
}

#[test]
fn put_verify_corrupt_delete() {
    let (_d, s) = store();
    let d = s.content.put(b"{\"manifest\":1}", None).unwrap();
    assert_eq!(d, digest_of(b"{\"manifest\":1}"));
    assert_eq!(s.content.put(b"{\"manifest\":1}", Some(&d)).unwrap(), d);
    s.content.verify(&d).unwrap();
    let p = s.content.path(&d);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    assert!(matches!(s.content.verify(&d), Err(Error::Corrupt { .. })));
    s.content.delete(&d).unwrap();
    assert!(s.content.delete(&d).unwrap_err().is_not_found());
    assert!(s.content.read(&d).unwrap_err().is_not_found());
}

// ---- metadata ----

#[test]
fn images_are_per_namespace() {
    let (_d, s) = store();
    let t = digest_of(b"m");
    s.meta.put_image("default", &image("b", &t)).unwrap();
    s.meta.put_image("default", &image("a", &t)).unwrap();
    s.meta.put_image("k8s.io", &image("a", &t)).unwrap();
    let names: Vec<_> = s
        .meta
        .list_images("default")
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(s.meta.list_images("k8s.io").unwrap().len(), 1);
    assert!(s.meta.list_images("other").unwrap().is_empty());
    assert_eq!(
        s.meta
            .get_image("default", "a")
            .unwrap()
            .unwrap()
            .target
            .digest,
        t
    );
    assert!(s.meta.delete_image("default", "a").unwrap());
    assert!(!s.meta.delete_image("default", "a").unwrap());
    assert!(s.meta.get_image("default", "a").unwrap().is_none());
    assert!(
        s.meta.get_image("k8s.io", "a").unwrap().is_some(),
        "other namespace untouched"
    );
    assert_eq!(s.meta.namespaces().unwrap(), ["default", "k8s.io"]);
    assert!(matches!(
        s.meta.list_images("bad/ns"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        s.meta.list_images(""),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn relations_and_layer_cache() {
    let (_d, s) = store();
    let (a, b, c) = (digest_of(b"a"), digest_of(b"b"), digest_of(b"c"));
    s.meta.set_children(&a, &[b.clone(), c.clone()]).unwrap();
    assert_eq!(s.meta.children(&a).unwrap(), [b.clone(), c.clone()]);
    assert!(s.meta.children(&b).unwrap().is_empty());
    s.meta
        .set_snapshot_ref("default", &b, "sha256:chain")
        .unwrap();
    assert_eq!(
        s.meta.snapshot_ref("default", &b).unwrap().as_deref(),
        Some("sha256:chain")
    );
    assert_eq!(s.meta.snapshot_ref("k8s.io", &b).unwrap(), None);
    s.meta.set_layer_info(&c, &a).unwrap();
    assert_eq!(s.meta.layer_info(&c).unwrap(), Some(a));
}

#[test]
fn leases() {
    let (_d, s) = store();
    s.meta.create_lease("default", "pull-1", None).unwrap();
    assert!(
        s.meta
            .create_lease("default", "pull-1", None)
            .unwrap_err()
            .is_already_exists()
    );
    let d = digest_of(b"x");
    s.meta
        .lease_add("default", "pull-1", LeaseResource::Content(d.clone()))
        .unwrap();
    s.meta
        .lease_add("default", "pull-1", LeaseResource::Content(d.clone()))
        .unwrap();
    s.meta
        .lease_add(
            "default",
            "pull-1",
            LeaseResource::Snapshot("extract-1".into()),
        )
        .unwrap();
    let l = s.meta.get_lease("default", "pull-1").unwrap().unwrap();
    assert_eq!(l.resources.len(), 2);
    assert_eq!(l.owner, Some(Owner::current()));
    assert!(l.is_live(crate::util::now_nanos()));
    s.meta
        .lease_remove("default", "pull-1", &LeaseResource::Content(d))
        .unwrap();
    assert_eq!(
        s.meta
            .get_lease("default", "pull-1")
            .unwrap()
            .unwrap()
            .resources
            .len(),
        1
    );
    assert!(s.meta.list_leases("k8s.io").unwrap().is_empty());
    s.meta.delete_lease("default", "pull-1").unwrap();
    assert!(s.meta.get_lease("default", "pull-1").unwrap().is_none());
    assert!(
        s.meta
            .lease_add("default", "pull-1", LeaseResource::Snapshot("x".into()))
            .unwrap_err()
            .is_not_found()
    );

    // Expiry and dead owners.
    s.meta
        .create_lease("default", "short", Some(Duration::from_nanos(1)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(2));
    assert!(
        !s.meta
            .get_lease("default", "short")
            .unwrap()
            .unwrap()
            .is_live(crate::util::now_nanos())
    );
    let dead = Lease {
        id: "x".into(),
        created: 0,
        expires: None,
        owner: Some(Owner {
            pid: u32::MAX - 1,
            start: 1,
        }),
        resources: vec![],
    };
    assert!(!dead.is_live(0));
}

#[test]
fn threads_share_the_database() {
    let (_d, s) = store();
    let t = digest_of(b"m");
    std::thread::scope(|sc| {
        for i in 0..8 {
            let (s, t) = (&s, &t);
            sc.spawn(move || {
                for j in 0..20 {
                    s.meta
                        .put_image("default", &image(&format!("img-{i}-{j}"), t))
                        .unwrap();
                    s.meta.list_images("default").unwrap();
                }
            });
        }
    });
    assert_eq!(s.meta.list_images("default").unwrap().len(), 160);
}

#[test]
fn waits_for_another_holder() {
    let (_d, s) = store();
    // Another "process" (a separate redb handle) gets the file once we have been idle for
    // LINGER, and holds it for a while.
    let start = std::time::Instant::now();
    let other = loop {
        match redb::Database::create(s.meta.path()) {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if start.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("the store did not release the database: {e}"),
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(other);
    });
    tx.send(()).unwrap();
    s.meta
        .put_image("default", &image("a", &digest_of(b"m")))
        .unwrap();
    h.join().unwrap();
    assert!(s.meta.get_image("default", "a").unwrap().is_some());
}

// ---- snapshots (native, no mounts) ----

#[test]
fn native_snapshot_semantics() {
    let (_d, s) = store();
    assert!(!s.snapshots.is_overlay());
    let m = s.snapshots.prepare("default", "extract-1", None).unwrap();
    assert_eq!(m[0].typ, "bind");
    let up = s.snapshots.upper_dir("default", "extract-1").unwrap();
    std::fs::write(up.join("f"), b"1").unwrap();
    s.snapshots.commit("default", "L1", "extract-1").unwrap();
    assert!(s.snapshots.stat("default", "extract-1").unwrap().is_none());
    assert_eq!(
        s.snapshots.stat("default", "L1").unwrap().unwrap().kind,
        Kind::Committed
    );
    assert!(s.snapshots.mounts("default", "L1").is_err());
    s.snapshots.prepare("default", "c", Some("L1")).unwrap();
    let up = s.snapshots.upper_dir("default", "c").unwrap();
    assert_eq!(
        std::fs::read(up.join("f")).unwrap(),
        b"1",
        "native prepare copies the parent"
    );
    assert!(matches!(
        s.snapshots.prepare("default", "d", Some("c")),
        Err(Error::SnapshotState { .. })
    ));
    assert!(
        s.snapshots
            .prepare("default", "c", None)
            .unwrap_err()
            .is_already_exists()
    );
    assert!(matches!(
        s.snapshots.remove("default", "L1"),
        Err(Error::HasChildren { .. })
    ));
    assert!(matches!(
        s.snapshots.prepare_detached("default", "x"),
        Err(Error::Unsupported { .. })
    ));
    assert!(s.snapshots.stat("k8s.io", "L1").unwrap().is_none());
    let (bytes, inodes) = s.snapshots.usage("default", "c").unwrap();
    assert!(bytes > 0 && inodes == 2, "{bytes} {inodes}");
    s.snapshots.remove("default", "c").unwrap();
    s.snapshots.remove("default", "L1").unwrap();
    assert!(s.snapshots.list("default").unwrap().is_empty());
    assert!(s.check(false).unwrap().problems.is_empty());
}

#[test]
fn store_keeps_its_snapshotter() {
    let (d, s) = store();
    drop(s);
    assert!(matches!(
        Store::open_with(d.path(), SnapshotterKind::Overlay),
        Err(Error::Unsupported { .. })
    ));
    assert!(!Store::open(d.path()).unwrap().snapshots.is_overlay());
}

// ---- gc ----

/// image -> manifest -> (config -> snapshot chain L1 <- L2, layer)
fn populate(s: &Store) -> (Digest, Digest, Digest) {
    let manifest = s.content.put(b"manifest", None).unwrap();
    let config = s.content.put(b"config", None).unwrap();
    let layer = s.content.put(b"layer", None).unwrap();
    s.meta
        .set_children(&manifest, &[config.clone(), layer.clone()])
        .unwrap();
    s.snapshots.prepare("default", "extract-a", None).unwrap();
    s.snapshots.commit("default", "L1", "extract-a").unwrap();
    s.snapshots
        .prepare("default", "extract-b", Some("L1"))
        .unwrap();
    s.snapshots.commit("default", "L2", "extract-b").unwrap();
    s.meta.set_snapshot_ref("default", &config, "L2").unwrap();
    s.meta
        .put_image("default", &image("img", &manifest))
        .unwrap();
    (manifest, config, layer)
}

#[test]
fn gc_mark_and_sweep() {
    let (_d, s) = store();
    let (manifest, config, layer) = populate(&s);
    let junk = s.content.put(b"junk", None).unwrap();
    s.snapshots
        .prepare("default", "extract-orphan", None)
        .unwrap();
    s.snapshots
        .commit("default", "orphan", "extract-orphan")
        .unwrap();
    s.snapshots
        .prepare("default", "extract-dead", None)
        .unwrap(); // scratch without a lease
    s.snapshots
        .prepare("default", "container", Some("L1"))
        .unwrap(); // a container's layer

    let r = s.gc().unwrap();
    assert_eq!(r.blobs_removed, 1, "{r:?}");
    assert_eq!(r.snapshots_removed, 2, "{r:?}");
    assert!(r.bytes_freed >= 4);
    assert_eq!(s.content.size(&junk).unwrap(), None);
    for d in [&manifest, &config, &layer] {
        assert!(s.content.size(d).unwrap().is_some());
    }
    let names: Vec<_> = s
        .snapshots
        .list("default")
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["L1", "L2", "container"]);

    // Without the image, only the container's chain stays.
    s.meta.delete_image("default", "img").unwrap();
    let r = s.gc().unwrap();
    assert_eq!((r.blobs_removed, r.snapshots_removed), (3, 1), "{r:?}");
    assert!(
        s.meta.children(&manifest).unwrap().is_empty(),
        "edges of deleted blobs go too"
    );
    let names: Vec<_> = s
        .snapshots
        .list("default")
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["L1", "container"]);
    s.snapshots.remove("default", "container").unwrap();
    assert_eq!(s.gc().unwrap().snapshots_removed, 1);
    assert!(s.snapshots.list("default").unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(s.snapshots.dir()).unwrap().collect();
    assert!(
        left.is_empty(),
        "every snapshot directory removed: {left:?}"
    );
    assert!(s.check(false).unwrap().problems.is_empty());
}

#[test]
fn gc_is_per_namespace_for_snapshots() {
    let (_d, s) = store();
    let (_, config, _) = populate(&s);
    // Same config in k8s.io with its own snapshot, but no image there: the k8s.io snapshot goes.
    s.snapshots.prepare("k8s.io", "extract-x", None).unwrap();
    s.snapshots.commit("k8s.io", "L2", "extract-x").unwrap();
    s.meta.set_snapshot_ref("k8s.io", &config, "L2").unwrap();
    let r = s.gc().unwrap();
    assert_eq!(r.snapshots_removed, 1);
    assert!(s.snapshots.stat("k8s.io", "L2").unwrap().is_none());
    assert!(s.snapshots.stat("default", "L2").unwrap().is_some());
}

#[test]
fn gc_keeps_leased_and_drops_dead_leases() {
    let (_d, s) = store();
    let kept = s.content.put(b"leased", None).unwrap();
    let expiring = s.content.put(b"expiring", None).unwrap();
    s.meta.create_lease("default", "live", None).unwrap();
    s.meta
        .lease_add("default", "live", LeaseResource::Content(kept.clone()))
        .unwrap();
    s.meta
        .lease_add(
            "default",
            "live",
            LeaseResource::Snapshot("extract-live".into()),
        )
        .unwrap();
    s.snapshots
        .prepare("default", "extract-live", None)
        .unwrap();
    s.meta
        .create_lease_with(
            "default",
            "old",
            &LeaseOptions {
                expires_in: Some(Duration::from_nanos(1)),
                bind_to_process: false,
            },
        )
        .unwrap();
    s.meta
        .lease_add("default", "old", LeaseResource::Content(expiring.clone()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(2));
    let r = s.gc().unwrap();
    assert_eq!(
        (r.blobs_removed, r.leases_removed, r.snapshots_removed),
        (1, 1, 0),
        "{r:?}"
    );
    assert!(s.content.size(&kept).unwrap().is_some());
    assert!(s.content.size(&expiring).unwrap().is_none());
    assert!(
        s.snapshots
            .stat("default", "extract-live")
            .unwrap()
            .is_some()
    );
    s.meta.delete_lease("default", "live").unwrap();
    let r = s.gc().unwrap();
    assert_eq!((r.blobs_removed, r.snapshots_removed), (1, 1), "{r:?}");
}

#[test]
fn gc_removes_only_stale_unlocked_ingests() {
    let (_d, s) = store();
    let mut stale = s.content.writer("stale", None, None).unwrap();
    stale.write_all(b"partial").unwrap();
    stale.flush().unwrap();
    drop(stale);
    let mut fresh = s.content.writer("fresh", None, None).unwrap();
    fresh.write_all(b"partial").unwrap();
    fresh.flush().unwrap();
    drop(fresh);
    let busy = s.content.writer("busy", None, None).unwrap();
    // Age the "stale" and "busy" ingests.
    let old = std::time::SystemTime::now() - INGEST_MAX_AGE - Duration::from_secs(60);
    for ing in s.content.ingests().unwrap() {
        if ing.key.as_deref() != Some("fresh") {
            std::fs::File::options()
                .write(true)
                .open(ing.path.join("data"))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    let r = s.gc().unwrap();
    assert_eq!(r.ingests_removed, 1, "{r:?}");
    let keys: std::collections::BTreeSet<_> = s
        .content
        .ingests()
        .unwrap()
        .into_iter()
        .filter_map(|i| i.key)
        .collect();
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["busy", "fresh"]);
    busy.abort().unwrap();
}

// ---- check ----

#[test]
fn check_finds_and_repairs() {
    let (_d, s) = store();
    let (manifest, _config, layer) = populate(&s);
    assert!(s.check(false).unwrap().problems.is_empty());

    // Corrupt the layer blob, add a stray directory, lose a snapshot directory, leave debris.
    let p = s.content.path(&layer);
    let mut b = std::fs::read(&p).unwrap();
    b[0] ^= 0x80;
    std::fs::write(&p, b).unwrap();
    std::fs::create_dir_all(s.snapshots.dir().join("999/fs")).unwrap();
    std::fs::create_dir_all(s.snapshots.dir().join("tmp-1-1-copy0")).unwrap();
    s.snapshots
        .prepare("default", "extract-killed", None)
        .unwrap();
    s.snapshots
        .prepare("default", "orphan-active", None)
        .unwrap();
    let id = s
        .snapshots
        .stat("default", "orphan-active")
        .unwrap()
        .unwrap()
        .id;
    std::fs::remove_dir_all(s.snapshots.dir().join(id.to_string())).unwrap();
    let mut w = s.content.writer("killed-download", None, None).unwrap();
    w.write_all(b"abc").unwrap();
    drop(w);

    let r = s.check(false).unwrap();
    let kinds: Vec<_> = r.problems.iter().map(|p| p.kind).collect();
    for k in [
        ProblemKind::CorruptBlob,
        ProblemKind::MissingBlob,
        ProblemKind::StrayDir,
        ProblemKind::LeftoverTemp,
        ProblemKind::LeftoverSnapshot,
        ProblemKind::SnapshotWithoutDir,
        ProblemKind::LeftoverIngest,
    ] {
        assert!(kinds.contains(&k), "{k:?} not in\n{r}");
    }
    assert!(!r.is_clean());
    assert!(r.problems.iter().all(|p| !p.repaired));
    let text = r.to_string();
    assert!(
        text.contains(layer.as_ref()) && text.lines().count() == r.problems.len() + 1,
        "{text}"
    );

    let r = s.check(true).unwrap();
    assert!(!r.is_clean(), "the image still lacks its layer:\n{r}");
    assert!(
        s.content.size(&layer).unwrap().is_none(),
        "corrupt blob deleted"
    );
    assert!(!s.snapshots.dir().join("999").exists());
    assert!(
        s.snapshots
            .stat("default", "extract-killed")
            .unwrap()
            .is_none()
    );
    assert!(
        s.snapshots
            .stat("default", "orphan-active")
            .unwrap()
            .is_none()
    );
    // The killed ingest is younger than the grace period: reported, left alone.
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::LeftoverIngest && !p.repaired)
    );
    assert!(
        s.meta.get_image("default", "img").unwrap().is_some(),
        "image records are never deleted"
    );

    // Restoring the blob (a new pull) makes the store clean.
    s.content.put(b"layer", Some(&layer)).unwrap();
    let r = s.check(false).unwrap();
    assert!(r.is_clean(), "{r}");
    assert!(
        r.problems
            .iter()
            .all(|p| p.kind == ProblemKind::LeftoverIngest),
        "{r}"
    );
    assert!(s.content.size(&manifest).unwrap().is_some());
}

#[test]
fn commit_carries_leases_and_commit_in_lease() {
    let (_d, s) = store();
    s.meta.create_lease("default", "pull", None).unwrap();
    s.meta
        .lease_add(
            "default",
            "pull",
            LeaseResource::Snapshot("extract-1".into()),
        )
        .unwrap();
    s.snapshots.prepare("default", "extract-1", None).unwrap();
    s.snapshots
        .commit("default", "sha256:chain", "extract-1")
        .unwrap();
    let l = s.meta.get_lease("default", "pull").unwrap().unwrap();
    assert!(
        l.resources
            .contains(&LeaseResource::Snapshot("sha256:chain".into()))
    );
    let mut w = s.content.writer("unknown-digest", None, None).unwrap();
    w.write_all(b"imported").unwrap();
    let d = w.commit_in_lease(&s.meta, "default", "pull").unwrap();
    let p = s
        .content
        .put_in_lease(b"small", None, &s.meta, "default", "pull")
        .unwrap();
    let l = s.meta.get_lease("default", "pull").unwrap().unwrap();
    assert!(l.resources.contains(&LeaseResource::Content(d.clone())));
    assert!(l.resources.contains(&LeaseResource::Content(p.clone())));
    let r = s.gc().unwrap();
    assert_eq!((r.blobs_removed, r.snapshots_removed), (0, 0), "{r:?}");
    s.meta.delete_lease("default", "pull").unwrap();
    let r = s.gc().unwrap();
    assert_eq!((r.blobs_removed, r.snapshots_removed), (2, 1), "{r:?}");
}

#[test]
fn a_prepare_never_reuses_the_directory_of_a_prepare_that_did_not_commit() {
    let (_d, s) = store();
    let numbers = || -> BTreeSet<u64> {
        std::fs::read_dir(s.snapshots.dir())
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
            .collect()
    };
    s.snapshots.prepare("default", "c1", None).unwrap();
    let first = *numbers().iter().next().unwrap();
    // What a daemon killed between a prepare's directory and its commit leaves: a directory
    // under the next number, maybe still mounted by the container it was for.
    let stray = s.snapshots.dir().join((first + 1).to_string());
    std::fs::create_dir_all(stray.join("fs")).unwrap();
    std::fs::write(stray.join("fs/data"), b"in use").unwrap();
    let mounts = s.snapshots.prepare("default", "c2", None).unwrap();
    assert_eq!(
        numbers(),
        BTreeSet::from([first, first + 1, first + 2]),
        "the stray's number is skipped"
    );
    let fresh = s.snapshots.dir().join((first + 2).to_string());
    let mounted = format!("{mounts:?}");
    assert!(mounted.contains(fresh.to_str().unwrap()), "{mounted}");
    assert_eq!(std::fs::read(stray.join("fs/data")).unwrap(), b"in use");
    // The stray is the GC's to remove.
    assert_eq!(s.gc().unwrap().dirs_removed, 1);
    assert!(!stray.exists());
    assert!(s.snapshots.stat("default", "c2").unwrap().is_some());
}

#[test]
fn gc_collects_a_snapshot_directory_without_a_record() {
    let (_d, s) = store();
    s.snapshots.prepare("default", "c1", None).unwrap();
    // What a removal killed between dropping the record and deleting the tree leaves.
    let stray = s.snapshots.dir().join("999");
    std::fs::create_dir_all(stray.join("fs")).unwrap();
    let r = s.gc().unwrap();
    assert_eq!(r.dirs_removed, 1, "{r}");
    assert!(!stray.exists());
    assert!(s.snapshots.stat("default", "c1").unwrap().is_some());
}

#[test]
fn prepare_overlapped_hands_out_the_mounts_before_the_commit() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open_with(d.path(), SnapshotterKind::Overlay).unwrap();
    let base = s.snapshots.prepare("default", "base-active", None).unwrap();
    drop(base);
    s.snapshots
        .commit("default", "base", "base-active")
        .unwrap();
    let mut got = None;
    s.snapshots
        .prepare_overlapped("default", "c1", Some("base"), |m| {
            // The directories exist already; the record is not visible to readers yet.
            for o in &m[0].options {
                if let Some(dir) = o.strip_prefix("upperdir=") {
                    assert!(std::path::Path::new(dir).is_dir(), "{o}");
                }
            }
            got = Some(m);
        })
        .unwrap();
    let got = got.expect("the mounts were handed out");
    assert_eq!(got, s.snapshots.mounts("default", "c1").unwrap());
    assert_eq!(got[0].typ, "overlay");
    // A key in use fails before anything is handed out, and leaves the first one intact.
    let err = s
        .snapshots
        .prepare_overlapped("default", "c1", Some("base"), |_| {
            panic!("nothing to hand out for a key in use")
        })
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(got, s.snapshots.mounts("default", "c1").unwrap());
}
