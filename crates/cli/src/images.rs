//! Image verbs through the daemon (pull, push, images, rmi, tag, prune, save, load, import),
//! and the client-side ones: login/logout (the credentials file berthd reads) and
//! `system check` (the store, opened directly).

use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_api::v1::{
    Chunk, ImportChunk, ImportRequest, ListImagesRequest, PruneImagesRequest, PullRequest,
    PushRequest, RemoveImageRequest, SaveRequest, TagRequest, image_progress, import_chunk,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Client;
use crate::containers::print_formatted;
use crate::output::{self, human_size};
use crate::progress::Reporter;
use crate::{
    Cli, CliResult, Failure, ImagesArgs, ImportArgs, LoadArgs, LoginArgs, LogoutArgs, PruneArgs,
    PullArgs, PushArgs, RmiArgs, SaveArgs, TagArgs,
};

fn bad(e: impl std::fmt::Display) -> Failure {
    Failure::new(format!("Error: {e}"))
}

/// Pull with progress; returns (name, digest, downloaded anything).
async fn pull_stream(
    c: &Client,
    reference: &str,
    platform: &str,
    reporter: &mut Reporter,
) -> Result<(String, String), Failure> {
    let mut stream = c
        .images()
        .pull(c.req(PullRequest {
            reference: reference.to_owned(),
            platform: platform.to_owned(),
        }))
        .await?
        .into_inner();
    let mut done = None;
    let result = loop {
        match stream.message().await {
            Ok(Some(p)) => {
                if let Some(image_progress::Event::Done(d)) = &p.event {
                    done = Some((d.name.clone(), d.digest.clone()));
                }
                reporter.event(p);
            }
            Ok(None) => break Ok(()),
            Err(s) => break Err(s),
        }
    };
    reporter.finish();
    result?;
    done.ok_or_else(|| bad(format!("the pull of {reference} ended without a result")))
}

pub async fn pull(c: &Client, a: &PullArgs) -> CliResult {
    let mut reporter = Reporter::new(a.quiet, false);
    let (name, digest) = pull_stream(
        c,
        &a.name,
        a.platform.as_deref().unwrap_or(""),
        &mut reporter,
    )
    .await?;
    if !a.quiet {
        println!("Digest: {digest}");
        let familiar = berth_image::familiar_name(&name);
        if reporter.downloaded {
            println!("Status: Downloaded newer image for {familiar}");
        } else {
            println!("Status: Image is up to date for {familiar}");
        }
    }
    println!("{name}");
    Ok(())
}

/// `run`/`create`'s implicit pull: progress on stderr, like Docker.
pub async fn pull_for_run(c: &Client, image: &str, platform: &str, quiet: bool) -> CliResult {
    let mut reporter = Reporter::new(quiet, true);
    let (name, digest) = pull_stream(c, image, platform, &mut reporter).await?;
    if !quiet {
        eprintln!("Digest: {digest}");
        eprintln!(
            "Status: Downloaded newer image for {}",
            berth_image::familiar_name(&name)
        );
    }
    Ok(())
}

pub async fn push(c: &Client, a: &PushArgs) -> CliResult {
    let mut reporter = Reporter::new(a.quiet, false);
    let mut stream = c
        .images()
        .push(c.req(PushRequest {
            reference: a.name.clone(),
        }))
        .await?
        .into_inner();
    let mut digest = None;
    let result = loop {
        match stream.message().await {
            Ok(Some(p)) => {
                if let Some(image_progress::Event::Done(d)) = &p.event {
                    digest = Some(d.digest.clone());
                }
                reporter.event(p);
            }
            Ok(None) => break Ok(()),
            Err(s) => break Err(s),
        }
    };
    reporter.finish();
    result?;
    if !a.quiet
        && let Some(d) = digest
    {
        println!("digest: {d}");
    }
    Ok(())
}

fn split_repo_tag(rt: &str) -> (String, String) {
    if let Some((repo, digest)) = rt.split_once('@') {
        return (repo.to_owned(), digest.to_owned());
    }
    match rt.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_owned(), t.to_owned()),
        _ => (rt.to_owned(), "latest".to_owned()),
    }
}

fn image_rows(list: &[berth_api::v1::ImageSummary], a: &ImagesArgs) -> Vec<Value> {
    let mut rows = Vec::new();
    for s in list {
        let id = if a.no_trunc {
            s.id.clone()
        } else {
            s.id.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect()
        };
        let age = SystemTime::now()
            .duration_since(
                UNIX_EPOCH + Duration::from_secs(u64::try_from(s.created_unix).unwrap_or(0)),
            )
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let created_since = if s.created_unix > 0 {
            format!("{} ago", output::human_duration(age))
        } else {
            "N/A".to_owned()
        };
        let size = human_size(u64::try_from(s.size).unwrap_or(0));
        let digest_of = |repo: &str| -> String {
            s.repo_digests
                .iter()
                .find_map(|d| {
                    let (r, dg) = d.split_once('@')?;
                    (berth_image::familiar_name(&format!("{r}:x")).trim_end_matches(":x") == repo)
                        .then(|| dg.to_owned())
                })
                .or_else(|| {
                    s.repo_digests
                        .first()
                        .and_then(|d| d.split_once('@').map(|(_, dg)| dg.to_owned()))
                })
                .unwrap_or_else(|| "<none>".to_owned())
        };
        let mut tags: Vec<(String, String)> = s
            .repo_tags
            .iter()
            .map(|t| {
                let (r, tag) = split_repo_tag(&berth_image::familiar_name(t));
                (r, tag)
            })
            .collect();
        if tags.is_empty() {
            tags.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in tags {
            rows.push(json!({
                "Containers": if s.containers < 0 { "N/A".to_owned() } else { s.containers.to_string() },
                "CreatedAt": crate::containers::rfc3339_nanos(s.created_unix.saturating_mul(1_000_000_000)),
                "CreatedSince": created_since,
                "Digest": digest_of(&repo),
                "ID": id,
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": size,
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": size,
            }));
        }
    }
    rows
}

pub async fn images(c: &Client, a: &ImagesArgs) -> CliResult {
    let list = c
        .images()
        .list(c.req(ListImagesRequest {
            all: a.all,
            filters: a.filter.clone(),
        }))
        .await?
        .into_inner()
        .images;
    let mut rows = image_rows(&list, a);
    if let Some(r) = &a.reference {
        let (repo, tag) = match r.rsplit_once(':') {
            Some((rp, t)) if !t.contains('/') => (rp.to_owned(), Some(t.to_owned())),
            _ => (r.clone(), None),
        };
        let want = berth_image::familiar_name(&format!("{repo}:x"));
        let want_repo = want.trim_end_matches(":x").to_owned();
        rows.retain(|v| {
            v["Repository"] == want_repo.as_str() && tag.as_deref().is_none_or(|t| v["Tag"] == t)
        });
    }
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for v in &rows {
            let id = v["ID"].as_str().unwrap_or_default().to_owned();
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    let table = if a.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    let headers = json!({
        "Containers": "CONTAINERS", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED",
        "Digest": "DIGEST", "ID": "IMAGE ID", "Repository": "REPOSITORY", "SharedSize": "SHARED SIZE",
        "Size": "SIZE", "Tag": "TAG", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "SIZE",
    });
    print_formatted(&rows, a.format.as_deref(), table, &headers)
}

fn print_deleted(r: &berth_api::v1::ImageDeleteResponse) {
    for u in &r.untagged {
        println!("Untagged: {u}");
    }
    for d in &r.deleted {
        println!("Deleted: {d}");
    }
}

pub async fn rmi(c: &Client, a: &RmiArgs) -> CliResult {
    let mut failed = None;
    for n in &a.names {
        match c
            .images()
            .remove(c.req(RemoveImageRequest {
                reference: n.clone(),
                force: a.force,
            }))
            .await
        {
            Ok(r) => print_deleted(&r.into_inner()),
            Err(s) => {
                if let Some(f) = failed.replace(Failure::from(s)) {
                    eprintln!("{}", f.msg);
                }
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

pub async fn prune(c: &Client, a: &PruneArgs) -> CliResult {
    let what = if a.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    if !a.force && !output::confirm(&format!("WARNING! This will remove {what}."))? {
        return Ok(());
    }
    let r = c
        .images()
        .prune(c.req(PruneImagesRequest { all: a.all }))
        .await?
        .into_inner();
    if !r.untagged.is_empty() || !r.deleted.is_empty() {
        println!("Deleted Images:");
        for u in &r.untagged {
            println!("untagged: {u}");
        }
        for d in &r.deleted {
            println!("deleted: {d}");
        }
        println!();
    }
    crate::output::print_reclaimed(r.space_reclaimed);
    Ok(())
}

pub async fn tag(c: &Client, a: &TagArgs) -> CliResult {
    c.images()
        .tag(c.req(TagRequest {
            source: a.source.clone(),
            target: a.target.clone(),
        }))
        .await?;
    Ok(())
}

pub async fn save(c: &Client, a: &SaveArgs) -> CliResult {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        return Err(bad(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect",
        ));
    }
    let mut stream = c
        .images()
        .save(c.req(SaveRequest {
            references: a.names.clone(),
        }))
        .await?
        .into_inner();
    match &a.output {
        Some(path) => {
            // Write beside the destination and rename, so a failed save leaves no half file.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| bad(format!("creating a file in {}: {e}", dir.display())))?;
            {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
                while let Some(ch) = stream.message().await? {
                    w.write_all(&ch.data)?;
                }
                w.flush()?;
            }
            tmp.persist(path)
                .map_err(|e| bad(format!("writing {}: {e}", path.display())))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            while let Some(ch) = stream.message().await? {
                out.write_all(&ch.data)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// Read `input` on a thread and feed it to the daemon as `make(chunk)` messages.
fn spawn_reader<T: Send + 'static>(
    mut input: Box<dyn Read + Send>,
    tx: mpsc::Sender<T>,
    make: fn(Vec<u8>) -> T,
) -> std::thread::JoinHandle<std::io::Result<()>> {
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            let mut filled = 0;
            while filled < buf.len() {
                match input.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(());
            }
            buf.truncate(filled);
            if tx.blocking_send(make(buf)).is_err() {
                return Ok(());
            }
        }
    })
}

fn open_input(path: &str) -> Result<Box<dyn Read + Send>, Failure> {
    if path == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    let f = std::fs::File::open(path).map_err(|e| bad(format!("opening {path}: {e}")))?;
    Ok(Box::new(f))
}

pub async fn load(c: &Client, a: &LoadArgs) -> CliResult {
    let input = match &a.input {
        Some(p) => open_input(&p.display().to_string())?,
        None => {
            if std::io::stdin().is_terminal() {
                return Err(bad(
                    "requested load from stdin, but stdin is empty; use -i FILE or pipe an archive",
                ));
            }
            open_input("-")?
        }
    };
    let (tx, rx) = mpsc::channel(4);
    let reader = spawn_reader(input, tx, |data| Chunk { data });
    let result = c.images().load(c.req(ReceiverStream::new(rx))).await;
    let read = reader
        .join()
        .map_err(|_| bad("the reading thread panicked"))?;
    let loaded = result?.into_inner();
    read?;
    if !a.quiet {
        for n in &loaded.loaded {
            if n.starts_with("sha256:") {
                println!("Loaded image ID: {n}");
            } else {
                println!("Loaded image: {}", berth_image::familiar_name(n));
            }
        }
    }
    Ok(())
}

pub async fn import(c: &Client, a: &ImportArgs) -> CliResult {
    let input = open_input(&a.file)?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(ImportChunk {
        msg: Some(import_chunk::Msg::Request(ImportRequest {
            reference: a.reference.clone().unwrap_or_default(),
            changes: a.change.clone(),
            message: a.message.clone().unwrap_or_default(),
        })),
    })
    .await
    .map_err(|_| bad("import stream closed"))?;
    let reader = spawn_reader(input, tx, |data| ImportChunk {
        msg: Some(import_chunk::Msg::Data(data)),
    });
    let result = c.images().import(c.req(ReceiverStream::new(rx))).await;
    let read = reader
        .join()
        .map_err(|_| bad("the reading thread panicked"))?;
    let r = result?.into_inner();
    read?;
    println!("{}", r.id);
    Ok(())
}

fn registry_config(cli: &Cli) -> Result<berth_registry::Config, Failure> {
    let mut config = berth_registry::Config {
        insecure: cli.insecure_registries.clone(),
        auth_files: berth_registry::auth::default_files(),
        ..berth_registry::Config::default()
    };
    for m in &cli.registry_mirrors {
        let (reg, mirror) = m.split_once('=').ok_or_else(|| {
            bad(format!(
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

/// Log in client-side (the registry checks the credentials), then store them where berthd
/// reads them (`berth_registry::auth::default_files()`, the first one).
pub fn login(cli: &Cli, a: &LoginArgs) -> CliResult {
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
        return Err(bad("a password is required: use --password-stdin (or -p)"));
    };
    if user.is_empty() {
        return Err(bad("a username is required: use -u"));
    }
    let client = berth_registry::Client::new(registry_config(cli)?)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(client.login(&server, &user, &password))?;
    let files = berth_registry::auth::default_files();
    let file = files
        .first()
        .ok_or_else(|| bad("no place to store credentials (no home directory)"))?;
    berth_registry::auth::store(file, &server, &user, &password)?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(a: &LogoutArgs) -> CliResult {
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

/// `system check`: verify the store directly (it is safe to open beside a running berthd).
pub fn check(root: &std::path::Path, repair: bool) -> CliResult {
    let store = berth_store::Store::open(root)?;
    let report = store.check(repair)?;
    let text = report.to_string();
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    if report.is_clean() || repair {
        Ok(())
    } else {
        Err(bad(
            "the store has inconsistencies; run `berth system check --repair` to fix them",
        ))
    }
}
