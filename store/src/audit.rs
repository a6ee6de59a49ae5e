//! The audit log of a vault: who opened, wrote, granted, unwrapped what, and what was decided.
//! Never a value.
//!
//! Records live in the store file (table `audit`, beside the entries), one row each, sealed
//! under a key derived from the vault's key, so the mount daemon (which holds only its vaults'
//! keys) can write them and an administrator can read them. Each row carries a chain MAC over
//! the previous row's and its own sealed bytes; the vault's audit head (table `audit_head`)
//! holds the last sequence number and chain value under a MAC of its own domain, so a row
//! edited, removed from the middle, or cut from the tail is detected by `verify`. `prune`
//! moves the start of the chain forward (the head records where it now starts). Rows are local
//! state: never part of the entries a bundle or replica ships.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{Result, StoreError};
use crate::reader::VaultReader;
use crate::secret::Key;
use crate::store::{OpenVault, Store};

/// One audited event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// When, ns since the epoch.
    pub t_ns: i64,
    /// What: `open`, `opendir`, `write`, `acl`, `expire`, `read-once`, `unwrap`, `start`,
    /// `stop`, `lost`.
    pub event: String,
    /// The entry, as `vault:/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The entry's row version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The caller's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The caller's gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The caller's process (thread group) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgid: Option<u32>,
    /// The caller's executable, as `/proc/PID/exe` names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The caller's cgroup (systemd unit) path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// `allow`, `deny` or `alarm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The rule that decided, or what the event was about (a grant, a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// Where committed records are copied as they commit, besides the store (the daemon's
/// journal or stderr mirror); set once per process.
type Mirror = Box<dyn Fn(&str, &AuditRecord) + Send + Sync>;

static MIRROR: std::sync::OnceLock<Mirror> = std::sync::OnceLock::new();

/// Sets this process's audit mirror: `mirror(vault, record)` is called for every record this
/// process commits to an audit log, after its transaction commits (a record rolled back is
/// never mirrored), on the committing thread. It must not block: the audit writer calls it.
/// Returns `false` if a mirror was set already (the first one stays).
pub fn set_audit_mirror(mirror: impl Fn(&str, &AuditRecord) + Send + Sync + 'static) -> bool {
    MIRROR.set(Box::new(mirror)).is_ok()
}

/// Mirrors records that have just committed, by vault name.
pub(crate) fn mirror_committed(records: &[(String, AuditRecord)]) {
    if let Some(m) = MIRROR.get() {
        for (vault, r) in records {
            m(vault, r);
        }
    }
}

/// What `verify` found.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// The first sequence number kept (after a prune).
    pub first_seq: i64,
    /// Records up to this number were sealed under a former vault key (`key rotate`, or a
    /// vault removed and created again) and cannot be read or checked with this one (0: none).
    pub former_key: i64,
}

/// The audit log of one vault, with its key.
pub struct AuditLog {
    store_id: [u8; 16],
    vault_id: i64,
    vault_name: String,
    key: Key,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("vault", &self.vault_name)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit (
        vault_id INTEGER NOT NULL, seq INTEGER NOT NULL, t_ns INTEGER NOT NULL,
        sealed BLOB NOT NULL, chain BLOB NOT NULL, PRIMARY KEY (vault_id, seq));
    CREATE TABLE IF NOT EXISTS audit_head (
        vault_id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, chain BLOB NOT NULL,
        base_seq INTEGER NOT NULL, base_chain BLOB NOT NULL, mac BLOB NOT NULL,
        key_id BLOB NOT NULL);";

/// The head: the last record, and where the chain starts.
struct Head {
    seq: i64,
    chain: [u8; 32],
    base_seq: i64,
    base_chain: [u8; 32],
    /// The stored head was written under another key (see [`AuditLog::key_id`]).
    former_key: bool,
}

fn arr(v: Vec<u8>) -> [u8; 32] {
    v.try_into().unwrap_or([0; 32])
}

impl AuditLog {
    pub(crate) fn for_vault(store_id: [u8; 16], vault: &OpenVault) -> AuditLog {
        AuditLog {
            store_id,
            vault_id: vault.info.id,
            vault_name: vault.info.name.clone(),
            key: vault.key.derive("vaultfs 2026 audit log v1"),
        }
    }

    /// The vault's name.
    pub fn vault_name(&self) -> &str {
        &self.vault_name
    }

    fn tamper(&self, what: String) -> StoreError {
        StoreError::Tampered {
            what: format!("the audit log of vault {:?} ({what})", self.vault_name),
        }
    }

    fn chain(&self, prev: &[u8; 32], seq: i64, t_ns: i64, sealed: &[u8]) -> [u8; 32] {
        crypto::mac(
            &self.key,
            &[
                b"chain",
                prev,
                &seq.to_le_bytes(),
                &t_ns.to_le_bytes(),
                sealed,
            ],
        )
    }

    fn head_mac(&self, h: &Head) -> [u8; 32] {
        crypto::mac(
            &self.key,
            &[
                b"head",
                &self.vault_id.to_le_bytes(),
                &h.seq.to_le_bytes(),
                &h.chain,
                &h.base_seq.to_le_bytes(),
                &h.base_chain,
            ],
        )
    }

    fn aad(&self, seq: i64) -> Vec<u8> {
        crypto::aad(
            "vaultfs audit record v1",
            &self.store_id,
            &[self.vault_id, seq],
        )
    }

    /// Names the key without revealing it: a head written under another key (the vault was
    /// re-keyed by `key rotate`, or removed and created again) starts a new segment.
    fn key_id(&self) -> [u8; 32] {
        crypto::mac(&self.key, &[b"key id"])
    }

    fn head(&self, conn: &Connection) -> Result<Option<Head>> {
        let row = conn
            .query_row(
                "SELECT seq, chain, base_seq, base_chain, mac, key_id FROM audit_head
                 WHERE vault_id = ?1",
                [self.vault_id],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((seq, chain, base_seq, base_chain, mac, key_id)) = row else {
            return Ok(None);
        };
        if !crypto::mac_eq(&key_id, &self.key_id()) {
            // Written under a former key: what came before is sealed under it, and this key
            // starts a new segment after it.
            return Ok(Some(Head {
                seq,
                chain: [0; 32],
                base_seq: seq,
                base_chain: [0; 32],
                former_key: true,
            }));
        }
        let head = Head {
            seq,
            chain: arr(chain),
            base_seq,
            base_chain: arr(base_chain),
            former_key: false,
        };
        if !crypto::mac_eq(&self.head_mac(&head), &mac) {
            return Err(self.tamper("its head does not verify".into()));
        }
        Ok(Some(head))
    }

    fn put_head(&self, conn: &Connection, h: &Head) -> Result<()> {
        conn.execute(
            "INSERT OR REPLACE INTO audit_head
             (vault_id, seq, chain, base_seq, base_chain, mac, key_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                self.vault_id,
                h.seq,
                &h.chain[..],
                h.base_seq,
                &h.base_chain[..],
                &self.head_mac(h)[..],
                &self.key_id()[..]
            ],
        )?;
        Ok(())
    }

    /// Appends `records` in one transaction (the caller batches).
    pub fn append(&self, conn: &mut Connection, records: &[AuditRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.append_in(&tx, records)?;
        tx.commit()?;
        if let Some(m) = MIRROR.get() {
            for r in records {
                m(&self.vault_name, r);
            }
        }
        Ok(())
    }

    /// Appends `records` inside the caller's write transaction.
    pub(crate) fn append_in(&self, tx: &Connection, records: &[AuditRecord]) -> Result<()> {
        tx.execute_batch(SCHEMA)?;
        let mut head = self.head(tx)?.unwrap_or(Head {
            seq: 0,
            chain: [0; 32],
            base_seq: 0,
            base_chain: [0; 32],
            former_key: false,
        });
        for r in records {
            let seq = head.seq + 1;
            let plain = serde_json::to_vec(r).expect("records serialize");
            let sealed = crypto::seal(&self.key, &self.aad(seq), &plain);
            let chain = self.chain(&head.chain, seq, r.t_ns, &sealed);
            tx.prepare_cached(
                "INSERT INTO audit (vault_id, seq, t_ns, sealed, chain) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![self.vault_id, seq, r.t_ns, sealed, &chain[..]])?;
            head.seq = seq;
            head.chain = chain;
        }
        self.put_head(tx, &head)
    }

    /// Every record kept, in order, with the chain verified from its start to the head.
    pub fn read(&self, conn: &Connection) -> Result<(Vec<AuditRecord>, Verified)> {
        conn.execute_batch(SCHEMA)?;
        let Some(head) = self.head(conn)? else {
            return Ok((
                Vec::new(),
                Verified {
                    records: 0,
                    first_seq: 1,
                    former_key: 0,
                },
            ));
        };
        let mut st = conn.prepare(
            "SELECT seq, t_ns, sealed, chain FROM audit WHERE vault_id = ?1 ORDER BY seq",
        )?;
        let rows = st.query_map([self.vault_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut prev = head.base_chain;
        let mut expect = head.base_seq + 1;
        let mut out = Vec::new();
        for row in rows {
            let (seq, t_ns, sealed, chain) = row?;
            if seq < expect {
                continue; // below the pruned base: ignored, and deleted by the next prune
            }
            if seq != expect {
                return Err(self.tamper(format!("record {expect} is missing")));
            }
            let want = self.chain(&prev, seq, t_ns, &sealed);
            if !crypto::mac_eq(&want, &chain) {
                return Err(self.tamper(format!("record {seq} was changed")));
            }
            let plain = crypto::open(&self.key, &self.aad(seq), &sealed)
                .ok_or_else(|| self.tamper(format!("record {seq} does not decrypt")))?;
            let rec: AuditRecord = serde_json::from_slice(plain.expose())
                .map_err(|_| self.tamper(format!("record {seq} does not parse")))?;
            if rec.t_ns != t_ns {
                return Err(self.tamper(format!("record {seq} has a changed time")));
            }
            out.push(rec);
            prev = want;
            expect += 1;
        }
        if expect - 1 != head.seq || !crypto::mac_eq(&prev, &head.chain) {
            return Err(self.tamper(format!(
                "its head says {} records, the chain ends at {}: records were cut from the end",
                head.seq,
                expect - 1
            )));
        }
        let records = out.len() as u64;
        Ok((
            out,
            Verified {
                records,
                first_seq: head.base_seq + 1,
                // A segment started by a new key has a zero base chain (a prune's is a MAC).
                former_key: if head.former_key || (head.base_seq > 0 && head.base_chain == [0; 32])
                {
                    head.base_seq
                } else {
                    0
                },
            },
        ))
    }

    /// Deletes the records older than `before_ns` (from the start of the chain), moving the
    /// chain's verified start forward; returns how many were deleted.
    pub fn prune(&self, conn: &mut Connection, before_ns: i64) -> Result<u64> {
        conn.execute_batch(SCHEMA)?;
        // Verify first: never prune (and so hide) a chain that does not check.
        self.read(conn)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(mut head) = self.head(&tx)? else {
            return Ok(0);
        };
        let cut: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, chain FROM audit WHERE vault_id = ?1 AND seq > ?2 AND t_ns < ?3
                 AND seq < ?4 ORDER BY seq DESC LIMIT 1",
                params![self.vault_id, head.base_seq, before_ns, head.seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((seq, chain)) = cut else {
            return Ok(0);
        };
        let n = tx.execute(
            "DELETE FROM audit WHERE vault_id = ?1 AND seq <= ?2",
            params![self.vault_id, seq],
        )?;
        head.base_seq = seq;
        head.base_chain = arr(chain);
        self.put_head(&tx, &head)?;
        tx.commit()?;
        Ok(n as u64)
    }
}

/// Re-seals vault `old`'s audit log under the key of `new` (the same vault after `key rotate`),
/// inside the rotation's transaction: each record kept is verified under the old key, sealed
/// under the new one at the same sequence number and time, and chained again, so the whole log
/// stays readable and checkable after the old key is gone. `Ok(None)`: the log did not verify
/// under the old key; it is left as it is (a former-key segment, reported by `verify`) rather
/// than re-sealed, which would launder the tampering into a chain that checks.
pub(crate) fn reseal(
    tx: &Connection,
    store_id: [u8; 16],
    old: &OpenVault,
    new: &OpenVault,
) -> Result<Option<u64>> {
    tx.execute_batch(SCHEMA)?;
    let old = AuditLog::for_vault(store_id, old);
    let new = AuditLog::for_vault(store_id, new);
    let Some(head) = old.head(tx)? else {
        return Ok(Some(0));
    };
    let (records, verified) = match old.read(tx) {
        Ok(r) => r,
        Err(e) if e.is_tamper() => return Ok(None),
        Err(e) => return Err(e),
    };
    // Where the re-sealed chain starts: a zero base marks records below it as sealed under a
    // key before the old one (kept so); a pruned start gets a base of the new key's own.
    let base_chain = if verified.former_key > 0 || head.base_seq == 0 {
        [0; 32]
    } else {
        crypto::mac(&new.key, &[b"rebased", &head.base_chain])
    };
    let mut prev = base_chain;
    let mut seq = head.base_seq;
    for r in &records {
        seq += 1;
        let plain =
            crate::secret::SecretBytes::new(serde_json::to_vec(r).expect("records serialize"));
        let sealed = crypto::seal(&new.key, &new.aad(seq), plain.expose());
        let chain = new.chain(&prev, seq, r.t_ns, &sealed);
        tx.prepare_cached(
            "UPDATE audit SET sealed = ?3, chain = ?4 WHERE vault_id = ?1 AND seq = ?2",
        )?
        .execute(params![new.vault_id, seq, sealed, &chain[..]])?;
        prev = chain;
    }
    new.put_head(
        tx,
        &Head {
            seq,
            chain: prev,
            base_seq: head.base_seq,
            base_chain,
            former_key: false,
        },
    )?;
    Ok(Some(records.len() as u64))
}

impl VaultReader {
    /// The audit log of this reader's vault (a mount daemon writes it with the vault key).
    pub fn audit_log(&self) -> AuditLog {
        AuditLog::for_vault(*self.store_id(), self.vault())
    }

    /// A connection of its own to the store file, for the audit writer thread.
    pub fn audit_connection(&self) -> Result<Connection> {
        Ok(crate::db::open(self.store_path(), std::time::Duration::from_secs(2))?.0)
    }
}

impl Store {
    /// The audit log of vault `name`.
    pub fn audit_log(&self, name: &str) -> Result<AuditLog> {
        let vault = self.open_vault(name)?;
        Ok(AuditLog::for_vault(self.keys.store_id, &vault))
    }

    /// Commits `record` into vault `name`'s audit log with the next write transaction of this
    /// handle (a change and its record commit together, or neither).
    pub fn audit_with_next_write(&mut self, name: &str, record: AuditRecord) {
        self.pending_audit.push((name.to_owned(), record));
    }

    /// Appends `records` to vault `name`'s audit log now, in a transaction of their own.
    pub fn audit(&mut self, name: &str, records: &[AuditRecord]) -> Result<()> {
        let log = self.audit_log(name)?;
        log.append(&mut self.conn, records)
    }

    /// Reads and verifies vault `name`'s audit log.
    pub fn audit_records(&self, name: &str) -> Result<(Vec<AuditRecord>, Verified)> {
        self.audit_log(name)?.read(&self.conn)
    }

    /// Prunes vault `name`'s audit log before `before_ns`.
    pub fn audit_prune(&mut self, name: &str, before_ns: i64) -> Result<u64> {
        let log = self.audit_log(name)?;
        log.prune(&mut self.conn, before_ns)
    }
}
