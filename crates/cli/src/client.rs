//! The connection to berthd: where its socket is, the gRPC clients on one HTTP/2 connection,
//! and starting berthd in the background when nothing listens yet.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_api::v1::containers_client::ContainersClient;
use berth_api::v1::images_client::ImagesClient;
use berth_api::v1::system_client::SystemClient;
use berth_api::v1::tasks_client::TasksClient;
use tonic::transport::Channel;

use crate::Failure;

/// The default root; its state directory is `/run/berth`.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";

/// Where a daemon for a root lives, and what to start it with.
#[derive(Debug, Clone)]
pub struct Target {
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    /// The `--host` as given, passed on to an auto-started berthd.
    pub host: Option<String>,
    pub namespace: String,
    /// Extra flags for an auto-started berthd (`--snapshotter`, registries).
    pub daemon_args: Vec<String>,
}

impl Target {
    pub fn new(
        root: PathBuf,
        state: Option<PathBuf>,
        host: Option<String>,
        namespace: String,
        daemon_args: Vec<String>,
    ) -> Target {
        let state = state.unwrap_or_else(|| {
            if root == Path::new(DEFAULT_ROOT) {
                PathBuf::from("/run/berth")
            } else {
                root.join("run")
            }
        });
        let socket = host
            .as_deref()
            .map(|h| PathBuf::from(h.strip_prefix("unix://").unwrap_or(h)))
            .unwrap_or_else(|| state.join("berth.sock"));
        Target {
            root,
            state,
            socket,
            host,
            namespace,
            daemon_args,
        }
    }
}

/// The four service clients, sharing one connection.
#[derive(Clone)]
pub struct Client {
    pub channel: Channel,
    pub namespace: String,
}

impl Client {
    pub fn system(&self) -> SystemClient<Channel> {
        SystemClient::new(self.channel.clone())
    }
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
    pub fn volumes(&self) -> berth_api::v1::volumes_client::VolumesClient<Channel> {
        berth_api::v1::volumes_client::VolumesClient::new(self.channel.clone())
    }
    /// A request carrying this client's namespace.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        berth_api::with_namespace(tonic::Request::new(msg), &self.namespace)
    }
}

/// Connect to berthd, starting it first when nothing listens on the socket.
pub async fn connect(t: &Target) -> Result<Client, Failure> {
    let client = |channel| Client {
        channel,
        namespace: t.namespace.clone(),
    };
    if let Ok(ch) = berth_api::connect(&t.socket).await {
        return Ok(client(ch));
    }
    // Only one `berth` starts the daemon: the others wait on the lock, then find it up.
    std::fs::create_dir_all(&t.state)
        .map_err(|e| Failure::new(format!("creating {}: {e}", t.state.display())))?;
    let lock_path = t.state.join("autostart.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Failure::new(format!("opening {}: {e}", lock_path.display())))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Failure::new(format!("locking {}: {e}", lock_path.display())))?;
    if let Ok(ch) = berth_api::connect(&t.socket).await {
        return Ok(client(ch));
    }
    let ch = start_daemon(t).await?;
    drop(lock);
    Ok(client(ch))
}

/// berthd beside our own executable, else from PATH.
fn berthd_binary() -> PathBuf {
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
    {
        let p = dir.join("berthd");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("berthd")
}

async fn start_daemon(t: &Target) -> Result<Channel, Failure> {
    let bin = berthd_binary();
    let log_path = t.state.join("berthd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Failure::new(format!("opening {}: {e}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Failure::new(format!("opening {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--root")
        .arg(&t.root)
        .arg("--state")
        .arg(&t.state)
        .arg("--host")
        .arg(&t.socket)
        .args(&t.daemon_args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; it detaches
    // berthd from our session so a terminal's Ctrl-C or hangup does not reach it.
    unsafe {
        cmd.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    let mut child = cmd.spawn().map_err(|e| {
        Failure::new(format!(
            "Cannot connect to the Berth daemon at unix://{} and starting {} failed: {e}. Is berthd installed next to berth or in PATH?",
            t.socket.display(),
            bin.display()
        ))
    })?;
    // Watch the socket's directory; connect when something appears there, give up after 5 s.
    let dir = t
        .socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let _ = std::fs::create_dir_all(dir);
    let inotify = rustix::fs::inotify::init(
        rustix::fs::inotify::CreateFlags::CLOEXEC | rustix::fs::inotify::CreateFlags::NONBLOCK,
    )
    .ok();
    if let Some(fd) = &inotify {
        let _ = rustix::fs::inotify::add_watch(
            fd,
            dir,
            rustix::fs::inotify::WatchFlags::CREATE
                | rustix::fs::inotify::WatchFlags::MOVED_TO
                | rustix::fs::inotify::WatchFlags::ATTRIB,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match berth_api::connect(&t.socket).await {
            Ok(ch) => return Ok(ch),
            Err(_) if Instant::now() < deadline => {}
            Err(e) => {
                return Err(Failure::new(format!(
                    "berthd did not start listening on {} within 5 s ({e}); see {}",
                    t.socket.display(),
                    log_path.display()
                )));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            // It may have lost a race with another berthd that is now serving.
            if let Ok(ch) = berth_api::connect(&t.socket).await {
                return Ok(ch);
            }
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(Failure::new(format!(
                "berthd exited ({status}) before listening on {}: {last} (log: {})",
                t.socket.display(),
                log_path.display()
            )));
        }
        // Block until the directory changes (the socket appears) or 20 ms pass: the socket
        // file exists from bind(), a moment before listen(), so a refused connect retries.
        match &inotify {
            Some(fd) => {
                let mut pfd = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
                let ts = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 20_000_000,
                };
                let _ = rustix::event::poll(&mut pfd, Some(&ts));
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
                let mut reader = rustix::fs::inotify::Reader::new(fd, &mut buf);
                while reader.next().is_ok() {}
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
