//! A standby shim's cgroup directories, made while it waits for a container.
//!
//! Making a container's cgroup directories (one per cgroup v1 hierarchy, the memory one the
//! slowest) took most of a millisecond of every start. A standby shim started with
//! `--cgroup-pool PARENT` makes them ahead, as `PARENT/.pool-<its pid>`, and when it is handed a
//! container whose cgroup is `PARENT/<name>` it renames them to that name (cgroup v1 allows a
//! rename within the same parent); the runtime then finds them made. cgroup2 directories cannot
//! be renamed, so the pooled one is removed and the runtime makes the container's own (it is
//! quick). Invariant: the directories live no longer than the shim's decision: they are handed
//! over, or removed when the container is elsewhere, when any rename fails, and when the
//! standby is not needed after all (its daemon dropped it or died).

use std::path::PathBuf;

pub(crate) struct Pool {
    parent: String,
    v1: Vec<PathBuf>,
    unified: Option<PathBuf>,
}

impl Pool {
    /// Make the directories under `parent` (a cgroup path such as `/berth/default`); `None`
    /// if that fails (nothing is left made).
    pub(crate) fn create(parent: &str) -> Option<Pool> {
        let parent = parent.trim_end_matches('/').to_owned();
        let name = format!(".pool-{}", std::process::id());
        let layout = berth_cgroups::Layout::detect().ok()?;
        let mgr = berth_cgroups::Manager::resolve(
            &layout,
            Some(&format!("{parent}/{name}")),
            &name,
            false,
        )
        .ok()?;
        if mgr.paths().v1.is_empty() {
            // Pure cgroup2: nothing that could be renamed.
            return None;
        }
        let pool = Pool {
            parent,
            v1: mgr.paths().v1.values().cloned().collect(),
            unified: mgr.paths().unified.clone(),
        };
        if mgr.create().is_err() {
            pool.remove();
            return None;
        }
        Some(pool)
    }

    /// Give the directories to the container whose cgroup path is `cgroup`, if it is in the
    /// pool's parent; else (or if a rename fails) remove them. Returns the container's
    /// directories made this way (to remove if its create fails before the runtime owns them).
    pub(crate) fn hand_to(self, cgroup: Option<&str>) -> Vec<PathBuf> {
        let name = cgroup
            .and_then(|c| c.trim_end_matches('/').rsplit_once('/'))
            .filter(|(parent, name)| {
                *parent == self.parent && !name.is_empty() && !name.starts_with('.')
            })
            .map(|(_, name)| name.to_owned());
        let Some(name) = name else {
            self.remove();
            return Vec::new();
        };
        let mut renamed: Vec<PathBuf> = Vec::new();
        for d in &self.v1 {
            let target = d.with_file_name(&name);
            if std::fs::rename(d, &target).is_err() {
                for t in &renamed {
                    let _ = std::fs::remove_dir(t);
                }
                self.remove();
                return Vec::new();
            }
            renamed.push(target);
        }
        if let Some(u) = &self.unified {
            let _ = std::fs::remove_dir(u);
        }
        renamed
    }

    /// Remove whichever of the directories still exist.
    pub(crate) fn remove(&self) {
        for d in self.v1.iter().chain(self.unified.iter()) {
            let _ = std::fs::remove_dir(d);
        }
    }
}
