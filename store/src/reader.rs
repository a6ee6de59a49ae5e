//! Read access to one vault for the FUSE driver: safe to share between threads, never waits for
//! a writer (WAL snapshots), and applies changes incrementally.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};

use crate::db;
use crate::error::{Result, StoreError};
use crate::head;
use crate::rows::{self, Entry};
use crate::secret::SecretBytes;
use crate::store::{open_vault_record, OpenVault, Store, VaultInfo};
use crate::value::SealedValue;

/// How long a reader may wait on SQLite's locks. WAL readers do not wait for writers, so this
/// only bounds rare recovery or checkpoint stalls: a mount answers EIO rather than hang.
const READ_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The whole vault at one generation.
#[derive(Debug)]
pub struct Snapshot {
    /// The store's change counter when this was read.
    pub generation: i64,
    /// The vault's row (its defaults).
    pub vault: VaultInfo,
    /// Every entry that opened.
    pub entries: Vec<Entry>,
    /// Rows that failed authentication, by id; the rest of the vault stays usable.
    pub damaged: Vec<(i64, StoreError)>,
}

/// What changed since a generation.
#[derive(Debug)]
pub struct Changes {
    /// The store's change counter when this was read.
    pub generation: i64,
    /// The vault's row, when it changed (new defaults).
    pub vault: Option<VaultInfo>,
    /// Entries created or changed.
    pub upserts: Vec<Entry>,
    /// Ids of entries deleted.
    pub deleted: Vec<i64>,
    /// Rows that failed authentication.
    pub damaged: Vec<(i64, StoreError)>,
}

/// A thread-safe reader of one vault, holding its own small pool of connections.
///
/// It holds the vault's key (and keys derived from it) and the store's id, never the master key:
/// it follows the vault's own row (sealed under the vault key) and verifies the store head with
/// the vault's head key, so a mount daemon can wipe the master key once its readers exist.
pub struct VaultReader {
    path: PathBuf,
    store_id: [u8; 16],
    vault: OpenVault,
    /// The highest store head this reader has verified: an older one is a rollback.
    seen: AtomicI64,
    pool: Mutex<Vec<Connection>>,
    /// Set when the path no longer names the file this reader opened: SQLite finds the -wal
    /// and -shm files by path, so a connection opened now would mix the old store's files
    /// with the new one's. Only the connections already open are used from then on.
    detached: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for VaultReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultReader")
            .field("store", &self.path)
            .field("vault", &self.vault.info.name)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A reader of vault `name` that outlives this handle. It receives the vault's key, not the
    /// master key.
    pub fn reader(&self, name: &str) -> Result<VaultReader> {
        let vault = self.open_vault(name)?;
        Ok(VaultReader {
            path: self.path().to_owned(),
            store_id: self.keys.store_id,
            vault,
            seen: AtomicI64::new(self.head()),
            pool: Mutex::new(Vec::new()),
            detached: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

impl VaultReader {
    /// The vault's name.
    pub fn vault_name(&self) -> &str {
        &self.vault.info.name
    }

    /// The store file.
    pub fn store_path(&self) -> &PathBuf {
        &self.path
    }

    /// Stops opening connections by path: the file at the path is not the one this reader
    /// opened (it was deleted or replaced). The connections already open keep reading the
    /// old file, so a mount can go on serving its last good state.
    pub fn detach_from_path(&self) {
        self.detached.store(true, Ordering::Release);
    }

    pub(crate) fn store_id(&self) -> &[u8; 16] {
        &self.store_id
    }

    pub(crate) fn vault(&self) -> &OpenVault {
        &self.vault
    }

    pub(crate) fn vault_id(&self) -> i64 {
        self.vault.info.id
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().pop();
        let conn = match pooled {
            Some(c) => c,
            None if self.detached.load(Ordering::Acquire) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other(
                        "the store file was replaced; only a remount reads the new one",
                    ),
                })
            }
            None => db::open(&self.path, READ_BUSY_TIMEOUT)?.0,
        };
        let out = f(&conn).map_err(|e| StoreError::from_sqlite_in(&self.path, e));
        self.pool.lock().push(conn);
        out
    }

    /// The verified store head, inside the caller's read transaction: its MAC under this vault's
    /// head key checks, and it is not older than any head this reader saw before.
    fn head(&self, conn: &Connection) -> Result<i64> {
        let seq = head::verified(
            conn,
            &self.store_id,
            &self.vault.head_key,
            self.vault.info.id,
        )?
        .ok_or_else(|| StoreError::NoSuchVault(self.vault.info.name.clone()))?;
        let seen = self.seen.load(Ordering::Acquire);
        if seq < seen {
            return Err(StoreError::Rollback {
                path: self.path.clone(),
                found: seq,
                seen,
            });
        }
        // A row or tombstone newer than the head was not written by a commit (each commit moves
        // the head): someone put an older head back to freeze this reader's view.
        let newest: i64 = conn
            .prepare_cached(
                "SELECT max(coalesce((SELECT max(seq) FROM entries WHERE vault_id = ?1), 0),
                            coalesce((SELECT max(seq) FROM deleted WHERE vault_id = ?1), 0))",
            )?
            .query_row([self.vault.info.id], |r| r.get(0))?;
        if newest > seq {
            return Err(StoreError::Tampered {
                what: format!(
                    "the store head (vault {:?} has rows newer than it)",
                    self.vault.info.name
                ),
            });
        }
        self.seen.fetch_max(seq, Ordering::AcqRel);
        Ok(seq)
    }

    /// The store's change counter (its head), verified with this vault's key: one indexed read,
    /// cheap enough for every open. A forged counter is [`StoreError::Tampered`], one older
    /// than a head already seen is [`StoreError::Rollback`].
    pub fn generation(&self) -> Result<i64> {
        self.with_conn(|c| {
            // One read transaction, so the head and the newest row come from one snapshot.
            let tx = c.unchecked_transaction()?;
            let head = self.head(&tx)?;
            tx.finish()?;
            Ok(head)
        })
    }

    fn vault_row(
        &self,
        conn: &Connection,
        known_version: Option<i64>,
    ) -> Result<Option<VaultInfo>> {
        let row: Option<(i64, Vec<u8>)> = conn
            .prepare_cached("SELECT version, sealed FROM vaults WHERE id = ?1")?
            .query_row([self.vault.info.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (version, sealed) =
            row.ok_or_else(|| StoreError::NoSuchVault(self.vault.info.name.clone()))?;
        if Some(version) == known_version {
            return Ok(None);
        }
        let info = open_vault_record(
            &self.store_id,
            self.vault.info.id,
            version,
            &sealed,
            &self.vault.key,
        )
        .map_err(|e| match e {
            StoreError::Tampered { .. } => StoreError::Tampered {
                what: format!("vault {:?}", self.vault.info.name),
            },
            other => other,
        })?;
        if info.name != self.vault.info.name {
            return Err(StoreError::Tampered {
                what: format!("vault {:?}", self.vault.info.name),
            });
        }
        Ok(Some(info))
    }

    /// Reads the whole vault in one consistent snapshot.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.with_conn(|conn| {
            let tx = conn.unchecked_transaction()?;
            let generation = self.head(&tx)?;
            let vault = self
                .vault_row(&tx, None)?
                .ok_or_else(|| StoreError::Tampered {
                    what: format!("vault {:?}", self.vault.info.name),
                })?;
            let (entries, damaged) =
                rows::changed_since(&tx, &self.store_id, &self.vault, 0, generation)?;
            tx.finish()?;
            Ok(Snapshot {
                generation,
                vault,
                entries,
                damaged,
            })
        })
    }

    /// What changed after `generation`, in one consistent snapshot.
    pub fn changes_since(&self, generation: i64, vault_version: i64) -> Result<Changes> {
        self.with_conn(|conn| {
            let tx = conn.unchecked_transaction()?;
            let now = self.head(&tx)?;
            let vault = self.vault_row(&tx, Some(vault_version))?;
            let (upserts, damaged) =
                rows::changed_since(&tx, &self.store_id, &self.vault, generation, now)?;
            let deleted = rows::deleted_since(&tx, &self.vault, generation, now)?;
            tx.finish()?;
            Ok(Changes {
                generation: now,
                vault,
                upserts,
                deleted,
                damaged,
            })
        })
    }

    /// The value of secret `id` at `version`; `Ok(None)` when it has changed or gone since (the
    /// caller refreshes and retries).
    pub fn read_value(&self, id: i64, version: i64) -> Result<Option<SecretBytes>> {
        self.with_conn(|conn| rows::read_value(conn, &self.store_id, &self.vault, id, version))
    }

    /// The sealed value of secret `id` at `version`, for a file handle to decrypt piecewise;
    /// `Ok(None)` when entry `id` is gone or no longer at `version`.
    pub fn sealed_value(&self, id: i64, version: i64) -> Result<Option<SealedValue>> {
        self.with_conn(|conn| rows::sealed_value(conn, &self.store_id, &self.vault, id, version))
    }

    /// The current row of entry `id`, if it still exists.
    pub fn entry(&self, id: i64) -> Result<Option<Entry>> {
        self.with_conn(|conn| rows::by_id(conn, &self.store_id, &self.vault, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Address, Credential, KdfParams, OpenOptions, VaultAcl};

    fn acl() -> VaultAcl {
        VaultAcl {
            owner: "root".into(),
            group: "root".into(),
            mode: 0o400,
        }
    }

    /// A store with vault `v` (secret `/s`) and `w` (secret `/t`), its key, and options with a
    /// private state directory.
    fn fixture(dir: &std::path::Path) -> (PathBuf, Credential, OpenOptions) {
        let path = dir.join("store.db");
        let cred = || Credential::KeyFile(SecretBytes::new(vec![42; 32]));
        let mut store = Store::create(&path, &cred(), KdfParams::default()).unwrap();
        store.create_vault("v", acl()).unwrap();
        store.create_vault("w", acl()).unwrap();
        store
            .write(&Address::parse("v:/s").unwrap(), b"v-secret")
            .unwrap();
        store
            .write(&Address::parse("w:/t").unwrap(), b"w-secret")
            .unwrap();
        let options = OpenOptions {
            allow_rollback: false,
            state_dir: Some(dir.join("state")),
        };
        (path, cred(), options)
    }

    #[test]
    fn a_reader_works_without_the_store_that_made_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, cred, options) = fixture(dir.path());
        let store = Store::open_with(&path, &cred, &options).unwrap();
        let reader = store.reader("v").unwrap();
        drop(store);
        // Everything a mount does, after the master key is gone: the tree, the head, the
        // vault's own row (defaults changed by another process), values.
        let snap = reader.snapshot().unwrap();
        assert_eq!(snap.entries.len(), 1);
        let mut writer = Store::open_with(&path, &cred, &options).unwrap();
        writer
            .set_vault_acl(
                "v",
                &crate::AclOverride {
                    mode: Some(0o440),
                    ..Default::default()
                },
            )
            .unwrap();
        writer
            .write(&Address::parse("v:/s").unwrap(), b"v-secret-2")
            .unwrap();
        let changes = reader
            .changes_since(snap.generation, snap.vault.version)
            .unwrap();
        assert_eq!(changes.vault.unwrap().acl.mode, 0o440);
        assert_eq!(changes.upserts.len(), 1);
        let e = &changes.upserts[0];
        let value = reader.sealed_value(e.id, e.version).unwrap().unwrap();
        assert_eq!(value.read(0, 100).unwrap().expose(), b"v-secret-2");
        // The old version is gone: a handle on it gets None, never the new bytes.
        assert!(reader.sealed_value(e.id, e.version - 1).unwrap().is_none());
    }

    #[test]
    fn swapped_wrapped_vault_keys_fail_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let (path, cred, options) = fixture(dir.path());
        let db = Connection::open(&path).unwrap();
        db.execute_batch(
            "UPDATE vaults SET wrapped_key = (SELECT wrapped_key FROM vaults WHERE id = 2)
             WHERE id = 1",
        )
        .unwrap();
        let store = Store::open_with(&path, &cred, &options).unwrap();
        assert!(store.reader("v").unwrap_err().is_tamper());
        assert!(store.list_vaults().unwrap_err().is_tamper());
        // The other vault is untouched.
        let store2 = Store::open_with(&path, &cred, &options).unwrap();
        assert!(store2.reader("w").is_ok());
    }

    #[test]
    fn a_row_changed_under_a_reader_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (path, cred, options) = fixture(dir.path());
        let store = Store::open_with(&path, &cred, &options).unwrap();
        let reader = store.reader("v").unwrap();
        let db = Connection::open(&path).unwrap();
        for attack in [
            "UPDATE vaults SET version = -1 WHERE id = 1",
            "UPDATE vaults SET version = 99, sealed = x'00' WHERE id = 1",
            "UPDATE entries SET version = -1",
            "UPDATE entries SET meta = x'', value = NULL",
            "DELETE FROM vaults WHERE id = 1",
        ] {
            db.execute_batch(attack).unwrap();
            let snap = reader.snapshot();
            match snap {
                Err(e) => assert!(
                    e.is_tamper() || matches!(e, StoreError::NoSuchVault(_)),
                    "{attack}: {e}"
                ),
                Ok(s) => assert!(!s.damaged.is_empty(), "{attack}: nothing reported"),
            }
            let _ = reader.changes_since(0, 1);
            let _ = reader.sealed_value(1, 1);
            let _ = reader.generation();
        }
    }

    #[test]
    fn a_forged_or_older_head_is_refused_by_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (path, cred, options) = fixture(dir.path());
        let store = Store::open_with(&path, &cred, &options).unwrap();
        let reader = store.reader("v").unwrap();
        let head = reader.generation().unwrap();
        assert_eq!(head, store.head());
        let db = Connection::open(&path).unwrap();
        let old_mac: Vec<u8> = db
            .query_row("SELECT mac FROM head WHERE vault_id = 1", [], |r| r.get(0))
            .unwrap();
        // A counter moved without the key: the MAC fails.
        db.execute_batch("UPDATE generation SET value = value + 1000")
            .unwrap();
        assert!(matches!(
            reader.generation(),
            Err(StoreError::Tampered { .. })
        ));
        db.execute_batch("UPDATE generation SET value = value - 1000")
            .unwrap();
        assert_eq!(reader.generation().unwrap(), head);
        // A real commit moves it on; putting back the old, authentic (counter, MAC) is a rollback.
        let mut writer = Store::open_with(&path, &cred, &options).unwrap();
        writer
            .write(&Address::parse("v:/s").unwrap(), b"newer")
            .unwrap();
        assert_eq!(reader.generation().unwrap(), head + 1);
        db.execute("UPDATE generation SET value = ?1", [head])
            .unwrap();
        db.execute("UPDATE head SET mac = ?1 WHERE vault_id = 1", [&old_mac])
            .unwrap();
        assert!(matches!(
            reader.generation(),
            Err(StoreError::Rollback { found, seen, .. }) if found == head && seen == head + 1
        ));
    }

    #[test]
    fn rows_newer_than_the_head_are_reported_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (path, cred, options) = fixture(dir.path());
        let store = Store::open_with(&path, &cred, &options).unwrap();
        let reader = store.reader("v").unwrap();
        let snap = reader.snapshot().unwrap();
        let db = Connection::open(&path).unwrap();
        db.execute_batch("UPDATE entries SET seq = seq + 100 WHERE vault_id = 1")
            .unwrap();
        let err = reader.generation().unwrap_err();
        assert!(
            err.is_tamper() && err.to_string().contains("rows newer"),
            "{err}"
        );
        assert!(reader
            .changes_since(snap.generation, snap.vault.version)
            .unwrap_err()
            .is_tamper());
        // Where only the rows are read (no head check first), they are reported, not applied.
        let tx = Connection::open(&path).unwrap();
        let (good, bad) =
            rows::changed_since(&tx, &reader.store_id, &reader.vault, 0, snap.generation).unwrap();
        assert!(good.is_empty());
        assert!(bad[0].1.to_string().contains("after the store head"));
    }
}
