//! Upgrading a store made by an older vaultfs, in one transaction: all of it or nothing.
//!
//! Format 1 (round 1) sealed each vault's key inside its master-keyed record, each value as one
//! AEAD, and had no authenticated head. Migration opens every format-1 row with the format-1
//! associated data, re-seals it as format 2 under the same ids and versions, and MACs the head.
//! A row that fails authentication aborts it, naming the row; nothing is half-migrated.

use std::path::Path;

use rusqlite::{params, TransactionBehavior};
use serde::Deserialize;
use zeroize::Zeroize;

use crate::acl::VaultAcl;
use crate::crypto;
use crate::db;
use crate::error::{Result, StoreError};
use crate::head;
use crate::keyslot::Credential;
use crate::records::{self, EntryMeta, BASE_RECORD_VERSION};
use crate::rows;
use crate::secret::Key;
use crate::store::{seal_vault_record, unlock, Keys, OpenVault, VaultInfo};
use crate::value::{self, ValueId};

/// What [`migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The format found.
    pub from: i64,
    /// The format now.
    pub to: i64,
    /// Vaults re-sealed.
    pub vaults: usize,
    /// Entries (directories and secrets) re-sealed.
    pub entries: usize,
}

/// A format-1 vault record: the vault key lived inside it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultRecordV1 {
    #[allow(dead_code)]
    v: u32,
    name: String,
    key: String,
    acl: VaultAcl,
    created_ns: i64,
}

impl Drop for VaultRecordV1 {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// Upgrades the store at `path` to the current format. A store already at it is left as is
/// (`from == to`); a format this build does not know is refused.
pub fn migrate(path: &Path, cred: &Credential) -> Result<Migrated> {
    let (mut conn, store_id, format) = db::open_any_format(path, db::WRITE_BUSY_TIMEOUT)?;
    if format == db::FORMAT {
        return Ok(Migrated {
            from: format,
            to: format,
            vaults: 0,
            entries: 0,
        });
    }
    if format != 1 {
        return Err(StoreError::UnsupportedFormat {
            path: path.to_owned(),
            found: format,
            supported: db::FORMAT,
        });
    }
    // Format 1 had no public-key slots, so only a whole-store key can migrate.
    let crate::recipient::Payload::Master(master) = unlock(&conn, path, &store_id, cred)? else {
        return Err(StoreError::WrongKey);
    };
    let keys = Keys::new(path, store_id, master);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    let done = upgrade_v1(&tx, &keys).map_err(|e| StoreError::from_sqlite_in(path, e))?;
    tx.commit().map_err(|e| StoreError::from_sqlite(path, e))?;
    let _ = crate::signal::bump(path);
    Ok(done)
}

fn upgrade_v1(tx: &rusqlite::Transaction<'_>, keys: &Keys) -> Result<Migrated> {
    let sid = keys.store_id;
    tx.execute_batch(
        "ALTER TABLE key_slots ADD COLUMN label TEXT;
         ALTER TABLE vaults ADD COLUMN wrapped_key BLOB NOT NULL DEFAULT x'';
         CREATE TABLE head (vault_id INTEGER PRIMARY KEY, mac BLOB NOT NULL);",
    )?;
    let vault_rows: Vec<(i64, i64, Vec<u8>)> = tx
        .prepare("SELECT id, version, sealed FROM vaults ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut entries = 0;
    let mut head_keys = Vec::new();
    for (vid, vversion, sealed) in &vault_rows {
        let what = || format!("vault row #{vid}");
        let plain = crypto::open(
            keys.master(),
            &crypto::aad("vaultfs vault v1", &sid, &[*vid, *vversion]),
            sealed,
        )
        .ok_or_else(|| StoreError::Tampered { what: what() })?;
        let record: VaultRecordV1 = records::decode(plain.expose(), 1, what)?;
        let key_bytes = zeroize::Zeroizing::new(
            crypto::from_hex(&record.key).ok_or_else(|| StoreError::Tampered { what: what() })?,
        );
        let key =
            Key::from_slice(&key_bytes).ok_or_else(|| StoreError::Tampered { what: what() })?;
        let info = VaultInfo {
            id: *vid,
            name: record.name.clone(),
            acl: record.acl.clone(),
            created_ns: record.created_ns,
            version: *vversion,
        };
        tx.execute(
            "UPDATE vaults SET wrapped_key = ?1, sealed = ?2 WHERE id = ?3",
            params![
                keys.wrap_vault_key(*vid, &key),
                seal_vault_record(&sid, &info, &key),
                vid
            ],
        )?;
        let vault = OpenVault::new(info, key);
        entries += upgrade_entries_v1(tx, &sid, &vault)?;
        head_keys.push((*vid, vault.head_key.clone()));
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'format'",
        [db::FORMAT],
    )?;
    let seq = db::bump_generation(tx)?;
    head::seal(tx, &sid, keys.head_key(), seq, &head_keys)?;
    Ok(Migrated {
        from: 1,
        to: db::FORMAT,
        vaults: vault_rows.len(),
        entries,
    })
}

fn upgrade_entries_v1(
    tx: &rusqlite::Transaction<'_>,
    sid: &[u8; 16],
    vault: &OpenVault,
) -> Result<usize> {
    let vid = vault.info.id;
    type Row = (i64, i64, Vec<u8>, Option<Vec<u8>>);
    let rows: Vec<Row> = tx
        .prepare("SELECT id, version, meta, value FROM entries WHERE vault_id = ?1 ORDER BY id")?
        .query_map([vid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, version, meta, value) in &rows {
        let what = || format!("entry #{id} of vault {:?}", vault.info.name);
        let plain = crypto::open(
            &vault.key,
            &crypto::aad("vaultfs entry meta v1", sid, &[vid, *id, *version]),
            meta,
        )
        .ok_or_else(|| StoreError::Tampered { what: what() })?;
        let mut record: EntryMeta = records::decode(plain.expose(), 1, what)?;
        record.v = BASE_RECORD_VERSION;
        let new_meta = records::seal_json(
            &vault.key,
            &rows::meta_aad(sid, vault, *id, *version),
            &record,
        );
        let new_value = match value {
            None => None,
            Some(sealed) => {
                let plain = crypto::open(
                    &vault.key,
                    &crypto::aad("vaultfs entry value v1", sid, &[vid, *id, *version]),
                    sealed,
                )
                .ok_or_else(|| StoreError::Tampered { what: what() })?;
                if plain.len() as u64 != record.size {
                    return Err(StoreError::Tampered { what: what() });
                }
                let value_id = ValueId {
                    store_id: *sid,
                    vault_id: vid,
                    id: *id,
                    version: *version,
                };
                Some(value::seal(&vault.key, &value_id, plain.expose()))
            }
        };
        tx.execute(
            "UPDATE entries SET meta = ?1, value = ?2 WHERE id = ?3",
            params![new_meta, new_value, id],
        )?;
    }
    Ok(rows.len())
}
