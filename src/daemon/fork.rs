//! The binary's one exception to `#![deny(unsafe_code)]`: `fork(2)`.
//!
//! fork is unsafe in a multi-threaded process (the child gets one thread, and any lock another
//! thread held stays locked forever). `vaultfs mount` forks before it opens SQLite or starts a
//! thread, after reading its credential, so the child starts from a single-threaded, lock-free
//! process; [`fork`] checks the thread count to keep that true.
#![allow(unsafe_code)]

use anyhow::{Context, Result};

/// Which side of the fork this is.
pub enum Forked {
    /// The child (the daemon to be).
    Child,
    /// The parent, with the child's pid.
    Parent,
}

/// Forks, refusing when the process has more than one thread.
pub fn fork() -> Result<Forked> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    anyhow::ensure!(
        threads == 1,
        "cannot fork the daemon: {threads} threads are running (a bug: fork must come first)"
    );
    // SAFETY: the process has exactly one thread (checked above), so the child holds no lock
    // another thread owned and may run arbitrary code.
    match unsafe { nix::unistd::fork() }.context("cannot fork the daemon")? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
        nix::unistd::ForkResult::Parent { .. } => Ok(Forked::Parent),
    }
}
