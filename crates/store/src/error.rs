//! The store's error type.

use std::path::PathBuf;

use oci_spec::image::Digest;

/// Everything the store can fail with. Messages name what failed, on what, and what to do;
/// `Display` never repeats the source (the CLI prints the chain once).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("could not {op} {}", path.display())]
    Io {
        /// What we tried to do ("create directory", "read blob", ...).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database {}: could not {op}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// What we tried to do.
        op: &'static str,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// Another process kept the metadata database open for longer than the bounded wait.
    #[error(
        "metadata database {} is busy: another berth process held it for more than {waited_secs}s; retry, or find the stuck process",
        path.display()
    )]
    DbBusy {
        /// The database file.
        path: PathBuf,
        /// How long we waited.
        waited_secs: u64,
    },
    /// A record in the database could not be (de)serialised.
    #[error("metadata record {what} is malformed; run `berth system check`")]
    Record {
        /// Which record.
        what: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Content did not hash to the digest it was expected to have. Nothing was committed.
    #[error("digest mismatch: expected {expected}, got {actual}; the data was discarded")]
    DigestMismatch {
        /// The digest the caller asked for.
        expected: Digest,
        /// The digest of the bytes actually received.
        actual: Digest,
    },
    /// Content did not have the size it was expected to have. Nothing was committed.
    #[error(
        "size mismatch for {what}: expected {expected} bytes, got {actual}; the data was discarded"
    )]
    SizeMismatch {
        /// The ingest key or digest.
        what: String,
        /// Expected size in bytes.
        expected: u64,
        /// Size received.
        actual: u64,
    },
    /// A committed blob no longer hashes to its name.
    #[error(
        "blob {digest} is corrupt: its content hashes to {actual}; run `berth system check --repair` and pull again"
    )]
    Corrupt {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to now.
        actual: Digest,
    },
    /// Only sha256 digests are stored.
    #[error("unsupported digest algorithm in {digest}: only sha256 is supported")]
    UnsupportedDigest {
        /// The offending digest.
        digest: String,
    },
    /// Something that was asked for does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What (e.g. "blob sha256:..", "snapshot default/foo").
        what: String,
    },
    /// Something that was to be created already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What.
        what: String,
    },
    /// An ingest is being written by another writer (this or another process).
    #[error("ingest {key} is being written by another writer; wait for it or retry later")]
    IngestBusy {
        /// The ingest key.
        key: String,
    },
    /// A name (namespace, snapshot key, lease id) is not acceptable.
    #[error("invalid {what} {value:?}: {why}")]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The name.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A snapshot is not in the state the operation needs.
    #[error("snapshot {ns}/{key} is {actual}, but {op} needs a {needed} snapshot")]
    SnapshotState {
        /// Namespace.
        ns: String,
        /// Snapshot key.
        key: String,
        /// Its kind.
        actual: &'static str,
        /// What the operation needs.
        needed: &'static str,
        /// The operation.
        op: &'static str,
    },
    /// A snapshot cannot be removed because other snapshots are built on it.
    #[error("snapshot {ns}/{key} has children ({}); remove them first", children.join(", "))]
    HasChildren {
        /// Namespace.
        ns: String,
        /// Snapshot key.
        key: String,
        /// Its children's keys.
        children: Vec<String>,
    },
    /// The operation is not available with this store's snapshotter or on this host.
    #[error("{what}")]
    Unsupported {
        /// What is not supported, and what to do instead.
        what: String,
    },
    /// A mount or unmount failed.
    #[error("could not {op} {} ({detail})", target.display())]
    Mount {
        /// "mount" or "unmount".
        op: &'static str,
        /// Where.
        target: PathBuf,
        /// Which mount (type, source, the failing option).
        detail: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// Whether this is a [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether this is a [`Error::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }
}
