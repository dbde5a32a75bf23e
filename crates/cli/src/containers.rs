//! Container verbs: run, create, start, stop, kill, restart, pause, unpause, rm, ps, logs, exec,
//! attach, wait, top, stats, cp, inspect, container prune.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_api::v1::{
    AttachStart, ContainerConfig, ContainerRef, CopyFromRequest, CopyToChunk, CopyToRequest,
    CreateContainerRequest, ExecStart, IoIn, KillRequest, ListContainersRequest, LogConfig,
    LogsRequest, PruneContainersRequest, RemoveContainerRequest, StatsRequest, StopRequest,
    TopRequest, TtySize, WaitRequest, copy_to_chunk, io_in, io_out,
};
use berth_spec::parse;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Client;
use crate::output::{self, human_size, print_tabbed};
use crate::template::{self, Template};
use crate::tty;
use crate::{
    AttachArgs, CliResult, CpArgs, CreateArgs, ExecArgs, Failure, ForceArgs, InspectArgs, KillArgs,
    LogsArgs, NamesArgs, PsArgs, RmArgs, RunArgs, StartArgs, StatsArgs, StopArgs, TopArgs,
};

fn bad(e: impl std::fmt::Display) -> Failure {
    Failure::new(format!("Error: {e}"))
}

/// Expand `-e KEY` from our environment and prepend `--env-file` lines, as Docker does.
fn env_list(env: &[String], files: &[PathBuf]) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    for f in files {
        out.extend(parse::env_file(f).map_err(bad)?);
    }
    for e in env {
        if e.contains('=') {
            out.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            out.push(format!("{e}={v}"));
        }
    }
    Ok(out)
}

/// The API's container configuration from `create`/`run` flags; bad values fail here (125).
pub fn config_from(o: &crate::ContainerOpts) -> Result<ContainerConfig, Failure> {
    let (image, cmd) = o
        .args
        .split_first()
        .ok_or_else(|| bad("\"run\" requires at least 1 argument: IMAGE [COMMAND] [ARG...]"))?;
    // The positional list takes hyphen values so the command's own flags pass through, which
    // would also make an unknown flag before the image look like the image.
    if image.starts_with('-') {
        return Err(bad(format!(
            "unknown flag: {image} (see 'berth run --help'; options go before the image)"
        )));
    }
    if o.rm
        && o.restart
            .as_deref()
            .is_some_and(|r| !r.is_empty() && r != "no")
    {
        return Err(bad("Conflicting options: --restart and --rm"));
    }
    let mut cfg = ContainerConfig {
        name: o.name.clone().unwrap_or_default(),
        image: image.clone(),
        cmd: cmd.to_vec(),
        env: env_list(&o.env, &o.env_file)?,
        working_dir: o.workdir.clone().unwrap_or_default(),
        user: o.user.clone().unwrap_or_default(),
        hostname: o.hostname.clone().unwrap_or_default(),
        tty: o.tty,
        open_stdin: o.interactive,
        network_mode: o.network.clone().unwrap_or_default(),
        read_only: o.read_only,
        cap_add: o.cap_add.clone(),
        cap_drop: o.cap_drop.clone(),
        privileged: o.privileged,
        pids_limit: o.pids_limit.unwrap_or(0),
        init: o.init,
        auto_remove: o.rm,
        stop_timeout: o.stop_timeout,
        runtime: o.runtime.clone().unwrap_or_default(),
        dns: o.dns.clone(),
        extra_hosts: o.add_host.clone(),
        platform: o.platform.clone().unwrap_or_default(),
        ..ContainerConfig::default()
    };
    if let Some(ep) = &o.entrypoint {
        cfg.entrypoint_set = true;
        if !ep.is_empty() {
            cfg.entrypoint = vec![ep.clone()];
        }
    }
    crate::networks::apply_flags(o, &mut cfg)?;
    for l in &o.label {
        let (k, v) = parse::label(l).map_err(bad)?;
        cfg.labels.insert(k, v);
    }
    for v in &o.volume {
        cfg.mounts.push(parse::volume(v).map_err(bad)?);
    }
    for m in &o.mount {
        cfg.mounts.push(parse::mount(m).map_err(bad)?);
    }
    // `--tmpfs` stays apart from the mounts, as Docker's HostConfig.Tmpfs (not in `Mounts`).
    for t in &o.tmpfs {
        parse::tmpfs(t).map_err(bad)?;
        cfg.tmpfs.push(t.clone());
    }
    for s in &o.security_opt {
        cfg.security_opt.push(parse::security_opt(s).map_err(bad)?);
    }
    if let Some(m) = &o.memory {
        cfg.memory = parse::bytes("--memory", m).map_err(bad)?;
    }
    if let Some(m) = &o.memory_swap {
        cfg.memory_swap = parse::memory_swap(m).map_err(bad)?;
    }
    if let Some(c) = &o.cpus {
        cfg.nano_cpus = parse::cpus(c).map_err(bad)?;
    }
    for u in &o.ulimit {
        cfg.ulimits.push(parse::ulimit(u).map_err(bad)?);
    }
    if let Some(r) = &o.restart {
        cfg.restart = Some(parse::restart(r).map_err(bad)?);
    }
    if let Some(s) = &o.stop_signal {
        parse::signal(s).map_err(bad)?;
        cfg.stop_signal = s.clone();
    }
    if o.log_driver.is_some() || !o.log_opt.is_empty() {
        let driver = o.log_driver.clone().unwrap_or_default();
        if !matches!(driver.as_str(), "" | "json-file" | "none" | "local") {
            return Err(bad(format!(
                "invalid --log-driver {driver:?}: berth supports json-file and none"
            )));
        }
        let mut options = HashMap::new();
        for l in &o.log_opt {
            let (k, v) = parse::log_opt(l).map_err(bad)?;
            options.insert(k, v);
        }
        cfg.log = Some(LogConfig { driver, options });
    }
    Ok(cfg)
}

fn is_missing_image(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::NotFound && s.message().to_lowercase().contains("image")
}

/// Create, pulling the image first when it is missing (or always, with `--pull always`).
async fn create_container(
    c: &Client,
    cfg: ContainerConfig,
    o: &crate::ContainerOpts,
) -> Result<String, Failure> {
    if o.pull == "always" {
        crate::images::pull_for_run(c, &cfg.image, &cfg.platform, o.quiet).await?;
    }
    let resp = match c
        .containers()
        .create(c.req(CreateContainerRequest {
            config: Some(cfg.clone()),
        }))
        .await
    {
        Err(s) if is_missing_image(&s) && o.pull == "missing" => {
            eprintln!("Unable to find image '{}' locally", cfg.image);
            crate::images::pull_for_run(c, &cfg.image, &cfg.platform, o.quiet).await?;
            c.containers()
                .create(c.req(CreateContainerRequest { config: Some(cfg) }))
                .await?
        }
        r => r?,
    }
    .into_inner();
    for w in &resp.warnings {
        eprintln!("WARNING: {w}");
    }
    Ok(resp.id)
}

pub async fn create_cmd(c: &Client, a: CreateArgs) -> CliResult {
    let cfg = config_from(&a.opts)?;
    let id = create_container(c, cfg, &a.opts).await?;
    println!("{id}");
    Ok(())
}

/// Start failed: name the reason with Docker's 126/127 when the command could not run.
fn start_failure(s: tonic::Status) -> Failure {
    let code = crate::exec_failure_code(&s).unwrap_or(125);
    Failure::from(s).code(code)
}

pub async fn run(c: &Client, a: RunArgs) -> Result<u8, Failure> {
    let mut cfg = config_from(&a.opts)?;
    let detach_keys = tty::parse_detach_keys(a.detach_keys.as_deref()).map_err(bad)?;
    if !a.detach && a.opts.interactive {
        cfg.stdin_once = true;
    }
    let rm = cfg.auto_remove;
    if a.opts.tty && a.opts.interactive && !a.detach && !std::io::stdin().is_terminal() {
        return Err(bad("the input device is not a TTY"));
    }
    let id = create_container(c, cfg, &a.opts).await?;
    if a.detach {
        if let Err(s) = c
            .tasks()
            .start(c.req(ContainerRef { id: id.clone() }))
            .await
        {
            if rm {
                remove_quietly(c, &id).await;
            }
            return Err(start_failure(s));
        }
        println!("{id}");
        return Ok(0);
    }
    let result = session(
        c,
        SessionOpts {
            id: id.clone(),
            stdin: a.opts.interactive,
            tty: a.opts.tty,
            detach_keys,
            sig_proxy: a.sig_proxy,
            start: true,
            wait_condition: if rm { "removed" } else { "next-exit" },
        },
    )
    .await;
    if result.is_err() && rm {
        // Attach or start failed: --rm leaves nothing behind.
        remove_quietly(c, &id).await;
    }
    result
}

async fn remove_quietly(c: &Client, id: &str) {
    let _ = c
        .containers()
        .remove(c.req(RemoveContainerRequest {
            id: id.to_owned(),
            force: true,
            volumes: true,
        }))
        .await;
}

struct SessionOpts {
    id: String,
    stdin: bool,
    tty: bool,
    detach_keys: Vec<u8>,
    sig_proxy: bool,
    start: bool,
    wait_condition: &'static str,
}

fn tty_size() -> Option<TtySize> {
    tty::size().map(|(w, h)| TtySize {
        width: u32::from(w),
        height: u32::from(h),
    })
}

/// Forward SIGWINCH as resizes, and (with `sig_proxy`) the usual signals to the container.
fn spawn_signal_tasks(c: &Client, id: &str, tty: bool, sig_proxy: bool, tx: &mpsc::Sender<IoIn>) {
    use tokio::signal::unix::{SignalKind, signal};
    if tty && std::io::stdout().is_terminal() {
        let tx = tx.clone();
        if let Ok(mut winch) = signal(SignalKind::window_change()) {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some(size) = tty_size() {
                        let msg = IoIn {
                            msg: Some(io_in::Msg::Resize(size)),
                        };
                        if tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    }
    if !sig_proxy {
        return;
    }
    let signals: &[(SignalKind, &str)] = &[
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ];
    for (kind, name) in signals {
        // With a tty, Ctrl-C is a byte for the container; SIGINT only comes from kill(1).
        let Ok(mut s) = signal(*kind) else { continue };
        let c = c.clone();
        let id = id.to_owned();
        let name = (*name).to_owned();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                let _ = c
                    .tasks()
                    .kill(c.req(KillRequest {
                        id: id.clone(),
                        signal: name.clone(),
                    }))
                    .await;
            }
        });
    }
}

/// Read our stdin on a thread and send it (with the detach-key scan on a tty); EOF closes the
/// container's stdin. Returns a receiver that fires when the detach keys are typed.
fn spawn_stdin_pump(
    tx: mpsc::Sender<IoIn>,
    tty: bool,
    detach_keys: Vec<u8>,
) -> mpsc::UnboundedReceiver<()> {
    let (dtx, drx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut scanner = tty::DetachScanner::new(if tty { detach_keys } else { Vec::new() });
        let mut buf = vec![0u8; 32 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let (fwd, detached) = scanner.feed(&buf[..n]);
            if !fwd.is_empty()
                && tx
                    .blocking_send(IoIn {
                        msg: Some(io_in::Msg::Stdin(fwd)),
                    })
                    .is_err()
            {
                return;
            }
            if detached {
                let _ = dtx.send(());
                return;
            }
        }
        let _ = tx.blocking_send(IoIn {
            msg: Some(io_in::Msg::CloseStdin(true)),
        });
    });
    drx
}

enum Pumped {
    Ended(Option<berth_api::v1::Exit>),
    Detached,
}

/// Copy the stream's output to our stdout/stderr until it ends or the user detaches.
async fn pump(
    out: &mut tonic::Streaming<berth_api::v1::IoOut>,
    detach: &mut Option<mpsc::UnboundedReceiver<()>>,
) -> Result<Pumped, Failure> {
    let mut exit = None;
    loop {
        let msg = tokio::select! {
            m = out.message() => m,
            Some(()) = async {
                match detach.as_mut() {
                    Some(d) => d.recv().await,
                    None => std::future::pending().await,
                }
            } => return Ok(Pumped::Detached),
        };
        match msg {
            Ok(Some(m)) => match m.msg {
                Some(io_out::Msg::Stdout(b)) => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&b);
                    let _ = o.flush();
                }
                Some(io_out::Msg::Stderr(b)) => {
                    let mut e = std::io::stderr().lock();
                    let _ = e.write_all(&b);
                    let _ = e.flush();
                }
                Some(io_out::Msg::Exit(e)) => exit = Some(e),
                Some(io_out::Msg::Ready(_)) | None => {}
            },
            Ok(None) => return Ok(Pumped::Ended(exit)),
            Err(s) => {
                // The stream breaking after the exit was sent is a normal end.
                if exit.is_some() {
                    return Ok(Pumped::Ended(exit));
                }
                return Err(s.into());
            }
        }
    }
}

/// Attach to a container (starting it when asked), stream its stdio, and return its exit code.
///
/// With `start` the daemon starts the container within the attach call and ends the stream
/// with the exit it recorded (after the removal, for `--rm`), so one call does it all; without,
/// a Wait call alongside the stream gives the exit code.
async fn session(c: &Client, o: SessionOpts) -> Result<u8, Failure> {
    let (tx, rx) = mpsc::channel::<IoIn>(64);
    let size = if o.tty { tty_size() } else { None };
    tx.send(IoIn {
        msg: Some(io_in::Msg::Attach(AttachStart {
            id: o.id.clone(),
            stdin: o.stdin,
            stdout: true,
            stderr: true,
            size,
            start: o.start,
        })),
    })
    .await
    .map_err(|_| bad("attach stream closed"))?;
    if o.start && o.tty && o.stdin {
        tty::make_raw()?;
    }
    let attached = c.tasks().attach(c.req(ReceiverStream::new(rx))).await;
    let mut out = match attached {
        Ok(r) => r.into_inner(),
        Err(s) if o.start => {
            tty::restore_terminal();
            return Err(start_failure(s));
        }
        Err(s) => return Err(s.into()),
    };
    match out.message().await? {
        Some(berth_api::v1::IoOut {
            msg: Some(io_out::Msg::Ready(_)),
        }) => {}
        other => {
            tty::restore_terminal();
            return Err(bad(format!(
                "the daemon did not confirm the attach to {} (got {other:?})",
                o.id
            )));
        }
    }
    // Without a start here, ask the daemon for the exit (the stream's own says only what the
    // shim saw, before the daemon recorded it).
    let waiter = (!o.start).then(|| {
        let c = c.clone();
        let req = WaitRequest {
            id: o.id.clone(),
            condition: o.wait_condition.to_owned(),
        };
        tokio::spawn(async move { c.tasks().wait(c.req(req)).await })
    });
    if !o.start && o.tty && o.stdin {
        tty::make_raw()?;
    }
    spawn_signal_tasks(c, &o.id, o.tty, o.sig_proxy, &tx);
    let mut detach = o
        .stdin
        .then(|| spawn_stdin_pump(tx.clone(), o.tty, o.detach_keys.clone()));
    let pumped = pump(&mut out, &mut detach).await;
    tty::restore_terminal();
    let exit = match pumped? {
        Pumped::Detached => {
            if let Some(w) = waiter {
                w.abort();
            }
            return Ok(0);
        }
        Pumped::Ended(exit) => exit,
    };
    drop(tx);
    let Some(waiter) = waiter else {
        let exit = exit.ok_or_else(|| {
            bad(format!(
                "the daemon ended the stream of {} without its exit",
                o.id
            ))
        })?;
        if !exit.error.is_empty() {
            eprintln!("Error: {}", exit.error);
        }
        return Ok(exit_u8(exit.code));
    };
    let waited = waiter
        .await
        .map_err(|e| bad(format!("waiting for {}: {e}", o.id)))?;
    match waited {
        Ok(r) => {
            let r = r.into_inner();
            if !r.error.is_empty() {
                eprintln!("Error: {}", r.error);
            }
            Ok(exit_u8(r.status_code))
        }
        Err(s) if s.code() == tonic::Code::NotFound => {
            // Already removed (--rm) before the wait was registered: the stream's exit tells.
            Ok(exit.map_or(0, |e| exit_u8(e.code)))
        }
        Err(s) => Err(s.into()),
    }
}

fn exit_u8(code: i32) -> u8 {
    u8::try_from(code.rem_euclid(256)).unwrap_or(255)
}

/// `Config.Tty` and `Config.OpenStdin` of a container.
async fn tty_and_stdin(c: &Client, id: &str) -> Result<(bool, bool), Failure> {
    let doc = c
        .containers()
        .inspect(c.req(ContainerRef { id: id.to_owned() }))
        .await?
        .into_inner();
    let v: Value = serde_json::from_str(&doc.json)?;
    let v = if v.is_array() { v[0].clone() } else { v };
    Ok((
        v["Config"]["Tty"].as_bool().unwrap_or(false),
        v["Config"]["OpenStdin"].as_bool().unwrap_or(false),
    ))
}

pub async fn start(c: &Client, a: StartArgs) -> Result<u8, Failure> {
    if a.attach || a.interactive {
        if a.names.len() > 1 {
            return Err(bad(
                "you cannot start and attach multiple containers at once",
            ));
        }
        let id = a.names[0].clone();
        let (tty_on, _) = tty_and_stdin(c, &id).await?;
        let detach_keys = tty::parse_detach_keys(a.detach_keys.as_deref()).map_err(bad)?;
        return session(
            c,
            SessionOpts {
                id,
                stdin: a.interactive,
                tty: tty_on,
                detach_keys,
                sig_proxy: true,
                start: true,
                wait_condition: "next-exit",
            },
        )
        .await;
    }
    each(&a.names, |id| async move {
        c.tasks().start(c.req(ContainerRef { id })).await.map(drop)
    })
    .await
    .map(|()| 0)
}

pub async fn attach(c: &Client, a: AttachArgs) -> Result<u8, Failure> {
    let (tty_on, open_stdin) = tty_and_stdin(c, &a.name).await?;
    let detach_keys = tty::parse_detach_keys(a.detach_keys.as_deref()).map_err(bad)?;
    session(
        c,
        SessionOpts {
            id: a.name.clone(),
            stdin: open_stdin && !a.no_stdin,
            tty: tty_on,
            detach_keys,
            sig_proxy: a.sig_proxy && !tty_on,
            start: false,
            wait_condition: "not-running",
        },
    )
    .await
}

/// Run `f` for each name, printing the name on success and the error otherwise (exit 1).
async fn each<F, Fut>(names: &[String], f: F) -> CliResult
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut failed = false;
    for n in names {
        match f(n.clone()).await {
            Ok(()) => println!("{n}"),
            Err(s) => {
                failed = true;
                eprintln!("{}", Failure::from(s).msg.replace(['\n', '\r'], " "));
            }
        }
    }
    if failed {
        Err(Failure::new(""))
    } else {
        Ok(())
    }
}

pub async fn stop(c: &Client, a: StopArgs, restart: bool) -> CliResult {
    if let Some(s) = &a.signal {
        parse::signal(s).map_err(bad)?;
    }
    let timeout = a.time;
    each(&a.names, |id| async move {
        let req = c.req(StopRequest {
            id,
            timeout_seconds: timeout,
        });
        if restart {
            c.tasks().restart(req).await.map(drop)
        } else {
            c.tasks().stop(req).await.map(drop)
        }
    })
    .await
}

pub async fn kill(c: &Client, a: KillArgs) -> CliResult {
    parse::signal(&a.signal).map_err(bad)?;
    let signal = a.signal.clone();
    each(&a.names, |id| {
        let signal = signal.clone();
        async move {
            c.tasks()
                .kill(c.req(KillRequest { id, signal }))
                .await
                .map(drop)
        }
    })
    .await
}

pub async fn pause(c: &Client, a: NamesArgs, pause: bool) -> CliResult {
    each(&a.names, |id| async move {
        let req = c.req(ContainerRef { id });
        if pause {
            c.tasks().pause(req).await.map(drop)
        } else {
            c.tasks().unpause(req).await.map(drop)
        }
    })
    .await
}

pub async fn rm(c: &Client, a: RmArgs) -> CliResult {
    let (force, volumes) = (a.force, a.volumes);
    each(&a.names, |id| async move {
        c.containers()
            .remove(c.req(RemoveContainerRequest { id, force, volumes }))
            .await
            .map(drop)
    })
    .await
}

pub async fn wait(c: &Client, a: NamesArgs) -> CliResult {
    let mut failed = false;
    for id in &a.names {
        match c
            .tasks()
            .wait(c.req(WaitRequest {
                id: id.clone(),
                condition: "not-running".into(),
            }))
            .await
        {
            Ok(r) => println!("{}", r.into_inner().status_code),
            Err(s) => {
                failed = true;
                eprintln!("{}", Failure::from(s).msg);
            }
        }
    }
    if failed {
        Err(Failure::new(""))
    } else {
        Ok(())
    }
}

/// Docker's `Ellipsis`: at most `n` characters, the last one `…` when cut.
fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Go's `strconv.Quote` for the printable strings commands are.
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH
    }
}

/// `2026-11-30 17:45:39 +0000 UTC`, as Go prints a time.Time.
fn go_time(secs: i64) -> String {
    let t = humantime::format_rfc3339_seconds(unix_to_system(secs)).to_string();
    format!("{} +0000 UTC", t.trim_end_matches('Z').replace('T', " "))
}

/// go-units' HumanDuration + " ago".
fn running_for(secs: i64) -> String {
    let age = SystemTime::now()
        .duration_since(unix_to_system(secs))
        .unwrap_or(Duration::ZERO)
        .as_secs();
    format!("{} ago", output::human_duration(age))
}

fn ps_row(s: &berth_api::v1::ContainerSummary, no_trunc: bool) -> Value {
    let id = if no_trunc {
        s.id.clone()
    } else {
        s.id.chars().take(12).collect()
    };
    let command = if no_trunc {
        go_quote(&s.command)
    } else {
        go_quote(&ellipsis(&s.command, 20))
    };
    let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    json!({
        "Command": command,
        "CreatedAt": go_time(s.created_unix),
        "ID": id,
        "Image": s.image,
        "Labels": labels.join(","),
        "LocalVolumes": "0",
        "Mounts": s.mounts.join(","),
        "Names": s.names.join(","),
        "Networks": s.networks,
        "Ports": s.ports,
        "RunningFor": running_for(s.created_unix),
        "Size": "0B",
        "State": s.state,
        "Status": s.status,
        "__labels": s.labels,
    })
}

const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

fn ps_headers() -> Value {
    json!({
        "Command": "COMMAND", "CreatedAt": "CREATED AT", "ID": "CONTAINER ID", "Image": "IMAGE",
        "Labels": "LABELS", "LocalVolumes": "LOCAL VOLUMES", "Mounts": "MOUNTS", "Names": "NAMES",
        "Networks": "NETWORKS", "Ports": "PORTS", "RunningFor": "CREATED", "Size": "SIZE",
        "State": "STATE", "Status": "STATUS", "__labels": {},
    })
}

/// Print rows with a `--format`: `json` (one object per line), `table [TEMPLATE]`, or a
/// template per row.
pub fn print_formatted(
    rows: &[Value],
    format: Option<&str>,
    default_table: &str,
    headers: &Value,
) -> CliResult {
    let format = format.unwrap_or(default_table);
    if format == "json" {
        for r in rows {
            let mut r = r.clone();
            if let Some(m) = r.as_object_mut() {
                m.remove("__labels");
            }
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    }
    let (table, body) = if format == "table" {
        (true, default_table.trim_start_matches("table ").to_owned())
    } else if let Some(t) = format.strip_prefix("table ") {
        (true, t.to_owned())
    } else {
        (false, format.to_owned())
    };
    let tpl = Template::parse(&template::unescape(&body))?;
    let mut lines = Vec::new();
    if table {
        lines.push(tpl.render(headers).unwrap_or_default());
    }
    for r in rows {
        lines.push(tpl.render(r)?);
    }
    if table {
        print_tabbed(&lines);
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

pub async fn ps(c: &Client, a: PsArgs) -> CliResult {
    let last = if a.latest {
        1
    } else {
        a.last.unwrap_or(0).max(0)
    };
    let list = c
        .containers()
        .list(c.req(ListContainersRequest {
            all: a.all || last > 0,
            filters: a.filter.clone(),
            last,
        }))
        .await?
        .into_inner()
        .containers;
    if a.quiet {
        for s in &list {
            if a.no_trunc {
                println!("{}", s.id);
            } else {
                println!("{}", s.id.chars().take(12).collect::<String>());
            }
        }
        return Ok(());
    }
    let rows: Vec<Value> = list.iter().map(|s| ps_row(s, a.no_trunc)).collect();
    print_formatted(&rows, a.format.as_deref(), PS_TABLE, &ps_headers())
}

/// A time flag: RFC 3339, unix seconds (with fraction), or a duration before now (`10m`).
pub fn parse_time(s: &str) -> Result<i64, Failure> {
    let nanos = |t: SystemTime| -> i64 {
        t.duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    };
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(nanos(t));
    }
    if let Ok(t) = humantime::parse_rfc3339(s) {
        return Ok(nanos(t));
    }
    if let Some((secs, frac)) = s.split_once('.').or(Some((s, "")))
        && let Ok(secs) = secs.parse::<i64>()
    {
        let frac_n = if frac.is_empty() {
            0
        } else {
            let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
            digits
                .parse::<i64>()
                .map_err(|_| bad(format!("invalid time {s:?}")))?
        };
        return Ok(secs * 1_000_000_000 + frac_n);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(nanos(
            SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH),
        ));
    }
    Err(bad(format!(
        "invalid time {s:?}: use RFC 3339 (2026-01-02T15:04:05Z), unix seconds, or a duration like 10m"
    )))
}

/// Docker's fixed-width RFC 3339 with nanoseconds, in UTC.
pub fn rfc3339_nanos(nanos: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    humantime::format_rfc3339_nanos(t).to_string()
}

pub async fn logs(c: &Client, a: LogsArgs) -> CliResult {
    let tail = if a.tail == "all" || a.tail.is_empty() {
        -1
    } else {
        a.tail
            .parse::<i64>()
            .map_err(|_| bad(format!("invalid --tail {:?}: a number or \"all\"", a.tail)))?
    };
    let since = a.since.as_deref().map(parse_time).transpose()?.unwrap_or(0);
    let until = a.until.as_deref().map(parse_time).transpose()?.unwrap_or(0);
    let mut stream = c
        .containers()
        .logs(c.req(LogsRequest {
            id: a.name.clone(),
            follow: a.follow,
            tail,
            since_unix_nanos: since,
            until_unix_nanos: until,
            stdout: true,
            stderr: true,
        }))
        .await?
        .into_inner();
    while let Some(e) = stream.message().await? {
        let mut buf = Vec::with_capacity(e.data.len() + 32);
        if a.timestamps {
            buf.extend_from_slice(rfc3339_nanos(e.time_unix_nanos).as_bytes());
            buf.push(b' ');
        }
        buf.extend_from_slice(&e.data);
        let r = if e.stream == 2 {
            let mut err = std::io::stderr().lock();
            err.write_all(&buf).and_then(|()| err.flush())
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf).and_then(|()| out.flush())
        };
        if r.is_err() {
            // The reader went away (`| head`): stop quietly.
            return Ok(());
        }
    }
    Ok(())
}

pub async fn exec(c: &Client, a: ExecArgs) -> Result<u8, Failure> {
    let (id, cmd) = a
        .args
        .split_first()
        .ok_or_else(|| bad("\"exec\" requires at least 2 arguments"))?;
    let env = env_list(&a.env, &a.env_file)?;
    let detach_keys = tty::parse_detach_keys(a.detach_keys.as_deref()).map_err(bad)?;
    if a.tty && a.interactive && !std::io::stdin().is_terminal() {
        return Err(bad("the input device is not a TTY"));
    }
    let (tx, rx) = mpsc::channel::<IoIn>(64);
    tx.send(IoIn {
        msg: Some(io_in::Msg::Exec(ExecStart {
            id: id.clone(),
            cmd: cmd.to_vec(),
            env,
            user: a.user.clone().unwrap_or_default(),
            working_dir: a.workdir.clone().unwrap_or_default(),
            tty: a.tty,
            stdin: a.interactive && !a.detach,
            detach: a.detach,
            privileged: a.privileged,
            size: if a.tty { tty_size() } else { None },
        })),
    })
    .await
    .map_err(|_| bad("exec stream closed"))?;
    let mut out = match c.tasks().exec(c.req(ReceiverStream::new(rx))).await {
        Ok(o) => o.into_inner(),
        Err(s) => {
            let code = crate::exec_failure_code(&s);
            let f = Failure::from(s);
            return Err(match code {
                Some(code) => f.code(code),
                None => f,
            });
        }
    };
    match out.message().await {
        Ok(Some(berth_api::v1::IoOut {
            msg: Some(io_out::Msg::Ready(_)),
        })) => {}
        Ok(Some(berth_api::v1::IoOut {
            msg: Some(io_out::Msg::Exit(e)),
        })) => {
            if !e.error.is_empty() {
                return Err(
                    Failure::new(format!("Error response from daemon: {}", e.error))
                        .code(exit_u8(e.code)),
                );
            }
            return Ok(exit_u8(e.code));
        }
        Ok(other) => {
            return Err(bad(format!(
                "the daemon did not confirm the exec in {id} (got {other:?})"
            )));
        }
        Err(s) => {
            let code = crate::exec_failure_code(&s);
            let f = Failure::from(s);
            return Err(match code {
                Some(code) => f.code(code),
                None => f,
            });
        }
    }
    if a.detach {
        return Ok(0);
    }
    if a.tty && a.interactive {
        tty::make_raw()?;
    }
    spawn_signal_tasks(c, id, a.tty, false, &tx);
    let mut detach = a
        .interactive
        .then(|| spawn_stdin_pump(tx.clone(), a.tty, detach_keys));
    let pumped = pump(&mut out, &mut detach).await;
    tty::restore_terminal();
    match pumped? {
        Pumped::Detached => Ok(0),
        Pumped::Ended(Some(e)) => {
            if !e.error.is_empty() {
                return Err(
                    Failure::new(format!("Error response from daemon: {}", e.error))
                        .code(exit_u8(e.code)),
                );
            }
            Ok(exit_u8(e.code))
        }
        Pumped::Ended(None) => Err(bad(format!(
            "the exec in {id} ended without an exit status (did berthd restart?)"
        ))),
    }
}

pub async fn top(c: &Client, a: TopArgs) -> CliResult {
    let r = c
        .tasks()
        .top(c.req(TopRequest {
            id: a.name.clone(),
            ps_args: a.ps_args.clone(),
        }))
        .await?
        .into_inner();
    let mut lines = vec![r.titles.join("\t")];
    for p in &r.processes {
        lines.push(p.fields.join("\t"));
    }
    print_tabbed(&lines);
    Ok(())
}

fn stats_row(
    a: &berth_api::v1::ContainerStats,
    b: Option<&berth_api::v1::ContainerStats>,
    no_trunc: bool,
) -> Value {
    let latest = b.unwrap_or(a);
    #[allow(clippy::cast_precision_loss)] // percentages for display
    let cpu = match b {
        Some(b) => {
            let dc = b.cpu_usage_nanos.saturating_sub(a.cpu_usage_nanos) as f64;
            let ds = b.system_cpu_nanos.saturating_sub(a.system_cpu_nanos) as f64;
            if ds > 0.0 {
                dc / ds * f64::from(b.online_cpus.max(1)) * 100.0
            } else {
                0.0
            }
        }
        None => 0.0,
    };
    #[allow(clippy::cast_precision_loss)]
    let mem_pct = if latest.memory_limit > 0 {
        latest.memory_usage as f64 / latest.memory_limit as f64 * 100.0
    } else {
        0.0
    };
    let id = if no_trunc {
        latest.id.clone()
    } else {
        latest.id.chars().take(12).collect()
    };
    json!({
        "BlockIO": format!("{} / {}", human_size(latest.block_read), human_size(latest.block_write)),
        "CPUPerc": format!("{cpu:.2}%"),
        "Container": id,
        "ID": id,
        "MemPerc": format!("{mem_pct:.2}%"),
        "MemUsage": format!("{} / {}", output::bytes_size(latest.memory_usage), output::bytes_size(latest.memory_limit)),
        "Name": latest.name,
        "NetIO": format!("{} / {}", human_size(latest.net_rx), human_size(latest.net_tx)),
        "PIDs": latest.pids.to_string(),
    })
}

const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

fn stats_headers() -> Value {
    json!({
        "BlockIO": "BLOCK I/O", "CPUPerc": "CPU %", "Container": "CONTAINER", "ID": "CONTAINER ID",
        "MemPerc": "MEM %", "MemUsage": "MEM USAGE / LIMIT", "Name": "NAME", "NetIO": "NET I/O",
        "PIDs": "PIDS",
    })
}

/// Two samples of one container (one when it stops streaming), for the CPU percentage.
async fn sample(c: &Client, id: String, no_trunc: bool) -> Result<Value, tonic::Status> {
    let mut s = c
        .tasks()
        .stats(c.req(StatsRequest {
            id: id.clone(),
            stream: true,
        }))
        .await?
        .into_inner();
    let Some(first) = s.message().await? else {
        return Err(tonic::Status::not_found(format!("no stats for {id}")));
    };
    let second = tokio::time::timeout(Duration::from_millis(2500), s.message())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    Ok(stats_row(&first, second.as_ref(), no_trunc))
}

pub async fn stats(c: &Client, a: StatsArgs) -> CliResult {
    loop {
        let ids: Vec<String> = if a.names.is_empty() {
            c.containers()
                .list(c.req(ListContainersRequest {
                    all: a.all,
                    filters: vec![],
                    last: 0,
                }))
                .await?
                .into_inner()
                .containers
                .into_iter()
                .map(|s| s.id)
                .collect()
        } else {
            a.names.clone()
        };
        let mut tasks = Vec::new();
        for id in ids {
            let c = c.clone();
            let no_trunc = a.no_trunc;
            tasks.push(tokio::spawn(async move { sample(&c, id, no_trunc).await }));
        }
        let mut rows = Vec::new();
        let mut failed = None;
        for t in tasks {
            match t.await {
                Ok(Ok(v)) => rows.push(v),
                Ok(Err(s)) => failed = Some(Failure::from(s)),
                Err(e) => failed = Some(bad(e)),
            }
        }
        if !a.no_stream && std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        print_formatted(&rows, a.format.as_deref(), STATS_TABLE, &stats_headers())?;
        if a.no_stream {
            return failed.map_or(Ok(()), Err);
        }
        if let Some(f) = failed
            && !a.names.is_empty()
        {
            return Err(f);
        }
    }
}

pub async fn inspect(c: &Client, a: InspectArgs, kind: Option<&str>) -> CliResult {
    let kind = a.kind.as_deref().or(kind);
    if let Some(k) = kind
        && !matches!(k, "container" | "image")
    {
        return Err(bad(format!("\"{k}\" is not a valid value for --type")));
    }
    let tpl = a
        .format
        .as_deref()
        .map(|f| Template::parse(&template::unescape(f)))
        .transpose()?;
    let mut docs = Vec::new();
    let mut missing = Vec::new();
    for n in &a.names {
        let mut doc = None;
        let mut last_err = None;
        if kind != Some("image") {
            match c
                .containers()
                .inspect(c.req(ContainerRef { id: n.clone() }))
                .await
            {
                Ok(d) => doc = Some(d.into_inner().json),
                Err(s) if s.code() == tonic::Code::NotFound => last_err = Some(s),
                Err(s) => return Err(s.into()),
            }
        }
        if doc.is_none() && kind != Some("container") {
            match c
                .images()
                .inspect(c.req(berth_api::v1::InspectImageRequest {
                    reference: n.clone(),
                }))
                .await
            {
                Ok(d) => doc = Some(d.into_inner().json),
                Err(s) if s.code() == tonic::Code::NotFound => last_err = Some(s),
                Err(s) => return Err(s.into()),
            }
        }
        match doc {
            Some(j) => {
                let v: Value = serde_json::from_str(&j)?;
                match v {
                    Value::Array(items) => docs.extend(items),
                    other => docs.push(other),
                }
            }
            None => missing.push(match (kind, last_err) {
                (None, _) => format!("Error: No such object: {n}"),
                (Some(_), Some(s)) => Failure::from(s).msg,
                (Some(k), None) => format!("Error: No such {k}: {n}"),
            }),
        }
    }
    match &tpl {
        Some(t) => {
            for d in &docs {
                println!("{}", t.render(d)?);
            }
        }
        None => println!("{}", output::pretty_json(&Value::Array(docs))),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        let last = missing.pop().unwrap_or_default();
        for m in missing {
            eprintln!("{m}");
        }
        Err(Failure::new(last))
    }
}

pub async fn prune(c: &Client, a: ForceArgs) -> CliResult {
    if !a.force && !output::confirm("WARNING! This will remove all stopped containers.")? {
        return Ok(());
    }
    let r = c
        .containers()
        .prune(c.req(PruneContainersRequest {}))
        .await?
        .into_inner();
    crate::output::print_deleted("Containers", &r.deleted);
    crate::output::print_reclaimed(r.space_reclaimed);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// cp

/// `CONTAINER:PATH` -> (container, path); local paths (`/x`, `./x`, `x` without a colon) -> None.
fn split_container_path(s: &str) -> Option<(String, String)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    let (c, p) = s.split_once(':')?;
    (!c.is_empty()).then(|| (c.to_owned(), p.to_owned()))
}

/// A `Read` over chunks arriving from the async side.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A `Write` that sends chunks to the async side.
struct ChunkWriter {
    tx: mpsc::Sender<CopyToChunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(CopyToChunk {
                msg: Some(copy_to_chunk::Msg::Data(data)),
            })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "copy stream closed"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 256 * 1024 {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

pub async fn cp(c: &Client, a: CpArgs) -> CliResult {
    match (split_container_path(&a.src), split_container_path(&a.dest)) {
        (Some((id, path)), None) => cp_from(c, &id, &path, &a.dest).await,
        (None, Some((id, path))) => cp_to(c, &a.src, &id, &path, a.follow_link).await,
        (Some(_), Some(_)) => Err(bad("copying between containers is not supported")),
        (None, None) => Err(bad(
            "must specify at least one container source (CONTAINER:PATH)",
        )),
    }
}

async fn cp_from(c: &Client, id: &str, path: &str, dest: &str) -> CliResult {
    let mut stream = c
        .containers()
        .copy_from(c.req(CopyFromRequest {
            id: id.to_owned(),
            path: path.to_owned(),
        }))
        .await?
        .into_inner();
    if dest == "-" {
        let mut out = std::io::stdout().lock();
        while let Some(ch) = stream.message().await? {
            out.write_all(&ch.data)?;
        }
        out.flush()?;
        return Ok(());
    }
    let dest = PathBuf::from(dest);
    let dest_is_dir = dest.is_dir();
    let parent = if dest_is_dir {
        dest.clone()
    } else {
        dest.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    if !parent.is_dir() {
        return Err(bad(format!(
            "destination directory {} does not exist",
            parent.display()
        )));
    }
    let staging = tempfile::Builder::new()
        .prefix(".berth-cp-")
        .tempdir_in(&parent)?;
    let (ctx, crx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    let stage_dir = staging.path().to_path_buf();
    let unpacker = std::thread::spawn(move || -> std::io::Result<()> {
        let mut ar = tar::Archive::new(ChunkReader {
            rx: crx,
            cur: Vec::new(),
            pos: 0,
        });
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_overwrite(true);
        ar.unpack(&stage_dir)
    });
    let mut stream_err = None;
    loop {
        match stream.message().await {
            Ok(Some(ch)) => {
                if ctx.send(ch.data).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(s) => {
                stream_err = Some(s);
                break;
            }
        }
    }
    drop(ctx);
    let unpacked = unpacker
        .join()
        .map_err(|_| bad("the tar extraction thread panicked"))?;
    if let Some(s) = stream_err {
        return Err(s.into());
    }
    unpacked.map_err(|e| bad(format!("extracting {id}:{path}: {e}")))?;
    let entries: Vec<PathBuf> = std::fs::read_dir(staging.path())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    match entries.as_slice() {
        [top] => {
            let target = if dest_is_dir {
                dest.join(top.file_name().unwrap_or_default())
            } else {
                dest.clone()
            };
            place(top, &target)?;
        }
        many => {
            std::fs::create_dir_all(&dest)?;
            for e in many {
                place(e, &dest.join(e.file_name().unwrap_or_default()))?;
            }
        }
    }
    Ok(())
}

/// Move `from` to `to`: rename, merging into an existing directory.
fn place(from: &Path, to: &Path) -> std::io::Result<()> {
    let from_dir = std::fs::symlink_metadata(from)?.is_dir();
    match std::fs::symlink_metadata(to) {
        Ok(m) if m.is_dir() && from_dir => {
            for e in std::fs::read_dir(from)? {
                let e = e?;
                place(&e.path(), &to.join(e.file_name()))?;
            }
            Ok(())
        }
        Ok(m) if m.is_dir() => Err(std::io::Error::other(format!(
            "cannot overwrite directory {} with non-directory",
            to.display()
        ))),
        _ => std::fs::rename(from, to),
    }
}

/// What DEST is in the container: (exists, is a directory), from the first tar header of a
/// copy-from of it.
async fn probe(c: &Client, id: &str, path: &str) -> Result<(bool, bool), Failure> {
    let mut s = match c
        .containers()
        .copy_from(c.req(CopyFromRequest {
            id: id.to_owned(),
            path: path.to_owned(),
        }))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok((false, false)),
        Err(s) => return Err(s.into()),
    };
    let mut head = Vec::new();
    while head.len() < 512 {
        match s.message().await {
            Ok(Some(ch)) => head.extend_from_slice(&ch.data),
            Ok(None) => break,
            Err(st) if st.code() == tonic::Code::NotFound => return Ok((false, false)),
            Err(st) => return Err(st.into()),
        }
    }
    // ustar type flag at offset 156: '5' is a directory.
    Ok((true, head.len() >= 512 && head[156] == b'5'))
}

async fn cp_to(c: &Client, src: &str, id: &str, dest: &str, follow: bool) -> CliResult {
    let (tx, rx) = mpsc::channel::<CopyToChunk>(8);
    let dest_norm = if dest.is_empty() { "/" } else { dest };
    let (dir, name) = if src == "-" {
        (dest_norm.to_owned(), String::new())
    } else {
        let src_path = PathBuf::from(src);
        std::fs::symlink_metadata(&src_path)
            .map_err(|e| bad(format!("could not stat {src}: {e}")))?;
        let src_name = src_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        if dest_norm.ends_with('/') {
            (dest_norm.to_owned(), src_name)
        } else {
            let (exists, is_dir) = probe(c, id, dest_norm).await?;
            if exists && is_dir {
                (dest_norm.to_owned(), src_name)
            } else {
                let p = Path::new(dest_norm);
                let parent = p
                    .parent()
                    .map_or_else(|| "/".to_owned(), |d| d.to_string_lossy().into_owned());
                let parent = if parent.is_empty() {
                    "/".to_owned()
                } else {
                    parent
                };
                let base = p
                    .file_name()
                    .map_or_else(|| src_name.clone(), |n| n.to_string_lossy().into_owned());
                (parent, base)
            }
        }
    };
    tx.send(CopyToChunk {
        msg: Some(copy_to_chunk::Msg::Request(CopyToRequest {
            id: id.to_owned(),
            path: dir,
        })),
    })
    .await
    .map_err(|_| bad("copy stream closed"))?;
    let src_owned = src.to_owned();
    let producer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::new(),
        };
        if src_owned == "-" {
            std::io::copy(&mut std::io::stdin().lock(), &mut w)?;
        } else {
            let mut b = tar::Builder::new(&mut w);
            b.follow_symlinks(follow);
            let p = Path::new(&src_owned);
            if std::fs::metadata(p).is_ok_and(|m| m.is_dir()) && (follow || !p.is_symlink()) {
                b.append_dir_all(&name, p)?;
            } else {
                b.append_path_with_name(p, &name)?;
            }
            b.finish()?;
            drop(b);
        }
        w.flush()
    });
    let result = c.containers().copy_to(c.req(ReceiverStream::new(rx))).await;
    let produced = producer
        .join()
        .map_err(|_| bad("the tar thread panicked"))?;
    result?;
    produced.map_err(|e| bad(format!("reading {src}: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_paths_split_like_docker() {
        assert_eq!(
            split_container_path("web:/etc/hosts"),
            Some(("web".into(), "/etc/hosts".into()))
        );
        assert_eq!(split_container_path("/tmp/a:b"), None);
        assert_eq!(split_container_path("./a:b"), None);
        assert_eq!(split_container_path("file"), None);
    }

    #[test]
    fn ellipsis_and_quotes() {
        assert_eq!(ellipsis("short", 20), "short");
        assert_eq!(
            ellipsis("sh -c 'echo hello; sleep 100'", 20)
                .chars()
                .count(),
            20
        );
        assert_eq!(go_quote("sh -c \"x\""), "\"sh -c \\\"x\\\"\"");
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(
            parse_time("1700000000.5").unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000_000_000
        );
        let ago = parse_time("10m").unwrap();
        assert!(ago > 1_700_000_000_000_000_000);
        assert!(parse_time("yesterday-ish").is_err());
        assert_eq!(
            rfc3339_nanos(1_700_000_000_000_000_001),
            "2023-11-14T22:13:20.000000001Z"
        );
        assert_eq!(go_time(1_700_000_000), "2023-11-14 22:13:20 +0000 UTC");
    }
}
