//! Shared fixtures of the shim's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_shim::{Client, ExitInfo, Frame, LogOpts, ShimConfig, Stream};
use berth_testutil::{Bundle, require_root, unique_id};

pub fn shim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth-shim"))
}

pub fn runc() -> PathBuf {
    for p in ["/usr/sbin/runc", "/usr/bin/runc"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    berth_testutil::require(false, "runc (Debian package runc)");
    unreachable!()
}

/// One container under test: its bundle, a private runtime root, and whatever the shim left.
/// Dropping it deletes the container through the shim, and if that fails, kills the shim and
/// force-deletes the container in the runtime.
pub struct Fixture {
    pub bundle: Bundle,
    pub root: tempfile::TempDir,
    pub id: String,
    pub runtime: Option<PathBuf>,
    pub client: Option<Client>,
}

impl Fixture {
    pub fn new(args: &[&str]) -> Fixture {
        require_root();
        Fixture {
            bundle: Bundle::busybox(args),
            root: tempfile::Builder::new()
                .prefix("berth-shim-root-")
                .tempdir()
                .expect("create runtime root"),
            id: unique_id("shim"),
            runtime: None,
            client: None,
        }
    }

    pub fn with_runtime(mut self, rt: PathBuf) -> Fixture {
        self.runtime = Some(rt);
        self
    }

    pub fn log_path(&self) -> PathBuf {
        self.bundle.path().join("ctr-json.log")
    }

    pub fn config(&self, tty: bool, stdin: bool) -> ShimConfig {
        ShimConfig {
            id: self.id.clone(),
            bundle: self.bundle.path().to_path_buf(),
            runtime_root: self.root.path().to_path_buf(),
            runtime: self.runtime.clone(),
            tty,
            stdin,
            log: Some(LogOpts {
                path: self.log_path(),
                max_size: 0,
                max_file: 1,
            }),
            cgroup: None,
            new_netns: false,
        }
    }

    pub fn spawn(&mut self, cfg: &ShimConfig) -> &Client {
        let c = berth_shim::spawn(&shim_bin(), cfg).expect("spawn the shim");
        self.client = Some(c);
        self.client.as_ref().unwrap()
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("spawned")
    }

    /// The json-file log as (stream, log) pairs.
    pub fn log_entries(&self) -> Vec<(String, String)> {
        read_log(&self.log_path())
    }
}

pub fn read_log(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON log line");
            assert!(v["time"].as_str().unwrap().ends_with('Z'));
            (
                v["stream"].as_str().unwrap().to_string(),
                v["log"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let shim_pid = self
            .client
            .as_ref()
            .and_then(|c| c.shim_pid().ok())
            .or_else(|| {
                std::fs::read_to_string(self.bundle.path().join("shim.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
            });
        let deleted = match &self.client {
            Some(c) => c.delete().is_ok(),
            None => false,
        };
        if !deleted {
            if let Some(pid) = shim_pid {
                // SAFETY: kill(2) on a pid we read from the shim's pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let mut cmd = match &self.runtime {
                Some(rt) => Command::new(rt),
                None => {
                    let mut c = Command::new(shim_bin());
                    c.arg("runtime");
                    c
                }
            };
            let _ = cmd
                .arg("--root")
                .arg(self.root.path())
                .args(["delete", "--force", &self.id])
                .output();
        }
        if let Some(pid) = shim_pid {
            wait_gone(pid);
        }
    }
}

/// Wait (bounded) until a process that is not our child is gone.
pub fn wait_gone(pid: i32) {
    for _ in 0..5000 {
        if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Read a stream to its end: (stdout, stderr, exit).
pub fn collect(stream: &Stream) -> (String, String, Option<ExitInfo>) {
    let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
    while let Some(f) = stream.recv().expect("read the stream") {
        match f {
            Frame::Stdout(b) => out.extend(b),
            Frame::Stderr(b) => err.extend(b),
            Frame::Exit(e) => exit = Some(e),
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        exit,
    )
}

/// Read stdout frames until `needle` has been seen; returns everything read.
pub fn read_until(stream: &Stream, needle: &str) -> String {
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(needle) {
        match stream.recv().expect("read the stream") {
            Some(Frame::Stdout(b)) | Some(Frame::Stderr(b)) => out.extend(b),
            other => panic!(
                "stream ended ({other:?}) before {needle:?}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
