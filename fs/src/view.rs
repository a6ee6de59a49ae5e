//! The mount's in-memory picture of its vault: every entry under the mounted path with its
//! attributes and resolved ACL, rebuilt from the store's rows after each change. Handlers read
//! an immutable [`View`] behind an `Arc`, so a rebuild never blocks a reader.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use vaultfs_store::{projected_mode, Entry, EntryKind, VaultInfo, VaultPath, ROOT_PARENT};

use crate::nss;

/// The uid and gid shown for an owner or group that does not resolve on this host. The driver
/// grants that class to nobody, so showing `nobody` tells the truth.
pub const UNRESOLVED_ID: u32 = 65534;

/// Every row of the vault that opened, as the store gave them: the input of a rebuild.
#[derive(Debug)]
pub struct Rows {
    /// The store's change counter these rows reflect.
    pub generation: i64,
    /// The vault's row: its default ACL.
    pub vault: VaultInfo,
    /// Entries by id.
    pub entries: HashMap<i64, Entry>,
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
    /// The path inside the vault, for log lines.
    pub path: VaultPath,
    /// Directory or secret.
    pub kind: EntryKind,
    /// Bumped by the store on every change of the row.
    pub version: i64,
    /// Plaintext size.
    pub size: u64,
    /// Last change, ns since the epoch.
    pub mtime_ns: i64,
    /// The owner's uid, `None` when the name does not resolve.
    pub uid: Option<u32>,
    /// The group's gid, `None` when the name does not resolve.
    pub gid: Option<u32>,
    /// Permission bits as shown (directories get x wherever they get r).
    pub perm: u16,
    /// For a directory, its children by name.
    pub children: BTreeMap<String, i64>,
}

impl Node {
    /// The attributes reported to the kernel.
    pub fn attr(&self, ino: INodeNo) -> FileAttr {
        let mtime = UNIX_EPOCH + Duration::from_nanos(self.mtime_ns.max(0) as u64);
        let is_dir = self.kind == EntryKind::Dir;
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
            perm: self.perm,
            nlink: if is_dir { 2 } else { 1 },
            uid: self.uid.unwrap_or(UNRESOLVED_ID),
            gid: self.gid.unwrap_or(UNRESOLVED_ID),
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

/// The mount's tree at one generation.
#[derive(Debug)]
pub struct View {
    /// The store's change counter this view reflects.
    pub generation: i64,
    /// The entry id at the mounted path, `None` while nothing is there.
    pub root: Option<i64>,
    /// Every node under (and including) the mounted root, by entry id.
    pub nodes: HashMap<i64, Node>,
}

impl View {
    /// The inode number of entry `id`: the mounted root is always inode 1; every other entry
    /// keeps `id + 1` for its whole life, through renames and rewrites.
    pub fn ino(&self, id: i64) -> INodeNo {
        if Some(id) == self.root {
            INodeNo::ROOT
        } else {
            INodeNo(id as u64 + 1)
        }
    }

    /// The node behind inode `ino`.
    pub fn node(&self, ino: INodeNo) -> Option<&Node> {
        let id = if ino == INodeNo::ROOT {
            self.root?
        } else {
            ino.0.checked_sub(1)? as i64
        };
        // The root's own id + 1 is not a second name for it.
        if ino != INodeNo::ROOT && Some(id) == self.root {
            return None;
        }
        self.nodes.get(&id)
    }

    /// The child `name` of directory `parent`.
    pub fn child(&self, parent: &Node, name: &str) -> Option<&Node> {
        self.nodes.get(parent.children.get(name)?)
    }

    /// Builds the view of `source` (the mounted path) from `rows`.
    pub fn build(rows: &Rows, source: &VaultPath) -> View {
        let mut children: HashMap<i64, BTreeMap<String, i64>> = HashMap::new();
        for e in rows.entries.values() {
            children
                .entry(e.parent)
                .or_default()
                .insert(e.name.clone(), e.id);
        }
        let mut ids = IdCache::default();
        let vault_acl = &rows.vault.acl;
        let mut acl = Acl {
            owner: ids.user(&vault_acl.owner),
            group: ids.group(&vault_acl.group),
            mode: vault_acl.mode,
        };
        // Walk from the vault's root down to the mounted path, inheriting ACL overrides on
        // the way: a mounted subtree keeps what its ancestors set.
        let mut root = Some(ROOT_PARENT);
        for name in source.components() {
            let next = root.and_then(|id| children.get(&id)?.get(name).copied());
            if let Some(entry) = next.and_then(|id| rows.entries.get(&id)) {
                acl = acl.inherit(entry, &mut ids);
            }
            root = next;
        }
        let mut view = View {
            generation: rows.generation,
            root,
            nodes: HashMap::new(),
        };
        let Some(root_id) = root else {
            return view;
        };
        let root_node = match rows.entries.get(&root_id) {
            Some(e) => node_from(e, source.clone(), acl, &mut children),
            None => Node {
                id: ROOT_PARENT,
                parent: ROOT_PARENT,
                name: String::new(),
                path: VaultPath::root(),
                kind: EntryKind::Dir,
                version: rows.vault.version,
                size: 0,
                mtime_ns: rows.vault.created_ns,
                uid: acl.owner,
                gid: acl.group,
                perm: projected_mode(acl.mode, true),
                children: children.remove(&ROOT_PARENT).unwrap_or_default(),
            },
        };
        let mut stack = vec![(root_id, acl)];
        view.nodes.insert(root_id, root_node);
        while let Some((dir_id, dir_acl)) = stack.pop() {
            let (dir_path, kids) = {
                let dir = &view.nodes[&dir_id];
                (dir.path.clone(), dir.children.clone())
            };
            for (name, id) in kids {
                let Some(entry) = rows.entries.get(&id) else {
                    continue;
                };
                let acl = dir_acl.inherit(entry, &mut ids);
                let node = node_from(entry, dir_path.join(&name), acl, &mut children);
                if node.is_dir() {
                    stack.push((id, acl));
                }
                view.nodes.insert(id, node);
            }
        }
        view
    }
}

/// An ACL with its names resolved to ids.
#[derive(Clone, Copy, Debug)]
struct Acl {
    owner: Option<u32>,
    group: Option<u32>,
    mode: u16,
}

impl Acl {
    fn inherit(self, entry: &Entry, ids: &mut IdCache) -> Acl {
        Acl {
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

fn node_from(
    e: &Entry,
    path: VaultPath,
    acl: Acl,
    children: &mut HashMap<i64, BTreeMap<String, i64>>,
) -> Node {
    let is_dir = e.is_dir();
    Node {
        id: e.id,
        parent: e.parent,
        name: e.name.clone(),
        path,
        kind: e.kind,
        version: e.version,
        size: if is_dir { 0 } else { e.size },
        mtime_ns: e.mtime_ns,
        uid: acl.owner,
        gid: acl.group,
        perm: projected_mode(acl.mode, is_dir),
        children: if is_dir {
            children.remove(&e.id).unwrap_or_default()
        } else {
            BTreeMap::new()
        },
    }
}

/// NSS answers for one rebuild: a vault names few users and groups, so each is asked once.
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
        }
    }

    fn rows() -> Rows {
        let mut entries = HashMap::new();
        let dir_acl = AclOverride {
            owner: None,
            group: Some("root".into()),
            mode: Some(0o440),
        };
        entries.insert(1, entry(1, 0, "dir", EntryKind::Dir, dir_acl));
        entries.insert(2, entry(2, 1, "a", EntryKind::File, AclOverride::default()));
        let own = AclOverride {
            owner: Some("no-such-user-vaultfs".into()),
            group: None,
            mode: None,
        };
        entries.insert(3, entry(3, 1, "b", EntryKind::File, own));
        entries.insert(
            4,
            entry(4, 0, "top", EntryKind::File, AclOverride::default()),
        );
        Rows {
            generation: 7,
            vault: VaultInfo {
                id: 1,
                name: "v".into(),
                acl: VaultAcl {
                    owner: "root".into(),
                    group: "root".into(),
                    mode: 0o400,
                },
                created_ns: 0,
                version: 1,
            },
            entries,
        }
    }

    #[test]
    fn whole_vault_inherits_acls_and_numbers_inodes() {
        let view = View::build(&rows(), &VaultPath::root());
        let root = view.node(INodeNo::ROOT).unwrap();
        assert_eq!(root.perm, 0o500);
        assert_eq!(root.children.len(), 2);
        let dir = view.child(root, "dir").unwrap();
        assert_eq!(dir.perm, 0o550);
        assert_eq!(view.ino(dir.id), INodeNo(2));
        let a = view.child(dir, "a").unwrap();
        assert_eq!((a.perm, a.uid, a.gid), (0o440, Some(0), Some(0)));
        assert_eq!(a.path.to_string(), "/dir/a");
        let b = view.child(dir, "b").unwrap();
        assert_eq!(b.uid, None, "an unknown owner resolves to nobody");
        assert_eq!(b.attr(view.ino(b.id)).uid, UNRESOLVED_ID);
    }

    #[test]
    fn subtree_and_single_file_roots() {
        let rows = rows();
        let sub = View::build(&rows, &VaultPath::parse("/dir", "v:/dir").unwrap());
        assert_eq!(sub.root, Some(1));
        assert_eq!(sub.nodes.len(), 3);
        assert!(
            sub.node(INodeNo(2)).is_none(),
            "the root has one inode only"
        );
        let file = View::build(&rows, &VaultPath::parse("/dir/a", "v:/dir/a").unwrap());
        let node = file.node(INodeNo::ROOT).unwrap();
        assert_eq!(
            (node.id, node.perm),
            (2, 0o440),
            "inherits from its ancestors"
        );
        let missing = View::build(&rows, &VaultPath::parse("/nope", "v:/nope").unwrap());
        assert!(missing.node(INodeNo::ROOT).is_none());
    }
}
