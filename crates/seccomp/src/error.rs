//! Errors compiling, validating and loading a seccomp profile.

/// Errors compiling or loading a profile.
///
/// Every message names what failed and, where there is one, what the user can do about it.
/// Profile errors name the `config.json` field (`linux.seccomp.syscalls[3].args[0].index`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The profile is malformed: `field` is the JSON path of the offending value.
    #[error("invalid seccomp profile: {field}: {message}")]
    Invalid {
        /// JSON path in `config.json`, e.g. `linux.seccomp.syscalls[3].errnoRet`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The profile is well formed but asks for something this host cannot do (an action or
    /// flag the running kernel lacks, an architecture the linked libseccomp does not know).
    #[error("unsupported seccomp profile: {field}: {message}")]
    Unsupported {
        /// JSON path in `config.json`.
        field: String,
        /// What is missing on this host.
        message: String,
    },

    /// libseccomp refused an operation while compiling the profile.
    #[error("libseccomp failed to {context}: {source}")]
    Libseccomp {
        /// What was being done, naming the profile field where there is one.
        context: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },

    /// Reading the BPF program back from libseccomp failed.
    #[error("export the compiled seccomp filter from libseccomp: {0}")]
    Export(#[source] std::io::Error),

    /// The compiled program is longer than the kernel accepts for one filter.
    #[error(
        "the compiled seccomp filter has {instructions} BPF instructions but the kernel accepts at \
         most {max}: list fewer architectures in linux.seccomp.architectures or merge rules"
    )]
    TooLarge {
        /// Length of the compiled program.
        instructions: usize,
        /// `BPF_MAXINSNS`.
        max: usize,
    },

    /// A [`Program`](crate::Program) is not a well-formed seccomp BPF program (for example a
    /// corrupted state file).
    #[error("malformed seccomp program: {0}")]
    Malformed(String),

    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed. Constructing this variant does not allocate,
    /// so it is safe to return from a freshly forked child.
    #[error("load the seccomp filter (flags {flags:#x}): {}{}", std::io::Error::from_raw_os_error(*errno), load_hint(*errno))]
    Load {
        /// The `errno` the kernel returned.
        errno: i32,
        /// The `SECCOMP_FILTER_FLAG_*` bits the load used.
        flags: u32,
    },

    /// `SECCOMP_FILTER_FLAG_TSYNC` could not synchronise another thread of the process.
    #[error(
        "load the seccomp filter with SECCOMP_FILTER_FLAG_TSYNC: thread {tid} could not be \
         synchronised (it has diverging seccomp filters); load the filter before starting threads"
    )]
    Tsync {
        /// The thread the kernel named.
        tid: i64,
    },
}

/// What the user can do about a failed `seccomp(SECCOMP_SET_MODE_FILTER)`.
fn load_hint(errno: i32) -> &'static str {
    match errno {
        libc::EACCES => {
            " (the process has neither no_new_privs nor CAP_SYS_ADMIN: set \
             process.noNewPrivileges or keep CAP_SYS_ADMIN until the filter is loaded)"
        }
        libc::EINVAL => {
            " (the kernel rejected the program or a flag: check `berth-runtime features` for the \
             flags this kernel supports)"
        }
        libc::ENOMEM => {
            " (the process's seccomp filters together exceed the kernel's limit of 32768 \
             instructions: use a smaller profile)"
        }
        libc::EBUSY => {
            " (another filter with a notification listener is already installed in this process: \
             only one SCMP_ACT_NOTIFY profile can be stacked)"
        }
        libc::ENOSYS => " (the kernel is built without CONFIG_SECCOMP_FILTER)",
        _ => "",
    }
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn libseccomp(
        context: impl Into<String>,
        source: libseccomp::error::SeccompError,
    ) -> Self {
        Self::Libseccomp {
            context: context.into(),
            source,
        }
    }
}
