//! `berth-runtime`: Berth's OCI runtime as a library.
//!
//! Turns an OCI bundle (a rootfs plus `config.json`, runtime-spec 1.2) into an isolated process
//! with runc's semantics, so the `berth-runtime` CLI, the containerd shim protocol and Berth's
//! own shim can all drive it. Start at [`Runtime`]; the fork chain is in [`process`], the root
//! filesystem in [`rootfs`].
//!
//! A binary using this crate must call [`entrypoint`] at the top of `main` (children re-execute
//! the current binary to become container processes).

pub mod caps;
pub mod console;
pub mod container;
pub mod error;
pub mod features;
pub mod hooks;
pub mod namespaces;
pub mod process;
pub mod replace;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp_cache;
pub mod signal;
pub mod spec;
pub mod state;

pub use container::{CreateOpts, ExecOpts, ListEntry, Runtime, Starting, list_table};
pub use error::{Error, Result};
pub use process::entrypoint;
pub use state::{OciState, Status};
