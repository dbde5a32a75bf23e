//! Reading a container's log: Docker's json-file format as the shim writes it, one JSON object
//! a line (`{"log":"hi\n","stream":"stdout","time":"2026-11-30T17:45:39.123456789Z"}`), rotated
//! to `<path>.1` (newest rotated) ... `<path>.N` (oldest).
//!
//! [`read`] runs on its own thread (file reads block) and hands entries to the gRPC stream
//! through a bounded channel, so a slow client slows the reader instead of filling memory.
//! Following watches the log's directory with inotify (a write, a rotation or the file's
//! creation wakes it); an eventfd wakes it when the container exits, after which it drains
//! what is left and ends. A poll timeout bounds how long a vanished client or a passed `until`
//! go unnoticed.

use std::fs::File;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Seek};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_api::v1::{LogEntry, LogsRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The entries of one `logs` call; ends when the log is read (or, following, the container
/// exited and the rest was drained, `until` passed, or the client hung up).
pub type LogStream = ReceiverStream<Result<LogEntry, tonic::Status>>;

/// Resolves when the container's main process has exited.
pub type ExitSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How long a follower sleeps at most between checks for a vanished client or a passed `until`.
const IDLE: Duration = Duration::from_millis(250);
/// Entries buffered between the reader thread and the gRPC stream.
const BUFFER: usize = 256;

/// What to read; from a [`LogsRequest`].
#[derive(Debug, Clone, Copy)]
struct Opts {
    follow: bool,
    tail: i64,
    since: i64,
    until: i64,
    stdout: bool,
    stderr: bool,
}

impl From<&LogsRequest> for Opts {
    fn from(r: &LogsRequest) -> Opts {
        // Neither stream selected is the proto3 default: take it as both.
        let both = !r.stdout && !r.stderr;
        Opts {
            follow: r.follow,
            tail: r.tail,
            since: r.since_unix_nanos,
            until: r.until_unix_nanos,
            stdout: r.stdout || both,
            stderr: r.stderr || both,
        }
    }
}

/// Read the json-file log at `path` (and its rotated siblings) as `req` asks.
///
/// `tail` < 0 is everything, N the last N lines over all files, counted before the stream
/// selection (as Docker's json-file reader does); `since`/`until` (unix nanos, 0 = unset) keep
/// entries at or after `since` and stop at the first one after `until`. With `follow`, the
/// stream then waits for more until `exited` resolves (then drains and ends), `until` passes
/// or the client hangs up; `exited` = `None` follows until one of the latter two.
/// A missing file reads as empty (following, its creation is waited for).
///
/// Must be called within a tokio runtime (the exit signal is awaited on it).
pub fn read(path: PathBuf, req: &LogsRequest, exited: Option<ExitSignal>) -> LogStream {
    let opts = Opts::from(req);
    let (tx, rx) = mpsc::channel(BUFFER);
    let wake = Wake::new();
    if opts.follow {
        if let Some(exited) = exited {
            let wake = wake.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = exited => wake.fire(),
                    () = tx.closed() => {}
                }
            });
        }
    }
    let spawned = std::thread::Builder::new()
        .name("berth-logs".into())
        .spawn({
            let tx = tx.clone();
            move || {
                let mut out = Sink { tx, opts };
                if let Err(e) = Reader::new(path, opts, wake).run(&mut out) {
                    let _ = out.tx.blocking_send(Err(e));
                }
            }
        });
    if let Err(e) = spawned {
        let _ = tx.try_send(Err(tonic::Status::internal(format!(
            "starting the log reader thread: {e}"
        ))));
    }
    ReceiverStream::new(rx)
}

/// [`read`] for a container whose `running` flag turns false when its main process exits.
pub(crate) fn stream(
    path: PathBuf,
    req: LogsRequest,
    mut running: tokio::sync::watch::Receiver<bool>,
) -> Pin<Box<dyn futures_util::Stream<Item = Result<LogEntry, tonic::Status>> + Send>> {
    let exited: ExitSignal = Box::pin(async move {
        // A dropped sender means the container is gone: exited too.
        let _ = running.wait_for(|r| !*r).await;
    });
    Box::pin(read(path, &req, Some(exited)))
}

/// Where entries go, filtered by stream and time.
struct Sink {
    tx: mpsc::Sender<Result<LogEntry, tonic::Status>>,
    opts: Opts,
}

/// Why a reader stops early.
enum Stop {
    /// An entry after `until`, or the client hung up.
    Done,
    /// Reading failed.
    Failed(tonic::Status),
}

type Flow = Result<(), Stop>;

impl Sink {
    /// Send one parsed line if it passes the filters.
    fn line(&mut self, line: &[u8]) -> Flow {
        let Some(entry) = parse_line(line) else {
            if !line.iter().all(u8::is_ascii_whitespace) {
                tracing::debug!("skipping a malformed log line");
            }
            return Ok(());
        };
        if self.opts.until > 0 && entry.time_unix_nanos > self.opts.until {
            return Err(Stop::Done);
        }
        if self.opts.since > 0 && entry.time_unix_nanos < self.opts.since {
            return Ok(());
        }
        let wanted = match entry.stream {
            1 => self.opts.stdout,
            2 => self.opts.stderr,
            _ => false,
        };
        if wanted && self.tx.blocking_send(Ok(entry)).is_err() {
            return Err(Stop::Done);
        }
        Ok(())
    }

    fn gone(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The exit signal as seen from the reader thread: a flag plus an eventfd to wake its poll.
#[derive(Clone)]
struct Wake {
    fired: Arc<AtomicBool>,
    fd: Option<Arc<OwnedFd>>,
}

impl Wake {
    fn new() -> Wake {
        let fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .ok()
        .map(Arc::new);
        Wake {
            fired: Arc::new(AtomicBool::new(false)),
            fd,
        }
    }

    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        if let Some(fd) = &self.fd {
            let _ = rustix::io::write(fd.as_fd(), &1u64.to_ne_bytes());
        }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// An open log file and the identity it had when opened.
struct Open {
    file: BufReader<File>,
    ino: (u64, u64),
}

impl Open {
    fn new(file: File) -> io::Result<Open> {
        let m = file.metadata()?;
        Ok(Open {
            file: BufReader::with_capacity(64 * 1024, file),
            ino: (m.dev(), m.ino()),
        })
    }
}

struct Reader {
    path: PathBuf,
    opts: Opts,
    wake: Wake,
    /// The live file (`path` itself) being followed.
    live: Option<Open>,
    /// The start of a line whose newline has not been written yet.
    pending: Vec<u8>,
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_if_exists(path: &Path) -> Result<Option<File>, tonic::Status> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(tonic::Status::internal(format!(
            "opening the log {}: {e}",
            path.display()
        ))),
    }
}

fn read_failed(path: &Path, e: &io::Error) -> Stop {
    Stop::Failed(tonic::Status::internal(format!(
        "reading the log {}: {e}",
        path.display()
    )))
}

/// Complete, non-empty lines in `f` from its current position, plus a last line without its
/// newline when `count_partial` and it is a whole entry already; the position is restored.
fn count_lines(f: &mut File, count_partial: bool) -> io::Result<u64> {
    let start = f.stream_position()?;
    let mut r = BufReader::with_capacity(64 * 1024, &mut *f);
    let mut n = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let blank = line.iter().all(u8::is_ascii_whitespace);
        if line.ends_with(b"\n") {
            n += u64::from(!blank);
        } else if count_partial && !blank && parse_line(&line).is_some() {
            n += 1;
        }
    }
    drop(r);
    f.seek(io::SeekFrom::Start(start))?;
    Ok(n)
}

impl Reader {
    fn new(path: PathBuf, opts: Opts, wake: Wake) -> Reader {
        Reader {
            path,
            opts,
            wake,
            live: None,
            pending: Vec::new(),
        }
    }

    fn run(mut self, out: &mut Sink) -> Result<(), tonic::Status> {
        match self.run_inner(out) {
            Ok(()) | Err(Stop::Done) => Ok(()),
            Err(Stop::Failed(s)) => Err(s),
        }
    }

    fn run_inner(&mut self, out: &mut Sink) -> Flow {
        // Open every file first, oldest first, so a rotation while we read loses nothing.
        let mut files: Vec<(PathBuf, File)> = Vec::new();
        let mut n = 1;
        while let Some(f) = open_if_exists(&rotated(&self.path, n)).map_err(Stop::Failed)? {
            files.push((rotated(&self.path, n), f));
            n += 1;
        }
        files.reverse();
        let live = open_if_exists(&self.path).map_err(Stop::Failed)?;
        if let Some(f) = live {
            files.push((self.path.clone(), f));
        }
        let has_live = files.last().is_some_and(|(p, _)| *p == self.path);

        // Tail: count, then skip all but the last N.
        let mut skip = 0u64;
        if self.opts.tail >= 0 {
            let last = files.len();
            let mut total = 0u64;
            for (i, (p, f)) in files.iter_mut().enumerate() {
                let partial_counts = !(self.opts.follow && has_live && i + 1 == last);
                total += count_lines(f, partial_counts).map_err(|e| read_failed(p, &e))?;
            }
            skip = total.saturating_sub(u64::try_from(self.opts.tail).unwrap_or(0));
        }

        let count = files.len();
        for (i, (p, f)) in files.into_iter().enumerate() {
            let is_live = has_live && i + 1 == count;
            let mut open = Open::new(f).map_err(|e| read_failed(&p, &e))?;
            let hold_partial = self.opts.follow && is_live;
            self.read_lines(&mut open.file, &p, out, &mut skip, hold_partial)?;
            if is_live {
                self.live = Some(open);
            }
        }
        if !self.opts.follow {
            return Ok(());
        }
        self.follow(out)
    }

    /// Read `r` to its end, line by line, skipping the first `skip` lines. A last line without
    /// its newline is kept in `pending` when `hold_partial`, else parsed as is.
    fn read_lines(
        &mut self,
        r: &mut impl BufRead,
        p: &Path,
        out: &mut Sink,
        skip: &mut u64,
        hold_partial: bool,
    ) -> Flow {
        let mut line = std::mem::take(&mut self.pending);
        loop {
            let n = r
                .read_until(b'\n', &mut line)
                .map_err(|e| read_failed(p, &e))?;
            if n == 0 || !line.ends_with(b"\n") {
                break;
            }
            self.one(&line, out, skip)?;
            line.clear();
        }
        if !line.is_empty() {
            if hold_partial {
                self.pending = line;
            } else {
                self.one(&line, out, skip)?;
            }
        }
        Ok(())
    }

    fn one(&self, line: &[u8], out: &mut Sink, skip: &mut u64) -> Flow {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if *skip > 0 {
            *skip -= 1;
            return Ok(());
        }
        out.line(line)
    }

    fn follow(&mut self, out: &mut Sink) -> Flow {
        let watch = Watch::new(&self.path);
        let mut skip = 0;
        loop {
            // Seen before the read, so the read after the exit drains everything written.
            let exiting = self.wake.fired();
            self.catch_up(out, &mut skip)?;
            if exiting {
                let rest = std::mem::take(&mut self.pending);
                return self.one(&rest, out, &mut skip);
            }
            if out.gone() {
                return Err(Stop::Done);
            }
            if self.opts.until > 0 && crate::events::now_unix_nanos() > self.opts.until {
                return Err(Stop::Done);
            }
            watch.wait(&self.wake);
        }
    }

    /// Read what was appended; follow a rotation (drain the old file, any file rotated past
    /// since, then the new live one).
    fn catch_up(&mut self, out: &mut Sink, skip: &mut u64) -> Flow {
        let path = self.path.clone();
        if let Some(mut live) = self.live.take() {
            self.read_lines(&mut live.file, &path, out, skip, true)?;
            let now = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
            if now == Some(live.ino) {
                self.live = Some(live);
                return Ok(());
            }
            // Rotated: the old file may have been written to up to the rename.
            self.read_lines(&mut live.file, &path, out, skip, true)?;
            let rest = std::mem::take(&mut self.pending);
            self.one(&rest, out, skip)?;
            // If it went further than `.1`, the files between are newer than it.
            let mut n = 1;
            let mut found = None;
            while let Ok(m) = std::fs::metadata(rotated(&path, n)) {
                if (m.dev(), m.ino()) == live.ino {
                    found = Some(n);
                    break;
                }
                n += 1;
            }
            if let Some(k) = found {
                for j in (1..k).rev() {
                    let p = rotated(&path, j);
                    if let Some(f) = open_if_exists(&p).map_err(Stop::Failed)? {
                        let mut r = BufReader::new(f);
                        self.read_lines(&mut r, &p, out, skip, false)?;
                    }
                }
            }
        }
        if self.live.is_none() {
            if let Some(f) = open_if_exists(&path).map_err(Stop::Failed)? {
                let mut open = Open::new(f).map_err(|e| read_failed(&path, &e))?;
                self.read_lines(&mut open.file, &path, out, skip, true)?;
                self.live = Some(open);
            }
        }
        Ok(())
    }
}

/// inotify on the log's directory (creation, writes, renames), or nothing if that fails (then
/// the follower polls every [`IDLE`]).
struct Watch {
    fd: Option<OwnedFd>,
}

impl Watch {
    fn new(path: &Path) -> Watch {
        use rustix::fs::inotify;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .ok()
            .filter(|fd| {
                inotify::add_watch(
                    fd,
                    dir,
                    inotify::WatchFlags::MODIFY
                        | inotify::WatchFlags::CREATE
                        | inotify::WatchFlags::MOVED_TO
                        | inotify::WatchFlags::MOVED_FROM
                        | inotify::WatchFlags::CLOSE_WRITE,
                )
                .is_ok()
            });
        Watch { fd }
    }

    /// Sleep until the directory changes, the exit signal fires or [`IDLE`] passes.
    fn wait(&self, wake: &Wake) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: i64::try_from(IDLE.as_nanos()).unwrap_or(250_000_000),
        };
        let mut fds = Vec::with_capacity(2);
        if let Some(fd) = &self.fd {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        if let Some(fd) = &wake.fd {
            fds.push(PollFd::new(fd.as_ref(), PollFlags::IN));
        }
        let _ = poll(&mut fds, Some(&timeout));
        drop(fds);
        // Empty the inotify queue; what changed does not matter, the reader looks.
        if let Some(fd) = &self.fd {
            let mut buf = [0u8; 4096];
            while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// One json-file line as an entry, or `None` when it is not one.
fn parse_line(line: &[u8]) -> Option<LogEntry> {
    #[derive(serde::Deserialize)]
    struct Line {
        log: String,
        stream: String,
        #[serde(default)]
        time: String,
    }
    let l: Line = serde_json::from_slice(line).ok()?;
    let stream = match l.stream.as_str() {
        "stdout" => 1,
        "stderr" => 2,
        _ => return None,
    };
    Some(LogEntry {
        stream,
        data: l.log.into_bytes(),
        time_unix_nanos: parse_rfc3339_nanos(&l.time).unwrap_or(0),
    })
}

/// RFC 3339 (`2026-11-30T17:45:39.123456789Z`, or with a `+01:00` offset) in unix nanoseconds.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = (i - start).min(9);
        if digits == 0 {
            return None;
        }
        nanos *= 10i64.pow(u32::try_from(9 - digits).ok()?);
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *c == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures_util::StreamExt;

    use super::*;

    const T0: i64 = 1_796_000_000_000_000_000;

    fn time(n: i64) -> String {
        // T0 + n seconds, as the shim writes it.
        let ns = T0 + n * 1_000_000_000 + 123_456_789;
        let secs = ns.div_euclid(1_000_000_000);
        let frac = ns.rem_euclid(1_000_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (if m <= 2 { y + 1 } else { y }, m, d)
    }

    fn line(n: i64, stream: &str, text: &str) -> String {
        format!(
            "{}\n",
            serde_json::json!({"log": format!("{text}\n"), "stream": stream, "time": time(n)})
        )
    }

    fn req(tail: i64) -> LogsRequest {
        LogsRequest {
            tail,
            stdout: true,
            stderr: true,
            ..LogsRequest::default()
        }
    }

    async fn texts(s: LogStream) -> Vec<String> {
        s.map(|e| {
            let e = e.expect("log entry");
            String::from_utf8(e.data).unwrap().trim_end().to_owned()
        })
        .collect()
        .await
    }

    /// Three files: `.2` has 1-3, `.1` has 4-6 (7 on stderr), the live one 8-9 and a partial line.
    fn rotated_set() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut two = String::new();
        for n in 1..=3 {
            two += &line(n, "stdout", &format!("l{n}"));
        }
        let mut one = String::new();
        for n in 4..=6 {
            one += &line(n, "stdout", &format!("l{n}"));
        }
        one += &line(7, "stderr", "l7");
        let mut live = line(8, "stdout", "l8");
        live += "\n"; // blank lines are not entries
        live += &line(9, "stderr", "l9");
        live += r#"{"log":"half"#;
        std::fs::write(rotated(&path, 2), two).unwrap();
        std::fs::write(rotated(&path, 1), one).unwrap();
        std::fs::write(&path, live).unwrap();
        (dir, path)
    }

    #[test]
    fn rfc3339_parses_like_go() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos("2026-11-30T17:45:39.123456789Z"),
            Some(1_796_060_739_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_nanos("2026-11-30T18:45:39.5+01:00"),
            Some(1_796_060_739_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2026-11-30 17:45:39Z"),
            Some(1_796_060_739_000_000_000)
        );
        assert_eq!(parse_rfc3339_nanos("2026-13-30T17:45:39Z"), None);
        assert_eq!(parse_rfc3339_nanos("yesterday"), None);
        assert_eq!(parse_rfc3339_nanos("2026-11-30T17:45:39."), None);
        assert_eq!(
            parse_rfc3339_nanos(&time(0)),
            Some(T0 + 123_456_789),
            "{}",
            time(0)
        );
    }

    #[tokio::test]
    async fn everything_oldest_file_first_without_the_partial_line() {
        let (_d, path) = rotated_set();
        let got = texts(read(path, &req(-1), None)).await;
        assert_eq!(got, ["l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8", "l9"]);
    }

    #[tokio::test]
    async fn tail_counts_across_rotated_files() {
        let (_d, path) = rotated_set();
        let got = texts(read(path.clone(), &req(4), None)).await;
        assert_eq!(got, ["l6", "l7", "l8", "l9"]);
        assert!(texts(read(path.clone(), &req(0), None)).await.is_empty());
        assert_eq!(texts(read(path, &req(100), None)).await.len(), 9);
    }

    #[tokio::test]
    async fn streams_since_and_until_select() {
        let (_d, path) = rotated_set();
        let only_err = LogsRequest {
            stdout: false,
            ..req(-1)
        };
        assert_eq!(
            texts(read(path.clone(), &only_err, None)).await,
            ["l7", "l9"]
        );
        // Tail counts before the stream selection, as Docker's json-file reader does.
        let tail_err = LogsRequest {
            stdout: false,
            ..req(2)
        };
        assert_eq!(texts(read(path.clone(), &tail_err, None)).await, ["l9"]);
        // Neither stream named: both.
        let neither = LogsRequest {
            stdout: false,
            stderr: false,
            ..req(-1)
        };
        assert_eq!(texts(read(path.clone(), &neither, None)).await.len(), 9);
        let window = LogsRequest {
            since_unix_nanos: T0 + 3 * 1_000_000_000,
            until_unix_nanos: T0 + 5 * 1_000_000_000 + 123_456_789,
            ..req(-1)
        };
        assert_eq!(
            texts(read(path.clone(), &window, None)).await,
            ["l3", "l4", "l5"]
        );
        // Timestamps come through.
        let first = read(path, &req(1), None).next().await.unwrap().unwrap();
        assert_eq!(first.time_unix_nanos, T0 + 9 * 1_000_000_000 + 123_456_789);
        assert_eq!(first.stream, 2);
    }

    #[tokio::test]
    async fn a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            texts(read(dir.path().join("nope.log"), &req(-1), None))
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn follow_sees_appends_partial_lines_and_rotations_then_drains_on_exit() {
        let (_d, path) = rotated_set();
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<()>();
        let exited: ExitSignal = Box::pin(async move {
            let _ = exit_rx.await;
        });
        let follow = LogsRequest {
            follow: true,
            ..req(1)
        };
        let mut s = read(path.clone(), &follow, Some(exited));
        let mut next = async || {
            let e = s.next().await.expect("an entry").expect("not an error");
            String::from_utf8(e.data).unwrap().trim_end().to_owned()
        };
        assert_eq!(next().await, "l9");
        // The partial line is completed.
        let append = |p: &Path, text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append(
            &path,
            r#"\n","stream":"stdout","time":"2026-11-30T17:45:39Z"}"#,
        );
        append(&path, "\n");
        assert_eq!(next().await, "half");
        append(&path, &line(10, "stdout", "l10"));
        assert_eq!(next().await, "l10");
        // Rotate the way the shim does: shift, rename, start a new file.
        std::fs::rename(rotated(&path, 2), rotated(&path, 3)).unwrap();
        std::fs::rename(rotated(&path, 1), rotated(&path, 2)).unwrap();
        append(
            &path,
            &line(11, "stdout", "l11 written just before the rename"),
        );
        std::fs::rename(&path, rotated(&path, 1)).unwrap();
        append(&path, &line(12, "stderr", "l12"));
        assert_eq!(next().await, "l11 written just before the rename");
        assert_eq!(next().await, "l12");
        // Exit: what was written before it is drained, then the stream ends.
        append(&path, &line(16, "stdout", "l16"));
        append(
            &path,
            r#"{"log":"last\n","stream":"stdout","time":"2026-11-30T17:45:39Z"}"#,
        );
        exit_tx.send(()).unwrap();
        assert_eq!(next().await, "l16");
        assert_eq!(next().await, "last");
        assert!(s.next().await.is_none());
    }

    #[test]
    fn two_rotations_between_looks_read_the_file_in_between() {
        let (_d, path) = rotated_set();
        let (tx, mut rx) = mpsc::channel(BUFFER);
        let opts = Opts {
            follow: true,
            ..Opts::from(&req(-1))
        };
        let mut sink = Sink { tx, opts };
        let mut reader = Reader::new(path.clone(), opts, Wake::new());
        let mut live = Open::new(File::open(&path).unwrap()).unwrap();
        let mut skip = 0;
        reader
            .read_lines(&mut live.file, &path, &mut sink, &mut skip, true)
            .unwrap_or_else(|_| panic!("reading"));
        reader.live = Some(live);
        let mut writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        // Rotation 1 (the live file A becomes .1, B is created), B gets l13; rotation 2 (A to
        // .2, B to .1, C created); A got one more line through a descriptor kept open.
        std::fs::rename(&path, rotated(&path, 1)).unwrap();
        std::fs::write(&path, line(13, "stdout", "l13")).unwrap();
        std::fs::rename(rotated(&path, 1), rotated(&path, 2)).unwrap();
        std::fs::rename(&path, rotated(&path, 1)).unwrap();
        std::fs::write(&path, line(15, "stdout", "l15")).unwrap();
        writer
            .write_all(br#"\n","stream":"stdout","time":"2026-11-30T17:45:39Z"}"#)
            .unwrap();
        writer.write_all(b"\n").unwrap();
        writer
            .write_all(line(14, "stdout", "l14").as_bytes())
            .unwrap();
        drop(writer);
        while rx.try_recv().is_ok() {}
        reader
            .catch_up(&mut sink, &mut skip)
            .unwrap_or_else(|_| panic!("catching up"));
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(
                String::from_utf8(e.unwrap().data)
                    .unwrap()
                    .trim_end()
                    .to_owned(),
            );
        }
        assert_eq!(got, ["half", "l14", "l13", "l15"]);
    }

    #[tokio::test]
    async fn follow_waits_for_a_log_that_does_not_exist_yet_and_ends_when_the_client_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.log");
        let follow = LogsRequest {
            follow: true,
            ..req(-1)
        };
        let mut s = read(path.clone(), &follow, None);
        std::fs::write(&path, line(1, "stdout", "born")).unwrap();
        let e = s.next().await.unwrap().unwrap();
        assert_eq!(e.data, b"born\n");
        drop(s);
    }
}
