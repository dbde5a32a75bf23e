//! OCI seccomp profiles (`linux.seccomp` in `config.json`) compiled to BPF with libseccomp and
//! loaded with the raw `seccomp(2)` syscall.
//!
//! # Design: compile in the parent, load raw in the child
//!
//! * The runtime's parent process calls [`compile`] **once**, before anything of the container
//!   is set up, so a bad profile fails `create` early with an error naming the field. Compiling
//!   validates the profile (runtime-spec rules), checks that the running kernel offers every
//!   action and flag it uses, builds a libseccomp filter, exports it as classic BPF and checks
//!   the result structurally.
//! * The resulting [`Program`] is plain data (serde): the raw instructions, the
//!   `SECCOMP_FILTER_FLAG_*` bits and any warnings. The runtime sends it to the container's
//!   init process and stores it in the state directory for later `exec`s.
//! * The init process (and every `exec`'d process) calls [`Program::load`], which issues
//!   `seccomp(SECCOMP_SET_MODE_FILTER, flags, &sock_fprog)` directly. libseccomp is never used
//!   on this path. [`Program::prepare`] + [`PreparedFilter::load`] split the allocation from
//!   the syscall for callers that must stay async-signal-safe after `fork`.
//!
//! Invariants:
//! * A [`Program`] from [`compile`] is at most [`MAX_INSTRUCTIONS`] long, every jump stays inside
//!   it and it ends in a return. [`Program::prepare`] re-checks this, so a corrupted state file
//!   fails with [`Error::Malformed`] instead of an opaque `EINVAL`.
//! * [`Program::load`] never sets `no_new_privs`: the caller orders that itself, and must either
//!   have set it or still hold `CAP_SYS_ADMIN` (otherwise the kernel answers `EACCES`).
//! * [`Program::needs_listener`] is true exactly when the flags contain
//!   `SECCOMP_FILTER_FLAG_NEW_LISTENER`, and then [`Program::load`] returns the listener fd.
//!
//! # Semantics (compatible with runc)
//!
//! * `defaultAction`/`action`: `SCMP_ACT_KILL` (= `KILL_THREAD`), `KILL_THREAD`, `KILL_PROCESS`,
//!   `TRAP`, `ERRNO`, `TRACE`, `ALLOW`, `LOG`, `NOTIFY`. `defaultErrnoRet`/`errnoRet` is the
//!   errno of `ERRNO` (the data of `TRACE`), `EPERM` when absent; it is an error on any other
//!   action, as the runtime-spec requires.
//! * Rules whose action equals the default action are skipped (libseccomp rejects them).
//!   Syscall names libseccomp does not know are skipped and reported in
//!   [`Program::warnings`]: profiles list syscalls newer than the linked libseccomp.
//! * Argument conditions on distinct indexes form one rule (AND). If any index repeats,
//!   libseccomp cannot express the rule and, like runc, every condition becomes a rule of its
//!   own (OR).
//! * `SCMP_CMP_MASKED_EQ`: `value` is the mask and `valueTwo` the value the masked argument must
//!   equal.
//! * `architectures`: the native architecture is always present; every listed one is added.
//! * `flags`: `SECCOMP_FILTER_FLAG_TSYNC`, `_LOG`, `_SPEC_ALLOW`, `_WAIT_KILLABLE_RECV` (the last
//!   only together with `SCMP_ACT_NOTIFY`); a flag the running kernel rejects is an error.
//! * `SCMP_ACT_NOTIFY` adds `SECCOMP_FILTER_FLAG_NEW_LISTENER` (and `TSYNC_ESRCH` when TSYNC is
//!   also asked for), needs `listenerPath`, may not be the default action and may not name a
//!   syscall in [`NOTIFY_FORBIDDEN_SYSCALLS`].
//! * `ENOSYS` for unknown syscalls: when the default action denies (anything but `ALLOW`,
//!   `LOG`, `TRACE`, or `ERRNO` with `ENOSYS` itself), two things keep libcs' fallbacks working:
//!   1. if no rule names `clone3`, a rule makes `clone3` fail with `ENOSYS` (glibc then falls
//!      back to `clone`, which profiles filter by flags);
//!   2. like runc's `patchbpf`, a stub in front of the libseccomp program returns `ENOSYS` for
//!      every syscall number above the largest one the profile names, per architecture (x32
//!      told apart by bit 30; on s390/s390x syscall 0 too, which multiplexes unknown numbers).

mod arch;
mod bpf;
mod compile;
mod error;
mod kernel;

use std::os::fd::OwnedFd;

use oci_spec::runtime::LinuxSeccomp;
use serde::{Deserialize, Serialize};

pub use bpf::MAX_INSTRUCTIONS;
pub use error::Error;
pub use kernel::{
    FLAG_LOG, FLAG_NEW_LISTENER, FLAG_SPEC_ALLOW, FLAG_TSYNC, FLAG_TSYNC_ESRCH,
    FLAG_WAIT_KILLABLE_RECV,
};

/// Syscalls `SCMP_ACT_NOTIFY` may not be used for: the runtime makes them after loading the
/// filter and before the seccomp agent has the listener fd (`write` to report to the parent,
/// as runc forbids; `socket`, `connect` and `sendmsg` to hand the fd to `listenerPath`), so a
/// notification on them would never be answered and the container would hang.
pub const NOTIFY_FORBIDDEN_SYSCALLS: &[&str] = &["write", "socket", "connect", "sendmsg"];

const ALL_FLAGS: u32 = FLAG_TSYNC
    | FLAG_LOG
    | FLAG_SPEC_ALLOW
    | FLAG_NEW_LISTENER
    | FLAG_TSYNC_ESRCH
    | FLAG_WAIT_KILLABLE_RECV;

/// A compiled filter: raw BPF plus the `seccomp(2)` flags to load it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// `struct sock_filter` entries, each packed as `code | jt << 16 | jf << 24 | k << 32`.
    /// Serialized as one base64 string (see the private module `instructions_text`).
    #[serde(with = "instructions_text")]
    pub instructions: Vec<u64>,
    /// `SECCOMP_FILTER_FLAG_*` bits.
    pub flags: u32,
    /// Things the caller should log but that do not stop the container, e.g. syscall names the
    /// linked libseccomp does not know (their rules are skipped). Each names the profile field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Program {
    /// Install the filter on the calling thread. Returns the user-notification listener fd when
    /// the profile uses `SCMP_ACT_NOTIFY`.
    ///
    /// The caller must have set `no_new_privs` or hold `CAP_SYS_ADMIN`; this does not set
    /// `no_new_privs`. It allocates (see [`Program::prepare`] for a split that does not).
    pub fn load(&self) -> Result<Option<OwnedFd>, Error> {
        self.prepare()?.load()
    }

    /// Whether the profile uses `SCMP_ACT_NOTIFY` (the runtime must send the listener fd to
    /// `listenerPath`).
    pub fn needs_listener(&self) -> bool {
        self.flags & FLAG_NEW_LISTENER != 0
    }

    /// Check the program and convert it to the kernel's `struct sock_filter` layout, ready for a
    /// [`PreparedFilter::load`] that does not allocate (for use after `fork` in a
    /// multi-threaded process).
    pub fn prepare(&self) -> Result<PreparedFilter, Error> {
        if self.flags & !ALL_FLAGS != 0 {
            return Err(Error::Malformed(format!(
                "unknown SECCOMP_FILTER_FLAG bits {:#x}",
                self.flags & !ALL_FLAGS
            )));
        }
        let insns: Vec<bpf::Insn> = self
            .instructions
            .iter()
            .map(|&v| bpf::Insn::unpack(v))
            .collect();
        bpf::validate(&insns).map_err(Error::Malformed)?;
        let filters = insns
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        Ok(PreparedFilter {
            filters,
            flags: self.flags,
        })
    }
}

/// A checked [`Program`] in the kernel's layout. Loading it only issues the syscall.
pub struct PreparedFilter {
    filters: Vec<libc::sock_filter>,
    flags: u32,
}

impl PreparedFilter {
    /// Install the filter on the calling thread; see [`Program::load`]. Async-signal-safe: it
    /// makes one syscall and allocates nothing, also on error.
    pub fn load(&self) -> Result<Option<OwnedFd>, Error> {
        kernel::load(&self.filters, self.flags)
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Always false: a prepared filter has at least one instruction.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits it loads with.
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

impl std::fmt::Debug for PreparedFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedFilter")
            .field("instructions", &self.filters.len())
            .field("flags", &format_args!("{:#x}", self.flags))
            .finish()
    }
}

/// Compile an OCI profile for the host's native architecture plus the ones it lists.
///
/// Fails with [`Error::Invalid`] for a malformed profile, [`Error::Unsupported`] for something
/// this host lacks (kernel action or flag, libseccomp architecture), and
/// [`Error::TooLarge`] when the program exceeds [`MAX_INSTRUCTIONS`].
pub fn compile(profile: &LinuxSeccomp) -> Result<Program, Error> {
    compile::compile(profile)
}

/// What this build supports, for `berth-runtime features`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// `SCMP_ACT_*` names.
    pub actions: Vec<String>,
    /// `SCMP_CMP_*` names.
    pub operators: Vec<String>,
    /// `SCMP_ARCH_*` names.
    pub archs: Vec<String>,
    /// Flags the runtime knows.
    pub known_flags: Vec<String>,
    /// Flags the running kernel supports.
    pub supported_flags: Vec<String>,
}

/// Every action name the runtime understands.
const ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];

/// Every comparison operator name.
const OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

/// Report supported actions, operators, architectures and flags.
///
/// `archs` lists the architectures the linked libseccomp can put in one filter with this
/// host's native one (so big-endian architectures are missing on a little-endian host);
/// `supported_flags` those of `known_flags` the running kernel accepts. `actions` and
/// `operators` are everything the runtime understands (as runc reports them); [`compile`]
/// checks the kernel's support for the actions a profile actually uses.
pub fn features() -> Features {
    let archs = arch::ARCHES
        .iter()
        .filter(|a| {
            libseccomp::ScmpFilterContext::new(libseccomp::ScmpAction::Allow)
                .and_then(|mut ctx| ctx.add_arch(a.scmp).map(|_| ()))
                .is_ok()
        })
        .map(|a| a.name.to_string())
        .collect();
    Features {
        actions: ACTIONS.iter().map(|s| (*s).to_string()).collect(),
        operators: OPERATORS.iter().map(|s| (*s).to_string()).collect(),
        archs,
        known_flags: kernel::KNOWN_FLAGS
            .iter()
            .map(|(n, _)| (*n).to_string())
            .collect(),
        supported_flags: kernel::supported_flag_names(),
    }
}

/// The serialized form of [`Program::instructions`]: the instructions' little-endian bytes as
/// one standard base64 string. A program of the default profile has about 1,200 instructions;
/// as a JSON array of decimal numbers that was 20 KB written and parsed number by number each
/// time the runtime saved its state, sent the program to a container's init or read its cache.
/// The old array form is still read (state files and cache entries written before).
mod instructions_text {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|i| i.to_le_bytes()).collect();
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        d.deserialize_any(Text)
    }

    struct Text;

    impl<'de> Visitor<'de> for Text {
        type Value = Vec<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("BPF instructions as a base64 string (or an array of numbers)")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<u64>, E> {
            let bytes = STANDARD
                .decode(s)
                .map_err(|e| E::custom(format!("seccomp instructions: {e}")))?;
            if bytes.len() % 8 != 0 {
                return Err(E::custom(format!(
                    "seccomp instructions: {} bytes is not a whole number of 8-byte instructions",
                    bytes.len()
                )));
            }
            Ok(bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(i) = seq.next_element::<u64>()? {
                v.push(i);
            }
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests;
