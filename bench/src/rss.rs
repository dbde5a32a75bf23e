//! Peak resident set of one child process, from `wait4`'s `ru_maxrss` (KiB).
//!
//! A process's `ru_maxrss` also keeps the high-water mark of the memory it had *before* its
//! `execve`: the kernel folds the old address space's peak into it. `Command` normally spawns
//! with `posix_spawn`, whose child borrows this whole process's memory until it executes, and
//! would report our own peak. A `pre_exec` hook makes `Command` use a real `fork`: the child
//! then starts from a copy holding only our anonymous pages (about 120 KiB, measured), far
//! below any figure reported here, so the figure is the program's own peak. GNU `time -f %M`
//! forks the same way and gives the same numbers.

use std::process::Command;

use crate::Result;

/// Run `cmd` to completion and return its peak RSS in KiB (children it waited for included,
/// children it left running, such as a created container's init, not).
pub fn measure(cmd: &mut Command) -> Result<u64> {
    crate::pull_support::Running::spawn(cmd)?.wait()
}
