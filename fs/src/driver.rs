//! The FUSE request handlers, and the refresh that keeps the in-memory view in step with the
//! store.
//!
//! Reads of the tree (lookup, getattr, readdir) never touch SQLite unless the store changed.
//! Every open asks the store for its change counter (one indexed read), refreshes the view if
//! it moved, checks the caller against the current ACL, and decides whether the kernel may keep
//! its cached pages. Values are read by row id and version at `read` time and never kept.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use parking_lot::{Condvar, Mutex, RwLock};
use vaultfs_store::{StoreError, VaultPath, VaultReader};

use crate::access::{self, Caller};
use crate::invalidate::Invalidator;
use crate::view::{Node, Rows, View};

/// How long the kernel may cache names and attributes without asking. Changes are also pushed
/// by invalidation; this bounds what a lost invalidation could cost.
const TTL: Duration = Duration::from_secs(1);

/// How long an open waits for another thread's refresh before answering EIO.
const REFRESH_WAIT: Duration = Duration::from_secs(3);

/// How long a lookup of a name the view lacks waits for the refresher to look again.
const LOOKUP_MISS_WAIT: Duration = Duration::from_millis(300);

/// How long an open of a changed secret waits for the kernel to drop its stale copy (size and
/// pages) before it falls back to reading around the cache.
const SETTLE_WAIT: Duration = Duration::from_millis(500);

/// State shared by the request handlers, the refresher thread and the mount handle.
pub struct Shared {
    reader: VaultReader,
    source: VaultPath,
    view: RwLock<Arc<View>>,
    /// The rows behind the view; its lock serializes refreshes.
    rows: Mutex<Rows>,
    /// Ids of rows that failed authentication, reported once each.
    damaged: Mutex<HashSet<i64>>,
    invalidator: Arc<Invalidator>,
    /// Refresh rounds asked of the refresher thread, and rounds it has finished.
    rounds: Mutex<Rounds>,
    round_done: Condvar,
}

#[derive(Debug, Default)]
struct Rounds {
    requested: u64,
    finished: u64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("reader", &self.reader)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Reads the whole vault and builds the first view.
    pub fn load(
        reader: VaultReader,
        source: VaultPath,
        invalidator: Arc<Invalidator>,
    ) -> Result<Shared, StoreError> {
        let snap = reader.snapshot()?;
        let rows = Rows {
            generation: snap.generation,
            vault: snap.vault,
            entries: snap.entries.into_iter().map(|e| (e.id, e)).collect(),
        };
        let view = View::build(&rows, &source);
        let shared = Shared {
            reader,
            source,
            view: RwLock::new(Arc::new(view)),
            rows: Mutex::new(rows),
            damaged: Mutex::new(HashSet::new()),
            invalidator,
            rounds: Mutex::new(Rounds::default()),
            round_done: Condvar::new(),
        };
        shared.report_damaged(snap.damaged);
        Ok(shared)
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.read().clone()
    }

    /// Asks the refresher thread for a refresh and waits up to `limit` for it. A handler that
    /// must stay instant uses this instead of reading the store itself: it can be delayed by
    /// `limit` at most, however stuck the store is.
    pub fn refreshed_within(&self, limit: Duration) -> Arc<View> {
        let mut rounds = self.rounds.lock();
        rounds.requested += 1;
        let mine = rounds.requested;
        self.round_done.notify_all();
        let deadline = std::time::Instant::now() + limit;
        while rounds.finished < mine {
            if self
                .round_done
                .wait_until(&mut rounds, deadline)
                .timed_out()
            {
                break;
            }
        }
        drop(rounds);
        self.view()
    }

    /// For the refresher thread: waits until a round is asked for or `poll` passes, and
    /// returns the request number the coming round will satisfy.
    pub fn next_round(&self, poll: Duration) -> u64 {
        let mut rounds = self.rounds.lock();
        if rounds.requested == rounds.finished {
            self.round_done.wait_for(&mut rounds, poll);
        }
        rounds.requested
    }

    /// For the refresher thread: rounds up to `upto` are done.
    pub fn finish_round(&self, upto: u64) {
        let mut rounds = self.rounds.lock();
        rounds.finished = rounds.finished.max(upto);
        self.round_done.notify_all();
    }

    /// The vault's name and the mounted path, for messages.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.reader.vault_name(), self.source)
    }

    /// Brings the view up to date with the store, waiting (bounded) for a refresh running on
    /// another thread rather than repeat it.
    pub fn refresh(&self) -> Result<Arc<View>, StoreError> {
        let current = self.view();
        let generation = self.reader.generation()?;
        if generation == current.generation {
            return Ok(current);
        }
        let Some(mut rows) = self.rows.try_lock_for(REFRESH_WAIT) else {
            return Err(StoreError::Busy(self.reader.store_path().clone()));
        };
        if rows.generation >= generation {
            // Another thread refreshed while we waited.
            return Ok(self.view());
        }
        let changes = self
            .reader
            .changes_since(rows.generation, rows.vault.version)?;
        rows.generation = changes.generation;
        if let Some(vault) = changes.vault {
            rows.vault = vault;
        }
        for id in &changes.deleted {
            rows.entries.remove(id);
        }
        for (id, _) in &changes.damaged {
            rows.entries.remove(id);
        }
        for e in changes.upserts {
            rows.entries.insert(e.id, e);
        }
        let new = Arc::new(View::build(&rows, &self.source));
        let old = self.view();
        self.queue_invalidations(&old, &new);
        *self.view.write() = new.clone();
        drop(rows);
        self.report_damaged(changes.damaged);
        Ok(new)
    }

    /// Marks and queues every cache the kernel may hold that `new` contradicts. Marks go in
    /// before `new` is published, so an open that sees `new` also sees the mark.
    fn queue_invalidations(&self, old: &View, new: &View) {
        let inv = &self.invalidator;
        if old.root != new.root {
            inv.inode(new.root.unwrap_or(-1), fuser::INodeNo::ROOT);
        }
        for (id, before) in &old.nodes {
            match new.nodes.get(id) {
                Some(after) if after == before => {}
                Some(after) => {
                    if after.name != before.name || after.parent != before.parent {
                        inv.entry(old.ino(before.parent), &before.name);
                    }
                    inv.inode(*id, new.ino(*id));
                }
                None => {
                    if Some(*id) != old.root {
                        inv.entry(old.ino(before.parent), &before.name);
                    }
                    inv.inode(*id, old.ino(*id));
                }
            }
        }
    }

    fn report_damaged(&self, damaged: Vec<(i64, StoreError)>) {
        let mut seen = self.damaged.lock();
        for (id, err) in damaged {
            if seen.insert(id) {
                tracing::error!("{}: {err}; the entry is hidden", self.describe());
            }
        }
    }

    /// The value of `node` for a handle opened at `version`: that version if it is still
    /// current, else the newest (a handle opened before a rotation reads the rotated value
    /// rather than fail, and never refills the page cache with the old one).
    fn value(&self, node: &Node, version: i64) -> Result<vaultfs_store::SecretBytes, StoreError> {
        if let Some(v) = self.reader.read_value(node.id, version)? {
            return Ok(v);
        }
        for _ in 0..3 {
            let Some(entry) = self.reader.entry(node.id)? else {
                break;
            };
            if let Some(v) = self.reader.read_value(node.id, entry.version)? {
                return Ok(v);
            }
        }
        Err(StoreError::NotFound(format!(
            "{}:{}",
            self.reader.vault_name(),
            node.path
        )))
    }
}

/// The FUSE filesystem: a thin shell over [`Shared`].
#[derive(Debug)]
pub struct VaultFs {
    shared: Arc<Shared>,
}

impl VaultFs {
    /// A filesystem serving `shared`.
    pub fn new(shared: Arc<Shared>) -> VaultFs {
        VaultFs { shared }
    }

    /// Refreshes for an operation that must see the latest state, answering EIO (with one log
    /// line) when the store cannot be read in bounded time.
    fn fresh_view(&self, what: &str) -> Result<Arc<View>, Errno> {
        self.shared.refresh().map_err(|e| {
            tracing::warn!("{}: {what}: {e}", self.shared.describe());
            Errno::EIO
        })
    }

    fn caller(req: &Request) -> Caller {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
    }

    fn check_open(&self, req: &Request, node: &Node, flags: OpenFlags) -> Result<(), Errno> {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        let caller = Self::caller(req);
        if !access::allowed(node, caller, access::READ) {
            tracing::info!(
                uid = caller.uid,
                pid = caller.pid,
                "{}: {} denied",
                self.shared.reader.vault_name(),
                node.path
            );
            return Err(Errno::EACCES);
        }
        tracing::debug!(
            uid = caller.uid,
            pid = caller.pid,
            "{}: open {}",
            self.shared.reader.vault_name(),
            node.path
        );
        Ok(())
    }
}

fn name_str(name: &OsStr) -> Option<&str> {
    name.to_str()
}

impl Filesystem for VaultFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Readahead of a whole small secret in one request.
        let _ = config.set_max_readahead(128 * 1024);
        // Lookups in one directory run in parallel (they only read memory); mmap works on the
        // opens that use direct I/O. Both are optional: older kernels just say no.
        for cap in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ] {
            let _ = config.add_capabilities(cap);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        let find = |view: &View| {
            let dir = view.node(parent)?;
            let child = view.child(dir, name)?;
            Some(child.attr(view.ino(child.id)))
        };
        let view = self.shared.view();
        // A miss may be a secret created since the last refresh: look again after one, which
        // the refresher thread makes so this never waits on the store for long.
        let attr = find(&view).or_else(|| find(&self.shared.refreshed_within(LOOKUP_MISS_WAIT)));
        match attr {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        // Served from memory; the refresher keeps it within a poll interval of the store.
        let view = self.shared.view();
        match view.node(ino) {
            Some(node) => reply.attr(&TTL, &node.attr(ino)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let view = match self.fresh_view("open") {
            Ok(v) => v,
            Err(e) => return reply.error(e),
        };
        let Some(node) = view.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if node.is_dir() {
            return reply.error(Errno::EISDIR);
        }
        if let Err(e) = self.check_open(req, node, flags) {
            return reply.error(e);
        }
        // The kernel may keep its pages only when they cannot be stale: after a change, wait
        // for the notifier to drop them (and the cached size); if that takes too long, this
        // open reads around the cache.
        let cache = if self.shared.invalidator.settle(node.id, SETTLE_WAIT) {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            tracing::debug!(
                "{}: open {} around the cache",
                self.shared.describe(),
                node.path
            );
            FopenFlags::FOPEN_DIRECT_IO
        };
        reply.opened(FileHandle(node.version as u64), cache);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let view = self.shared.view();
        let Some(node) = view.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.shared.value(node, fh.0 as i64) {
            Ok(value) => {
                let bytes = value.expose();
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                reply.data(&bytes[start..end]);
            }
            Err(e) => {
                tracing::error!("{}: read {}: {e}", self.shared.describe(), node.path);
                reply.error(Errno::EIO);
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush on a read-only mount; ENOSYS once makes the kernel stop sending
        // FLUSH, which saves a round trip on every close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Listing never waits on the store: a directory holds no secret, and the ACL it is
        // checked against is at most one poll interval old.
        let view = self.shared.view();
        let Some(node) = view.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if !node.is_dir() {
            return reply.error(Errno::ENOTDIR);
        }
        match self.check_open(req, node, flags) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let view = self.shared.view();
        let Some(dir) = view.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let parent_ino = if ino == INodeNo::ROOT {
            INodeNo::ROOT
        } else {
            view.ino(dir.parent)
        };
        let dots = [
            (ino, FileType::Directory, "."),
            (parent_ino, FileType::Directory, ".."),
        ];
        let children = dir.children.iter().filter_map(|(name, id)| {
            let child = view.nodes.get(id)?;
            let kind = if child.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            Some((view.ino(*id), kind, name.as_str()))
        });
        for (i, (ino, kind, name)) in dots
            .into_iter()
            .chain(children)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // No extended attributes (no POSIX ACLs, no labels); ENOSYS stops the kernel asking.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }
}
