//! Kernel cache invalidation, sent from one dedicated thread.
//!
//! A notification is a synchronous write to /dev/fuse during which the kernel takes inode and
//! dentry locks; sent from inside a request handler it can deadlock the mount (seen with fuser
//! 0.18: the handler thread stuck in D state in `fuse_reverse_inval_entry`). So handlers and the
//! refresher only queue invalidations here.
//!
//! A secret's versions are separate inodes, so invalidations are about names (a cached name
//! must stop leading to an outdated version) and attributes; the root of a single-secret mount,
//! one inode for every version, also waits for its cached size to be dropped before an open.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use fuser::{INodeNo, Notifier};
use parking_lot::{Condvar, Mutex};

/// One invalidation.
#[derive(Debug)]
pub enum Invalidation {
    /// Drop an inode's cached data and attributes; `ticket` clears its pending mark.
    Inode { id: i64, ino: INodeNo, ticket: u64 },
    /// Drop a cached name.
    Entry { parent: INodeNo, name: OsString },
    /// Every invalidation queued before this one is sent: acknowledge `token` to writers
    /// (kernel-checked mounts only).
    Ack {
        acker: Arc<crate::signal::Acker>,
        token: u64,
    },
}

/// Entries whose kernel caches may be stale, and the queue that will fix them.
#[derive(Debug)]
pub struct Invalidator {
    pending: Mutex<HashMap<i64, u64>>,
    settled: Condvar,
    next_ticket: Mutex<u64>,
    queue: Sender<Invalidation>,
}

impl Invalidator {
    /// A new invalidator and the receiving end for [`run_notifier`].
    pub fn new() -> (Arc<Invalidator>, Receiver<Invalidation>) {
        let (queue, rx) = crossbeam_channel::unbounded();
        let inv = Invalidator {
            pending: Mutex::new(HashMap::new()),
            settled: Condvar::new(),
            next_ticket: Mutex::new(0),
            queue,
        };
        (Arc::new(inv), rx)
    }

    /// Marks entry `id` stale before the new view is published, and queues the fix.
    pub fn inode(&self, id: i64, ino: INodeNo) {
        let ticket = {
            let mut t = self.next_ticket.lock();
            *t += 1;
            *t
        };
        self.pending.lock().insert(id, ticket);
        // The receiver lives as long as the mount; a send after unmount has nothing to fix.
        let _ = self.queue.send(Invalidation::Inode { id, ino, ticket });
    }

    /// Queues dropping the cached name `name` in directory `parent`.
    pub fn entry(&self, parent: INodeNo, name: &str) {
        let _ = self.queue.send(Invalidation::Entry {
            parent,
            name: name.into(),
        });
    }

    /// Queues an acknowledgement of `token`, sent after every invalidation queued so far.
    pub fn ack(&self, acker: &Arc<crate::signal::Acker>, token: u64) {
        let _ = self.queue.send(Invalidation::Ack {
            acker: acker.clone(),
            token,
        });
    }

    /// Waits up to `limit` for the kernel to have dropped its caches of entry `id`; returns
    /// whether it has. An open calls this, which holds no kernel lock the invalidation needs
    /// (FUSE opens take no inode lock on a read-only mount); the bound turns any surprise
    /// into a short delay, after which the open reads around the cache instead.
    pub fn settle(&self, id: i64, limit: Duration) -> bool {
        let mut pending = self.pending.lock();
        let deadline = std::time::Instant::now() + limit;
        while pending.contains_key(&id) {
            if self.settled.wait_until(&mut pending, deadline).timed_out() {
                return !pending.contains_key(&id);
            }
        }
        true
    }

    fn done(&self, id: i64, ticket: u64) {
        let mut pending = self.pending.lock();
        if pending.get(&id) == Some(&ticket) {
            pending.remove(&id);
            self.settled.notify_all();
        }
    }
}

/// Drains the queue until every sender is gone (the mount ended).
pub fn run_notifier(inv: Arc<Invalidator>, rx: Receiver<Invalidation>, notifier: Notifier) {
    // Only a weak interest in the invalidator: the thread must not keep the queue alive.
    let inv = Arc::downgrade(&inv);
    for job in rx {
        match job {
            Invalidation::Inode { id, ino, ticket } => {
                if let Err(e) = notifier.inval_inode(ino, 0, 0) {
                    tracing::debug!("invalidating inode {}: {e}", ino.0);
                }
                if let Some(inv) = inv.upgrade() {
                    inv.done(id, ticket);
                }
            }
            Invalidation::Entry { parent, name } => {
                if let Err(e) = notifier.inval_entry(parent, &name) {
                    tracing::debug!("invalidating a name in inode {}: {e}", parent.0);
                }
            }
            Invalidation::Ack { acker, token } => acker.ack(token),
        }
    }
}
