//! Streaming, safe-by-construction application of OCI image layers.
//!
//! [`apply_layer`] reads a (gzip-, zstd- or un-compressed) layer tarball once, front to back:
//! a helper thread inflates it, a second hashes the uncompressed stream (the layer's `diff_id`)
//! so that inflating, the critical path of a large layer, runs alone; the caller's thread
//! parses the tar headers and creates the entries on disk. They are joined by bounded channels
//! of six recycled 256 KiB buffers, so memory stays small (a few MiB resident in all) whatever
//! the layer's size, and each small file costs one `openat`, one
//! `pwrite`, one `futimens` and one `close`; the parent directory's fd is cached from one entry
//! to the next. Nothing is fsynced: the caller calls [`syncfs`] once per layer.
//!
//! **Safety design.** No path from the archive is ever handed to the kernel as a string relative
//! to the host. Entry names are first normalised lexically (a leading `/` and `.` components
//! dropped, `..` folded; a `..` that would climb above the layer root is rejected). The parent
//! directory of every entry is then reached from a directory fd on `dest`, one component at a
//! time, with `O_DIRECTORY | O_NOFOLLOW`; a component that turns out to be a symbolic link is
//! resolved by `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to that root fd, so
//! an absolute or `..`-laden link target is clamped to the layer root instead of escaping it.
//! The final component is always created relative to that parent fd and never followed:
//! files with `O_CREAT | O_EXCL | O_NOFOLLOW` (an existing entry, including a symlink, is
//! unlinked and replaced, never written through), metadata of links and device nodes with
//! `AT_SYMLINK_NOFOLLOW`, hard links with `linkat` without `AT_SYMLINK_FOLLOW` from a target
//! resolved the same way, and recursive deletions (whiteouts, replacements) by fd, never
//! following a link. A decompression bomb is bounded by [`Options::max_bytes`] (counted on
//! the uncompressed tar stream, plus the apparent size of GNU sparse members, whose holes
//! would otherwise be free to expand) and [`Options::max_entries`]; runs of zeros of 32 KiB or
//! more in a file are written as holes, so a file's disk usage never exceeds the non-zero data
//! the stream actually carried.

mod apply;
mod path;
mod stream;

use std::io::Read;
use std::path::Path;

use oci_spec::image::Digest;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (RFC 1952), possibly several concatenated members.
    Gzip,
    /// Zstandard, possibly several frames.
    Zstd,
}

impl Compression {
    /// The compression of an OCI or Docker layer media type.
    ///
    /// # Errors
    /// [`Error::UnknownMediaType`] for anything that is not a known layer type.
    pub fn from_media_type(media_type: &str) -> Result<Compression, Error> {
        // Parameters (`; foo=bar`) are not part of the type.
        let mt = media_type.split(';').next().unwrap_or("").trim();
        Ok(match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            _ => {
                return Err(Error::UnknownMediaType {
                    media_type: media_type.to_owned(),
                });
            }
        })
    }

    /// Guess the compression from the first bytes of a blob (gzip and zstd magic numbers);
    /// anything else is taken as a plain tar stream.
    pub fn sniff(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// What to do with whiteout entries (`.wh.<name>` and `.wh..wh..opq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// `dest` is an empty overlayfs upper directory: a whiteout becomes a 0:0 character device,
    /// an opaque marker the `trusted.overlay.opaque=y` xattr on its directory.
    Overlay,
    /// `dest` holds the parent layers' files: a whiteout deletes its path, an opaque marker
    /// empties its directory of everything this layer did not itself put there.
    Apply,
}

/// How to apply a layer.
#[derive(Clone, Debug)]
pub struct Options {
    /// Whiteout handling, see [`Whiteouts`].
    pub whiteouts: Whiteouts,
    /// Refuse a layer whose uncompressed tar stream (plus the apparent size of its GNU sparse
    /// members) is larger than this.
    pub max_bytes: u64,
    /// Refuse a layer with more entries than this.
    pub max_entries: u64,
    /// Give entries the owner recorded in the archive (needs `CAP_CHOWN`).
    pub same_owner: bool,
}

/// The default [`Options::max_bytes`]: 64 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;
/// The default [`Options::max_entries`]: ten million.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000_000;

impl Default for Options {
    fn default() -> Options {
        Options {
            whiteouts: Whiteouts::Overlay,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            same_owner: rustix::process::geteuid().is_root(),
        }
    }
}

/// What [`apply_layer`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// SHA-256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Length of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Number of archive members applied (extension headers not counted).
    pub entries: u64,
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A media type that is not an OCI or Docker layer.
    #[error(
        "unknown layer media type {media_type:?}: expected an OCI or Docker layer type (tar, tar+gzip, tar+zstd)"
    )]
    UnknownMediaType {
        /// The media type found.
        media_type: String,
    },
    /// The layer expands beyond [`Options::max_bytes`].
    #[error(
        "layer expands beyond the limit of {limit} uncompressed bytes (max_bytes): refusing a possible decompression bomb; raise the limit if the image is trusted"
    )]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The layer has more entries than [`Options::max_entries`].
    #[error(
        "layer has more than {limit} entries (max_entries): refusing it; raise the limit if the image is trusted"
    )]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// An entry's name or link target points outside the layer.
    #[error("layer entry {path:?} is unsafe: {reason}; the layer is refused")]
    UnsafePath {
        /// The entry's name as found in the archive.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The stream could not be read or decompressed, or is not a valid tar archive.
    #[error("reading the layer stream failed ({what}): {source}")]
    Read {
        /// What was being read.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A filesystem operation failed while applying an entry.
    #[error("applying layer entry {path:?} failed: {action}: {source}")]
    Apply {
        /// The entry's (normalised) name.
        path: String,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The destination directory could not be opened or synced.
    #[error("{action} {path}: {source}")]
    Dest {
        /// What was being done.
        action: &'static str,
        /// The directory.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Decompress `reader`, hash the uncompressed tar stream (the layer's diff ID) and apply each
/// of its entries under `dest`, safely (see the crate documentation). Returns after the whole
/// stream has been consumed, to end of file.
///
/// On error `dest` may hold a partial layer; the caller removes it.
///
/// # Errors
/// Any [`Error`]; the stream is left partly read.
pub fn apply_layer<R: Read + Send>(
    reader: R,
    compression: Compression,
    dest: &Path,
    opts: &Options,
) -> Result<Stats, Error> {
    apply::apply(reader, compression, dest, opts)
}

/// Hash-only pass: the diff ID (SHA-256 of the uncompressed tar stream) and uncompressed length
/// of a layer, without applying it.
///
/// # Errors
/// [`Error::Read`] when the stream cannot be read or decompressed.
pub fn diff_id<R: Read>(reader: R, compression: Compression) -> Result<(Digest, u64), Error> {
    let mut s = stream::HashReader::new(
        stream::Decoder::new(reader, compression)?,
        stream::Limit::new(u64::MAX),
    );
    let mut buf = vec![0u8; stream::IO_BUF];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Read {
                    what: "decompressing",
                    source,
                });
            }
        }
    }
    let (digest, len, decoder) = s.finish();
    decoder.drain().map_err(|source| Error::Read {
        what: "reading the rest of the compressed stream",
        source,
    })?;
    Ok((digest, len))
}

/// Flush the whole filesystem holding `dir` to stable storage: one `syncfs(2)`, called once
/// per layer instead of an `fsync` per file.
///
/// # Errors
/// [`Error::Dest`] when `dir` cannot be opened or the sync fails.
pub fn syncfs(dir: &Path) -> Result<(), Error> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Dest {
        action: "opening (for syncfs)",
        path: dir.to_owned(),
        source: e.into(),
    })?;
    rustix::fs::syncfs(&fd).map_err(|e| Error::Dest {
        action: "syncing the filesystem of",
        path: dir.to_owned(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        use Compression as C;
        for (mt, c) in [
            ("application/vnd.oci.image.layer.v1.tar", C::None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", C::Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", C::Zstd),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                C::Gzip,
            ),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", C::Gzip),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                C::Gzip,
            ),
            ("application/vnd.docker.image.rootfs.diff.tar", C::None),
            ("application/vnd.oci.image.layer.v1.tar+gzip; x=y", C::Gzip),
        ] {
            assert_eq!(Compression::from_media_type(mt).unwrap(), c, "{mt}");
        }
        for bad in [
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "",
        ] {
            let e = Compression::from_media_type(bad).unwrap_err();
            assert!(matches!(e, Error::UnknownMediaType { .. }), "{bad}");
            assert!(e.to_string().contains("unknown layer media type"));
        }
    }

    #[test]
    fn sniffing() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/passwd\0"), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
        assert_eq!(Compression::sniff(&[0x1f]), Compression::None);
    }

    #[test]
    fn diff_id_of_plain_and_gzip() {
        use std::io::Write;
        let data = b"hello tar stream".repeat(1000);
        let (d, n) = diff_id(&data[..], Compression::None).unwrap();
        assert_eq!(n, 16_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let (d2, n2) = diff_id(&gz[..], Compression::Gzip).unwrap();
        assert_eq!((d.clone(), n), (d2, n2));
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        let (d3, _) = diff_id(&zs[..], Compression::Zstd).unwrap();
        assert_eq!(d, d3);
        assert!(diff_id(&data[..], Compression::Gzip).is_err());
    }
}
