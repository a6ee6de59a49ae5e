//! `key rotate`: a fresh master key and fresh vault keys, every record and value re-sealed, one
//! slot left (for the credential given).
//!
//! Why: removing a key slot does not change the master key, so a removed credential plus any old
//! copy of the store (a backup holding its slot) still unwraps the master key, and with it every
//! vault key of the live store and everything written later. After a rotation nothing in the
//! live store is sealed under a key the old slots protect.

use rusqlite::{params, TransactionBehavior};

use crate::crypto;
use crate::error::{Result, StoreError};
use crate::head;
use crate::keyslot::{self, Credential, KdfParams};
use crate::recipient::{self, Payload, PublicParams, Recipient};
use crate::records::{self, now_ns, EntryMeta};
use crate::rows;
use crate::secret::Key;
use crate::store::{seal_vault_record, vault_row, Keys, OpenVault, Store, VaultRow};
use crate::value::{self, ValueId};

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotated {
    /// Vaults given a fresh key.
    pub vaults: usize,
    /// Entries re-sealed.
    pub entries: usize,
    /// The slots removed (every passphrase and key-file slot but the new one).
    pub removed_slots: Vec<i64>,
    /// Public-key slots (host keys) re-wrapped to the new keys: they need no secret.
    pub rewrapped_slots: Vec<i64>,
    /// The id of the one slot left, for `cred`.
    pub slot: i64,
    /// Audit records re-sealed under the new vault keys.
    pub audit_records: u64,
    /// Vaults whose audit log did not verify under the old key: left sealed under it (a
    /// former-key segment `audit --verify` reports), never re-sealed into a chain that checks.
    pub audit_not_resealed: Vec<String>,
}

impl Store {
    /// Replaces the master key and every vault key, re-seals every vault record, entry and value,
    /// and replaces every key slot with one for `cred` (which must unlock the store now), in one
    /// transaction. Mounts made before keep the old vault keys and fail closed (the head no
    /// longer verifies): remount them.
    pub fn rotate_keys(&mut self, cred: &Credential, kdf: KdfParams) -> Result<Rotated> {
        self.writable()?;
        let path = self.keys.path.clone();
        let sid = self.keys.store_id;
        let slots = self.key_slots()?;
        let own = self.matching_slot_id(cred)?.ok_or(StoreError::WrongKey)?;
        let label = slots
            .iter()
            .find(|s| s.id == own)
            .and_then(|s| s.label.clone());
        let new_keys = Keys::new(&path, sid, Key::random());
        // A host key's slot is re-wrapped below, not replaced.
        let slot = match cred {
            Credential::Identity(_) => None,
            _ => Some(keyslot::wrap(&sid, new_keys.master(), cred, kdf)?),
        };
        let public: Vec<(i64, Recipient, Option<Vec<i64>>)> = slots
            .iter()
            .filter_map(|s| Some((s, s.recipient.as_ref()?)))
            .map(|(s, text)| {
                let params = self.public_params(s.id)?;
                if !params.verify(&self.keys.slot_key(), &sid) {
                    return Err(StoreError::Tampered {
                        what: format!("key slot {} (its recipient or scope)", s.id),
                    });
                }
                Ok((s.id, Recipient::parse(text)?, s.scope.clone()))
            })
            .collect::<Result<_>>()?;
        let seen = self.head();
        let old_keys = &self.keys;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::from_sqlite(&path, e))?;
        let work = || -> Result<(Rotated, i64)> {
            let current = head::verified_master(&tx, &sid, old_keys.head_key())?;
            if current < seen {
                return Err(StoreError::Rollback {
                    path: path.clone(),
                    found: current,
                    seen,
                });
            }
            let seq = crate::db::bump_generation(&tx)?;
            let vault_rows: Vec<VaultRow> = tx
                .prepare("SELECT id, version, wrapped_key, sealed FROM vaults ORDER BY id")?
                .query_map([], vault_row)?
                .collect::<rusqlite::Result<_>>()?;
            let mut entries = 0;
            let mut audit_records = 0;
            let mut audit_not_resealed = Vec::new();
            let mut head_keys = Vec::new();
            let mut new_vault_keys: Vec<(i64, Key)> = Vec::new();
            for row in &vault_rows {
                let old = old_keys.open_vault_row(row)?;
                let new = OpenVault::new(old.info.clone(), Key::random());
                tx.execute(
                    "UPDATE vaults SET name_tag = ?1, wrapped_key = ?2, sealed = ?3 WHERE id = ?4",
                    params![
                        &new_keys.vault_name_tag(&new.info.name)[..],
                        new_keys.wrap_vault_key(row.id, &new.key),
                        seal_vault_record(&sid, &new.info, &new.key),
                        row.id
                    ],
                )?;
                entries += reseal_entries(&tx, &sid, &old, &new, seq)?;
                match crate::audit::reseal(&tx, sid, &old, &new)? {
                    Some(n) => audit_records += n,
                    None => audit_not_resealed.push(old.info.name.clone()),
                }
                head_keys.push((row.id, new.head_key.clone()));
                new_vault_keys.push((row.id, new.key.clone()));
            }
            let mut rewrapped = Vec::new();
            for (id, recipient, scope) in &public {
                let payload = match scope {
                    None => Payload::Master(new_keys.master().clone()),
                    Some(ids) => Payload::Vaults(
                        new_vault_keys
                            .iter()
                            .filter(|(v, _)| ids.contains(v))
                            .cloned()
                            .collect(),
                    ),
                };
                let (params_text, wrapped) =
                    recipient::wrap(&sid, &new_keys.slot_key(), recipient, &payload)?;
                tx.execute(
                    "UPDATE key_slots SET params = ?1, wrapped = ?2 WHERE id = ?3",
                    params![params_text, wrapped, id],
                )?;
                rewrapped.push(*id);
            }
            tx.execute(
                "DELETE FROM key_slots WHERE kind NOT IN (?1, ?2)",
                params![recipient::KIND_AGE, recipient::KIND_SSH],
            )?;
            let slot_id = match &slot {
                Some(slot) => {
                    tx.execute(
                        "INSERT INTO key_slots (kind, params, wrapped, created_ns, label)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![slot.kind, slot.params, slot.wrapped, now_ns(), label],
                    )?;
                    tx.last_insert_rowid()
                }
                None => own,
            };
            head::seal(&tx, &sid, new_keys.head_key(), seq, &head_keys)?;
            Ok((
                Rotated {
                    vaults: vault_rows.len(),
                    entries,
                    removed_slots: slots
                        .iter()
                        .filter(|s| s.recipient.is_none())
                        .map(|s| s.id)
                        .collect(),
                    rewrapped_slots: rewrapped,
                    slot: slot_id,
                    audit_records,
                    audit_not_resealed,
                },
                seq,
            ))
        };
        let (rotated, seq) = work().map_err(|e| StoreError::from_sqlite_in(&path, e))?;
        tx.commit().map_err(|e| StoreError::from_sqlite(&path, e))?;
        self.signal_change();
        self.replace_keys(new_keys, seq);
        Ok(rotated)
    }
}

impl Store {
    /// The stored parameters of public-key slot `id`.
    fn public_params(&self, id: i64) -> Result<PublicParams> {
        let text: String =
            self.conn
                .query_row("SELECT params FROM key_slots WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?;
        recipient::params(&text).ok_or_else(|| StoreError::Tampered {
            what: format!("key slot {id} (its parameters)"),
        })
    }
}

/// Re-seals every entry of `old` under `new` (same ids and versions, fresh name tags).
fn reseal_entries(
    tx: &rusqlite::Transaction<'_>,
    sid: &[u8; 16],
    old: &OpenVault,
    new: &OpenVault,
    seq: i64,
) -> Result<usize> {
    type Row = (i64, i64, i64, Vec<u8>);
    let rows_: Vec<Row> = tx
        .prepare("SELECT id, version, parent_id, meta FROM entries WHERE vault_id = ?1")?
        .query_map([old.info.id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (id, version, parent, sealed_meta) in &rows_ {
        let what = || format!("entry #{id} of vault {:?}", old.info.name);
        let meta: EntryMeta = records::open_json(
            &old.key,
            &rows::meta_aad(sid, old, *id, *version),
            sealed_meta,
            what,
        )?;
        if meta.parent != *parent {
            return Err(StoreError::Tampered { what: what() });
        }
        let new_value = match rows::sealed_value(tx, sid, old, *id, *version)? {
            Some(v) => {
                let plain = v.read(0, usize::try_from(v.len()).unwrap_or(usize::MAX))?;
                let vid = ValueId {
                    store_id: *sid,
                    vault_id: new.info.id,
                    id: *id,
                    version: *version,
                };
                Some(value::seal(&new.key, &vid, plain.expose()))
            }
            None => None,
        };
        let new_meta =
            records::seal_json(&new.key, &rows::meta_aad(sid, new, *id, *version), &meta);
        let tag = crypto::name_tag(&new.tag_key, meta.parent, &meta.name);
        tx.execute(
            "UPDATE entries SET name_tag = ?1, meta = ?2, value = ?3, seq = ?4 WHERE id = ?5",
            params![&tag[..], new_meta, new_value, seq, id],
        )?;
    }
    Ok(rows_.len())
}
