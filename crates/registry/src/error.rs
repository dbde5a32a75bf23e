use oci_spec::image::Digest;

/// What went wrong, on what, and (where there is something to do) what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A reference that does not parse; `part` names the offending component.
    #[error("invalid reference {input:?}: {part}")]
    InvalidReference {
        /// The text given.
        input: String,
        /// What is wrong with which part of it.
        part: String,
    },
    /// The registry has no such manifest, blob or repository.
    #[error("{what} not found")]
    NotFound {
        /// What was asked for, e.g. `manifest docker.io/library/busybox:nope`.
        what: String,
    },
    /// Authentication failed or was refused.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The registry (or token service) that refused.
        registry: String,
        /// What failed and what the user can do (e.g. `berth login`).
        message: String,
    },
    /// Content did not match its digest.
    #[error(
        "digest mismatch: expected {expected}, got {actual}; the registry (or something between) served corrupt or different content"
    )]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A Docker schema 1 manifest, which Berth does not support.
    #[error(
        "{what} is a Docker image manifest schema 1 ({media_type}), which is deprecated and not supported; re-push the image with a current Docker, Podman, Buildah or skopeo to convert it to schema 2 / OCI"
    )]
    Schema1 {
        /// The manifest's reference.
        what: String,
        /// Its media type.
        media_type: String,
    },
    /// The registry answered with a status the operation does not expect.
    #[error("{what}: registry answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// The operation and its URL.
        what: String,
        /// HTTP status code.
        status: u16,
        /// The (truncated) error body, usually the distribution spec's error JSON.
        body: String,
    },
    /// The connection failed (after retries, when the operation retries). The message ends
    /// with the innermost cause (`Connection refused`, a DNS or TLS failure), which reqwest's
    /// own message leaves out.
    #[error("{what}: {}", root_cause(source))]
    Network {
        /// The operation and its URL.
        what: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A blob download broke off and could not be resumed.
    #[error(
        "download of blob {digest} from {repository} stopped after {received} of {} bytes, {attempts} attempts: {reason}; run the pull again to resume",
        total.map_or_else(|| "?".to_string(), |t| t.to_string())
    )]
    Incomplete {
        /// The repository (`registry/name`).
        repository: String,
        /// The blob.
        digest: Digest,
        /// Bytes delivered to the caller, counting the caller's starting offset.
        received: u64,
        /// The blob's size, when the registry said.
        total: Option<u64>,
        /// How many requests were made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// A response that violates the protocol (bad header, too-large manifest, ...).
    #[error("{what}: {reason}")]
    Protocol {
        /// The operation.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A credentials file that cannot be parsed.
    #[error("credentials file {}: {reason}; fix or remove it", path.display())]
    AuthFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The client could not be built (TLS roots, bad configuration).
    #[error("registry client configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The innermost error of a chain: what actually went wrong (reqwest's outer message only says
/// "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
