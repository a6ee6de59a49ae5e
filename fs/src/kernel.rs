//! The kernel-checked mode: the kernel decides every open from the attributes it caches
//! (`default_permissions`) and the daemon answers OPEN with ENOSYS once, after which the
//! kernel (FUSE no-open support) sends no OPEN, FLUSH or RELEASE at all. An unchanged
//! secret is then read straight from the page cache, without a request.
//!
//! What that gives up is what needs a decision at the open (templates, grants and their
//! conditions, read limits, the audit of opens): the view leaves such entries out (see
//! `view.rs`, `blocked_by`), a mount over a vault that has them is refused, and a rule that
//! appears later hides its entries at once. Changes reach the kernel only by invalidation,
//! pushed by the notifier the moment the daemon sees the change signal; writers wait for the
//! mount's acknowledgement (see `signal.rs`, `Acker`) so a write that returned is seen by the
//! next open, as on a default mount.
//!
//! Reads arrive without a handle (fh 0): each one serves the version its inode stands for
//! (one inode per version, `view.rs`), never "the newest". The ciphertext read for an inode is
//! pinned until the kernel forgets the inode, so a descriptor opened before a rotation (or an
//! `rm`) keeps reading its version when its pages are dropped, as a handle does on a default
//! mount; new opens never reach such an inode, since its name is invalidated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fuser::{FileAttr, INodeNo};
use parking_lot::Mutex;
use vaultfs_store::SealedValue;

/// The kernel-checked state of one mount.
#[derive(Debug, Default)]
pub struct KernelMode {
    /// Ciphertext and attributes by version inode, from the first read until the kernel
    /// forgets the inode (fstat on an older version's descriptor gets its own attributes).
    pins: Mutex<HashMap<u64, (Arc<SealedValue>, FileAttr)>>,
    /// OPEN requests that reached the daemon (the first one, answered ENOSYS; then none).
    pub opens: AtomicU64,
    /// READ requests that reached the daemon (page cache misses).
    pub reads: AtomicU64,
    /// Entries already reported as hidden (see `Shared::log_blocked`).
    pub logged: Mutex<std::collections::HashSet<i64>>,
}

impl KernelMode {
    /// The ciphertext pinned for `ino`.
    pub fn pinned(&self, ino: INodeNo) -> Option<Arc<SealedValue>> {
        self.pins.lock().get(&ino.0).map(|(v, _)| v.clone())
    }

    /// The attributes pinned for `ino`.
    pub fn pinned_attr(&self, ino: INodeNo) -> Option<FileAttr> {
        self.pins.lock().get(&ino.0).map(|(_, a)| *a)
    }

    /// Pins `value` and the attributes `attr` gives for `ino`, unless it is pinned already
    /// (not for the root of a single-secret mount: one inode for every version, always read
    /// at its current version).
    pub fn pin(
        &self,
        ino: INodeNo,
        value: &Arc<SealedValue>,
        attr: impl FnOnce() -> Option<FileAttr>,
    ) {
        if ino == INodeNo::ROOT {
            return;
        }
        if self.pins.lock().contains_key(&ino.0) {
            return;
        }
        // Outside the pins' lock: `attr` takes the tree's, which readers take before this one.
        if let Some(attr) = attr() {
            self.pins
                .lock()
                .entry(ino.0)
                .or_insert_with(|| (value.clone(), attr));
        }
    }

    /// The kernel dropped `ino`: its pages are gone and no descriptor refers to it.
    pub fn forget(&self, ino: INodeNo) {
        self.pins.lock().remove(&ino.0);
    }

    /// One line for the log when the mount ends: how many requests the kernel still sent.
    pub fn summary(&self) -> String {
        format!(
            "kernel-checked: {} open(s) and {} read(s) reached the daemon",
            self.opens.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed)
        )
    }
}
