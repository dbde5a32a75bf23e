//! Boot: load the records, re-attach to live shims (live restore), reconcile the rest.
//!
//! - A record whose create never finished (or whose removal was interrupted) is removed with its
//!   shim, mount, snapshot and directories.
//! - A container whose shim answers is supervised again; one that exited meanwhile gets its
//!   recorded exit (the shim keeps it until `delete`).
//! - A container whose shim is gone is marked exited with `exit.json` if the shim wrote it, else
//!   code 255 and an error; its leftovers (processes, cgroup, runtime state) are removed.
//! - Shim bundles and container snapshots without a record are removed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use berth_shim::Status as ShimStatus;

use crate::container::Container;
use crate::record::{Record, Status, now_nanos};
use crate::task::is_mountpoint;
use crate::{Engine, err_chain};

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn boot(e: &Engine) {
    e.reaper().purge(&e.config().root.join("containers"));
    e.reaper().purge(&e.config().state.join("shims"));
    let mut restart = Vec::new();
    let mut known = HashSet::new();
    let dir = e.config().root.join("containers");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    for ent in entries {
        let id = ent.file_name().to_string_lossy().into_owned();
        if !is_id(&id) {
            continue;
        }
        known.insert(id.clone());
        match Record::load(&ent.path()) {
            Ok(rec) if rec.complete && rec.status != Status::Removing => {
                if let Some(c) = adopt(e, rec) {
                    restart.push(c);
                }
            }
            Ok(rec) => {
                tracing::info!("removing container {id}: its create or removal was interrupted");
                let unfinished = !rec.complete;
                let c = Container::new(rec);
                if unfinished {
                    // Before the record goes: a kill now still finds them next boot.
                    e.remove_volumes_made_by(&c.ns, &id);
                }
                discard(e, &c.ns, &id);
            }
            Err(err) => {
                tracing::warn!("removing container {id}: unreadable record: {err}");
                // No usable record: nothing says which namespace its snapshot is in; the
                // orphan-snapshot pass below finds it.
                discard_dirs(e, &id);
                known.remove(&id);
            }
        }
    }
    // Bundles without a record.
    if let Ok(rd) = std::fs::read_dir(e.config().state.join("shims")) {
        for ent in rd.flatten() {
            let id = ent.file_name().to_string_lossy().into_owned();
            if is_id(&id) && !known.contains(&id) {
                tracing::info!("removing the leftover bundle of container {id}");
                if let Ok(client) = berth_shim::connect(&ent.path()) {
                    let _ = client.delete();
                }
                discard_dirs(e, &id);
            }
        }
    }
    // Container snapshots without a record.
    if let Ok(namespaces) = e.store().meta.namespaces() {
        for ns in namespaces {
            let Ok(snaps) = e.store().snapshots.list(&ns) else {
                continue;
            };
            for s in snaps {
                if s.kind == berth_store::Kind::Active && is_id(&s.name) && !known.contains(&s.name)
                {
                    tracing::info!("removing the leftover snapshot of container {}", s.name);
                    e.cleanup_leftovers(&ns, &s.name);
                    if let Err(err) = e.store().snapshots.remove(&ns, &s.name) {
                        tracing::warn!("remove snapshot {ns}/{}: {}", s.name, err_chain(&err));
                    }
                }
            }
        }
    }
    for c in restart {
        let e = e.clone();
        tokio::spawn(async move {
            let _op = c.op.lock().await;
            if c.lock().rec.status == Status::Restarting {
                if let Err(err) = e.start_locked(&c).await {
                    tracing::warn!("restart of container {} at boot: {}", c.id, err.message());
                }
            }
        });
    }
}

/// Remove everything of a container whose record is not to be kept.
fn discard(e: &Engine, ns: &str, id: &str) {
    let bundle = e.bundle_dir(id);
    if let Ok(client) = berth_shim::connect(&bundle) {
        let _ = client.delete();
    }
    e.cleanup_leftovers(ns, id);
    let rootfs = bundle.join("rootfs");
    if is_mountpoint(&rootfs) {
        let _ = berth_store::unmount(&rootfs);
    }
    match e.store().snapshots.remove(ns, id) {
        Ok(()) | Err(berth_store::Error::NotFound { .. }) => {}
        Err(err) => tracing::warn!("remove snapshot {ns}/{id}: {}", err_chain(&err)),
    }
    discard_dirs(e, id);
}

fn discard_dirs(e: &Engine, id: &str) {
    let bundle = e.bundle_dir(id);
    let rootfs = bundle.join("rootfs");
    if is_mountpoint(&rootfs) && berth_store::unmount(&rootfs).is_err() {
        tracing::warn!("cannot unmount {}; leaving it", rootfs.display());
        return;
    }
    let _ = std::fs::remove_dir_all(&bundle);
    let _ = std::fs::remove_dir_all(e.containers_dir(id));
}

fn ensure_mounted(e: &Engine, ns: &str, id: &str, bundle: &Path) -> Result<(), String> {
    let rootfs = bundle.join("rootfs");
    if is_mountpoint(&rootfs) {
        return Ok(());
    }
    std::fs::create_dir_all(&rootfs)
        .map_err(|err| format!("create {}: {err}", rootfs.display()))?;
    let mounts = e
        .store()
        .snapshots
        .mounts(ns, id)
        .map_err(|err| err_chain(&err))?;
    // A `--rm` container's overlay is mounted `volatile` (`create.rs`); if the host stopped
    // while it was mounted, the kernel marks the work directory and refuses it from then on,
    // and rightly so: nothing was ever synced.
    for m in mounts.iter().filter(|m| m.typ == "overlay") {
        let work = m.options.iter().find_map(|o| o.strip_prefix("workdir="));
        if work.is_some_and(|w| Path::new(w).join("work/incompat/volatile").exists()) {
            return Err(format!(
                "the writable layer of container {id} was mounted volatile (--rm) when the host stopped, so its content cannot be trusted; remove the container"
            ));
        }
    }
    berth_store::mount(&mounts, &rootfs).map_err(|err| err_chain(&err))?;
    let cfg = bundle.join("config.json");
    if !cfg.exists() {
        std::fs::copy(e.containers_dir(id).join("config.json"), &cfg)
            .map_err(|err| format!("restore {}: {err}", cfg.display()))?;
    }
    Ok(())
}

/// Load one complete record into the index and reconcile it with its shim. Returns the
/// container if its restart policy asks for a start now.
fn adopt(e: &Engine, rec: Record) -> Option<Arc<Container>> {
    let id = rec.id.clone();
    let ns = rec.namespace.clone();
    let c = Container::new(rec);
    {
        let mut idx = e.index();
        idx.names.insert((ns.clone(), c.name()), id.clone());
        idx.by_id.insert(id.clone(), c.clone());
    }
    let bundle = e.bundle_dir(&id);
    if let Err(err) = ensure_mounted(e, &ns, &id, &bundle) {
        if c.lock().rec.config().auto_remove {
            // A `--rm` container whose volatile root filesystem went with the host: it is
            // removed, as its exit would have removed it.
            tracing::info!("container {id} (--rm): removed at boot: {err}");
            let (e2, c2) = (e.clone(), c.clone());
            tokio::spawn(async move {
                if e2.remove(&c2, true).await.is_ok() {
                    let points = c2.lock().rec.mount_points.clone();
                    e2.remove_anonymous_volumes(&c2.ns, &points);
                }
            });
            return None;
        }
        tracing::error!("container {id}: cannot mount its root filesystem: {err}");
        let mut m = c.lock();
        m.rec.status = Status::Dead;
        m.rec.error = format!("cannot mount the root filesystem: {err}");
        e.save(&c, &m.rec);
        return None;
    }
    let was = c.lock().rec.status;
    let shim = berth_shim::connect(&bundle)
        .ok()
        .and_then(|cl| cl.state().ok().map(|st| (cl, st)));
    let exit = match shim {
        Some((client, st)) if matches!(st.status, ShimStatus::Running | ShimStatus::Paused) => {
            let client = Arc::new(client);
            let run = {
                let mut m = c.lock();
                m.shim = Some(client.clone());
                m.run += 1;
                m.rec.status = if st.status == ShimStatus::Paused {
                    Status::Paused
                } else {
                    Status::Running
                };
                m.rec.pid = st.pid;
                if m.rec.started_at == 0 {
                    m.rec.started_at = now_nanos();
                }
                e.save(&c, &m.rec);
                m.run
            };
            c.notify(c.lock().rec.status, false);
            tracing::info!("container {id}: re-attached to its shim (pid {})", st.pid);
            e.monitor(c.clone(), client, run);
            return None;
        }
        Some((client, st)) if st.status == ShimStatus::Created => {
            // A start that never finished: back to created (or exited).
            let _ = client.delete();
            if was.is_active() {
                Some(crate::task::lost_exit())
            } else {
                None
            }
        }
        Some((client, st)) => {
            let exit = st.exit.or_else(|| berth_shim::read_exit(&bundle));
            let _ = client.delete();
            Some(exit.unwrap_or_else(crate::task::lost_exit))
        }
        None => {
            e.cleanup_leftovers(&ns, &id);
            if was.is_active() {
                Some(
                    berth_shim::read_exit(&bundle).unwrap_or(berth_shim::ExitInfo {
                        code: 255,
                        signal: None,
                        finished_at_unix_nanos: now_nanos(),
                        oom_killed: false,
                    }),
                )
            } else {
                None
            }
        }
    };
    let mut m = c.lock();
    if let Some(x) = exit {
        let lost = berth_shim::read_exit(&bundle).is_none() && x.code == 255;
        m.rec.exit_code = x.code;
        m.rec.oom_killed = x.oom_killed;
        m.rec.finished_at = x.finished_at_unix_nanos;
        m.rec.pid = 0;
        if lost {
            m.rec.error = "the container's shim died while berthd was not running".into();
        }
        let conf = m.rec.config();
        let policy = conf.restart.unwrap_or_default();
        let again = !m.rec.manually_stopped
            && crate::record::policy_restarts(&policy, x.code, m.rec.restart_count);
        m.rec.status = if again {
            Status::Restarting
        } else {
            Status::Exited
        };
        e.save(&c, &m.rec);
        let auto_remove = conf.auto_remove && !again;
        drop(m);
        c.notify(c.lock().rec.status, false);
        if auto_remove {
            let e2 = e.clone();
            let c2 = c.clone();
            tokio::spawn(async move {
                let _ = e2.remove(&c2, true).await;
            });
            return None;
        }
        return again.then_some(c);
    }
    // Not running before and no live shim: keep as is. "always" containers start at boot
    // unless stopped by a user.
    let conf = m.rec.config();
    let policy = conf.restart.unwrap_or_default().name;
    if m.rec.status == Status::Exited
        && !m.rec.manually_stopped
        && (policy == "always" || policy == "unless-stopped")
        && m.rec.started_at != 0
    {
        m.rec.status = Status::Restarting;
        drop(m);
        return Some(c);
    }
    None
}
