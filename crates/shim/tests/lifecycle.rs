//! The shim's lifecycle with berth-runtime: create, start, wait, logs, kill, pause, delete.

mod common;

use berth_shim::Status;
use common::*;

#[test]
fn create_start_wait_reports_the_exit_code_and_logs_both_streams() {
    let mut fx = Fixture::new(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    let st = c.state().unwrap();
    assert_eq!(st.status, Status::Created);
    assert!(st.pid > 0);
    assert!(st.exit.is_none());
    // The start's answer carries the state (the engine needs no second request for it).
    let started = c
        .start()
        .unwrap()
        .expect("the start's answer has the state");
    assert_eq!(started.pid, st.pid);
    assert!(
        matches!(started.status, Status::Running | Status::Stopped),
        "{:?}",
        started.status
    );
    let exit = c.wait().unwrap();
    assert_eq!(exit.code, 3);
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);
    let st = c.state().unwrap();
    assert_eq!(st.status, Status::Stopped);
    assert_eq!(st.exit, Some(exit));
    let mut log = fx.log_entries();
    log.sort();
    assert_eq!(
        log,
        vec![
            ("stderr".to_string(), "err\n".to_string()),
            ("stdout".to_string(), "out\n".to_string())
        ]
    );
    assert_eq!(berth_shim::read_exit(fx.bundle.path()), Some(exit));
    let deleted = fx.client().delete().unwrap();
    assert_eq!(deleted, exit);
    fx.client = None;
    assert!(!fx.bundle.path().join("shim.sock").exists());
    assert!(!fx.root.path().join(&fx.id).exists());
}

/// The shim answers a start before the user program runs, except when the container has
/// poststart hooks: those must have run when the start returns (runtime-spec).
#[test]
fn poststart_hooks_have_run_when_the_start_returns() {
    let mut fx = Fixture::new(&["sleep", "5"]);
    let mark = fx.bundle.path().join("poststart-ran");
    fx.bundle.edit(|v| {
        v["hooks"] = serde_json::json!({"poststart": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("sleep 0.2; echo ok > {}", mark.display())],
        }]});
    });
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    let started = c
        .start()
        .unwrap()
        .expect("the start's answer has the state");
    assert_eq!(started.status, Status::Running);
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "ok\n");
    c.kill(9, false).unwrap();
    assert_eq!(c.wait().unwrap().signal, Some(9));
}

/// A start after the created init died fails with the runtime's reason; the exit is still
/// reported and the shim cleans up on delete.
#[test]
fn a_start_after_the_init_died_fails_and_the_exit_is_reported() {
    let mut fx = Fixture::new(&["true"]);
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    let pid = c.state().unwrap().pid;
    // SAFETY: kill(2) on the init this test created.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_gone(pid);
    // The shim drops the runtime state as soon as the main process exits, so the runtime
    // either finds the init stopped or the container gone.
    let err = c.start().unwrap_err().to_string();
    assert!(
        err.contains("stopped") || err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(c.wait().unwrap().signal, Some(9));
    fx.client().delete().unwrap();
    fx.client = None;
}

#[test]
fn the_log_rotates_at_max_size_and_keeps_max_file_files() {
    let mut fx = Fixture::new(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    let mut cfg = fx.config(false, false);
    cfg.log.as_mut().unwrap().max_size = 1000;
    cfg.log.as_mut().unwrap().max_file = 3;
    let c = fx.spawn(&cfg);
    c.start().unwrap();
    assert_eq!(c.wait().unwrap().code, 0);
    let path = fx.log_path();
    let name = |s: &str| std::path::PathBuf::from(format!("{}{s}", path.display()));
    for s in ["", ".1", ".2"] {
        let len = std::fs::metadata(name(s)).unwrap().len();
        assert!(len > 0 && len <= 1000, "{s}: {len} bytes");
    }
    assert!(!name(".3").exists());
    let current = read_log(&path);
    assert_eq!(current.last().unwrap().1, "line-199\n");
    let older = read_log(&name(".1"));
    let n = |s: &str| s.trim().trim_start_matches("line-").parse::<u32>().unwrap();
    assert_eq!(n(&older.last().unwrap().1) + 1, n(&current[0].1));
    assert!(current.iter().all(|(s, _)| s == "stdout"));
}

#[test]
fn a_failing_log_write_is_counted_not_fatal() {
    let mut fx = Fixture::new(&["sh", "-c", "echo one; echo two; echo three >&2"]);
    let mut cfg = fx.config(false, false);
    cfg.log.as_mut().unwrap().path = "/dev/full".into();
    let c = fx.spawn(&cfg);
    c.start().unwrap();
    assert_eq!(c.wait().unwrap().code, 0);
    let st = c.state().unwrap();
    assert_eq!(st.log_dropped, 3);
    let err = st.log_error.unwrap();
    assert!(err.contains("No space left on device"), "{err}");
}

#[test]
fn kill_pause_resume_and_pids() {
    let mut fx = Fixture::new(&["sleep", "1000"]);
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    c.start().unwrap();
    let pid = c.state().unwrap().pid;
    assert_eq!(c.state().unwrap().status, Status::Running);
    assert_eq!(c.pids().unwrap(), vec![pid]);
    c.pause().unwrap();
    assert_eq!(c.state().unwrap().status, Status::Paused);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.contains(") D") || stat.contains(") S"), "{stat}");
    c.resume().unwrap();
    assert_eq!(c.state().unwrap().status, Status::Running);
    c.kill(libc::SIGKILL, false).unwrap();
    let exit = c.wait().unwrap();
    assert_eq!((exit.code, exit.signal), (137, Some(libc::SIGKILL)));
    assert_eq!(c.state().unwrap().status, Status::Stopped);
    // Killing a stopped container is the runtime's error, passed through.
    let err = c.kill(libc::SIGTERM, false).unwrap_err();
    assert!(matches!(err, berth_shim::Error::Runtime(_)), "{err:?}");
}

#[test]
fn delete_kills_a_paused_container_and_cleans_up() {
    let mut fx = Fixture::new(&["sleep", "1000"]);
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    c.start().unwrap();
    let pid = c.state().unwrap().pid;
    c.pause().unwrap();
    let exit = fx.client().delete().unwrap();
    assert_eq!((exit.code, exit.signal), (137, Some(libc::SIGKILL)));
    fx.client = None;
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
    assert!(!fx.root.path().join(&fx.id).exists());
    assert!(berth_testutil::host::cgroup_dirs_named(&fx.id).is_empty());
    assert_eq!(berth_shim::read_exit(fx.bundle.path()), Some(exit));
    let err = berth_shim::connect(fx.bundle.path()).unwrap_err();
    assert!(matches!(err, berth_shim::Error::Connect { .. }), "{err:?}");
}

#[test]
fn a_bundle_path_longer_than_sun_path_works() {
    let mut fx = Fixture::new(&["sh", "-c", "echo deep"]);
    let deep = fx
        .bundle
        .path()
        .join("a-rather-long-directory-name-to-push-the-socket-path-over-108-bytes")
        .join("and-another-long-component-for-good-measure");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::rename(fx.bundle.rootfs(), deep.join("rootfs")).unwrap();
    std::fs::rename(
        fx.bundle.path().join("config.json"),
        deep.join("config.json"),
    )
    .unwrap();
    assert!(deep.join("shim.sock").as_os_str().len() > 108);
    let mut cfg = fx.config(false, false);
    cfg.bundle = deep.clone();
    let c = fx.spawn(&cfg);
    let c2 = berth_shim::connect(&deep).unwrap();
    let stream = c2.attach(None, false).unwrap();
    c.start().unwrap();
    let (out, _, exit) = collect(&stream);
    assert_eq!(out, "deep\n");
    assert_eq!(exit.unwrap().code, 0);
    c2.delete().unwrap();
    fx.client = None;
    assert!(!deep.join("shim.sock").exists());
}

#[test]
fn an_oom_kill_is_reported() {
    let mut fx = Fixture::new(&[
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    fx.bundle.edit(|v| {
        v["linux"]["resources"]["memory"] = serde_json::json!({"limit": 16 * 1024 * 1024});
    });
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    c.start().unwrap();
    let exit = c.wait().unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_ne!(exit.code, 0);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.bundle.path().join("exit.json")).unwrap())
            .unwrap();
    assert_eq!(file["oom_killed"], true);
    assert!(file["finished_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn the_runtime_state_goes_as_soon_as_the_main_process_exits() {
    // The shim deletes the container in the runtime in the background right after the exit,
    // so a daemon's delete finds the work done; the delete still answers with the exit.
    let mut fx = Fixture::new(&["true"]);
    let cfg = fx.config(false, false);
    let state = fx.root.path().join(&fx.id);
    fx.spawn(&cfg);
    let c = fx.client();
    c.start().unwrap();
    let exit = c.wait().unwrap();
    assert_eq!(exit.code, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while state.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the runtime state {} was not deleted before the delete request",
            state.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        fx.client().state().unwrap().exit,
        Some(exit),
        "the shim still serves"
    );
    assert_eq!(fx.client().delete().unwrap(), exit);
    fx.client = None;
    assert!(!fx.bundle.path().join("shim.sock").exists());
}

/// The built-in runtime lets the init skip its re-exec (a new pid namespace, a single-threaded
/// shim), so the init starts as a copy of the shim's forked runtime with all of the shim's fds.
/// A created container waiting to be started must hold none of them: only its stdio and the
/// exec fifo (else, say, the shim's listening socket would outlive the shim).
#[test]
fn a_created_init_holds_only_its_stdio_and_the_exec_fifo() {
    let mut fx = Fixture::new(&["true"]);
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    let st = c.state().unwrap();
    assert_eq!(st.status, Status::Created);
    let dir = format!("/proc/{}/fd", st.pid);
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let n: i32 = e.file_name().to_string_lossy().parse().unwrap();
            let target = std::fs::read_link(e.path()).unwrap();
            (n, target.to_string_lossy().into_owned())
        })
        .collect();
    fds.sort();
    let above_stdio: Vec<&(i32, String)> = fds.iter().filter(|(n, _)| *n > 2).collect();
    // The exec fifo, and the setup channel to the (exited) runtime, whose peer is gone.
    assert!(
        above_stdio.len() <= 2,
        "the waiting init holds more than the exec fifo and its setup channel: {fds:?}"
    );
    assert!(
        above_stdio.iter().any(|(_, t)| t.ends_with("exec.fifo")),
        "no exec fifo among {fds:?}"
    );
    for (_, t) in &above_stdio {
        assert!(
            t.ends_with("exec.fifo") || t.starts_with("socket:"),
            "unexpected fd {t} in the waiting init: {fds:?}"
        );
    }
    // Its stdio are the pipes the shim reads (or /dev/null), not the shim's own files.
    for (n, t) in fds.iter().filter(|(n, _)| *n <= 2) {
        assert!(
            t.starts_with("pipe:") || t == "/dev/null",
            "fd {n} of the init is {t}"
        );
    }
    c.start().unwrap();
    assert_eq!(c.wait().unwrap().code, 0);
}

/// A standby shim (started before its container is known) runs the container it is handed,
/// in the cgroup directories it made while waiting; one that is never used exits as soon as
/// its owner drops it, leaving no process and no cgroup directory behind.
#[test]
fn a_standby_shim_takes_a_container_and_an_unused_one_exits() {
    let parent = format!("/berth-test-pool-{}", std::process::id());
    let _parents = CgroupParent(parent.clone());
    let mut fx = Fixture::new(&["sh", "-c", "echo from-standby"]);
    let cgroup = format!("{parent}/{}", fx.id);
    fx.bundle
        .edit(|v| v["linux"]["cgroupsPath"] = serde_json::json!(cgroup));
    let mut cfg = fx.config(false, false);
    cfg.cgroup = Some(cgroup.clone());
    let dir = cfg.bundle.parent().unwrap().to_path_buf();
    let sb =
        berth_shim::Standby::start(&shim_bin(), &dir, Some(&parent)).expect("start a standby shim");
    // `.pool-PID` directories (any PID with `None`) under the parent, in every hierarchy.
    let pool_dirs = |pid: Option<i32>| -> Vec<String> {
        let prefix = pid.map_or_else(|| ".pool-".to_string(), |p| format!(".pool-{p}"));
        let mut out = Vec::new();
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let Ok(rd) = std::fs::read_dir(h.path().join(parent.trim_start_matches('/'))) else {
                continue;
            };
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && n.starts_with(&prefix) {
                    out.push(e.path().display().to_string());
                }
            }
        }
        out
    };
    let c = sb
        .spawn(&cfg)
        .expect("hand the container to the standby shim");
    assert_eq!(c.state().unwrap().status, Status::Created);
    // Its cgroup is the pool's directories, renamed: none of them is left under the old name,
    // and the container's init is in the memory one.
    let init = c.state().unwrap().pid;
    let memory = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{cgroup}/cgroup.procs"))
        .expect("the container's memory cgroup");
    assert!(memory.lines().any(|l| l == init.to_string()), "{memory}");
    let shim_pid = c.shim_pid().unwrap();
    assert!(
        pool_dirs(Some(shim_pid)).is_empty(),
        "{:?}",
        pool_dirs(Some(shim_pid))
    );
    // Once it has a container it is named like any shim, and its command line still names
    // the directory it serves.
    let shim_pid = c.shim_pid().unwrap();
    assert_eq!(comm(shim_pid), "berth-shim");
    assert!(cmdline_has(shim_pid, dir.as_os_str().as_encoded_bytes()));
    c.start().unwrap();
    assert_eq!(c.wait().unwrap().code, 0);
    fx.client = Some(c);
    assert_eq!(
        fx.log_entries(),
        vec![("stdout".to_string(), "from-standby\n".to_string())]
    );

    let standby_pids = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                cmdline_has(*pid, b"--standby")
                    && cmdline_has(*pid, dir.as_os_str().as_encoded_bytes())
            })
            .collect()
    };
    let before = standby_pids();
    let unused =
        berth_shim::Standby::start(&shim_bin(), &dir, Some(&parent)).expect("start a standby shim");
    let new: Vec<i32> = standby_pids()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "one new standby shim: {new:?}");
    assert_eq!(comm(new[0]), "berth-standby");
    // It holds no directory of its spawner's busy (this test runs elsewhere).
    assert_ne!(std::env::current_dir().unwrap(), std::path::Path::new("/"));
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", new[0])).unwrap(),
        std::path::Path::new("/")
    );
    // While it waits it holds a cgroup directory ready in every v1 hierarchy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pool_dirs(Some(new[0])).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby shim made no cgroup directories"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(unused);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{}", new[0])).exists() {
        // Zombies count as gone: the shim is not our child, init reaps it.
        let state = std::fs::read_to_string(format!("/proc/{}/stat", new[0])).unwrap_or_default();
        if state.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the unused standby shim {} is still running",
            new[0]
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(pool_dirs(None).is_empty(), "{:?}", pool_dirs(None));
}

/// Removes a test's cgroup parent directories (in every hierarchy) when dropped.
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                let _ = std::fs::remove_dir(h.path().join(self.0.trim_start_matches('/')));
            }
        }
    }
}

/// A process's name as `/proc/PID/comm` shows it.
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Whether one of a process's arguments is exactly `arg`.
fn cmdline_has(pid: i32, arg: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == arg))
}
