//! The library's error type.

use std::io;
use std::path::PathBuf;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to (or starting) a shim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime refused or failed (create, exec, kill, ...); the message is the runtime's own.
    #[error("{0}")]
    Runtime(String),

    /// No shim answers on the bundle's socket (it exited, or was never started).
    #[error("connect to the shim at {}: {source} (is the shim running?)", .path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing, on what.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The shim exited while starting, without saying why.
    #[error("the shim exited before reporting whether {0}")]
    ShimDied(String),

    /// The shim refused a request (unknown exec id, wrong state, ...).
    #[error("{0}")]
    Refused(String),

    /// The shim answered something this library does not understand (version mismatch?).
    #[error("shim protocol error: {0}")]
    Protocol(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The exit code Docker reports when a process could not be started: 127 when the
    /// executable was not found, 126 when it was found but could not be run; `None` for other
    /// errors.
    pub fn exit_code_hint(&self) -> Option<i32> {
        let Error::Runtime(msg) = self else {
            return None;
        };
        if msg.contains("executable file not found") || msg.contains("no such file or directory") {
            Some(127)
        } else if msg.contains("permission denied")
            || msg.contains("is a directory")
            || msg.contains("exec format error")
            || msg.contains("not executable")
        {
            Some(126)
        } else {
            None
        }
    }
}
