//! Process hygiene that every vaultfs process applies before it touches a secret.

use nix::sys::mman::{mlockall, MlockAllFlags};

/// Files we create are private (the store is also opened 0600 explicitly; this covers the rest),
/// and the process may not dump core or be ptraced by other processes of the same uid, so a
/// crash or a debugger cannot carry plaintext out of memory.
pub fn harden_process() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // Failing leaves the process dumpable; nothing to do about it but go on.
    let _ = nix::sys::prctl::set_dumpable(false);
}

/// `MCL_ONFAULT` (Linux 4.4+; nix does not name it): lock pages as they are first touched
/// instead of populating every mapping at once.
const MCL_ONFAULT: MlockAllFlags = MlockAllFlags::from_bits_retain(4);

/// Locks current and future pages in RAM so plaintext is never written to swap. Long-running
/// daemons call this; a short CLI run is not worth a failure. Returns whether it worked.
///
/// With `MCL_ONFAULT` every page that is ever used (and so every page that may hold a secret)
/// is locked, but reserved-and-untouched memory is not populated: fuser reserves a 16 MiB
/// request buffer per thread that a read-only mount never fills.
pub fn lock_memory() -> bool {
    let always = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
    let mut locked = mlockall(always | MCL_ONFAULT);
    if locked == Err(nix::errno::Errno::EINVAL) {
        // A kernel without MCL_ONFAULT.
        locked = mlockall(always);
    }
    if let Err(e) = locked {
        tracing::warn!("cannot lock memory ({e}); secrets in this process may be swapped to disk");
    }
    locked.is_ok()
}
