use std::path::PathBuf;

/// What failed while building a container's spec or parsing a flag value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag value is invalid: Docker's wording, e.g.
    /// `invalid argument "12x" for "--memory": invalid size: '12x'`.
    #[error("invalid argument \"{value}\" for \"{flag}\": {reason}")]
    InvalidArgument {
        /// The flag, e.g. `--memory`.
        flag: String,
        /// The value as given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The container's configuration cannot be turned into a spec (e.g. "no command specified",
    /// "unable to find user X: no matching entries in passwd file").
    #[error("{0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done on which path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `--security-opt seccomp=PATH` profile is unreadable or malformed.
    #[error("invalid seccomp profile {path}: {reason}")]
    SeccompProfile {
        /// The profile file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// The same error reported for another flag: `parse::bytes` names `--memory`; the CLI calls
    /// `.for_flag("--shm-size")` when it parses `--shm-size`. Errors other than
    /// [`Error::InvalidArgument`] are returned unchanged.
    pub fn for_flag(self, flag: &str) -> Self {
        match self {
            Error::InvalidArgument { value, reason, .. } => Error::InvalidArgument {
                flag: flag.to_owned(),
                value,
                reason,
            },
            other => other,
        }
    }

    /// The reason alone (without `invalid argument "V" for "F": `), for callers such as clap
    /// value parsers that add their own prefix naming the flag and value.
    pub fn reason(&self) -> String {
        match self {
            Error::InvalidArgument { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn invalid(flag: &str, value: &str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            flag: flag.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
