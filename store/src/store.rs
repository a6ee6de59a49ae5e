//! The unlocked store: key slots and vaults. Entry operations live in `entries.rs`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::acl::{AclOverride, VaultAcl};
use crate::address::validate_name;
use crate::crypto;
use crate::db;
use crate::error::{Result, StoreError};
use crate::keyslot::{self, Credential, KdfParams, SlotInfo};
use crate::records::{self, VaultRecord, RECORD_VERSION};
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
}

impl OpenVault {
    pub(crate) fn new(info: VaultInfo, key: Key) -> OpenVault {
        let tag_key = key.derive("vaultfs 2026 entry name tag v1");
        OpenVault { info, key, tag_key }
    }
}

/// An unlocked store. Holds the master key, which is wiped when the store drops.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) keys: Keys,
}

/// The unlocked key material and identity of a store, apart from its connection so that a
/// transaction can borrow the connection while helpers read the keys.
#[derive(Clone)]
pub(crate) struct Keys {
    pub path: PathBuf,
    pub store_id: [u8; 16],
    master: Key,
    vault_tag_key: Key,
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
            Ok(master)
        })();
        match result {
            Ok(master) => Ok(Store::assemble(path, conn, store_id, master)),
            Err(e) => {
                // Leave nothing half-made behind: a later `init` must be able to start over.
                drop(conn);
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.as_os_str().to_owned();
                    p.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(p));
                }
                Err(e)
            }
        }
    }

    /// Opens and unlocks the store at `path`.
    pub fn open(path: &Path, cred: &Credential) -> Result<Store> {
        let (conn, store_id) = db::open(path, db::WRITE_BUSY_TIMEOUT)?;
        let master = unlock(&conn, path, &store_id, cred)?;
        Ok(Store::assemble(path, conn, store_id, master))
    }

    fn assemble(path: &Path, conn: Connection, store_id: [u8; 16], master: Key) -> Store {
        let vault_tag_key = master.derive("vaultfs 2026 vault name tag v1");
        Store {
            conn,
            keys: Keys {
                path: path.to_owned(),
                store_id,
                master,
                vault_tag_key,
            },
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.keys.path
    }

    /// Runs `f` in an immediate (write-locking) transaction, so concurrent writers serialize
    /// instead of losing updates, and bumps the change counter before committing.
    pub(crate) fn write_txn<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, i64, &Keys) -> Result<T>,
    ) -> Result<T> {
        let keys = &self.keys;
        let sqlite = |e| StoreError::from_sqlite(&keys.path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        let generation = db::bump_generation(&tx).map_err(sqlite)?;
        let out = f(&tx, generation, keys).map_err(|e| match e {
            StoreError::Sqlite(inner) => sqlite(inner),
            other => other,
        })?;
        tx.commit().map_err(sqlite)?;
        Ok(out)
    }

    // ----- key slots -----

    /// Lists the key slots.
    pub fn key_slots(&self) -> Result<Vec<SlotInfo>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, kind, params, created_ns FROM key_slots ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(keyslot::info(
                r.get(0)?,
                r.get(1)?,
                &r.get::<_, String>(2)?,
                r.get(3)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Adds a slot for `cred` and returns its id.
    pub fn add_key_slot(&mut self, cred: &Credential, kdf: KdfParams) -> Result<i64> {
        let slot = keyslot::wrap(&self.keys.store_id, &self.keys.master, cred, kdf)?;
        self.write_txn(|tx, _, _| {
            tx.execute(
                "INSERT INTO key_slots (kind, params, wrapped, created_ns) VALUES (?1, ?2, ?3, ?4)",
                params![slot.kind, slot.params, slot.wrapped, records::now_ns()],
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
                "INSERT INTO vaults (version, name_tag, sealed) VALUES (1, ?1, x'')",
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
            let sealed = keys.seal_vault(&info, &vault_key);
            tx.execute(
                "UPDATE vaults SET sealed = ?1 WHERE id = ?2",
                params![sealed, id],
            )?;
            Ok(info)
        })
    }

    /// Lists the vaults, sorted by name.
    pub fn list_vaults(&self) -> Result<Vec<VaultInfo>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, version, sealed FROM vaults")?;
        let rows: Vec<(i64, i64, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, version, sealed) in rows {
            out.push(self.keys.open_vault_row(id, version, &sealed)?.info);
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
            let sealed = keys.seal_vault(&info, &vault.key);
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

fn unlock(conn: &Connection, path: &Path, store_id: &[u8; 16], cred: &Credential) -> Result<Key> {
    let mut stmt = conn
        .prepare("SELECT kind, params, wrapped FROM key_slots ORDER BY id")
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    let slots: Vec<(String, String, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    slots
        .iter()
        .find_map(|(kind, params, wrapped)| keyslot::unwrap(store_id, cred, kind, params, wrapped))
        .ok_or(StoreError::WrongKey)
}

impl Keys {
    fn vault_aad(&self, id: i64, version: i64) -> Vec<u8> {
        crypto::aad("vaultfs vault v1", &self.store_id, &[id, version])
    }

    /// Seals a vault row's content.
    fn seal_vault(&self, info: &VaultInfo, vault_key: &Key) -> Vec<u8> {
        let record = VaultRecord {
            v: RECORD_VERSION,
            name: info.name.clone(),
            key: crypto::to_hex(vault_key.expose()),
            acl: info.acl.clone(),
            created_ns: info.created_ns,
        };
        records::seal_json(
            &self.master,
            &self.vault_aad(info.id, info.version),
            &record,
        )
    }

    /// Opens a vault row.
    pub(crate) fn open_vault_row(&self, id: i64, version: i64, sealed: &[u8]) -> Result<OpenVault> {
        let what = || format!("vault row #{id}");
        let record: VaultRecord =
            records::open_json(&self.master, &self.vault_aad(id, version), sealed, what)?;
        let key_bytes = zeroize::Zeroizing::new(
            crypto::from_hex(&record.key).ok_or_else(|| StoreError::Tampered { what: what() })?,
        );
        let key =
            Key::from_slice(&key_bytes).ok_or_else(|| StoreError::Tampered { what: what() })?;
        let info = VaultInfo {
            id,
            name: record.name.clone(),
            acl: record.acl.clone(),
            created_ns: record.created_ns,
            version,
        };
        Ok(OpenVault::new(info, key))
    }

    /// Finds and opens the vault called `name`.
    pub(crate) fn open_vault_by_name(&self, conn: &Connection, name: &str) -> Result<OpenVault> {
        let tag = crypto::name_tag(&self.vault_tag_key, 0, name);
        let row: Option<(i64, i64, Vec<u8>)> = conn
            .prepare_cached("SELECT id, version, sealed FROM vaults WHERE name_tag = ?1")?
            .query_row([&tag[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let (id, version, sealed) = row.ok_or_else(|| StoreError::NoSuchVault(name.to_owned()))?;
        let vault = self
            .open_vault_row(id, version, &sealed)
            .map_err(|e| match e {
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
