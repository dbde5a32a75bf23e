//! Berth's engine API (`berth.v1`): the protobuf messages and tonic services berthd serves on a
//! unix socket, and the transport both sides use.
//!
//! The protos live in `proto/berth/v1/` and are the contract: fields are only ever added within
//! v1. Every call carries its namespace in the request metadata key [`NAMESPACE_KEY`].

/// Generated code for `berth.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("berth.v1");
}

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Request metadata key naming the namespace a call works in.
pub const NAMESPACE_KEY: &str = "berth-namespace";
/// The namespace used when a request names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The API version berthd reports and the client expects.
pub const API_VERSION: &str = "1";

/// Connect to berthd's unix socket. Fails fast (no retry) when nothing listens there.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector below always dials the socket.
    Endpoint::from_static("http://berthd.sock")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

/// Put `namespace` into a request's metadata.
pub fn with_namespace<T>(mut req: tonic::Request<T>, namespace: &str) -> tonic::Request<T> {
    if let Ok(v) = namespace.parse() {
        req.metadata_mut().insert(NAMESPACE_KEY, v);
    }
    req
}

/// The namespace a request names, or the default one.
pub fn namespace_of<T>(req: &tonic::Request<T>) -> &str {
    req.metadata()
        .get(NAMESPACE_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}
