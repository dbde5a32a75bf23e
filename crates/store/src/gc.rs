//! Garbage collection and the store check.
//!
//! # Garbage collection
//!
//! Reachability, containerd-style. Roots: every image record of every namespace (its target
//! blob), every Active or View snapshot (containers' layers) except unpack scratch snapshots
//! named `extract-*`, and every resource of a live lease (not expired, and its process still
//! running when it is bound to one). From blobs, `set_children` edges lead to blobs and
//! `set_snapshot_ref` edges to snapshots (same namespace); from snapshots, parent links. Swept:
//! unreachable blobs, snapshots and their directories, dead leases, directories without records,
//! temporary directories of dead processes, and ingests no live writer holds that were not written
//! for [`INGEST_MAX_AGE`] (a killed pull's partial download stays resumable that long).
//!
//! GC holds the metadata database for its whole run (one write transaction), so no other writer
//! (thread or process) can add a reference meanwhile. That is why the pull contract (see
//! [`crate::MetaDb::create_lease`]) asks for `lease_add` **before** a blob is written or checked
//! and before a snapshot is prepared: whichever of GC and the pull goes first, the pull never
//! relies on something GC deletes.
//!
//! # Check
//!
//! Re-hashes every blob (without holding the database), then, holding it, compares records and
//! disk. Findings are [`Problem`]s; "leftovers" ([`ProblemKind::is_leftover`]) are the expected
//! debris of interrupted operations (partial ingests, unpack snapshots and leases of killed
//! pulls) and do not make a store inconsistent. With `repair`: corrupt blobs are deleted,
//! snapshot records without a directory or with a broken parent chain are deleted with their
//! descendants, directories without records and leftovers are removed, and the id counter is
//! fixed. Image records are **never** deleted: an image whose content is missing or corrupt is
//! reported (pull it again to restore the content, or remove it), because deleting it silently
//! would lose the user's reference. Relation edges are kept too, so a later GC does not sweep
//! the rest of such an image's content before it is pulled again.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::meta::{
    CHILDREN, IMAGES, LEASES, SETTINGS, SNAPSHOT_REFS, SNAPSHOTS, SnapRecord, nskey, split_nskey,
};
use crate::util::{Owner, now_nanos, remove_tree};
use crate::{Error, ImageRecord, Kind, Lease, LeaseResource, Store};

/// Ingests not written for this long and not held by a live writer are removed by GC.
pub const INGEST_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// The check leaves ingests written in the last minute alone even with `repair` (a writer may be
/// about to lock it).
const INGEST_GRACE: Duration = Duration::from_secs(60);

/// Prefix of the unpack scratch snapshots, which only leases keep alive.
pub const EXTRACT_PREFIX: &str = "extract-";

/// What a garbage collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: u64,
    /// Snapshots deleted (records and directories).
    pub snapshots_removed: u64,
    /// Expired or orphaned leases deleted.
    pub leases_removed: u64,
    /// Stale ingests deleted.
    pub ingests_removed: u64,
    /// Directories without records and temporary directories of dead processes deleted.
    pub dirs_removed: u64,
    /// Bytes freed (blobs, ingests and snapshot trees, allocated size).
    pub bytes_freed: u64,
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "removed {} blobs, {} snapshots, {} leases, {} ingests, {} stray directories; {} bytes freed",
            self.blobs_removed,
            self.snapshots_removed,
            self.leases_removed,
            self.ingests_removed,
            self.dirs_removed,
            self.bytes_freed
        )
    }
}

/// What kind of problem the check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A blob's content no longer matches its digest.
    CorruptBlob,
    /// An image references a blob that is not in the store.
    MissingBlob,
    /// An image's unpacked snapshot (its config's snapshot ref) does not exist.
    MissingSnapshot,
    /// A snapshot record whose directory is gone.
    SnapshotWithoutDir,
    /// A snapshot whose parent is missing or not committed (or descends from such a snapshot).
    BrokenParent,
    /// Two snapshot records share a directory.
    DuplicateId,
    /// The snapshot id counter is behind the ids in use.
    IdCounter,
    /// A snapshot directory without a record, or an unexpected entry under `snapshots/`.
    StrayDir,
    /// Leftover: a partial download no live writer holds.
    LeftoverIngest,
    /// Leftover: an unpack scratch snapshot (`extract-*`) no live lease protects.
    LeftoverSnapshot,
    /// Leftover: an expired lease, or one whose process is gone.
    LeftoverLease,
    /// Leftover: a temporary directory of a process that is gone.
    LeftoverTemp,
}

impl ProblemKind {
    /// Debris of an interrupted operation (a killed pull): harmless, removed by GC or repair, and
    /// not an inconsistency.
    pub fn is_leftover(&self) -> bool {
        matches!(
            self,
            ProblemKind::LeftoverIngest
                | ProblemKind::LeftoverSnapshot
                | ProblemKind::LeftoverLease
                | ProblemKind::LeftoverTemp
        )
    }

    fn label(&self) -> &'static str {
        match self {
            ProblemKind::CorruptBlob => "corrupt blob",
            ProblemKind::MissingBlob => "missing blob",
            ProblemKind::MissingSnapshot => "missing snapshot",
            ProblemKind::SnapshotWithoutDir => "snapshot without directory",
            ProblemKind::BrokenParent => "broken snapshot chain",
            ProblemKind::DuplicateId => "duplicate snapshot id",
            ProblemKind::IdCounter => "snapshot id counter",
            ProblemKind::StrayDir => "stray directory",
            ProblemKind::LeftoverIngest => "leftover ingest",
            ProblemKind::LeftoverSnapshot => "leftover unpack snapshot",
            ProblemKind::LeftoverLease => "leftover lease",
            ProblemKind::LeftoverTemp => "leftover temporary directory",
        }
    }
}

/// One finding of the store check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Its kind.
    pub kind: ProblemKind,
    /// What exactly, and what to do if it is not repaired.
    pub detail: String,
    /// Whether the check repaired it.
    pub repaired: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.detail)?;
        if self.repaired {
            f.write_str(" (repaired)")?;
        }
        Ok(())
    }
}

/// The store check's findings. `Display` prints one line per problem and a summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Blobs re-hashed.
    pub blobs_checked: u64,
    /// Snapshot records checked.
    pub snapshots_checked: u64,
    /// Findings.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// The store is consistent: no problem other than leftovers of interrupted operations
    /// (whether or not they were repaired).
    pub fn is_clean(&self) -> bool {
        self.problems.iter().all(|p| p.kind.is_leftover())
    }

    /// Problems (leftovers included) that were not repaired.
    pub fn unrepaired(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.repaired)
    }

    /// One line per problem, for a CLI.
    pub fn lines(&self) -> Vec<String> {
        self.problems.iter().map(ToString::to_string).collect()
    }

    fn add(&mut self, kind: ProblemKind, detail: String, repaired: bool) {
        self.problems.push(Problem {
            kind,
            detail,
            repaired,
        });
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        let leftovers = self
            .problems
            .iter()
            .filter(|p| p.kind.is_leftover())
            .count();
        let repaired = self.problems.iter().filter(|p| p.repaired).count();
        write!(
            f,
            "checked {} blobs and {} snapshots: {} inconsistencies, {} leftovers, {} repaired",
            self.blobs_checked,
            self.snapshots_checked,
            self.problems.len() - leftovers,
            leftovers,
            repaired
        )
    }
}

/// Everything GC and check read, loaded inside their write transaction.
struct State {
    images: Vec<(String, ImageRecord)>,
    children: HashMap<String, Vec<String>>,
    refs: HashMap<String, String>,
    snaps: Vec<(String, SnapRecord)>,
    leases: Vec<(String, Lease)>,
}

impl Store {
    fn load(&self, tx: &redb::WriteTransaction) -> Result<State, Error> {
        let m = &self.meta;
        let open = |def| tx.open_table(def).map_err(m.e("open table"));
        let images = m.scan_json::<ImageRecord>(&open(IMAGES)?, None)?;
        let children = m
            .scan_json::<Vec<String>>(&open(CHILDREN)?, None)?
            .into_iter()
            .collect();
        let refs = m
            .scan_json::<String>(&open(SNAPSHOT_REFS)?, None)?
            .into_iter()
            .collect();
        let snaps = m.scan_json::<SnapRecord>(&open(SNAPSHOTS)?, None)?;
        let leases = m.scan_json::<Lease>(&open(LEASES)?, None)?;
        Ok(State {
            images,
            children,
            refs,
            snaps,
            leases,
        })
    }

    /// Collect garbage (see the module documentation of what is kept). Safe to run while other
    /// processes pull, as long as they follow the lease contract.
    pub fn gc(&self) -> Result<GcReport, Error> {
        let db = self.meta.handle()?; // held until the end: no other process gets in meanwhile
        let mut report = GcReport::default();
        let mut doomed_dirs: Vec<(PathBuf, bool)> = Vec::new();
        let now = now_nanos();
        self.meta.write_on(&db, "collect garbage", |tx| {
            let st = self.load(tx)?;
            let m = &self.meta;

            // Leases.
            let mut live_leases = Vec::new();
            {
                let mut t = tx.open_table(LEASES).map_err(m.e("open leases"))?;
                for (k, l) in &st.leases {
                    if l.is_live(now) {
                        live_leases.push((split_nskey(k).0, l));
                    } else {
                        t.remove(k.as_str()).map_err(m.e("delete lease"))?;
                        report.leases_removed += 1;
                    }
                }
            }

            // Mark.
            let mut snap_marked: HashSet<String> = HashSet::new();
            let mut queue: Vec<(String, String)> = Vec::new();
            for (k, img) in &st.images {
                queue.push((split_nskey(k).0.to_string(), img.target.digest.to_string()));
            }
            for (ns, l) in &live_leases {
                for r in &l.resources {
                    match r {
                        LeaseResource::Content(d) => queue.push((ns.to_string(), d.to_string())),
                        LeaseResource::Snapshot(s) => {
                            snap_marked.insert(nskey(ns, s));
                        }
                    }
                }
            }
            for (k, r) in &st.snaps {
                if r.kind != Kind::Committed && !split_nskey(k).1.starts_with(EXTRACT_PREFIX) {
                    snap_marked.insert(k.clone());
                }
            }
            let mut seen: HashSet<(String, String)> = HashSet::new();
            let mut blobs_marked: HashSet<String> = HashSet::new();
            while let Some((ns, d)) = queue.pop() {
                if !seen.insert((ns.clone(), d.clone())) {
                    continue;
                }
                blobs_marked.insert(d.clone());
                if let Some(cs) = st.children.get(&d) {
                    queue.extend(cs.iter().map(|c| (ns.clone(), c.clone())));
                }
                if let Some(s) = st.refs.get(&nskey(&ns, &d)) {
                    snap_marked.insert(nskey(&ns, s));
                }
            }
            let by_key: HashMap<&str, &SnapRecord> =
                st.snaps.iter().map(|(k, r)| (k.as_str(), r)).collect();
            let mut stack: Vec<String> = snap_marked.iter().cloned().collect();
            while let Some(k) = stack.pop() {
                if let Some(p) = by_key.get(k.as_str()).and_then(|r| r.parent.as_deref()) {
                    let pk = nskey(split_nskey(&k).0, p);
                    if snap_marked.insert(pk.clone()) {
                        stack.push(pk);
                    }
                }
            }

            // Sweep snapshots (records now, directories after the commit).
            let mut kept_ids = HashSet::new();
            {
                let mut t = tx.open_table(SNAPSHOTS).map_err(m.e("open snapshots"))?;
                for (k, r) in &st.snaps {
                    if snap_marked.contains(k) {
                        kept_ids.insert(r.id);
                    } else {
                        t.remove(k.as_str()).map_err(m.e("delete snapshot"))?;
                        report.snapshots_removed += 1;
                        doomed_dirs.push((self.snapshots.id_dir(r.id), false));
                    }
                }
            }

            // Sweep blobs, and the edges that start at them.
            {
                let mut children = tx.open_table(CHILDREN).map_err(m.e("open children"))?;
                let mut refs = tx
                    .open_table(SNAPSHOT_REFS)
                    .map_err(m.e("open snapshot refs"))?;
                let ref_keys: HashMap<&str, Vec<&str>> =
                    st.refs.keys().fold(HashMap::new(), |mut acc, k| {
                        acc.entry(split_nskey(k).1).or_default().push(k.as_str());
                        acc
                    });
                for (d, size) in self.content.list()? {
                    let ds = d.to_string();
                    if blobs_marked.contains(&ds) {
                        continue;
                    }
                    match self.content.delete(&d) {
                        Ok(()) => {
                            report.blobs_removed += 1;
                            report.bytes_freed += size;
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                    children
                        .remove(ds.as_str())
                        .map_err(m.e("delete children"))?;
                    for k in ref_keys.get(ds.as_str()).into_iter().flatten() {
                        refs.remove(*k).map_err(m.e("delete snapshot ref"))?;
                    }
                }
                // Edges of blobs that are long gone.
                for k in st.children.keys() {
                    if !blobs_marked.contains(k)
                        && self.content.size(&crate::content::sha256_or(k))?.is_none()
                    {
                        children
                            .remove(k.as_str())
                            .map_err(m.e("delete children"))?;
                    }
                }
            }

            // Stray and temporary directories.
            let all_ids: HashSet<u64> = st.snaps.iter().map(|(_, r)| r.id).collect();
            for (path, why) in self.stray_entries(&all_ids)? {
                if why != Stray::Unknown {
                    doomed_dirs.push((path, true));
                }
            }

            // Ingests.
            let cutoff = SystemTime::now()
                .checked_sub(INGEST_MAX_AGE)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            for ing in self.content.ingests()? {
                if !ing.busy && ing.modified < cutoff {
                    self.content.remove_ingest(&ing.path)?;
                    report.ingests_removed += 1;
                    report.bytes_freed += ing.size;
                }
            }
            Ok(())
        })?;
        for (dir, stray) in doomed_dirs {
            report.bytes_freed += crate::copy::usage(&dir).map(|(b, _)| b).unwrap_or(0);
            remove_tree(&dir)?;
            if stray {
                report.dirs_removed += 1;
            }
        }
        drop(db);
        Ok(report)
    }

    /// Entries of `snapshots/` that are not the directory of a record.
    fn stray_entries(&self, ids: &HashSet<u64>) -> Result<Vec<(PathBuf, Stray)>, Error> {
        let dir = self.snapshots.dir();
        let mut out = Vec::new();
        for e in fs::read_dir(dir).map_err(Error::io("list", dir))? {
            let e = e.map_err(Error::io("list", dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(id) = name.parse::<u64>() {
                if !ids.contains(&id) {
                    out.push((e.path(), Stray::NoRecord));
                }
            } else if let Some(rest) = name.strip_prefix("tmp-") {
                match Owner::from_tag(rest) {
                    Some(o) if o.is_alive() => {}
                    _ => out.push((e.path(), Stray::DeadTemp)),
                }
            } else {
                out.push((e.path(), Stray::Unknown));
            }
        }
        Ok(out)
    }

    /// Check the store (see the module documentation); with `repair`, fix what can be fixed.
    pub fn check(&self, repair: bool) -> Result<CheckReport, Error> {
        let mut report = CheckReport::default();

        // 1. Re-hash every blob, without holding the database.
        let mut bad: HashSet<String> = HashSet::new();
        for (d, _) in self.content.list()? {
            match self.content.verify(&d) {
                Ok(()) => report.blobs_checked += 1,
                Err(Error::Corrupt { actual, .. }) => {
                    report.blobs_checked += 1;
                    let fixed = repair && self.content.delete(&d).is_ok();
                    report.add(
                        ProblemKind::CorruptBlob,
                        format!(
                            "{d} hashes to {actual}{}",
                            if fixed {
                                "; deleted"
                            } else {
                                "; run with repair to delete it, then pull again"
                            }
                        ),
                        fixed,
                    );
                    bad.insert(d.to_string());
                }
                Err(e) if e.is_not_found() => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }

        // 2. Records against disk, holding the database.
        let db = self.meta.handle()?;
        let now = now_nanos();
        let mut doomed_dirs = Vec::new();
        self.meta.write_on(&db, "check store", |tx| {
            let st = self.load(tx)?;
            let m = &self.meta;
            let present: HashSet<String> = self
                .content
                .list()?
                .into_iter()
                .map(|(d, _)| d.to_string())
                .filter(|d| !bad.contains(d))
                .collect();
            let snap_keys: HashSet<&str> = st.snaps.iter().map(|(k, _)| k.as_str()).collect();

            // Images: every reachable blob present, the unpacked snapshot present.
            for (k, img) in &st.images {
                let (ns, name) = split_nskey(k);
                let mut missing = Vec::new();
                let mut missing_snaps = Vec::new();
                let mut seen = HashSet::new();
                let mut queue = vec![img.target.digest.to_string()];
                while let Some(d) = queue.pop() {
                    if !seen.insert(d.clone()) {
                        continue;
                    }
                    if !present.contains(&d) {
                        missing.push(if bad.contains(&d) {
                            format!("{d} (corrupt)")
                        } else {
                            d.clone()
                        });
                    }
                    if let Some(cs) = st.children.get(&d) {
                        queue.extend(cs.iter().cloned());
                    }
                    if let Some(s) = st.refs.get(&nskey(ns, &d)) {
                        if !snap_keys.contains(nskey(ns, s).as_str()) {
                            missing_snaps.push(s.clone());
                        }
                    }
                }
                if !missing.is_empty() {
                    report.add(
                        ProblemKind::MissingBlob,
                        format!(
                            "image {ns}/{name} lacks {}; pull it again or remove it",
                            missing.join(", ")
                        ),
                        false,
                    );
                }
                if !missing_snaps.is_empty() {
                    report.add(
                        ProblemKind::MissingSnapshot,
                        format!(
                            "image {ns}/{name} lacks snapshot {}; pull it again to unpack it",
                            missing_snaps.join(", ")
                        ),
                        false,
                    );
                }
            }

            // Snapshots: directory present, parent chain intact, ids unique.
            report.snapshots_checked = st.snaps.len() as u64;
            let by_key: HashMap<&str, &SnapRecord> =
                st.snaps.iter().map(|(k, r)| (k.as_str(), r)).collect();
            let mut broken: Vec<(String, ProblemKind, String)> = Vec::new();
            let mut id_owner: HashMap<u64, &str> = HashMap::new();
            let mut max_id = 0;
            for (k, r) in &st.snaps {
                max_id = max_id.max(r.id);
                if let Some(other) = id_owner.insert(r.id, k) {
                    report.add(
                        ProblemKind::DuplicateId,
                        format!(
                            "snapshots {} and {} share directory {}; remove one of them",
                            other.replace('\0', "/"),
                            k.replace('\0', "/"),
                            r.id
                        ),
                        false,
                    );
                }
                let fs_dir = self.snapshots.id_dir(r.id).join("fs");
                if !fs_dir.is_dir() {
                    broken.push((
                        k.clone(),
                        ProblemKind::SnapshotWithoutDir,
                        format!("{} has no {}", k.replace('\0', "/"), fs_dir.display()),
                    ));
                    continue;
                }
                if let Some(p) = &r.parent {
                    let pk = nskey(split_nskey(k).0, p);
                    match by_key.get(pk.as_str()) {
                        None => broken.push((
                            k.clone(),
                            ProblemKind::BrokenParent,
                            format!("{}: parent {p} does not exist", k.replace('\0', "/")),
                        )),
                        Some(pr) if pr.kind != Kind::Committed => broken.push((
                            k.clone(),
                            ProblemKind::BrokenParent,
                            format!(
                                "{}: parent {p} is {}, not committed",
                                k.replace('\0', "/"),
                                pr.kind
                            ),
                        )),
                        Some(_) => {}
                    }
                }
            }
            // Descendants of broken snapshots are broken too.
            let mut doomed: HashSet<String> = broken.iter().map(|(k, _, _)| k.clone()).collect();
            loop {
                let mut grew = false;
                for (k, r) in &st.snaps {
                    if doomed.contains(k) {
                        continue;
                    }
                    if let Some(p) = &r.parent {
                        if doomed.contains(&nskey(split_nskey(k).0, p)) {
                            doomed.insert(k.clone());
                            broken.push((
                                k.clone(),
                                ProblemKind::BrokenParent,
                                format!("{} is built on a broken snapshot", k.replace('\0', "/")),
                            ));
                            grew = true;
                        }
                    }
                }
                if !grew {
                    break;
                }
            }
            {
                let mut t = tx.open_table(SNAPSHOTS).map_err(m.e("open snapshots"))?;
                for (k, kind, detail) in broken {
                    if repair {
                        t.remove(k.as_str()).map_err(m.e("delete snapshot"))?;
                        if let Some(r) = by_key.get(k.as_str()) {
                            doomed_dirs.push(self.snapshots.id_dir(r.id));
                        }
                    }
                    let detail = if repair {
                        format!("{detail}; record removed")
                    } else {
                        format!("{detail}; run with repair to remove it (and pull again)")
                    };
                    report.add(kind, detail, repair);
                }

                // Unpack scratch snapshots of dead pulls.
                let mut leased: HashSet<String> = HashSet::new();
                for (k, l) in &st.leases {
                    if l.is_live(now) {
                        for r in &l.resources {
                            if let LeaseResource::Snapshot(s) = r {
                                leased.insert(nskey(split_nskey(k).0, s));
                            }
                        }
                    }
                }
                for (k, r) in &st.snaps {
                    if doomed.contains(k)
                        || r.kind != Kind::Active
                        || !split_nskey(k).1.starts_with(EXTRACT_PREFIX)
                        || leased.contains(k)
                    {
                        continue;
                    }
                    let has_children = st.snaps.iter().any(|(ck, cr)| {
                        split_nskey(ck).0 == split_nskey(k).0
                            && cr.parent.as_deref() == Some(split_nskey(k).1)
                    });
                    let fix = repair && !has_children;
                    if fix {
                        t.remove(k.as_str()).map_err(m.e("delete snapshot"))?;
                        doomed_dirs.push(self.snapshots.id_dir(r.id));
                    }
                    report.add(
                        ProblemKind::LeftoverSnapshot,
                        format!("{} (no live lease)", k.replace('\0', "/")),
                        fix,
                    );
                }
            }

            // Id counter.
            {
                let mut s = tx.open_table(SETTINGS).map_err(m.e("open settings"))?;
                let next: u64 = m.get_json(&s, "next_snapshot_id")?.unwrap_or(1);
                if !st.snaps.is_empty() && next <= max_id {
                    if repair {
                        m.put_json(&mut s, "next_snapshot_id", &(max_id + 1))?;
                    }
                    report.add(
                        ProblemKind::IdCounter,
                        format!("next id {next} is not above the highest id in use {max_id}"),
                        repair,
                    );
                }
            }

            // Leases.
            {
                let mut t = tx.open_table(LEASES).map_err(m.e("open leases"))?;
                for (k, l) in &st.leases {
                    if l.is_live(now) {
                        continue;
                    }
                    if repair {
                        t.remove(k.as_str()).map_err(m.e("delete lease"))?;
                    }
                    let why = if l.expires.is_some_and(|e| e <= now) {
                        "expired"
                    } else {
                        "its process is gone"
                    };
                    report.add(
                        ProblemKind::LeftoverLease,
                        format!("{} ({why})", k.replace('\0', "/")),
                        repair,
                    );
                }
            }

            // Directories.
            let all_ids: HashSet<u64> = st.snaps.iter().map(|(_, r)| r.id).collect();
            for (path, why) in self.stray_entries(&all_ids)? {
                match why {
                    Stray::NoRecord => {
                        report.add(
                            ProblemKind::StrayDir,
                            format!("{} has no snapshot record", path.display()),
                            repair,
                        );
                        if repair {
                            doomed_dirs.push(path);
                        }
                    }
                    Stray::DeadTemp => {
                        report.add(
                            ProblemKind::LeftoverTemp,
                            format!("{}", path.display()),
                            repair,
                        );
                        if repair {
                            doomed_dirs.push(path);
                        }
                    }
                    Stray::Unknown => report.add(
                        ProblemKind::StrayDir,
                        format!(
                            "{} is not something the store creates; move it away",
                            path.display()
                        ),
                        false,
                    ),
                }
            }

            // Ingests.
            let grace = SystemTime::now()
                .checked_sub(INGEST_GRACE)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            for ing in self.content.ingests()? {
                if ing.busy {
                    continue;
                }
                let fix = repair && ing.modified < grace;
                if fix {
                    self.content.remove_ingest(&ing.path)?;
                }
                let what = match &ing.key {
                    Some(k) => format!("{k} ({} bytes)", ing.size),
                    None => format!("{}", ing.path.display()),
                };
                report.add(ProblemKind::LeftoverIngest, what, fix);
            }
            Ok(())
        })?;
        for dir in doomed_dirs {
            remove_tree(&dir)?;
        }
        drop(db);
        Ok(report)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stray {
    NoRecord,
    DeadTemp,
    Unknown,
}
