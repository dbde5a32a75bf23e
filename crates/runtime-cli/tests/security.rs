//! Regression tests for the runtime CVE classes (see ../shared/reference/anchors.md):
//! CVE-2019-5736 (overwriting the runtime through /proc/self/exe), CVE-2021-30465 and the
//! masked-path races (mount targets resolved through symlinks out of the rootfs),
//! CVE-2024-21626 (leaked fds and a cwd outside the container).

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;

use common::*;
use serde_json::json;

#[test]
fn the_host_binary_cannot_be_written_through_proc_exe() {
    let rt = runtime();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique_id("cve-2019-5736");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    // The init still runs berth-runtime code, waiting for `start`: its exe is our binary, but
    // through a read-only mount, so even root on the host cannot open it for writing.
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let exe = format!("/proc/{pid}/exe");
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(&exe).unwrap();
    let b_meta = std::fs::metadata(BIN).unwrap();
    assert_eq!(
        (a.dev(), a.ino()),
        (b_meta.dev(), b_meta.ino()),
        "the init runs the binary under test"
    );
    assert!(read_only_mount(&exe), "{exe} is on a writable mount");
    assert!(
        !read_only_mount(BIN),
        "the test binary's own mount should be writable for this test to mean anything"
    );

    // The attack: hold the exe with O_PATH while it runs, reopen it for writing once it exits.
    let held = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&exe)
        .unwrap();
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(&exe)
        .unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS | libc::ETXTBSY)),
        "{err}"
    );
    // From inside the container, a process cannot even open the waiting init's exe.
    let out = rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo x >> /proc/1/exe; cat /proc/1/exe > /dev/null; echo done",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("done"), "{text}");
    assert_eq!(
        text.matches("Permission denied").count(),
        2,
        "both opens refused: {text}"
    );
    rt.ok(&["delete", "--force", &id]);
    let reopen = format!("/proc/self/fd/{}", held.as_raw_fd());
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(&reopen)
        .unwrap_err();
    // Other tests may be running the binary (ETXTBSY); the read-only mount refuses regardless.
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS | libc::ETXTBSY)),
        "reopening for writing: {err}"
    );
    assert_clean(&rt, &id, Some(b.path()));
}

fn read_only_mount(path: &str) -> bool {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: statvfs fills a zeroed, correctly sized struct from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {path}");
    st.f_flag & libc::ST_RDONLY != 0
}

#[test]
fn a_container_running_proc_self_exe_gets_a_read_only_runtime() {
    // The attack's first step: the container's entrypoint is /proc/self/exe.
    let rt = runtime();
    let b = Bundle::busybox(&["/proc/self/exe", "--version"]);
    let id = unique_id("selfexe");
    let (code, out, err) = run(&rt, &b, &id);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("berth-runtime version"), "{out}");
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn mount_destinations_cannot_escape_through_symlinks() {
    let rt = runtime();
    let outside = tempfile::tempdir().unwrap();
    let b = Bundle::busybox(&[
        "sh",
        "-c",
        "grep -c ' /escape ' /proc/self/mountinfo; ls /escape; echo ok",
    ]);
    // /data in the image points outside the rootfs (absolute and with ..).
    symlink(outside.path(), b.rootfs().join("data")).unwrap();
    symlink("../../../../../../../../..", b.rootfs().join("up")).unwrap();
    std::fs::create_dir_all(b.rootfs().join("escape")).unwrap();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().extend([
            json!({"destination": "/data/mnt", "type": "tmpfs", "source": "tmpfs"}),
            json!({"destination": "/up/escape", "type": "tmpfs", "source": "tmpfs"}),
        ]);
    });
    let id = unique_id("cve-2021-30465");
    let (code, out, err) = run(&rt, &b, &id);
    assert_eq!(code, 0, "{out} {err}");
    // The tmpfs for /up/escape landed on the rootfs's /escape, clamped to the root.
    assert!(out.starts_with("1\n"), "{out}");
    // Nothing was created or mounted outside.
    assert!(
        !outside.path().join("mnt").exists(),
        "a directory was created outside the rootfs"
    );
    assert!(
        berth_testutil::host::mounts_containing(&outside.path().display().to_string()).is_empty()
    );
    assert!(
        b.rootfs()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("mnt")
            .is_dir(),
        "created inside instead"
    );
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn proc_must_be_mounted_on_a_real_directory() {
    let rt = runtime();
    let b = Bundle::busybox(&["true"]);
    std::fs::remove_dir(b.rootfs().join("proc")).unwrap();
    symlink("/tmp", b.rootfs().join("proc")).unwrap();
    let id = unique_id("procsym");
    let (code, _, err) = run(&rt, &b, &id);
    assert_ne!(code, 0);
    assert!(err.contains("/proc") && err.contains("symlink"), "{err}");
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn masked_paths_are_resolved_inside_the_rootfs() {
    let rt = runtime();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host secret").unwrap();
    let b = Bundle::busybox(&["sh", "-c", "cat /etc/evil; echo; echo ok"]);
    // A masked path that is a symlink to a host path: masking must follow it inside the rootfs
    // only, and never bind over the host file.
    symlink(secret.path(), b.rootfs().join("etc/evil")).unwrap();
    b.edit(|c| {
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .push(json!("/etc/evil"))
    });
    let id = unique_id("maskedsym");
    let (code, out, err) = run(&rt, &b, &id);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("host secret"), "{out}");
    assert_eq!(
        std::fs::read_to_string(secret.path()).unwrap(),
        "host secret"
    );
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn a_container_dev_null_that_is_not_null_is_not_used_for_masking() {
    let rt = runtime();
    let b = Bundle::busybox(&["true"]);
    // The image brings its own /dev (bind-mounted), where "null" is a regular file.
    let fake_dev = tempfile::tempdir().unwrap();
    std::fs::write(fake_dev.path().join("null"), "not null").unwrap();
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| !m["destination"].as_str().unwrap().starts_with("/dev"));
        mounts.push(json!({"destination": "/dev", "type": "bind", "source": fake_dev.path(), "options": ["rbind"]}));
    });
    let id = unique_id("fakenull");
    let (code, _, err) = run(&rt, &b, &id);
    assert_ne!(code, 0);
    assert!(err.contains("not the null device"), "{err}");
    assert_clean(&rt, &id, Some(b.path()));
}

/// Spawn berth-runtime with a host directory open at fd 3 (as a careless caller would leak it).
fn with_leaked_dir(rt: &Runtime, args: &[&str]) -> std::process::Output {
    let dir = std::fs::File::open("/tmp").unwrap();
    let raw = dir.as_raw_fd();
    let mut cmd = rt.cmd();
    cmd.args(args).stdin(std::process::Stdio::null());
    let hook = move || {
        // SAFETY: dup2 of a descriptor that stays open in the parent until the child has exec'd.
        if unsafe { libc::dup2(raw, 3) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only calls dup2, which is
    // async-signal-safe.
    unsafe { cmd.pre_exec(hook) };
    let out = cmd.output().unwrap();
    drop(dir);
    out
}

#[test]
fn leaked_fds_never_reach_the_container() {
    let rt = runtime();
    let b = checker_bundle(&["fds=0,1,2"]);
    let id = unique_id("cve-2024-21626");
    let out = with_leaked_dir(&rt, &["run", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok fds=0,1,2"));
    // With --preserve-fds 1 the caller means it: fd 3 passes through.
    let b = checker_bundle(&["fds=0,1,2,3"]);
    let out = with_leaked_dir(
        &rt,
        &[
            "run",
            "--preserve-fds",
            "1",
            "--bundle",
            b.path().to_str().unwrap(),
            &id,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_clean(&rt, &id, Some(b.path()));
}

#[test]
fn a_cwd_through_a_leaked_fd_is_refused() {
    let rt = runtime();
    let b = Bundle::busybox(&["sh", "-c", "ls"]);
    b.edit(|c| c["process"]["cwd"] = json!("/proc/self/fd/3"));
    let id = unique_id("cwdleak");
    let out = with_leaked_dir(&rt, &["run", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("outside the container") || err.contains("chdir to process.cwd"),
        "{err}"
    );
    assert_clean(&rt, &id, Some(b.path()));
}

/// Signals the caller ignores (as `nohup` or a shell's background job does) and the SIGPIPE that
/// Rust ignores are not inherited by the container's process.
#[test]
fn ignored_signals_are_not_inherited() {
    let rt = runtime();
    let b = Bundle::busybox(&["cat", "/proc/self/status"]);
    let id = unique_id("sigign");
    let mut cmd = rt.cmd();
    cmd.args(["run", "--bundle", b.path().to_str().unwrap(), &id])
        .stdin(std::process::Stdio::null());
    let hook = || {
        for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGUSR1] {
            // SAFETY: setting a disposition to SIG_IGN takes no pointers and is async-signal-safe.
            unsafe { libc::signal(sig, libc::SIG_IGN) };
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only calls signal(2).
    unsafe { cmd.pre_exec(hook) };
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let ign = text
        .lines()
        .find(|l| l.starts_with("SigIgn:"))
        .expect("SigIgn line");
    assert_eq!(
        ign.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{ign}"
    );
    assert_clean(&rt, &id, Some(b.path()));
}
