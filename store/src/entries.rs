//! Path-level operations on a vault's entries: what the CLI's `write`, `cat`, `ls`, `rm`, `mv`,
//! `mkdir` and `acl` commands do.

use rusqlite::Connection;

use crate::acl::{AclOverride, EffectiveAcl, Grant};
use crate::address::{Address, VaultPath};
use crate::error::{Result, StoreError};
use crate::records::{now_ns, EntryKind};
use crate::rows::{self, Entry, Limits, RowContent, MAX_SECRET_SIZE, ROOT_PARENT};
use crate::secret::SecretBytes;
use crate::store::{Keys, OpenVault, Store};

/// Which ACL overrides to remove (`vaultfs acl unset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AclFields {
    /// The owner override.
    pub owner: bool,
    /// The group override.
    pub group: bool,
    /// The mode override.
    pub mode: bool,
}

/// An entry with its path and effective ACL, as `ls -l` and `acl show` present it.
#[derive(Clone, Debug)]
pub struct Listing {
    /// The entry's path in its vault.
    pub path: VaultPath,
    /// The entry itself.
    pub entry: Entry,
    /// The ACL in force, with where each value comes from.
    pub acl: EffectiveAcl,
}

/// The entries from the root down to `path` (empty for the root).
fn resolve_chain(
    conn: &Connection,
    keys: &Keys,
    vault: &OpenVault,
    addr: &Address,
) -> Result<Vec<Entry>> {
    let mut chain: Vec<Entry> = Vec::with_capacity(addr.path.components().len());
    let mut parent = ROOT_PARENT;
    for (i, name) in addr.path.components().iter().enumerate() {
        if let Some(last) = chain.last() {
            if !last.is_dir() {
                return Err(StoreError::NotADirectory(prefix(addr, i)));
            }
        }
        let entry = rows::lookup(conn, &keys.store_id, vault, parent, name)?
            .ok_or_else(|| StoreError::NotFound(prefix(addr, i + 1)))?;
        parent = entry.id;
        chain.push(entry);
    }
    Ok(chain)
}

/// The entry at `addr`, which must not be the vault's root.
pub(crate) fn resolve_entry(
    conn: &Connection,
    keys: &Keys,
    vault: &OpenVault,
    addr: &Address,
) -> Result<Entry> {
    resolve_chain(conn, keys, vault, addr)?
        .pop()
        .ok_or_else(|| StoreError::InvalidOperation(format!("{addr}: names the vault's root")))
}

/// `vault:/first/n/components`, for error messages.
fn prefix(addr: &Address, n: usize) -> String {
    let mut s = format!("{}:", addr.vault);
    for c in &addr.path.components()[..n] {
        s.push('/');
        s.push_str(c);
    }
    s
}

fn effective(vault: &OpenVault, path: &VaultPath, chain: &[Entry]) -> EffectiveAcl {
    let paths: Vec<VaultPath> = (1..=chain.len())
        .map(|n| {
            let mut p = VaultPath::root();
            for c in &path.components()[..n] {
                p = p.join(c);
            }
            p
        })
        .collect();
    EffectiveAcl::resolve(
        &vault.info.acl,
        paths.iter().zip(chain.iter().map(|e| &e.acl)),
    )
}

/// Inserts a new directory with no ACL override of its own.
fn insert_dir(
    conn: &Connection,
    keys: &Keys,
    vault: &OpenVault,
    generation: i64,
    parent: i64,
    name: &str,
) -> Result<Entry> {
    let content = RowContent {
        parent,
        name,
        kind: EntryKind::Dir,
        acl: AclOverride::default(),
        value: None,
        mtime_ns: now_ns(),
        limits: Limits::default(),
        written_ns: None,
    };
    rows::insert(conn, &keys.store_id, vault, generation, &content)
}

/// Creates the missing directories of `addr` (all of it) inside a write transaction.
fn make_dirs(
    conn: &Connection,
    keys: &Keys,
    vault: &OpenVault,
    generation: i64,
    addr: &Address,
    components: &[String],
) -> Result<i64> {
    let mut parent = ROOT_PARENT;
    for (i, name) in components.iter().enumerate() {
        parent = match rows::lookup(conn, &keys.store_id, vault, parent, name)? {
            Some(e) if e.is_dir() => e.id,
            Some(_) => return Err(StoreError::NotADirectory(prefix(addr, i + 1))),
            None => insert_dir(conn, keys, vault, generation, parent, name)?.id,
        };
    }
    Ok(parent)
}

fn check_size(addr: &Address, value: &[u8]) -> Result<()> {
    if value.len() > MAX_SECRET_SIZE {
        return Err(StoreError::TooLarge {
            path: addr.to_string(),
            size: value.len(),
            limit: MAX_SECRET_SIZE,
        });
    }
    Ok(())
}

/// Writes one secret inside a write transaction.
fn write_in(
    tx: &Connection,
    keys: &Keys,
    vault: &OpenVault,
    generation: i64,
    addr: &Address,
    value: &[u8],
    limits: Limits,
) -> Result<Entry> {
    write_kind_in(
        tx,
        keys,
        vault,
        generation,
        addr,
        EntryKind::File,
        value,
        limits,
    )
}

/// Writes one secret or template inside a write transaction; never turns one into the other.
// The transaction's context (tx, keys, vault, generation) and the row's content.
#[allow(clippy::too_many_arguments)]
fn write_kind_in(
    tx: &Connection,
    keys: &Keys,
    vault: &OpenVault,
    generation: i64,
    addr: &Address,
    kind: EntryKind,
    value: &[u8],
    limits: Limits,
) -> Result<Entry> {
    let name = addr
        .path
        .file_name()
        .ok_or_else(|| StoreError::IsADirectory(addr.to_string()))?;
    let dirs = &addr.path.components()[..addr.path.components().len() - 1];
    let parent = make_dirs(tx, keys, vault, generation, addr, dirs)?;
    let existing = rows::lookup(tx, &keys.store_id, vault, parent, name)?;
    let content = |acl| RowContent {
        parent,
        name,
        kind,
        acl,
        value: Some(value),
        mtime_ns: now_ns(),
        limits,
        written_ns: None,
    };
    match existing {
        Some(old) if old.is_dir() => Err(StoreError::IsADirectory(addr.to_string())),
        Some(old) if old.kind == EntryKind::Template && kind != EntryKind::Template => {
            Err(StoreError::InvalidOperation(format!(
                "{addr} is a template; change it with `vaultfs template set`"
            )))
        }
        Some(old) if old.kind == EntryKind::File && kind != EntryKind::File => {
            Err(StoreError::InvalidOperation(format!(
                "{addr} is a secret; remove it first to put a template there"
            )))
        }
        Some(old) => rows::rewrite(
            tx,
            &keys.store_id,
            vault,
            generation,
            &old,
            &content(old.acl.clone()),
        ),
        None => rows::insert(
            tx,
            &keys.store_id,
            vault,
            generation,
            &content(AclOverride::default()),
        ),
    }
}

impl Store {
    /// Stores `value` at `addr`, creating parent directories; replaces an existing secret.
    pub fn write(&mut self, addr: &Address, value: &[u8]) -> Result<Entry> {
        self.write_limited(addr, value, Limits::default())
    }

    /// Stores `value` at `addr` like [`Store::write`], served only within `limits`.
    pub fn write_limited(&mut self, addr: &Address, value: &[u8], limits: Limits) -> Result<Entry> {
        check_size(addr, value)?;
        self.write_txn(|tx, generation, keys| {
            let vault = keys.open_vault_by_name(tx, &addr.vault)?;
            write_in(tx, keys, &vault, generation, addr, value, limits)
        })
    }

    /// Stores many secrets in one transaction: all of them or, on any error, none. Each item
    /// is `(path inside the vault, value)` or the caller's error, which aborts the transaction
    /// and is returned as is. Items are consumed one at a time, so a caller that reads each
    /// value only when asked (as `vaultfs import` does) holds one value in memory, not all of
    /// them. One transaction (one fsync) is thousands of times faster than one per secret.
    pub fn write_many<E: From<StoreError>>(
        &mut self,
        vault_name: &str,
        items: impl IntoIterator<Item = std::result::Result<(VaultPath, SecretBytes), E>>,
    ) -> std::result::Result<usize, E> {
        let mut failed: Option<E> = None;
        let written = self.write_txn(|tx, generation, keys| {
            let vault = keys.open_vault_by_name(tx, vault_name)?;
            let mut count = 0;
            for item in items {
                let (path, value) = match item {
                    Ok(item) => item,
                    Err(e) => {
                        failed = Some(e);
                        // Rolls the transaction back; the caller's error replaces this one.
                        return Err(StoreError::InvalidOperation("import aborted".into()));
                    }
                };
                let addr = Address {
                    vault: vault_name.to_owned(),
                    path,
                };
                check_size(&addr, value.expose())?;
                write_in(
                    tx,
                    keys,
                    &vault,
                    generation,
                    &addr,
                    value.expose(),
                    Limits::default(),
                )?;
                count += 1;
            }
            Ok(count)
        });
        match (written, failed) {
            (_, Some(e)) => Err(e),
            (Ok(count), None) => Ok(count),
            (Err(e), None) => Err(e.into()),
        }
    }

    /// Stores an entry of `kind` (a secret or a template) at `addr`.
    pub(crate) fn write_entry(
        &mut self,
        addr: &Address,
        kind: EntryKind,
        value: &[u8],
    ) -> Result<Entry> {
        check_size(addr, value)?;
        self.write_txn(|tx, generation, keys| {
            let vault = keys.open_vault_by_name(tx, &addr.vault)?;
            write_kind_in(
                tx,
                keys,
                &vault,
                generation,
                addr,
                kind,
                value,
                Limits::default(),
            )
        })
    }

    /// The stored value at `addr` as it is (a template's source, not its rendering).
    pub(crate) fn read_stored(&self, addr: &Address) -> Result<SecretBytes> {
        let vault = self.open_vault(&addr.vault)?;
        let chain = resolve_chain(&self.conn, &self.keys, &vault, addr)?;
        let entry = chain
            .last()
            .ok_or_else(|| StoreError::IsADirectory(addr.to_string()))?;
        self.read_stored_entry(addr, entry)
    }

    /// The stored value of `entry`, found at `addr`.
    pub(crate) fn read_stored_entry(&self, addr: &Address, entry: &Entry) -> Result<SecretBytes> {
        let vault = self.open_vault(&addr.vault)?;
        rows::read_value(
            &self.conn,
            &self.keys.store_id,
            &vault,
            entry.id,
            entry.version,
        )?
        .ok_or_else(|| StoreError::NotFound(addr.to_string()))
    }

    /// The value of the secret at `addr`; a template is rendered from its inputs.
    pub fn read(&self, addr: &Address) -> Result<SecretBytes> {
        let vault = self.open_vault(&addr.vault)?;
        let read = || {
            let chain = resolve_chain(&self.conn, &self.keys, &vault, addr)?;
            let entry = chain
                .last()
                .ok_or_else(|| StoreError::IsADirectory(addr.to_string()))?;
            if entry.is_dir() {
                return Err(StoreError::IsADirectory(addr.to_string()));
            }
            if entry.limits.expired_at(now_ns()) {
                return Err(StoreError::NotFound(format!("{addr} (expired)")));
            }
            if entry.kind == EntryKind::Template {
                return self.render_template(addr, entry);
            }
            rows::read_value(
                &self.conn,
                &self.keys.store_id,
                &vault,
                entry.id,
                entry.version,
            )?
            .ok_or_else(|| StoreError::NotFound(addr.to_string()))
        };
        // One snapshot for the lookup and the value (and a template's inputs): a write between
        // them must not make a secret that exists look missing.
        let snapshot = self
            .conn
            .unchecked_transaction()
            .map_err(|e| StoreError::from_sqlite(&self.keys.path, e))?;
        let out = read().map_err(|e| retag(e, addr));
        drop(snapshot);
        out
    }

    /// Describes the entry at `addr` (the root when `addr` names the vault).
    pub fn stat(&self, addr: &Address) -> Result<Option<Listing>> {
        let vault = self.open_vault(&addr.vault)?;
        let chain =
            resolve_chain(&self.conn, &self.keys, &vault, addr).map_err(|e| retag(e, addr))?;
        let acl = effective(&vault, &addr.path, &chain);
        Ok(chain.last().cloned().map(|entry| Listing {
            path: addr.path.clone(),
            entry,
            acl,
        }))
    }

    /// The ACL in force at `addr` (the vault's defaults for the root).
    pub fn effective_acl(&self, addr: &Address) -> Result<EffectiveAcl> {
        let vault = self.open_vault(&addr.vault)?;
        let chain =
            resolve_chain(&self.conn, &self.keys, &vault, addr).map_err(|e| retag(e, addr))?;
        Ok(effective(&vault, &addr.path, &chain))
    }

    /// Lists a directory, or describes a single secret.
    pub fn list(&self, addr: &Address) -> Result<Vec<Listing>> {
        let vault = self.open_vault(&addr.vault)?;
        let mut chain =
            resolve_chain(&self.conn, &self.keys, &vault, addr).map_err(|e| retag(e, addr))?;
        if let Some(last) = chain.last() {
            if !last.is_dir() {
                let acl = effective(&vault, &addr.path, &chain);
                return Ok(vec![Listing {
                    path: addr.path.clone(),
                    entry: last.clone(),
                    acl,
                }]);
            }
        }
        let dir_id = chain.last().map_or(ROOT_PARENT, |e| e.id);
        let kids = rows::children(&self.conn, &self.keys.store_id, &vault, dir_id)
            .map_err(|e| retag(e, addr))?;
        let mut out = Vec::with_capacity(kids.len());
        for kid in kids {
            let path = addr.path.join(&kid.name);
            chain.push(kid);
            let acl = effective(&vault, &path, &chain);
            let entry = chain.pop().expect("just pushed");
            out.push(Listing { path, entry, acl });
        }
        Ok(out)
    }

    /// Creates a directory; with `parents`, its missing ancestors too and no error if it exists.
    pub fn mkdir(&mut self, addr: &Address, parents: bool) -> Result<Entry> {
        let name = addr
            .path
            .file_name()
            .ok_or_else(|| StoreError::Exists(addr.to_string()))?;
        self.write_txn(|tx, generation, keys| {
            let vault = keys.open_vault_by_name(tx, &addr.vault)?;
            let comps = addr.path.components();
            let parent = if parents {
                make_dirs(
                    tx,
                    keys,
                    &vault,
                    generation,
                    addr,
                    &comps[..comps.len() - 1],
                )?
            } else {
                let parent_addr = Address {
                    vault: addr.vault.clone(),
                    path: addr.path.parent().expect("not the root"),
                };
                match resolve_chain(tx, keys, &vault, &parent_addr)?.last() {
                    None => ROOT_PARENT,
                    Some(e) if e.is_dir() => e.id,
                    Some(_) => return Err(StoreError::NotADirectory(parent_addr.to_string())),
                }
            };
            match rows::lookup(tx, &keys.store_id, &vault, parent, name)? {
                Some(e) if parents && e.is_dir() => Ok(e),
                Some(_) => Err(StoreError::Exists(addr.to_string())),
                None => insert_dir(tx, keys, &vault, generation, parent, name),
            }
        })
    }

    /// Removes a secret, an empty directory, or with `recursive` a whole subtree.
    pub fn remove(&mut self, addr: &Address, recursive: bool) -> Result<()> {
        self.write_txn(|tx, generation, keys| {
            let vault = keys.open_vault_by_name(tx, &addr.vault)?;
            let chain = resolve_chain(tx, keys, &vault, addr)?;
            let target = chain.last().ok_or_else(|| {
                StoreError::InvalidOperation(format!(
                    "{addr}: refusing to remove a vault's root; use `vaultfs vault remove`"
                ))
            })?;
            let mut doomed = vec![target.id];
            let mut i = 0;
            while i < doomed.len() {
                let kids = rows::children(tx, &keys.store_id, &vault, doomed[i])?;
                if !kids.is_empty() && !recursive {
                    return Err(StoreError::DirectoryNotEmpty(addr.to_string()));
                }
                doomed.extend(kids.iter().map(|k| k.id));
                i += 1;
            }
            rows::delete(tx, &vault, generation, &doomed)
        })
    }

    /// Deletes every secret of every vault whose expiry is at or before `now_ns`, in one
    /// transaction (the freed pages are zeroed by `secure_delete`); returns their addresses.
    pub fn gc(&mut self, now_ns: i64) -> Result<Vec<Address>> {
        let names: Vec<String> = self.list_vaults()?.into_iter().map(|v| v.name).collect();
        self.write_txn(|tx, generation, keys| {
            let mut gone = Vec::new();
            for name in &names {
                let vault = keys.open_vault_by_name(tx, name)?;
                let mut doomed = Vec::new();
                let mut stack = vec![(ROOT_PARENT, VaultPath::root())];
                while let Some((dir, path)) = stack.pop() {
                    for kid in rows::children(tx, &keys.store_id, &vault, dir)? {
                        let at = path.join(&kid.name);
                        if kid.is_dir() {
                            stack.push((kid.id, at));
                        } else if kid.limits.expired_at(now_ns) {
                            doomed.push(kid.id);
                            gone.push(Address {
                                vault: name.clone(),
                                path: at,
                            });
                        }
                    }
                }
                if !doomed.is_empty() {
                    rows::delete(tx, &vault, generation, &doomed)?;
                }
            }
            Ok(gone)
        })
    }

    /// Renames or moves an entry inside one vault. Refuses to replace an existing entry.
    pub fn rename(&mut self, from: &Address, to: &Address) -> Result<Entry> {
        if from.vault != to.vault {
            return Err(StoreError::InvalidOperation(format!(
                "{from} -> {to}: moving between vaults is not supported (each vault has its own key); use cat, write and rm"
            )));
        }
        let new_name = to
            .path
            .file_name()
            .ok_or_else(|| StoreError::Exists(to.to_string()))?;
        if to.path.starts_with(&from.path) {
            return Err(StoreError::InvalidOperation(format!(
                "{from} -> {to}: cannot move a directory into itself"
            )));
        }
        let carry = Carry::new(self);
        let out = self.write_txn(|tx, generation, keys| {
            let vault = keys.open_vault_by_name(tx, &from.vault)?;
            let chain = resolve_chain(tx, keys, &vault, from)?;
            let entry = chain.last().ok_or_else(|| {
                StoreError::InvalidOperation(format!("{from}: cannot move a vault's root"))
            })?;
            let parent_addr = Address {
                vault: to.vault.clone(),
                path: to.path.parent().expect("not the root"),
            };
            let new_parent = match resolve_chain(tx, keys, &vault, &parent_addr)?.last() {
                None => ROOT_PARENT,
                Some(e) if e.is_dir() => e.id,
                Some(_) => return Err(StoreError::NotADirectory(parent_addr.to_string())),
            };
            if rows::lookup(tx, &keys.store_id, &vault, new_parent, new_name)?.is_some() {
                return Err(StoreError::Exists(to.to_string()));
            }
            let change = Kept {
                parent: new_parent,
                name: new_name,
                acl: entry.acl.clone(),
                limits: entry.limits,
            };
            rewrite_keeping_value(tx, keys, &vault, generation, entry, &change, &carry)
        });
        carry.settle(&out);
        out.map_err(|e| retag(e, from))
    }

    /// Changes the ACL at `addr`: the vault's defaults for the root, an override otherwise.
    pub fn set_acl(&mut self, addr: &Address, change: &AclOverride) -> Result<()> {
        if addr.path.is_root() {
            self.set_vault_acl(&addr.vault, change)?;
            return Ok(());
        }
        self.edit_acl(addr, |acl| {
            acl.merge(change);
            true
        })
        .map(|_| ())
    }

    /// Removes the overrides of `addr` named by `which` (owner, group, mode), so the entry
    /// inherits them again. A vault's own defaults cannot be removed, only changed.
    pub fn unset_acl(&mut self, addr: &Address, which: AclFields) -> Result<()> {
        if addr.path.is_root() {
            return Err(StoreError::InvalidOperation(format!(
                "{addr}: a vault's defaults cannot be removed, only changed (vaultfs acl set)"
            )));
        }
        self.edit_acl(addr, |acl| {
            if which.owner {
                acl.owner = None;
            }
            if which.group {
                acl.group = None;
            }
            if which.mode {
                acl.mode = None;
            }
            true
        })
        .map(|_| ())
    }

    /// Adds `grant` to the entry at `addr`; `false` if it was there already.
    pub fn grant(&mut self, addr: &Address, grant: &Grant) -> Result<bool> {
        self.grant_edit(addr, |grants| {
            if grants.contains(grant) {
                return false;
            }
            grants.push(grant.clone());
            grants.sort();
            true
        })
    }

    /// Removes `grant` from the entry at `addr`; `false` if it was not set there (a grant
    /// inherited from an ancestor is revoked on that ancestor).
    pub fn revoke(&mut self, addr: &Address, grant: &Grant) -> Result<bool> {
        self.grant_edit(addr, |grants| {
            let before = grants.len();
            grants.retain(|g| g != grant);
            grants.len() != before
        })
    }

    fn grant_edit(
        &mut self,
        addr: &Address,
        edit: impl FnOnce(&mut Vec<Grant>) -> bool,
    ) -> Result<bool> {
        if addr.path.is_root() {
            return Err(StoreError::InvalidOperation(format!(
                "{addr}: grants are set on a directory or a secret, not on a vault's root; \
                 put the vault's secrets in a directory and grant that"
            )));
        }
        self.edit_acl(addr, |acl| edit(&mut acl.grants))
    }

    /// Rewrites the entry at `addr` with its ACL changed by `edit` (skipped when `edit` says
    /// nothing changed).
    fn edit_acl(
        &mut self,
        addr: &Address,
        edit: impl FnOnce(&mut AclOverride) -> bool,
    ) -> Result<bool> {
        let carry = Carry::new(self);
        let out = self.write_txn_if(|tx, generation, keys| {
            let vault = keys.open_vault_by_name(tx, &addr.vault)?;
            let chain = resolve_chain(tx, keys, &vault, addr)?;
            let entry = chain.last().ok_or_else(|| {
                StoreError::InvalidOperation(format!("{addr}: names the vault's root"))
            })?;
            let mut acl = entry.acl.clone();
            if !edit(&mut acl) {
                return Ok(false);
            }
            let change = Kept {
                parent: entry.parent,
                name: &entry.name,
                acl,
                limits: entry.limits,
            };
            rewrite_keeping_value(tx, keys, &vault, generation, entry, &change, &carry)?;
            Ok(true)
        });
        carry.settle(&out);
        out.map_err(|e| retag(e, addr))
    }
}

/// What a rewrite that keeps an entry's value sets.
pub(crate) struct Kept<'a> {
    pub parent: i64,
    pub name: &'a str,
    pub acl: AclOverride,
    pub limits: Limits,
}

/// Rewrites `entry` (a new row version) with `change` and the same value, keeping when the
/// value was written and its read count: an ACL change, a move or a new limit is not a new
/// value, so it neither restarts a `ttl` nor hands out a fresh set of opens.
pub(crate) fn rewrite_keeping_value(
    tx: &Connection,
    keys: &Keys,
    vault: &OpenVault,
    generation: i64,
    entry: &Entry,
    change: &Kept<'_>,
    carry: &Carry,
) -> Result<Entry> {
    let value = match entry.kind {
        EntryKind::File | EntryKind::Template => Some(
            rows::read_value(tx, &keys.store_id, vault, entry.id, entry.version)?.ok_or_else(
                || StoreError::Tampered {
                    what: format!(
                        "entry #{} of vault {:?} (its value is missing)",
                        entry.id, vault.info.name
                    ),
                },
            )?,
        ),
        EntryKind::Dir => None,
    };
    let written_ns = match entry.kind {
        EntryKind::Dir => None,
        _ => Some(rows::written_ns(tx, &keys.store_id, vault, entry)?),
    };
    if entry.limits.max_opens.is_some() || change.limits.max_opens.is_some() {
        carry.carry(&keys.store_id, vault.info.id, entry.id, entry.version)?;
    }
    let content = RowContent {
        parent: change.parent,
        name: change.name,
        kind: entry.kind,
        acl: change.acl.clone(),
        value: value.as_ref().map(|v| v.expose()),
        mtime_ns: now_ns(),
        limits: change.limits,
        written_ns,
    };
    rows::rewrite(tx, &keys.store_id, vault, generation, entry, &content)
}

type Carried = ([u8; 16], i64, i64, i64);

/// Carries read counts across a rewrite of one row (see [`crate::counts`]): done before the
/// rewrite commits, taken back if it does not.
pub(crate) struct Carry {
    state_dir: Option<std::path::PathBuf>,
    /// The carry made: store id, vault id, entry id, the version it was carried to.
    done: std::cell::RefCell<Option<Carried>>,
}

impl Carry {
    pub(crate) fn new(store: &Store) -> Carry {
        Carry {
            state_dir: store.state_dir.clone(),
            done: Default::default(),
        }
    }

    fn carry(&self, store_id: &[u8; 16], vault_id: i64, id: i64, version: i64) -> Result<()> {
        // A handle without a state directory keeps no counts (a mount would use the default).
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        crate::counts::carry(dir, store_id, vault_id, id, version, version + 1)?;
        *self.done.borrow_mut() = Some((*store_id, vault_id, id, version + 1));
        Ok(())
    }

    /// Takes the carry back when the rewrite did not commit.
    pub(crate) fn settle<T>(&self, out: &Result<T>) {
        if let (Err(_), Some(dir), Some((sid, vault_id, id, to))) =
            (out, &self.state_dir, self.done.borrow_mut().take())
        {
            crate::counts::uncarry(dir, &sid, vault_id, id, to);
        }
    }
}

/// Names the address in a tamper error, which the row layer can only name by id.
pub(crate) fn retag(e: StoreError, addr: &Address) -> StoreError {
    match e {
        StoreError::Tampered { what } if !what.contains(&addr.to_string()) => {
            StoreError::Tampered {
                what: format!("{addr} ({what})"),
            }
        }
        other => other,
    }
}
