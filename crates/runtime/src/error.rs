//! The runtime's error type.
//!
//! Every variant says what failed and on what; `Display` never repeats the `source()` (the CLI
//! prints the whole chain once, on one line). Messages that containerd's shim and podman's conmon
//! match on are kept verbatim: "container not running", "does not exist".

use std::io;
use std::path::PathBuf;

use crate::state::Status;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a runtime operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `config.json` (or an exec `process.json`) is malformed or invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),

    /// No state directory for this id.
    #[error("container {0} does not exist")]
    NotFound(String),

    /// The id is taken.
    #[error("container with id {0} already exists")]
    Exists(String),

    /// The id has characters we do not accept.
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId {
        /// The rejected id.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The operation is not allowed in the container's current status.
    #[error("{message}")]
    WrongStatus {
        /// The status the container is in.
        status: Status,
        /// What was refused, phrased as runc phrases it where clients match on it.
        message: String,
    },

    /// A system call or file operation failed.
    #[error("{what}")]
    Sys {
        /// What we were doing, including the object (path, pid, fd).
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The container's init or exec process reported a failure during setup.
    #[error("{0}")]
    Child(String),

    /// The other end of the setup channel closed before the step named here.
    #[error("the container process exited before {0}")]
    ChannelClosed(String),

    /// A hook failed.
    #[error("{kind} hook #{index} ({path}) {problem}")]
    Hook {
        /// `prestart`, `createRuntime`, ...
        kind: &'static str,
        /// Position in its list.
        index: usize,
        /// The hook binary.
        path: PathBuf,
        /// What went wrong (exit status with output, timeout, spawn failure).
        problem: String,
    },

    /// cgroup setup or control failed.
    #[error(transparent)]
    Cgroup(#[from] berth_cgroups::Error),

    /// The seccomp profile could not be compiled or loaded.
    #[error(transparent)]
    Seccomp(#[from] berth_seccomp::Error),

    /// A signal name or number we do not know.
    #[error("unknown signal {0:?}: use a name like SIGTERM/TERM or a number from 1 to 64")]
    UnknownSignal(String),

    /// A request this host or this runtime cannot satisfy.
    #[error("{0}")]
    Unsupported(String),

    /// A bad command-line or API argument.
    #[error("{0}")]
    InvalidArgument(String),

    /// A failure that also left cleanup undone; both are reported.
    #[error("{error}; cleaning up also failed: {cleanup}")]
    WithCleanup {
        /// The original failure.
        error: Box<Error>,
        /// The cleanup failure.
        cleanup: Box<Error>,
    },
}

impl Error {
    /// Wrap an OS error with a description of the operation.
    pub fn sys(what: impl Into<String>, source: io::Error) -> Error {
        Error::Sys {
            what: what.into(),
            source,
        }
    }

    /// The same, from a rustix errno.
    pub fn errno(what: impl Into<String>, errno: rustix::io::Errno) -> Error {
        Error::sys(what, errno.into())
    }
}

/// Attach a description to OS errors: `fs::read(p).ctx(|| format!("read {}", p.display()))`.
pub(crate) trait Context<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::sys(what(), e))
    }
}

impl<T> Context<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::errno(what(), e))
    }
}

/// Render an error and its sources on one line, `outer: inner: innermost`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
