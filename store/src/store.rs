//! The unlocked store: key slots and vaults. Entry operations live in `entries.rs`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::acl::{AclOverride, VaultAcl};
use crate::address::validate_name;
use crate::crypto;
use crate::db;
use crate::error::{Result, StoreError};
use crate::head::{self, StateFile};
use crate::keyslot::{self, Credential, KdfParams, SlotInfo};
use crate::recipient::Payload;
use crate::records::{self, VaultRecord, BASE_RECORD_VERSION};
use crate::secret::Key;

/// What is public about a vault once the store is unlocked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultInfo {
    /// Row id.
    pub id: i64,
    /// Name, as in `nix:/...`.
    pub name: String,
    /// Defaults every entry inherits.
    pub acl: VaultAcl,
    /// When it was created, ns since the epoch.
    pub created_ns: i64,
    /// Bumped on every change of the vault row itself (its defaults).
    pub version: i64,
}

/// A vault with its key, for entry operations.
pub(crate) struct OpenVault {
    pub info: VaultInfo,
    pub key: Key,
    pub tag_key: Key,
    /// Verifies (and, in a writer, seals) the store head for this vault.
    pub head_key: Key,
}

impl OpenVault {
    pub(crate) fn new(info: VaultInfo, key: Key) -> OpenVault {
        let tag_key = key.derive("vaultfs 2026 entry name tag v1");
        let head_key = vault_head_key(&key);
        OpenVault {
            info,
            key,
            tag_key,
            head_key,
        }
    }
}

fn vault_head_key(vault_key: &Key) -> Key {
    vault_key.derive("vaultfs 2026 vault head v2")
}

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Accept a store head older than the highest recorded in the state file (restoring a
    /// backup on purpose). The state file is then lowered to the head found.
    pub allow_rollback: bool,
    /// Where the highest head seen of each store is kept; `None` keeps it in memory only.
    pub state_dir: Option<PathBuf>,
}

impl Default for OpenOptions {
    /// Refuse rollbacks; keep state in [`default_state_dir`](crate::default_state_dir).
    fn default() -> Self {
        OpenOptions {
            allow_rollback: false,
            state_dir: crate::head::default_state_dir(),
        }
    }
}

/// An unlocked store. Holds the master key, which is wiped when the store drops.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) keys: Keys,
    /// The highest head verified by this handle.
    head_seen: i64,
    state: Option<StateFile>,
    /// The state directory (head state, read-limit counts), if any.
    pub(crate) state_dir: Option<PathBuf>,
    /// Audit records (by vault name) committed with the next write transaction.
    pub(crate) pending_audit: Vec<(String, crate::AuditRecord)>,
}

/// The unlocked key material and identity of a store, apart from its connection so that a
/// transaction can borrow the connection while helpers read the keys. Never handed to a
/// [`VaultReader`](crate::VaultReader): it holds the master key.
pub(crate) struct Keys {
    pub path: PathBuf,
    pub store_id: [u8; 16],
    master: Key,
    vault_tag_key: Key,
    head_key: Key,
    state_key: Key,
    /// Set when a scoped public-key slot unlocked the store: the only vault keys this handle
    /// holds. `master` is then a random key that opens and seals nothing: every write path
    /// refuses a scoped handle first ([`Store::writable`]).
    pub(crate) scope: Option<Vec<(i64, Key)>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.keys.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates a store at `path` whose first key slot is `cred`.
    pub fn create(path: &Path, cred: &Credential, kdf: KdfParams) -> Result<Store> {
        let mut conn = db::create(path)?;
        let store_id: [u8; 16] = crypto::random_array();
        let result = (|| {
            db::initialize(&mut conn, path, &store_id)?;
            let master = Key::random();
            let slot = keyslot::wrap(&store_id, &master, cred, kdf)?;
            conn.execute(
                "INSERT INTO key_slots (kind, params, wrapped, created_ns) VALUES (?1, ?2, ?3, ?4)",
                params![slot.kind, slot.params, slot.wrapped, records::now_ns()],
            )
            .map_err(|e| StoreError::from_sqlite(path, e))?;
            let keys = Keys::new(path, store_id, master);
            head::seal(&conn, &store_id, &keys.head_key, 0, &[])
                .map_err(|e| StoreError::from_sqlite(path, e))?;
            Ok(keys)
        })();
        match result {
            // No state file yet: the next open records the head (nothing older than a new
            // store can be restored over it).
            Ok(keys) => Ok(Store {
                conn,
                keys,
                head_seen: 0,
                state: None,
                state_dir: None,
                pending_audit: Vec::new(),
            }),
            Err(e) => {
                // Leave nothing half-made behind: a later `init` must be able to start over.
                drop(conn);
                for suffix in ["", "-wal", "-shm", "-journal", ".signal"] {
                    let mut p = path.as_os_str().to_owned();
                    p.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(p));
                }
                Err(e)
            }
        }
    }

    /// Opens and unlocks the store at `path`, refusing a rolled-back head
    /// ([`OpenOptions::default`]).
    pub fn open(path: &Path, cred: &Credential) -> Result<Store> {
        Store::open_with(path, cred, &OpenOptions::default())
    }

    /// Opens and unlocks the store at `path`: checks the head's MAC, compares it with the
    /// highest head this host recorded for the store, and records the new one.
    pub fn open_with(path: &Path, cred: &Credential, options: &OpenOptions) -> Result<Store> {
        let (conn, store_id) = db::open(path, db::WRITE_BUSY_TIMEOUT)?;
        let keys = match unlock(&conn, path, &store_id, cred)? {
            Payload::Master(master) => Keys::new(path, store_id, master),
            Payload::Vaults(vaults) => Keys::scoped(path, store_id, vaults),
        };
        let state = options
            .state_dir
            .as_ref()
            .map(|d| StateFile::new(d, &store_id));
        // The state file first, then the head: a state value was written after its commit, so
        // a head read afterwards is at least as new unless the store went back.
        let seen = match state.as_ref().map(|s| s.load(&keys.state_key, &store_id)) {
            None => None,
            Some(Ok(seen)) => seen,
            Some(Err(_)) if options.allow_rollback => None,
            Some(Err(e)) => return Err(e),
        };
        let head = keys
            .verified_head(&conn)
            .map_err(|e| StoreError::from_sqlite_in(path, e))?;
        match seen {
            Some(seen) if head < seen && !options.allow_rollback => {
                return Err(StoreError::Rollback {
                    path: path.to_owned(),
                    found: head,
                    seen,
                })
            }
            Some(seen) if head == seen => {}
            _ => {
                if let Some(state) = &state {
                    state.save(&keys.state_key, &store_id, head, options.allow_rollback);
                }
            }
        }
        Ok(Store {
            conn,
            keys,
            head_seen: head,
            state,
            state_dir: options.state_dir.clone(),
            pending_audit: Vec::new(),
        })
    }

    /// The id of the slot `cred` unlocks, if any.
    pub(crate) fn matching_slot_id(&self, cred: &Credential) -> Result<Option<i64>> {
        matching_slot(&self.conn, &self.keys.path, &self.keys.store_id, cred)
    }

    /// Takes new keys after a rotation committed at head `seq`.
    pub(crate) fn replace_keys(&mut self, keys: Keys, seq: i64) {
        self.keys = keys;
        self.head_seen = seq;
        if let Some(state) = &self.state {
            state.save(&self.keys.state_key, &self.keys.store_id, seq, false);
        }
    }

    /// Tells mounts that something committed (see `signal.rs`), before the command returns.
    /// A failure is logged, not returned: the commit stands, and mounts still see it within
    /// their poll interval.
    pub(crate) fn signal_change(&self) {
        if let Err(e) = crate::signal::bump(&self.keys.path) {
            tracing::warn!(
                "{}: cannot signal the change to mounts ({e}); they see it within their poll interval",
                crate::signal::path_of(&self.keys.path).display()
            );
        }
    }

    /// The store head (its authenticated change counter) as last verified or committed.
    pub fn head(&self) -> i64 {
        self.head_seen
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.keys.path
    }

    /// Runs `f` in an immediate (write-locking) transaction, so concurrent writers serialize
    /// instead of losing updates, and bumps the change counter before committing.
    ///
    /// The head is verified first (a forged or rolled-back counter is never re-MAC'd into an
    /// authentic one), and re-MAC'd for every vault that exists at commit.
    pub(crate) fn write_txn<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, i64, &Keys) -> Result<T>,
    ) -> Result<T> {
        let mut out = None;
        self.write_txn_if(|tx, generation, keys| {
            out = Some(f(tx, generation, keys)?);
            Ok(true)
        })?;
        Ok(out.expect("a committed transaction ran its body"))
    }

    /// Like [`Store::write_txn`], but `f` may find that nothing needs to change (`Ok(false)`):
    /// the transaction is then rolled back, so the head does not move, no audit record queued
    /// for it is written (they are dropped), and mounts see no change.
    pub(crate) fn write_txn_if(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, i64, &Keys) -> Result<bool>,
    ) -> Result<bool> {
        self.writable()?;
        let keys = &self.keys;
        let sqlite = |e| StoreError::from_sqlite(&keys.path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        let current = head::verified_master(&tx, &keys.store_id, &keys.head_key)
            .map_err(|e| StoreError::from_sqlite_in(&keys.path, e))?;
        if current < self.head_seen {
            return Err(StoreError::Rollback {
                path: keys.path.clone(),
                found: current,
                seen: self.head_seen,
            });
        }
        let generation = db::bump_generation(&tx).map_err(sqlite)?;
        let pending = std::mem::take(&mut self.pending_audit);
        let changed = f(&tx, generation, keys)
            .and_then(|changed| {
                if !changed {
                    return Ok(false);
                }
                // The change and its audit record commit together, or neither.
                for (vault, record) in &pending {
                    let vault = keys.open_vault_by_name(&tx, vault)?;
                    crate::audit::AuditLog::for_vault(keys.store_id, &vault)
                        .append_in(&tx, std::slice::from_ref(record))?;
                }
                let vault_keys = keys.vault_head_keys(&tx)?;
                head::seal(&tx, &keys.store_id, &keys.head_key, generation, &vault_keys)?;
                Ok(true)
            })
            .map_err(|e| StoreError::from_sqlite_in(&keys.path, e))?;
        if !changed {
            // Dropping the transaction rolls it back, generation bump included.
            drop(tx);
            return Ok(false);
        }
        tx.commit().map_err(sqlite)?;
        crate::audit::mirror_committed(&pending);
        self.signal_change();
        self.head_seen = generation;
        if let Some(state) = &self.state {
            state.save(&self.keys.state_key, &self.keys.store_id, generation, false);
        }
        Ok(true)
    }

    /// Refuses to write through a scoped handle (it holds no master key) or to a replica made
    /// by `bundle apply` (the next bundle would silently undo the write).
    pub(crate) fn writable(&self) -> Result<()> {
        if self.keys.scope.is_some() {
            return Err(StoreError::ReadOnly {
                path: self.keys.path.clone(),
                reason: "the key given opens only some vaults (a scoped host key), not the store",
            });
        }
        if crate::bundle::is_replica(&self.conn)? {
            return Err(StoreError::ReadOnly {
                path: self.keys.path.clone(),
                reason: "it is a replica applied from a bundle; change the source store and export a new bundle",
            });
        }
        Ok(())
    }

    /// Whether this handle holds only some vault keys (a scoped public-key slot).
    pub fn is_scoped(&self) -> bool {
        self.keys.scope.is_some()
    }

    // ----- key slots -----

    /// Lists the key slots.
    pub fn key_slots(&self) -> Result<Vec<SlotInfo>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, kind, params, created_ns, label FROM key_slots ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(keyslot::info(
                r.get(0)?,
                r.get(1)?,
                &r.get::<_, String>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Adds a slot for `cred`, with an optional `label` shown by `key list`, and returns its
    /// id. A credential that already unlocks a slot is refused ([`StoreError::DuplicateKey`]):
    /// a second slot for it would only make `key remove` look effective when it is not.
    pub fn add_key_slot(
        &mut self,
        cred: &Credential,
        kdf: KdfParams,
        label: Option<&str>,
    ) -> Result<i64> {
        if let Some(id) = matching_slot(&self.conn, &self.keys.path, &self.keys.store_id, cred)? {
            return Err(StoreError::DuplicateKey(id));
        }
        let slot = keyslot::wrap(&self.keys.store_id, &self.keys.master, cred, kdf)?;
        self.write_txn(|tx, _, _| {
            tx.execute(
                "INSERT INTO key_slots (kind, params, wrapped, created_ns, label)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    slot.kind,
                    slot.params,
                    slot.wrapped,
                    records::now_ns(),
                    label
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Adds a public-key slot for `recipient` (a host key), wrapping the master key, or with
    /// `vaults` only those vaults' keys, and returns its id. The host's secret is not needed.
    pub fn add_recipient_slot(
        &mut self,
        recipient: &crate::Recipient,
        vaults: &[String],
        label: Option<&str>,
    ) -> Result<i64> {
        self.writable()?;
        if let Some(dup) = self
            .key_slots()?
            .iter()
            .find(|s| s.recipient.as_deref() == Some(recipient.as_str()))
        {
            return Err(StoreError::DuplicateKey(dup.id));
        }
        let payload = if vaults.is_empty() {
            Payload::Master(self.keys.master.clone())
        } else {
            let mut keys = Vec::new();
            for name in vaults {
                let v = self.open_vault(name)?;
                if !keys.iter().any(|(id, _)| *id == v.info.id) {
                    keys.push((v.info.id, v.key.clone()));
                }
            }
            keys.sort_by_key(|(id, _)| *id);
            Payload::Vaults(keys)
        };
        let (params_text, wrapped) = crate::recipient::wrap(
            &self.keys.store_id,
            &self.keys.slot_key(),
            recipient,
            &payload,
        )?;
        self.write_txn(|tx, _, _| {
            tx.execute(
                "INSERT INTO key_slots (kind, params, wrapped, created_ns, label)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    recipient.kind(),
                    params_text,
                    wrapped,
                    records::now_ns(),
                    label
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Removes slot `id`; never the last one.
    pub fn remove_key_slot(&mut self, id: i64) -> Result<()> {
        self.write_txn(|tx, _, _| {
            let count: i64 = tx.query_row("SELECT count(*) FROM key_slots", [], |r| r.get(0))?;
            let exists = tx
                .query_row("SELECT 1 FROM key_slots WHERE id = ?1", [id], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Err(StoreError::NoSuchKeySlot(id));
            }
            if count <= 1 {
                return Err(StoreError::LastKeySlot);
            }
            tx.execute("DELETE FROM key_slots WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    // ----- vaults -----

    /// Creates a vault.
    pub fn create_vault(&mut self, name: &str, acl: VaultAcl) -> Result<VaultInfo> {
        validate_name(name).map_err(|reason| StoreError::InvalidAddress {
            input: name.to_owned(),
            reason,
        })?;
        if name.contains(':') {
            return Err(StoreError::InvalidAddress {
                input: name.to_owned(),
                reason: "`:` inside a vault name",
            });
        }
        let name = name.to_owned();
        self.write_txn(move |tx, _, keys| {
            let tag = crypto::name_tag(&keys.vault_tag_key, 0, &name);
            let exists = tx
                .query_row(
                    "SELECT 1 FROM vaults WHERE name_tag = ?1",
                    [&tag[..]],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if exists {
                return Err(StoreError::VaultExists(name));
            }
            tx.execute(
                "INSERT INTO vaults (version, name_tag, wrapped_key, sealed) VALUES (1, ?1, x'', x'')",
                [&tag[..]],
            )?;
            let id = tx.last_insert_rowid();
            let vault_key = Key::random();
            let info = VaultInfo {
                id,
                name,
                acl,
                created_ns: records::now_ns(),
                version: 1,
            };
            let wrapped = keys.wrap_vault_key(id, &vault_key);
            let sealed = seal_vault_record(&keys.store_id, &info, &vault_key);
            tx.execute(
                "UPDATE vaults SET wrapped_key = ?1, sealed = ?2 WHERE id = ?3",
                params![wrapped, sealed, id],
            )?;
            Ok(info)
        })
    }

    /// Lists the vaults, sorted by name.
    pub fn list_vaults(&self) -> Result<Vec<VaultInfo>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, version, wrapped_key, sealed FROM vaults")?;
        let rows: Vec<VaultRow> = stmt
            .query_map([], vault_row)?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if self.keys.vault_in_scope(row.id) {
                out.push(self.keys.open_vault_row(&row)?.info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Opens the vault called `name`, with its key.
    pub(crate) fn open_vault(&self, name: &str) -> Result<OpenVault> {
        self.keys.open_vault_by_name(&self.conn, name)
    }

    /// Describes the vault called `name`.
    pub fn vault(&self, name: &str) -> Result<VaultInfo> {
        Ok(self.open_vault(name)?.info)
    }

    /// Changes a vault's defaults.
    pub fn set_vault_acl(&mut self, name: &str, change: &AclOverride) -> Result<VaultInfo> {
        let name = name.to_owned();
        self.write_txn(|tx, _, keys| {
            let vault = keys.open_vault_by_name(tx, &name)?;
            let mut info = vault.info.clone();
            if let Some(o) = &change.owner {
                info.acl.owner.clone_from(o);
            }
            if let Some(g) = &change.group {
                info.acl.group.clone_from(g);
            }
            if let Some(m) = change.mode {
                info.acl.mode = m & crate::acl::MODE_MASK;
            }
            info.version += 1;
            let sealed = seal_vault_record(&keys.store_id, &info, &vault.key);
            tx.execute(
                "UPDATE vaults SET version = ?1, sealed = ?2 WHERE id = ?3",
                params![info.version, sealed, info.id],
            )?;
            Ok(info)
        })
    }

    /// Removes a vault; with `force`, everything in it too.
    pub fn remove_vault(&mut self, name: &str, force: bool) -> Result<()> {
        let name = name.to_owned();
        self.write_txn(|tx, generation, keys| {
            let vault = keys.open_vault_by_name(tx, &name)?;
            let count: i64 = tx.query_row(
                "SELECT count(*) FROM entries WHERE vault_id = ?1",
                [vault.info.id],
                |r| r.get(0),
            )?;
            if count > 0 && !force {
                return Err(StoreError::VaultNotEmpty(name.clone()));
            }
            tx.execute(
                "INSERT INTO deleted (vault_id, entry_id, seq) SELECT vault_id, id, ?2 FROM entries WHERE vault_id = ?1",
                params![vault.info.id, generation],
            )?;
            tx.execute("DELETE FROM entries WHERE vault_id = ?1", [vault.info.id])?;
            tx.execute("DELETE FROM vaults WHERE id = ?1", [vault.info.id])?;
            Ok(())
        })
    }
}

pub(crate) fn unlock(
    conn: &Connection,
    path: &Path,
    store_id: &[u8; 16],
    cred: &Credential,
) -> Result<Payload> {
    let mut stmt = conn
        .prepare("SELECT kind, params, wrapped FROM key_slots ORDER BY id")
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    let slots: Vec<(String, String, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    slots
        .iter()
        .find_map(|(kind, params, wrapped)| {
            keyslot::unwrap_any(store_id, cred, kind, params, wrapped)
        })
        .ok_or(StoreError::WrongKey)
}

/// The id of the slot `cred` unlocks, if any.
fn matching_slot(
    conn: &Connection,
    path: &Path,
    store_id: &[u8; 16],
    cred: &Credential,
) -> Result<Option<i64>> {
    let mut stmt = conn
        .prepare("SELECT id, kind, params, wrapped FROM key_slots ORDER BY id")
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    let slots: Vec<(i64, String, String, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(slots.iter().find_map(|(id, kind, params, wrapped)| {
        keyslot::unwrap_any(store_id, cred, kind, params, wrapped).map(|_| *id)
    }))
}

/// A vault row as stored: id, version, the vault key wrapped by the master key, and the vault's
/// record sealed under the vault key.
#[derive(Clone, Debug)]
pub(crate) struct VaultRow {
    pub id: i64,
    pub version: i64,
    pub wrapped_key: Vec<u8>,
    pub sealed: Vec<u8>,
}

pub(crate) fn vault_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VaultRow> {
    Ok(VaultRow {
        id: r.get(0)?,
        version: r.get(1)?,
        wrapped_key: r.get(2)?,
        sealed: r.get(3)?,
    })
}

fn vault_record_aad(store_id: &[u8; 16], id: i64, version: i64) -> Vec<u8> {
    crypto::aad("vaultfs vault v2", store_id, &[id, version])
}

/// Seals a vault row's record under the vault's own key.
pub(crate) fn seal_vault_record(store_id: &[u8; 16], info: &VaultInfo, vault_key: &Key) -> Vec<u8> {
    let record = VaultRecord {
        v: BASE_RECORD_VERSION,
        name: info.name.clone(),
        acl: info.acl.clone(),
        created_ns: info.created_ns,
    };
    records::seal_json(
        vault_key,
        &vault_record_aad(store_id, info.id, info.version),
        &record,
    )
}

/// Opens a vault row's record with the vault key alone: what a reader (which holds no master
/// key) does to follow changes of its vault's defaults.
pub(crate) fn open_vault_record(
    store_id: &[u8; 16],
    id: i64,
    version: i64,
    sealed: &[u8],
    vault_key: &Key,
) -> Result<VaultInfo> {
    let record: VaultRecord = records::open_json(
        vault_key,
        &vault_record_aad(store_id, id, version),
        sealed,
        || format!("vault row #{id}"),
    )?;
    Ok(VaultInfo {
        id,
        name: record.name.clone(),
        acl: record.acl.clone(),
        created_ns: record.created_ns,
        version,
    })
}

impl Keys {
    /// The master key, for migration's format-1 rows.
    pub(crate) fn master(&self) -> &Key {
        &self.master
    }

    /// The key of this store's state file (the highest head seen).
    pub(crate) fn state_key(&self) -> Key {
        self.state_key.clone()
    }

    /// The master-derived head key.
    pub(crate) fn head_key(&self) -> &Key {
        &self.head_key
    }

    pub(crate) fn new(path: &Path, store_id: [u8; 16], master: Key) -> Keys {
        Keys {
            path: path.to_owned(),
            store_id,
            vault_tag_key: master.derive("vaultfs 2026 vault name tag v1"),
            head_key: master.derive("vaultfs 2026 master head v2"),
            state_key: master.derive("vaultfs 2026 state file v2"),
            master,
            scope: None,
        }
    }

    /// The keys of a scoped public-key slot: some vault keys, no master key. The state file's
    /// key is derived from the vault keys, so it changes with them (as at `key rotate`).
    pub(crate) fn scoped(path: &Path, store_id: [u8; 16], vaults: Vec<(i64, Key)>) -> Keys {
        let mut state = blake3::Hasher::new_derive_key("vaultfs 2026 scoped state file v2");
        for (id, key) in &vaults {
            state.update(&id.to_le_bytes());
            state.update(key.expose());
        }
        let placeholder = Key::random();
        Keys {
            path: path.to_owned(),
            store_id,
            vault_tag_key: placeholder.derive("vaultfs 2026 vault name tag v1"),
            head_key: placeholder.derive("vaultfs 2026 master head v2"),
            state_key: Key::from_bytes(*state.finalize().as_bytes()),
            master: placeholder,
            scope: Some(vaults),
        }
    }

    /// The key that vouches for public-key slots' parameters.
    pub(crate) fn slot_key(&self) -> Key {
        self.master.derive("vaultfs 2026 public slot params v1")
    }

    /// Whether this handle may open vault `id`.
    pub(crate) fn vault_in_scope(&self, id: i64) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|s| s.iter().any(|(v, _)| *v == id))
    }

    /// The head, verified with the master-derived key, or for a scoped handle with the head
    /// key of the first of its vaults that still exists.
    pub(crate) fn verified_head(&self, conn: &Connection) -> Result<i64> {
        let Some(scope) = &self.scope else {
            return head::verified_master(conn, &self.store_id, &self.head_key);
        };
        for (id, key) in scope {
            if let Some(seq) = head::verified(conn, &self.store_id, &vault_head_key(key), *id)? {
                return Ok(seq);
            }
        }
        Err(StoreError::InvalidOperation(format!(
            "{}: none of the vaults this key opens exists any more",
            self.path.display()
        )))
    }

    /// The index tag of a vault name.
    pub(crate) fn vault_name_tag(&self, name: &str) -> [u8; 32] {
        crypto::name_tag(&self.vault_tag_key, 0, name)
    }

    fn vault_key_aad(&self, id: i64) -> Vec<u8> {
        crypto::aad("vaultfs vault key v2", &self.store_id, &[id])
    }

    /// Wraps a vault key under the master key, bound to this store and vault id.
    pub(crate) fn wrap_vault_key(&self, id: i64, vault_key: &Key) -> Vec<u8> {
        crypto::seal(&self.master, &self.vault_key_aad(id), vault_key.expose())
    }

    fn unwrap_vault_key(&self, id: i64, wrapped: &[u8]) -> Result<Key> {
        if let Some(scope) = &self.scope {
            return scope
                .iter()
                .find(|(v, _)| *v == id)
                .map(|(_, k)| k.clone())
                .ok_or_else(|| StoreError::NotInScope(format!("#{id}")));
        }
        let what = || format!("vault row #{id}");
        let bytes = crypto::open(&self.master, &self.vault_key_aad(id), wrapped)
            .ok_or_else(|| StoreError::Tampered { what: what() })?;
        Key::from_slice(bytes.expose()).ok_or_else(|| StoreError::Tampered { what: what() })
    }

    /// Opens a vault row: unwraps its key, then opens its record.
    pub(crate) fn open_vault_row(&self, row: &VaultRow) -> Result<OpenVault> {
        let key = self.unwrap_vault_key(row.id, &row.wrapped_key)?;
        let info = open_vault_record(&self.store_id, row.id, row.version, &row.sealed, &key)?;
        Ok(OpenVault::new(info, key))
    }

    /// The head key of every vault, to re-MAC the head at commit.
    fn vault_head_keys(&self, conn: &Connection) -> Result<Vec<(i64, Key)>> {
        let rows: Vec<(i64, Vec<u8>)> = conn
            .prepare_cached("SELECT id, wrapped_key FROM vaults")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|(id, wrapped)| Ok((id, vault_head_key(&self.unwrap_vault_key(id, &wrapped)?))))
            .collect()
    }

    /// Finds and opens the vault called `name`.
    pub(crate) fn open_vault_by_name(&self, conn: &Connection, name: &str) -> Result<OpenVault> {
        if let Some(scope) = &self.scope {
            // No name-tag key without the master key: open each vault in scope by id.
            for (id, _) in scope {
                let row: Option<VaultRow> = conn
                    .prepare_cached(
                        "SELECT id, version, wrapped_key, sealed FROM vaults WHERE id = ?1",
                    )?
                    .query_row([id], vault_row)
                    .optional()?;
                if let Some(row) = row {
                    let vault = self.open_vault_row(&row)?;
                    if vault.info.name == name {
                        return Ok(vault);
                    }
                }
            }
            return Err(StoreError::NotInScope(name.to_owned()));
        }
        let tag = crypto::name_tag(&self.vault_tag_key, 0, name);
        let row: Option<VaultRow> = conn
            .prepare_cached(
                "SELECT id, version, wrapped_key, sealed FROM vaults WHERE name_tag = ?1",
            )?
            .query_row([&tag[..]], vault_row)
            .optional()?;
        let row = row.ok_or_else(|| StoreError::NoSuchVault(name.to_owned()))?;
        let vault = self.open_vault_row(&row).map_err(|e| match e {
            StoreError::Tampered { .. } => StoreError::Tampered {
                what: format!("vault {name:?}"),
            },
            other => other,
        })?;
        if vault.info.name != name {
            return Err(StoreError::Tampered {
                what: format!("vault {name:?}"),
            });
        }
        Ok(vault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    fn key_file(byte: u8) -> Credential {
        Credential::KeyFile(SecretBytes::new(vec![byte; 32]))
    }

    #[test]
    fn slots_carry_labels_and_refuse_a_credential_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = Store::create(&path, &key_file(1), KdfParams::default()).unwrap();
        let id = store
            .add_key_slot(&key_file(2), KdfParams::default(), Some("backup"))
            .unwrap();
        let slots = store.key_slots().unwrap();
        assert_eq!(slots.len(), 2);
        assert_eq!(slots[0].label, None);
        assert_eq!(slots[1].id, id);
        assert_eq!(slots[1].label.as_deref(), Some("backup"));
        for again in [1, 2] {
            assert!(matches!(
                store.add_key_slot(&key_file(again), KdfParams::default(), None),
                Err(StoreError::DuplicateKey(_))
            ));
        }
        assert_eq!(store.key_slots().unwrap().len(), 2);
    }
}

#[cfg(test)]
mod rotate_tests {
    use super::*;
    use crate::secret::SecretBytes;
    use crate::Address;

    fn key_file(byte: u8) -> Credential {
        Credential::KeyFile(SecretBytes::new(vec![byte; 32]))
    }

    #[test]
    fn rotation_reseals_everything_and_leaves_one_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = Store::create(&path, &key_file(1), KdfParams::default()).unwrap();
        store
            .add_key_slot(&key_file(2), KdfParams::default(), None)
            .unwrap();
        store
            .create_vault(
                "v",
                VaultAcl {
                    owner: "root".into(),
                    group: "root".into(),
                    mode: 0o400,
                },
            )
            .unwrap();
        let big: Vec<u8> = (0..200_000).map(|i| i as u8).collect();
        store
            .write(&Address::parse("v:/d/big").unwrap(), &big)
            .unwrap();
        store.write(&Address::parse("v:/e").unwrap(), b"").unwrap();
        let before: Vec<Vec<u8>> = store
            .conn
            .prepare("SELECT meta FROM entries ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(matches!(
            store.rotate_keys(&key_file(9), KdfParams::default()),
            Err(StoreError::WrongKey)
        ));
        let done = store
            .rotate_keys(&key_file(1), KdfParams::default())
            .unwrap();
        assert_eq!(done.removed_slots, vec![1, 2]);
        assert_eq!(done.entries, 3);
        assert_eq!(
            store
                .read(&Address::parse("v:/d/big").unwrap())
                .unwrap()
                .expose(),
            &big[..]
        );
        drop(store);
        let options = OpenOptions {
            allow_rollback: false,
            state_dir: None,
        };
        assert!(matches!(
            Store::open_with(&path, &key_file(2), &options),
            Err(StoreError::WrongKey)
        ));
        let store = Store::open_with(&path, &key_file(1), &options).unwrap();
        assert_eq!(
            store.read(&Address::parse("v:/e").unwrap()).unwrap().len(),
            0
        );
        assert_eq!(
            store.list(&Address::parse("v:/d").unwrap()).unwrap().len(),
            1
        );
        let after: Vec<Vec<u8>> = store
            .conn
            .prepare("SELECT meta FROM entries ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(before.iter().zip(&after).all(|(a, b)| a != b));
    }

    fn record(t_ns: i64, rule: &str) -> crate::AuditRecord {
        crate::AuditRecord {
            t_ns,
            event: "acl".into(),
            rule: Some(rule.into()),
            ..Default::default()
        }
    }

    #[test]
    fn rotation_reseals_a_pruned_audit_log_and_a_former_key_segment_stays_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = Store::create(&path, &key_file(1), KdfParams::default()).unwrap();
        let acl = VaultAcl {
            owner: "root".into(),
            group: "root".into(),
            mode: 0o400,
        };
        store.create_vault("v", acl.clone()).unwrap();
        store.create_vault("w", acl).unwrap();
        let recs: Vec<_> = (1..=5).map(|i| record(i * 10, &format!("r{i}"))).collect();
        store.audit("v", &recs).unwrap();
        // A pruned start: records 1 and 2 gone, the chain starts at 3.
        assert_eq!(store.audit_prune("v", 25).unwrap(), 2);
        let done = store
            .rotate_keys(&key_file(1), KdfParams::default())
            .unwrap();
        assert_eq!(done.audit_records, 3);
        assert!(done.audit_not_resealed.is_empty());
        let (read, verified) = store.audit_records("v").unwrap();
        assert_eq!(read, recs[2..].to_vec());
        assert_eq!((verified.first_seq, verified.former_key), (3, 0));
        // The log goes on under the new key, and prunes again.
        store.audit("v", &[record(60, "r6")]).unwrap();
        assert_eq!(store.audit_records("v").unwrap().0.len(), 4);
        assert_eq!(store.audit_prune("v", 45).unwrap(), 2);
        assert_eq!(store.audit_records("v").unwrap().1.first_seq, 5);
        // A vault with no log yet: nothing to re-seal, still empty after.
        assert!(store.audit_records("w").unwrap().0.is_empty());

        // A tampered log is left under the old key and reported, not re-sealed into a chain
        // that checks.
        store
            .conn
            .execute("UPDATE audit SET t_ns = 99 WHERE seq = 6", [])
            .unwrap();
        assert!(store.audit_records("v").unwrap_err().is_tamper());
        let done = store
            .rotate_keys(&key_file(1), KdfParams::default())
            .unwrap();
        assert_eq!(done.audit_not_resealed, vec!["v".to_owned()]);
        let (read, verified) = store.audit_records("v").unwrap();
        assert!(read.is_empty());
        assert_eq!(verified.former_key, 6);
        // A third rotation keeps the former-key segment as it is (a zero base).
        let done = store
            .rotate_keys(&key_file(1), KdfParams::default())
            .unwrap();
        assert!(done.audit_not_resealed.is_empty());
        assert_eq!(store.audit_records("v").unwrap().1.former_key, 6);
        store.audit("v", &[record(70, "r7")]).unwrap();
        let (read, verified) = store.audit_records("v").unwrap();
        assert_eq!((read.len(), verified.former_key), (1, 6));
    }
}
