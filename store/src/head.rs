//! The store head: an authenticated, monotonic change counter.
//!
//! Every commit bumps `generation.value` and re-MACs it: once under a key derived from the master
//! key (for processes that administer the store) and once per vault under a key derived from that
//! vault's key (for a mount daemon, which holds only its vault's key). Someone who can write the
//! file but holds no key can neither move the counter (the MAC fails) nor hide a change behind an
//! old counter without it being noticed: each process remembers the highest head it has verified
//! (a reader in memory, the CLI in a MAC'd state file), and an older one is a rollback.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::crypto;
use crate::error::{Result, StoreError};
use crate::secret::Key;

/// The `head` row that carries the master-keyed MAC (vault ids start at 1).
const MASTER_ROW: i64 = 0;

/// The MAC of head `seq` for `row` (a vault id, or [`MASTER_ROW`]).
pub(crate) fn mac(key: &Key, store_id: &[u8; 16], row: i64, seq: i64) -> [u8; 32] {
    crypto::mac(
        key,
        &[
            b"vaultfs store head v2",
            store_id,
            &row.to_le_bytes(),
            &seq.to_le_bytes(),
        ],
    )
}

/// Rewrites every head MAC for `seq`, inside the caller's write transaction. `vault_keys` are
/// the head keys of every vault that exists when the transaction commits.
pub(crate) fn seal(
    conn: &Connection,
    store_id: &[u8; 16],
    master_head_key: &Key,
    seq: i64,
    vault_keys: &[(i64, Key)],
) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM head", [])?;
    let mut insert = conn.prepare_cached("INSERT INTO head (vault_id, mac) VALUES (?1, ?2)")?;
    insert.execute(params![
        MASTER_ROW,
        &mac(master_head_key, store_id, MASTER_ROW, seq)[..]
    ])?;
    for (vault_id, key) in vault_keys {
        insert.execute(params![vault_id, &mac(key, store_id, *vault_id, seq)[..]])?;
    }
    Ok(())
}

/// Reads the head and checks its MAC for `row` under `key`. A missing MAC row for a vault means
/// the vault is gone (`Ok(None)`); anything else that does not verify is tampering.
pub(crate) fn verified(
    conn: &Connection,
    store_id: &[u8; 16],
    key: &Key,
    row: i64,
) -> Result<Option<i64>> {
    let found: Option<(i64, Option<Vec<u8>>)> = conn
        .prepare_cached(
            "SELECT g.value, h.mac FROM generation g LEFT JOIN head h ON h.vault_id = ?1
             WHERE g.id = 1",
        )?
        .query_row([row], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let tampered = || StoreError::Tampered {
        what: "the store head (its change counter)".into(),
    };
    let (seq, tag) = found.ok_or_else(tampered)?;
    let Some(tag) = tag else {
        return if row == MASTER_ROW {
            Err(tampered())
        } else {
            Ok(None)
        };
    };
    if !crypto::mac_eq(&tag, &mac(key, store_id, row, seq)) {
        return Err(tampered());
    }
    Ok(Some(seq))
}

/// The head as the master key verifies it.
pub(crate) fn verified_master(conn: &Connection, store_id: &[u8; 16], key: &Key) -> Result<i64> {
    verified(conn, store_id, key, MASTER_ROW)?.ok_or_else(|| StoreError::Tampered {
        what: "the store head (its change counter)".into(),
    })
}

/// Where this user's vaultfs keeps the highest store head it has seen, per store:
/// `$VAULTFS_STATE_DIR`, else `/var/lib/vaultfs/state` for root, else
/// `$XDG_STATE_HOME/vaultfs` (or `~/.local/state/vaultfs`).
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VAULTFS_STATE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if crate::sys::effective_uid() == 0 {
        return Some(PathBuf::from("/var/lib/vaultfs/state"));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("vaultfs"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".local/state/vaultfs"))
}

/// The state file remembering the highest head seen of one store, MAC'd under a key derived
/// from the master key. A file that does not verify counts as absent (and is rewritten): whoever
/// can write the state directory can delete the file anyway, so the MAC's job is to keep a forged
/// file from raising the floor (which would lock every process out of the store), and a file
/// left from before `key rotate` (another master key) from doing the same.
pub(crate) struct StateFile {
    path: PathBuf,
}

const STATE_MAGIC: &str = "vaultfs-head v1";

impl StateFile {
    pub(crate) fn new(dir: &Path, store_id: &[u8; 16]) -> StateFile {
        StateFile {
            path: dir.join(crypto::to_hex(store_id)),
        }
    }

    fn tag(key: &Key, store_id: &[u8; 16], seq: i64) -> String {
        crypto::to_hex(&crypto::mac(
            key,
            &[STATE_MAGIC.as_bytes(), store_id, &seq.to_le_bytes()],
        ))
    }

    /// The highest head recorded; `None` when there is no file yet, or none that verifies.
    pub(crate) fn load(&self, key: &Key, store_id: &[u8; 16]) -> Result<Option<i64>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let mut fields = text.trim_end().rsplitn(3, ' ');
        let (Some(tag), Some(seq), Some(magic)) = (fields.next(), fields.next(), fields.next())
        else {
            return Ok(None);
        };
        let Ok(seq) = seq.parse::<i64>() else {
            return Ok(None);
        };
        if magic != STATE_MAGIC
            || !crypto::mac_eq(tag.as_bytes(), Self::tag(key, store_id, seq).as_bytes())
        {
            return Ok(None);
        }
        Ok(Some(seq))
    }

    /// Records `seq` (write to a temporary file, then rename, so a crash leaves the old or the
    /// new file, never half of one). Best effort: a state directory that cannot be written
    /// weakens rollback detection for the next process but must not fail a commit that happened.
    /// Only `accept_lower` (a rollback accepted on purpose) may lower the recorded head.
    pub(crate) fn save(&self, key: &Key, store_id: &[u8; 16], seq: i64, accept_lower: bool) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        // Processes commit concurrently: never lower what another one recorded meanwhile.
        if !accept_lower && matches!(self.load(key, store_id), Ok(Some(recorded)) if recorded > seq)
        {
            return;
        }
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let line = format!("{STATE_MAGIC} {seq} {}\n", Self::tag(key, store_id, seq));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(line.as_bytes()).and_then(|()| f.sync_all()));
        if written.is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trip_and_forgery() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::random();
        let sid = [5; 16];
        let f = StateFile::new(dir.path(), &sid);
        assert_eq!(f.load(&key, &sid).unwrap(), None);
        f.save(&key, &sid, 42, false);
        f.save(&key, &sid, 41, false);
        assert_eq!(f.load(&key, &sid).unwrap(), Some(42));
        assert_eq!(f.load(&Key::random(), &sid).unwrap(), None);
        // A forged floor (raised or lowered) does not verify, so it cannot lock anyone out.
        let text = std::fs::read_to_string(&f.path).unwrap();
        std::fs::write(&f.path, text.replace(" 42 ", " 9999 ")).unwrap();
        assert_eq!(f.load(&key, &sid).unwrap(), None);
    }
}
