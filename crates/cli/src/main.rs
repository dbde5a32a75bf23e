//! `berth`: Docker's verbs for Berth. A thin layer: parse with clap, call the image service,
//! print like Docker. Until `berthd` exists the CLI opens the store itself; each verb is one
//! call into `berth-image`, so moving it behind the daemon changes only `service()`.

mod output;
mod progress;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use berth_image::{ImageService, format::Platform};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A fast, light container engine",
    propagate_version = true
)]
struct Cli {
    /// Root of Berth's persistent state (images, snapshots, metadata).
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth"
    )]
    root: PathBuf,
    /// Namespace to work in (containerd-style: `default`, `k8s.io`, ...).
    #[arg(
        long,
        global = true,
        env = "BERTH_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// Registries reached over plain HTTP (loopback ones always are); repeatable.
    #[arg(
        long = "insecure-registry",
        global = true,
        env = "BERTH_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Mirrors, as REGISTRY=MIRROR (e.g. docker.io=mirror.example:5000); repeatable.
    #[arg(
        long = "registry-mirror",
        global = true,
        env = "BERTH_REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    registry_mirrors: Vec<String>,
    /// Snapshotter for a new store: `overlayfs` (default where the kernel supports it) or
    /// `native` (copies; works on any filesystem). An existing store keeps its own.
    #[arg(long, global = true, env = "BERTH_SNAPSHOTTER", value_parser = ["overlayfs", "native"])]
    snapshotter: Option<String>,
    /// Log debug details to stderr.
    #[arg(long, short = 'D', global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// List images.
    Images(ImagesArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Show low-level information on images, as JSON.
    Inspect(InspectArgs),
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
    /// Show the Berth version.
    Version,
}

#[derive(Subcommand)]
enum ImageCommand {
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
enum SystemCommand {
    /// Re-verify every blob and snapshot; report (and with --repair fix) inconsistencies.
    Check {
        /// Remove corrupt blobs and stale state instead of only reporting them.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Args)]
struct PullArgs {
    /// Image reference (`busybox`, `registry:5000/app:tag`, `name@sha256:...`).
    name: String,
    /// Suppress progress output; print only the image name.
    #[arg(short, long)]
    quiet: bool,
    /// Platform to pull from a multi-platform image (default: this host's).
    #[arg(long)]
    platform: Option<String>,
}

#[derive(Args)]
struct PushArgs {
    /// Local image to push (pushed under its own name).
    name: String,
    /// Suppress progress output.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct ImagesArgs {
    /// Only this repository (and optionally tag).
    reference: Option<String>,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// `table`, `json`, or a template like `{{.Repository}}:{{.Tag}}`.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
struct InspectArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Format the output using a template (`{{.Id}}`, `{{json .Config}}`).
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Args)]
struct RmiArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Remove images referenced by several names, too.
    #[arg(short, long)]
    force: bool,
}

#[derive(Args)]
struct PruneArgs {
    /// Remove all images, not only dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

#[derive(Args)]
struct TagArgs {
    source: String,
    target: String,
}

#[derive(Args)]
struct SaveArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Write to a file instead of STDOUT.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct LoadArgs {
    /// Read from a tar archive file instead of STDIN.
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Suppress the load output.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct ImportArgs {
    /// Tarball path, or `-` for STDIN.
    file: String,
    /// Name for the image (`repo[:tag]`).
    reference: Option<String>,
    /// Commit message for the image's history.
    #[arg(short, long)]
    message: Option<String>,
}

#[derive(Args)]
struct LoginArgs {
    /// Registry (default: Docker Hub).
    server: Option<String>,
    #[arg(short, long)]
    username: Option<String>,
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from STDIN.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args)]
struct LogoutArgs {
    server: Option<String>,
}

/// An error already worded for the user, with Docker's exit status.
#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

type CliResult = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.debug {
        output::init_debug_log();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            // One line, whatever a lower layer's message holds.
            eprintln!("Error: {}", msg.trim().replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}

fn registry_config(cli: &Cli) -> Result<berth_registry::Config, Failure> {
    let mut config = berth_registry::Config {
        insecure: cli.insecure_registries.clone(),
        auth_files: berth_registry::auth::default_files(),
        ..berth_registry::Config::default()
    };
    for m in &cli.registry_mirrors {
        let (reg, mirror) = m.split_once('=').ok_or_else(|| {
            Failure(format!(
                "invalid --registry-mirror {m:?}: expected REGISTRY=MIRROR"
            ))
        })?;
        config
            .mirrors
            .entry(reg.to_owned())
            .or_default()
            .push(mirror.to_owned());
    }
    Ok(config)
}

fn service(cli: &Cli) -> Result<ImageService, Failure> {
    std::fs::create_dir_all(&cli.root).map_err(|e| {
        Failure(format!(
            "creating the store root {}: {e}",
            cli.root.display()
        ))
    })?;
    let kind = match cli.snapshotter.as_deref() {
        Some("overlayfs") => berth_store::SnapshotterKind::Overlay,
        Some("native") => berth_store::SnapshotterKind::Native,
        _ => berth_store::SnapshotterKind::Auto,
    };
    Ok(ImageService::open(
        &cli.root,
        &cli.namespace,
        registry_config(cli)?,
        kind,
    )?)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("starting the async runtime: {e}")))
}

fn run(cli: Cli) -> CliResult {
    match &cli.command {
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => pull(&cli, a),
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => push(&cli, a),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => {
            output::images(&service(&cli)?, a)
        }
        Command::Inspect(a) | Command::Image(ImageCommand::Inspect(a)) => {
            output::inspect(&service(&cli)?, a)
        }
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => {
            let svc = service(&cli)?;
            let mut failed = None;
            for n in &a.names {
                match svc.remove(n, a.force) {
                    Ok(report) => report.lines.iter().for_each(|l| println!("{l}")),
                    Err(e) => failed = Some(Failure(e.to_string())),
                }
            }
            failed.map_or(Ok(()), Err)
        }
        Command::Image(ImageCommand::Prune(a)) => {
            if !a.force && std::io::stdin().is_terminal() {
                let what = if a.all {
                    "all images without at least one container associated to them"
                } else {
                    "all dangling images"
                };
                eprint!(
                    "WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] "
                );
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !answer.trim().eq_ignore_ascii_case("y") {
                    return Ok(());
                }
            }
            let report = service(&cli)?.prune(a.all)?;
            if !report.lines.is_empty() {
                println!("Deleted Images:");
                report.lines.iter().for_each(|l| println!("{l}"));
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                output::human_size(report.reclaimed)
            );
            Ok(())
        }
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => {
            service(&cli)?.tag(&a.source, &a.target)?;
            Ok(())
        }
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => save(&cli, a),
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => {
            let svc = service(&cli)?;
            let loaded = match &a.input {
                Some(p) => {
                    let f = std::fs::File::open(p)
                        .map_err(|e| Failure(format!("opening {}: {e}", p.display())))?;
                    svc.load(
                        std::io::BufReader::with_capacity(1 << 20, f),
                        &p.display().to_string(),
                    )?
                }
                None => {
                    if std::io::stdin().is_terminal() {
                        return Err(Failure(
                            "requested load from stdin, but stdin is empty; use -i FILE or pipe an archive".into(),
                        ));
                    }
                    svc.load(std::io::stdin().lock(), "STDIN")?
                }
            };
            if !a.quiet {
                for (n, id) in loaded.names.iter().zip(&loaded.ids) {
                    if n.starts_with("sha256:") {
                        println!("Loaded image ID: {id}");
                    } else {
                        println!("Loaded image: {n}");
                    }
                }
            }
            Ok(())
        }
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            let svc = service(&cli)?;
            let reader: Box<dyn Read> = if a.file == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(
                    std::fs::File::open(&a.file)
                        .map_err(|e| Failure(format!("opening {}: {e}", a.file)))?,
                )
            };
            let loaded = svc.import(reader, a.reference.as_deref(), a.message.as_deref())?;
            for id in loaded.ids {
                println!("{id}");
            }
            Ok(())
        }
        Command::Login(a) => login(&cli, a),
        Command::Logout(a) => {
            let server = a.server.clone().unwrap_or_else(|| "docker.io".into());
            let files = berth_registry::auth::default_files();
            let mut removed = false;
            if let Some(f) = files.first() {
                removed = berth_registry::auth::erase(f, &server)?;
            }
            if removed {
                println!("Removing login credentials for {server}");
            } else {
                println!("Not logged in to {server}");
            }
            Ok(())
        }
        Command::System(SystemCommand::Check { repair }) => {
            let svc = service(&cli)?;
            let report = svc.store().check(*repair)?;
            let text = report.to_string();
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            if report.is_clean() || *repair {
                Ok(())
            } else {
                Err(Failure(
                    "the store has inconsistencies; run `berth system check --repair` to fix them"
                        .into(),
                ))
            }
        }
        Command::Version => {
            println!("Berth version {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

fn pull(cli: &Cli, a: &PullArgs) -> CliResult {
    let platform: Option<Platform> = a.platform.as_deref().map(str::parse).transpose()?;
    let reporter = progress::Reporter::new(a.quiet);
    let svc = service(cli)?.with_progress(reporter.callback());
    let pulled = runtime()?.block_on(svc.pull(&a.name, platform.as_ref()));
    reporter.finish();
    let pulled = pulled?;
    if !a.quiet {
        println!("Digest: {}", pulled.digest);
        let familiar = berth_image::familiar_name(&pulled.name);
        if pulled.downloaded > 0 {
            println!("Status: Downloaded newer image for {familiar}");
        } else {
            println!("Status: Image is up to date for {familiar}");
        }
    }
    println!("{}", pulled.name);
    Ok(())
}

fn push(cli: &Cli, a: &PushArgs) -> CliResult {
    let reporter = progress::Reporter::new(a.quiet);
    let svc = service(cli)?.with_progress(reporter.callback());
    let pushed = runtime()?.block_on(svc.push(&a.name, None, None));
    reporter.finish();
    let digest = pushed?;
    if !a.quiet {
        println!("digest: {digest}");
    }
    Ok(())
}

fn save(cli: &Cli, a: &SaveArgs) -> CliResult {
    let svc = service(cli)?;
    match &a.output {
        Some(path) => {
            // Write beside the destination and rename, so a failed save leaves no half file.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| Failure(format!("creating a file in {}: {e}", dir.display())))?;
            svc.save(
                &a.names,
                std::io::BufWriter::with_capacity(1 << 20, tmp.as_file()),
            )?;
            tmp.persist(path)
                .map_err(|e| Failure(format!("writing {}: {e}", path.display())))?;
            Ok(())
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(Failure(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                ));
            }
            svc.save(
                &a.names,
                std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock()),
            )?;
            Ok(())
        }
    }
}

fn login(cli: &Cli, a: &LoginArgs) -> CliResult {
    let server = a.server.clone().unwrap_or_else(|| "docker.io".into());
    let user = match &a.username {
        Some(u) => u.clone(),
        None => {
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin().read_line(&mut u)?;
            u.trim().to_owned()
        }
    };
    let password = if a.password_stdin {
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(p) = &a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else {
        return Err(Failure(
            "a password is required: use --password-stdin (or -p)".into(),
        ));
    };
    if user.is_empty() {
        return Err(Failure("a username is required: use -u".into()));
    }
    let client = berth_registry::Client::new(registry_config(cli)?)?;
    runtime()?.block_on(client.login(&server, &user, &password))?;
    let files = berth_registry::auth::default_files();
    let file = files
        .first()
        .ok_or_else(|| Failure("no place to store credentials (no home directory)".into()))?;
    berth_registry::auth::store(file, &server, &user, &password)?;
    println!("Login Succeeded");
    Ok(())
}
