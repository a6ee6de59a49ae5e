//! The sealed values of small secrets, kept per entry at the version last fetched, so an open
//! of an unchanged secret needs no store worker and no SQLite read.
//!
//! Only ciphertext is kept (a [`SealedValue`] decrypts chunk by chunk when a handle reads), so
//! the cache adds no plaintext to the daemon's memory. An entry is used only for the exact
//! (id, version) the tree names, and a rotation's new version replaces it at its first open.
//! The total is bounded; beyond the bound values are simply fetched each time.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use vaultfs_store::SealedValue;

/// Values larger than this are fetched at every open (they are rare, and large).
pub const MAX_VALUE: u64 = 64 * 1024;

/// The most plaintext bytes the cached values may stand for.
pub const MAX_TOTAL: u64 = 32 * 1024 * 1024;

/// Entry id -> (version, sealed value).
#[derive(Debug, Default)]
pub struct SealedCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    values: HashMap<i64, (i64, Arc<SealedValue>)>,
    total: u64,
}

impl SealedCache {
    /// The sealed value of entry `id` at `version`, if it is cached.
    pub fn get(&self, id: i64, version: i64) -> Option<Arc<SealedValue>> {
        let inner = self.inner.lock();
        match inner.values.get(&id) {
            Some((v, value)) if *v == version => Some(value.clone()),
            _ => None,
        }
    }

    /// Keeps `value` (entry `id` at `version`) if it is small and there is room; replaces an
    /// older version of the same entry.
    pub fn put(&self, id: i64, version: i64, value: &Arc<SealedValue>) {
        let len = value.len();
        if len > MAX_VALUE {
            return;
        }
        let mut inner = self.inner.lock();
        let old = match inner.values.get(&id) {
            Some((v, _)) if *v >= version => return,
            Some((_, old)) => old.len(),
            None => 0,
        };
        if inner.total - old + len > MAX_TOTAL {
            return;
        }
        inner.total = inner.total - old + len;
        inner.values.insert(id, (version, value.clone()));
    }

    /// Drops the values of entries that are gone, so deleted secrets do not hold room.
    pub fn forget(&self, ids: &[i64]) {
        let mut inner = self.inner.lock();
        for id in ids {
            if let Some((_, old)) = inner.values.remove(id) {
                inner.total -= old.len();
            }
        }
    }

    /// Whether an older version of entry `id` than `version` is cached: a secret read before
    /// its rotation, worth fetching again at once.
    pub fn holds_older(&self, id: i64, version: i64) -> bool {
        self.inner
            .lock()
            .values
            .get(&id)
            .is_some_and(|(v, _)| *v < version)
    }
}
