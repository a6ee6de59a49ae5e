//! The refresher thread: the one thread of a mount that reads the store's change counter and
//! applies changes to the tree. It runs a round every poll interval, and at once when an open
//! or a lookup miss asks for one; whatever SQLite or the store's disk does to it (a held lock,
//! a frozen filesystem), requests only wait for it until their own deadline.
//!
//! Each round first checks that the store path still names the file the mount opened: a store
//! deleted or replaced (by `mv`, a restore) is not followed, because SQLite finds the `-wal`
//! and `-shm` files by path and mixing an old connection with new files corrupts. The mount
//! keeps serving the last good state and says so once; a remount or a `serve` reload picks up
//! the new file.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use vaultfs_store::StoreError;

use crate::driver::{file_identity, Shared};

/// How often the refresher looks for changes made by writers, so that `ls` and `stat` show
/// them (and kernel caches are dropped) without waiting for an open.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls the store for changes while the mount lives.
pub fn run(shared: Weak<Shared>) {
    let mut failing = false;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let round = shared.next_round(until_next(&shared));
        // The token before the store is read: a write signalled after this is not covered.
        let token = shared.signal.round_start();
        let result = round_of(&shared);
        shared.signal.round_end(result.is_ok().then_some(token));
        shared.expire_due();
        // A kernel-checked mount tells writers once this round's invalidations are sent
        // (they are queued ahead of the acknowledgement).
        if let (Some(acker), Ok(())) = (&shared.acker, &result) {
            shared.invalidator.ack(acker, token);
        }
        shared.finish_round(round, result.is_ok());
        shared.report_changes();
        match result {
            Ok(()) if failing => {
                tracing::warn!("{}: the store is readable again", shared.describe());
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(
                    "{}: cannot follow changes: {e}; opens fail with EIO until it recovers",
                    shared.describe()
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// How long the refresher may sleep: the poll interval, or less when a secret expires
/// sooner, so an expiry is applied (and, on a kernel-checked mount, pushed to the kernel by
/// invalidation) at its time rather than up to a poll interval late.
fn until_next(shared: &Shared) -> Duration {
    let Some(due) = shared.tree().next_deadline() else {
        return POLL_INTERVAL;
    };
    let left = due.saturating_sub(crate::view::now_ns()).max(0) as u64;
    // A floor, so that an expiry the tree could not apply never turns this into a spin.
    POLL_INTERVAL.min(Duration::from_nanos(left).max(Duration::from_millis(1)))
}

fn round_of(shared: &Shared) -> Result<(), StoreError> {
    if shared.store_replaced.load(Ordering::Relaxed) || shared.vault_gone.load(Ordering::Relaxed) {
        return Ok(());
    }
    let path = shared.reader.store_path();
    if file_identity(path) != shared.store_file {
        shared.reader.detach_from_path();
        shared.store_replaced.store(true, Ordering::Relaxed);
        tracing::error!(
            "{}: {} was deleted or replaced; serving the state it had, without following \
             changes, until a remount (or a serve reload)",
            shared.describe(),
            path.display()
        );
        return Ok(());
    }
    match shared.refresh() {
        Err(StoreError::NoSuchVault(name)) => {
            shared.vault_gone.store(true, Ordering::Relaxed);
            shared.clear();
            tracing::warn!(
                "{}: vault {name:?} was removed; serving an empty tree (a vault created again \
                 under that name has a new key: mount it anew)",
                shared.describe()
            );
            Ok(())
        }
        other => other,
    }
}
