//! The FUSE request handlers.
//!
//! No request thread ever touches SQLite or the store's disk. Lookups, getattr, opendir and
//! readdir are answered from the in-memory tree. An open asks the refresher thread (see
//! `refresher.rs`) for a round that started after the open did, so it sees every write that
//! returned before it, and waits for it until its deadline; it then checks the caller against
//! the current ACL and has a store worker fetch the version's ciphertext, again bounded by the
//! deadline. A store that is locked, frozen or gone turns into EIO at the deadline, never into
//! a hung reader.
//!
//! A secret has one inode per version (see `view.rs`); an open of an outdated one answers
//! ESTALE, which makes the kernel walk the path again and land on the current version. The
//! handle holds its version's ciphertext and reads decrypt only what they return (see
//! `handles.rs`), so the page cache of an inode can always be kept: its bytes never change.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyXattr, Request,
};
use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};
use vaultfs_store::template::Template;
use vaultfs_store::{EntryKind, SecretBytes, StoreError, VaultPath, VaultReader};

use crate::access::{self, Caller};
use crate::cache::SealedCache;
use crate::handles::{Content, Handles, OpenFile};
use crate::invalidate::Invalidator;
use crate::signal::ChangeSignal;
use crate::view::{is_version_ino, Node, Render, Stale, Tree};
use crate::workers::{WorkerError, Workers};

/// How long the kernel may cache names and attributes without asking. Changes are also pushed
/// by invalidation; this bounds what a lost invalidation could cost.
const TTL: Duration = Duration::from_secs(1);

/// How long a lookup of a name the view lacks waits for the refresher to look again.
const LOOKUP_MISS_WAIT: Duration = Duration::from_millis(300);

/// How long an open of the rotated root of a single-secret mount waits for the kernel to drop
/// its cached attributes (the old size).
const SETTLE_WAIT: Duration = Duration::from_millis(500);

/// Store workers: values are fetched by a few threads; more would only queue on SQLite.
const STORE_WORKERS: usize = 4;

/// Fetches that may wait for a worker; beyond that the store is stuck and opens fail at once.
const STORE_QUEUE: usize = 64;

/// Opens that may wait for the store at once. Each waits until its deadline at most, so this
/// bounds how many opens a stuck store holds, not how long.
const OPENERS: usize = 32;

/// Opens that may queue for an opener; beyond that an open fails at once with EIO.
const OPEN_QUEUE: usize = 32;

/// Settings of one mount.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long an open may wait for the store before it answers EIO.
    pub open_timeout: Duration,
    /// Told which files' bytes changed after each applied batch (see [`crate::changes`]).
    pub on_change: Option<Arc<dyn crate::changes::ChangeHook>>,
    /// Let the kernel check access and skip opens (see `kernel.rs`): reads of unchanged
    /// secrets come from the page cache, and whatever needs a per-open decision is refused.
    pub kernel_checks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            open_timeout: Duration::from_secs(2),
            on_change: None,
            kernel_checks: false,
        }
    }
}

/// What the newest refresh round said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// A round that started after the request finished and the tree is current.
    Fresh,
    /// That round failed (the store is unreadable, locked, tampered with).
    Failed,
    /// No such round finished before the deadline.
    TimedOut,
}

/// State shared by the request handlers, the refresher thread and the mount handle.
pub struct Shared {
    pub(crate) reader: Arc<VaultReader>,
    source: VaultPath,
    options: Options,
    tree: RwLock<Tree>,
    /// Ids of rows that failed authentication, reported once each.
    damaged: Mutex<HashSet<i64>>,
    pub(crate) invalidator: Arc<Invalidator>,
    handles: Handles,
    workers: Workers,
    /// Threads that carry opens through their waits.
    openers: Workers,
    /// Refresh rounds asked of the refresher thread, and rounds it has finished.
    rounds: Mutex<Rounds>,
    round_done: Condvar,
    /// The store file (device, inode) at mount; another file at that path is not followed.
    pub(crate) store_file: Option<(u64, u64)>,
    /// Set once the store file was replaced or deleted: the last good state keeps serving.
    pub(crate) store_replaced: AtomicBool,
    /// Set when a secret was hidden (expired or spent): the refresher renders the templates
    /// again, so one made of it no longer renders.
    rerender: AtomicBool,
    /// Set once the vault was removed: the mount serves an empty tree.
    pub(crate) vault_gone: AtomicBool,
    /// Reports changed bytes to the mount's caller, when it asked.
    changes: Option<crate::changes::Tracker>,
    /// Whether a writer committed since the last round: opens skip the round when not.
    pub(crate) signal: ChangeSignal,
    /// Sealed values of small secrets, so unchanged opens need no store worker.
    cache: SealedCache,
    /// The kernel-checked mode's state, when the mount is in it.
    pub(crate) kernel: Option<crate::kernel::KernelMode>,
    /// A kernel-checked mount's acknowledgements to writers (set once mounted).
    pub(crate) acker: Option<Arc<crate::signal::Acker>>,
    /// The audit writer (declared last: dropped after everything that records).
    audit: crate::audit::Auditor,
}

#[derive(Debug, Default)]
struct Rounds {
    requested: u64,
    finished: u64,
    /// Whether the round that finished last succeeded.
    ok: bool,
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
        options: Options,
    ) -> Result<Shared, StoreError> {
        let store_file = file_identity(reader.store_path());
        let changes = options.on_change.clone().map(crate::changes::Tracker::new);
        let signal = ChangeSignal::new(reader.store_path());
        let snap = reader.snapshot()?;
        let mut tree = Tree::new(snap.generation, snap.vault, snap.entries, source.clone());
        let mut acker = None;
        if options.kernel_checks {
            tree = tree.kernel_checks();
            let made = crate::signal::Acker::create(reader.store_path()).map_err(|source| {
                StoreError::Io {
                    path: vaultfs_store::signal::path_of(reader.store_path()),
                    source,
                }
            })?;
            acker = Some(Arc::new(made));
        }
        let kernel = options
            .kernel_checks
            .then(crate::kernel::KernelMode::default);
        let pool = |name, threads, queue| {
            Workers::start(name, threads, queue).map_err(|source| StoreError::Io {
                path: reader.store_path().clone(),
                source,
            })
        };
        let workers = pool("vaultfs-store", STORE_WORKERS, STORE_QUEUE)?;
        let openers = pool("vaultfs-open", OPENERS, OPEN_QUEUE)?;
        let reader = Arc::new(reader);
        let audit = crate::audit::Auditor::start(
            &reader,
            options
                .kernel_checks
                .then_some("kernel-checks: opens through this mount are not audited"),
        );
        let shared = Shared {
            audit,
            reader,
            source,
            options,
            tree: RwLock::new(tree),
            damaged: Mutex::new(HashSet::new()),
            invalidator,
            handles: Handles::default(),
            workers,
            openers,
            rounds: Mutex::new(Rounds {
                ok: true,
                ..Rounds::default()
            }),
            round_done: Condvar::new(),
            store_file,
            store_replaced: AtomicBool::new(false),
            rerender: AtomicBool::new(false),
            vault_gone: AtomicBool::new(false),
            changes,
            signal,
            cache: SealedCache::default(),
            kernel,
            acker,
        };
        shared.report_damaged(snap.damaged);
        shared.render_templates();
        if let Some(c) = &shared.changes {
            c.scan(&shared, true);
        }
        Ok(shared)
    }

    /// The tree, for reading. Hold the guard only while building a reply, never across a
    /// wait: a refresh needs the write side.
    pub fn tree(&self) -> RwLockReadGuard<'_, Tree> {
        self.tree.read()
    }

    /// Asks the refresher thread for a round that starts after this call and waits for it
    /// until `deadline`. A handler uses this instead of reading the store itself, so it is
    /// delayed until its deadline at most, however stuck the store is.
    pub fn wait_for_refresh(&self, deadline: Instant) -> Freshness {
        let mut rounds = self.rounds.lock();
        rounds.requested += 1;
        let mine = rounds.requested;
        self.round_done.notify_all();
        while rounds.finished < mine {
            if self
                .round_done
                .wait_until(&mut rounds, deadline)
                .timed_out()
                && rounds.finished < mine
            {
                return Freshness::TimedOut;
            }
        }
        if rounds.ok {
            Freshness::Fresh
        } else {
            Freshness::Failed
        }
    }

    /// Asks the refresher for a round without waiting for it (a writer signalled a change).
    pub(crate) fn request_round(&self) {
        let mut rounds = self.rounds.lock();
        rounds.requested += 1;
        self.round_done.notify_all();
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

    /// For the refresher thread: rounds up to `upto` are done, with this outcome.
    pub fn finish_round(&self, upto: u64, ok: bool) {
        let mut rounds = self.rounds.lock();
        rounds.finished = rounds.finished.max(upto);
        rounds.ok = ok;
        self.round_done.notify_all();
    }

    /// The vault's name and the mounted path, for messages.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.reader.vault_name(), self.source)
    }

    /// Brings the tree up to date with the store. Only the refresher thread calls this: the
    /// store is read without the tree's lock, so handlers keep answering meanwhile.
    pub(crate) fn refresh(&self) -> Result<(), StoreError> {
        let generation = self.reader.generation()?;
        let (known, vault_version) = {
            let tree = self.tree();
            (tree.generation, tree.vault.version)
        };
        if generation == known {
            return Ok(());
        }
        let changes = self.reader.changes_since(known, vault_version)?;
        // Secrets read before they were rotated are likely read again at once: fetch their new
        // sealed value here (this thread reads the store anyway), so that open needs no worker.
        let rotated: Vec<(i64, i64)> = changes
            .upserts
            .iter()
            .filter(|e| e.kind == EntryKind::File && e.size <= crate::cache::MAX_VALUE)
            .filter(|e| self.cache.holds_older(e.id, e.version))
            .map(|e| (e.id, e.version))
            .collect();
        let mut deleted = changes.deleted;
        deleted.extend(changes.damaged.iter().map(|(id, _)| *id));
        self.apply(|tree| tree.apply(changes.generation, changes.vault, changes.upserts, &deleted));
        self.cache.forget(&deleted);
        self.report_damaged(changes.damaged);
        self.render_templates();
        for (id, version) in rotated {
            if let Ok(Some(v)) = self.reader.sealed_value(id, version) {
                self.cache.put(id, version, &Arc::new(v));
            }
        }
        if let Some(c) = &self.changes {
            c.mark_due();
        }
        Ok(())
    }

    /// For the refresher thread, after it finished a round (so no open waits on this):
    /// reports the files whose bytes the last applied batch changed, if anyone asked.
    pub(crate) fn report_changes(&self) {
        if let Some(c) = &self.changes {
            c.scan_if_due(self);
        }
    }

    /// Renders every template whose row or inputs changed, to learn its size and give its
    /// new content a new inode. Runs on the refresher thread (it reads the store); the bytes
    /// are dropped at once, and an open renders again from exactly the same versions.
    fn render_templates(&self) {
        let templates = self.tree().templates();
        for (id, version) in templates {
            let what = self.name_of(id);
            let template = match self.reader.template(id, version, &what) {
                Ok(Some(t)) => t,
                // Changed since: the next round renders the new one.
                Ok(None) => continue,
                Err(e) => {
                    self.report_unreadable(id, &what, &e);
                    continue;
                }
            };
            let made_of = self.made_of(id, version, &template);
            let previous = self.tree().render(id).cloned();
            if previous.as_ref().is_some_and(|r| r.made_of == made_of) {
                continue;
            }
            let (size, ok) = match render_from(&self.reader, &what, &template, &made_of) {
                Ok(Some(bytes)) => (bytes.len() as u64, true),
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("{e}; opens of it fail until that is fixed");
                    (0, false)
                }
            };
            let render = Render {
                made_of,
                content: previous.map_or(1, |r| r.content + 1),
                size,
                ok,
            };
            self.apply(|tree| tree.set_render(id, render));
        }
    }

    /// The rows template `id` at `version` is rendered from: itself, then each input
    /// (`(-1, -1)` for one that is missing, not a secret, or in another vault).
    fn made_of(&self, id: i64, version: i64, template: &Template) -> Vec<(i64, i64)> {
        let tree = self.tree();
        std::iter::once((id, version))
            .chain(template.inputs().into_iter().map(|addr| {
                if addr.vault != self.reader.vault_name() {
                    return (-1, -1);
                }
                tree.secret_at(&addr.path).unwrap_or((-1, -1))
            }))
            .collect()
    }

    /// `VAULT:/path` of entry `id`, for messages.
    fn name_of(&self, id: i64) -> String {
        let tree = self.tree();
        let ino = tree.ino(id);
        match tree.node(ino) {
            Some(n) => format!("{}:{}", self.reader.vault_name(), tree.path(n)),
            None => format!("{}: entry #{id}", self.reader.vault_name()),
        }
    }

    /// Empties the tree: the vault is gone, and a vault re-created under the same name has a
    /// new key this mount does not hold.
    pub(crate) fn clear(&self) {
        self.apply(|tree| {
            let generation = tree.generation;
            let ids = tree.entry_ids();
            self.cache.forget(&ids);
            tree.apply(generation, None, Vec::new(), &ids)
        });
    }

    /// Writes the audit's clean-stop record and everything queued (the session ended).
    pub(crate) fn finish_audit(&self) {
        self.audit.finish();
    }

    /// Hides the secrets whose expiry has come: by time, not only when the store changes.
    pub(crate) fn expire_due(&self) {
        let now = crate::view::now_ns();
        // Most rounds have nothing due: a read lock answers that without blocking opens.
        if self.tree().has_due(now) {
            for (path, version) in self.tree().due(now) {
                self.audit.record(vaultfs_store::AuditRecord {
                    t_ns: now,
                    event: "expire".into(),
                    path: Some(format!("{}:{path}", self.reader.vault_name())),
                    version: Some(version),
                    ..Default::default()
                });
            }
            self.apply(|tree| tree.expire(now));
            self.rerender.store(true, Ordering::Relaxed);
        }
        // A hidden secret is missing for the templates made of it: render them again.
        if self.rerender.swap(false, Ordering::Relaxed) {
            self.render_templates();
        }
    }

    /// Counts an open of a read-limited secret; when the limit is spent, hides the secret and
    /// refuses (ENOENT, as for an expired one), logging an alarm for a read-once secret.
    fn count_open(
        &self,
        caller: Caller,
        id: i64,
        version: i64,
        max: u64,
        path: &VaultPath,
        deadline: Instant,
    ) -> Result<(), Errno> {
        match crate::limits::count(&self.reader, &self.workers, id, version, max, deadline)? {
            // The secret stays listed after its last allowed open, so that the next open
            // reaches the daemon, is refused, and is audited (an alarm for a read-once secret);
            // it is hidden then.
            crate::limits::Counted::Yes { .. } => Ok(()),
            crate::limits::Counted::Spent => {
                self.audit.record(vaultfs_store::AuditRecord {
                    t_ns: crate::view::now_ns(),
                    event: "read-once".into(),
                    path: Some(format!("{}:{path}", self.reader.vault_name())),
                    version: Some(version),
                    uid: Some(caller.uid),
                    gid: Some(caller.gid),
                    decision: Some(if max == 1 { "alarm" } else { "deny" }.into()),
                    rule: Some(format!("max-opens {max} spent")),
                    ..Default::default()
                });
                if max == 1 {
                    tracing::warn!(
                        uid = caller.uid,
                        pid = caller.pid,
                        "{}:{path}: ALARM: a read-once secret was opened again; refused",
                        self.reader.vault_name()
                    );
                }
                self.apply(|tree| tree.spend(id, version));
                self.rerender.store(true, Ordering::Relaxed);
                Err(Errno::ENOENT)
            }
        }
    }

    fn apply(&self, change: impl FnOnce(&mut Tree) -> Vec<Stale>) {
        let mut tree = self.tree.write();
        let stale = change(&mut tree);
        if let Some(k) = &self.kernel {
            let newly = tree.take_newly_blocked();
            let mut logged = k.logged.lock();
            let now: HashSet<i64> = tree.blocked_ids();
            logged.retain(|id| now.contains(id));
            for (id, path, why) in newly {
                if logged.insert(id) {
                    tracing::warn!(
                        "{}:{path}: {why} appeared under a kernel-checked mount, which cannot \
                         enforce it; the entry is hidden there (fail closed)",
                        self.reader.vault_name()
                    );
                }
            }
        }
        // Marks go in before the write lock drops, so an open that sees the new tree also
        // sees that the kernel's copy is stale.
        for s in stale {
            match s {
                Stale::Inode(id, ino) => self.invalidator.inode(id, ino),
                Stale::Name(parent, name) => self.invalidator.entry(parent, &name),
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

    /// Reports a value that failed to decrypt, once per entry.
    fn report_unreadable(&self, id: i64, path: &str, err: &StoreError) {
        if self.damaged.lock().insert(id) {
            tracing::error!("{}:{path}: {err}", self.reader.vault_name());
        }
    }

    /// How the kernel may cache an open of `ino` (entry `id`). A version inode's bytes never
    /// change, so the kernel may always keep its pages. The root of a single-secret mount is
    /// one inode for every version, and the page cache is per inode: a page filled through a
    /// new handle would be served to an old one without asking. So every read there comes to
    /// the daemon, which checks the handle's version. After a rotation, wait (bounded) for the
    /// notifier to drop the cached size, so fstat on the new handle tells the new size.
    fn cache_flags(&self, ino: INodeNo, id: i64) -> FopenFlags {
        if ino != INodeNo::ROOT {
            return FopenFlags::FOPEN_KEEP_CACHE;
        }
        if !self.invalidator.settle(id, SETTLE_WAIT) {
            tracing::debug!("{}: the old size may still be cached", self.describe());
        }
        FopenFlags::FOPEN_DIRECT_IO
    }

    /// Opens a template: renders it on a store worker from exactly what its inode stands for.
    fn open_template(
        &self,
        caller: Caller,
        ino: INodeNo,
        render: Option<Render>,
        deadline: Instant,
    ) -> Result<(FileHandle, FopenFlags), Errno> {
        let Some(render) = render.filter(|r| r.ok) else {
            // The refresher logged why, once.
            return Err(Errno::EIO);
        };
        // An input that expired or was spent since the last rendering is missing: the
        // refresher renders again (and logs why) at its next round; until then, refuse.
        if render.made_of[1..]
            .iter()
            .any(|&(id, _)| id >= 0 && !self.tree().serves(id))
        {
            self.rerender.store(true, Ordering::Relaxed);
            return Err(Errno::EIO);
        }
        let (id, version) = render.made_of[0];
        let attr = {
            let tree = self.tree();
            tree.node(ino).map(|n| n.attr(ino)).ok_or(Errno::ESTALE)?
        };
        let what = self.name_of(id);
        let reader = self.reader.clone();
        let made_of = render.made_of.clone();
        let job = move || -> Result<Option<SecretBytes>, StoreError> {
            let Some(template) = reader.template(id, version, &what)? else {
                return Ok(None);
            };
            render_from(&reader, &what, &template, &made_of)
        };
        let bytes = match self.workers.run(deadline, job) {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => {
                tracing::debug!(
                    "{}: template changed while opened: {made:?}",
                    self.describe(),
                    made = render.made_of
                );
                return Err(Errno::ESTALE);
            }
            Ok(Err(e)) => {
                tracing::warn!("{e}");
                return Err(Errno::EIO);
            }
            Err(_) => return Err(Errno::EIO),
        };
        // A template's inode stands for one rendering, like a secret's version's.
        let cache = self.cache_flags(ino, id);
        let fh = self.handles.insert(OpenFile {
            ino,
            id,
            version: render.content,
            caller,
            attr,
            value: Content::Rendered(bytes),
        });
        Ok((fh, cache))
    }

    /// The ciphertext of entry `id` at `version`, fetched by a store worker until `deadline`.
    fn fetch(
        &self,
        id: i64,
        version: i64,
        deadline: Instant,
    ) -> Result<Option<vaultfs_store::SealedValue>, FetchError> {
        let reader = self.reader.clone();
        match self
            .workers
            .run(deadline, move || reader.sealed_value(id, version))
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(FetchError::Store(e)),
            Err(WorkerError::TimedOut) => Err(FetchError::TimedOut),
            Err(WorkerError::Busy) => Err(FetchError::Busy),
        }
    }

    fn check_open(
        &self,
        caller: Caller,
        tree: &Tree,
        node: &Node,
        flags: OpenFlags,
    ) -> Result<(), Errno> {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        if node.limits.expired_at(crate::view::now_ns()) {
            return Err(Errno::ENOENT);
        }
        let decision = access::decide(tree, node, caller);
        self.audit.open(
            if node.is_dir() { "opendir" } else { "open" },
            || format!("{}:{}", self.reader.vault_name(), tree.path(node)),
            node.version,
            caller,
            &decision,
        );
        if !decision.allowed {
            tracing::info!(
                uid = caller.uid,
                pid = caller.pid,
                rule = decision.rule,
                "{}:{} denied",
                self.reader.vault_name(),
                tree.path(node)
            );
            return Err(Errno::EACCES);
        }
        tracing::debug!(
            uid = caller.uid,
            pid = caller.pid,
            "{}:{} opened",
            self.reader.vault_name(),
            tree.path(node)
        );
        Ok(())
    }

    /// An open that needs no waiting, done on the request thread: no write since the last
    /// round (so the tree is current) and the version's sealed value cached. `None` when the
    /// open must go to an opener thread; decided before the caller is checked, so each open
    /// is checked (and logged) once.
    pub(crate) fn open_now(
        &self,
        caller: Caller,
        ino: INodeNo,
        flags: OpenFlags,
    ) -> Option<Result<(FileHandle, FopenFlags), Errno>> {
        if ino == INodeNo::ROOT || !self.signal.unchanged() {
            return None;
        }
        let tree = self.tree();
        let node = tree.node(ino)?;
        // A counted open writes the count (on a store worker, bounded): never here.
        if node.is_dir() || node.kind == EntryKind::Template || node.limits.max_opens.is_some() {
            return None;
        }
        let value = self.cache.get(node.id, node.version)?;
        if let Err(e) = self.check_open(caller, &tree, node, flags) {
            return Some(Err(e));
        }
        let file = OpenFile {
            ino,
            id: node.id,
            version: node.version,
            caller,
            attr: node.attr(ino),
            value: Content::Sealed(value),
        };
        drop(tree);
        let fh = self.handles.insert(file);
        Some(Ok((fh, FopenFlags::FOPEN_KEEP_CACHE)))
    }

    /// The attributes reported to the kernel for `node` at `ino`. On a kernel-checked mount
    /// the kernel alone decides from them, so an owner or group that does not resolve on
    /// this host (shown as `nobody`) loses its class's bits: the daemon would grant that class
    /// to nobody, and the kernel must not grant it to the user `nobody`.
    pub(crate) fn attr_of(&self, node: &Node, ino: INodeNo) -> FileAttr {
        let mut attr = node.attr(ino);
        if self.kernel.is_some() {
            if node.acl.owner.is_none() {
                attr.perm &= !0o700;
            }
            if node.acl.group.is_none() {
                attr.perm &= !0o070;
            }
        }
        attr
    }

    /// A read on a kernel-checked mount (no handle): the version inode `ino` stands for, from
    /// the pinned or cached ciphertext; `Err(None)` when it must be fetched from the store
    /// first (by [`Shared::fetch_for_read`], off the request thread).
    fn kernel_value(
        &self,
        kernel: &crate::kernel::KernelMode,
        ino: INodeNo,
    ) -> Result<Arc<vaultfs_store::SealedValue>, Option<Errno>> {
        let tree = self.tree();
        match tree.node(ino) {
            Some(node) if node.is_dir() => Err(Some(Errno::EISDIR)),
            Some(node) => kernel
                .pinned(ino)
                .or_else(|| self.cache.get(node.id, node.version))
                .ok_or(None),
            // An older version (or one since deleted or hidden), read by a descriptor opened
            // before the change: that descriptor keeps its version, as a handle does on a
            // default mount and as on any filesystem. New opens never reach this inode: its
            // name was invalidated.
            None => kernel.pinned(ino).ok_or(Some(Errno::ESTALE)),
        }
    }

    /// Fetches the current version behind `ino` for a read on a kernel-checked mount; runs
    /// on an opener thread, bounded by the open deadline.
    fn fetch_for_read(&self, ino: INodeNo) -> Result<Arc<vaultfs_store::SealedValue>, Errno> {
        let deadline = Instant::now() + self.options.open_timeout;
        let (id, version, path) = {
            let tree = self.tree();
            let node = tree.node(ino).ok_or(Errno::ESTALE)?;
            (node.id, node.version, tree.path(node))
        };
        match self.fetch(id, version, deadline) {
            Ok(Some(v)) => {
                let v = Arc::new(v);
                self.cache.put(id, version, &v);
                Ok(v)
            }
            // Rotated since: the kernel gets the new inode at its next lookup.
            Ok(None) => Err(Errno::ESTALE),
            Err(FetchError::Store(e)) => {
                self.report_unreadable(id, &path.to_string(), &e);
                Err(Errno::EIO)
            }
            Err(FetchError::TimedOut | FetchError::Busy) => Err(Errno::EIO),
        }
    }

    /// The whole open of a secret, as an errno on failure.
    pub(crate) fn open_file(
        &self,
        caller: Caller,
        ino: INodeNo,
        flags: OpenFlags,
    ) -> Result<(FileHandle, FopenFlags), Errno> {
        let deadline = Instant::now() + self.options.open_timeout;
        // No write since the last round: the tree is current without asking for one.
        let freshness = if self.signal.unchanged() {
            Freshness::Fresh
        } else {
            self.wait_for_refresh(deadline)
        };
        match freshness {
            Freshness::Fresh => {}
            // The refresher logs the store's trouble once; every open would repeat it.
            Freshness::Failed => return Err(Errno::EIO),
            Freshness::TimedOut => {
                tracing::debug!(
                    "{}: open: the store did not answer in time",
                    self.describe()
                );
                return Err(Errno::EIO);
            }
        }
        let (id, version, attr, path, limits) = {
            let tree = self.tree();
            let Some(node) = tree.node(ino) else {
                // An outdated version: the kernel walks the path again and finds the new one
                // (or nothing, if the secret is gone).
                return Err(if is_version_ino(ino) {
                    Errno::ESTALE
                } else {
                    Errno::ENOENT
                });
            };
            if node.is_dir() {
                return Err(Errno::EISDIR);
            }
            self.check_open(caller, &tree, node, flags)?;
            if node.kind == EntryKind::Template {
                let render = tree.render(node.id).cloned();
                drop(tree);
                return self.open_template(caller, ino, render, deadline);
            }
            (
                node.id,
                node.version,
                node.attr(ino),
                tree.path(node),
                node.limits,
            )
        };
        let fetched = match self.cache.get(id, version) {
            Some(value) => Ok(Some(value)),
            None => self.fetch(id, version, deadline).map(|v| {
                v.map(|v| {
                    let v = Arc::new(v);
                    self.cache.put(id, version, &v);
                    v
                })
            }),
        };
        let value = match fetched {
            Ok(Some(value)) => Content::Sealed(value),
            // Rewritten since the refresh: walk again.
            Ok(None) => return Err(Errno::ESTALE),
            Err(FetchError::Store(e)) => {
                self.report_unreadable(id, &path.to_string(), &e);
                return Err(Errno::EIO);
            }
            Err(FetchError::TimedOut | FetchError::Busy) => {
                tracing::debug!(
                    "{}:{path}: the store did not answer in time",
                    self.reader.vault_name()
                );
                return Err(Errno::EIO);
            }
        };
        let cache = self.cache_flags(ino, id);
        if let Some(max) = limits.max_opens {
            self.count_open(caller, id, version, max, &path, deadline)?;
        }
        let fh = self.handles.insert(OpenFile {
            ino,
            id,
            version,
            caller,
            attr,
            value,
        });
        Ok((fh, cache))
    }
}

/// Renders `template` (called `what` in messages) from exactly the input versions in
/// `made_of`; `Ok(None)` when one of them changed since (the caller's view is stale).
pub(crate) fn render_from(
    reader: &VaultReader,
    what: &str,
    template: &Template,
    made_of: &[(i64, i64)],
) -> Result<Option<SecretBytes>, StoreError> {
    let mut values = Vec::new();
    for (addr, &(id, version)) in template.inputs().into_iter().zip(&made_of[1..]) {
        if id < 0 {
            values.push((addr.clone(), None));
            continue;
        }
        match reader.read_value(id, version)? {
            Some(v) => values.push((addr.clone(), Some(v))),
            None => return Ok(None),
        }
    }
    let rendered = template.render(|addr| {
        values
            .iter()
            .find(|(a, _)| a == addr)
            .and_then(|(_, v)| v.clone())
    });
    rendered.map(Some).map_err(|source| StoreError::Template {
        path: what.to_owned(),
        source,
    })
}

#[derive(Debug)]
enum FetchError {
    Store(StoreError),
    TimedOut,
    Busy,
}

/// The (device, inode) of the file at `path`, by `stat` (never by opening it: closing a
/// descriptor of SQLite's file would drop SQLite's locks on it).
pub(crate) fn file_identity(path: &PathBuf) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
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

    fn caller(req: &Request) -> Caller {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
    }

    /// A read on a kernel-checked mount (see `kernel.rs`).
    fn read_kernel(
        &self,
        kernel: &crate::kernel::KernelMode,
        ino: INodeNo,
        offset: u64,
        size: u32,
        reply: ReplyData,
    ) {
        kernel.reads.fetch_add(1, Ordering::Relaxed);
        let serve =
            move |shared: &Shared, value: Arc<vaultfs_store::SealedValue>, reply: ReplyData| {
                if let Some(k) = &shared.kernel {
                    k.pin(ino, &value, || {
                        let tree = shared.tree();
                        tree.node(ino).map(|n| shared.attr_of(n, ino))
                    });
                }
                match value.read(offset, size as usize) {
                    Ok(bytes) => reply.data(bytes.expose()),
                    Err(e) => {
                        // Once per entry (the root of a single-secret mount counts as one).
                        let id = crate::view::split_version_ino(ino).map_or(-1, |(id, _)| id);
                        shared.report_unreadable(id, &format!("inode {:#x}", ino.0), &e);
                        reply.error(Errno::EIO);
                    }
                }
            };
        match self.shared.kernel_value(kernel, ino) {
            Ok(value) => serve(&self.shared, value, reply),
            Err(Some(e)) => reply.error(e),
            Err(None) => {
                // Not cached: a store worker fetches it, waited for on an opener thread.
                let shared = self.shared.clone();
                let slot = Arc::new(Mutex::new(Some(reply)));
                let mine = slot.clone();
                let handed = self.shared.openers.spawn(move || {
                    let outcome = shared.fetch_for_read(ino);
                    if let Some(reply) = mine.lock().take() {
                        match outcome {
                            Ok(value) => serve(&shared, value, reply),
                            Err(e) => reply.error(e),
                        }
                    }
                });
                if handed.is_err() {
                    if let Some(reply) = slot.lock().take() {
                        reply.error(Errno::EIO);
                    }
                }
            }
        }
    }

    fn read_file(&self, ino: INodeNo, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        let Some(file) = self.shared.handles.get(fh).filter(|f| f.ino == ino) else {
            return reply.error(Errno::EBADF);
        };
        let serve = |reply: ReplyData| match file.value.read(offset, size as usize) {
            Ok(bytes) => reply.data(bytes.expose()),
            Err(e) => {
                let path = {
                    let tree = self.shared.tree();
                    tree.node(ino).map(|n| tree.path(n).to_string())
                };
                self.shared
                    .report_unreadable(file.id, path.as_deref().unwrap_or("?"), &e);
                reply.error(Errno::EIO);
            }
        };
        if ino != INodeNo::ROOT {
            return serve(reply);
        }
        // The root of a single-secret mount is one inode for every version: a handle of an
        // outdated version fails rather than read bytes its caller may no longer be allowed
        // to open (its reads all come here: it is opened with direct I/O).
        let current = self
            .shared
            .tree()
            .node(INodeNo::ROOT)
            .map(|n| (n.id, n.content));
        if current != Some((file.id, file.version)) {
            return reply.error(Errno::ESTALE);
        }
        serve(reply);
    }
}

fn name_str(name: &OsStr) -> Option<&str> {
    name.to_str()
}

fn kind_of(node: &Node) -> FileType {
    if node.is_dir() {
        FileType::Directory
    } else {
        FileType::RegularFile
    }
}

impl Filesystem for VaultFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Readahead of a whole small secret in one request.
        let _ = config.set_max_readahead(128 * 1024);
        // The kernel announces zero-message opens; without them a kernel-checked mount would
        // fail every open with ENOSYS, so it is not made at all.
        if self.shared.kernel.is_some()
            && !config
                .capabilities()
                .contains(InitFlags::FUSE_NO_OPEN_SUPPORT)
        {
            return Err(std::io::Error::other(
                "this kernel has no FUSE no-open support, which a kernel-checked mount needs",
            ));
        }
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
            Some(self.shared.attr_of(child, tree.ino_of(child)))
        };
        // A miss may be a secret created since the last refresh: look again after one, which
        // the refresher thread makes so this never waits on the store for long.
        let attr = find().or_else(|| {
            if self.shared.signal.unchanged() {
                // Nothing was written since the last round: a miss is a miss.
                return None;
            }
            self.shared
                .wait_for_refresh(Instant::now() + LOOKUP_MISS_WAIT);
            find()
        });
        match attr {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // Served from memory; the refresher keeps it within a poll interval of the store.
        let current: Option<FileAttr> = {
            let tree = self.shared.tree();
            tree.node(ino).map(|node| self.shared.attr_of(node, ino))
        };
        if let Some(attr) = current {
            return reply.attr(&TTL, &attr);
        }
        // fstat on a descriptor of an outdated version on a kernel-checked mount: the
        // attributes pinned with its ciphertext.
        if let Some(attr) = self.shared.kernel.as_ref().and_then(|k| k.pinned_attr(ino)) {
            return reply.attr(&TTL, &attr);
        }
        // fstat on a handle of an outdated version: that version's attributes.
        let file = fh
            .and_then(|fh| self.shared.handles.get(fh))
            .filter(|f| f.ino == ino)
            .or_else(|| self.shared.handles.any_of(ino));
        if let Some(file) = file {
            return reply.attr(&TTL, &file.attr);
        }
        reply.error(if is_version_ino(ino) {
            Errno::ESTALE
        } else {
            Errno::ENOENT
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if let Some(k) = &self.shared.kernel {
            // The kernel checked access already; ENOSYS tells it (it announced no-open
            // support at INIT) to stop sending OPEN, FLUSH and RELEASE on this mount.
            let n = k.opens.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(
                "{}: OPEN reached a kernel-checked mount ({n} so far); answering ENOSYS",
                self.shared.describe()
            );
            return reply.error(Errno::ENOSYS);
        }
        // The open waits (bounded) for the store on an opener thread, so this request
        // thread is free at once for the next request, an `ls` or a `stat` say.
        let caller = Self::caller(req);
        if let Some(outcome) = self.shared.open_now(caller, ino, flags) {
            return match outcome {
                Ok((fh, cache)) => reply.opened(fh, cache),
                Err(e) => reply.error(e),
            };
        }
        let shared = self.shared.clone();
        let slot = Arc::new(Mutex::new(Some(reply)));
        let mine = slot.clone();
        let handed = self.shared.openers.spawn(move || {
            let outcome = shared.open_file(caller, ino, flags);
            // The slot is empty only if the job was refused, and then this never runs.
            if let Some(reply) = mine.lock().take() {
                match outcome {
                    Ok((fh, cache)) => reply.opened(fh, cache),
                    Err(e) => reply.error(e),
                }
            }
        });
        if handed.is_err() {
            // Every opener is waiting on a stuck store: fail now rather than queue.
            if let Some(reply) = slot.lock().take() {
                tracing::debug!(
                    "{}: open refused: every opener is busy",
                    self.shared.describe()
                );
                reply.error(Errno::EIO);
            }
        }
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
        if let Some(k) = &self.shared.kernel {
            return self.read_kernel(k, ino, offset, size, reply);
        }
        self.read_file(ino, fh, offset, size, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        // The kernel sends FORGET when it evicts the inode: no page or descriptor is left.
        if let Some(k) = &self.shared.kernel {
            k.forget(ino);
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
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(file) = self.shared.handles.remove(fh) {
            tracing::trace!(
                uid = file.caller.uid,
                pid = file.caller.pid,
                "{}: entry #{} version {} closed",
                self.shared.describe(),
                file.id,
                file.version
            );
        }
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Listing never waits on the store: a directory holds no secret, and the ACL it is
        // checked against is at most one poll interval old. A directory handle may keep
        // listing after a revocation, as on any POSIX filesystem.
        let tree = self.shared.tree();
        let Some(node) = tree.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if !node.is_dir() {
            return reply.error(Errno::ENOTDIR);
        }
        match self
            .shared
            .check_open(Self::caller(req), &tree, node, flags)
        {
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
        let children = tree
            .children(dir)
            .map(|(name, child)| (tree.ino_of(child), kind_of(child), name));
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

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // Every Python open() asks TCGETS; "not a terminal" is the right answer, quietly.
        reply.error(Errno::ENOTTY);
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
