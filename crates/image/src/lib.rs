//! Berth's image service: the operations `berth pull/push/images/rmi/tag/save/load/import` and
//! the engine perform on images, on top of the store (`berth-store`), the registry client
//! (`berth-registry`) and the layer unpacker (`berth-unpack`).
//!
//! The service is a plain library value, cheap to clone, holding an open [`Store`], a registry
//! [`Client`](berth_registry::Client) and the namespace it works in. The CLI calls it directly
//! today; the daemon will own one and expose the same methods over gRPC, so nothing here prints
//! or reads a terminal: progress goes out through a callback.
//!
//! Invariants: an image record is written last, after every blob it reaches is committed
//! (verified against its digest) and every layer snapshot is committed; work in progress is
//! held by a lease so a concurrent garbage collection cannot take it.

// Errors carry the digests their messages name (a mismatch names three); they are returned once
// per failed operation, never in a loop, so their size costs nothing measurable.
#![allow(clippy::result_large_err)]

mod archive;
mod error;
pub mod format;
mod images;
mod pull;
mod push;
mod unpack;

use std::path::Path;
use std::sync::Arc;

use berth_store::Store;
use oci_spec::image::Digest;

pub use archive::Loaded;
pub use error::{Error, Result};
pub use images::{ImageSummary, PruneReport};
pub use pull::Pulled;

/// Progress of a pull or push, for progress bars.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The reference (a tag, else the digest) of `repository` resolved to `digest`.
    Resolved {
        repository: String,
        reference: String,
        digest: Digest,
    },
    /// A layer is queued for download.
    LayerWaiting { layer: Digest, size: u64 },
    /// Bytes of a layer received (and unpacked as they arrive).
    LayerBytes {
        layer: Digest,
        done: u64,
        total: u64,
    },
    /// A layer was already present.
    LayerExists { layer: Digest },
    /// A layer is downloaded, verified and its snapshot committed.
    LayerDone { layer: Digest },
    /// A blob was pushed (or found, or mounted) at the destination.
    BlobPushed { digest: Digest, how: &'static str },
    /// The image is recorded.
    Done { name: String, digest: Digest },
}

/// The progress callback type.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// The image service for one store and namespace.
#[derive(Clone)]
pub struct ImageService {
    store: Arc<Store>,
    client: berth_registry::Client,
    namespace: String,
    progress: Option<ProgressFn>,
}

impl ImageService {
    /// Open the store at `root` for `namespace` with a registry client configured by `config`.
    /// `snapshotter` chooses overlayfs or copying snapshots for a new store; an existing store
    /// keeps the kind it was created with (`Auto`), and asking for the other one is an error.
    pub fn open(
        root: &Path,
        namespace: &str,
        config: berth_registry::Config,
        snapshotter: berth_store::SnapshotterKind,
    ) -> Result<Self> {
        let store = Arc::new(Store::open_with(root, snapshotter)?);
        Ok(ImageService {
            store,
            client: berth_registry::Client::new(config)?,
            namespace: namespace.to_owned(),
            progress: None,
        })
    }

    /// Build the service around an already open store.
    pub fn with_store(store: Arc<Store>, namespace: &str, client: berth_registry::Client) -> Self {
        ImageService {
            store,
            client,
            namespace: namespace.to_owned(),
            progress: None,
        }
    }

    /// Report progress to `f`.
    #[must_use]
    pub fn with_progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }

    /// The store underneath (for `system check` and the engine).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The registry client (for `login`).
    pub fn client(&self) -> &berth_registry::Client {
        &self.client
    }

    fn emit(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }
}

/// Docker's short form of a full image name (`docker.io/library/busybox:latest` -> `busybox:latest`).
pub fn familiar_name(name: &str) -> String {
    let (repo, tag) = images::familiar_parts(name);
    if tag == "<none>" {
        repo
    } else {
        format!("{repo}:{tag}")
    }
}
