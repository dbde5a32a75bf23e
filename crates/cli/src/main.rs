//! `berth`: Docker's verbs for Berth. A thin client: parse with clap, call berthd over gRPC on
//! one HTTP/2 connection (starting berthd when nothing listens), print like Docker.

// The doc comments on the clap types are the CLI's help text, written in Docker's usage
// syntax (`IMAGE [COMMAND]`), not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

mod client;
mod containers;
mod images;
mod networks;
mod output;
mod progress;
mod system;
mod template;
mod tty;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A fast, light container engine",
    propagate_version = true
)]
pub struct Cli {
    /// Daemon socket to connect to (`unix:///path` or a path).
    #[arg(short = 'H', long, global = true, env = "BERTH_HOST")]
    host: Option<String>,
    /// Root of Berth's persistent state (images, snapshots, containers).
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = client::DEFAULT_ROOT
    )]
    root: PathBuf,
    /// Runtime state directory (default: /run/berth for the default root, else ROOT/run).
    #[arg(long, global = true, env = "BERTH_STATE")]
    state: Option<PathBuf>,
    /// Namespace to work in (containerd-style: `default`, `k8s.io`, ...).
    #[arg(
        long,
        global = true,
        env = "BERTH_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// Registries reached over plain HTTP (passed to an auto-started berthd); repeatable.
    #[arg(
        long = "insecure-registry",
        global = true,
        env = "BERTH_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Mirrors, as REGISTRY=MIRROR (passed to an auto-started berthd); repeatable.
    #[arg(
        long = "registry-mirror",
        global = true,
        env = "BERTH_REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    registry_mirrors: Vec<String>,
    /// Snapshotter for a new store: `overlayfs` or `native` (passed to an auto-started berthd).
    #[arg(long, global = true, env = "BERTH_SNAPSHOTTER", value_parser = ["overlayfs", "native"])]
    snapshotter: Option<String>,
    /// Log debug details to stderr.
    #[arg(long, short = 'D', global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

// Each verb's arguments are built only when that verb is run (`defer`): building all of
// them cost about half a millisecond of every command's start.
#[derive(Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Create and run a new container from an image.
    Run(RunArgs),
    /// Create a new container.
    Create(CreateArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Pause all processes within one or more containers.
    Pause(NamesArgs),
    /// Unpause all processes within one or more containers.
    Unpause(NamesArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// List containers.
    Ps(PsArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(AttachArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(NamesArgs),
    /// Display the running processes of a container.
    Top(TopArgs),
    /// Display a live stream of container resource usage statistics.
    Stats(StatsArgs),
    /// Copy files/folders between a container and the local filesystem.
    Cp(CpArgs),
    /// Get real time events from the server.
    Events(EventsArgs),
    /// Return low-level information on containers or images.
    Inspect(InspectArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// List port mappings or a specific mapping for the container.
    Port(networks::PortArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// List images.
    Images(ImagesArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Save images to a tar archive (OCI layout + docker-archive), to STDOUT by default.
    Save(SaveArgs),
    /// Load images from a tar archive or STDIN.
    Load(LoadArgs),
    /// Import a root filesystem tarball as an image.
    Import(ImportArgs),
    /// Log in to a registry.
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    /// Manage Berth.
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Show the Berth version information.
    Version(FormatArgs),
    /// Display system-wide information.
    Info(FormatArgs),
    /// Generate a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for berth and every subcommand into DIR.
    #[command(name = "__man", hide = true)]
    Man { dir: PathBuf },
}

#[derive(Subcommand)]
#[command(defer = true)]
pub enum ContainerCommand {
    /// List containers.
    #[command(alias = "list", alias = "ps")]
    Ls(PsArgs),
    /// Create and run a new container from an image.
    Run(RunArgs),
    /// Create a new container.
    Create(CreateArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Pause all processes within one or more containers.
    Pause(NamesArgs),
    /// Unpause all processes within one or more containers.
    Unpause(NamesArgs),
    /// Remove one or more containers.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(AttachArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(NamesArgs),
    /// Display the running processes of a container.
    Top(TopArgs),
    /// Display a live stream of container resource usage statistics.
    Stats(StatsArgs),
    /// Copy files/folders between a container and the local filesystem.
    Cp(CpArgs),
    /// Display detailed information on one or more containers.
    Inspect(InspectArgs),
    /// Remove all stopped containers.
    Prune(ForceArgs),
}

#[derive(Subcommand)]
#[command(defer = true)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Show low-level information on images.
    Inspect(InspectArgs),
    /// Remove one or more images.
    Rm(RmiArgs),
    /// Remove unused images.
    Prune(PruneArgs),
    /// Download an image.
    Pull(PullArgs),
    /// Upload an image.
    Push(PushArgs),
    /// Tag an image.
    Tag(TagArgs),
    /// Save images to an archive.
    Save(SaveArgs),
    /// Load images from an archive.
    Load(LoadArgs),
    /// Import a root filesystem tarball.
    Import(ImportArgs),
}

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Show disk usage.
    Df(FormatArgs),
    /// Remove stopped containers and dangling (with -a: unused) images.
    Prune(SystemPruneArgs),
    /// Show system-wide information.
    Info(FormatArgs),
    /// Get real time events from the server.
    Events(EventsArgs),
    /// Re-verify every blob and snapshot; report (and with --repair fix) inconsistencies.
    Check {
        /// Remove corrupt blobs and stale state instead of only reporting them.
        #[arg(long)]
        repair: bool,
    },
}

// Everything `create` and `run` share (a plain comment: a doc comment would become the
// `about` of both verbs).
#[derive(Args, Clone, Default)]
pub struct ContainerOpts {
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to take it from here).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Bind mount a volume (SRC:DST[:ro]).
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount (type=bind,src=..,dst=..[,readonly]).
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory (/path[:opts]).
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Connect a container to a network: `bridge` (default), `none`, `host`,
    /// `container:<name|id>`, or a network made with `berth network create`.
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Add a network-scoped alias for the container.
    #[arg(long)]
    pub network_alias: Vec<String>,
    /// IPv4 address (e.g. 172.30.100.104) on a user-defined network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Publish a container's port(s) to the host: [ip:][hostPort:]containerPort[/tcp|udp].
    #[arg(short = 'p', long)]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    pub read_only: bool,
    /// Add Linux capabilities.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container.
    #[arg(long)]
    pub privileged: bool,
    /// Security options (seccomp=unconfined|PATH, no-new-privileges).
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Memory limit (e.g. 512m).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Ulimit options (nofile=1024:2048).
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    pub init: bool,
    /// Logging driver for the container (json-file, none).
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Log driver options (max-size=10m, max-file=3).
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Set meta data on a container (k=v).
    #[arg(short, long)]
    pub label: Vec<String>,
    /// Signal to stop the container.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long, allow_hyphen_values = true)]
    pub stop_timeout: Option<i32>,
    /// Runtime to use for this container (a configured name, or a path to runc/crun/youki).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Set custom DNS servers.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip).
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Set platform if server is multi-platform capable.
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull image before running ("always", "missing", "never").
    #[arg(long, default_value = "missing", value_parser = ["always", "missing", "never"])]
    pub pull: String,
    /// Suppress the pull output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print usage.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// IMAGE [COMMAND] [ARG...]
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    pub args: Vec<String>,
}

#[derive(Args, Clone)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Run container in background and print container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Proxy received signals to the process.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub sig_proxy: bool,
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    #[command(flatten)]
    pub opts: ContainerOpts,
}

#[derive(Args, Clone)]
#[command(disable_help_flag = true)]
pub struct CreateArgs {
    #[command(flatten)]
    pub opts: ContainerOpts,
}

#[derive(Args, Clone)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN.
    #[arg(short, long)]
    pub interactive: bool,
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Clone)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(
        short = 't',
        long = "time",
        alias = "timeout",
        allow_hyphen_values = true
    )]
    pub time: Option<i32>,
    /// Signal to send to the container.
    #[arg(short, long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Clone)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Clone)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Clone)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Clone, Default)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long, allow_hyphen_values = true)]
    pub last: Option<i32>,
    /// Show the latest created container (includes all states).
    #[arg(short, long)]
    pub latest: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output based on conditions provided (name=, id=, label=, status=, exited=, ancestor=).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Format output using a custom template: `table`, `table TEMPLATE`, `json`, or TEMPLATE.
    #[arg(long)]
    pub format: Option<String>,
    /// Display total file sizes (not supported; accepted for compatibility).
    #[arg(short, long)]
    pub size: bool,
}

#[derive(Args, Clone)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" or N).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since timestamp (RFC 3339, unix seconds) or relative (42m).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative (42m).
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show extra details (accepted for compatibility).
    #[arg(long)]
    pub details: bool,
    pub name: String,
}

#[derive(Args, Clone)]
pub struct ExecArgs {
    /// Detached mode: run command in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command.
    #[arg(long)]
    pub privileged: bool,
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// CONTAINER COMMAND [ARG...]
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "CONTAINER COMMAND [ARG...]")]
    pub args: Vec<String>,
}

#[derive(Args, Clone)]
pub struct AttachArgs {
    /// Do not attach STDIN.
    #[arg(long)]
    pub no_stdin: bool,
    /// Proxy all received signals to the process.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub sig_proxy: bool,
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    pub name: String,
}

#[derive(Args, Clone)]
pub struct TopArgs {
    pub name: String,
    /// ps options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Clone)]
pub struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output using a custom template (`table`, `json`, TEMPLATE).
    #[arg(long)]
    pub format: Option<String>,
    pub names: Vec<String>,
}

#[derive(Args, Clone)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information; the default for berth).
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH.
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// SRC: CONTAINER:SRC_PATH, a local path, or - (a tar on STDIN).
    pub src: String,
    /// DEST: CONTAINER:DEST_PATH, a local path, or - (a tar to STDOUT).
    pub dest: String,
}

#[derive(Args, Clone)]
pub struct EventsArgs {
    /// Filter output based on conditions provided (type=, event=, container=, image=, label=).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Show all events created since timestamp.
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp.
    #[arg(long)]
    pub until: Option<String>,
    /// Format the output using the given Go template (or `json`).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Clone)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Format the output using a Go template (`{{.State.Status}}`, `{{json .Config}}`).
    #[arg(short, long)]
    pub format: Option<String>,
    /// Return JSON for the given type only (container, image).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Display total file sizes (accepted for compatibility).
    #[arg(short, long)]
    pub size: bool,
}

#[derive(Args, Clone)]
pub struct FormatArgs {
    /// Format the output using the given Go template (or `json`).
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Args, Clone)]
pub struct ForceArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (accepted for compatibility).
    #[arg(long)]
    pub filter: Vec<String>,
}

#[derive(Args, Clone)]
pub struct PullArgs {
    /// Image reference (`busybox`, `registry:5000/app:tag`, `name@sha256:...`).
    pub name: String,
    /// Suppress progress output; print only the image name.
    #[arg(short, long)]
    pub quiet: bool,
    /// Platform to pull from a multi-platform image (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Args, Clone)]
pub struct PushArgs {
    /// Local image to push (pushed under its own name).
    pub name: String,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Clone)]
pub struct ImagesArgs {
    /// Only this repository (and optionally tag).
    pub reference: Option<String>,
    /// Show all images (default hides intermediate images).
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output (dangling=true, reference=PATTERN, label=k=v).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// `table`, `json`, or a template like `{{.Repository}}:{{.Tag}}`.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Clone)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Remove images referenced by several names, too.
    #[arg(short, long)]
    pub force: bool,
}

/// `system prune`'s flags: `image prune`'s plus `--volumes`.
#[derive(Args, Clone)]
pub struct SystemPruneArgs {
    #[command(flatten)]
    pub base: PruneArgs,
    /// Also remove unused anonymous volumes.
    #[arg(long)]
    pub volumes: bool,
}

#[derive(Args, Clone)]
pub struct PruneArgs {
    /// Remove all unused images, not only dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Clone)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Clone)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Write to a file instead of STDOUT.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of STDIN.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Clone)]
pub struct ImportArgs {
    /// Tarball path, or `-` for STDIN.
    pub file: String,
    /// Name for the image (`repo[:tag]`).
    pub reference: Option<String>,
    /// Apply Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, WORKDIR, ...).
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Commit message for the image's history.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Set platform if server is multi-platform capable.
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Args, Clone)]
pub struct LoginArgs {
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from STDIN.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args, Clone)]
pub struct LogoutArgs {
    pub server: Option<String>,
}

/// An error already worded for the user, with the exit status to leave with (None: the
/// command's default, 125 for `run`/`create`, else 1).
#[derive(Debug)]
pub struct Failure {
    pub msg: String,
    pub code: Option<u8>,
}

impl Failure {
    pub fn new(msg: impl Into<String>) -> Failure {
        Failure {
            msg: msg.into(),
            code: None,
        }
    }
    pub fn code(mut self, code: u8) -> Failure {
        self.code = Some(code);
        self
    }
}

/// The exit status a daemon error implies: 126/127 when a command could not be executed.
pub fn exec_failure_code(status: &tonic::Status) -> Option<u8> {
    if let Some(code) = status
        .metadata()
        .get("berth-exit-code")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok())
    {
        return Some(code);
    }
    let m = status.message().to_lowercase();
    if m.contains("executable file not found")
        || m.contains("no such file or directory") && (m.contains("exec") || m.contains("start"))
        || m.contains("command not found")
    {
        Some(127)
    } else if m.contains("permission denied") && (m.contains("exec") || m.contains("start"))
        || m.contains("not executable")
        || m.contains("is a directory") && m.contains("exec")
    {
        Some(126)
    } else {
        None
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        let msg = match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown if s.message().is_empty() => {
                format!("the Berth daemon hung up ({})", s.code())
            }
            _ => s.message().to_owned(),
        };
        Failure {
            msg: format!("Error response from daemon: {msg}"),
            code: exec_failure_code(&s),
        }
    }
}

macro_rules! failure_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::new(format!("Error: {e}"))
            }
        }
    )*};
}
failure_from!(
    std::io::Error,
    template::TemplateError,
    berth_spec::Error,
    berth_registry::Error,
    berth_store::Error,
    serde_json::Error,
    tonic::transport::Error
);

pub type CliResult = Result<(), Failure>;

/// Built for musl (scripts/build.sh), `berth` uses jemalloc: musl's allocator unmaps memory at
/// nearly every reallocation, which costs more than its start-up saves (Cargo.toml).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => 125,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if cli.debug {
        output::init_debug_log();
    }
    let default_code = match &cli.command {
        Command::Run(_)
        | Command::Create(_)
        | Command::Container(ContainerCommand::Run(_) | ContainerCommand::Create(_))
        | Command::Volume(_) => 125,
        _ => 1,
    };
    let result = dispatch(cli);
    tty::restore_terminal();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure { msg, code }) => {
            // One line, whatever a lower layer's message holds.
            eprintln!("{}", msg.trim().replace(['\n', '\r'], " "));
            ExitCode::from(code.unwrap_or(default_code))
        }
    }
}

/// Everything needed to reach (or start) the daemon.
pub fn target(cli: &Cli) -> client::Target {
    let mut daemon_args = Vec::new();
    if let Some(s) = &cli.snapshotter {
        daemon_args.extend(["--snapshotter".to_owned(), s.clone()]);
    }
    for r in &cli.insecure_registries {
        daemon_args.extend(["--insecure-registry".to_owned(), r.clone()]);
    }
    for m in &cli.registry_mirrors {
        daemon_args.extend(["--registry-mirror".to_owned(), m.clone()]);
    }
    client::Target::new(
        cli.root.clone(),
        cli.state.clone(),
        cli.host.clone(),
        cli.namespace.clone(),
        daemon_args,
    )
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("Error: starting the async runtime: {e}")))
}

/// Run the command; Ok carries the exit status (a container's for run/start -a/exec/attach).
fn dispatch(cli: Cli) -> Result<u8, Failure> {
    // Client-side verbs that need no daemon.
    match &cli.command {
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "berth", &mut std::io::stdout());
            return Ok(0);
        }
        Command::Man { dir } => {
            write_man_pages(dir)?;
            return Ok(0);
        }
        Command::Login(a) => return images::login(&cli, a).map(|()| 0),
        Command::Logout(a) => return images::logout(a).map(|()| 0),
        Command::System(SystemCommand::Check { repair }) => {
            return images::check(&cli.root, *repair).map(|()| 0);
        }
        _ => {}
    }
    let t = target(&cli);
    let rt = runtime()?;
    rt.block_on(async move {
        let c = client::connect(&t).await?;
        run_command(&c, cli.command).await
    })
}

fn ok(r: CliResult) -> Result<u8, Failure> {
    r.map(|()| 0)
}

async fn run_command(c: &client::Client, command: Command) -> Result<u8, Failure> {
    use ContainerCommand as CC;
    use ImageCommand as IC;
    match command {
        Command::Run(a) | Command::Container(CC::Run(a)) => containers::run(c, a).await,
        Command::Create(a) | Command::Container(CC::Create(a)) => {
            ok(containers::create_cmd(c, a).await)
        }
        Command::Start(a) | Command::Container(CC::Start(a)) => containers::start(c, a).await,
        Command::Stop(a) | Command::Container(CC::Stop(a)) => {
            ok(containers::stop(c, a, false).await)
        }
        Command::Restart(a) | Command::Container(CC::Restart(a)) => {
            ok(containers::stop(c, a, true).await)
        }
        Command::Kill(a) | Command::Container(CC::Kill(a)) => ok(containers::kill(c, a).await),
        Command::Pause(a) | Command::Container(CC::Pause(a)) => {
            ok(containers::pause(c, a, true).await)
        }
        Command::Unpause(a) | Command::Container(CC::Unpause(a)) => {
            ok(containers::pause(c, a, false).await)
        }
        Command::Rm(a) | Command::Container(CC::Rm(a)) => ok(containers::rm(c, a).await),
        Command::Ps(a) | Command::Container(CC::Ls(a)) => ok(containers::ps(c, a).await),
        Command::Logs(a) | Command::Container(CC::Logs(a)) => ok(containers::logs(c, a).await),
        Command::Exec(a) | Command::Container(CC::Exec(a)) => containers::exec(c, a).await,
        Command::Attach(a) | Command::Container(CC::Attach(a)) => containers::attach(c, a).await,
        Command::Wait(a) | Command::Container(CC::Wait(a)) => ok(containers::wait(c, a).await),
        Command::Top(a) | Command::Container(CC::Top(a)) => ok(containers::top(c, a).await),
        Command::Stats(a) | Command::Container(CC::Stats(a)) => ok(containers::stats(c, a).await),
        Command::Cp(a) | Command::Container(CC::Cp(a)) => ok(containers::cp(c, a).await),
        Command::Inspect(a) => ok(containers::inspect(c, a, None).await),
        Command::Container(CC::Inspect(a)) => {
            ok(containers::inspect(c, a, Some("container")).await)
        }
        Command::Container(CC::Prune(a)) => ok(containers::prune(c, a).await),
        Command::Network(a) => ok(networks::network(c, a).await),
        Command::Port(a) => ok(networks::port(c, a).await),
        Command::Events(a) | Command::System(SystemCommand::Events(a)) => {
            ok(system::events(c, a).await)
        }
        Command::Version(a) => ok(system::version(c, a).await),
        Command::Info(a) | Command::System(SystemCommand::Info(a)) => ok(system::info(c, a).await),
        Command::System(SystemCommand::Df(a)) => ok(system::df(c, a).await),
        Command::System(SystemCommand::Prune(a)) => ok(system::prune(c, a).await),
        Command::Volume(v) => ok(volumes::run(c, v).await),
        Command::Pull(a) | Command::Image(IC::Pull(a)) => ok(images::pull(c, &a).await),
        Command::Push(a) | Command::Image(IC::Push(a)) => ok(images::push(c, &a).await),
        Command::Images(a) | Command::Image(IC::Ls(a)) => ok(images::images(c, &a).await),
        Command::Image(IC::Inspect(a)) => ok(containers::inspect(c, a, Some("image")).await),
        Command::Rmi(a) | Command::Image(IC::Rm(a)) => ok(images::rmi(c, &a).await),
        Command::Image(IC::Prune(a)) => ok(images::prune(c, &a).await),
        Command::Tag(a) | Command::Image(IC::Tag(a)) => ok(images::tag(c, &a).await),
        Command::Save(a) | Command::Image(IC::Save(a)) => ok(images::save(c, &a).await),
        Command::Load(a) | Command::Image(IC::Load(a)) => ok(images::load(c, &a).await),
        Command::Import(a) | Command::Image(IC::Import(a)) => ok(images::import(c, &a).await),
        Command::Completion { .. }
        | Command::Man { .. }
        | Command::Login(_)
        | Command::Logout(_)
        | Command::System(SystemCommand::Check { .. }) => Ok(0),
    }
}

fn write_man_pages(dir: &std::path::Path) -> CliResult {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::new(format!("Error: creating {}: {e}", dir.display())))?;
    fn walk(cmd: &clap::Command, prefix: &str, dir: &std::path::Path) -> CliResult {
        let name = if prefix.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        let page = cmd.clone().name(name.clone());
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).render(&mut buf)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, buf)
            .map_err(|e| Failure::new(format!("Error: writing {}: {e}", path.display())))?;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, &name, dir)?;
        }
        Ok(())
    }
    let mut cmd = Cli::command();
    cmd.build();
    walk(&cmd, "", dir)
}
