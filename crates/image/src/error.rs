use oci_spec::image::Digest;

/// Errors of the image service. Each names what failed and on what; the CLI prints them as
/// one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] berth_store::Error),
    #[error(transparent)]
    Registry(Box<berth_registry::Error>),
    #[error(transparent)]
    Unpack(#[from] berth_unpack::Error),
    #[error("invalid platform {0:?}: expected os/architecture[/variant], e.g. linux/amd64")]
    InvalidPlatform(String),
    #[error(
        "no manifest for platform {wanted} in the image index (it offers: {offered}); choose one with --platform"
    )]
    NoMatchingPlatform { wanted: String, offered: String },
    #[error(
        "Docker image manifest schema 1 is not supported (deprecated since 2017); re-push the image with a current client to convert it to schema 2 or OCI"
    )]
    Schema1,
    #[error("unsupported media type {0:?}")]
    UnknownMediaType(String),
    #[error("malformed manifest: {0}")]
    BadManifest(String),
    #[error("malformed image config {digest}: {reason}")]
    BadConfig { digest: Digest, reason: String },
    #[error("layer {layer} unpacked to diff ID {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("archive {path}: {reason}")]
    Archive { path: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<berth_registry::Error> for Error {
    fn from(e: berth_registry::Error) -> Self {
        Error::Registry(Box::new(e))
    }
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
