//! The SQLite file: connection settings, schema, and the change counter.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::{Result, StoreError};

/// The on-disk format this build reads and writes. Format 1 (round 1: whole-value AEAD, vault
/// keys inside master-sealed records, no head) is only read by `migrate`.
pub(crate) const FORMAT: i64 = 2;

/// How long a writer waits for another writer before giving up with [`StoreError::Busy`].
/// Readers never wait for writers (WAL); this bounds writer-writer contention only.
pub(crate) const WRITE_BUSY_TIMEOUT: Duration = Duration::from_secs(15);

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
-- The store head: one row; every committed change bumps it, so readers can tell cheaply whether
-- to refresh. Authenticated by the MACs in `head`.
CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT INTO generation VALUES (1, 0);
-- MACs of the head: vault_id 0 under a master-derived key, one per vault under a key derived
-- from that vault's key (so a mount daemon holding one vault key can verify it).
CREATE TABLE head (vault_id INTEGER PRIMARY KEY, mac BLOB NOT NULL);
-- The master key wrapped by a key-encryption key from a passphrase or a key file; `label` is
-- the user's name for the slot (clear text, not secret).
CREATE TABLE key_slots (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  params TEXT NOT NULL,
  wrapped BLOB NOT NULL,
  created_ns INTEGER NOT NULL,
  label TEXT
);
-- name_tag: keyed hash of the name, so lookups use an index without the name being readable.
-- wrapped_key: the vault key sealed under the master key (bound to store and vault id);
-- sealed: the vault's record (name, defaults) sealed under the vault key.
CREATE TABLE vaults (
  id INTEGER PRIMARY KEY,
  version INTEGER NOT NULL,
  name_tag BLOB NOT NULL UNIQUE,
  wrapped_key BLOB NOT NULL,
  sealed BLOB NOT NULL
);
-- parent_id is also inside the sealed meta; the clear copy only speeds up listing.
CREATE TABLE entries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  vault_id INTEGER NOT NULL,
  parent_id INTEGER NOT NULL,
  name_tag BLOB NOT NULL,
  version INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  meta BLOB NOT NULL,
  value BLOB,
  UNIQUE (vault_id, name_tag)
);
CREATE INDEX entries_by_parent ON entries (vault_id, parent_id);
CREATE INDEX entries_by_seq ON entries (vault_id, seq);
-- Tombstones, so a mounted reader can apply deletions incrementally.
CREATE TABLE deleted (vault_id INTEGER NOT NULL, entry_id INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX deleted_by_seq ON deleted (vault_id, seq);
";

/// Applies the settings every connection needs. `secure_delete` overwrites freed pages and
/// `temp_store=MEMORY` keeps sorter and temp tables off disk; everything stored is ciphertext
/// anyway, so these are defence in depth.
fn configure(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy)?;
    conn.execute_batch(
        "PRAGMA secure_delete = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Creates a new, empty store file with mode 0600 in a directory it creates with mode 0700.
pub(crate) fn create(path: &Path) -> Result<Connection> {
    if path.exists() {
        return Err(StoreError::AlreadyInitialized(path.to_owned()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
        }
    }
    // Create the file ourselves so it is 0600 from its first byte; SQLite gives the -wal and
    // -shm files the same mode.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    StoreError::AlreadyInitialized(path.to_owned())
                }
                _ => StoreError::Io {
                    path: path.to_owned(),
                    source,
                },
            })?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::from_sqlite(path, e))?;
    configure(&conn, WRITE_BUSY_TIMEOUT).map_err(|e| StoreError::from_sqlite(path, e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    Ok(conn)
}

/// Writes the schema and the store's identity.
pub(crate) fn initialize(conn: &mut Connection, path: &Path, store_id: &[u8; 16]) -> Result<()> {
    let tx = conn
        .transaction()
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    tx.execute_batch(SCHEMA)
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    tx.execute("INSERT INTO meta VALUES ('format', ?1)", [FORMAT])?;
    tx.execute("INSERT INTO meta VALUES ('store_id', ?1)", [&store_id[..]])?;
    tx.commit().map_err(|e| StoreError::from_sqlite(path, e))?;
    Ok(())
}

/// Opens an existing store of the current format, returning its id. An older format is
/// [`StoreError::NeedsMigration`], a newer one [`StoreError::UnsupportedFormat`].
pub(crate) fn open(path: &Path, busy: Duration) -> Result<(Connection, [u8; 16])> {
    let (conn, id, format) = open_any_format(path, busy)?;
    match format {
        FORMAT => Ok((conn, id)),
        found if (1..FORMAT).contains(&found) => Err(StoreError::NeedsMigration {
            path: path.to_owned(),
            found,
            supported: FORMAT,
        }),
        found => Err(StoreError::UnsupportedFormat {
            path: path.to_owned(),
            found,
            supported: FORMAT,
        }),
    }
}

/// Opens an existing store of any format, returning its id and format (for `migrate`).
pub(crate) fn open_any_format(path: &Path, busy: Duration) -> Result<(Connection, [u8; 16], i64)> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(StoreError::NotAStore(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Missing(path.to_owned()))
        }
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            })
        }
    }
    let conn = match open_read_write(path, busy) {
        Ok(conn) => conn,
        // A store on read-only media (a mounted backup, a read-only bind): SQLite cannot make
        // the WAL index there, but nothing can change the file either, so it may be read as
        // immutable. Writes then fail with "read-only".
        // Asked of the directory, never by opening the store file: see `sys`.
        Err(_) if on_read_only_filesystem(path) => open_immutable(path, busy)?,
        Err(e) => return Err(e),
    };
    let (id, format) = store_identity(&conn, path)?;
    Ok((conn, id, format))
}

fn open_read_write(path: &Path, busy: Duration) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::from_sqlite(path, e))?;
    configure(&conn, busy).map_err(|e| StoreError::from_sqlite(path, e))?;
    // Reading the schema is what first touches the WAL index: fail here, not later.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| StoreError::from_sqlite(path, e))?;
    Ok(conn)
}

fn open_immutable(path: &Path, busy: Duration) -> Result<Connection> {
    let mut uri = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' => uri.push_str(&format!("%{b:02X}")),
            _ => uri.push(*b as char),
        }
    }
    uri.push_str("?immutable=1");
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::from_sqlite(path, e))?;
    conn.busy_timeout(busy)
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    Ok(conn)
}

/// Whether `path` lives on a filesystem mounted read-only. Never opens `path` itself: this runs
/// in processes that have the store open, and closing any descriptor of the file would drop
/// SQLite's POSIX locks on it (then a writer may delete the WAL under this process).
fn on_read_only_filesystem(path: &Path) -> bool {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    crate::sys::read_only_filesystem(dir)
}

fn store_identity(conn: &Connection, path: &Path) -> Result<([u8; 16], i64)> {
    let not_a_store = |e: rusqlite::Error| match StoreError::from_sqlite(path, e) {
        StoreError::Sqlite(_) => StoreError::NotAStore(path.to_owned()),
        other => other,
    };
    let has_meta: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(not_a_store)?;
    if has_meta.is_none() {
        return Err(StoreError::NotAStore(path.to_owned()));
    }
    let format: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(not_a_store)?;
    let format = format.ok_or_else(|| StoreError::NotAStore(path.to_owned()))?;
    let id: Vec<u8> = conn
        .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
            r.get(0)
        })
        .map_err(not_a_store)?;
    let id = id
        .try_into()
        .map_err(|_| StoreError::NotAStore(path.to_owned()))?;
    Ok((id, format))
}

/// Bumps the change counter inside the caller's write transaction and returns the new value.
pub(crate) fn bump_generation(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "UPDATE generation SET value = value + 1 WHERE id = 1 RETURNING value",
        [],
        |r| r.get(0),
    )
}
