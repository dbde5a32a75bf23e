//! The byte pipeline under the tar parser: buffered input, decompression, hashing and the
//! size limit.

use std::io::{self, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use crate::{Compression, Error};

/// Size of the read buffer on the compressed input.
pub(crate) const IO_BUF: usize = 256 << 10;

/// A decompressing reader.
pub(crate) enum Decoder<R: Read> {
    None(BufReader<R>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<R>>>),
    Zstd(Box<zstd::Decoder<'static, BufReader<R>>>),
}

impl<R: Read> Decoder<R> {
    pub(crate) fn new(reader: R, compression: Compression) -> Result<Decoder<R>, Error> {
        let buffered = BufReader::with_capacity(IO_BUF, reader);
        Ok(match compression {
            Compression::None => Decoder::None(buffered),
            Compression::Gzip => {
                Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(buffered)))
            }
            Compression::Zstd => Decoder::Zstd(Box::new(
                zstd::Decoder::with_buffer(buffered).map_err(|source| Error::Read {
                    what: "starting the zstd decoder",
                    source,
                })?,
            )),
        })
    }

    /// Read the compressed input to its end (bytes after the last gzip member or zstd frame,
    /// if the decoder left any, are read so the caller's digest of the blob sees them all).
    pub(crate) fn drain(self) -> io::Result<()> {
        let mut inner = match self {
            Decoder::None(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        };
        io::copy(&mut inner, &mut io::sink())?;
        Ok(())
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::None(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// The size limit, shared between the hashing reader (deep inside the tar parser) and the
/// parser loop, which charges the apparent size of sparse members to it.
#[derive(Clone)]
pub(crate) struct Limit(Arc<LimitState>);

pub(crate) struct LimitState {
    limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

impl Limit {
    pub(crate) fn new(limit: u64) -> Limit {
        Limit(Arc::new(LimitState {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        }))
    }

    /// Count `n` more bytes; false once the limit is passed.
    pub(crate) fn charge(&self, n: u64) -> bool {
        let used = self
            .0
            .used
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n);
        if used > self.0.limit {
            self.0.exceeded.store(true, Ordering::Relaxed);
        }
        !self.0.exceeded.load(Ordering::Relaxed)
    }

    /// The error to report for a failed read: the limit if it was hit, else the I/O error.
    pub(crate) fn error(&self, source: io::Error) -> Error {
        if self.0.exceeded.load(Ordering::Relaxed) {
            Error::TooLarge {
                limit: self.0.limit,
            }
        } else {
            Error::Read {
                what: "decompressing and parsing the tar stream",
                source,
            }
        }
    }
}

/// Hashes everything read through it and fails once the limit is passed.
pub(crate) struct HashReader<R: Read> {
    inner: R,
    hasher: Sha256,
    total: u64,
    limit: Limit,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R, limit: Limit) -> HashReader<R> {
        HashReader {
            inner,
            hasher: Sha256::new(),
            total: 0,
            limit,
        }
    }

    /// The diff ID and length of the uncompressed stream, and the reader under it.
    pub(crate) fn finish(self) -> (Digest, u64, R) {
        (digest_of(self.hasher), self.total, self.inner)
    }
}

pub(crate) fn digest_of(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    // A "sha256:" + 64 lowercase hex digits string is always a valid digest.
    Digest::try_from(format!("sha256:{hex}")).expect("a sha256 digest is valid")
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.total += n as u64;
        if !self.limit.charge(n as u64) {
            return Err(io::Error::other("layer size limit exceeded"));
        }
        Ok(n)
    }
}
