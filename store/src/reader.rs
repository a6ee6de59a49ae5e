//! Read access to one vault for the FUSE driver: safe to share between threads, never waits for
//! a writer (WAL snapshots), and applies changes incrementally.

use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};

use crate::db;
use crate::error::{Result, StoreError};
use crate::rows::{self, Entry};
use crate::secret::SecretBytes;
use crate::store::{Keys, OpenVault, Store, VaultInfo};

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
pub struct VaultReader {
    keys: Keys,
    vault: OpenVault,
    pool: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for VaultReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultReader")
            .field("store", &self.keys.path)
            .field("vault", &self.vault.info.name)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A reader of vault `name` that outlives this handle (and the master key it holds only
    /// to follow changes of the vault's own row).
    pub fn reader(&self, name: &str) -> Result<VaultReader> {
        let vault = self.open_vault(name)?;
        Ok(VaultReader {
            keys: self.keys.clone(),
            vault,
            pool: Mutex::new(Vec::new()),
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
        &self.keys.path
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().pop();
        let conn = match pooled {
            Some(c) => c,
            None => db::open(&self.keys.path, READ_BUSY_TIMEOUT)?.0,
        };
        let out = f(&conn).map_err(|e| match e {
            StoreError::Sqlite(inner) => StoreError::from_sqlite(&self.keys.path, inner),
            other => other,
        });
        self.pool.lock().push(conn);
        out
    }

    /// The store's change counter: one indexed read, cheap enough for every open.
    pub fn generation(&self) -> Result<i64> {
        self.with_conn(|c| Ok(db::generation(c)?))
    }

    fn vault_row(&self, conn: &Connection, known_version: i64) -> Result<Option<VaultInfo>> {
        let row: Option<(i64, Vec<u8>)> = conn
            .prepare_cached("SELECT version, sealed FROM vaults WHERE id = ?1")?
            .query_row([self.vault.info.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (version, sealed) =
            row.ok_or_else(|| StoreError::NoSuchVault(self.vault.info.name.clone()))?;
        if version == known_version {
            return Ok(None);
        }
        let opened = self
            .keys
            .open_vault_row(self.vault.info.id, version, &sealed)?;
        Ok(Some(opened.info.clone()))
    }

    /// Reads the whole vault in one consistent snapshot.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.with_conn(|conn| {
            let tx = conn.unchecked_transaction()?;
            let generation = db::generation(&tx)?;
            let vault = self
                .vault_row(&tx, -1)?
                .expect("a version of -1 never matches");
            let (entries, damaged) = rows::changed_since(&tx, &self.keys.store_id, &self.vault, 0)?;
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
            let now = db::generation(&tx)?;
            let vault = self.vault_row(&tx, vault_version)?;
            let (upserts, damaged) =
                rows::changed_since(&tx, &self.keys.store_id, &self.vault, generation)?;
            let deleted = rows::deleted_since(&tx, &self.vault, generation)?;
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
        self.with_conn(|conn| rows::read_value(conn, &self.keys.store_id, &self.vault, id, version))
    }

    /// The current row of entry `id`, if it still exists.
    pub fn entry(&self, id: i64) -> Result<Option<Entry>> {
        self.with_conn(|conn| rows::by_id(conn, &self.keys.store_id, &self.vault, id))
    }
}
