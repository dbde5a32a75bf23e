//! Shared helpers for berth-runtime's integration tests (root, real kernel features).

#![allow(dead_code)]

pub mod peers;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub use berth_testutil::{Bundle, Runtime, unique_id};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_berth-runtime");
/// The in-container checker.
pub const CHECKER: &str = env!("CARGO_BIN_EXE_berth-checker");

/// A runtime with a private state root (requires root).
pub fn runtime() -> Runtime {
    berth_testutil::require_root();
    Runtime::new(BIN)
}

/// A busybox bundle whose rootfs also holds `/bin/berth-checker`.
pub fn checker_bundle(checks: &[&str]) -> Bundle {
    let mut args = vec!["/bin/berth-checker"];
    args.extend_from_slice(checks);
    let b = Bundle::busybox(&args);
    std::fs::copy(CHECKER, b.rootfs().join("bin/berth-checker"))
        .expect("copy berth-checker into the rootfs");
    b
}

/// The inode of the calling process's namespace of `kind` (`pid`, `net`, ...).
pub fn host_ns(kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/self/ns/{kind}"))
        .expect("stat own namespace")
        .ino()
}

/// Run the bundle in the foreground and return (exit code, stdout, stderr).
pub fn run(rt: &Runtime, b: &Bundle, id: &str) -> (i32, String, String) {
    let out = rt.run(&[
        "run",
        "--bundle",
        b.path().to_str().expect("utf-8 path"),
        id,
    ]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run a checker bundle and require every check to pass.
pub fn run_checks(rt: &Runtime, b: &Bundle, id: &str) -> String {
    let (code, out, err) = run(rt, b, id);
    assert!(
        code == 0 && !out.contains("FAIL"),
        "checks failed (exit {code}):\n{out}\nstderr: {err}"
    );
    out
}

/// Assert that container `id` left nothing behind: no state directory, no cgroup, no mounts
/// under the bundle.
pub fn assert_clean(rt: &Runtime, id: &str, bundle: Option<&Path>) {
    assert!(
        !rt.root().join(id).exists(),
        "state directory of {id} is left behind"
    );
    let cgroups = berth_testutil::host::cgroup_dirs_named(id);
    assert!(
        cgroups.is_empty(),
        "cgroups of {id} are left behind: {cgroups:?}"
    );
    if let Some(b) = bundle {
        let mounts = berth_testutil::host::mounts_containing(&b.display().to_string());
        assert!(
            mounts.is_empty(),
            "mounts under {} are left behind: {mounts:?}",
            b.display()
        );
    }
}

/// `state` as JSON.
pub fn state(rt: &Runtime, id: &str) -> Value {
    rt.state(id)
}
