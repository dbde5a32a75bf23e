//! `berthd`: Berth's engine daemon. Thin: flags and config file, the lock and the socket, then
//! [`berth_engine::Engine`] serves the berth.v1 API until SIGTERM/SIGINT. Containers keep running
//! when it exits (each has its own shim); the next berthd re-attaches to them.

mod config;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use berth_engine::{Config, DEFAULT_ROOT, DEFAULT_STATE, Engine};
use clap::Parser;
use tokio_stream::wrappers::UnixListenerStream;

/// Berth's engine daemon.
#[derive(Parser, Debug)]
#[command(
    name = "berthd",
    version,
    about = "Berth's engine daemon: serves the berth.v1 API on a unix socket"
)]
struct Args {
    /// Root of the image store and container records.
    #[arg(long, env = "BERTH_ROOT")]
    root: Option<PathBuf>,
    /// State directory (socket, pid file, shim bundles); default /run/berth for the default
    /// root, else ROOT/run.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Socket to serve: unix:///path or a path; default STATE/berth.sock.
    #[arg(short = 'H', long, env = "BERTH_HOST")]
    host: Option<String>,
    /// Config file.
    #[arg(long, default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Snapshotter for a new store: overlayfs or native (an existing store keeps its own).
    #[arg(long, value_parser = ["overlayfs", "overlay", "native"])]
    snapshotter: Option<String>,
    /// Registries spoken to over plain HTTP (repeatable, or comma separated).
    #[arg(long = "insecure-registry", value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// Pull mirrors, REGISTRY=MIRROR (repeatable).
    #[arg(long = "registry-mirror")]
    registry_mirror: Vec<String>,
    /// Directories searched for CNI plugins, in order (repeatable, or comma separated);
    /// default /usr/lib/cni and /opt/cni/bin.
    #[arg(
        long = "cni-plugin-dir",
        env = "BERTH_CNI_PLUGIN_DIRS",
        value_delimiter = ','
    )]
    cni_plugin_dir: Vec<PathBuf>,
    /// Upstream resolvers (IP or IP:PORT) the name servers of user-defined networks forward
    /// to (repeatable, or comma separated); default: the host's resolv.conf nameservers.
    #[arg(
        long = "dns-upstream",
        env = "BERTH_DNS_UPSTREAMS",
        value_delimiter = ','
    )]
    dns_upstream: Vec<String>,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Remove every network of this root from the host (bridges, masquerade rules, address
    /// leases, subnet claims), then exit: for removing a root (an uninstall, a demo). Refused
    /// while a berthd serves the root or a container is attached.
    #[arg(long)]
    remove_networks: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A few malloc arenas are plenty for a daemon whose threads mostly block in one call each;
    // the default (8 per core) costs resident memory per thread.
    // SAFETY: mallopt only sets an allocator parameter; no threads exist yet.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let level = match args.log_level.to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "warn" | "warning" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => {
            eprintln!(
                "berthd: invalid --log-level {other:?}: use error, warn, info, debug or trace"
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build_config(args: &Args) -> Result<Config, String> {
    let explicit = args.config != Path::new(config::DEFAULT_CONFIG);
    let file = config::load(&args.config, explicit).map_err(|e| e.to_string())?;
    let root = args
        .root
        .clone()
        .or(file.root.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    let root = std::path::absolute(&root).unwrap_or(root);
    let mut cfg = Config::with_root(root);
    if let Some(s) = args.state.clone().or(file.state.clone()) {
        cfg.state = std::path::absolute(&s).unwrap_or(s);
        cfg.socket = cfg.state.join("berth.sock");
    } else if cfg.root == Path::new(DEFAULT_ROOT) {
        cfg.state = PathBuf::from(DEFAULT_STATE);
        cfg.socket = cfg.state.join("berth.sock");
    }
    if let Some(h) = args.host.clone().or(file.host.clone()) {
        cfg.socket = config::socket_path(&h)?;
    }
    if let Some(r) = file.default_runtime {
        cfg.default_runtime = r;
    }
    cfg.runtimes = file
        .runtimes
        .into_iter()
        .map(|(k, v)| (k, v.path))
        .collect();
    if cfg.default_runtime != berth_engine::DEFAULT_RUNTIME
        && !cfg.runtimes.contains_key(&cfg.default_runtime)
    {
        return Err(format!(
            "default_runtime {:?} is not configured: add [runtimes.{}] path = \"...\" to {}",
            cfg.default_runtime,
            cfg.default_runtime,
            args.config.display()
        ));
    }
    if let Some(d) = file.log.driver {
        if d != "json-file" && d != "none" {
            return Err(format!("[log] driver = {d:?}: use json-file or none"));
        }
        cfg.log_driver = d;
    }
    match file.log.max_size {
        Some(config::SizeValue::Bytes(n)) => cfg.log_max_size = n,
        Some(config::SizeValue::Text(s)) => {
            cfg.log_max_size = berth_engine::parse_size(&s).unwrap_or(0);
        }
        None => {}
    }
    if let Some(n) = file.log.max_file {
        cfg.log_max_file = n.max(1);
    }
    cfg.registry.mirrors = file.registry.mirrors;
    cfg.registry.insecure = file.registry.insecure;
    cfg.registry
        .insecure
        .extend(args.insecure_registry.iter().cloned());
    for m in &args.registry_mirror {
        let (reg, mirror) = m.split_once('=').ok_or_else(|| {
            format!("invalid --registry-mirror {m:?}: use REGISTRY=MIRROR, e.g. docker.io=mirror.local:5000")
        })?;
        cfg.registry
            .mirrors
            .entry(reg.to_owned())
            .or_default()
            .push(mirror.to_owned());
    }
    for u in &args.dns_upstream {
        let addr = u
            .parse::<std::net::SocketAddr>()
            .or_else(|_| {
                u.parse::<std::net::IpAddr>()
                    .map(|ip| std::net::SocketAddr::new(ip, 53))
            })
            .map_err(|_| format!("invalid --dns-upstream {u:?}: use IP or IP:PORT"))?;
        cfg.dns_upstreams.push(addr);
    }
    if !args.cni_plugin_dir.is_empty() {
        cfg.cni_plugin_dirs = args.cni_plugin_dir.clone();
    }
    if let Some(s) = &args.snapshotter {
        cfg.snapshotter = if s == "native" {
            berth_engine::SnapshotterKind::Native
        } else {
            berth_engine::SnapshotterKind::Overlay
        };
    }
    if let Some(s) = std::env::var_os("BERTH_SHIM")
        .map(PathBuf::from)
        .or(file.shim)
    {
        cfg.shim_binary = s;
    }
    Ok(cfg)
}

/// Hold an exclusive lock on `ROOT/berthd.lock` for the life of the process.
fn lock_root(cfg: &Config) -> Result<OwnedFd, String> {
    let path = cfg.root.join("berthd.lock");
    let fd = rustix::fs::open(
        &path,
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(fd),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let pid = std::fs::read_to_string(cfg.state.join("berthd.pid")).unwrap_or_default();
            Err(format!(
                "another berthd{} already serves the root {} (socket {}); stop it first, or use another --root",
                if pid.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (pid {})", pid.trim())
                },
                cfg.root.display(),
                cfg.socket.display()
            ))
        }
        Err(e) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// The listener: systemd's socket (socket activation) or a fresh socket at `cfg.socket`.
fn listen(cfg: &Config) -> Result<std::os::unix::net::UnixListener, String> {
    let activated = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id())
        && std::env::var("LISTEN_FDS").ok().as_deref() == Some("1");
    if activated {
        // SAFETY: systemd passed exactly one socket as fd 3 (LISTEN_FDS=1 for this pid); we
        // take ownership of it once.
        let fd = unsafe { OwnedFd::from_raw_fd(3) };
        let l = std::os::unix::net::UnixListener::from(fd);
        tracing::info!("using the socket passed by systemd");
        return Ok(l);
    }
    let sock = &cfg.socket;
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if sock.exists() {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Err(format!(
                "another berthd is already serving {}; stop it first, or use another --host",
                sock.display()
            ));
        }
        std::fs::remove_file(sock)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", sock.display()))?;
    }
    let l = std::os::unix::net::UnixListener::bind(sock)
        .map_err(|e| format!("cannot listen on {}: {e}", sock.display()))?;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot chmod {}: {e}", sock.display()))?;
    Ok(l)
}

fn run(args: Args) -> Result<(), String> {
    let cfg = build_config(&args)?;
    for d in [&cfg.root, &cfg.state] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let _lock = lock_root(&cfg)?;
    if args.remove_networks {
        return remove_networks(&cfg);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking work is shim calls and file I/O on a 2-core class machine: more threads
        // than this only queue in the kernel, and each costs a stack while it lives. Idle
        // ones go after half a second: after a burst of starts, 32 stacks kept for 5 s were
        // ~3 MiB of berthd's resident set (measured: 24.1 -> 21.2 MiB with 500 running).
        .max_blocking_threads(32)
        .thread_keep_alive(Duration::from_millis(500))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async move {
        let listener = listen(&cfg)?;
        let socket = cfg.socket.clone();
        let pid_file = cfg.state.join("berthd.pid");
        let engine = Engine::open(cfg).map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s.push_str(": ");
                s.push_str(&x.to_string());
                src = x.source();
            }
            s
        })?;
        std::fs::write(&pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot use the socket: {e}"))?;
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| format!("cannot use the socket: {e}"))?;
        tracing::info!(
            "berthd {} serving {} (root {})",
            env!("CARGO_PKG_VERSION"),
            socket.display(),
            engine.config().root.display()
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(engine.router().serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            async move {
                let _ = stop_rx.await;
            },
        ));
        // Give memory freed after a burst (hundreds of starts or removals) back to the kernel
        // soon: CNI plugin runs and gRPC buffers leave the heap fragmented (36 MiB resident
        // with 300 containers before a trim, 16 MiB after).
        tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // SAFETY: malloc_trim only returns free heap memory to the kernel.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| format!("cannot handle SIGINT: {e}"))?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down; containers keep running"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down; containers keep running"),
        }
        let _ = stop_tx.send(());
        // Long-lived streams (attach, logs -f, events) would hold a graceful shutdown open.
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        // Removed containers' files and snapshots still queued for deletion (a daemon killed
        // instead leaves them to the next boot).
        let e = engine.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || e.settle()),
        )
        .await;
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&pid_file);
        Ok::<(), String>(())
    })?;
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// `--remove-networks` (with the root's lock held, so no berthd serves it).
fn remove_networks(cfg: &Config) -> Result<(), String> {
    let m = berth_net::Manager::open(berth_net::Config::new(cfg.root.clone(), cfg.state.clone()))
        .map_err(|e| format!("cannot open the networks of {}: {e}", cfg.root.display()))?;
    let attached = m.all_attachments();
    if !attached.is_empty() {
        return Err(format!(
            "{} container(s) of {} are still attached to networks: remove them first (berth rm -f)",
            attached.len(),
            cfg.root.display()
        ));
    }
    m.purge();
    Ok(())
}
