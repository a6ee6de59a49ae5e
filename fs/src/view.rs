//! The mount's in-memory picture of its vault: every row of the vault (names, ACL overrides,
//! sizes; never values) and, for the entries under the mounted path, their attributes with the
//! ACL resolved to uids and gids.
//!
//! Changes are applied incrementally: a rotated secret updates one node, a renamed or
//! re-permissioned directory its subtree. Only a change of the vault's defaults or of the path
//! leading to the mounted root rebuilds everything. So the first open after a change costs the
//! same in a vault of ten secrets or of a hundred thousand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use vaultfs_store::{
    projected_mode, Entry, EntryKind, Grant, Limits, Principal, VaultInfo, VaultPath, ROOT_PARENT,
};

use crate::nss;

/// The uid and gid shown for an owner or group that does not resolve on this host. The driver
/// grants that class to nobody, so showing `nobody` tells the truth.
pub const UNRESOLVED_ID: u32 = 65534;

/// Set in the inode number of a secret's version; directory inodes (`id + 1`) never have it.
const VERSION_INO_FLAG: u64 = 1 << 63;
/// Low bits of an inode number that hold the version; the id goes above them.
const VERSION_BITS: u32 = 24;
const VERSION_MASK: u64 = (1 << VERSION_BITS) - 1;

/// The inode of version `version` of secret `id`. Versions are kept modulo 2^24: two versions
/// that far apart never coexist in the kernel's caches. Ids are SQLite row ids, far below the
/// 2^39 this leaves them.
pub fn version_ino(id: i64, version: i64) -> INodeNo {
    INodeNo(VERSION_INO_FLAG | ((id as u64) << VERSION_BITS) | (version as u64 & VERSION_MASK))
}

/// The entry id and version bits of a version inode, `None` for any other inode.
pub fn split_version_ino(ino: INodeNo) -> Option<(i64, u64)> {
    (ino.0 & VERSION_INO_FLAG != 0).then_some((
        ((ino.0 & !VERSION_INO_FLAG) >> VERSION_BITS) as i64,
        ino.0 & VERSION_MASK,
    ))
}

/// Whether `ino` names one version of a secret: an open of an outdated one answers ESTALE,
/// so the kernel walks the path again and finds the current version.
pub fn is_version_ino(ino: INodeNo) -> bool {
    split_version_ino(ino).is_some()
}

/// An ACL with its names resolved to ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    /// The owner's uid, `None` when the name does not resolve.
    pub owner: Option<u32>,
    /// The group's gid, `None` when the name does not resolve.
    pub group: Option<u32>,
    /// Permission bits before projection.
    pub mode: u16,
    /// The grants in force here: the ancestors' and the entry's own.
    pub grants: Arc<[ResolvedGrant]>,
}

/// A [`Grant`] with its principal resolved to an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedGrant {
    /// The granted user's uid (`None` for a group grant or an unknown user).
    pub uid: Option<u32>,
    /// The granted group's gid (`None` for a user grant or an unknown group).
    pub gid: Option<u32>,
    /// The grant as stored, with its conditions.
    pub grant: Grant,
}

impl Acl {
    fn inherit(&self, entry: &Entry, ids: &mut IdCache) -> Acl {
        let grants = if entry.acl.grants.is_empty() {
            self.grants.clone()
        } else {
            let own = entry.acl.grants.iter().map(|g| ResolvedGrant {
                uid: match &g.principal {
                    Principal::User(u) => ids.user(u),
                    Principal::Group(_) => None,
                },
                gid: match &g.principal {
                    Principal::Group(n) => ids.group(n),
                    Principal::User(_) => None,
                },
                grant: g.clone(),
            });
            self.grants.iter().cloned().chain(own).collect()
        };
        Acl {
            grants,
            owner: match &entry.acl.owner {
                Some(name) => ids.user(name),
                None => self.owner,
            },
            group: match &entry.acl.group {
                Some(name) => ids.group(name),
                None => self.group,
            },
            mode: entry.acl.mode.unwrap_or(self.mode),
        }
    }
}

/// One directory or secret as the mount shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Entry id ([`ROOT_PARENT`] for the vault's root directory).
    pub id: i64,
    /// Parent entry id.
    pub parent: i64,
    /// Name in the parent.
    pub name: String,
    /// Directory or secret.
    pub kind: EntryKind,
    /// Bumped by the store on every change of the row.
    pub version: i64,
    /// What the bytes a reader gets are made of, numbered: the row version for a secret;
    /// for a template, a count bumped whenever its own version or an input's changes. Each
    /// value has its own inode ([`version_ino`]).
    pub content: i64,
    /// Plaintext size (a template's: its rendering's).
    pub size: u64,
    /// Last change, ns since the epoch.
    pub mtime_ns: i64,
    /// The resolved ACL, which children inherit.
    pub acl: Acl,
    /// A directory some entry below grants: shown searchable by all (see [`Node::shown_perm`]).
    pub reach: bool,
    /// The value's expiry and read limit.
    pub limits: Limits,
}

impl Node {
    /// Permission bits as shown (directories get x wherever they get r).
    pub fn perm(&self) -> u16 {
        projected_mode(self.acl.mode, self.is_dir())
    }

    /// Permission bits reported to the kernel. The mount keeps `default_permissions`, so the
    /// kernel checks these before the daemon sees a request; where a grant gives someone
    /// outside owner and group access, the bits are widened to "other" so the kernel lets the
    /// request through, and the daemon narrows it at open (opendir, open) with the caller's
    /// full identity. So `ls -l` never shows less than is allowed: a granted secret shows
    /// `r` for other, a granted directory `r-x`, and a directory on the way to one `--x`.
    pub fn shown_perm(&self) -> u16 {
        let mut perm = self.perm();
        if !self.acl.grants.is_empty() {
            perm |= if self.is_dir() { 0o005 } else { 0o004 };
        }
        if self.reach {
            perm |= 0o001;
        }
        perm
    }

    /// The attributes reported to the kernel.
    pub fn attr(&self, ino: INodeNo) -> FileAttr {
        let mtime = UNIX_EPOCH + Duration::from_nanos(self.mtime_ns.max(0) as u64);
        let is_dir = self.is_dir();
        FileAttr {
            ino,
            size: self.size,
            blocks: self.size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: self.shown_perm(),
            nlink: if is_dir { 2 } else { 1 },
            uid: self.acl.owner.unwrap_or(UNRESOLVED_ID),
            gid: self.acl.group.unwrap_or(UNRESOLVED_ID),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

/// A kernel cache the tree's changes made stale.
#[derive(Debug, PartialEq, Eq)]
pub enum Stale {
    /// An inode's attributes or data (entry id, inode).
    Inode(i64, INodeNo),
    /// A name in a directory.
    Name(INodeNo, String),
}

/// The vault's rows and the mounted view of them, at one generation.
#[derive(Debug)]
pub struct Tree {
    /// The store's change counter this tree reflects.
    pub generation: i64,
    /// The vault's row: its default ACL.
    pub vault: VaultInfo,
    source: VaultPath,
    entries: HashMap<i64, Entry>,
    children: HashMap<i64, BTreeMap<String, i64>>,
    /// Entry ids from the vault's root down to the mounted root (inclusive).
    root_chain: Vec<i64>,
    nodes: HashMap<i64, Node>,
    /// The latest rendering of each template, by entry id.
    renders: HashMap<i64, Render>,
    /// Entries whose own record grants something, for [`Node::reach`].
    granted: HashSet<i64>,
    /// Directories currently marked [`Node::reach`].
    reach: HashSet<i64>,
    /// Secrets with an expiry, by (expiry, id), so the ones due are found without a scan.
    deadlines: std::collections::BTreeSet<(i64, i64)>,
    /// Secrets not served: expired, or their read limit spent (entry id, and the version
    /// spent for a read limit).
    gone: HashMap<i64, Option<i64>>,
    /// The time expiries were last checked against, ns since the epoch.
    now_ns: i64,
    /// A kernel-checked mount (see [`Tree::kernel_checks`]): entries that need a per-open
    /// decision are left out of the view.
    kernel: bool,
    /// Entries left out of a kernel-checked view, and why (see [`blocked_by`]).
    blocked: HashMap<i64, &'static str>,
    /// Entries left out since [`Tree::take_newly_blocked`] last asked, for the log.
    newly_blocked: Vec<(i64, &'static str)>,
}

/// What a template rendered to last (its bytes are never kept: only what they were made of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Render {
    /// The template's row (id, version), then each input's, in order of first use.
    pub made_of: Vec<(i64, i64)>,
    /// Numbers this rendering (see [`Node::content`]).
    pub content: i64,
    /// Its size in bytes (0 when it failed).
    pub size: u64,
    /// Whether it rendered: a template naming a missing input, or an input a placeholder
    /// would not accept, fails every open with EIO until that is fixed.
    pub ok: bool,
}

impl Tree {
    /// A tree of `entries`, mounted at `source`.
    pub fn new(generation: i64, vault: VaultInfo, entries: Vec<Entry>, source: VaultPath) -> Tree {
        let mut tree = Tree {
            generation,
            vault,
            source,
            entries: HashMap::with_capacity(entries.len()),
            children: HashMap::new(),
            root_chain: Vec::new(),
            nodes: HashMap::new(),
            renders: HashMap::new(),
            granted: HashSet::new(),
            reach: HashSet::new(),
            deadlines: Default::default(),
            gone: HashMap::new(),
            now_ns: now_ns(),
            kernel: false,
            blocked: HashMap::new(),
            newly_blocked: Vec::new(),
        };
        for e in entries {
            tree.link(&e);
            tree.track(&e);
            tree.entries.insert(e.id, e);
        }
        tree.rebuild_view();
        tree.update_reach(&mut Vec::new());
        tree
    }

    /// The entry id at the mounted path, `None` while nothing is there.
    pub fn root(&self) -> Option<i64> {
        if self.source.is_root() {
            return Some(ROOT_PARENT);
        }
        (self.root_chain.len() == self.source.components().len())
            .then(|| self.root_chain.last().copied())
            .flatten()
    }

    /// Makes this the view of a kernel-checked mount. The kernel then decides every open
    /// from the attributes alone and the daemon never sees one, so whatever needs a per-open
    /// decision (a template, a grant, a read limit) is left out of the view: unreadable there
    /// (ENOENT at lookup) rather than served without its check. Directories are no longer
    /// widened for grants below them, since the daemon would not narrow them again.
    pub fn kernel_checks(mut self) -> Tree {
        self.kernel = true;
        self.rebuild_view();
        self.update_reach(&mut Vec::new());
        self.newly_blocked.clear();
        self
    }

    /// The entries a kernel-checked view leaves out, with the reason, as `(path, reason)`.
    pub fn blocked(&self) -> Vec<(VaultPath, &'static str)> {
        let mut out: Vec<_> = self
            .blocked
            .iter()
            .map(|(id, why)| (self.path_of_id(*id), *why))
            .collect();
        out.sort_by_key(|(path, _)| path.to_string());
        out
    }

    /// Entries a kernel-checked view started leaving out since the last call: `(id, path,
    /// reason)`, for one log line each.
    pub fn take_newly_blocked(&mut self) -> Vec<(i64, VaultPath, &'static str)> {
        let ids = std::mem::take(&mut self.newly_blocked);
        ids.into_iter()
            .filter(|(id, _)| self.blocked.contains_key(id))
            .map(|(id, why)| (id, self.path_of_id(id), why))
            .collect()
    }

    /// The ids of the entries a kernel-checked view leaves out.
    pub fn blocked_ids(&self) -> HashSet<i64> {
        self.blocked.keys().copied().collect()
    }

    fn path_of_id(&self, id: i64) -> VaultPath {
        let mut names = Vec::new();
        let mut at = id;
        while let Some(e) = self.entries.get(&at) {
            names.push(e.name.as_str());
            at = e.parent;
        }
        names
            .iter()
            .rev()
            .fold(VaultPath::root(), |path, name| path.join(name))
    }

    /// Whether a kernel-checked view serves `node`; records why not. Called wherever a node
    /// enters the view.
    fn admit(&mut self, node: &Node) -> bool {
        if !self.kernel {
            return true;
        }
        match blocked_by(node) {
            None => {
                self.blocked.remove(&node.id);
                true
            }
            Some(why) => {
                if self.blocked.insert(node.id, why) != Some(why) {
                    self.newly_blocked.push((node.id, why));
                }
                false
            }
        }
    }

    /// The inode number of entry `id` as it is now (see [`Tree::ino_of`]).
    pub fn ino(&self, id: i64) -> INodeNo {
        match self.nodes.get(&id) {
            Some(node) => self.ino_of(node),
            None if Some(id) == self.root() => INodeNo::ROOT,
            None => INodeNo(id as u64 + 1),
        }
    }

    /// The inode number of `node`. The mounted root is always inode 1. A directory keeps
    /// `id + 1` for its whole life. A secret gets one inode per version ([`version_ino`]):
    /// one inode holds one size and one page cache, so a rotation never changes the bytes
    /// or the size behind an inode that a reader has open or mapped.
    pub fn ino_of(&self, node: &Node) -> INodeNo {
        if Some(node.id) == self.root() {
            INodeNo::ROOT
        } else if node.is_dir() {
            INodeNo(node.id as u64 + 1)
        } else {
            version_ino(node.id, node.content)
        }
    }

    /// The node behind inode `ino`, as it is now: `None` for an inode of an outdated version
    /// of a secret (see [`is_version_ino`]) as for one that never existed.
    pub fn node(&self, ino: INodeNo) -> Option<&Node> {
        let root = self.root();
        if ino == INodeNo::ROOT {
            return self.nodes.get(&root?);
        }
        if let Some((id, version_bits)) = split_version_ino(ino) {
            let node = self.nodes.get(&id)?;
            let current = !node.is_dir()
                && Some(id) != root
                && (node.content as u64 & VERSION_MASK) == version_bits;
            return current.then_some(node);
        }
        let id = ino.0.checked_sub(1)? as i64;
        // The root's own id + 1 is not a second name for it, and a secret is reached only
        // through the inode of one of its versions.
        let node = self.nodes.get(&id)?;
        (Some(id) != root && node.is_dir()).then_some(node)
    }

    /// The inode of `node`'s parent (the root is its own parent, as `..` of a mount root).
    pub fn parent_ino(&self, node: &Node) -> INodeNo {
        if Some(node.id) == self.root() {
            INodeNo::ROOT
        } else {
            self.ino(node.parent)
        }
    }

    /// The parent of `node` inside the mount (`None` for the mounted root).
    pub fn parent(&self, node: &Node) -> Option<&Node> {
        if Some(node.id) == self.root() {
            return None;
        }
        self.nodes.get(&node.parent)
    }

    /// Whether some directory is widened for a grant below it (see [`Node::shown_perm`]).
    pub fn has_reach(&self) -> bool {
        !self.reach.is_empty()
    }

    /// The child `name` of directory `dir`.
    pub fn child(&self, dir: &Node, name: &str) -> Option<&Node> {
        self.nodes.get(self.children.get(&dir.id)?.get(name)?)
    }

    /// The children of directory `dir`, by name.
    pub fn children<'a>(&'a self, dir: &Node) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        self.children
            .get(&dir.id)
            .into_iter()
            .flatten()
            .filter_map(|(name, id)| Some((name.as_str(), self.nodes.get(id)?)))
    }

    /// The vault path of `node`, for log lines.
    pub fn path(&self, node: &Node) -> VaultPath {
        let mut names = Vec::new();
        let mut id = node.id;
        while let Some(e) = self.entries.get(&id) {
            names.push(e.name.as_str());
            id = e.parent;
        }
        names
            .iter()
            .rev()
            .fold(VaultPath::root(), |path, name| path.join(name))
    }

    /// The templates under the mounted root.
    pub fn templates(&self) -> Vec<(i64, i64)> {
        self.nodes
            .values()
            .filter(|n| n.kind == EntryKind::Template)
            .map(|n| (n.id, n.version))
            .collect()
    }

    /// The latest rendering of template `id`.
    pub fn render(&self, id: i64) -> Option<&Render> {
        self.renders.get(&id)
    }

    /// Every secret and template under the mounted root: (id, content number, kind, vault
    /// path), for the change tracker.
    pub fn files(&self) -> Vec<(i64, i64, EntryKind, VaultPath)> {
        self.nodes
            .values()
            .filter(|n| !n.is_dir())
            .map(|n| (n.id, n.content, n.kind, self.path(n)))
            .collect()
    }

    /// The secret (not a directory or template) at `path` of the vault, with its version.
    pub fn secret_at(&self, path: &VaultPath) -> Option<(i64, i64)> {
        let mut at = ROOT_PARENT;
        for name in path.components() {
            at = *self.children.get(&at)?.get(name)?;
        }
        let e = self.entries.get(&at)?;
        // An expired or spent secret is missing for templates too, not only for opens.
        (e.kind == EntryKind::File && self.serves(e.id)).then_some((e.id, e.version))
    }

    /// Whether secret `id` is served now: present, not hidden, and not expired by the clock
    /// (the refresher hides an expiry only at its next round; a template open checks sooner).
    pub fn serves(&self, id: i64) -> bool {
        self.entries
            .get(&id)
            .is_some_and(|e| !self.is_gone(id) && !e.limits.expired_at(now_ns()))
    }

    /// Records template `id`'s new rendering and reports what that made stale.
    pub fn set_render(&mut self, id: i64, render: Render) -> Vec<Stale> {
        let mut stale = self.set_render_rows(id, render);
        self.update_reach(&mut stale);
        stale
    }

    fn set_render_rows(&mut self, id: i64, render: Render) -> Vec<Stale> {
        self.renders.insert(id, render);
        if self.root_chain.contains(&id) {
            // The mounted root (a single template) has no parent in the view to inherit from.
            return self.rebuild_with_diff();
        }
        let mut stale = Vec::new();
        if self.nodes.contains_key(&id) {
            self.refresh_subtree(id, &mut stale);
        }
        stale
    }

    /// The ids of every entry of the vault the tree knows.
    pub fn entry_ids(&self) -> Vec<i64> {
        self.entries.keys().copied().collect()
    }

    /// The owner and group names of the vault and its entries that do not resolve on this host.
    pub fn unresolved_names(&self) -> Vec<String> {
        let mut ids = IdCache::default();
        let mut missing = Vec::new();
        let users = std::iter::once(&self.vault.acl.owner)
            .chain(self.entries.values().filter_map(|e| e.acl.owner.as_ref()));
        for name in users.collect::<HashSet<_>>() {
            if ids.user(name).is_none() {
                missing.push(format!("user {name:?}"));
            }
        }
        let groups = std::iter::once(&self.vault.acl.group)
            .chain(self.entries.values().filter_map(|e| e.acl.group.as_ref()));
        for name in groups.collect::<HashSet<_>>() {
            if ids.group(name).is_none() {
                missing.push(format!("group {name:?}"));
            }
        }
        missing.sort();
        missing
    }

    /// Applies one batch of changes from the store and reports the kernel caches it made
    /// stale. `vault` is the vault's row when it changed.
    pub fn apply(
        &mut self,
        generation: i64,
        vault: Option<VaultInfo>,
        upserts: Vec<Entry>,
        deleted: &[i64],
    ) -> Vec<Stale> {
        let mut stale = self.apply_rows(generation, vault, upserts, deleted);
        self.update_reach(&mut stale);
        stale
    }

    /// Hides the secrets whose expiry has come by `now_ns`, and reports what that made stale.
    /// Called by the refresher every round, so a secret leaves listings by time, not only
    /// when the store changes.
    pub fn expire(&mut self, now_ns: i64) -> Vec<Stale> {
        self.now_ns = now_ns;
        let due: Vec<i64> = self
            .deadlines
            .range(..=(now_ns, i64::MAX))
            .map(|(_, id)| *id)
            .filter(|id| !self.gone.contains_key(id))
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        for id in &due {
            self.gone.insert(*id, None);
        }
        self.hide(&due)
    }

    /// The earliest expiry (ns since the epoch) of a secret still shown, so the refresher can
    /// wake for it: a kernel-checked mount hides an expired secret only by invalidation.
    pub fn next_deadline(&self) -> Option<i64> {
        self.deadlines
            .iter()
            .find(|(_, id)| !self.gone.contains_key(id))
            .map(|(t, _)| *t)
    }

    /// Whether some secret's expiry has come by `now_ns` and it is still shown.
    pub fn has_due(&self, now_ns: i64) -> bool {
        self.deadlines
            .range(..=(now_ns, i64::MAX))
            .any(|(_, id)| !self.gone.contains_key(id))
    }

    /// The path and version of each shown secret whose expiry has come by `now_ns`.
    pub fn due(&self, now_ns: i64) -> Vec<(VaultPath, i64)> {
        self.deadlines
            .range(..=(now_ns, i64::MAX))
            .filter(|(_, id)| !self.gone.contains_key(id))
            .filter_map(|(_, id)| self.nodes.get(id).map(|n| (self.path(n), n.version)))
            .collect()
    }

    /// Hides version `version` of secret `id`: its read limit is spent.
    pub fn spend(&mut self, id: i64, version: i64) -> Vec<Stale> {
        if self.entries.get(&id).is_none_or(|e| e.version != version) {
            return Vec::new();
        }
        self.gone.insert(id, Some(version));
        self.hide(&[id])
    }

    fn hide(&mut self, ids: &[i64]) -> Vec<Stale> {
        let mut stale = if ids.iter().any(|id| self.root_chain.contains(id)) {
            self.rebuild_with_diff()
        } else {
            let mut stale = Vec::new();
            for id in ids {
                self.refresh_subtree(*id, &mut stale);
            }
            stale
        };
        self.update_reach(&mut stale);
        stale
    }

    /// Whether entry `id` is hidden (expired or spent).
    fn is_gone(&self, id: i64) -> bool {
        self.gone.contains_key(&id)
    }

    /// Records what the tree indexes about `e` (grants, expiry, spent limits).
    fn track(&mut self, e: &Entry) {
        if e.acl.grants.is_empty() {
            self.granted.remove(&e.id);
        } else {
            self.granted.insert(e.id);
        }
        if let Some(t) = e.limits.expires_ns {
            self.deadlines.insert((t, e.id));
        }
        // A new version is a new value: a limit spent on the old one does not carry over.
        match self.gone.get(&e.id) {
            Some(Some(v)) if *v == e.version => {}
            _ => {
                self.gone.remove(&e.id);
            }
        }
        if e.limits.expired_at(self.now_ns) {
            self.gone.insert(e.id, None);
        }
    }

    fn untrack(&mut self, e: &Entry) {
        self.granted.remove(&e.id);
        if let Some(t) = e.limits.expires_ns {
            self.deadlines.remove(&(t, e.id));
        }
    }

    /// Marks the directories on the way to a granted entry (see [`Node::shown_perm`]).
    fn update_reach(&mut self, stale: &mut Vec<Stale>) {
        let mut reach = HashSet::new();
        // A kernel-checked view serves no granted entry, so nothing needs a way through.
        let granted = if self.kernel {
            HashSet::new()
        } else {
            self.granted.clone()
        };
        for id in &granted {
            let Some(mut at) = self.entries.get(id).map(|e| e.parent) else {
                continue;
            };
            while reach.insert(at) && at != ROOT_PARENT {
                match self.entries.get(&at) {
                    Some(e) => at = e.parent,
                    None => break,
                }
            }
        }
        for id in self.reach.union(&reach).copied().collect::<Vec<_>>() {
            let want = reach.contains(&id);
            let ino = self.ino(id);
            if let Some(node) = self.nodes.get_mut(&id) {
                if node.reach != want {
                    node.reach = want;
                    stale.push(Stale::Inode(id, ino));
                }
            }
        }
        self.reach = reach;
    }

    fn apply_rows(
        &mut self,
        generation: i64,
        vault: Option<VaultInfo>,
        upserts: Vec<Entry>,
        deleted: &[i64],
    ) -> Vec<Stale> {
        self.generation = generation;
        let mut rebuild = vault.is_some();
        if let Some(v) = vault {
            self.vault = v;
        }
        let mut touched = Vec::with_capacity(upserts.len() + deleted.len());
        for id in deleted {
            if let Some(old) = self.entries.remove(id) {
                self.unlink(&old);
                self.untrack(&old);
                self.gone.remove(id);
                rebuild |= self.root_chain.contains(id);
                touched.push(*id);
            }
        }
        for e in upserts {
            if let Some(old) = self.entries.get(&e.id) {
                let old = old.clone();
                self.unlink(&old);
                self.untrack(&old);
            }
            self.link(&e);
            self.track(&e);
            rebuild |= self.root_chain.contains(&e.id)
                || (self.root().is_none() && self.source.components().contains(&e.name));
            touched.push(e.id);
            self.entries.insert(e.id, e);
        }
        if rebuild {
            return self.rebuild_with_diff();
        }
        // Each touched entry is re-resolved, then its subtree where something inheritable
        // changed. An entry may be visited twice in a batch (touched itself, and below a
        // touched directory): the later visit sees the final state of its parent, whichever
        // order the batch came in.
        let mut stale = Vec::new();
        for id in touched {
            self.refresh_subtree(id, &mut stale);
        }
        stale
    }

    /// Resolves the whole view again and reports every kernel cache that made stale.
    fn rebuild_with_diff(&mut self) -> Vec<Stale> {
        let before_root = self.root();
        let old_nodes = std::mem::take(&mut self.nodes);
        let old_inos: HashMap<i64, INodeNo> = old_nodes
            .iter()
            .map(|(id, node)| (*id, self.ino_of(node)))
            .collect();
        self.rebuild_view();
        let mut stale = Vec::new();
        if before_root != self.root() {
            stale.push(Stale::Inode(self.root().unwrap_or(-1), INodeNo::ROOT));
        }
        for (id, before) in &old_nodes {
            self.diff(*id, Some(before), old_inos[id], &mut stale);
        }
        for id in self.nodes.keys() {
            if !old_nodes.contains_key(id) {
                stale.push(Stale::Inode(*id, self.ino(*id)));
            }
        }
        stale
    }

    /// Records what changed for node `id` against its previous state `before`.
    fn diff(&self, id: i64, before: Option<&Node>, old_ino: INodeNo, stale: &mut Vec<Stale>) {
        let after = self.nodes.get(&id);
        if before == after {
            return;
        }
        if let Some(b) = before {
            let moved = after.is_none_or(|a| a.name != b.name || a.parent != b.parent);
            // A new version of a secret is a new inode: the cached name must stop leading
            // to the old one (an open through it would still work, by ESTALE and a second
            // walk, but costs a round trip).
            let renumbered = after.is_some_and(|a| self.ino_of(a) != old_ino);
            if (moved || renumbered) && old_ino != INodeNo::ROOT {
                // The old name must go even when the inode lives on elsewhere.
                stale.push(Stale::Name(self.ino(b.parent), b.name.clone()));
            }
        }
        stale.push(Stale::Inode(id, old_ino));
    }

    /// Re-resolves entry `id` and, where that changed anything inheritable, its subtree.
    fn refresh_subtree(&mut self, id: i64, stale: &mut Vec<Stale>) {
        let mut ids = IdCache::default();
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            let before = self.nodes.remove(&id);
            let ino = match &before {
                Some(b) => self.ino_of(b),
                None => self.ino(id),
            };
            let parent_acl = self.entries.get(&id).and_then(|e| {
                let parent = self.nodes.get(&e.parent)?;
                parent.is_dir().then_some(parent.acl.clone())
            });
            let parent_acl = parent_acl.filter(|_| !self.is_gone(id));
            match (self.entries.get(&id), parent_acl) {
                (Some(entry), Some(acl)) => {
                    let node = node_from(entry, acl.inherit(entry, &mut ids), &self.renders);
                    if self.admit(&node) {
                        self.nodes.insert(id, node);
                    }
                }
                _ => {
                    self.blocked.remove(&id);
                }
            }
            let (was_dir, now_dir) = (
                before.as_ref().is_some_and(Node::is_dir),
                self.nodes.get(&id).is_some_and(Node::is_dir),
            );
            let inherited_changed =
                before.as_ref().map(|n| &n.acl) != self.nodes.get(&id).map(|n| &n.acl);
            let appeared_or_went = before.is_some() != self.nodes.contains_key(&id);
            self.diff(id, before.as_ref(), ino, stale);
            if (was_dir || now_dir) && (inherited_changed || appeared_or_went) {
                if let Some(kids) = self.children.get(&id) {
                    stack.extend(kids.values().copied());
                }
            }
        }
    }

    fn link(&mut self, e: &Entry) {
        self.children
            .entry(e.parent)
            .or_default()
            .insert(e.name.clone(), e.id);
    }

    fn unlink(&mut self, e: &Entry) {
        if let Some(kids) = self.children.get_mut(&e.parent) {
            // Another entry may have taken the name already in this batch.
            if kids.get(&e.name) == Some(&e.id) {
                kids.remove(&e.name);
            }
        }
    }

    /// Resolves every node under the mounted root from scratch.
    fn rebuild_view(&mut self) {
        let mut ids = IdCache::default();
        let mut acl = Acl {
            owner: ids.user(&self.vault.acl.owner),
            group: ids.group(&self.vault.acl.group),
            mode: self.vault.acl.mode,
            grants: Arc::from(Vec::new()),
        };
        // Walk from the vault's root down to the mounted path, inheriting ACL overrides on
        // the way: a mounted subtree keeps what its ancestors set.
        self.root_chain.clear();
        let mut at = ROOT_PARENT;
        for name in self.source.components() {
            let Some(next) = self.children.get(&at).and_then(|k| k.get(name)).copied() else {
                break;
            };
            if let Some(entry) = self.entries.get(&next) {
                acl = acl.inherit(entry, &mut ids);
            }
            self.root_chain.push(next);
            at = next;
        }
        self.nodes.clear();
        self.blocked.clear();
        let Some(root) = self.root() else {
            return;
        };
        let root_node = match self.entries.get(&root) {
            Some(_) if self.is_gone(root) => return,
            Some(e) => node_from(e, acl, &self.renders),
            None => Node {
                id: ROOT_PARENT,
                parent: ROOT_PARENT,
                name: String::new(),
                kind: EntryKind::Dir,
                version: self.vault.version,
                content: self.vault.version,
                size: 0,
                mtime_ns: self.vault.created_ns,
                acl,
                reach: false,
                limits: Limits::default(),
            },
        };
        if !self.admit(&root_node) {
            return;
        }
        let mut stack = Vec::new();
        if root_node.is_dir() {
            stack.push(root);
        }
        self.nodes.insert(root, root_node);
        while let Some(dir) = stack.pop() {
            let dir_acl = self.nodes[&dir].acl.clone();
            let Some(kids) = self.children.get(&dir) else {
                continue;
            };
            let kids: Vec<i64> = kids.values().copied().collect();
            for id in &kids {
                let Some(entry) = self.entries.get(id).filter(|_| !self.is_gone(*id)) else {
                    continue;
                };
                let node = node_from(entry, dir_acl.inherit(entry, &mut ids), &self.renders);
                if !self.admit(&node) {
                    continue;
                }
                if node.is_dir() {
                    stack.push(*id);
                }
                self.nodes.insert(*id, node);
            }
        }
    }
}

/// Why a kernel-checked mount cannot serve `node`, `None` when it can. Each reason needs the
/// daemon at every open, which the kernel-checked mode gives up: a template is rendered per
/// open, a grant (with or without unit and exe conditions) is checked by the daemon with the
/// caller's identity (the kernel sees only the mode bits), and a read limit counts opens.
pub fn blocked_by(node: &Node) -> Option<&'static str> {
    if node.kind == EntryKind::Template {
        return Some("a template");
    }
    let conditions = node
        .acl
        .grants
        .iter()
        .any(|g| g.grant.unit.is_some() || g.grant.exe.is_some());
    if conditions {
        return Some("a grant with a unit or exe condition");
    }
    if !node.acl.grants.is_empty() {
        return Some("a grant");
    }
    if node.limits.max_opens.is_some() {
        return Some("a read limit (max-opens)");
    }
    None
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn node_from(e: &Entry, acl: Acl, renders: &HashMap<i64, Render>) -> Node {
    let render = renders.get(&e.id).filter(|_| e.kind == EntryKind::Template);
    Node {
        id: e.id,
        parent: e.parent,
        name: e.name.clone(),
        kind: e.kind,
        version: e.version,
        content: render.map_or(e.version, |r| r.content),
        size: match (e.kind, render) {
            (EntryKind::Dir, _) => 0,
            (EntryKind::Template, r) => r.map_or(0, |r| r.size),
            (EntryKind::File, _) => e.size,
        },
        mtime_ns: e.mtime_ns,
        acl,
        reach: false,
        limits: e.limits,
    }
}

/// NSS answers for one update: a vault names few users and groups, so each is asked once.
#[derive(Default)]
struct IdCache {
    users: HashMap<String, Option<u32>>,
    groups: HashMap<String, Option<u32>>,
}

impl IdCache {
    fn user(&mut self, name: &str) -> Option<u32> {
        *self
            .users
            .entry(name.to_owned())
            .or_insert_with(|| nss::user_id(name))
    }

    fn group(&mut self, name: &str) -> Option<u32> {
        *self
            .groups
            .entry(name.to_owned())
            .or_insert_with(|| nss::group_id(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vaultfs_store::{AclOverride, VaultAcl};

    fn entry(id: i64, parent: i64, name: &str, kind: EntryKind, acl: AclOverride) -> Entry {
        Entry {
            id,
            version: 1,
            parent,
            name: name.to_owned(),
            kind,
            acl,
            size: 5,
            mtime_ns: 0,
            limits: Limits::default(),
        }
    }

    fn mode(m: u16) -> AclOverride {
        AclOverride {
            mode: Some(m),
            ..AclOverride::default()
        }
    }

    fn vault() -> VaultInfo {
        VaultInfo {
            id: 1,
            name: "v".into(),
            acl: VaultAcl {
                owner: "root".into(),
                group: "root".into(),
                mode: 0o400,
            },
            created_ns: 0,
            version: 1,
        }
    }

    fn entries() -> Vec<Entry> {
        let dir_acl = AclOverride {
            owner: None,
            group: Some("root".into()),
            mode: Some(0o440),
            ..AclOverride::default()
        };
        let own = AclOverride {
            owner: Some("no-such-user-vaultfs".into()),
            group: None,
            mode: None,
            ..AclOverride::default()
        };
        vec![
            entry(1, 0, "dir", EntryKind::Dir, dir_acl),
            entry(2, 1, "a", EntryKind::File, AclOverride::default()),
            entry(3, 1, "b", EntryKind::File, own),
            entry(4, 0, "top", EntryKind::File, AclOverride::default()),
        ]
    }

    fn path(p: &str) -> VaultPath {
        VaultPath::parse(p, p).unwrap()
    }

    #[test]
    fn whole_vault_inherits_acls_and_numbers_inodes() {
        let tree = Tree::new(7, vault(), entries(), VaultPath::root());
        let root = tree.node(INodeNo::ROOT).unwrap();
        assert_eq!(root.perm(), 0o500);
        assert_eq!(tree.children(root).count(), 2);
        let dir = tree.child(root, "dir").unwrap();
        assert_eq!(dir.perm(), 0o550);
        assert_eq!(tree.ino(dir.id), INodeNo(2));
        let a = tree.child(dir, "a").unwrap();
        assert_eq!(
            (a.perm(), a.acl.owner, a.acl.group),
            (0o440, Some(0), Some(0))
        );
        assert_eq!(tree.path(a).to_string(), "/dir/a");
        let b = tree.child(dir, "b").unwrap();
        assert_eq!(b.acl.owner, None, "an unknown owner resolves to nobody");
        assert_eq!(b.attr(tree.ino(b.id)).uid, UNRESOLVED_ID);
        assert_eq!(tree.unresolved_names(), ["user \"no-such-user-vaultfs\""]);
    }

    #[test]
    fn subtree_and_single_file_roots() {
        let sub = Tree::new(1, vault(), entries(), path("/dir"));
        assert_eq!(sub.root(), Some(1));
        assert_eq!(sub.nodes.len(), 3);
        assert!(
            sub.node(INodeNo(2)).is_none(),
            "the root has one inode only"
        );
        let file = Tree::new(1, vault(), entries(), path("/dir/a"));
        let node = file.node(INodeNo::ROOT).unwrap();
        assert_eq!(
            (node.id, node.perm()),
            (2, 0o440),
            "inherits from its ancestors"
        );
        let missing = Tree::new(1, vault(), entries(), path("/nope"));
        assert!(missing.node(INodeNo::ROOT).is_none());
    }

    #[test]
    fn a_rotation_touches_one_inode() {
        let mut tree = Tree::new(1, vault(), entries(), VaultPath::root());
        let mut a = entries()[1].clone();
        a.version = 2;
        a.size = 9;
        let old = version_ino(2, 1);
        assert!(tree.node(old).is_some());
        let stale = tree.apply(2, None, vec![a], &[]);
        assert_eq!(
            stale,
            [Stale::Name(INodeNo(2), "a".into()), Stale::Inode(2, old)]
        );
        assert!(
            tree.node(old).is_none(),
            "the old version's inode is outdated"
        );
        assert_eq!(tree.node(version_ino(2, 2)).unwrap().size, 9);
        assert!(
            tree.node(INodeNo(3)).is_none(),
            "a secret has no id + 1 inode"
        );
    }

    #[test]
    fn a_directory_acl_change_reaches_its_subtree_and_a_rename_drops_the_old_name() {
        let mut tree = Tree::new(1, vault(), entries(), VaultPath::root());
        let mut dir = entries()[0].clone();
        dir.version = 2;
        dir.acl = mode(0o444);
        dir.name = "moved".into();
        let stale = tree.apply(2, None, vec![dir], &[]);
        assert!(stale.contains(&Stale::Name(INodeNo::ROOT, "dir".into())));
        assert!(stale.contains(&Stale::Inode(2, version_ino(2, 1))));
        let root = tree.node(INodeNo::ROOT).unwrap();
        assert!(tree.child(root, "dir").is_none());
        let moved = tree.child(root, "moved").unwrap();
        assert_eq!(tree.child(moved, "a").unwrap().perm(), 0o444);
    }

    #[test]
    fn new_nested_entries_and_removals_in_one_batch() {
        let mut tree = Tree::new(1, vault(), entries(), VaultPath::root());
        let new_file = entry(11, 10, "f", EntryKind::File, AclOverride::default());
        let new_dir = entry(10, 0, "new", EntryKind::Dir, mode(0o440));
        // The child arrives before its parent: the parent's subtree walk picks it up.
        tree.apply(2, None, vec![new_file, new_dir], &[4]);
        let root = tree.node(INodeNo::ROOT).unwrap();
        assert!(tree.child(root, "top").is_none());
        let f = tree.child(tree.child(root, "new").unwrap(), "f").unwrap();
        assert_eq!(f.perm(), 0o440);
        let rebuilt = Tree::new(
            2,
            vault(),
            tree.entries.values().cloned().collect(),
            VaultPath::root(),
        );
        assert_eq!(rebuilt.nodes, tree.nodes, "incremental equals from scratch");
    }

    #[test]
    fn a_mounted_secret_that_is_removed_and_written_again_comes_back() {
        let mut tree = Tree::new(1, vault(), entries(), path("/top"));
        tree.apply(2, None, vec![], &[4]);
        assert!(tree.node(INodeNo::ROOT).is_none());
        let again = entry(12, 0, "top", EntryKind::File, AclOverride::default());
        tree.apply(3, None, vec![again], &[]);
        assert_eq!(tree.node(INodeNo::ROOT).unwrap().id, 12);
    }

    fn granted(id: i64, parent: i64, name: &str, kind: EntryKind) -> Entry {
        let acl = AclOverride {
            grants: vec![vaultfs_store::Grant {
                principal: vaultfs_store::Principal::User("root".into()),
                unit: None,
                exe: None,
            }],
            ..AclOverride::default()
        };
        entry(id, parent, name, kind, acl)
    }

    #[test]
    fn a_grant_widens_its_entry_and_the_way_to_it_and_revoking_narrows_again() {
        // Vault 0400 root:root: root dir 0500, /dir 0550 (its own override), /dir/a 0440.
        let mut tree = Tree::new(1, vault(), entries(), VaultPath::root());
        let dir = tree
            .child(tree.node(INodeNo::ROOT).unwrap(), "dir")
            .unwrap()
            .clone();
        assert_eq!(dir.shown_perm(), 0o550);
        let mut a = granted(2, 1, "a", EntryKind::File);
        a.version = 2;
        let stale = tree.apply(2, None, vec![a.clone()], &[]);
        let root = tree.node(INodeNo::ROOT).unwrap();
        assert_eq!(root.shown_perm(), 0o501, "the way to a grant is searchable");
        assert!(stale.contains(&Stale::Inode(ROOT_PARENT, INodeNo::ROOT)));
        let dir = tree.child(root, "dir").unwrap();
        assert_eq!(dir.shown_perm(), 0o551);
        assert_eq!(tree.child(dir, "a").unwrap().shown_perm(), 0o444);
        assert_eq!(tree.child(dir, "b").unwrap().shown_perm(), 0o440);
        let fresh = Tree::new(
            2,
            vault(),
            tree.entries.values().cloned().collect(),
            VaultPath::root(),
        );
        assert_eq!(fresh.nodes, tree.nodes, "incremental equals from scratch");
        // Revoked: everything narrows again.
        let mut plain = entries()[1].clone();
        plain.version = 3;
        tree.apply(3, None, vec![plain], &[]);
        assert_eq!(tree.node(INodeNo::ROOT).unwrap().shown_perm(), 0o500);
        assert!(!tree.has_reach());
        // A granted directory lists (r-x) and its children inherit the grant.
        let mut d = granted(1, 0, "dir", EntryKind::Dir);
        d.acl.mode = Some(0o440);
        d.version = 4;
        tree.apply(4, None, vec![d], &[]);
        let dir = tree
            .child(tree.node(INodeNo::ROOT).unwrap(), "dir")
            .unwrap();
        assert_eq!(dir.shown_perm(), 0o555);
        assert_eq!(tree.child(dir, "b").unwrap().acl.grants.len(), 1);
    }

    #[test]
    fn a_kernel_checked_view_leaves_out_what_needs_an_open_and_never_widens() {
        let tree = Tree::new(1, vault(), entries(), VaultPath::root()).kernel_checks();
        assert!(tree.blocked().is_empty());
        let mut tree = tree;
        // A grant on a file: the file goes (a name and an inode to invalidate), logged once.
        let mut a = granted(2, 1, "a", EntryKind::File);
        a.version = 2;
        let stale = tree.apply(2, None, vec![a.clone()], &[]);
        let dir = tree
            .child(tree.node(INodeNo::ROOT).unwrap(), "dir")
            .unwrap();
        assert!(tree.child(dir, "a").is_none(), "hidden");
        assert!(stale.contains(&Stale::Name(INodeNo(2), "a".into())));
        assert!(!tree.has_reach(), "no way is widened to a grant");
        assert_eq!(tree.node(INodeNo::ROOT).unwrap().shown_perm(), 0o500);
        let newly = tree.take_newly_blocked();
        assert_eq!(newly.len(), 1);
        assert_eq!(
            (newly[0].1.to_string(), newly[0].2),
            ("/dir/a".into(), "a grant")
        );
        // Touched again with the same rule: not reported again.
        a.version = 3;
        tree.apply(3, None, vec![a], &[]);
        assert!(tree.take_newly_blocked().is_empty());
        assert_eq!(tree.blocked().len(), 1);
        // A read limit on another file; a granted directory hides its subtree.
        let mut b = entries()[2].clone();
        b.limits.max_opens = Some(2);
        b.version = 4;
        tree.apply(4, None, vec![b], &[]);
        assert_eq!(tree.take_newly_blocked()[0].2, "a read limit (max-opens)");
        let mut d = granted(1, 0, "dir", EntryKind::Dir);
        d.version = 5;
        tree.apply(5, None, vec![d], &[]);
        assert!(tree
            .child(tree.node(INodeNo::ROOT).unwrap(), "dir")
            .is_none());
        // Rules removed: everything is back, and the tree equals one built from scratch.
        let mut plain_dir = entries()[0].clone();
        plain_dir.version = 6;
        let mut plain_a = entries()[1].clone();
        plain_a.version = 6;
        let mut plain_b = entries()[2].clone();
        plain_b.version = 6;
        tree.apply(6, None, vec![plain_dir, plain_a, plain_b], &[]);
        assert!(tree.blocked().is_empty());
        let fresh = Tree::new(
            6,
            vault(),
            tree.entries.values().cloned().collect(),
            VaultPath::root(),
        );
        assert_eq!(fresh.nodes, tree.nodes);
        // A template as the root of a single-file mount: nothing is served.
        let mut t = entries()[3].clone();
        t.kind = EntryKind::Template;
        let mut rows = entries();
        rows[3] = t;
        let single = Tree::new(1, vault(), rows, path("/top")).kernel_checks();
        assert!(single.node(INodeNo::ROOT).is_none());
        assert_eq!(single.blocked()[0].1, "a template");
    }

    #[test]
    fn an_expiry_hides_a_secret_by_time_and_a_new_value_brings_it_back() {
        let mut rows = entries();
        rows[3].limits.expires_ns = Some(1_000);
        let mut tree = Tree::new(1, vault(), rows, VaultPath::root());
        // Expired before the mount started: never shown, nothing left to do.
        assert!(tree
            .child(tree.node(INodeNo::ROOT).unwrap(), "top")
            .is_none());
        assert!(!tree.has_due(now_ns()));
        let mut top = entries()[3].clone();
        top.version = 2;
        top.limits.expires_ns = Some(now_ns() + 60_000_000_000);
        tree.apply(2, None, vec![top.clone()], &[]);
        let root = tree.node(INodeNo::ROOT).unwrap();
        assert!(
            tree.child(root, "top").is_some(),
            "a new value with a later expiry shows"
        );
        let due = top.limits.expires_ns.unwrap();
        assert!(!tree.has_due(due - 1));
        assert_eq!(tree.due(due).len(), 1);
        let stale = tree.expire(due);
        assert!(!stale.is_empty());
        let root = tree.node(INodeNo::ROOT).unwrap();
        assert!(tree.child(root, "top").is_none(), "gone by the clock");
        assert!(!tree.has_due(due + 1));
        // A spent read limit hides that version only.
        let stale = tree.spend(2, 1);
        assert!(!stale.is_empty());
        let dir = tree
            .child(tree.node(INodeNo::ROOT).unwrap(), "dir")
            .unwrap();
        assert!(tree.child(dir, "a").is_none());
        let mut a = entries()[1].clone();
        a.version = 5;
        tree.apply(5, None, vec![a], &[]);
        let dir = tree
            .child(tree.node(INodeNo::ROOT).unwrap(), "dir")
            .unwrap();
        assert!(
            tree.child(dir, "a").is_some(),
            "a new value starts a new count"
        );
    }

    /// Random batches of creates, rewrites, renames, moves, ACL changes and removals: the
    /// incrementally updated tree always equals one built from scratch.
    #[test]
    fn incremental_updates_match_a_rebuild() {
        for (start, source) in (1..=16u64).flat_map(|s| ["/", "/d1", "/d1/f2"].map(|p| (s, p))) {
            let mut seed = 0x2545_f491_4f6c_dd1du64 ^ start.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut rand = move |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % n
            };
            let source = path(source);
            let mut rows: HashMap<i64, Entry> = HashMap::new();
            let mut tree = Tree::new(0, vault(), vec![], source.clone());
            let mut next_id = 1;
            for generation in 1..200 {
                let mut upserts = Vec::new();
                let mut deleted = Vec::new();
                for _ in 0..=rand(3) {
                    let mut dirs: Vec<i64> = std::iter::once(0)
                        .chain(rows.values().filter(|e| e.is_dir()).map(|e| e.id))
                        .collect();
                    dirs.sort_unstable();
                    let parent = dirs[rand(dirs.len() as u64) as usize];
                    let name = format!("{}{}", if rand(2) == 0 { "d" } else { "f" }, rand(4));
                    let taken = rows.values().any(|e| e.parent == parent && e.name == name);
                    let mut ids: Vec<i64> = rows.keys().copied().collect();
                    ids.sort_unstable();
                    match rand(5) {
                        0 | 1 if !taken => {
                            let kind = if name.starts_with('d') {
                                EntryKind::Dir
                            } else {
                                EntryKind::File
                            };
                            let e = entry(next_id, parent, &name, kind, AclOverride::default());
                            next_id += 1;
                            rows.insert(e.id, e.clone());
                            upserts.push(e);
                        }
                        2 if !ids.is_empty() && !taken => {
                            // A move (never into its own subtree).
                            let id = ids[rand(ids.len() as u64) as usize];
                            let mut p = parent;
                            let mut cycle = false;
                            while p != 0 {
                                cycle |= p == id;
                                p = rows[&p].parent;
                            }
                            if !cycle {
                                let e = rows.get_mut(&id).unwrap();
                                e.parent = parent;
                                e.name = name;
                                e.version += 1;
                                upserts.push(e.clone());
                            }
                        }
                        3 if !ids.is_empty() => {
                            let id = ids[rand(ids.len() as u64) as usize];
                            let e = rows.get_mut(&id).unwrap();
                            e.acl = mode([0o400, 0o440, 0o444][rand(3) as usize]);
                            e.size = rand(100);
                            e.version += 1;
                            upserts.push(e.clone());
                        }
                        4 if !ids.is_empty() => {
                            let id = ids[rand(ids.len() as u64) as usize];
                            if !rows.values().any(|e| e.parent == id) {
                                rows.remove(&id);
                                upserts.retain(|e| e.id != id);
                                deleted.push(id);
                            }
                        }
                        _ => {}
                    }
                }
                let dbg_up: Vec<(i64, i64, String)> = upserts
                    .iter()
                    .map(|e| (e.id, e.parent, e.name.clone()))
                    .collect();
                let dbg_del = deleted.clone();
                tree.apply(generation, None, upserts, &deleted);
                let fresh = Tree::new(
                    generation,
                    vault(),
                    rows.values().cloned().collect(),
                    source.clone(),
                );
                if tree.nodes != fresh.nodes {
                    for (id, n) in &fresh.nodes {
                        if tree.nodes.get(id) != Some(n) {
                            eprintln!("fresh has {n:?}, incremental {:?}", tree.nodes.get(id));
                        }
                    }
                    for (id, n) in &tree.nodes {
                        if !fresh.nodes.contains_key(id) {
                            eprintln!("incremental has extra {n:?}");
                        }
                    }
                    eprintln!("last batch: upserts {dbg_up:?} deleted {dbg_del:?}");
                }
                assert_eq!(
                    tree.root(),
                    fresh.root(),
                    "seed {start} generation {generation}"
                );
                assert_eq!(
                    tree.nodes, fresh.nodes,
                    "seed {start} generation {generation} of {source}"
                );
            }
        }
    }
}
