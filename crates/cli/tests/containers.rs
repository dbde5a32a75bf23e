//! End to end: every container verb through the real `berth`, an auto-started `berthd` per
//! test (own root) and `berth-shim`, on a busybox image loaded from a local OCI layout.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Berth;

/// A generous bound for things that happen "soon" (a hang guard, not a timing assumption).
const PATIENCE: Duration = Duration::from_secs(60);

fn berth() -> Berth {
    let b = Berth::new();
    b.busybox();
    b
}

/// Spawn a long-running berth command; its stdout lines arrive on the receiver.
fn spawn_lines(b: &Berth, args: &[&str]) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut child = b
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn berth");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (KillOnDrop(child), rx)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Receive lines until one satisfies `want`; returns everything received.
fn until(rx: &mpsc::Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = want(&l);
                seen.push(l);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("never saw {what}; got {seen:?}"),
        }
    }
}

/// Poll `f` until it returns Some (a state the daemon reaches asynchronously).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never reached: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn one_line(err: &str) {
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err:?}");
}

fn status(b: &Berth, id: &str) -> String {
    b.ok(&["inspect", "-f", "{{.State.Status}}", id])
        .trim()
        .to_owned()
}

#[test]
fn run_in_the_foreground_streams_output_and_returns_the_exit_code() {
    let b = berth();
    let (out, err) = b.exits(
        3,
        &[
            "run",
            "--name",
            "fg",
            "busybox",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ],
    );
    assert_eq!(out, "to-stdout\n");
    assert!(err.contains("to-stderr"), "{err}");
    // It stays, exited, with its code.
    let ps = b.ok(&["ps", "-a", "--filter", "name=fg", "--format", "{{.Status}}"]);
    assert!(ps.starts_with("Exited (3)"), "{ps}");
    assert_eq!(
        b.ok(&["inspect", "-f", "{{.State.ExitCode}}", "fg"]).trim(),
        "3"
    );
    // stdin piped into `run -i`.
    let out = b.ok_stdin(&["run", "--rm", "-i", "busybox", "cat"], b"piped in\n");
    assert_eq!(out, "piped in\n");
    // The image's default command (sh) reads stdin too.
    let out = b.ok_stdin(
        &["run", "--rm", "-i", "busybox"],
        b"echo from-default-cmd\n",
    );
    assert_eq!(out, "from-default-cmd\n");
}

#[test]
fn rm_flag_removes_the_container_before_run_returns() {
    let b = berth();
    for _ in 0..3 {
        // The same name again at once: the previous one is gone when `run` returns.
        let (out, _) = b.exits(0, &["run", "--rm", "--name", "again", "busybox", "true"]);
        assert_eq!(out, "");
    }
    let (out, _) = b.exits(5, &["run", "--rm", "busybox", "sh", "-c", "exit 5"]);
    assert_eq!(out, "");
    assert_eq!(b.ok(&["ps", "-aq"]), "");
}

#[test]
fn detached_run_prints_the_id_and_logs_follow_new_lines() {
    let b = berth();
    let id = b
        .ok(&[
            "run",
            "-d",
            "--name",
            "ticker",
            "busybox",
            "sh",
            "-c",
            "echo first; echo err-line >&2; i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done",
        ])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(status(&b, "ticker"), "running");

    let (_logs, rx) = spawn_lines(&b, &["logs", "-f", "ticker"]);
    let seen = until(&rx, "tick line", |l| l.starts_with("tick"));
    assert_eq!(seen[0], "first", "{seen:?}");
    let first_tick: u32 = seen.last().unwrap()[4..].parse().unwrap();
    // New lines keep arriving while we follow.
    until(&rx, "a later tick", |l| {
        l.strip_prefix("tick")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= first_tick + 5)
    });

    let ts = b.ok(&["logs", "-t", "--tail", "1", "ticker"]);
    let line = ts.lines().next().unwrap();
    let (stamp, text) = line.split_once(' ').unwrap();
    assert!(stamp.ends_with('Z') && stamp.contains('T'), "{line}");
    assert!(text.starts_with("tick") || text == "err-line", "{line}");
    let all = b.run(&["logs", "ticker"]);
    assert!(String::from_utf8_lossy(&all.stderr).contains("err-line"));
    assert!(String::from_utf8_lossy(&all.stdout).starts_with("first\n"));
    b.ok(&["rm", "-f", "ticker"]);
}

#[test]
fn exec_runs_commands_with_env_user_workdir_and_exit_codes() {
    let b = berth();
    b.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "1000"]);
    assert_eq!(b.ok(&["exec", "box", "echo", "hello"]), "hello\n");
    b.exits(7, &["exec", "box", "sh", "-c", "exit 7"]);
    assert_eq!(
        b.ok(&["exec", "-e", "FOO=bar", "box", "sh", "-c", "echo $FOO"]),
        "bar\n"
    );
    assert_eq!(b.ok(&["exec", "-u", "1000", "box", "id", "-u"]), "1000\n");
    assert_eq!(b.ok(&["exec", "-u", "user", "box", "id", "-un"]), "user\n");
    assert_eq!(b.ok(&["exec", "-w", "/tmp", "box", "pwd"]), "/tmp\n");
    assert_eq!(
        b.ok_stdin(&["exec", "-i", "box", "cat"], b"through stdin\n"),
        "through stdin\n"
    );
    let (_, err) = b.exits(127, &["exec", "box", "no-such-command"]);
    one_line(&err);
    b.ok(&["exec", "-d", "box", "touch", "/tmp/from-detached-exec"]);
    eventually("the detached exec ran", || {
        b.run(&["exec", "box", "test", "-f", "/tmp/from-detached-exec"])
            .status
            .success()
            .then_some(())
    });
    b.ok(&["stop", "-t", "0", "box"]);
    let err = b.fails(&["exec", "box", "true"]);
    one_line(&err);
}

/// Open a pty pair: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let ws = rustix::termios::Winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&slave, ws).unwrap();
    (master, slave)
}

#[test]
fn interactive_run_with_a_tty_is_driven_through_a_pty() {
    let b = berth();
    let (master, slave) = openpty();
    let mut cmd = b.cmd(&["run", "-it", "--rm", "busybox", "sh"]);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = KillOnDrop(cmd.spawn().expect("spawn berth run -it"));
    drop(cmd);
    let reader_fd = master.try_clone().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(reader_fd);
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Vec::new();
    let wait_for = |needle: &str, screen: &mut Vec<u8>| {
        let deadline = Instant::now() + PATIENCE;
        while !String::from_utf8_lossy(screen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => screen.extend(chunk),
                Err(_) => panic!(
                    "never saw {needle:?} on the terminal: {:?}",
                    String::from_utf8_lossy(screen)
                ),
            }
        }
    };
    wait_for("# ", &mut screen);
    // The container sees a terminal of our size.
    let mut m = std::fs::File::from(master.try_clone().unwrap());
    m.write_all(b"stty size; tty\r").unwrap();
    wait_for("40 120", &mut screen);
    wait_for("/dev/pts/", &mut screen);
    m.write_all(b"echo hi; exit 3\r").unwrap();
    wait_for("\nhi\r\n", &mut screen);
    let st = child.0.wait().unwrap();
    assert_eq!(st.code(), Some(3), "{:?}", String::from_utf8_lossy(&screen));
    // The local terminal is back in cooked mode.
    let t = rustix::termios::tcgetattr(master.as_fd()).unwrap();
    assert!(
        t.local_modes.contains(rustix::termios::LocalModes::ICANON)
            && t.local_modes.contains(rustix::termios::LocalModes::ECHO),
        "terminal left raw"
    );
    assert_eq!(b.ok(&["ps", "-aq"]), "", "--rm removed it");
}

#[test]
fn ctrl_c_with_a_tty_goes_to_the_container_and_detach_keys_detach() {
    let b = berth();
    let (master, slave) = openpty();
    let mut cmd = b.cmd(&["run", "-it", "--name", "tty", "busybox", "sh"]);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    drop(cmd);
    let reader_fd = master.try_clone().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(reader_fd);
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Vec::new();
    let wait_for = |needle: &str, screen: &mut Vec<u8>| {
        let deadline = Instant::now() + PATIENCE;
        while !String::from_utf8_lossy(screen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => screen.extend(chunk),
                Err(_) => panic!(
                    "never saw {needle:?}: {:?}",
                    String::from_utf8_lossy(screen)
                ),
            }
        }
    };
    wait_for("# ", &mut screen);
    let mut m = std::fs::File::from(master.try_clone().unwrap());
    // Ctrl-C interrupts the container's foreground command, not berth.
    m.write_all(b"sleep 1000\r").unwrap();
    wait_for("sleep 1000\r\n", &mut screen);
    // Ctrl-C only once sleep is the terminal's foreground job (else the shell gets it).
    // (A `top` that fails meanwhile is retried, not fatal: only the outcome is asserted.)
    eventually("sleep runs in the container", || {
        let out = b.run(&["top", "tty"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sleep 1000"))
            .then_some(())
    });
    m.write_all(&[3]).unwrap();
    m.write_all(b"echo after-ctrl-c\r").unwrap();
    wait_for("\nafter-ctrl-c\r\n", &mut screen);
    // Ctrl-P Ctrl-Q detaches: berth exits 0, the container keeps running.
    m.write_all(&[16, 17]).unwrap();
    let st = child.0.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert_eq!(status(&b, "tty"), "running");
    b.ok(&["rm", "-f", "tty"]);
}

#[test]
fn stop_kill_restart_pause_unpause_and_start() {
    let b = berth();
    b.ok(&["run", "-d", "--name", "life", "busybox", "sleep", "1000"]);
    assert_eq!(b.ok(&["pause", "life"]), "life\n");
    assert_eq!(status(&b, "life"), "paused");
    assert_eq!(b.ok(&["unpause", "life"]), "life\n");
    assert_eq!(status(&b, "life"), "running");
    let started = b.ok(&["inspect", "-f", "{{.State.StartedAt}}", "life"]);
    assert_eq!(b.ok(&["restart", "-t", "0", "life"]), "life\n");
    assert_eq!(status(&b, "life"), "running");
    assert_ne!(
        b.ok(&["inspect", "-f", "{{.State.StartedAt}}", "life"]),
        started
    );
    assert_eq!(b.ok(&["stop", "-t", "1", "life"]), "life\n");
    assert_eq!(status(&b, "life"), "exited");
    assert_eq!(b.ok(&["start", "life"]), "life\n");
    assert_eq!(status(&b, "life"), "running");
    assert_eq!(b.ok(&["kill", "life"]), "life\n");
    assert_eq!(b.ok(&["wait", "life"]).trim(), "137");
    assert_eq!(status(&b, "life"), "exited");
    // kill -s with a signal the shell traps.
    b.ok(&[
        "run",
        "-d",
        "--name",
        "trap",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 42' USR1; while true; do sleep 0.1; done",
    ]);
    b.ok(&["kill", "-s", "USR1", "trap"]);
    assert_eq!(b.ok(&["wait", "trap"]).trim(), "42");
    // A bad signal name is refused by the CLI.
    let err = b.fails(&["kill", "-s", "NOPE", "trap"]);
    one_line(&err);
    // start -a streams output and returns the exit code.
    b.ok(&[
        "create",
        "--name",
        "later",
        "busybox",
        "sh",
        "-c",
        "echo started-late; exit 6",
    ]);
    let (out, _) = b.exits(6, &["start", "-a", "later"]);
    assert_eq!(out, "started-late\n");
}

#[test]
fn attach_to_a_running_container_with_stdin() {
    let b = berth();
    b.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "reader",
        "busybox",
        "sh",
        "-c",
        "read line; echo got:$line; exit 9",
    ]);
    let mut child = b
        .cmd(&["attach", "reader"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got:hello\n");
    assert_eq!(out.status.code(), Some(9));
}

#[test]
fn rm_refuses_a_running_container_and_force_removes_it() {
    let b = berth();
    b.ok(&["run", "-d", "--name", "busy", "busybox", "sleep", "1000"]);
    let err = b.fails(&["rm", "busy"]);
    one_line(&err);
    assert!(err.contains("busy") || err.contains("running"), "{err}");
    assert_eq!(status(&b, "busy"), "running");
    assert_eq!(b.ok(&["rm", "-f", "busy"]), "busy\n");
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    let err = b.fails(&["rm", "busy"]);
    one_line(&err);
    // No mounts are left for it.
    assert!(
        berth_testutil::host::mounts_containing(b.root().to_str().unwrap())
            .iter()
            .all(|m| !m.contains("rootfs")),
        "container rootfs still mounted"
    );
}

#[test]
fn ps_lists_filters_and_formats() {
    let b = berth();
    b.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "tier=front",
        "busybox",
        "sleep",
        "1000",
    ]);
    b.ok(&["run", "--name", "job", "-l", "tier=back", "busybox", "true"]);
    let table = b.ok(&["ps"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "only the running one: {table}");
    assert!(rows[0].contains("web") && rows[0].contains("Up"), "{table}");
    assert!(rows[0].contains("\"sleep 1000\""), "{table}");

    let all = b.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert!(
        all.contains("web running") && all.contains("job exited"),
        "{all}"
    );
    assert_eq!(
        b.ok(&[
            "ps",
            "-a",
            "--filter",
            "label=tier=back",
            "--format",
            "{{.Names}}"
        ]),
        "job\n"
    );
    assert_eq!(
        b.ok(&[
            "ps",
            "-a",
            "--filter",
            "status=exited",
            "--format",
            "{{.Names}}"
        ]),
        "job\n"
    );
    assert_eq!(
        b.ok(&[
            "ps",
            "-a",
            "--filter",
            "name=web",
            "--format",
            "{{.Label \"tier\"}}"
        ]),
        "front\n"
    );
    assert_eq!(b.ok(&["ps", "-l", "--format", "{{.Names}}"]), "job\n");
    assert_eq!(b.ok(&["ps", "-n", "2", "-q"]).lines().count(), 2);
    let ids = b.ok(&["ps", "-aq"]);
    assert!(ids.lines().all(|l| l.len() == 12), "{ids}");
    let full = b.ok(&["ps", "-aq", "--no-trunc"]);
    assert!(full.lines().all(|l| l.len() == 64), "{full}");
    let json = b.ok(&["ps", "-a", "--format", "json"]);
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["Names"] == "web" || v["Names"] == "job", "{line}");
        assert!(v["ID"].as_str().unwrap().len() == 12);
    }
    let t = b.ok(&["ps", "-a", "--format", "table {{.Names}}\\t{{.Status}}"]);
    assert!(t.starts_with("NAMES"), "{t}");
    let err = b.fails(&["ps", "--format", "{{.Nope}}"]);
    one_line(&err);
}

#[test]
fn inspect_formats_containers_and_images() {
    let b = berth();
    b.ok(&[
        "create", "--name", "insp", "-l", "k=v", "-e", "A=1", "busybox", "echo", "x",
    ]);
    assert_eq!(
        b.ok(&["inspect", "-f", "{{.State.Status}}", "insp"]),
        "created\n"
    );
    assert_eq!(
        b.ok(&["inspect", "-f", "{{index .Config.Labels \"k\"}}", "insp"]),
        "v\n"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&b.ok(&["inspect", "-f", "{{json .Config}}", "insp"])).unwrap();
    assert!(
        cfg["Env"].as_array().unwrap().iter().any(|e| e == "A=1"),
        "{cfg}"
    );
    assert_eq!(
        b.ok(&["inspect", "-f", "{{.Config.Cmd}}", "insp"]),
        "[echo x]\n"
    );
    b.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "insp"]);
    let whole: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "insp"])).unwrap();
    assert_eq!(whole.as_array().unwrap().len(), 1);
    assert!(whole[0]["Id"].as_str().unwrap().len() == 64);
    let img: serde_json::Value =
        serde_json::from_str(&b.ok(&["image", "inspect", "busybox"])).unwrap();
    assert!(img[0]["Id"].as_str().unwrap().starts_with("sha256:"));
    // Plain `inspect` finds images too.
    assert!(
        b.ok(&["inspect", "-f", "{{.Id}}", "busybox"])
            .starts_with("sha256:")
    );
    let err = b.fails(&["inspect", "nothing-by-this-name"]);
    assert!(err.contains("nothing-by-this-name"), "{err}");
    one_line(&err);
}

#[test]
fn cp_copies_both_ways() {
    let b = berth();
    b.ok(&["run", "-d", "--name", "cpbox", "busybox", "sleep", "1000"]);
    let host = b.dir.path().join("host");
    std::fs::create_dir_all(host.join("tree/sub")).unwrap();
    std::fs::write(host.join("file.txt"), "from the host\n").unwrap();
    std::fs::write(host.join("tree/sub/deep.txt"), "deep\n").unwrap();
    let hp = |p: &str| host.join(p).to_str().unwrap().to_owned();

    // Host -> container: a file to a new name, a file into a directory, a tree.
    b.ok(&["cp", &hp("file.txt"), "cpbox:/tmp/renamed.txt"]);
    assert_eq!(
        b.ok(&["exec", "cpbox", "cat", "/tmp/renamed.txt"]),
        "from the host\n"
    );
    b.ok(&["cp", &hp("file.txt"), "cpbox:/root"]);
    assert_eq!(
        b.ok(&["exec", "cpbox", "cat", "/root/file.txt"]),
        "from the host\n"
    );
    b.ok(&["cp", &hp("tree"), "cpbox:/tmp/"]);
    assert_eq!(
        b.ok(&["exec", "cpbox", "cat", "/tmp/tree/sub/deep.txt"]),
        "deep\n"
    );

    // Container -> host: a file into a directory, a file to a new name, a directory.
    b.ok(&[
        "exec",
        "cpbox",
        "sh",
        "-c",
        "mkdir -p /data/d && echo inside > /data/d/f",
    ]);
    let out = b.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    b.ok(&["cp", "cpbox:/etc/passwd", out.to_str().unwrap()]);
    assert!(
        std::fs::read_to_string(out.join("passwd"))
            .unwrap()
            .starts_with("root:")
    );
    b.ok(&["cp", "cpbox:/data/d/f", out.join("g").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("g")).unwrap(), "inside\n");
    b.ok(&["cp", "cpbox:/data", out.join("copied").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("copied/d/f")).unwrap(),
        "inside\n"
    );
    // To stdout as a tar.
    let tar = b.run(&["cp", "cpbox:/data/d/f", "-"]);
    assert!(tar.status.success());
    let mut ar = tar::Archive::new(tar.stdout.as_slice());
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["f"]);
    // No staging directories are left behind.
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".berth-cp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let err = b.fails(&["cp", "cpbox:/no/such/path", out.to_str().unwrap()]);
    one_line(&err);
}

#[test]
fn top_and_stats_show_the_processes_and_usage() {
    let b = berth();
    b.ok(&["run", "-d", "--name", "topbox", "busybox", "sleep", "1000"]);
    let top = b.ok(&["top", "topbox"]);
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
    assert!(top.contains("sleep 1000"), "{top}");
    // ps options, as Docker: the host's ps with them, only the container's rows.
    let top = b.ok(&["top", "topbox", "-o", "pid,args"]);
    let mut lines = top.lines();
    assert!(lines.next().unwrap().contains("PID"), "{top}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{top}");
    assert!(rows[0].ends_with("sleep 1000"), "{top}");
    let err = b.fails(&["top", "topbox", "-o", "args"]);
    assert!(err.contains("PID"), "{err}");
    let stats = b.ok(&["stats", "--no-stream", "topbox"]);
    let header = stats.lines().next().unwrap();
    for col in ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS"] {
        assert!(header.contains(col), "{stats}");
    }
    assert!(stats.contains("topbox"), "{stats}");
    let f = b.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        "topbox",
    ]);
    assert_eq!(f, "topbox 1\n");
    // Without names: every running container.
    assert!(b.ok(&["stats", "--no-stream"]).contains("topbox"));
}

#[test]
fn events_stream_lifecycle_events() {
    let b = berth();
    // Make sure the daemon is up before subscribing, then watch.
    b.ok(&["ps"]);
    let (_events, rx) = spawn_lines(
        &b,
        &[
            "events",
            "--filter",
            "type=container",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ],
    );
    // The subscription is live once it reports a first event: keep creating until it does.
    b.ok(&["create", "--name", "ev0", "busybox", "true"]);
    let mut n = 0;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.starts_with("create") => break,
            Ok(_) => {}
            Err(_) => {
                n += 1;
                assert!(n < 300, "events never reported a create");
                b.ok(&["rm", &format!("ev{}", n - 1)]);
                b.ok(&["create", "--name", &format!("ev{n}"), "busybox", "true"]);
            }
        }
    }
    b.ok(&["run", "--rm", "--name", "evrun", "busybox", "true"]);
    let seen = until(&rx, "destroy evrun", |l| l == "destroy evrun");
    for action in ["create evrun", "start evrun", "die evrun"] {
        assert!(seen.iter().any(|l| l == action), "{action} in {seen:?}");
    }
    // --since replays history and --until ends the stream.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let now = now.to_string();
    let past = b.ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        &now,
        "--filter",
        "event=destroy",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    assert!(past.lines().any(|l| l == "evrun"), "{past}");
}

#[test]
fn wait_prints_exit_codes() {
    let b = berth();
    b.ok(&["run", "-d", "--name", "w1", "busybox", "sh", "-c", "exit 4"]);
    b.ok(&["run", "-d", "--name", "w2", "busybox", "true"]);
    assert_eq!(b.ok(&["wait", "w1", "w2"]), "4\n0\n");
    let err = b.fails(&["wait", "nope"]);
    one_line(&err);
}

#[test]
fn restart_policy_on_failure_retries_then_gives_up() {
    let b = berth();
    b.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]);
    let state = eventually("two restarts, then exited", || {
        let s = b.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "flaky",
        ]);
        (s.trim() == "2 exited").then_some(s)
    });
    assert_eq!(state.trim(), "2 exited");
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.RestartPolicy.Name}}",
            "flaky"
        ])
        .trim(),
        "on-failure"
    );
    // --rm and a restart policy conflict.
    let (_, err) = b.exits(
        125,
        &["run", "--rm", "--restart", "always", "busybox", "true"],
    );
    one_line(&err);
}

#[test]
fn bad_input_exits_125_with_one_line() {
    let b = berth();
    b.ok(&["create", "--name", "taken", "busybox", "true"]);
    let (_, err) = b.exits(125, &["run", "--name", "taken", "busybox", "true"]);
    one_line(&err);
    assert!(err.contains("taken"), "{err}");
    let (_, err) = b.exits(125, &["create", "--name", "taken", "busybox", "true"]);
    one_line(&err);

    // Unknown image: not pulled with --pull never; a pull that fails otherwise.
    let (_, err) = b.exits(125, &["run", "--pull", "never", "no-such-image", "true"]);
    one_line(&err);
    let (_, err) = b.exits(125, &["run", "127.0.0.1:1/no/such:img", "true"]);
    assert!(
        err.trim().lines().last().unwrap().contains("127.0.0.1:1"),
        "{err}"
    );

    // Bad flag values.
    for args in [
        vec!["run", "--memory", "12x", "busybox", "true"],
        vec!["run", "--cpus", "lots", "busybox", "true"],
        vec!["run", "--restart", "sometimes", "busybox", "true"],
        vec!["run", "--ulimit", "nofile", "busybox", "true"],
        vec!["run", "--network", "bridge0", "busybox", "true"],
        vec!["run", "--no-such-flag", "busybox", "true"],
        vec!["create", "--pids-limit", "many", "busybox", "true"],
        vec!["run"],
    ] {
        let (_, err) = b.exits(125, &args);
        assert!(!err.trim().is_empty(), "{args:?}");
    }
    let (_, err) = b.exits(125, &["run", "--memory", "12x", "busybox", "true"]);
    one_line(&err);
    assert!(err.contains("--memory"), "{err}");
    // An unknown flag is named as one, not taken for the image (nothing is pulled).
    let (_, err) = b.exits(125, &["run", "--no-such-flag", "busybox", "true"]);
    one_line(&err);
    assert!(err.contains("unknown flag: --no-such-flag"), "{err}");
    // Nothing half-created.
    assert_eq!(
        b.ok(&["ps", "-aq", "--filter", "status=created"])
            .lines()
            .count(),
        1
    );
}

#[test]
fn commands_that_do_not_exist_exit_127() {
    let b = berth();
    let (_, err) = b.exits(127, &["run", "--rm", "busybox", "/no/such/binary"]);
    one_line(&err);
    let (_, err) = b.exits(127, &["run", "--rm", "busybox", "no-such-command"]);
    one_line(&err);
    // Detached too.
    b.exits(127, &["run", "-d", "--rm", "busybox", "/no/such/binary"]);
    assert_eq!(b.ok(&["ps", "-aq"]), "", "nothing left behind");
}

#[test]
fn commands_that_are_not_executable_exit_126() {
    let b = berth();
    let (_, err) = b.exits(126, &["run", "--rm", "busybox", "/etc/passwd"]);
    one_line(&err);
    let (_, err) = b.exits(126, &["run", "--rm", "busybox", "/tmp"]);
    one_line(&err);
    assert_eq!(b.ok(&["ps", "-aq"]), "", "nothing left behind");
}

#[test]
fn version_info_df_and_prune() {
    let b = berth();
    let v = b.ok(&["version"]);
    assert!(v.contains("Client:") && v.contains("Server:"), "{v}");
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    assert_eq!(
        b.ok(&["version", "--format", "{{.Client.Version}}"]).trim(),
        env!("CARGO_PKG_VERSION")
    );
    b.ok(&["run", "-d", "--name", "keep", "busybox", "sleep", "1000"]);
    b.ok(&["run", "--name", "gone", "busybox", "true"]);
    let info = b.ok(&["info"]);
    assert!(info.contains("Containers: 2"), "{info}");
    assert!(info.contains("Running: 1"), "{info}");
    let info_json: serde_json::Value =
        serde_json::from_str(&b.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(info_json["Containers"], 2);
    let df = b.ok(&["system", "df"]);
    assert!(df.starts_with("TYPE"), "{df}");
    assert!(df.contains("Images") && df.contains("Containers"), "{df}");

    let pruned = b.ok(&["container", "prune", "-f"]);
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert_eq!(b.ok(&["ps", "-a", "--format", "{{.Names}}"]), "keep\n");
    b.ok(&["rm", "-f", "keep"]);
    b.ok(&["tag", "busybox", "other:v1"]);
    let out = b.ok(&["system", "prune", "-a", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(b.ok(&["images", "-q"]), "");
}

#[test]
fn completions_and_man_pages_come_from_the_clap_definitions() {
    let b = Berth::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = b.ok(&["completion", shell]);
        for verb in ["run", "ps", "exec", "logs", "inspect"] {
            assert!(out.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let dir = b.dir.path().join("man");
    b.ok(&["__man", dir.to_str().unwrap()]);
    let run = std::fs::read_to_string(dir.join("berth-run.1")).unwrap();
    assert!(run.contains("\\-\\-rm") || run.contains("--rm"), "{run}");
    assert!(dir.join("berth.1").exists());
    assert!(dir.join("berth-system-prune.1").exists());
    // None of this needed a daemon.
    assert!(b.daemon_pid().is_none());
    // Help exits 0; a bad flag anywhere exits 125.
    b.exits(0, &["run", "--help"]);
    b.exits(125, &["ps", "--bogus"]);
}

#[test]
fn the_daemon_is_started_once_and_serves_several_clients() {
    let b = berth();
    let pid = b.daemon_pid().expect("the first command started berthd");
    let log = std::fs::read_to_string(b.state().join("berthd.log")).unwrap_or_default();
    let _ = log;
    let children: Vec<_> = (0..6)
        .map(|i| {
            b.cmd(&["run", "--rm", "busybox", "sh", "-c", &format!("exit {i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, mut c) in children.into_iter().enumerate() {
        assert_eq!(c.wait().unwrap().code(), Some(i32::try_from(i).unwrap()));
    }
    assert_eq!(b.daemon_pid(), Some(pid), "still the same daemon");
    // After berthd stops, the next command starts a new one.
    b.stop_daemon();
    assert!(b.daemon_pid().is_none());
    b.ok(&["run", "--rm", "busybox", "true"]);
    assert!(b.daemon_pid().is_some());
    // An explicit -H with nothing there (and no way to start one) fails with one line.
    let err = b.fails(&["-H", "unix:///proc/no/such.sock", "ps"]);
    one_line(&err);
}

/// A `--rm` container's writable layer is a `volatile` overlay (it does not outlive a host
/// crash, so nothing of it is synced); a container that is kept gets a durable one.
#[test]
fn an_rm_container_gets_a_volatile_overlay_and_a_kept_one_does_not() {
    let b = berth();
    let root_mount = |out: &str| -> String {
        out.lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or_else(|| panic!("no root mount in:\n{out}"))
            .to_owned()
    };
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "cat",
        "/proc/self/mountinfo",
    ]);
    let root = root_mount(&out);
    assert!(
        root.contains(" - overlay ") && root.contains("volatile"),
        "{root}"
    );
    let out = b.ok(&[
        "run",
        "--name",
        "kept",
        "--network",
        "none",
        "busybox",
        "cat",
        "/proc/self/mountinfo",
    ]);
    let root = root_mount(&out);
    assert!(
        root.contains(" - overlay ") && !root.contains("volatile"),
        "{root}"
    );
    b.ok(&["rm", "kept"]);
}

/// The host stops under a running `--rm` container (simulated: berthd, the shim and the
/// container killed, the root file system unmounted as a reboot would leave it). The next
/// berthd removes the container, as its exit would have, and never mounts its volatile
/// writable layer again.
#[test]
fn an_rm_container_whose_host_stopped_is_removed_at_boot() {
    let b = berth();
    let id = b
        .ok(&[
            "run",
            "-d",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sleep",
            "600",
        ])
        .trim()
        .to_owned();
    let pid: i32 = b
        .ok(&["inspect", "-f", "{{.State.Pid}}", &id])
        .trim()
        .parse()
        .unwrap();
    let bundle = b.state().join("shims").join(&id);
    let shim: i32 = std::fs::read_to_string(bundle.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let daemon = b.daemon_pid().expect("berthd runs");
    for p in [daemon, shim, pid] {
        // SAFETY: kill(2) of this test's own berthd, shim and container.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let gone = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| {
            s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(gone(daemon) && gone(shim) && gone(pid)) {
        assert!(Instant::now() < deadline, "the processes did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rootfs = bundle.join("rootfs");
    let out = std::process::Command::new("umount")
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(out.status.success(), "umount: {out:?}");

    // The next command starts a berthd, whose boot removes the container.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = b.ok(&["ps", "-aq", "--no-trunc"]);
        if !all.contains(&id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the --rm container is still listed: {}",
            b.ok(&["ps", "-a"])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!bundle.exists(), "its bundle is left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id[..12]), "a mount of it is left");
}
