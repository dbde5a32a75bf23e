//! The command line, flag for flag with runc where clients (containerd's shim via go-runc,
//! podman via conmon) depend on it.
//!
//! Parsed with `lexopt` rather than clap: `berth-runtime` runs on every container start and its
//! resident set is a measured target (<= 3 MiB for `create`); building clap's command tree cost
//! about 1 MiB of it (measured with GNU time's max RSS, static build), while runc's flag
//! surface is small and fixed. The engine's `berth` CLI, where that does not matter, uses clap.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::Arg;
use lexopt::prelude::*;

/// Default state root (runc uses /run/runc).
pub const DEFAULT_ROOT: &str = berth_runtime::state::DEFAULT_ROOT;

/// Global options and the command.
#[derive(Debug)]
pub struct Cli {
    /// `--root`: directory for container state.
    pub root: PathBuf,
    /// `--log`: file for log lines (stderr when absent).
    pub log: Option<PathBuf>,
    /// `--log-format json`.
    pub json: bool,
    /// `--debug`.
    pub debug: bool,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// The command.
    pub command: Command,
}

/// Flags shared by `create` and `run`.
#[derive(Debug, Default)]
pub struct CreateArgs {
    /// `--bundle`, default ".".
    pub bundle: PathBuf,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--pidfd-socket`.
    pub pidfd_socket: Option<PathBuf>,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// `--preserve-fds`.
    pub preserve_fds: u32,
    /// Container id.
    pub id: String,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// `exec` flags.
#[derive(Debug, Default)]
pub struct ExecArgs {
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--cwd`.
    pub cwd: Option<PathBuf>,
    /// `--env`/`-e`, repeatable.
    pub env: Vec<String>,
    /// `--tty`/`-t`.
    pub tty: bool,
    /// `--user`/`-u` `UID[:GID]`.
    pub user: Option<String>,
    /// `--additional-gids`/`-g`, repeatable.
    pub additional_gids: Vec<u32>,
    /// `--process`/`-p`.
    pub process: Option<PathBuf>,
    /// `--detach`/`-d`.
    pub detach: bool,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--no-new-privs`.
    pub no_new_privs: bool,
    /// `--cap`/`-c`, repeatable.
    pub cap: Vec<String>,
    /// `--preserve-fds`.
    pub preserve_fds: u32,
    /// `--ignore-paused`.
    pub ignore_paused: bool,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    pub command: Vec<String>,
}

/// `update` flags.
#[derive(Debug, Default)]
pub struct UpdateArgs {
    /// `--resources`/`-r` FILE or `-`.
    pub resources: Option<PathBuf>,
    /// `--blkio-weight`.
    pub blkio_weight: Option<u16>,
    /// `--cpu-period`.
    pub cpu_period: Option<u64>,
    /// `--cpu-quota`.
    pub cpu_quota: Option<i64>,
    /// `--cpu-rt-period`.
    pub cpu_rt_period: Option<u64>,
    /// `--cpu-rt-runtime`.
    pub cpu_rt_runtime: Option<i64>,
    /// `--cpu-share`.
    pub cpu_share: Option<u64>,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: Option<String>,
    /// `--cpuset-mems`.
    pub cpuset_mems: Option<String>,
    /// `--memory`.
    pub memory: Option<String>,
    /// `--memory-reservation`.
    pub memory_reservation: Option<String>,
    /// `--memory-swap`.
    pub memory_swap: Option<String>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--l3-cache-schema` / `--mem-bw-schema` (Intel RDT, refused).
    pub rdt: bool,
    /// Container id.
    pub id: String,
}

/// The commands.
#[derive(Debug)]
pub enum Command {
    /// Create a container.
    Create(CreateArgs),
    /// Start a created container.
    Start(String),
    /// Create and start.
    Run {
        /// Shared flags.
        create: CreateArgs,
        /// `--detach`/`-d`.
        detach: bool,
        /// `--keep`.
        keep: bool,
    },
    /// Print state JSON.
    State(String),
    /// Send a signal.
    Kill {
        /// `--all`/`-a`.
        all: bool,
        /// Container id.
        id: String,
        /// Signal (default SIGTERM).
        signal: String,
    },
    /// Delete.
    Delete {
        /// `--force`/`-f`.
        force: bool,
        /// Container id.
        id: String,
    },
    /// List containers.
    List {
        /// `--format`/`-f`.
        format: Format,
        /// `--quiet`/`-q`.
        quiet: bool,
    },
    /// List processes.
    Ps {
        /// `--format`/`-f`.
        format: Format,
        /// Container id.
        id: String,
        /// Arguments for ps(1).
        ps_args: Vec<String>,
    },
    /// Run a process in a container.
    Exec(ExecArgs),
    /// Freeze.
    Pause(String),
    /// Thaw.
    Resume(String),
    /// Change limits.
    Update(UpdateArgs),
    /// Print features JSON.
    Features,
    /// Write a default config.json.
    Spec {
        /// `--bundle`/`-b`.
        bundle: PathBuf,
        /// `--rootless`.
        rootless: bool,
    },
    /// Print the version.
    Version,
    /// Print help (for a command, or the overview).
    Help(Option<&'static str>),
}

/// A command-line error (exit status 2).
#[derive(Debug)]
pub struct UsageError {
    /// The command it concerns, for the hint.
    pub command: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Some(c) => write!(f, "{c}: {}; see `berth-runtime {c} --help`", self.message),
            None => write!(f, "{}; see `berth-runtime --help`", self.message),
        }
    }
}

/// The commands and their one-line descriptions, for the overview help.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "create",
        "[OPTIONS] ID",
        "create a container; its process waits for `start`",
    ),
    ("start", "ID", "start a created container"),
    (
        "run",
        "[OPTIONS] ID",
        "create and start a container (foreground unless --detach)",
    ),
    ("state", "ID", "print a container's state as JSON"),
    (
        "kill",
        "[--all] ID [SIGNAL]",
        "send a signal (default SIGTERM) to the container",
    ),
    ("delete", "[--force] ID", "delete a container"),
    ("list", "[--format table|json] [--quiet]", "list containers"),
    (
        "ps",
        "[--format table|json] ID [PS_ARGS...]",
        "list a container's processes",
    ),
    (
        "exec",
        "[OPTIONS] ID COMMAND [ARGS...]",
        "run a process in a running container",
    ),
    ("pause", "ID", "freeze a container's processes"),
    ("resume", "ID", "thaw a paused container"),
    (
        "update",
        "[OPTIONS] ID",
        "change a container's resource limits",
    ),
    ("features", "", "print what this runtime supports (JSON)"),
    (
        "spec",
        "[--bundle DIR] [--rootless]",
        "write a default config.json",
    ),
];

/// Help text per command.
pub fn help(command: Option<&str>) -> String {
    let global = "Global options (before the command):
  --root DIR            state directory (default /run/berth-runtime, or $BERTH_RUNTIME_ROOT)
  --log FILE            write log lines to FILE instead of stderr
  --log-format FORMAT   text (default) or json (runc's {\"level\",\"msg\",\"time\"} lines)
  --debug               log debug messages
  --systemd-cgroup      cgroupsPath is slice:prefix:name (resolved through the cgroup file system)
  -v, --version         print the version
  -h, --help            print help";
    let create_opts = "  -b, --bundle DIR          bundle directory (default .)
      --console-socket SOCK unix socket that receives the terminal's master fd
      --pidfd-socket SOCK   unix socket that receives a pidfd of the init
      --pid-file FILE       write the init's pid to FILE
      --no-pivot            use MS_MOVE and chroot instead of pivot_root
      --no-new-keyring      keep the caller's session keyring
      --preserve-fds N      pass fds 3..3+N to the container";
    match command {
        None => {
            let mut s = String::from(
                "berth-runtime: a runc-compatible OCI runtime\n\nUsage: berth-runtime [GLOBAL OPTIONS] COMMAND [OPTIONS]\n\nCommands:\n",
            );
            for (name, _, what) in COMMANDS {
                s.push_str(&format!("  {name:<10} {what}\n"));
            }
            s.push('\n');
            s.push_str(global);
            s
        }
        Some(cmd) => {
            let (_, usage, what) = COMMANDS
                .iter()
                .find(|c| c.0 == cmd)
                .copied()
                .unwrap_or((cmd, "", ""));
            let opts = match cmd {
                "create" => create_opts.to_string(),
                "run" => format!(
                    "{create_opts}\n  -d, --detach              return once the container runs\n      --keep                keep the state after the container exits\n      --no-subreaper        accepted for runc compatibility"
                ),
                "kill" => "  -a, --all                 signal every process in the container".into(),
                "delete" => "  -f, --force               kill the container first if it runs".into(),
                "list" => "  -f, --format FORMAT       table (default) or json\n  -q, --quiet               print ids only".into(),
                "ps" => "  -f, --format FORMAT       table (default, runs ps -ef) or json (pids)".into(),
                "exec" => "      --console-socket SOCK unix socket that receives the terminal's master fd
      --cwd DIR             working directory
  -e, --env KEY=VALUE       set an environment variable (repeatable)
  -t, --tty                 allocate a terminal
  -u, --user UID[:GID]      run as this user
  -g, --additional-gids GID add a supplementary group (repeatable)
  -p, --process FILE        read the whole process from a process.json
  -d, --detach              return once the process runs
      --pid-file FILE       write the process's pid to FILE
      --no-new-privs        set no_new_privs
  -c, --cap CAP             add a capability (repeatable)
      --preserve-fds N      pass fds 3..3+N
      --ignore-paused       allow exec into a paused container"
                    .into(),
                "update" => "  -r, --resources FILE      linux.resources JSON (- for stdin)
      --memory BYTES        memory limit (k/m/g suffixes; -1 for none)
      --memory-reservation BYTES
      --memory-swap BYTES   memory+swap limit
      --cpu-share N         --cpu-period US  --cpu-quota US  --cpu-rt-period US  --cpu-rt-runtime US
      --cpuset-cpus LIST    --cpuset-mems LIST
      --pids-limit N        --blkio-weight N"
                    .into(),
                "spec" => "  -b, --bundle DIR          where to write config.json (default .)\n      --rootless            a config with a user namespace mapping you to root".into(),
                _ => String::new(),
            };
            let mut s = format!("berth-runtime {cmd} {usage}\n\n{what}\n");
            if !opts.is_empty() {
                s.push_str("\nOptions:\n");
                s.push_str(&opts);
                s.push('\n');
            }
            s
        }
    }
}

fn canonical(cmd: &str) -> Option<&'static str> {
    COMMANDS.iter().map(|c| c.0).find(|c| *c == cmd)
}

struct P {
    inner: lexopt::Parser,
    cmd: Option<String>,
}

impl P {
    fn err(&self, message: impl Into<String>) -> UsageError {
        UsageError {
            command: self.cmd.clone(),
            message: message.into(),
        }
    }
    fn lex(&self, e: lexopt::Error) -> UsageError {
        self.err(e.to_string())
    }
    fn next(&mut self) -> Result<Option<Arg<'_>>, UsageError> {
        let cmd = self.cmd.clone();
        self.inner.next().map_err(|e| UsageError {
            command: cmd,
            message: e.to_string(),
        })
    }
    fn string(&mut self) -> Result<String, UsageError> {
        let v = self.inner.value().map_err(|e| UsageError {
            command: self.cmd.clone(),
            message: e.to_string(),
        })?;
        v.into_string()
            .map_err(|v| self.err(format!("{v:?} is not valid UTF-8")))
    }
    fn path(&mut self) -> Result<PathBuf, UsageError> {
        let cmd = self.cmd.clone();
        self.inner
            .value()
            .map(PathBuf::from)
            .map_err(|e| UsageError {
                command: cmd,
                message: e.to_string(),
            })
    }
    fn number<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T, UsageError> {
        let s = self.string()?;
        s.parse()
            .map_err(|_| self.err(format!("--{flag} {s:?} is not a valid number")))
    }
    /// Everything left, as strings (for COMMAND ARGS...).
    fn rest(&mut self) -> Result<Vec<String>, UsageError> {
        let cmd = self.cmd.clone();
        let raw: Vec<OsString> = self
            .inner
            .raw_args()
            .map_err(|e| UsageError {
                command: cmd,
                message: e.to_string(),
            })?
            .collect();
        raw.into_iter()
            .map(|v| {
                v.into_string()
                    .map_err(|v| self.err(format!("{v:?} is not valid UTF-8")))
            })
            .collect()
    }
}

/// Parse a full argv (including argv\[0\]).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, UsageError> {
    let mut p = P {
        inner: lexopt::Parser::from_iter(args),
        cmd: None,
    };
    let mut cli = Cli {
        root: std::env::var_os("BERTH_RUNTIME_ROOT")
            .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from),
        log: None,
        json: false,
        debug: false,
        systemd_cgroup: false,
        command: Command::Help(None),
    };
    let mut name = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("root") => cli.root = p.path()?,
            Long("log") => cli.log = Some(p.path()?),
            Long("log-format") => cli.json = log_format(&mut p)?,
            Long("debug") => cli.debug = true,
            Long("systemd-cgroup") => cli.systemd_cgroup = true,
            // Accepted for runc compatibility.
            Long("rootless") | Long("criu") => {
                p.string()?;
            }
            Short('v') | Long("version") => {
                cli.command = Command::Version;
                return Ok(cli);
            }
            Short('h') | Long("help") => return Ok(cli),
            Value(v) => {
                name = Some(v.string().map_err(|e| p.lex(e))?);
                break;
            }
            arg => {
                let msg = arg.unexpected().to_string();
                return Err(p.err(msg));
            }
        }
    }
    let Some(name) = name else { return Ok(cli) };
    if name == "help" {
        let topic = p.next()?.and_then(|a| match a {
            Value(v) => v.to_str().and_then(canonical),
            _ => None,
        });
        cli.command = Command::Help(topic);
        return Ok(cli);
    }
    let cmd = match canonical(&name) {
        Some(c) => c,
        None if name == "checkpoint" || name == "restore" => {
            return Err(p.err(format!(
                "{name} is not supported by berth-runtime (it needs CRIU)"
            )));
        }
        None => return Err(p.err(format!("unknown command {name:?}"))),
    };
    p.cmd = Some(cmd.to_string());
    cli.command = command(cmd, &mut p, &mut cli)?;
    Ok(cli)
}

fn log_format(p: &mut P) -> Result<bool, UsageError> {
    match p.string()?.as_str() {
        "json" => Ok(true),
        "text" => Ok(false),
        other => Err(p.err(format!("--log-format {other:?}: use text or json"))),
    }
}

fn format(p: &mut P) -> Result<Format, UsageError> {
    match p.string()?.as_str() {
        "json" => Ok(Format::Json),
        "table" => Ok(Format::Table),
        other => Err(p.err(format!("--format {other:?}: use table or json"))),
    }
}

/// Global options are also accepted after the command.
fn global(arg: &Arg<'_>, p: &mut P, cli: &mut Cli) -> Result<bool, UsageError> {
    match arg {
        Long("root") => cli.root = p.path()?,
        Long("log") => cli.log = Some(p.path()?),
        Long("log-format") => cli.json = log_format(p)?,
        Long("debug") => cli.debug = true,
        Long("systemd-cgroup") => cli.systemd_cgroup = true,
        _ => return Ok(false),
    }
    Ok(true)
}

fn command(cmd: &'static str, p: &mut P, cli: &mut Cli) -> Result<Command, UsageError> {
    let mut positional: Vec<String> = Vec::new();
    let mut c = CreateArgs {
        bundle: PathBuf::from("."),
        ..CreateArgs::default()
    };
    let (mut detach, mut keep, mut all, mut force, mut quiet, mut rootless) =
        (false, false, false, false, false, false);
    let mut fmt = Format::Table;
    let mut e = ExecArgs::default();
    let mut u = UpdateArgs::default();
    let takes_rest = matches!(cmd, "exec" | "ps");
    while let Some(arg) = p.next()? {
        let arg = arg.to_owned_arg();
        if global(&arg.as_arg(), p, cli)? {
            continue;
        }
        match (cmd, arg.as_arg()) {
            (_, Short('h') | Long("help")) => return Ok(Command::Help(Some(cmd))),
            ("create" | "run" | "spec", Short('b') | Long("bundle")) => c.bundle = p.path()?,
            ("create" | "run", Long("console-socket")) => c.console_socket = Some(p.path()?),
            ("create" | "run", Long("pidfd-socket")) => c.pidfd_socket = Some(p.path()?),
            ("create" | "run", Long("pid-file")) => c.pid_file = Some(p.path()?),
            ("create" | "run", Long("no-pivot")) => c.no_pivot = true,
            ("create" | "run", Long("no-new-keyring")) => c.no_new_keyring = true,
            ("create" | "run", Long("preserve-fds")) => {
                c.preserve_fds = p.number("preserve-fds")?
            }
            ("run", Short('d') | Long("detach")) => detach = true,
            ("run", Long("keep")) => keep = true,
            ("run", Long("no-subreaper")) => {}
            ("kill", Short('a') | Long("all")) => all = true,
            ("delete", Short('f') | Long("force")) => force = true,
            ("list" | "ps", Short('f') | Long("format")) => fmt = format(p)?,
            ("list", Short('q') | Long("quiet")) => quiet = true,
            ("spec", Long("rootless")) => rootless = true,
            ("exec", Long("console-socket")) => e.console_socket = Some(p.path()?),
            (
                "exec",
                Long("pidfd-socket") | Long("process-label") | Long("apparmor") | Long("cgroup"),
            ) => {
                // Accepted for runc compatibility; SELinux, AppArmor and sub-cgroups are not supported.
                p.string()?;
            }
            ("exec", Long("cwd")) => e.cwd = Some(p.path()?),
            ("exec", Short('e') | Long("env")) => e.env.push(p.string()?),
            ("exec", Short('t') | Long("tty")) => e.tty = true,
            ("exec", Short('u') | Long("user")) => e.user = Some(p.string()?),
            ("exec", Short('g') | Long("additional-gids")) => {
                e.additional_gids.push(p.number("additional-gids")?)
            }
            ("exec", Short('p') | Long("process")) => e.process = Some(p.path()?),
            ("exec", Short('d') | Long("detach")) => e.detach = true,
            ("exec", Long("pid-file")) => e.pid_file = Some(p.path()?),
            ("exec", Long("no-new-privs")) => e.no_new_privs = true,
            ("exec", Short('c') | Long("cap")) => e.cap.push(p.string()?),
            ("exec", Long("preserve-fds")) => e.preserve_fds = p.number("preserve-fds")?,
            ("exec", Long("ignore-paused")) => e.ignore_paused = true,
            ("update", Short('r') | Long("resources")) => u.resources = Some(p.path()?),
            ("update", Long("blkio-weight")) => u.blkio_weight = Some(p.number("blkio-weight")?),
            ("update", Long("cpu-period")) => u.cpu_period = Some(p.number("cpu-period")?),
            ("update", Long("cpu-quota")) => u.cpu_quota = Some(p.number("cpu-quota")?),
            ("update", Long("cpu-rt-period")) => u.cpu_rt_period = Some(p.number("cpu-rt-period")?),
            ("update", Long("cpu-rt-runtime")) => {
                u.cpu_rt_runtime = Some(p.number("cpu-rt-runtime")?)
            }
            ("update", Long("cpu-share")) => u.cpu_share = Some(p.number("cpu-share")?),
            ("update", Long("cpuset-cpus")) => u.cpuset_cpus = Some(p.string()?),
            ("update", Long("cpuset-mems")) => u.cpuset_mems = Some(p.string()?),
            ("update", Long("memory")) => u.memory = Some(p.string()?),
            ("update", Long("memory-reservation")) => u.memory_reservation = Some(p.string()?),
            ("update", Long("memory-swap")) => u.memory_swap = Some(p.string()?),
            ("update", Long("kernel-memory") | Long("kernel-memory-tcp")) => {
                // Deprecated in runc and ignored by modern kernels.
                p.string()?;
            }
            ("update", Long("pids-limit")) => u.pids_limit = Some(p.number("pids-limit")?),
            ("update", Long("l3-cache-schema") | Long("mem-bw-schema")) => {
                p.string()?;
                u.rdt = true;
            }
            (_, Value(v)) => {
                let v = v.string().map_err(|e| p.lex(e))?;
                positional.push(v);
                // After the id, exec takes the command and ps its ps(1) arguments verbatim.
                if takes_rest && !positional.is_empty() {
                    positional.extend(p.rest()?);
                    break;
                }
            }
            (_, other) => return Err(p.err(other.unexpected().to_string())),
        }
    }
    let mut pos = positional.into_iter();
    let mut id = |what: &str| pos.next().ok_or_else(|| p.err(format!("missing {what}")));
    let cmd_value = match cmd {
        "create" | "run" => {
            c.id = id("container id")?;
            if cmd == "create" {
                Command::Create(c)
            } else {
                Command::Run {
                    create: c,
                    detach,
                    keep,
                }
            }
        }
        "start" => Command::Start(id("container id")?),
        "state" => Command::State(id("container id")?),
        "pause" => Command::Pause(id("container id")?),
        "resume" => Command::Resume(id("container id")?),
        "kill" => {
            let cid = id("container id")?;
            let signal = pos.next().unwrap_or_else(|| "SIGTERM".into());
            Command::Kill {
                all,
                id: cid,
                signal,
            }
        }
        "delete" => Command::Delete {
            force,
            id: id("container id")?,
        },
        "list" => Command::List { format: fmt, quiet },
        "ps" => {
            let cid = id("container id")?;
            Command::Ps {
                format: fmt,
                id: cid,
                ps_args: pos.by_ref().collect(),
            }
        }
        "exec" => {
            e.id = id("container id")?;
            e.command = pos.by_ref().collect();
            Command::Exec(e)
        }
        "update" => {
            u.id = id("container id")?;
            Command::Update(u)
        }
        "features" => Command::Features,
        "spec" => Command::Spec {
            bundle: c.bundle,
            rootless,
        },
        _ => Command::Help(Some(cmd)),
    };
    if let Some(extra) = pos.next() {
        return Err(p.err(format!("unexpected argument {extra:?}")));
    }
    Ok(cmd_value)
}

/// An owned copy of a lexopt argument, so the parser can be borrowed again while matching.
enum OwnedArg {
    Short(char),
    Long(String),
    Value(OsString),
}

trait ToOwnedArg {
    fn to_owned_arg(&self) -> OwnedArg;
}

impl ToOwnedArg for Arg<'_> {
    fn to_owned_arg(&self) -> OwnedArg {
        match self {
            Arg::Short(c) => OwnedArg::Short(*c),
            Arg::Long(l) => OwnedArg::Long((*l).to_string()),
            Arg::Value(v) => OwnedArg::Value(v.clone()),
        }
    }
}

impl OwnedArg {
    fn as_arg(&self) -> Arg<'_> {
        match self {
            OwnedArg::Short(c) => Arg::Short(*c),
            OwnedArg::Long(l) => Arg::Long(l),
            OwnedArg::Value(v) => Arg::Value(v.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Cli, UsageError> {
        parse(
            std::iter::once("berth-runtime")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
    }

    #[test]
    fn go_runc_create_invocation() {
        let cli = parse_str(&[
            "--root",
            "/run/containerd/runc/default",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--console-socket",
            "/tmp/s",
            "id1",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.root, PathBuf::from("/run/containerd/runc/default"));
        match cli.command {
            Command::Create(a) => {
                assert_eq!(a.id, "id1");
                assert_eq!(a.bundle, PathBuf::from("/b"));
                assert_eq!(a.pid_file, Some(PathBuf::from("/b/init.pid")));
                assert_eq!(a.console_socket, Some(PathBuf::from("/tmp/s")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn equals_syntax_and_global_after_command() {
        let cli = parse_str(&["--log-format=json", "delete", "--force", "--root=/r", "c"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.root, PathBuf::from("/r"));
        assert!(matches!(cli.command, Command::Delete { force: true, ref id } if id == "c"));
    }

    #[test]
    fn exec_keeps_the_command_verbatim() {
        let cli = parse_str(&[
            "exec",
            "-t",
            "-e",
            "A=1",
            "-u",
            "1000:1000",
            "c",
            "sh",
            "-c",
            "ls -l",
            "--help",
        ])
        .unwrap();
        match cli.command {
            Command::Exec(a) => {
                assert!(a.tty);
                assert_eq!(a.env, ["A=1"]);
                assert_eq!(a.user.as_deref(), Some("1000:1000"));
                assert_eq!(a.id, "c");
                assert_eq!(a.command, ["sh", "-c", "ls -l", "--help"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kill_signal_defaults_to_term() {
        let cli = parse_str(&["kill", "c"]).unwrap();
        assert!(
            matches!(cli.command, Command::Kill { ref signal, all: false, .. } if signal == "SIGTERM")
        );
        let cli = parse_str(&["kill", "--all", "c", "9"]).unwrap();
        assert!(
            matches!(cli.command, Command::Kill { ref signal, all: true, .. } if signal == "9")
        );
    }

    #[test]
    fn ps_and_list_formats() {
        let cli = parse_str(&["ps", "--format", "json", "c"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Ps {
                format: Format::Json,
                ..
            }
        ));
        let cli = parse_str(&["ps", "c", "-o", "pid,comm"]).unwrap();
        assert!(
            matches!(cli.command, Command::Ps { ref ps_args, .. } if ps_args == &["-o", "pid,comm"])
        );
        let cli = parse_str(&["list", "-q"]).unwrap();
        assert!(matches!(cli.command, Command::List { quiet: true, .. }));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse_str(&["create", "--bogus", "c"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("create:") && e.contains("--bogus"), "{e}");
        let e = parse_str(&["start"]).unwrap_err().to_string();
        assert!(e.contains("missing container id"), "{e}");
        let e = parse_str(&["frobnicate"]).unwrap_err().to_string();
        assert!(e.contains("unknown command"), "{e}");
        let e = parse_str(&["state", "a", "b"]).unwrap_err().to_string();
        assert!(e.contains("unexpected argument"), "{e}");
        let e = parse_str(&["--log-format", "xml", "list"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("use text or json"), "{e}");
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(
            parse_str(&["--version"]).unwrap().command,
            Command::Version
        ));
        assert!(matches!(
            parse_str(&[]).unwrap().command,
            Command::Help(None)
        ));
        assert!(matches!(
            parse_str(&["exec", "--help"]).unwrap().command,
            Command::Help(Some("exec"))
        ));
        for (name, _, _) in COMMANDS {
            assert!(help(Some(name)).contains(name));
        }
    }
}
