//! Docker's json-file log: one JSON object per line, rotated by size.
//!
//! Output is split into entries at newlines; a line longer than [`MAX_LINE`] bytes is written
//! as several entries, all but the last without a trailing `\n` (as Docker marks partial
//! messages). A failed write (ENOSPC, EIO, ...) drops the entry, is counted and reported in the
//! shim's state, and never blocks or kills the shim.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::LogOpts;
use crate::text::{escape_json_into, now_nanos, rfc3339_nanos};

/// Lines longer than this are split into partial entries (Docker's buffer size).
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// The json-file writer of one container.
pub(crate) struct JsonLog {
    path: PathBuf,
    max_size: u64,
    max_file: u32,
    file: Option<File>,
    size: u64,
    /// Unterminated output per stream (0 stdout, 1 stderr).
    partial: [Vec<u8>; 2],
    /// Entries dropped because a write failed.
    pub(crate) dropped: u64,
    /// The last write or rotation error.
    pub(crate) error: Option<String>,
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

impl JsonLog {
    /// Open (append to) the log file. Failing here fails the container's creation.
    pub(crate) fn open(opts: &LogOpts) -> Result<JsonLog, String> {
        let file = open_file(&opts.path)
            .map_err(|e| format!("open the log file {}: {e}", opts.path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(JsonLog {
            path: opts.path.clone(),
            max_size: opts.max_size,
            max_file: opts.max_file.max(1),
            file: Some(file),
            size,
            partial: [Vec::new(), Vec::new()],
            dropped: 0,
            error: None,
        })
    }

    /// Log output of `stream` (0 stdout, 1 stderr).
    pub(crate) fn write(&mut self, stream: usize, data: &[u8]) {
        let stream = stream.min(1);
        let time = rfc3339_nanos(now_nanos());
        let mut buf = std::mem::take(&mut self.partial[stream]);
        buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &buf[start..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i < MAX_LINE => {
                    self.entry(stream, &rest[..=i], &time);
                    start += i + 1;
                }
                _ if rest.len() >= MAX_LINE => {
                    self.entry(stream, &rest[..MAX_LINE], &time);
                    start += MAX_LINE;
                }
                _ => break,
            }
        }
        buf.drain(..start);
        self.partial[stream] = buf;
    }

    /// Write out unterminated output (the stream ended).
    pub(crate) fn flush_partial(&mut self) {
        let time = rfc3339_nanos(now_nanos());
        for stream in 0..2 {
            let buf = std::mem::take(&mut self.partial[stream]);
            if !buf.is_empty() {
                self.entry(stream, &buf, &time);
            }
        }
    }

    fn entry(&mut self, stream: usize, msg: &[u8], time: &str) {
        let mut line = Vec::with_capacity(msg.len() + 64);
        line.extend_from_slice(b"{\"log\":\"");
        escape_json_into(&mut line, msg);
        line.extend_from_slice(b"\",\"stream\":\"");
        line.extend_from_slice(STREAMS[stream].as_bytes());
        line.extend_from_slice(b"\",\"time\":\"");
        line.extend_from_slice(time.as_bytes());
        line.extend_from_slice(b"\"}\n");
        let len = line.len() as u64;
        if self.max_size > 0 && self.size > 0 && self.size + len > self.max_size {
            self.rotate();
        }
        let Some(file) = self.file.as_mut() else {
            self.dropped += 1;
            return;
        };
        match file.write_all(&line) {
            Ok(()) => self.size += len,
            Err(e) => {
                self.dropped += 1;
                self.error = Some(format!("write {}: {e}", self.path.display()));
                // What did get written still counts towards rotation.
                self.size = file.metadata().map(|m| m.len()).unwrap_or(self.size);
            }
        }
    }

    /// `<path>.N-1` is dropped, `<path>.i` becomes `<path>.i+1`, `<path>` becomes `<path>.1`.
    fn rotate(&mut self) {
        let name = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        let result = (|| -> std::io::Result<()> {
            if self.max_file <= 1 {
                if let Some(f) = self.file.as_ref() {
                    f.set_len(0)?;
                }
                return Ok(());
            }
            let last = name(self.max_file - 1);
            match std::fs::remove_file(&last) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            for i in (1..self.max_file - 1).rev() {
                match std::fs::rename(name(i), name(i + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            std::fs::rename(&self.path, name(1))?;
            self.file = Some(open_file(&self.path)?);
            Ok(())
        })();
        match result {
            Ok(()) => self.size = 0,
            Err(e) => {
                self.error = Some(format!("rotate {}: {e}", self.path.display()));
                // Keep appending to whatever file we have; try again at the next entry.
                if self.file.is_none() {
                    self.file = open_file(&self.path).ok();
                }
            }
        }
    }
}

fn open_file(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn splits_lines_and_long_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = JsonLog::open(&LogOpts {
            path: path.clone(),
            max_size: 0,
            max_file: 1,
        })
        .unwrap();
        log.write(0, b"one\ntw");
        log.write(1, b"err\n");
        log.write(0, b"o\n");
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        log.write(0, &long);
        log.write(0, b"\n");
        log.write(1, b"tail");
        log.flush_partial();
        let got = lines(&path);
        let logs: Vec<(&str, &str)> = got
            .iter()
            .map(|v| (v["log"].as_str().unwrap(), v["stream"].as_str().unwrap()))
            .collect();
        assert_eq!(logs[0], ("one\n", "stdout"));
        assert_eq!(logs[1], ("err\n", "stderr"));
        assert_eq!(logs[2], ("two\n", "stdout"));
        assert_eq!(logs[3].0.len(), MAX_LINE);
        assert_eq!(logs[4].0.len(), MAX_LINE);
        assert_eq!(logs[5].0, "x".repeat(10) + "\n");
        assert_eq!(logs[6], ("tail", "stderr"));
        assert_eq!(logs.len(), 7);
        let t = got[0]["time"].as_str().unwrap();
        assert!(t.ends_with('Z') && t.len() == 30, "{t}");
        assert_eq!(log.dropped, 0);
    }

    #[test]
    fn rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = JsonLog::open(&LogOpts {
            path: path.clone(),
            max_size: 300,
            max_file: 3,
        })
        .unwrap();
        for i in 0..40 {
            log.write(0, format!("line {i}\n").as_bytes());
        }
        let p = |s: &str| dir.path().join(format!("c-json.log{s}"));
        assert!(p("").exists() && p(".1").exists() && p(".2").exists());
        assert!(!p(".3").exists());
        for s in ["", ".1", ".2"] {
            assert!(std::fs::metadata(p(s)).unwrap().len() <= 300);
        }
        let last = lines(&path);
        assert_eq!(last.last().unwrap()["log"], "line 39\n");
        let older = lines(&p(".1"));
        let first_of_current = last[0]["log"].as_str().unwrap();
        let last_of_older = older.last().unwrap()["log"].as_str().unwrap();
        let n = |s: &str| s.trim().trim_start_matches("line ").parse::<u32>().unwrap();
        assert_eq!(n(last_of_older) + 1, n(first_of_current));
    }

    #[test]
    fn a_full_disk_drops_and_reports() {
        let mut log = JsonLog::open(&LogOpts {
            path: "/dev/full".into(),
            max_size: 0,
            max_file: 1,
        })
        .unwrap();
        log.write(0, b"a\nb\n");
        assert_eq!(log.dropped, 2);
        assert!(
            log.error.as_deref().unwrap().contains("No space left"),
            "{:?}",
            log.error
        );
    }
}
