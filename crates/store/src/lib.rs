//! Berth's image store: a content-addressed blob store, a redb metadata database, an overlayfs
//! snapshotter with a native (copying) fallback, garbage collection and a store check.
//!
//! Layout under the root (`/var/lib/berth` by default):
//!
//! ```text
//! content/blobs/sha256/<hex>          committed blobs (0700 dirs)
//! content/ingest/<sha256(key)>/       ingests in progress or left by killed pulls
//! meta.redb                           metadata (see [`MetaDb`])
//! snapshots/<id>/fs                   a snapshot's tree (overlay: its diff; native: full copy)
//! snapshots/<id>/work                 overlayfs work dir (overlay only)
//! snapshots/tmp-<pid>-<start>-<n>     native copies and overlay probes in progress
//! ```

mod content;
mod error;
mod gc;
mod meta;
mod snapshot;
mod util;

mod copy;

use std::path::{Path, PathBuf};

pub use content::{BlobWriter, ContentStore};
pub use error::Error;
pub use gc::{CheckReport, EXTRACT_PREFIX, GcReport, INGEST_MAX_AGE, Problem, ProblemKind};
pub use meta::{
    BUSY_WAIT, Descriptor, ImageRecord, LINGER, Lease, LeaseOptions, LeaseResource, MAX_HOLD,
    MetaDb, hold_open,
};
pub use oci_spec::image::Digest;
pub use snapshot::{Kind, Mount, SnapshotInfo, Snapshotter, SnapshotterKind, mount, unmount};
pub use util::Owner;

/// Copy the contents of `src` into the existing directory `dst`, keeping owners, modes,
/// extended attributes, symlinks, device nodes, hard links (within the tree) and timestamps,
/// and give `dst` the attributes of `src` (the engine's volume copy-up).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), Error> {
    copy::copy_tree(src, dst)
}

/// Disk usage of a tree: (bytes allocated, inodes), hard links counted once.
pub fn disk_usage(dir: &Path) -> Result<(u64, u64), Error> {
    copy::usage(dir)
}

/// The store: blobs, metadata and snapshots under one root.
#[derive(Debug)]
pub struct Store {
    /// Blobs.
    pub content: ContentStore,
    /// Metadata.
    pub meta: MetaDb,
    /// Snapshots.
    pub snapshots: Snapshotter,
    root: PathBuf,
}

impl Store {
    /// Open (create) the store at `root` with the snapshotter it was created with, or, for a new
    /// store, overlay if this host can mount overlayfs there and native otherwise.
    pub fn open(root: &Path) -> Result<Store, Error> {
        Store::open_with(root, SnapshotterKind::Auto)
    }

    /// Open the store forcing a snapshotter. A store keeps the snapshotter it was created with
    /// (the on-disk trees differ); asking for the other one fails with [`Error::Unsupported`].
    pub fn open_with(root: &Path, kind: SnapshotterKind) -> Result<Store, Error> {
        util::mkdir_all(root, 0o711)?;
        let content = ContentStore::new(root)?;
        let meta = MetaDb::open(&root.join("meta.redb"))?;
        let snapshots = Snapshotter::open(root, meta.clone(), kind)?;
        Ok(Store {
            content,
            meta,
            snapshots,
            root: root.to_path_buf(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests;
