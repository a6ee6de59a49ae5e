//! The FUSE request handlers, and the refresh that keeps the in-memory view in step with the
//! store.
//!
//! Lookups, getattr, opendir and readdir are answered from the in-memory tree and never touch
//! SQLite (a stuck store can hold a reader for seconds): a refresher thread keeps the tree
//! within a poll interval of the store. Every open asks the store for its change counter (one
//! indexed read, bounded in time), applies what changed, checks the caller against the current
//! ACL, and decides whether the kernel may keep its cached pages. Values are read by row id and
//! version at `read` time and wiped once the reply is sent.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};
use vaultfs_store::{StoreError, VaultPath, VaultReader};

use crate::access::{self, Caller};
use crate::invalidate::Invalidator;
use crate::view::{Node, Stale, Tree};

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
    tree: RwLock<Tree>,
    /// Serializes refreshes; the tree's own lock is held only to apply a fetched batch.
    refreshing: Mutex<()>,
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
    /// Reads the whole vault and builds the first tree.
    pub fn load(
        reader: VaultReader,
        source: VaultPath,
        invalidator: Arc<Invalidator>,
    ) -> Result<Shared, StoreError> {
        let snap = reader.snapshot()?;
        let tree = Tree::new(snap.generation, snap.vault, snap.entries, source.clone());
        let shared = Shared {
            reader,
            source,
            tree: RwLock::new(tree),
            refreshing: Mutex::new(()),
            damaged: Mutex::new(HashSet::new()),
            invalidator,
            rounds: Mutex::new(Rounds::default()),
            round_done: Condvar::new(),
        };
        shared.report_damaged(snap.damaged);
        Ok(shared)
    }

    /// The tree, for reading. Hold the guard only while building a reply, never across a
    /// wait: a refresh needs the write side.
    pub fn tree(&self) -> RwLockReadGuard<'_, Tree> {
        self.tree.read()
    }

    /// Asks the refresher thread for a refresh and waits up to `limit` for it. A handler that
    /// must stay instant uses this instead of reading the store itself: it can be delayed by
    /// `limit` at most, however stuck the store is.
    pub fn wait_for_refresh(&self, limit: Duration) {
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

    /// Brings the tree up to date with the store, waiting (bounded) for a refresh running on
    /// another thread rather than repeat it. The store is read without the tree's lock, so
    /// handlers keep answering while a refresh waits on SQLite.
    pub fn refresh(&self) -> Result<(), StoreError> {
        let generation = self.reader.generation()?;
        if generation == self.tree().generation {
            return Ok(());
        }
        let Some(_serial) = self.refreshing.try_lock_for(REFRESH_WAIT) else {
            return Err(StoreError::Busy(self.reader.store_path().clone()));
        };
        let (known, vault_version) = {
            let tree = self.tree();
            (tree.generation, tree.vault.version)
        };
        if known >= generation {
            // Another thread refreshed while we waited.
            return Ok(());
        }
        let changes = self.reader.changes_since(known, vault_version)?;
        let mut deleted = changes.deleted;
        deleted.extend(changes.damaged.iter().map(|(id, _)| *id));
        let mut tree = self.tree.write();
        let stale = tree.apply(changes.generation, changes.vault, changes.upserts, &deleted);
        // Marks go in before the write lock drops, so an open that sees the new tree also
        // sees that the kernel's copy is stale.
        for s in stale {
            match s {
                Stale::Inode(id, ino) => self.invalidator.inode(id, ino),
                Stale::Name(parent, name) => self.invalidator.entry(parent, &name),
            }
        }
        drop(tree);
        self.report_damaged(changes.damaged);
        Ok(())
    }

    fn report_damaged(&self, damaged: Vec<(i64, StoreError)>) {
        let mut seen = self.damaged.lock();
        for (id, err) in damaged {
            if seen.insert(id) {
                tracing::error!("{}: {err}; the entry is hidden", self.describe());
            }
        }
    }

    /// The value of entry `id` for a handle opened at `version`: that version if it is still
    /// current, else the newest (a handle opened before a rotation reads the rotated value
    /// rather than fail, and never refills the page cache with the old one).
    fn value(&self, id: i64, version: i64) -> Result<vaultfs_store::SecretBytes, StoreError> {
        if let Some(v) = self.reader.read_value(id, version)? {
            return Ok(v);
        }
        for _ in 0..3 {
            let Some(entry) = self.reader.entry(id)? else {
                break;
            };
            if let Some(v) = self.reader.read_value(id, entry.version)? {
                return Ok(v);
            }
        }
        Err(StoreError::NotFound(format!(
            "{}: entry #{id}",
            self.reader.vault_name()
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
    fn refresh(&self, what: &str) -> Result<(), Errno> {
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

    fn check_open(
        &self,
        req: &Request,
        tree: &Tree,
        node: &Node,
        flags: OpenFlags,
    ) -> Result<(), Errno> {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        let caller = Self::caller(req);
        if !access::allowed(node, caller, access::READ) {
            tracing::info!(
                uid = caller.uid,
                pid = caller.pid,
                "{}:{} denied",
                self.shared.reader.vault_name(),
                tree.path(node)
            );
            return Err(Errno::EACCES);
        }
        tracing::debug!(
            uid = caller.uid,
            pid = caller.pid,
            "{}:{} opened",
            self.shared.reader.vault_name(),
            tree.path(node)
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
        let find = || {
            let tree = self.shared.tree();
            let dir = tree.node(parent)?;
            let child = tree.child(dir, name)?;
            Some(child.attr(tree.ino(child.id)))
        };
        // A miss may be a secret created since the last refresh: look again after one, which
        // the refresher thread makes so this never waits on the store for long.
        let attr = find().or_else(|| {
            self.shared.wait_for_refresh(LOOKUP_MISS_WAIT);
            find()
        });
        match attr {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        // Served from memory; the refresher keeps it within a poll interval of the store.
        let tree = self.shared.tree();
        match tree.node(ino) {
            Some(node) => reply.attr(&TTL, &node.attr(ino)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = self.refresh("open") {
            return reply.error(e);
        }
        let (id, version) = {
            let tree = self.shared.tree();
            let Some(node) = tree.node(ino) else {
                return reply.error(Errno::ENOENT);
            };
            if node.is_dir() {
                return reply.error(Errno::EISDIR);
            }
            if let Err(e) = self.check_open(req, &tree, node, flags) {
                return reply.error(e);
            }
            (node.id, node.version)
        };
        // The kernel may keep its pages only when they cannot be stale: after a change, wait
        // for the notifier to drop them (and the cached size); if that takes too long, this
        // open reads around the cache.
        let cache = if self.shared.invalidator.settle(id, SETTLE_WAIT) {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            tracing::debug!(
                "{}: entry #{id} opened around the cache",
                self.shared.describe()
            );
            FopenFlags::FOPEN_DIRECT_IO
        };
        reply.opened(FileHandle(version as u64), cache);
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
        let Some(id) = self.shared.tree().node(ino).map(|n| n.id) else {
            return reply.error(Errno::ENOENT);
        };
        match self.shared.value(id, fh.0 as i64) {
            Ok(value) => {
                let bytes = value.expose();
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                reply.data(&bytes[start..end]);
            }
            Err(e) => {
                let tree = self.shared.tree();
                let path = tree.node(ino).map(|n| tree.path(n).to_string());
                drop(tree);
                tracing::error!(
                    "{}:{}: {e}",
                    self.shared.reader.vault_name(),
                    path.as_deref().unwrap_or("?")
                );
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
        let tree = self.shared.tree();
        let Some(node) = tree.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if !node.is_dir() {
            return reply.error(Errno::ENOTDIR);
        }
        match self.check_open(req, &tree, node, flags) {
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
        let tree = self.shared.tree();
        let Some(dir) = tree.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let dots = [
            (ino, FileType::Directory, "."),
            (tree.parent_ino(dir), FileType::Directory, ".."),
        ];
        let children = tree.children(dir).map(|(name, child)| {
            let kind = if child.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            (tree.ino(child.id), kind, name)
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
