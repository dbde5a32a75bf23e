//! Turning parsed flags into library calls, and results into runc's output.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use berth_runtime::error::chain;
use berth_runtime::{CreateOpts, Error, ExecOpts, Runtime};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    Process, User,
};
use tracing::Level;

use crate::cli::{Command, CreateArgs, ExecArgs, Format, UpdateArgs};
use crate::log::Logger;

/// Run the command line; returns the process exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match crate::cli::parse(args) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("berth-runtime: {e}");
            return 2;
        }
    };
    match cli.command {
        Command::Version => {
            println!(
                "berth-runtime version {}\ncommit: {}\nspec: 1.2.0",
                env!("CARGO_PKG_VERSION"),
                option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown")
            );
            return 0;
        }
        Command::Help(topic) => {
            println!("{}", crate::cli::help(topic));
            return 0;
        }
        _ => {}
    }
    let logger = match Logger::new(cli.log.as_deref(), cli.json, cli.debug) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!(
                "berth-runtime: cannot open log file {}: {e}",
                cli.log.as_deref().unwrap_or(Path::new("")).display()
            );
            return 1;
        }
    };
    let _ = tracing::subscriber::set_global_default(logger.clone());
    let mut rt = Runtime::new(&cli.root);
    rt.systemd_cgroup = cli.systemd_cgroup;
    match run(&rt, cli.command) {
        Ok(code) => code,
        Err(e) => {
            let msg = chain(&e);
            if logger.to_file() {
                logger.line(Level::ERROR, &msg);
                eprintln!("berth-runtime: {msg}");
            } else if cli.json {
                logger.line(Level::ERROR, &msg);
            } else {
                eprintln!("berth-runtime: {msg}");
            }
            1
        }
    }
}

fn create_opts(a: &CreateArgs) -> CreateOpts {
    CreateOpts {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.as_ref().map(|p| absolute(p)),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        pidfd_socket: a.pidfd_socket.clone(),
    }
}

fn absolute(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn run(rt: &Runtime, command: Command) -> Result<i32, Error> {
    match command {
        Command::Create(a) => rt.create(&create_opts(&a)).map(|_| 0),
        Command::Start(id) => rt.start(&id).map(|()| 0),
        Command::Run {
            create,
            detach,
            keep,
        } => rt.run(&create_opts(&create), detach, keep),
        Command::State(id) => {
            let st = rt.state(&id)?;
            print_json(&st)?;
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let sig = berth_runtime::signal::parse(&signal)?;
            rt.kill(&id, sig, all).map(|()| 0)
        }
        Command::Delete { force, id } => match rt.delete(&id, force) {
            // `delete --force` of a container that is already gone succeeds, as with runc.
            Err(Error::NotFound(_)) if force => Ok(0),
            r => r.map(|()| 0),
        },
        Command::List { format, quiet } => {
            let list = rt.list()?;
            let mut out = std::io::stdout().lock();
            if quiet {
                for e in &list {
                    writeln!(out, "{}", e.state.id).map_err(io)?;
                }
            } else if format == Format::Json {
                let states: Vec<_> = list.iter().map(|e| &e.state).collect();
                print_json(&states)?;
            } else {
                berth_runtime::list_table(&list, &mut out).map_err(io)?;
            }
            Ok(0)
        }
        Command::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = rt.ps(&id)?;
            if format == Format::Json {
                print_json(&pids)?;
            } else {
                ps_table(&pids, &ps_args)?;
            }
            Ok(0)
        }
        Command::Exec(a) => exec(rt, a),
        Command::Pause(id) => rt.pause(&id).map(|()| 0),
        Command::Resume(id) => rt.resume(&id).map(|()| 0),
        Command::Update(a) => {
            let id = a.id.clone();
            let res = update_resources(a)?;
            rt.update(&id, &res).map(|()| 0)
        }
        Command::Features => {
            print_json(&berth_runtime::features::features())?;
            Ok(0)
        }
        Command::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(Error::InvalidArgument(format!(
                    "{} already exists; remove it first",
                    path.display()
                )));
            }
            let uid = rustix::process::getuid().as_raw();
            let gid = rustix::process::getgid().as_raw();
            let spec = crate::template::default_spec(rootless, uid, gid);
            let text = serde_json::to_string_pretty(&spec)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            std::fs::write(&path, text + "\n")
                .map_err(|e| Error::sys(format!("write {}", path.display()), e))?;
            Ok(0)
        }
        Command::Version | Command::Help(_) => Ok(0),
    }
}

fn io(e: std::io::Error) -> Error {
    Error::sys("write output", e)
}

fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// runc's `ps` table: run ps(1) and keep the header and the container's pids.
fn ps_table(pids: &[i32], args: &[String]) -> Result<(), Error> {
    let args: Vec<String> = if args.is_empty() {
        vec!["-ef".into()]
    } else {
        args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::sys("run ps", e))?;
    if !out.status.success() {
        return Err(Error::InvalidArgument(format!(
            "ps {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Error::InvalidArgument("ps output has no PID column".into()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{header}").map_err(io)?;
    for line in lines {
        let pid: Option<i32> = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            writeln!(stdout, "{line}").map_err(io)?;
        }
    }
    Ok(())
}

fn exec(rt: &Runtime, a: ExecArgs) -> Result<i32, Error> {
    let process = match &a.process {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::sys(format!("read {}", path.display()), e))?;
            berth_runtime::spec::parse_json::<Process>(path, &bytes)?
        }
        None => {
            if a.command.is_empty() {
                return Err(Error::InvalidArgument(
                    "exec needs a command or --process".into(),
                ));
            }
            let mut p = rt.config(&a.id)?.process().clone().unwrap_or_default();
            p.set_args(Some(a.command.clone()));
            p.set_terminal(Some(a.tty));
            p.set_console_size(None);
            if let Some(cwd) = &a.cwd {
                p.set_cwd(cwd.clone());
            }
            let mut env = p.env().clone().unwrap_or_default();
            for kv in &a.env {
                let key = kv.split('=').next().unwrap_or("");
                env.retain(|e| e.split('=').next() != Some(key));
                env.push(kv.clone());
            }
            p.set_env(Some(env));
            if let Some(u) = &a.user {
                let mut user: User = p.user().clone();
                let (uid, gid) = u.split_once(':').unwrap_or((u.as_str(), ""));
                user.set_uid(uid.parse().map_err(|_| {
                    Error::InvalidArgument(format!("--user {u:?}: expected UID[:GID] as numbers"))
                })?);
                if !gid.is_empty() {
                    user.set_gid(gid.parse().map_err(|_| {
                        Error::InvalidArgument(format!(
                            "--user {u:?}: expected UID[:GID] as numbers"
                        ))
                    })?);
                }
                p.set_user(user);
            }
            if !a.additional_gids.is_empty() {
                let mut user = p.user().clone();
                user.set_additional_gids(Some(a.additional_gids.clone()));
                p.set_user(user);
            }
            if a.no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            if !a.cap.is_empty() {
                let mut caps = p.capabilities().clone().unwrap_or_default();
                for c in &a.cap {
                    let cap: oci_spec::runtime::Capability =
                        serde_json::from_value(serde_json::Value::String(c.clone())).map_err(
                            |_| Error::InvalidArgument(format!("--cap {c:?}: unknown capability")),
                        )?;
                    let mut b = caps.bounding().clone().unwrap_or_default();
                    b.insert(cap);
                    caps.set_bounding(Some(b));
                    let mut e = caps.effective().clone().unwrap_or_default();
                    e.insert(cap);
                    caps.set_effective(Some(e));
                    let mut pm = caps.permitted().clone().unwrap_or_default();
                    pm.insert(cap);
                    caps.set_permitted(Some(pm));
                }
                p.set_capabilities(Some(caps));
            }
            p
        }
    };
    rt.exec(
        &a.id,
        &ExecOpts {
            process,
            console_socket: a.console_socket.clone(),
            pid_file: a.pid_file.as_ref().map(|p| absolute(p)),
            detach: a.detach,
            preserve_fds: a.preserve_fds,
            ignore_paused: a.ignore_paused,
        },
    )
}

/// Bytes with an optional k/m/g/t suffix (binary units, as runc/docker parse them); -1 is "no limit".
fn parse_bytes(flag: &str, s: &str) -> Result<i64, Error> {
    let bad = || {
        Error::InvalidArgument(format!(
            "--{flag} {s:?}: expected bytes, optionally with a k, m, g or t suffix"
        ))
    };
    if s == "-1" {
        return Ok(-1);
    }
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).filter(|v| *v >= 0).ok_or_else(bad)
}

fn update_resources(a: UpdateArgs) -> Result<LinuxResources, Error> {
    let mut res = match &a.resources {
        Some(p) => {
            let bytes = if p == Path::new("-") {
                let mut b = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut b)
                    .map_err(|e| Error::sys("read resources from stdin", e))?;
                b
            } else {
                std::fs::read(p).map_err(|e| Error::sys(format!("read {}", p.display()), e))?
            };
            berth_runtime::spec::parse_json::<LinuxResources>(p, &bytes)?
        }
        None => LinuxResources::default(),
    };
    let err = |e: oci_spec::OciSpecError| Error::InvalidArgument(e.to_string());
    if a.memory.is_some() || a.memory_reservation.is_some() || a.memory_swap.is_some() {
        let mut limit = res.memory().as_ref().and_then(|m| m.limit());
        let mut reservation = res.memory().as_ref().and_then(|m| m.reservation());
        let mut swap = res.memory().as_ref().and_then(|m| m.swap());
        if let Some(v) = &a.memory {
            limit = Some(parse_bytes("memory", v)?);
        }
        if let Some(v) = &a.memory_reservation {
            reservation = Some(parse_bytes("memory-reservation", v)?);
        }
        if let Some(v) = &a.memory_swap {
            swap = Some(parse_bytes("memory-swap", v)?);
        }
        let mut m = LinuxMemoryBuilder::default();
        if let Some(v) = limit {
            m = m.limit(v);
        }
        if let Some(v) = reservation {
            m = m.reservation(v);
        }
        if let Some(v) = swap {
            m = m.swap(v);
        }
        res.set_memory(Some(m.build().map_err(err)?));
    }
    if a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_share.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
    {
        let old = res.cpu().clone().unwrap_or_default();
        let mut c = LinuxCpuBuilder::default();
        if let Some(v) = a.cpu_period.or(old.period()) {
            c = c.period(v);
        }
        if let Some(v) = a.cpu_quota.or(old.quota()) {
            c = c.quota(v);
        }
        if let Some(v) = a.cpu_share.or(old.shares()) {
            c = c.shares(v);
        }
        if let Some(v) = a.cpuset_cpus.clone().or(old.cpus().clone()) {
            c = c.cpus(v);
        }
        if let Some(v) = a.cpuset_mems.clone().or(old.mems().clone()) {
            c = c.mems(v);
        }
        if let Some(v) = a.cpu_rt_period.or(old.realtime_period()) {
            c = c.realtime_period(v);
        }
        if let Some(v) = a.cpu_rt_runtime.or(old.realtime_runtime()) {
            c = c.realtime_runtime(v);
        }
        res.set_cpu(Some(c.build().map_err(err)?));
    }
    if let Some(v) = a.pids_limit {
        res.set_pids(Some(
            LinuxPidsBuilder::default().limit(v).build().map_err(err)?,
        ));
    }
    if let Some(w) = a.blkio_weight {
        res.set_block_io(Some(
            LinuxBlockIoBuilder::default()
                .weight(w)
                .build()
                .map_err(err)?,
        ));
    }
    if a.rdt {
        return Err(Error::Unsupported(
            "Intel RDT is not supported by berth-runtime".into(),
        ));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("memory", "1024").unwrap(), 1024);
        assert_eq!(parse_bytes("memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("memory", "2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("memory", "-1").unwrap(), -1);
        assert!(parse_bytes("memory", "lots").is_err());
        assert!(parse_bytes("memory", "-5").is_err());
    }
}
