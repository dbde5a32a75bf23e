//! The wire format between the library and the shim, shared by both sides.
//!
//! Everything is a frame: `[u8 kind][u32 length, big endian][payload]`. A connection carries one
//! request (`Q`, payload `verb args...` on the first line, an optional body after it) and one
//! answer (`K` ok / `E` error). `attach` and a non-detached `exec` then turn the connection into
//! a stream: stdin (`0`), close-stdin (`C`) and resize (`W`) frames in; stdout (`1`), stderr (`2`)
//! and exit (`X`) frames out. Text payloads are plain ASCII words, so the shim's serve loop needs
//! no JSON parser (its resident set is a measured target).

use std::io::{self, Read, Write};

use crate::ExitInfo;

/// Client -> shim: a request.
pub(crate) const REQUEST: u8 = b'Q';
/// Shim -> client: success, with the answer's text.
pub(crate) const OK: u8 = b'K';
/// Shim -> client: failure; the first byte says whose (`r` runtime, `x` refused by the shim).
pub(crate) const ERR: u8 = b'E';
/// Client -> shim: bytes for stdin.
pub(crate) const STDIN: u8 = b'0';
/// Shim -> client: stdout bytes.
pub(crate) const STDOUT: u8 = b'1';
/// Shim -> client: stderr bytes.
pub(crate) const STDERR: u8 = b'2';
/// Client -> shim: close stdin.
pub(crate) const CLOSE_STDIN: u8 = b'C';
/// Client -> shim: resize, payload `u16 width, u16 height` big endian.
pub(crate) const RESIZE: u8 = b'W';
/// Shim -> client: the process exited (payload: [`encode_exit`]); nothing follows.
pub(crate) const EXIT: u8 = b'X';

/// The largest payload either side accepts.
pub(crate) const MAX_FRAME: usize = 1 << 20;

/// Append one frame to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Take one complete frame off the front of `buf`, if there is one. `Err` if the announced
/// length is too large.
pub(crate) fn take_frame(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, ()> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(());
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Ok(Some((kind, payload)))
}

/// Write one frame (blocking).
pub(crate) fn write_frame(mut w: impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(5 + payload.len());
    push_frame(&mut out, kind, payload);
    w.write_all(&out)
}

/// Read one frame (blocking); `None` at a clean end of stream.
pub(crate) fn read_frame(mut r: impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than the {MAX_FRAME} allowed"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// `code signal finished_nanos oom`, signal -1 for none.
pub(crate) fn encode_exit(e: &ExitInfo) -> String {
    format!(
        "{} {} {} {}",
        e.code,
        e.signal.unwrap_or(-1),
        e.finished_at_unix_nanos,
        u8::from(e.oom_killed)
    )
}

/// The inverse of [`encode_exit`].
pub(crate) fn decode_exit(s: &str) -> Option<ExitInfo> {
    let mut it = s.split_ascii_whitespace();
    let code = it.next()?.parse().ok()?;
    let signal: i32 = it.next()?.parse().ok()?;
    let finished = it.next()?.parse().ok()?;
    let oom = it.next()? == "1";
    Some(ExitInfo {
        code,
        signal: (signal > 0).then_some(signal),
        finished_at_unix_nanos: finished,
        oom_killed: oom,
    })
}

/// Exec ids travel as words and name files in the bundle: keep them tame.
pub(crate) fn valid_exec_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !id.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split() {
        let mut buf = Vec::new();
        push_frame(&mut buf, STDOUT, b"hello");
        push_frame(&mut buf, EXIT, b"");
        let mut partial = buf[..7].to_vec();
        assert_eq!(take_frame(&mut partial), Ok(None));
        assert_eq!(take_frame(&mut buf), Ok(Some((STDOUT, b"hello".to_vec()))));
        assert_eq!(take_frame(&mut buf), Ok(Some((EXIT, Vec::new()))));
        assert!(buf.is_empty());
        let mut huge = vec![STDIN, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(take_frame(&mut huge), Err(()));
    }

    #[test]
    fn exit_round_trips() {
        let e = ExitInfo {
            code: 137,
            signal: Some(9),
            finished_at_unix_nanos: 1_700_000_000_123_456_789,
            oom_killed: true,
        };
        assert_eq!(decode_exit(&encode_exit(&e)), Some(e));
        let e = ExitInfo {
            code: 3,
            signal: None,
            finished_at_unix_nanos: 5,
            oom_killed: false,
        };
        assert_eq!(decode_exit(&encode_exit(&e)), Some(e));
    }

    #[test]
    fn exec_ids() {
        assert!(valid_exec_id("abc-1_2.x"));
        assert!(!valid_exec_id(""));
        assert!(!valid_exec_id("../x"));
        assert!(!valid_exec_id("a b"));
        assert!(!valid_exec_id(".hidden"));
    }
}
