//! `berth-shim runtime ...`: the subset of runc's command line the shim uses, over the
//! berth-runtime library. The shim runs it as a short-lived child for every runtime operation
//! (see `server::runtime`), exactly as it runs runc with `--runtime`.
//!
//! Errors go to the `--log` file as JSON lines (`{"level":"error","msg":...}`, as runc writes
//! them), never to stderr: when the command starts a process, stderr is the container's.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use berth_runtime::{CreateOpts, ExecOpts, Runtime};

use crate::text::{escape_json_into, now_nanos, rfc3339_nanos};

#[derive(Default)]
struct Args {
    root: Option<PathBuf>,
    log: Option<PathBuf>,
    words: Vec<String>,
    bundle: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    console_socket: Option<PathBuf>,
    process: Option<PathBuf>,
    format: Option<String>,
    all: bool,
    force: bool,
    detach: bool,
}

fn parse(args: &[OsString]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match s.as_ref() {
            "--root" => a.root = Some(value("--root")?.into()),
            "--log" => a.log = Some(value("--log")?.into()),
            "--log-format" => {
                value("--log-format")?;
            }
            "--bundle" | "-b" => a.bundle = Some(value("--bundle")?.into()),
            "--pid-file" => a.pid_file = Some(value("--pid-file")?.into()),
            "--console-socket" => a.console_socket = Some(value("--console-socket")?.into()),
            "--process" | "-p" => a.process = Some(value("--process")?.into()),
            "--format" | "-f" => a.format = Some(value("--format")?.to_string_lossy().into()),
            "--all" | "-a" => a.all = true,
            "--force" => a.force = true,
            "--detach" | "-d" => a.detach = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => a.words.push(s.to_string()),
        }
    }
    Ok(a)
}

/// Entry point of `berth-shim runtime ARGS...`; returns the exit code.
pub(crate) fn main(args: &[OsString]) -> i32 {
    let parsed = parse(args);
    let log = parsed.as_ref().ok().and_then(|a| a.log.clone());
    match parsed.and_then(|a| run(&a)) {
        Ok(()) => 0,
        Err(msg) => {
            let mut line = b"{\"level\":\"error\",\"msg\":\"".to_vec();
            escape_json_into(&mut line, msg.as_bytes());
            line.extend_from_slice(b"\",\"time\":\"");
            line.extend_from_slice(rfc3339_nanos(now_nanos()).as_bytes());
            line.extend_from_slice(b"\"}\n");
            let written = log.is_some_and(|p| {
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .and_then(|mut f| f.write_all(&line))
                    .is_ok()
            });
            if !written {
                eprintln!("berth-shim runtime: {msg}");
            }
            1
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    let err = |e: berth_runtime::Error| berth_runtime::error::chain(&e);
    let root = a.root.clone().ok_or("--root is required")?;
    let mut rt = Runtime::new(root);
    // This process is single-threaded (a forked copy of the shim, or `berth-shim runtime`):
    // a container's init may skip the re-exec where the runtime finds that safe.
    rt.inline_init = true;
    // Loopback up in a new network namespace, as Docker has it; the shim's own namespace is
    // the container's when the shim made it for that (a standby shim).
    rt.docker_netns = true;
    rt.caller_netns_is_fresh = crate::server::in_fresh_netns();
    let verb = a.words.first().map(String::as_str).unwrap_or("");
    let id = a
        .words
        .get(1)
        .cloned()
        .ok_or_else(|| format!("{verb}: the container id is missing"))?;
    match verb {
        "create" => {
            let opts = CreateOpts {
                id,
                bundle: a.bundle.clone().unwrap_or_else(|| PathBuf::from(".")),
                console_socket: a.console_socket.clone(),
                pid_file: a.pid_file.clone(),
                ..CreateOpts::default()
            };
            rt.create(&opts).map(drop).map_err(err)
        }
        "start" => rt.start(&id).map_err(err),
        "kill" => {
            let sig = a.words.get(2).map_or("SIGTERM", String::as_str);
            let sig = berth_runtime::signal::parse(sig).map_err(err)?;
            rt.kill(&id, sig, a.all).map_err(err)
        }
        "delete" => rt.delete(&id, a.force).map_err(err),
        "pause" => rt.pause(&id).map_err(err),
        "resume" => rt.resume(&id).map_err(err),
        "ps" => {
            let pids = rt.ps(&id).map_err(err)?;
            let list: Vec<String> = pids.iter().map(i32::to_string).collect();
            println!("[{}]", list.join(","));
            Ok(())
        }
        "exec" => {
            let path = a.process.clone().ok_or("exec: --process is required")?;
            let text = std::fs::read(&path)
                .map_err(|e| format!("read the process file {}: {e}", path.display()))?;
            let process: oci_spec::runtime::Process = serde_json::from_slice(&text)
                .map_err(|e| format!("parse the process file {}: {e}", path.display()))?;
            let opts = ExecOpts {
                process,
                console_socket: a.console_socket.clone(),
                pid_file: a.pid_file.clone(),
                detach: a.detach,
                preserve_fds: 0,
                ignore_paused: false,
            };
            rt.exec(&id, &opts).map(drop).map_err(err)
        }
        other => Err(format!("unknown command {other:?}")),
    }
}
