//! Bundles: the sealed rows of some vaults, and the host-key slots that open them, as one text
//! file that is safe to commit. `bundle apply` makes a host's store a replica of the source
//! (same store id, so every sealed row verifies unchanged).
//!
//! # Format
//! One record per line, fields separated by one space, binary fields in base64; lines in a
//! fixed order (by kind, then by ids), so exporting an unchanged store gives the same bytes and
//! changing one secret changes its `entry` line plus the `head`, `mac` and `check` lines:
//!
//! ```text
//! vaultfs-bundle 1 STORE_ID_HEX
//! head GENERATION
//! vaults VAULT_ID...                   (the vaults the bundle holds)
//! mac VAULT_ID MAC_HEX                 (the store head's MACs; vault id 0 is the master's)
//! slot ID KIND CREATED_NS LABEL PARAMS WRAPPED
//! vault ID VERSION NAME_TAG WRAPPED_KEY SEALED
//! entry VAULT_ID ID VERSION PARENT SEQ NAME_TAG META VALUE
//! check VAULT_ID MAC_HEX
//! ```
//!
//! # What protects it
//! Every `vault` and `entry` line is AEAD-sealed as in the store; `mac` lines are the store
//! head's own MACs. A `check` line per vault MACs the header, the head, the `vaults` line,
//! every `mac` and `slot` line and every line of
//! that vault under a key derived from the vault key, so a host notices a removed line (rows
//! dropped to hide a rotation), a swapped slot, or a truncated file. Applying verifies every
//! line it uses first and changes nothing when one fails.

use std::path::Path;

use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::crypto;
use crate::db;
use crate::error::{Result, StoreError};
use crate::head::{self, StateFile};
use crate::keyslot::{self, Credential};
use crate::recipient::{self, Payload};
use crate::rows;
use crate::secret::Key;
use crate::store::{Keys, OpenVault, Store, VaultRow};
use crate::value::{SealedValue, ValueId};

const MAGIC: &str = "vaultfs-bundle";
const VERSION: &str = "1";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Whether the store is a replica made by `bundle apply` (then writes go to the source).
pub(crate) fn is_replica(conn: &Connection) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM meta WHERE key = 'replica'", [], |_| Ok(()))
        .optional()?
        .is_some())
}

/// One parsed `slot` line.
#[derive(Clone, Debug)]
struct SlotLine {
    line: usize,
    id: i64,
    kind: String,
    created_ns: i64,
    label: Option<String>,
    params: String,
    wrapped: Vec<u8>,
}

#[derive(Clone, Debug)]
struct VaultLine {
    line: usize,
    row: VaultRow,
    name_tag: Vec<u8>,
}

#[derive(Clone, Debug)]
struct EntryLine {
    line: usize,
    vault_id: i64,
    id: i64,
    version: i64,
    parent: i64,
    seq: i64,
    name_tag: Vec<u8>,
    meta: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// A parsed bundle. Parsing checks only the syntax; [`Bundle::apply`] verifies.
#[derive(Debug)]
pub struct Bundle {
    file: String,
    store_id: [u8; 16],
    generation: i64,
    /// The `vaults` line: its number and the vault ids the bundle holds.
    listed: Option<(usize, Vec<i64>)>,
    lines: Vec<String>,
    macs: Vec<(usize, i64, Vec<u8>)>,
    slots: Vec<SlotLine>,
    vaults: Vec<VaultLine>,
    entries: Vec<EntryLine>,
    checks: Vec<(usize, i64, Vec<u8>)>,
}

/// What a key can see of a bundle (`bundle show`).
#[derive(Clone, Debug)]
pub struct Shown {
    /// The store the bundle was exported from.
    pub store_id: String,
    /// Its head when exported.
    pub generation: i64,
    /// Every vault in the bundle: id, name (when the key opens it), entry count.
    pub vaults: Vec<(i64, Option<String>, usize)>,
    /// Every slot: id, kind, label, fingerprint, scope, whether the key opens it.
    pub slots: Vec<ShownSlot>,
}

/// A slot as `bundle show` lists it.
#[derive(Clone, Debug)]
pub struct ShownSlot {
    /// The slot's id in the source store.
    pub id: i64,
    /// `age` or `ssh-ed25519`.
    pub kind: String,
    /// Its label.
    pub label: Option<String>,
    /// The recipient's fingerprint.
    pub fingerprint: String,
    /// Vault ids it opens (`None`: all).
    pub scope: Option<Vec<i64>>,
    /// Whether the key given opens it.
    pub opens: bool,
}

/// What `bundle apply` did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The head before (`None` for a new store).
    pub previous: Option<i64>,
    /// The head now.
    pub generation: i64,
    /// Names of the vaults applied.
    pub vaults: Vec<String>,
    /// Entries written or replaced.
    pub changed: usize,
    /// Entries removed.
    pub removed: usize,
    /// Whether the bundle was already applied (nothing changed).
    pub unchanged: bool,
}

/// How a bundle is applied.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Apply a bundle whose head is older than the host's.
    pub allow_rollback: bool,
    /// Where the highest head seen is kept (as [`crate::OpenOptions::state_dir`]).
    pub state_dir: Option<std::path::PathBuf>,
}

impl Bundle {
    fn foreign(&self, path: &Path, id: &[u8; 16]) -> StoreError {
        self.bad(
            1,
            format!(
                "it is from store {}, but {} is store {} (a foreign bundle)",
                crypto::to_hex(&self.store_id),
                path.display(),
                crypto::to_hex(id)
            ),
        )
    }

    fn bad(&self, line: usize, reason: impl Into<String>) -> StoreError {
        bad(&self.file, line, reason)
    }

    /// Parses bundle text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Bundle> {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let err = |line: usize, reason: &str| bad(file, line, reason);
        let header = lines.first().ok_or_else(|| err(1, "empty file"))?;
        let h: Vec<&str> = header.split(' ').collect();
        if h.len() != 3 || h[0] != MAGIC {
            return Err(err(1, "not a vaultfs bundle"));
        }
        if h[1] != VERSION {
            return Err(err(1, "bundle version this vaultfs does not understand"));
        }
        let store_id: [u8; 16] = crypto::from_hex(h[2])
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| err(1, "bad store id"))?;
        let mut b = Bundle {
            file: file.to_owned(),
            store_id,
            generation: -1,
            listed: None,
            lines: lines.clone(),
            macs: vec![],
            slots: vec![],
            vaults: vec![],
            entries: vec![],
            checks: vec![],
        };
        let mut last_rank = 0;
        for (i, text) in lines.iter().enumerate().skip(1) {
            let n = i + 1;
            let f: Vec<&str> = text.split(' ').collect();
            let int = |k: usize| -> Result<i64> {
                f.get(k)
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| err(n, "bad number"))
            };
            let bin = |k: usize| -> Result<Vec<u8>> {
                f.get(k)
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .ok_or_else(|| err(n, "bad base64 field"))
            };
            let hex = |k: usize| -> Result<Vec<u8>> {
                f.get(k)
                    .and_then(|s| crypto::from_hex(s))
                    .ok_or_else(|| err(n, "bad hex field"))
            };
            let (rank, want) = match f[0] {
                "head" => (1, 2),
                "vaults" => (2, f.len()),
                "mac" => (3, 3),
                "slot" => (4, 7),
                "vault" => (5, 6),
                "entry" => (6, 9),
                "check" => (7, 3),
                _ => return Err(err(n, "unknown line kind")),
            };
            if f.len() != want {
                return Err(err(n, "wrong number of fields"));
            }
            if rank < last_rank || (rank <= 2 && last_rank == rank) {
                return Err(err(n, "line out of order"));
            }
            last_rank = rank;
            match f[0] {
                "head" => b.generation = int(1)?,
                "vaults" => {
                    b.listed = Some((n, (1..f.len()).map(int).collect::<Result<Vec<i64>>>()?))
                }
                "mac" => b.macs.push((n, int(1)?, hex(2)?)),
                "slot" => b.slots.push(SlotLine {
                    line: n,
                    id: int(1)?,
                    kind: f[2].to_owned(),
                    created_ns: int(3)?,
                    label: match f[4] {
                        "-" => None,
                        _ => Some(String::from_utf8(bin(4)?).map_err(|_| err(n, "bad label"))?),
                    },
                    params: String::from_utf8(bin(5)?).map_err(|_| err(n, "bad params"))?,
                    wrapped: bin(6)?,
                }),
                "vault" => b.vaults.push(VaultLine {
                    line: n,
                    row: VaultRow {
                        id: int(1)?,
                        version: int(2)?,
                        wrapped_key: bin(4)?,
                        sealed: bin(5)?,
                    },
                    name_tag: bin(3)?,
                }),
                "entry" => b.entries.push(EntryLine {
                    line: n,
                    vault_id: int(1)?,
                    id: int(2)?,
                    version: int(3)?,
                    parent: int(4)?,
                    seq: int(5)?,
                    name_tag: bin(6)?,
                    meta: bin(7)?,
                    value: match f[8] {
                        "-" => None,
                        _ => Some(bin(8)?),
                    },
                }),
                _ => b.checks.push((n, int(1)?, hex(2)?)),
            }
        }
        if b.generation < 0 {
            return Err(err(lines.len().max(1), "no head line (truncated?)"));
        }
        if b.listed.is_none() {
            return Err(err(lines.len().max(1), "no vaults line (truncated?)"));
        }
        Ok(b)
    }

    /// The store head the bundle carries.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// Opens the store at `path` for writing, refusing one with another store id, or creates
    /// it (empty, with this bundle's store id) when missing; also says which it did.
    fn open_or_create(&self, path: &Path) -> Result<(rusqlite::Connection, bool)> {
        match std::fs::metadata(path) {
            Ok(_) => {
                let (conn, id) = db::open(path, db::WRITE_BUSY_TIMEOUT)?;
                if id != self.store_id {
                    return Err(self.foreign(path, &id));
                }
                Ok((conn, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut conn = db::create(path)?;
                db::initialize(&mut conn, path, &self.store_id)?;
                Ok((conn, true))
            }
            Err(source) => Err(StoreError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Makes the store at `path` a writable copy of this bundle (normally an
    /// [`Store::export_mirror`] of a store kept elsewhere), in one transaction; creates it when
    /// missing. Every slot, vault, entry and head MAC is replaced by the bundle's; local tables
    /// (counts, wraps, audit) are left alone, and removed entries get tombstones.
    ///
    /// Nothing is verified here: the copy is a cache that the caller then opens with its key
    /// like any store, which checks the head and every row it reads, as for a local file.
    /// An existing replica, or a store with another id, is refused.
    pub fn mirror(&self, path: &Path) -> Result<()> {
        let (mut conn, created) = self.open_or_create(path)?;
        if !created && is_replica(&conn)? {
            return Err(StoreError::InvalidOperation(format!(
                "{} is a host replica, not a copy of the store",
                path.display()
            )));
        }
        let sqlite = |e| StoreError::from_sqlite(path, e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        let work = || -> rusqlite::Result<()> {
            tx.execute("DELETE FROM key_slots", [])?;
            let mut slot = tx.prepare(
                "INSERT INTO key_slots (id, kind, params, wrapped, created_ns, label)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for s in &self.slots {
                slot.execute(params![
                    s.id,
                    s.kind,
                    s.params,
                    s.wrapped,
                    s.created_ns,
                    s.label
                ])?;
            }
            drop(slot);
            tx.execute("DELETE FROM vaults", [])?;
            let mut vault = tx.prepare(
                "INSERT INTO vaults (id, version, name_tag, wrapped_key, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for v in &self.vaults {
                vault.execute(params![
                    v.row.id,
                    v.row.version,
                    v.name_tag,
                    v.row.wrapped_key,
                    v.row.sealed
                ])?;
            }
            drop(vault);
            let existing: std::collections::HashMap<i64, (i64, i64, i64)> = tx
                .prepare("SELECT id, vault_id, version, seq FROM entries")?
                .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?
                .collect::<rusqlite::Result<_>>()?;
            let wanted: std::collections::HashMap<i64, &EntryLine> =
                self.entries.iter().map(|e| (e.id, e)).collect();
            {
                let mut del = tx.prepare("DELETE FROM entries WHERE id = ?1")?;
                let mut tomb = tx
                    .prepare("INSERT INTO deleted (vault_id, entry_id, seq) VALUES (?1, ?2, ?3)")?;
                for (id, (vault_id, _, _)) in &existing {
                    if wanted.get(id).is_none_or(|e| e.vault_id != *vault_id) {
                        del.execute([id])?;
                        tomb.execute(params![vault_id, id, self.generation])?;
                    }
                }
            }
            let mut up = tx.prepare(
                "INSERT OR REPLACE INTO entries
                 (id, vault_id, parent_id, name_tag, version, seq, meta, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in wanted.values() {
                if existing.get(&e.id) == Some(&(e.vault_id, e.version, e.seq)) {
                    continue;
                }
                up.execute(params![
                    e.id, e.vault_id, e.parent, e.name_tag, e.version, e.seq, e.meta, e.value
                ])?;
            }
            drop(up);
            tx.execute(
                "UPDATE generation SET value = ?1 WHERE id = 1",
                [self.generation],
            )?;
            tx.execute("DELETE FROM head", [])?;
            for (_, vid, mac) in &self.macs {
                tx.execute(
                    "INSERT INTO head (vault_id, mac) VALUES (?1, ?2)",
                    params![vid, mac],
                )?;
            }
            Ok(())
        };
        work().map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        Ok(())
    }

    /// The lines a vault's `check` MAC covers: the header, the head, the vault list, the head's
    /// MACs, every slot, and the
    /// vault's own `vault` and `entry` lines, in file order.
    fn check_mac(&self, vault_key: &Key, vault_id: i64) -> [u8; 32] {
        covered_mac(&self.lines, vault_key, &self.store_id, vault_id)
    }

    /// Finds the slot `cred` opens. A slot naming the key's own recipient that does not open
    /// is an altered line (exit 3); no slot for the key at all is [`StoreError::WrongKey`].
    fn unlock(&self, cred: &Credential) -> Result<(&SlotLine, Payload)> {
        let own = match cred {
            Credential::Identity(id) => id.recipients(),
            _ => vec![],
        };
        for slot in &self.slots {
            if let Some(p) = keyslot::unwrap_any(
                &self.store_id,
                cred,
                &slot.kind,
                &slot.params,
                &slot.wrapped,
            ) {
                return Ok((slot, p));
            }
        }
        for slot in &self.slots {
            let names_us = own.iter().any(|r| slot.params.contains(r.as_str()));
            if names_us {
                return Err(self.bad(
                    slot.line,
                    "the slot for this key does not open (the line was altered)",
                ));
            }
        }
        Err(StoreError::WrongKey)
    }

    /// Verifies everything `keys` can open; returns the vaults opened.
    fn verify(&self, keys: &Keys) -> Result<Vec<(usize, OpenVault)>> {
        // Every listed vault the key opens must be there, whole: the `vaults` line is covered by
        // each check, so dropping a vault's lines (or the line listing it) is noticed, and a
        // bundle cut down to no vault this key opens is refused rather than emptying the host.
        let (listed_line, listed) = self.listed.as_ref().expect("parse requires a vaults line");
        let wanted: Vec<i64> = listed
            .iter()
            .copied()
            .filter(|id| keys.vault_in_scope(*id))
            .collect();
        if wanted.is_empty() {
            return Err(self.bad(*listed_line, "the bundle holds no vault this key opens"));
        }
        let end = self.lines.len();
        for id in &wanted {
            if !self.vaults.iter().any(|v| v.row.id == *id) {
                return Err(self.bad(end, format!("no vault line for vault #{id} (truncated?)")));
            }
        }
        let mut opened = Vec::new();
        for v in &self.vaults {
            if !listed.contains(&v.row.id) {
                return Err(self.bad(v.line, "vault not listed on the vaults line"));
            }
            if !keys.vault_in_scope(v.row.id) {
                continue;
            }
            let vault = keys
                .open_vault_row(&v.row)
                .map_err(|_| self.bad(v.line, "vault row fails authentication"))?;
            opened.push((v.line, vault));
        }
        for e in &self.entries {
            let Some((_, vault)) = opened.iter().find(|(_, v)| v.info.id == e.vault_id) else {
                continue;
            };
            let entry = rows::open_row(&self.store_id, vault, e.id, e.version, e.parent, &e.meta)
                .map_err(|_| self.bad(e.line, "entry fails authentication"))?;
            if e.seq > self.generation {
                return Err(self.bad(e.line, "entry is newer than the bundle's head"));
            }
            if let Some(value) = &e.value {
                let vid = ValueId {
                    store_id: self.store_id,
                    vault_id: e.vault_id,
                    id: e.id,
                    version: e.version,
                };
                SealedValue::new(
                    vault.key.clone(),
                    vid,
                    String::new(),
                    entry.size,
                    value.clone(),
                )
                .and_then(|v| v.read_all())
                .map_err(|_| self.bad(e.line, "value fails authentication"))?;
            } else if !entry.is_dir() {
                return Err(self.bad(e.line, "secret without a value"));
            }
        }
        for (_, vault) in &opened {
            let id = vault.info.id;
            let (line, _, mac) =
                self.checks
                    .iter()
                    .find(|(_, v, _)| *v == id)
                    .ok_or_else(|| {
                        self.bad(end, format!("no check line for vault #{id} (truncated?)"))
                    })?;
            if !crypto::mac_eq(mac, &self.check_mac(&vault.key, id)) {
                return Err(self.bad(
                    *line,
                    format!(
                        "the lines of vault {:?} do not match its check (a line was removed, added or altered)",
                        vault.info.name
                    ),
                ));
            }
            let (line, _, mac) = self
                .macs
                .iter()
                .find(|(_, v, _)| *v == id)
                .ok_or_else(|| self.bad(end, format!("no head MAC for vault #{id}")))?;
            if !crypto::mac_eq(
                mac,
                &head::mac(&vault.head_key, &self.store_id, id, self.generation),
            ) {
                return Err(self.bad(*line, "the store head's MAC does not verify"));
            }
        }
        if keys.scope.is_none() {
            let (line, _, mac) = self
                .macs
                .iter()
                .find(|(_, v, _)| *v == 0)
                .ok_or_else(|| self.bad(end, "no master head MAC"))?;
            if !crypto::mac_eq(
                mac,
                &head::mac(keys.head_key(), &self.store_id, 0, self.generation),
            ) {
                return Err(self.bad(*line, "the store head's MAC does not verify"));
            }
        }
        Ok(opened)
    }

    /// What `cred` (if any) can see of the bundle. Verifies what it opens.
    pub fn show(&self, cred: Option<&Credential>) -> Result<Shown> {
        let unlocked = cred.map(|c| self.unlock(c)).transpose()?;
        let mut names: Vec<(i64, String)> = vec![];
        if let Some((_, payload)) = unlocked {
            let keys = keys_for(Path::new(&self.file), self.store_id, payload);
            for (_, v) in self.verify(&keys)? {
                names.push((v.info.id, v.info.name.clone()));
            }
        }
        let vaults = self
            .vaults
            .iter()
            .map(|v| {
                (
                    v.row.id,
                    names
                        .iter()
                        .find(|(id, _)| *id == v.row.id)
                        .map(|(_, n)| n.clone()),
                    self.entries
                        .iter()
                        .filter(|e| e.vault_id == v.row.id)
                        .count(),
                )
            })
            .collect();
        let opened_slot = cred.and_then(|c| self.unlock(c).ok()).map(|(s, _)| s.id);
        let slots = self
            .slots
            .iter()
            .map(|s| {
                let p = recipient::params(&s.params);
                ShownSlot {
                    id: s.id,
                    kind: s.kind.clone(),
                    label: s.label.clone(),
                    fingerprint: p
                        .as_ref()
                        .map(|p| recipient::fingerprint(&p.recipient))
                        .unwrap_or_default(),
                    scope: p.and_then(|p| p.vaults),
                    opens: opened_slot == Some(s.id),
                }
            })
            .collect();
        Ok(Shown {
            store_id: crypto::to_hex(&self.store_id),
            generation: self.generation,
            vaults,
            slots,
        })
    }

    /// Makes the store at `path` a replica holding this bundle's vaults that `cred` opens, in
    /// one transaction; creates the store when there is none. Only the slot `cred` opens is
    /// kept. Local tables the bundle does not carry are left alone.
    ///
    /// Removed rows get tombstones at the bundle's head, which running mounts see once the
    /// head moves; a different bundle of the same head (say, narrowed with `--vault`) applies,
    /// but mounts notice its removals only at their next restart.
    pub fn apply(&self, path: &Path, cred: &Credential, options: &ApplyOptions) -> Result<Applied> {
        let mut created = false;
        let result = self.apply_inner(path, cred, options, &mut created);
        if result.is_err() && created {
            // Leave no empty store behind: it would look like a store that is not a replica.
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(std::path::PathBuf::from(p));
            }
        }
        result
    }

    fn apply_inner(
        &self,
        path: &Path,
        cred: &Credential,
        options: &ApplyOptions,
        created: &mut bool,
    ) -> Result<Applied> {
        // A foreign bundle is named as such before any key is tried on it.
        if path.exists() {
            let (_, id) = db::open(path, db::WRITE_BUSY_TIMEOUT)?;
            if id != self.store_id {
                return Err(self.foreign(path, &id));
            }
        }
        let (slot, payload) = self.unlock(cred)?;
        let keys = keys_for(path, self.store_id, payload);
        let opened = self.verify(&keys)?;
        let state = options
            .state_dir
            .as_ref()
            .map(|d| StateFile::new(d, &self.store_id));
        let (mut conn, made) = self.open_or_create(path)?;
        *created = made;
        let sqlite = |e| StoreError::from_sqlite(path, e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        let current: i64 = tx
            .query_row("SELECT value FROM generation WHERE id = 1", [], |r| {
                r.get(0)
            })
            .map_err(sqlite)?;
        let replica = is_replica(&tx)?;
        if !replica && !*created {
            // The source store itself (same id): applying would replace its slots with one host's.
            return Err(StoreError::InvalidOperation(format!(
                "{} is the store this bundle was exported from, not a replica; apply bundles on the hosts",
                path.display()
            )));
        }
        let seen = state
            .as_ref()
            .and_then(|s| s.load(&keys.state_key(), &self.store_id).ok().flatten())
            .unwrap_or(0);
        let previous = replica.then_some(current);
        let floor = if replica { current.max(seen) } else { seen };
        if self.generation < floor && !options.allow_rollback {
            return Err(StoreError::Rollback {
                path: path.to_owned(),
                found: self.generation,
                seen: floor,
            });
        }
        let names = opened.iter().map(|(_, v)| v.info.name.clone()).collect();
        let ids: Vec<i64> = opened.iter().map(|(_, v)| v.info.id).collect();
        let work = || -> Result<(usize, usize)> {
            tx.execute("DELETE FROM key_slots", [])?;
            tx.execute(
                "INSERT INTO key_slots (id, kind, params, wrapped, created_ns, label)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    slot.id,
                    slot.kind,
                    slot.params,
                    slot.wrapped,
                    slot.created_ns,
                    slot.label
                ],
            )?;
            let mut removed = 0;
            let existing: Vec<(i64, i64, i64, i64)> = tx
                .prepare("SELECT vault_id, id, version, seq FROM entries")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let wanted: std::collections::HashMap<i64, &EntryLine> = self
                .entries
                .iter()
                .filter(|e| ids.contains(&e.vault_id))
                .map(|e| (e.id, e))
                .collect();
            {
                let mut del = tx.prepare("DELETE FROM entries WHERE id = ?1")?;
                let mut tomb = tx
                    .prepare("INSERT INTO deleted (vault_id, entry_id, seq) VALUES (?1, ?2, ?3)")?;
                for (vault_id, id, _, _) in &existing {
                    if wanted.get(id).is_none_or(|e| e.vault_id != *vault_id) {
                        del.execute([id])?;
                        tomb.execute(params![vault_id, id, self.generation])?;
                        removed += 1;
                    }
                }
            }
            tx.execute(
                &format!(
                    "DELETE FROM vaults WHERE id NOT IN ({})",
                    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
                ),
                [],
            )?;
            for v in self.vaults.iter().filter(|v| ids.contains(&v.row.id)) {
                tx.execute(
                    "INSERT OR REPLACE INTO vaults (id, version, name_tag, wrapped_key, sealed)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        v.row.id,
                        v.row.version,
                        v.name_tag,
                        v.row.wrapped_key,
                        v.row.sealed
                    ],
                )?;
            }
            let have: std::collections::HashMap<i64, (i64, i64)> = existing
                .iter()
                .map(|(_, id, version, seq)| (*id, (*version, *seq)))
                .collect();
            let mut changed = 0;
            let mut up = tx.prepare(
                "INSERT OR REPLACE INTO entries
                 (id, vault_id, parent_id, name_tag, version, seq, meta, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in wanted.values() {
                if have.get(&e.id) == Some(&(e.version, e.seq)) {
                    continue;
                }
                up.execute(params![
                    e.id, e.vault_id, e.parent, e.name_tag, e.version, e.seq, e.meta, e.value
                ])?;
                changed += 1;
            }
            drop(up);
            tx.execute(
                "UPDATE generation SET value = ?1 WHERE id = 1",
                [self.generation],
            )?;
            tx.execute("DELETE FROM head", [])?;
            for (_, vid, mac) in &self.macs {
                if *vid == 0 || ids.contains(vid) {
                    tx.execute(
                        "INSERT INTO head (vault_id, mac) VALUES (?1, ?2)",
                        params![vid, mac],
                    )?;
                }
            }
            tx.execute("INSERT OR REPLACE INTO meta VALUES ('replica', 1)", [])?;
            Ok((changed, removed))
        };
        let (changed, removed) = work().map_err(|e| StoreError::from_sqlite_in(path, e))?;
        tx.commit().map_err(sqlite)?;
        if let Some(state) = &state {
            state.save(
                &keys.state_key(),
                &self.store_id,
                self.generation,
                options.allow_rollback,
            );
        }
        Ok(Applied {
            previous,
            generation: self.generation,
            vaults: names,
            changed,
            removed,
            unchanged: changed == 0 && removed == 0 && previous == Some(self.generation),
        })
    }
}

/// A `slot` line. One function per line kind, shared by the export and by
/// [`crate::mirror::read_rows`], so a row unchanged in the store is the same line in both.
pub(crate) fn slot_line(
    id: i64,
    kind: &str,
    created: i64,
    label: Option<&str>,
    params_text: &str,
    wrapped: &[u8],
) -> String {
    format!(
        "slot {id} {kind} {created} {} {} {}",
        label.map_or("-".to_owned(), |l| b64(l.as_bytes())),
        b64(params_text.as_bytes()),
        b64(wrapped)
    )
}

/// A `vault` line.
pub(crate) fn vault_line(
    id: i64,
    version: i64,
    tag: &[u8],
    wrapped: &[u8],
    sealed: &[u8],
) -> String {
    format!(
        "vault {id} {version} {} {} {}",
        b64(tag),
        b64(wrapped),
        b64(sealed)
    )
}

/// An `entry` line from a row of `SELECT id, version, parent_id, seq, name_tag, meta, value`.
pub(crate) fn entry_line(vault_id: i64, r: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
    Ok(format!(
        "entry {vault_id} {} {} {} {} {} {} {}",
        r.get::<_, i64>(0)?,
        r.get::<_, i64>(1)?,
        r.get::<_, i64>(2)?,
        r.get::<_, i64>(3)?,
        b64(&r.get::<_, Vec<u8>>(4)?),
        b64(&r.get::<_, Vec<u8>>(5)?),
        r.get::<_, Option<Vec<u8>>>(6)?
            .map_or("-".to_owned(), |b| b64(&b))
    ))
}

fn bad(file: &str, line: usize, reason: impl Into<String>) -> StoreError {
    StoreError::BadBundle {
        file: file.to_owned(),
        line,
        reason: reason.into(),
    }
}

fn keys_for(path: &Path, store_id: [u8; 16], payload: Payload) -> Keys {
    match payload {
        Payload::Master(m) => Keys::new(path, store_id, m),
        Payload::Vaults(v) => Keys::scoped(path, store_id, v),
    }
}

/// The `check` MAC of `vault_id` over `lines` (those it covers: see [`Bundle::check_mac`]).
fn covered_mac(lines: &[String], vault_key: &Key, store_id: &[u8; 16], vault_id: i64) -> [u8; 32] {
    let mut text = String::new();
    for l in lines {
        let mut f = l.split(' ');
        let kind = f.next().unwrap_or_default();
        let vid = f.next().and_then(|s| s.parse::<i64>().ok());
        let covered = match kind {
            MAGIC | "head" | "vaults" | "mac" | "slot" => true,
            "vault" | "entry" => vid == Some(vault_id),
            _ => false,
        };
        if covered {
            text.push_str(l);
            text.push('\n');
        }
    }
    check_mac(vault_key, store_id, vault_id, &text)
}

fn check_mac(vault_key: &Key, store_id: &[u8; 16], vault_id: i64, text: &str) -> [u8; 32] {
    crypto::mac(
        &vault_key.derive("vaultfs 2026 bundle check v1"),
        &[
            b"vaultfs bundle check v1",
            store_id,
            &vault_id.to_le_bytes(),
            text.as_bytes(),
        ],
    )
}

impl Store {
    /// Exports vaults `names` (all when empty) as bundle text, with the host-key slots that open
    /// them; with `for_label`, only that slot and the vaults it opens. Needs the master key.
    pub fn export_bundle(&self, names: &[String], for_label: Option<&str>) -> Result<String> {
        self.export(names, for_label, false)
    }

    /// Exports the whole store as bundle text: every vault and every key slot, passphrase and
    /// key-file slots included. A store kept elsewhere (etcd) is this text split by line, and
    /// a copy of the store is rebuilt from it with [`Bundle::mirror`]; a host still applies it
    /// with [`Bundle::apply`], which keeps only the host's own slot. Needs the master key.
    pub fn export_mirror(&self) -> Result<String> {
        self.export(&[], None, true)
    }

    fn export(&self, names: &[String], for_label: Option<&str>, all_slots: bool) -> Result<String> {
        if self.keys.scope.is_some() {
            return Err(StoreError::ReadOnly {
                path: self.keys.path.clone(),
                reason: "exporting a bundle needs a key that opens the whole store",
            });
        }
        let slots = self.key_slots()?;
        let chosen_slot = match for_label {
            Some(label) => Some(
                slots
                    .iter()
                    .find(|s| s.label.as_deref() == Some(label) && s.recipient.is_some())
                    .ok_or_else(|| {
                        StoreError::InvalidOperation(format!(
                            "no host-key slot labelled {label:?} (see `vaultfs key list`)"
                        ))
                    })?,
            ),
            None => None,
        };
        let mut vaults: Vec<OpenVault> = Vec::new();
        if names.is_empty() {
            for info in self.list_vaults()? {
                vaults.push(self.open_vault(&info.name)?);
            }
        } else {
            for n in names {
                vaults.push(self.open_vault(n)?);
            }
        }
        if let Some(Some(scope)) = chosen_slot.map(|s| &s.scope) {
            vaults.retain(|v| scope.contains(&v.info.id));
        }
        vaults.sort_by_key(|v| v.info.id);
        vaults.dedup_by_key(|v| v.info.id);
        let ids: Vec<i64> = vaults.iter().map(|v| v.info.id).collect();
        let tx = self.conn.unchecked_transaction()?;
        let generation = self.keys.verified_head(&tx)?;
        let mut out = vec![
            format!("{MAGIC} {VERSION} {}", crypto::to_hex(&self.keys.store_id)),
            format!("head {generation}"),
            std::iter::once("vaults".to_owned())
                .chain(ids.iter().map(i64::to_string))
                .collect::<Vec<_>>()
                .join(" "),
        ];
        let macs: Vec<(i64, Vec<u8>)> = tx
            .prepare("SELECT vault_id, mac FROM head ORDER BY vault_id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (vid, mac) in macs {
            if vid == 0 || ids.contains(&vid) {
                out.push(format!("mac {vid} {}", crypto::to_hex(&mac)));
            }
        }
        type RawSlot = (i64, String, String, Vec<u8>, i64, Option<String>);
        let raw: Vec<RawSlot> = tx
            .prepare(
                "SELECT id, kind, params, wrapped, created_ns, label FROM key_slots ORDER BY id",
            )?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let slot_key = self.keys.slot_key();
        for (id, kind, params_text, wrapped, created, label) in raw {
            let Some(p) = recipient::params(&params_text) else {
                // Passphrase and key-file slots leave the store only in a mirror (the store
                // itself, kept elsewhere); never in a bundle for hosts.
                if all_slots {
                    out.push(slot_line(
                        id,
                        &kind,
                        created,
                        label.as_deref(),
                        &params_text,
                        &wrapped,
                    ));
                }
                continue;
            };
            if !p.verify(&slot_key, &self.keys.store_id) {
                return Err(StoreError::Tampered {
                    what: format!("key slot {id} (its recipient or scope)"),
                });
            }
            let wanted = match chosen_slot {
                Some(s) => s.id == id,
                None => p
                    .vaults
                    .as_ref()
                    .is_none_or(|v| v.iter().any(|x| ids.contains(x))),
            };
            if wanted || all_slots {
                out.push(slot_line(
                    id,
                    &kind,
                    created,
                    label.as_deref(),
                    &params_text,
                    &wrapped,
                ));
            }
        }
        for v in &vaults {
            let (version, tag, wrapped, sealed): (i64, Vec<u8>, Vec<u8>, Vec<u8>) = tx.query_row(
                "SELECT version, name_tag, wrapped_key, sealed FROM vaults WHERE id = ?1",
                [v.info.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            out.push(vault_line(v.info.id, version, &tag, &wrapped, &sealed));
        }
        for v in &vaults {
            let mut stmt = tx.prepare(
                "SELECT id, version, parent_id, seq, name_tag, meta, value FROM entries
                 WHERE vault_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([v.info.id], |r| entry_line(v.info.id, r))?;
            for row in rows {
                out.push(row?);
            }
        }
        tx.finish()?;
        let mut text = out.join("\n");
        text.push('\n');
        for v in &vaults {
            let mac = covered_mac(&out, &v.key, &self.keys.store_id, v.info.id);
            text.push_str(&format!("check {} {}\n", v.info.id, crypto::to_hex(&mac)));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyslot::KdfParams;
    use crate::secret::SecretBytes;
    use crate::{Address, Identity, Recipient, VaultAcl};

    /// Prefixes and single-byte changes all over a real bundle: none applies (the check lines
    /// cover every line), none panics, and no failure leaves a replica behind.
    #[test]
    fn mangled_bundles_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let cred = Credential::KeyFile(SecretBytes::new(vec![3; 32]));
        let mut store = Store::create(&src, &cred, KdfParams::default()).unwrap();
        let acl = VaultAcl {
            owner: "root".into(),
            group: "root".into(),
            mode: 0o400,
        };
        store.create_vault("web", acl).unwrap();
        store
            .write(&Address::parse("web:/a").unwrap(), b"one")
            .unwrap();
        store
            .write(&Address::parse("web:/d/b").unwrap(), b"two")
            .unwrap();
        let id = age::x25519::Identity::generate();
        let recipient = Recipient::parse(&id.to_public().to_string()).unwrap();
        store
            .add_recipient_slot(&recipient, &["web".to_owned()], Some("h"))
            .unwrap();
        let text = store.export_bundle(&[], Some("h")).unwrap();
        let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_owned();
        let host = Credential::Identity(
            Identity::parse(&SecretBytes::new(secret.into_bytes()), "id".as_ref()).unwrap(),
        );
        let options = ApplyOptions::default();
        let replica = dir.path().join("replica.db");
        let mut cases: Vec<String> = (0..text.len())
            .step_by(37)
            .filter(|&n| text.is_char_boundary(n))
            .map(|n| text[..n].to_owned())
            .collect();
        let bytes = text.as_bytes();
        for i in (0..bytes.len()).step_by(53) {
            let mut b = bytes.to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            if let Ok(t) = String::from_utf8(b) {
                cases.push(t);
            }
        }
        for case in &cases {
            if case.trim_end() == text.trim_end() {
                continue;
            }
            // The check lines cover every other line, so no change may apply.
            let applied = Bundle::parse(case, "m").and_then(|b| b.apply(&replica, &host, &options));
            assert!(
                matches!(
                    applied,
                    Err(StoreError::BadBundle { .. } | StoreError::WrongKey)
                ),
                "{applied:?}"
            );
            assert!(!replica.exists(), "a failed apply left a store behind");
        }
        let good = Bundle::parse(&text, "good").unwrap();
        good.apply(&replica, &host, &options).unwrap();
    }
}
