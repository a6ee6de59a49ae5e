//! Process hygiene that every vaultfs process applies before it touches a secret.

/// Files we create are private (the store is also opened 0600 explicitly; this covers the rest),
/// and the process may not dump core or be ptraced by other processes of the same uid, so a
/// crash or a debugger cannot carry plaintext out of memory.
pub fn harden_process() {
    // SAFETY: umask and prctl(PR_SET_DUMPABLE) have no memory-safety preconditions.
    unsafe {
        libc::umask(0o077);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Locks current and future pages in RAM so plaintext is never written to swap. Long-running
/// daemons call this; a short CLI run is not worth a failure. Returns whether it worked.
pub fn lock_memory() -> bool {
    // SAFETY: mlockall has no memory-safety preconditions.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        tracing::warn!(
            "cannot lock memory ({}); secrets in this process may be swapped to disk",
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}
