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

/// `MCL_ONFAULT` (Linux 4.4+; the libc crate exports it only for some targets): lock pages as
/// they are first touched instead of populating every mapping at once.
const MCL_ONFAULT: libc::c_int = 4;

/// Locks current and future pages in RAM so plaintext is never written to swap. Long-running
/// daemons call this; a short CLI run is not worth a failure. Returns whether it worked.
///
/// With `MCL_ONFAULT` every page that is ever used (and so every page that may hold a secret)
/// is locked, but reserved-and-untouched memory is not populated: fuser reserves a 16 MiB
/// request buffer per thread that a read-only mount never fills.
pub fn lock_memory() -> bool {
    // SAFETY: mlockall has no memory-safety preconditions.
    let mut rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | MCL_ONFAULT) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // A kernel without MCL_ONFAULT.
        // SAFETY: as above.
        rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    }
    if rc != 0 {
        tracing::warn!(
            "cannot lock memory ({}); secrets in this process may be swapped to disk",
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}
