//! Response wrapping: `wrap` hands out a random one-time token for one version of one secret;
//! `unwrap` redeems it once. The token is a random handle, not key material: redeeming it still
//! takes the store's credentials, and what it adds is "once", "before this time" and "this
//! exact value". Tokens are local state (a SQLite file in the state directory beside the read
//! counts), kept only as a hash, so the table holds nothing a reader of it could redeem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::address::{Address, VaultPath};
use crate::crypto;
use crate::error::{Result, StoreError};
use crate::records::now_ns;
use crate::secret::SecretBytes;
use crate::store::Store;

/// What a token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wrapped {
    /// The secret's address when it was wrapped.
    pub address: Address,
    /// Its entry id and version: a newer value is not what was handed over.
    pub id: i64,
    /// The wrapped version.
    pub version: i64,
    /// When the token stops working, ns since the epoch.
    pub expires_ns: i64,
}

/// Why a token was not redeemed.
#[derive(Debug, thiserror::Error)]
pub enum UnwrapError {
    /// No such token (mistyped, or made on another host or for another store).
    #[error("unknown wrap token")]
    Unknown,
    /// Redeemed before: a second unwrap is refused (and worth an alarm).
    #[error("this wrap token for {0} was already unwrapped")]
    Used(Address),
    /// Past its time.
    #[error("this wrap token for {0} expired")]
    Expired(Address),
    /// The secret was rewritten or removed since it was wrapped.
    #[error("{0} changed since it was wrapped; the wrapped value is gone")]
    Changed(Address),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const PREFIX: &str = "vaultfs-wrap-";

fn table(state_dir: &Path, store_id: &[u8; 16]) -> Result<(Connection, PathBuf)> {
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::Io {
                path: state_dir.to_owned(),
                source,
            })?;
    }
    let path = state_dir.join(format!("{}.wraps", crypto::to_hex(store_id)));
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| {
        c.busy_timeout(Duration::from_secs(5))?;
        c.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;
             CREATE TABLE IF NOT EXISTS wraps (
                 hash TEXT PRIMARY KEY, vault TEXT NOT NULL, path TEXT NOT NULL,
                 entry_id INTEGER NOT NULL, version INTEGER NOT NULL,
                 expires_ns INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);",
        )?;
        Ok(c)
    })
    .map_err(|e| StoreError::from_sqlite(&path, e))?;
    Ok((conn, path))
}

fn hash(token: &str) -> String {
    crypto::to_hex(blake3::hash(token.trim().as_bytes()).as_bytes())
}

impl Store {
    /// Makes a one-time token for the current version of the secret at `addr`, valid for
    /// `ttl`, recorded in `state_dir`.
    pub fn wrap(
        &self,
        addr: &Address,
        ttl: Duration,
        state_dir: &Path,
    ) -> Result<(String, Wrapped)> {
        let listing = self
            .stat(addr)?
            .ok_or_else(|| StoreError::NotFound(addr.to_string()))?;
        if listing.entry.kind != crate::EntryKind::File {
            return Err(StoreError::InvalidOperation(format!(
                "{addr}: only a secret can be wrapped"
            )));
        }
        let wrapped = Wrapped {
            address: addr.clone(),
            id: listing.entry.id,
            version: listing.entry.version,
            expires_ns: now_ns().saturating_add(ttl.as_nanos().min(i64::MAX as u128) as i64),
        };
        let token = format!("{PREFIX}{}", crypto::to_hex(&crypto::random_array::<24>()));
        let (conn, path) = table(state_dir, &self.keys.store_id)?;
        conn.execute(
            "INSERT INTO wraps (hash, vault, path, entry_id, version, expires_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                hash(&token),
                addr.vault,
                addr.path.to_string(),
                wrapped.id,
                wrapped.version,
                wrapped.expires_ns
            ],
        )
        .map_err(|e| StoreError::from_sqlite(&path, e))?;
        Ok((token, wrapped))
    }

    /// Redeems `token` once: the value it was made for. The token is spent before the value is
    /// read, so a failure after that still leaves it spent (never twice).
    pub fn unwrap_token(
        &self,
        token: &str,
        state_dir: &Path,
    ) -> std::result::Result<(Wrapped, SecretBytes), UnwrapError> {
        if !token.trim().starts_with(PREFIX) {
            return Err(UnwrapError::Unknown);
        }
        let (conn, path) = table(state_dir, &self.keys.store_id)?;
        let row = conn
            .query_row(
                "UPDATE wraps SET used = used + 1 WHERE hash = ?1
                 RETURNING vault, path, entry_id, version, expires_ns, used",
                [hash(token)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| StoreError::from_sqlite(&path, e))?;
        let Some((vault, vpath, id, version, expires_ns, used)) = row else {
            return Err(UnwrapError::Unknown);
        };
        let address = Address {
            vault,
            path: VaultPath::parse(&vpath, &vpath)?,
        };
        let wrapped = Wrapped {
            address: address.clone(),
            id,
            version,
            expires_ns,
        };
        if used > 1 {
            return Err(UnwrapError::Used(address));
        }
        if expires_ns <= now_ns() {
            return Err(UnwrapError::Expired(address));
        }
        let value = self
            .reader(&address.vault)?
            .read_value(id, version)?
            .ok_or(UnwrapError::Changed(address))?;
        Ok((wrapped, value))
    }
}
