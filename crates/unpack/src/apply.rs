//! The two halves of [`crate::apply_layer`]: a decompressor thread that fills a few recycled
//! buffers with the uncompressed stream and hashes it, and the caller's thread, which parses
//! the tar headers and applies each entry under the destination.
//!
//! Inflating is the single most expensive step (about 2 ns a byte with zlib-rs); the file
//! system calls cost about as much on ext4, so the hash (0.6 ns a byte with SHA-NI) goes with
//! the inflater and the two threads stay about equally busy on one layer.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use rustix::time::Timespec;

use crate::path::{join, normalise};
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use crate::stream::{Decoder, Limit, digest_of};
use crate::{Compression, Error, Options, Stats, Whiteouts};

/// Size of one buffer of uncompressed stream handed from the decompressor to the parser.
const CHUNK: usize = 256 << 10;
/// Buffers in flight between the three threads (bounds that memory to 6 MiB per layer). The
/// parser's writes cost far more per byte in stretches of small files than in large ones; a
/// deep pool lets the decompressor run ahead through those stretches instead of idling a core
/// (a cold pull of the bench's image: about 8% faster than with 6 buffers, for 10 MiB more
/// peak RSS with two layers unpacking at once).
const POOL: usize = 24;
/// Largest single write of file data (the parser's read buffer).
const WRITE_BUF: usize = 512 << 10;
/// Runs of zeros at least this long are left as holes.
const HOLE_MIN: usize = 32 << 10;
/// Deepest entry accepted (the kernel could not name anything deeper from the root anyway).
const MAX_DEPTH: usize = 2048;
/// Whiteout prefix.
const WH: &[u8] = b".wh.";
/// Opaque-directory marker.
const WH_OPQ: &[u8] = b".wh..wh..opq";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
}

/// One archive member, as the writer needs it.
struct Meta {
    kind: Kind,
    name: Vec<u8>,
    link: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
    dev: (u32, u32),
    size: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the decompressor thread hands over.
enum Chunk {
    /// A buffer and how many of its bytes are valid.
    Data(Vec<u8>, usize),
    /// The end of the stream and its length (decompressor to hasher).
    Eof(u64),
    /// The end of the stream: its SHA-256 and length (hasher to parser).
    End(Digest, u64),
    Err(io::Error),
}

pub(crate) fn apply<R: Read + Send>(
    reader: R,
    compression: Compression,
    dest: &Path,
    opts: &Options,
) -> Result<Stats, Error> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Dest {
        action: "opening the layer destination",
        path: dest.to_owned(),
        source: e.into(),
    })?;
    let mut writer = Writer::new(root, opts).map_err(|e| Error::Dest {
        action: "inspecting the layer destination",
        path: dest.to_owned(),
        source: e.into(),
    })?;
    let decoder = Decoder::new(reader, compression)?;
    let limit = Limit::new(opts.max_bytes);
    let pump_limit = limit.clone();
    let (tx, hash_rx) = mpsc::sync_channel::<Chunk>(POOL);
    let (hash_tx, rx) = mpsc::sync_channel::<Chunk>(POOL);
    let (ret_tx, ret_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let spawn_err = |source| Error::Read {
            what: "starting the decompressor threads",
            source,
        };
        std::thread::Builder::new()
            .name("berth-inflate".into())
            .spawn_scoped(s, move || pump(decoder, &pump_limit, &tx, &ret_rx))
            .map_err(spawn_err)?;
        std::thread::Builder::new()
            .name("berth-hash".into())
            .spawn_scoped(s, move || hash(&hash_rx, &hash_tx))
            .map_err(spawn_err)?;
        let input = ChannelReader {
            rx,
            ret: ret_tx,
            cur: Vec::new(),
            pos: 0,
            len: 0,
            end: None,
            offset: 0,
        };
        // Returning drops the receiver, which stops the other threads at their next send.
        parse(input, &limit, opts, &mut writer)
    })
}

/// The decompressor thread: fill buffers with the uncompressed stream until its end, counting
/// it against the limit, then read the rest of the compressed input.
fn pump<R: Read>(
    mut decoder: Decoder<R>,
    limit: &Limit,
    tx: &SyncSender<Chunk>,
    pool: &Receiver<Vec<u8>>,
) {
    let mut total: u64 = 0;
    let mut allocated = 0;
    loop {
        let mut buf = if allocated < POOL {
            allocated += 1;
            vec![0u8; CHUNK]
        } else {
            match pool.recv() {
                Ok(b) => b,
                Err(_) => return,
            }
        };
        let mut n = 0;
        let mut eof = false;
        while n < buf.len() {
            match decoder.read(&mut buf[n..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Chunk::Err(e));
                    return;
                }
            }
        }
        total += n as u64;
        if !limit.charge(n as u64) {
            let _ = tx.send(Chunk::Err(io::Error::other("layer size limit exceeded")));
            return;
        }
        if n > 0 && tx.send(Chunk::Data(buf, n)).is_err() {
            return;
        }
        if eof {
            let _ = tx.send(match decoder.drain() {
                Ok(()) => Chunk::Eof(total),
                Err(e) => Chunk::Err(e),
            });
            return;
        }
    }
}

/// The hashing thread, between the decompressor and the parser: the diff ID costs as much CPU
/// as a third of the inflate, so it runs beside both instead of on either's critical path.
fn hash(rx: &Receiver<Chunk>, tx: &SyncSender<Chunk>) {
    let mut hasher = Sha256::new();
    while let Ok(chunk) = rx.recv() {
        let out = match chunk {
            Chunk::Data(buf, n) => {
                hasher.update(&buf[..n]);
                Chunk::Data(buf, n)
            }
            Chunk::Eof(total) => {
                let _ = tx.send(Chunk::End(digest_of(hasher), total));
                return;
            }
            other => other,
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// The parser's view of the decompressor's buffers.
struct ChannelReader {
    rx: Receiver<Chunk>,
    ret: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    len: usize,
    end: Option<(Digest, u64)>,
    /// Bytes of the stream read or skipped so far.
    offset: u64,
}

impl ChannelReader {
    /// Make sure some of the current buffer is left unread; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        while self.pos == self.len {
            match self.rx.recv() {
                Ok(Chunk::Data(b, n)) => {
                    let old = std::mem::replace(&mut self.cur, b);
                    if !old.is_empty() {
                        // The decompressor may be gone; then the buffer is simply freed.
                        let _ = self.ret.send(old);
                    }
                    self.pos = 0;
                    self.len = n;
                }
                Ok(Chunk::End(d, n)) => {
                    self.end = Some((d, n));
                    return Ok(false);
                }
                Ok(Chunk::Err(e)) => return Err(e),
                Ok(Chunk::Eof(_)) => {
                    return Err(io::Error::other(
                        "the stream ended without its digest (internal error)",
                    ));
                }
                Err(_) if self.end.is_some() => return Ok(false),
                Err(_) => {
                    return Err(io::Error::other(
                        "the decompressor thread stopped early (internal error)",
                    ));
                }
            }
        }
        Ok(true)
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Forward and relative only: what the tar parser asks for to pass over padding and data it
/// does not read. Without it the parser skips by reading into a 32 KiB buffer that it zeroes
/// first, before every entry (about 1% of a pull's CPU on a layer of small files).
impl io::Seek for ChannelReader {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let not_forward = || {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the layer stream can only skip forward (internal error)",
            )
        };
        let io::SeekFrom::Current(delta) = pos else {
            return Err(not_forward());
        };
        let mut left = u64::try_from(delta).map_err(|_| not_forward())?;
        while left > 0 {
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "unexpected EOF during skip",
                ));
            }
            let n =
                usize::try_from(left).map_or(self.len - self.pos, |l| l.min(self.len - self.pos));
            self.pos += n;
            self.offset += n as u64;
            left -= n as u64;
        }
        Ok(self.offset)
    }
}

fn parse(
    input: ChannelReader,
    limit: &Limit,
    opts: &Options,
    writer: &mut Writer,
) -> Result<Stats, Error> {
    let mut archive = tar::Archive::new(input);
    let mut buf = vec![0u8; WRITE_BUF];
    let mut count: u64 = 0;
    let read_err = |source: io::Error| limit.error(source);
    {
        let entries = archive.entries_with_seek().map_err(read_err)?;
        for entry in entries {
            let mut entry = entry.map_err(read_err)?;
            let header = entry.header();
            let et = header.entry_type();
            let kind = match et {
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink,
                tar::EntryType::Link => Kind::HardLink,
                tar::EntryType::Char => Kind::Char,
                tar::EntryType::Block => Kind::Block,
                tar::EntryType::Fifo => Kind::Fifo,
                other => {
                    tracing::debug!(entry_type = ?other, "skipping a tar member of an unsupported type");
                    continue;
                }
            };
            count += 1;
            if count > opts.max_entries {
                return Err(Error::TooManyEntries {
                    limit: opts.max_entries,
                });
            }
            let bad = |what: &'static str| move |source: io::Error| Error::Read { what, source };
            let mode = header.mode().map_err(bad("reading an entry's mode"))?;
            let uid = header.uid().map_err(bad("reading an entry's uid"))?;
            let gid = header.gid().map_err(bad("reading an entry's gid"))?;
            let mtime = header.mtime().map_err(bad("reading an entry's mtime"))?;
            let mut mtime = (i64::try_from(mtime).unwrap_or(0), 0u32);
            let dev = if matches!(kind, Kind::Char | Kind::Block) {
                (
                    header
                        .device_major()
                        .map_err(bad("reading a device number"))?
                        .unwrap_or(0),
                    header
                        .device_minor()
                        .map_err(bad("reading a device number"))?
                        .unwrap_or(0),
                )
            } else {
                (0, 0)
            };
            let stored = header
                .entry_size()
                .map_err(bad("reading an entry's size"))?;
            let name = entry.path_bytes().into_owned();
            // Only links have a target; asking costs another pass over the PAX records, which
            // tools such as GNU tar write for every entry.
            let link = match kind {
                Kind::Symlink | Kind::HardLink => entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let size = if kind == Kind::File { entry.size() } else { 0 };
            // The holes of a GNU sparse member are not in the stream but would be expanded.
            if et == tar::EntryType::GNUSparse && !limit.charge(size.saturating_sub(stored)) {
                return Err(Error::TooLarge {
                    limit: opts.max_bytes,
                });
            }
            let mut xattrs = Vec::new();
            if let Some(pax) = entry.pax_extensions().map_err(read_err)? {
                for ext in pax {
                    let ext = ext.map_err(bad("reading PAX extensions"))?;
                    let key = ext.key_bytes();
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                    } else if key == b"mtime" {
                        if let Some(t) = parse_pax_time(ext.value_bytes()) {
                            mtime = t;
                        }
                    }
                }
            }
            let meta = Box::new(Meta {
                kind,
                name,
                link,
                mode,
                uid,
                gid,
                mtime,
                dev,
                size,
                xattrs,
            });
            let mut remaining = size;
            let first = usize::try_from(remaining).map_or(WRITE_BUF, |r| r.min(WRITE_BUF));
            entry.read_exact(&mut buf[..first]).map_err(read_err)?;
            remaining -= first as u64;
            writer.entry(meta, &buf[..first], remaining == 0)?;
            while remaining > 0 {
                let n = usize::try_from(remaining).map_or(WRITE_BUF, |r| r.min(WRITE_BUF));
                entry.read_exact(&mut buf[..n]).map_err(read_err)?;
                remaining -= n as u64;
                writer.more(&buf[..n], remaining == 0)?;
            }
        }
    }
    // The rest of the stream (padding after the end-of-archive blocks) is part of the diff ID.
    let mut input = archive.into_inner();
    io::copy(&mut input, &mut io::sink()).map_err(read_err)?;
    let Some((diff_id, tar_bytes)) = input.end.take() else {
        return Err(Error::Read {
            what: "reading the end of the stream",
            source: io::Error::other("the stream ended without its digest (internal error)"),
        });
    };
    writer.finish()?;
    Ok(Stats {
        diff_id,
        tar_bytes,
        entries: count,
    })
}

/// A PAX time: `<seconds>[.<fraction>]`.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    if sec < 0 || frac.is_empty() {
        return Some((sec, 0));
    }
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some((sec, 0));
    }
    let nsec: u32 = format!("{digits:0<9}").parse().ok()?;
    Some((sec, nsec))
}

// ---------------------------------------------------------------------------------------------
// Writer

/// A regular file being written.
struct OpenFile {
    fd: OwnedFd,
    meta: Box<Meta>,
    path: Vec<u8>,
    /// Next offset to write.
    pos: u64,
    /// Whether the last data was left as a hole (the file must then be extended).
    hole_tail: bool,
    /// Whether the parent directory is set-group-ID (new files then take its group).
    parent_sgid: bool,
}

enum Current {
    None,
    File(OpenFile),
    /// The data of an entry that is not written (a whiteout with content, say).
    Skip,
}

struct Writer {
    root: OwnedFd,
    root_sgid: bool,
    /// The directory chain of the last entry's parent: component names and open fds.
    stack: Vec<(Vec<u8>, OwnedFd, bool)>,
    whiteouts: Whiteouts,
    same_owner: bool,
    euid: u32,
    egid: u32,
    umask: u32,
    is_root: bool,
    /// Directories whose times (and, when not root, final mode) are set at the end.
    dirs: Vec<(Vec<u8>, Timestamps, Option<u32>)>,
    /// `Apply` mode: paths this layer put in place (`true`) or kept (an existing directory).
    touched: HashMap<Vec<u8>, bool>,
    current: Current,
    warned_xattr: bool,
}

fn proc_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        // Unknown: assume the worst, so every mode is set explicitly.
        .unwrap_or(0o777)
}

fn ts(mtime: (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.0,
        tv_nsec: i64::from(mtime.1),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn is_sgid(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::fs::fstat(fd)?.st_mode & 0o2000 != 0)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Remove `name` in `parent`, recursively if it is a directory, never following a symlink.
/// Returns whether a directory was removed; a missing name is not an error.
fn remove_all(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    match rustix::fs::unlinkat(parent, os(name), AtFlags::empty()) {
        Ok(()) => return Ok(false),
        Err(Errno::NOENT) => return Ok(false),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let dir = rustix::fs::openat(parent, os(name), DIR_FLAGS, Mode::empty())?;
    for child in list(dir.as_fd())? {
        remove_all(dir.as_fd(), &child)?;
    }
    drop(dir);
    rustix::fs::unlinkat(parent, os(name), AtFlags::REMOVEDIR)?;
    Ok(true)
}

/// The names in a directory, without `.` and `..`.
fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

fn is_zero(b: &[u8]) -> bool {
    b.chunks(256)
        .all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Write `data` at `pos`, leaving runs of at least [`HOLE_MIN`] zero bytes (in whole 4 KiB
/// blocks of the file) as holes. Returns whether the end of `data` was left as a hole.
fn write_data(fd: BorrowedFd<'_>, data: &[u8], pos: u64) -> io::Result<bool> {
    const BLK: u64 = 4096;
    if data.len() < HOLE_MIN {
        return write_at(fd, data, pos).map(|()| false);
    }
    let mut i = 0usize; // next byte to look at
    let mut pending = 0usize; // start of data not yet written
    while i < data.len() {
        // Block boundary at or after i, in file offsets.
        let off = pos + i as u64;
        let to_boundary = usize::try_from((BLK - off % BLK) % BLK).unwrap_or(0);
        if to_boundary > 0 {
            i += to_boundary;
            continue;
        }
        // Measure the run of whole zero blocks starting at i.
        let mut j = i;
        while j + 4096 <= data.len() && is_zero(&data[j..j + 4096]) {
            j += 4096;
        }
        if j - i >= HOLE_MIN {
            write_at(fd, &data[pending..i], pos + pending as u64)?;
            pending = j;
            i = j;
        } else {
            i = j + 4096;
        }
    }
    write_at(fd, &data[pending..], pos + pending as u64)?;
    Ok(pending == data.len())
}

fn write_at(fd: BorrowedFd<'_>, mut data: &[u8], mut pos: u64) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, pos) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                pos += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Writer {
    fn new(root: OwnedFd, opts: &Options) -> rustix::io::Result<Writer> {
        let root_sgid = rustix::fs::fstat(&root)?.st_mode & 0o2000 != 0;
        let euid = rustix::process::geteuid();
        Ok(Writer {
            root,
            root_sgid,
            stack: Vec::new(),
            whiteouts: opts.whiteouts,
            same_owner: opts.same_owner,
            euid: euid.as_raw(),
            egid: rustix::process::getegid().as_raw(),
            umask: proc_umask(),
            is_root: euid.is_root(),
            dirs: Vec::new(),
            touched: HashMap::new(),
            current: Current::None,
            warned_xattr: false,
        })
    }

    fn tracking(&self) -> bool {
        self.whiteouts == Whiteouts::Apply
    }

    fn parent_fd(&self) -> BorrowedFd<'_> {
        self.stack
            .last()
            .map_or(self.root.as_fd(), |(_, fd, _)| fd.as_fd())
    }

    fn parent_sgid(&self) -> bool {
        self.stack.last().map_or(self.root_sgid, |(_, _, s)| *s)
    }

    /// Make `self.stack` the directory chain `comps`, creating missing directories when
    /// `create`. Returns false when a directory is missing and `create` is not set.
    fn resolve(&mut self, comps: &[&[u8]], create: bool) -> io::Result<bool> {
        let mut k = 0;
        while k < self.stack.len() && k < comps.len() && self.stack[k].0 == comps[k] {
            k += 1;
        }
        self.stack.truncate(k);
        for i in k..comps.len() {
            let name = os(comps[i]);
            let opened = rustix::fs::openat(self.parent_fd(), name, DIR_FLAGS, Mode::empty());
            let fd = match opened {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(self.parent_fd(), name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    if self.tracking() {
                        self.touched.insert(join(&comps[..=i]), true);
                    }
                    rustix::fs::openat(self.parent_fd(), name, DIR_FLAGS, Mode::empty())?
                }
                Err(Errno::NOENT) => return Ok(false),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    // A symlink (or not a directory at all): resolve the whole prefix with
                    // the kernel's help, clamped to the layer root.
                    match rustix::fs::openat2(
                        &self.root,
                        os(&join(&comps[..=i])),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                        resolve_flags(),
                    ) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT) if !create => return Ok(false),
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let sgid = is_sgid(fd.as_fd())?;
            self.stack.push((comps[i].to_vec(), fd, sgid));
        }
        Ok(true)
    }

    fn entry(&mut self, meta: Box<Meta>, data: &[u8], done: bool) -> Result<(), Error> {
        self.current = Current::None;
        let name_bytes = meta.name.clone();
        let comps = normalise(&name_bytes).map_err(|reason| Error::UnsafePath {
            path: lossy(&meta.name),
            reason,
        })?;
        if comps.len() > MAX_DEPTH {
            return Err(Error::UnsafePath {
                path: lossy(&meta.name),
                reason: "it is nested too deeply",
            });
        }
        let path = join(&comps);
        let fail = |action: &'static str| {
            let p = lossy(&path);
            move |e: io::Error| Error::Apply {
                path: p,
                action,
                source: e,
            }
        };
        let Some((&last, parents)) = comps.split_last() else {
            // The layer root itself.
            if meta.kind != Kind::Dir {
                return Err(Error::UnsafePath {
                    path: lossy(&meta.name),
                    reason: "it names the layer root but is not a directory",
                });
            }
            self.stack.clear();
            let root = self
                .root
                .try_clone()
                .map_err(fail("opening the layer root"))?;
            return self.dir_meta(&root, &meta, &path, false);
        };
        if last.starts_with(WH) {
            if !done {
                self.current = Current::Skip;
            }
            return self
                .whiteout(parents, last, &path)
                .map_err(fail("applying a whiteout"));
        }
        let create_parents = true;
        self.resolve(parents, create_parents)
            .map_err(fail("resolving the parent directory"))?;
        let name = os(last);
        let mut removed_dir = false;
        match meta.kind {
            Kind::File => {
                let perm = meta.mode & 0o7777;
                let fd = loop {
                    match rustix::fs::openat(
                        self.parent_fd(),
                        name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(perm & 0o777),
                    ) {
                        Ok(fd) => break fd,
                        Err(Errno::EXIST) => {
                            removed_dir |= remove_all(self.parent_fd(), last)
                                .map_err(fail("replacing the existing entry"))?;
                        }
                        Err(e) => return Err(fail("creating the file")(e.into())),
                    }
                };
                let mut f = OpenFile {
                    fd,
                    meta,
                    path,
                    pos: 0,
                    hole_tail: false,
                    parent_sgid: self.parent_sgid(),
                };
                if self.tracking() {
                    self.touched.insert(f.path.clone(), true);
                }
                if removed_dir {
                    self.stack.clear();
                }
                self.write_file(&mut f, data)?;
                if done {
                    self.finish_file(f)?;
                } else {
                    self.current = Current::File(f);
                }
                return Ok(());
            }
            Kind::Dir => {
                let perm = meta.mode & 0o7777;
                let mut mkmode = perm & 0o777;
                if !self.is_root {
                    mkmode |= 0o700;
                }
                let created = loop {
                    match rustix::fs::mkdirat(self.parent_fd(), name, Mode::from_raw_mode(mkmode)) {
                        Ok(()) => break true,
                        Err(Errno::EXIST) => {
                            let st = rustix::fs::statat(
                                self.parent_fd(),
                                name,
                                AtFlags::SYMLINK_NOFOLLOW,
                            )
                            .map_err(|e| fail("inspecting the existing entry")(e.into()))?;
                            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                                break false;
                            }
                            remove_all(self.parent_fd(), last)
                                .map_err(fail("replacing the existing entry"))?;
                        }
                        Err(e) => return Err(fail("creating the directory")(e.into())),
                    }
                };
                let fd = rustix::fs::openat(self.parent_fd(), name, DIR_FLAGS, Mode::empty())
                    .map_err(|e| fail("opening the new directory")(e.into()))?;
                let parent_sgid = self.parent_sgid();
                self.dir_meta(&fd, &meta, &path, created && parent_sgid)?;
                let sgid = is_sgid(fd.as_fd()).map_err(fail("inspecting the new directory"))?;
                if self.tracking() {
                    // A kept directory keeps its lower contents: an opaque marker still hides them.
                    self.touched.insert(path, created);
                }
                self.stack.push((last.to_vec(), fd, sgid));
                return Ok(());
            }
            Kind::Symlink => {
                loop {
                    match rustix::fs::symlinkat(os(&meta.link), self.parent_fd(), name) {
                        Ok(()) => break,
                        Err(Errno::EXIST) => {
                            removed_dir |= remove_all(self.parent_fd(), last)
                                .map_err(fail("replacing the existing entry"))?;
                        }
                        Err(e) => return Err(fail("creating the symlink")(e.into())),
                    }
                }
                self.node_meta(&meta, last, &path, false)?;
            }
            Kind::HardLink => {
                let target = normalise(&meta.link).map_err(|reason| Error::UnsafePath {
                    path: lossy(&meta.name),
                    reason: {
                        let _ = reason;
                        "its hard link target climbs above the layer root"
                    },
                })?;
                let Some((&tlast, tparents)) = target.split_last() else {
                    return Err(Error::UnsafePath {
                        path: lossy(&meta.name),
                        reason: "it is a hard link to the layer root",
                    });
                };
                if target == comps {
                    return Ok(());
                }
                let tdir = if tparents.is_empty() {
                    self.root.try_clone()
                } else {
                    rustix::fs::openat2(
                        &self.root,
                        os(&join(tparents)),
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                        resolve_flags(),
                    )
                    .map_err(io::Error::from)
                }
                .map_err(fail("resolving the hard link target's directory"))?;
                loop {
                    match rustix::fs::linkat(
                        &tdir,
                        os(tlast),
                        self.parent_fd(),
                        name,
                        AtFlags::empty(),
                    ) {
                        Ok(()) => break,
                        Err(Errno::EXIST) => {
                            removed_dir |= remove_all(self.parent_fd(), last)
                                .map_err(fail("replacing the existing entry"))?;
                        }
                        Err(e) => return Err(fail("creating the hard link")(e.into())),
                    }
                }
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let ft = match meta.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let perm = meta.mode & 0o7777;
                let dev = rustix::fs::makedev(meta.dev.0, meta.dev.1);
                loop {
                    match rustix::fs::mknodat(
                        self.parent_fd(),
                        name,
                        ft,
                        Mode::from_raw_mode(perm & 0o777),
                        dev,
                    ) {
                        Ok(()) => break,
                        Err(Errno::EXIST) => {
                            removed_dir |= remove_all(self.parent_fd(), last)
                                .map_err(fail("replacing the existing entry"))?;
                        }
                        Err(e) => return Err(fail("creating the device node or fifo")(e.into())),
                    }
                }
                self.node_meta(&meta, last, &path, true)?;
            }
        }
        if self.tracking() {
            self.touched.insert(path, true);
        }
        if removed_dir {
            self.stack.clear();
        }
        Ok(())
    }

    fn more(&mut self, data: &[u8], done: bool) -> Result<(), Error> {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::File(mut f) => {
                self.write_file(&mut f, data)?;
                if done {
                    self.finish_file(f)
                } else {
                    self.current = Current::File(f);
                    Ok(())
                }
            }
            Current::Skip => {
                if !done {
                    self.current = Current::Skip;
                }
                Ok(())
            }
            Current::None => Err(Error::Read {
                what: "parsing the tar stream",
                source: io::Error::other("data without an entry (internal error)"),
            }),
        }
    }

    fn write_file(&self, f: &mut OpenFile, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let r = if f.meta.size < HOLE_MIN as u64 {
            write_at(f.fd.as_fd(), data, f.pos).map(|()| false)
        } else {
            write_data(f.fd.as_fd(), data, f.pos)
        };
        f.hole_tail = r.map_err(|source| Error::Apply {
            path: lossy(&f.path),
            action: "writing the file",
            source,
        })?;
        f.pos += data.len() as u64;
        Ok(())
    }

    fn owner(&self, meta: &Meta, parent_sgid: bool) -> Result<Option<(Uid, Gid)>, Error> {
        if !self.same_owner {
            return Ok(None);
        }
        let bad = || Error::UnsafePath {
            path: lossy(&meta.name),
            reason: "its owner id does not fit in 32 bits",
        };
        let uid = u32::try_from(meta.uid).map_err(|_| bad())?;
        let gid = u32::try_from(meta.gid).map_err(|_| bad())?;
        if uid == self.euid && gid == self.egid && !parent_sgid {
            return Ok(None);
        }
        Ok(Some((Uid::from_raw(uid), Gid::from_raw(gid))))
    }

    fn needs_chmod(&self, perm: u32, chowned: bool, parent_sgid: bool) -> bool {
        chowned || parent_sgid || perm & (self.umask | 0o7000) != 0
    }

    fn finish_file(&mut self, f: OpenFile) -> Result<(), Error> {
        let fail = |action: &'static str| {
            let p = lossy(&f.path);
            move |e: Errno| Error::Apply {
                path: p,
                action,
                source: e.into(),
            }
        };
        if f.hole_tail {
            rustix::fs::ftruncate(&f.fd, f.meta.size).map_err(fail("sizing the sparse file"))?;
        }
        let owner = self.owner(&f.meta, f.parent_sgid)?;
        if let Some((u, g)) = owner {
            rustix::fs::fchown(&f.fd, Some(u), Some(g)).map_err(fail("setting the owner"))?;
        }
        let perm = f.meta.mode & 0o7777;
        if self.needs_chmod(perm, owner.is_some(), false) {
            rustix::fs::fchmod(&f.fd, Mode::from_raw_mode(perm))
                .map_err(fail("setting the mode"))?;
        }
        self.xattrs_fd(f.fd.as_fd(), &f.meta, &f.path)?;
        rustix::fs::futimens(&f.fd, &ts(f.meta.mtime)).map_err(fail("setting the times"))?;
        Ok(())
    }

    /// Owner, mode, xattrs of a directory (times are set at the end, after its children).
    fn dir_meta(
        &mut self,
        fd: &OwnedFd,
        meta: &Meta,
        path: &[u8],
        sgid_inherited: bool,
    ) -> Result<(), Error> {
        let fail = |action: &'static str| {
            let p = lossy(path);
            move |e: Errno| Error::Apply {
                path: p,
                action,
                source: e.into(),
            }
        };
        let owner = self.owner(meta, sgid_inherited)?;
        if let Some((u, g)) = owner {
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(fail("setting the owner"))?;
        }
        let perm = meta.mode & 0o7777;
        let mut deferred_mode = None;
        let mut now = perm;
        if !self.is_root && perm & 0o700 != 0o700 {
            // Keep the directory writable for its children; the real mode comes at the end.
            now |= 0o700;
            deferred_mode = Some(perm);
        }
        if self.needs_chmod(now, owner.is_some(), sgid_inherited) || path.is_empty() {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(now)).map_err(fail("setting the mode"))?;
        }
        self.xattrs_fd(fd.as_fd(), meta, path)?;
        self.dirs
            .push((path.to_vec(), ts(meta.mtime), deferred_mode));
        Ok(())
    }

    /// Owner, mode, times and xattrs of a symlink, device node or fifo, by name in the current
    /// parent, never following the final component.
    fn node_meta(
        &mut self,
        meta: &Meta,
        name: &[u8],
        path: &[u8],
        chmod: bool,
    ) -> Result<(), Error> {
        let fail = |action: &'static str| {
            let p = lossy(path);
            move |e: Errno| Error::Apply {
                path: p,
                action,
                source: e.into(),
            }
        };
        let owner = self.owner(meta, self.parent_sgid())?;
        if let Some((u, g)) = owner {
            rustix::fs::chownat(
                self.parent_fd(),
                os(name),
                Some(u),
                Some(g),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(fail("setting the owner"))?;
        }
        let perm = meta.mode & 0o7777;
        if chmod && self.needs_chmod(perm, owner.is_some(), false) {
            // The node was created by mknodat just now, so it is not a symlink.
            rustix::fs::chmodat(
                self.parent_fd(),
                os(name),
                Mode::from_raw_mode(perm),
                AtFlags::empty(),
            )
            .map_err(fail("setting the mode"))?;
        }
        if !meta.xattrs.is_empty() {
            // No fd on a symlink or device that could carry xattrs: name it through the
            // parent's fd, which the final lsetxattr does not follow.
            let mut p = format!("/proc/self/fd/{}/", self.parent_fd().as_raw_fd()).into_bytes();
            p.extend_from_slice(name);
            for (k, v) in &meta.xattrs {
                let r = rustix::fs::lsetxattr(os(&p), os(k), v, XattrFlags::empty());
                self.xattr_result(r, k, path)?;
            }
        }
        rustix::fs::utimensat(
            self.parent_fd(),
            os(name),
            &ts(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(fail("setting the times"))?;
        Ok(())
    }

    fn xattrs_fd(&mut self, fd: BorrowedFd<'_>, meta: &Meta, path: &[u8]) -> Result<(), Error> {
        for (k, v) in &meta.xattrs {
            if k.starts_with(b"trusted.overlay.") {
                // Never let a layer forge overlayfs' own metadata (redirects, metacopy...).
                tracing::debug!(path = %lossy(path), "ignoring a trusted.overlay.* xattr in a layer");
                continue;
            }
            let r = rustix::fs::fsetxattr(fd, os(k), v, XattrFlags::empty());
            self.xattr_result(r, k, path)?;
        }
        Ok(())
    }

    fn xattr_result(
        &mut self,
        r: rustix::io::Result<()>,
        key: &[u8],
        path: &[u8],
    ) -> Result<(), Error> {
        match r {
            Ok(()) => Ok(()),
            Err(e)
                if key.starts_with(b"security.")
                    || matches!(e, Errno::OPNOTSUPP | Errno::PERM | Errno::ACCESS) =>
            {
                if !self.warned_xattr {
                    self.warned_xattr = true;
                    tracing::warn!(path = %lossy(path), xattr = %lossy(key), error = %e, "could not set an extended attribute; ignoring it (and further such failures in this layer)");
                }
                Ok(())
            }
            Err(e) => Err(Error::Apply {
                path: lossy(path),
                action: "setting an extended attribute",
                source: e.into(),
            }),
        }
    }

    fn whiteout(&mut self, parents: &[&[u8]], last: &[u8], path: &[u8]) -> io::Result<()> {
        if last == WH_OPQ {
            return self.opaque(parents);
        }
        if last.starts_with(b".wh..wh.") {
            // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): nothing to apply.
            return Ok(());
        }
        let target = &last[WH.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a whiteout names no entry",
            ));
        }
        match self.whiteouts {
            Whiteouts::Overlay => {
                self.resolve(parents, true)?;
                match rustix::fs::mknodat(
                    self.parent_fd(),
                    os(target),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                ) {
                    // Something of this very layer is there already: whiteouts only hide
                    // lower layers, and that entry hides them already.
                    Ok(()) | Err(Errno::EXIST) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Whiteouts::Apply => {
                let mut hidden = join(parents);
                if !hidden.is_empty() {
                    hidden.push(b'/');
                }
                hidden.extend_from_slice(target);
                if self.touched.contains_key(&hidden) {
                    return Ok(());
                }
                let _ = path;
                if !self.resolve(parents, false)? {
                    return Ok(());
                }
                if remove_all(self.parent_fd(), target)? {
                    self.stack.clear();
                }
                Ok(())
            }
        }
    }

    fn opaque(&mut self, parents: &[&[u8]]) -> io::Result<()> {
        match self.whiteouts {
            Whiteouts::Overlay => {
                self.resolve(parents, true)?;
                rustix::fs::fsetxattr(
                    self.parent_fd(),
                    "trusted.overlay.opaque",
                    b"y",
                    XattrFlags::empty(),
                )?;
                Ok(())
            }
            Whiteouts::Apply => {
                if !self.resolve(parents, false)? {
                    return Ok(());
                }
                let dir = self.parent_fd().try_clone_to_owned()?;
                if self.clear_lower(dir.as_fd(), &join(parents))? {
                    self.stack.clear();
                }
                Ok(())
            }
        }
    }

    /// Remove everything in `dir` (at `path`) that this layer did not put there itself.
    fn clear_lower(&self, dir: BorrowedFd<'_>, path: &[u8]) -> io::Result<bool> {
        let mut removed_dir = false;
        for child in list(dir)? {
            let mut cpath = path.to_vec();
            if !cpath.is_empty() {
                cpath.push(b'/');
            }
            cpath.extend_from_slice(&child);
            match self.touched.get(&cpath) {
                Some(true) => {}
                Some(false) => {
                    let sub = rustix::fs::openat(dir, os(&child), DIR_FLAGS, Mode::empty())?;
                    removed_dir |= self.clear_lower(sub.as_fd(), &cpath)?;
                }
                None => removed_dir |= remove_all(dir, &child)?,
            }
        }
        Ok(removed_dir)
    }

    /// Directory times (and deferred modes), after all their children were written.
    fn finish(&mut self) -> Result<(), Error> {
        self.stack.clear();
        for (path, times, mode) in std::mem::take(&mut self.dirs) {
            let fd = if path.is_empty() {
                self.root
                    .try_clone()
                    .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
            } else {
                rustix::fs::openat2(
                    &self.root,
                    os(&path),
                    DIR_FLAGS,
                    Mode::empty(),
                    resolve_flags(),
                )
            };
            let fd = match fd {
                Ok(fd) => fd,
                // Replaced or removed later in the layer.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => {
                    return Err(Error::Apply {
                        path: lossy(&path),
                        action: "reopening the directory to set its times",
                        source: e.into(),
                    });
                }
            };
            let fail = |action: &'static str| {
                let p = lossy(&path);
                move |e: Errno| Error::Apply {
                    path: p,
                    action,
                    source: e.into(),
                }
            };
            if let Some(m) = mode {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(m))
                    .map_err(fail("setting the mode"))?;
            }
            rustix::fs::futimens(&fd, &times).map_err(fail("setting the times"))?;
        }
        Ok(())
    }
}
