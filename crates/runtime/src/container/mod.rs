//! The lifecycle verbs, one file each where they have substance.

mod create;
mod exec;
mod foreground;
mod lifecycle;

use std::path::PathBuf;

pub use create::CreateOpts;
pub use exec::ExecOpts;
pub use lifecycle::{ListEntry, Starting, list_table};

use crate::state::Root;

/// A runtime instance bound to one state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub(crate) root: Root,
    /// `--systemd-cgroup`: `cgroupsPath` is `slice:prefix:name`.
    pub systemd_cgroup: bool,
    /// Let a container's init run in the cloned child without re-executing this binary, where
    /// that is safe (a new pid namespace, this process single-threaded; checked at each
    /// create). Saves an exec and a parse of config.json per container. Off by default: set it
    /// in single-threaded programs such as the shim.
    pub inline_init: bool,
    /// Give a container a fresh network namespace the way Docker does: with its loopback
    /// interface up. And when the caller already runs in a network namespace of its own that
    /// it made for this container (`caller_netns_is_fresh`), a container asking for a new
    /// network namespace without a path (and no new user namespace, which would have to own
    /// it) gets that one instead of a second new one. Off by default (runc leaves loopback
    /// down); the shim sets it.
    pub docker_netns: bool,
    /// See [`Runtime::docker_netns`].
    pub caller_netns_is_fresh: bool,
}

impl Runtime {
    /// A runtime keeping state under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            root: Root::new(root),
            systemd_cgroup: false,
            inline_init: false,
            docker_netns: false,
            caller_netns_is_fresh: false,
        }
    }

    /// The state root.
    pub fn root(&self) -> &Root {
        &self.root
    }
}
