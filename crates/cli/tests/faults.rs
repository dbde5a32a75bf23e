//! Faults during a pull: a connection cut mid-layer, and `kill -9` of the pulling process.

mod common;

use std::time::{Duration, Instant};

use berth_testutil::registry::{Auth, Registry};
use common::{
    Berth, Entry, Proxy, chain_top, layer, noise, skopeo_push, with_image_root, write_layout,
};

/// A registry holding a two-layer image with a 24 MiB incompressible file.
fn big_image(reg: &Registry, repo: &str) -> Vec<u8> {
    let data = noise(24 << 20, 7);
    let layout = tempfile::tempdir().unwrap();
    let layers = vec![
        layer(&[
            Entry::Dir("data"),
            Entry::File("data/blob".into(), data.clone()),
        ]),
        layer(&[Entry::File("data/small".into(), b"small\n".to_vec())]),
    ];
    write_layout(layout.path(), "v1", &layers, ("linux", "amd64"));
    skopeo_push(layout.path(), "v1", &reg.addr(), repo, None);
    data
}

#[test]
fn a_connection_cut_mid_layer_is_resumed() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::None);
    let data = big_image(&reg, "e2e/cut");
    // Two connections are cut after 4 MiB of response each; the pull must still complete.
    let proxy = Proxy::start(&reg.addr(), 0, 4 << 20, 2);
    let b = Berth::new();
    let name = format!("{}/e2e/cut:v1", proxy.addr);
    b.ok(&["pull", "-q", &name]);
    with_image_root(&b, &chain_top(&b, &name), |root| {
        assert!(
            std::fs::read(root.join("data/blob")).unwrap() == data,
            "layer content intact"
        );
    });
    b.assert_clean();
}

#[test]
fn kill_9_of_berthd_during_a_pull_leaves_a_store_the_next_pull_completes() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::None);
    let data = big_image(&reg, "e2e/kill");
    // Slow the transfer to 8 MiB/s so the kill lands mid-layer.
    let proxy = Proxy::start(&reg.addr(), 8 << 20, 0, 0);
    let b = Berth::new();
    let name = format!("{}/e2e/kill:v1", proxy.addr);
    for delay_ms in [300u64, 1500] {
        // The daemon is up before the pull starts, so the delay is all pull.
        b.ok(&["images", "-q"]);
        let daemon = b.daemon_pid().expect("berthd runs");
        let child = b
            .cmd(&["pull", "-q", &name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: kill(2) of this test's own berthd.
        unsafe { libc::kill(daemon, libc::SIGKILL) };
        let out = child.wait_with_output().unwrap();
        assert!(
            !out.status.success(),
            "the pull finished before the kill ({:?})",
            t.elapsed()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        while b.daemon_pid().is_some() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let check = b.run(&["system", "check"]);
        let text = String::from_utf8_lossy(&check.stdout).to_string();
        assert!(
            check.status.success(),
            "store inconsistent after kill -9 of berthd: {text} {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    // The next command starts a new berthd, which completes the pull.
    b.ok(&["pull", "-q", &name]);
    with_image_root(&b, &chain_top(&b, &name), |root| {
        assert!(std::fs::read(root.join("data/blob")).unwrap() == data);
    });
    b.ok(&["system", "check", "--repair"]);
    b.assert_clean();
    // Nothing is left mounted below the store.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(b.root().to_str().unwrap()), "{mounts}");
}

#[test]
fn two_pulls_of_one_image_at_once_both_succeed() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::None);
    let data = big_image(&reg, "e2e/twice");
    // Slow enough that the second pull starts while the first is downloading the big layer.
    let proxy = Proxy::start(&reg.addr(), 16 << 20, 0, 0);
    let b = Berth::new();
    let name = format!("{}/e2e/twice:v1", proxy.addr);
    let spawn = || {
        b.cmd(&["pull", "-q", &name])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    std::thread::sleep(Duration::from_millis(300));
    let second = spawn();
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    for out in [&first, &second] {
        assert!(
            out.status.success(),
            "a concurrent pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    with_image_root(&b, &chain_top(&b, &name), |root| {
        assert!(std::fs::read(root.join("data/blob")).unwrap() == data);
    });
    b.assert_clean();
}

#[test]
fn rmi_and_prune_free_the_content() {
    berth_testutil::require_root();
    let reg = Registry::start(Auth::None);
    big_image(&reg, "e2e/rm");
    let b = Berth::new();
    let name = format!("{}/e2e/rm:v1", reg.addr());
    b.ok(&["pull", "-q", &name]);
    b.ok(&["tag", &name, "local/other:v1"]);
    let du_before = du(&b.root());
    assert!(du_before > 24 << 20);
    // Removing one of two names frees nothing; removing the last frees the layers.
    b.ok(&["rmi", "local/other:v1"]);
    assert!(du(&b.root()) > 24 << 20);
    let id = b.ok(&["images", "-q"]).trim().to_owned();
    b.ok(&["tag", &name, "local/other:v1"]);
    let err = b.fails(&["rmi", &id]);
    assert!(err.contains("must be forced"), "{err}");
    b.ok(&["rmi", "-f", &id]);
    assert!(b.ok(&["images", "-q"]).trim().is_empty());
    assert_eq!(du(&b.root().join("content")), 0, "blobs freed");
    assert_eq!(du(&b.root().join("snapshots")), 0, "snapshots freed");
    b.ok(&["pull", "-q", &name]);
    let out = b.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(du(&b.root().join("content")), 0, "blobs freed");
    assert_eq!(du(&b.root().join("snapshots")), 0, "snapshots freed");
    b.assert_clean();
}

fn du(p: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            total += du(&e.path());
        } else {
            total += m.len();
        }
    }
    total
}
