//! Read limits: how many opens of each value this host has served. Local state, in a SQLite
//! file of its own in the state directory (beside the head state file), never in the store:
//! a replica counts on its own host, and a bundle or a restored store file never resets it.
//! One statement counts an open or refuses it, so mounts of the same store in several
//! processes never hand out more than the limit between them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::crypto;
use crate::error::{Result, StoreError};
use crate::reader::VaultReader;

/// The counts of one store on this host.
pub struct OpenCounts {
    path: PathBuf,
    vault_id: i64,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for OpenCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCounts")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The counts file of store `store_id` in `state_dir`.
fn counts_path(state_dir: &Path, store_id: &[u8; 16]) -> PathBuf {
    state_dir.join(format!("{}.opens", crypto::to_hex(store_id)))
}

fn make_state_dir(state_dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| StoreError::Io {
            path: state_dir.to_owned(),
            source,
        })
}

/// Opens (creating) the counts file. `carried` maps a row version whose value was not
/// rewritten (an ACL change, a move, a new limit) to the version its value was first counted
/// at, so such a change never hands out a fresh set of opens.
fn open_db(path: &Path, busy: Duration) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::from_sqlite(path, e))?;
    conn.busy_timeout(busy)
        .and_then(|()| {
            conn.execute_batch(
                "PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS opens (
                     vault_id INTEGER NOT NULL, entry_id INTEGER NOT NULL,
                     version INTEGER NOT NULL, n INTEGER NOT NULL,
                     PRIMARY KEY (vault_id, entry_id, version));
                 CREATE TABLE IF NOT EXISTS carried (
                     vault_id INTEGER NOT NULL, entry_id INTEGER NOT NULL,
                     version INTEGER NOT NULL, base INTEGER NOT NULL,
                     PRIMARY KEY (vault_id, entry_id, version));",
            )
        })
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    Ok(conn)
}

/// The version whose count version `version` of an entry uses (itself unless carried).
const BASE: &str = "COALESCE((SELECT base FROM carried WHERE vault_id = ?1 AND entry_id = ?2
     AND version = ?3), ?3)";

/// Makes version `to` of entry `entry_id` share the count of version `from` (and of whatever
/// `from` shares), before the store commits a rewrite of the row that keeps its value. Written
/// first so that no open of either version is ever counted apart; if the rewrite then fails,
/// [`uncarry`] takes it back (a crash in between leaves `to` sharing a count: it fails closed).
pub(crate) fn carry(
    state_dir: &Path,
    store_id: &[u8; 16],
    vault_id: i64,
    entry_id: i64,
    from: i64,
    to: i64,
) -> Result<()> {
    make_state_dir(state_dir)?;
    let path = counts_path(state_dir, store_id);
    let conn = open_db(&path, Duration::from_secs(5))?;
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO carried (vault_id, entry_id, version, base)
             VALUES (?1, ?2, ?4, {BASE})"
        ),
        params![vault_id, entry_id, from, to],
    )
    .map(|_| ())
    .map_err(|e| StoreError::from_sqlite(&path, e))
}

/// Takes back a [`carry`] whose rewrite did not commit. Best effort.
pub(crate) fn uncarry(
    state_dir: &Path,
    store_id: &[u8; 16],
    vault_id: i64,
    entry_id: i64,
    to: i64,
) {
    let path = counts_path(state_dir, store_id);
    if let Ok(conn) = open_db(&path, Duration::from_secs(5)) {
        let _ = conn.execute(
            "DELETE FROM carried WHERE vault_id = ?1 AND entry_id = ?2 AND version = ?3",
            params![vault_id, entry_id, to],
        );
    }
}

impl VaultReader {
    /// The read-limit counts of this reader's vault, kept in `state_dir` (created 0700).
    /// `busy` bounds how long a count waits on another process's.
    pub fn open_counts(&self, state_dir: &Path, busy: Duration) -> Result<OpenCounts> {
        make_state_dir(state_dir)?;
        let path = counts_path(state_dir, self.store_id());
        let conn = open_db(&path, busy)?;
        Ok(OpenCounts {
            path,
            vault_id: self.vault_id(),
            conn: Mutex::new(conn),
        })
    }
}

impl OpenCounts {
    /// Counts one open of version `version` of entry `id` if fewer than `max` were counted:
    /// `Some(count)` with this one included, `None` when the limit is spent.
    pub fn take(&self, id: i64, version: i64, max: u64) -> Result<Option<u64>> {
        let conn = self.conn.lock();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        conn.prepare_cached(&format!(
            "INSERT INTO opens (vault_id, entry_id, version, n) VALUES (?1, ?2, {BASE}, 1)
             ON CONFLICT (vault_id, entry_id, version) DO UPDATE SET n = n + 1 WHERE n < ?4
             RETURNING n"
        ))
        .and_then(|mut st| {
            st.query_row(params![self.vault_id, id, version, max], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
        })
        .map(|n| n.filter(|n| *n <= max).map(|n| n as u64))
        .map_err(|e| StoreError::from_sqlite(&self.path, e))
    }

    /// How many opens of version `version` of entry `id` were counted.
    pub fn used(&self, id: i64, version: i64) -> Result<u64> {
        let conn = self.conn.lock();
        conn.query_row(
            &format!(
                "SELECT n FROM opens WHERE vault_id = ?1 AND entry_id = ?2 AND version = {BASE}"
            ),
            params![self.vault_id, id, version],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map(|n| n.unwrap_or(0) as u64)
        .map_err(|e| StoreError::from_sqlite(&self.path, e))
    }
}
