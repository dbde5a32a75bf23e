//! The local terminal for `-t`: raw mode (restored on every exit path, panics included), its
//! size, and the detach-key scanner.

use std::io::IsTerminal;
use std::sync::Mutex;

use rustix::termios::{self, Termios};

/// The terminal's mode before we made it raw; restored by [`restore_terminal`].
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Put stdin's terminal in raw mode (if it is one). Restored by [`restore_terminal`], which
/// `main` calls on every return and the panic hook calls on a panic.
pub fn make_raw() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(());
    }
    let orig = termios::tcgetattr(&stdin)?;
    let mut raw = orig.clone();
    raw.make_raw();
    // Keep output post-processing off as well (make_raw does); the container's pty does it.
    {
        let mut saved = SAVED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if saved.is_none() {
            *saved = Some(orig);
        }
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        prev(info);
    }));
    termios::tcsetattr(&stdin, termios::OptionalActions::Now, &raw)?;
    Ok(())
}

/// Restore the terminal mode saved by [`make_raw`], if any.
pub fn restore_terminal() {
    let saved = SAVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(t) = saved {
        let _ = termios::tcsetattr(std::io::stdin(), termios::OptionalActions::Now, &t);
    }
}

/// The size of the terminal on stdout (or stdin), as (columns, rows).
pub fn size() -> Option<(u16, u16)> {
    let ws = termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Parse Docker's `--detach-keys` ("ctrl-p,ctrl-q", "ctrl-a,x"); empty disables detaching.
pub fn parse_detach_keys(s: Option<&str>) -> Result<Vec<u8>, String> {
    let s = s.unwrap_or("ctrl-p,ctrl-q");
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for k in s.split(',') {
        let k = k.trim();
        if let Some(c) = k.strip_prefix("ctrl-") {
            let b = match c.as_bytes() {
                [b @ b'a'..=b'z'] => b - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => return Err(format!("invalid detach key {k:?}")),
            };
            out.push(b);
        } else if k.len() == 1 {
            out.push(k.as_bytes()[0]);
        } else {
            return Err(format!("invalid detach key {k:?}"));
        }
    }
    Ok(out)
}

/// Scans stdin bytes for the detach sequence, holding back a partial match.
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    pub fn new(keys: Vec<u8>) -> DetachScanner {
        DetachScanner { keys, matched: 0 }
    }

    /// Feed bytes; returns the bytes to forward and whether the sequence completed.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        if self.keys.is_empty() {
            return (input.to_vec(), false);
        }
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_and_scan() {
        let keys = parse_detach_keys(None).unwrap();
        assert_eq!(keys, vec![16, 17]);
        let mut s = DetachScanner::new(keys);
        assert_eq!(s.feed(b"ab"), (b"ab".to_vec(), false));
        assert_eq!(s.feed(&[16]), (vec![], false));
        assert_eq!(s.feed(b"x"), (vec![16, b'x'], false));
        assert_eq!(s.feed(&[b'y', 16, 17]), (vec![b'y'], true));
        assert!(parse_detach_keys(Some("ctrl-1")).is_err());
        assert_eq!(parse_detach_keys(Some("ctrl-a,x")).unwrap(), vec![1, b'x']);
        let mut none = DetachScanner::new(parse_detach_keys(Some("")).unwrap());
        assert_eq!(none.feed(&[16, 17]), (vec![16, 17], false));
    }
}
