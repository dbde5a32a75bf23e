//! An OCI distribution-spec client: image references with Docker's normalisation, credentials
//! from docker-compatible `config.json` files, basic and bearer-token authentication, pulls
//! (manifests verified against their digest, blobs streamed with retries and `Range` resume)
//! and pushes (existence checks, cross-repository mounts, monolithic and chunked uploads,
//! manifests).
//!
//! The client moves bytes and knows nothing of image formats beyond the media types a caller
//! asks for: selecting a platform or parsing a manifest is `berth-image`'s business.

pub mod auth;
mod blob;
mod client;
mod error;
pub mod media_types;
mod reference;
mod tls;

pub use blob::BlobStream;
pub use client::{Client, Config, Manifest};
pub use error::Error;
pub use oci_spec::image::Digest;
pub use reference::{DEFAULT_TAG, DOCKER_HUB, Reference};

/// The SHA-256 digest (`sha256:<hex>`) of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    digest_from_hasher(sha2::Sha256::new_with_prefix(bytes))
}

/// Finish a SHA-256 hasher into a [`Digest`].
pub(crate) fn digest_from_hasher(h: sha2::Sha256) -> Digest {
    use sha2::Digest as _;
    let s = format!("sha256:{}", hex::encode(h.finalize()));
    // A SHA-256 hex string always parses.
    s.parse()
        .unwrap_or_else(|_| unreachable!("sha256 digest {s} must parse"))
}
