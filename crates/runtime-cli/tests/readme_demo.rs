//! The README's first command, `./scripts/demo.sh`, keeps working: it builds the release
//! binaries, imports a busybox image and `berth run`s it end to end through berthd.

use std::path::Path;
use std::process::Command;

#[test]
fn the_readme_demo_runs_a_container() {
    berth_testutil::require_root();
    // The demo's berthd leaves `/berth` cgroup parents, as any berthd does.
    let _cgroups = berth_testutil::host::berth_cgroups();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .current_dir(&root)
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo.sh failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(", pid 1 in its own namespaces")
            && stdout.contains("uid=0(root)")
            // Docker's 14 default capabilities, no more.
            && stdout.contains("caps: CapEff:\t00000000a80425fb"),
        "unexpected demo output:\n{stdout}\n{stderr}"
    );
    // scripts/build.sh builds the CLI for musl where Rust's musl target is installed (and
    // falls back to the glibc build, saying so, where it is not): on such a machine the demo
    // must have run the musl CLI.
    let musl_std = Command::new("rustc")
        .args([
            "--print",
            "target-libdir",
            "--target",
            "x86_64-unknown-linux-musl",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if musl_std.is_some_and(|d| Path::new(&d).is_dir()) && which("musl-gcc") {
        assert!(
            !stderr.contains("berth is the glibc build"),
            "build.sh fell back to the glibc CLI on a machine with the musl target:\n{stderr}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("berth-demo."))
        .collect();
    assert!(leftovers.is_empty(), "demo.sh left {leftovers:?} behind");
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}
