//! The parent <-> child synchronisation channel: a `SOCK_STREAM` socketpair carrying
//! length-prefixed JSON messages.
//!
//! Invariant: both ends are close-on-exec, so the parent sees end-of-file exactly when the child
//! has exec'd the user's program (or died); a child failure is always sent as
//! [`Msg::Error`] before the child exits.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// Messages between the runtime and the process it is setting up.
#[derive(Debug, Serialize, Deserialize)]
pub enum Msg {
    /// Parent -> init: everything the init needs.
    Init(Box<super::InitConfig>),
    /// Helper -> parent: the pid of the init it forked.
    Pid(i32),
    /// Init -> parent: mounts are done; run `prestart` and `createRuntime` hooks now.
    RunCreateRuntimeHooks,
    /// Parent -> init: hooks done, carry on.
    HooksDone,
    /// Init -> parent: set up and waiting to be started.
    Ready,
    /// Parent -> init (`run` mode, no fifo): start now.
    Start,
    /// Child -> parent: setup failed.
    Error(String),
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair (parent end, child end), both close-on-exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .ctx(|| "create the runtime's synchronisation socket pair")?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Wrap an inherited fd.
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    /// Send one message.
    pub fn send(&self, msg: &Msg) -> Result<()> {
        let body = serde_json::to_vec(msg)
            .map_err(|e| Error::sys("encode setup message", std::io::Error::other(e)))?;
        let len = u32::try_from(body.len())
            .map_err(|_| Error::InvalidArgument("setup message larger than 4 GiB".into()))?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&body);
        (&File(self.fd.as_fd()))
            .write_all(&frame)
            .ctx(|| "send setup message")
    }

    /// Receive one message; `None` at end of file.
    pub fn recv(&self) -> Result<Option<Msg>> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match (&File(self.fd.as_fd())).read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(Error::Child("setup channel closed mid-message".into())),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::sys("receive setup message", e)),
            }
        }
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        (&File(self.fd.as_fd()))
            .read_exact(&mut body)
            .ctx(|| "receive setup message")?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::sys("decode setup message", std::io::Error::other(e)))
    }

    /// Receive and expect a specific message; an `Error` from the other side becomes our error,
    /// end of file becomes `eof`.
    pub fn expect(&self, what: &str, want: impl Fn(&Msg) -> bool) -> Result<Msg> {
        match self.recv()? {
            Some(Msg::Error(e)) => Err(Error::Child(e)),
            Some(m) if want(&m) => Ok(m),
            Some(m) => Err(Error::Child(format!(
                "protocol error: expected {what}, got {m:?}"
            ))),
            None => Err(Error::ChannelClosed(what.to_string())),
        }
    }

    /// The raw fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Give up the fd.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// `Read`/`Write` on a borrowed fd without taking ownership.
struct File<'a>(BorrowedFd<'a>);

impl Read for &File<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        rustix::io::read(self.0, buf).map_err(Into::into)
    }
}

impl Write for &File<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        rustix::io::write(self.0, buf).map_err(Into::into)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::Pid(42)).unwrap();
        a.send(&Msg::Error("boom".into())).unwrap();
        drop(a);
        assert!(matches!(b.recv().unwrap(), Some(Msg::Pid(42))));
        let err = b.expect("ready", |m| matches!(m, Msg::Ready)).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert!(b.recv().unwrap().is_none());
    }
}
