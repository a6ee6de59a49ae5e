//! Reading and writing entry rows: the one place that knows how an entry is sealed, shared by
//! the CLI's [`Store`](crate::Store) and the driver's [`VaultReader`](crate::VaultReader).

use rusqlite::{params, Connection, OptionalExtension};

use crate::acl::AclOverride;
use crate::crypto;
use crate::error::{Result, StoreError};
use crate::records::{self, EntryKind, EntryMeta, RECORD_VERSION};
use crate::secret::SecretBytes;
use crate::store::OpenVault;
use crate::value::{self, SealedValue, ValueId};

/// The largest secret accepted. Secrets are small (tokens, keys, config files); a bound keeps a
/// mistaken `write` of a large file from filling memory on every open.
pub const MAX_SECRET_SIZE: usize = 16 * 1024 * 1024;

/// The parent id of entries at a vault's root.
pub const ROOT_PARENT: i64 = 0;

/// One directory or secret: its decrypted metadata, never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Row id; stable for the life of the entry, through renames and rewrites.
    pub id: i64,
    /// Bumped on every change to the row.
    pub version: i64,
    /// Parent entry id, [`ROOT_PARENT`] at the vault's root.
    pub parent: i64,
    /// Name inside the parent.
    pub name: String,
    /// Directory or secret.
    pub kind: EntryKind,
    /// What this entry overrides of the inherited ACL.
    pub acl: AclOverride,
    /// Plaintext size in bytes (0 for directories).
    pub size: u64,
    /// Last change of value or metadata, ns since the epoch.
    pub mtime_ns: i64,
    /// Expiry and read limit of this value.
    pub limits: Limits,
}

/// How long, and how many times, a value is served; set with the value by `write` (a new
/// value starts with the limits it is written with) and kept by `mv` and `acl`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// When the value stops being served, ns since the epoch.
    pub expires_ns: Option<i64>,
    /// How many opens through mounts may succeed (counted per host, in local state).
    pub max_opens: Option<u64>,
}

impl Limits {
    /// Whether the value has expired at `now_ns`.
    pub fn expired_at(&self, now_ns: i64) -> bool {
        self.expires_ns.is_some_and(|t| t <= now_ns)
    }
}

impl Entry {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

pub(crate) fn meta_aad(store_id: &[u8; 16], vault: &OpenVault, id: i64, version: i64) -> Vec<u8> {
    crypto::aad(
        "vaultfs entry meta v2",
        store_id,
        &[vault.info.id, id, version],
    )
}

fn value_id(store_id: &[u8; 16], vault: &OpenVault, id: i64, version: i64) -> ValueId {
    ValueId {
        store_id: *store_id,
        vault_id: vault.info.id,
        id,
        version,
    }
}

fn describe(vault: &OpenVault, id: i64) -> String {
    format!("entry #{id} of vault {:?}", vault.info.name)
}

fn tamper(vault: &OpenVault, id: i64) -> StoreError {
    StoreError::Tampered {
        what: describe(vault, id),
    }
}

fn entry_from(id: i64, version: i64, meta: EntryMeta) -> Entry {
    Entry {
        id,
        version,
        parent: meta.parent,
        name: meta.name,
        kind: meta.kind,
        acl: meta.acl,
        size: meta.size,
        mtime_ns: meta.mtime_ns,
        limits: Limits {
            expires_ns: meta.expires_ns,
            max_opens: meta.max_opens,
        },
    }
}

/// Decrypts one row's metadata and checks it against the row's clear columns.
pub(crate) fn open_row(
    store_id: &[u8; 16],
    vault: &OpenVault,
    id: i64,
    version: i64,
    parent_col: i64,
    sealed_meta: &[u8],
) -> Result<Entry> {
    let meta: EntryMeta = records::open_json(
        &vault.key,
        &meta_aad(store_id, vault, id, version),
        sealed_meta,
        || describe(vault, id),
    )?;
    if meta.parent != parent_col {
        return Err(tamper(vault, id));
    }
    Ok(entry_from(id, version, meta))
}

const ROW_COLUMNS: &str = "id, version, parent_id, meta";

fn row_tuple(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, i64, Vec<u8>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// The entry called `name` in directory `parent`, if any.
pub(crate) fn lookup(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    parent: i64,
    name: &str,
) -> Result<Option<Entry>> {
    let tag = crypto::name_tag(&vault.tag_key, parent, name);
    let row = conn
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM entries WHERE vault_id = ?1 AND name_tag = ?2"
        ))?
        .query_row(params![vault.info.id, &tag[..]], row_tuple)
        .optional()?;
    let Some((id, version, parent_col, meta)) = row else {
        return Ok(None);
    };
    let entry = open_row(store_id, vault, id, version, parent_col, &meta)?;
    if entry.name != name || entry.parent != parent {
        return Err(tamper(vault, id));
    }
    Ok(Some(entry))
}

/// The entry with id `id`, if it exists in this vault.
pub(crate) fn by_id(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    id: i64,
) -> Result<Option<Entry>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM entries WHERE vault_id = ?1 AND id = ?2"
        ))?
        .query_row(params![vault.info.id, id], row_tuple)
        .optional()?;
    row.map(|(id, version, parent, meta)| open_row(store_id, vault, id, version, parent, &meta))
        .transpose()
}

/// The entries directly inside `parent`, sorted by name.
pub(crate) fn children(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    parent: i64,
) -> Result<Vec<Entry>> {
    let rows: Vec<_> = conn
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM entries WHERE vault_id = ?1 AND parent_id = ?2"
        ))?
        .query_map(params![vault.info.id, parent], row_tuple)?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = rows
        .into_iter()
        .map(|(id, version, parent, meta)| open_row(store_id, vault, id, version, parent, &meta))
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every row of the vault changed after generation `since` (all rows for 0), decrypted; rows
/// that fail authentication are returned apart, so one bad row does not hide the others. A row
/// claiming a change newer than the authenticated `head` was not written by a key holder's
/// commit (every commit moves the head): it is reported as damaged, never applied.
pub(crate) fn changed_since(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    since: i64,
    head: i64,
) -> Result<(Vec<Entry>, Damaged)> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, version, parent_id, meta, seq FROM entries WHERE vault_id = ?1 AND seq > ?2",
    )?;
    let mut rows = stmt.query(params![vault.info.id, since])?;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    while let Some(r) = rows.next()? {
        let (id, version, parent, meta) = row_tuple(r)?;
        let seq: i64 = r.get(4)?;
        if seq > head {
            bad.push((
                id,
                StoreError::Tampered {
                    what: format!("{} (changed after the store head)", describe(vault, id)),
                },
            ));
            continue;
        }
        match open_row(store_id, vault, id, version, parent, &meta) {
            Ok(e) => good.push(e),
            Err(e) => bad.push((id, e)),
        }
    }
    Ok((good, bad))
}

/// Ids of the vault's entries deleted after generation `since`, up to the authenticated `head`
/// (a tombstone newer than the head was not made by a commit, and is not applied).
pub(crate) fn deleted_since(
    conn: &Connection,
    vault: &OpenVault,
    since: i64,
    head: i64,
) -> Result<Vec<i64>> {
    let ids = conn
        .prepare_cached(
            "SELECT entry_id FROM deleted WHERE vault_id = ?1 AND seq > ?2 AND seq <= ?3",
        )?
        .query_map(params![vault.info.id, since, head], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// The sealed value of secret `id` at `version`, checked against its authenticated metadata
/// (size, kind). `Ok(None)` when the row is gone, is a directory, or has moved on to another
/// version (the caller's view is stale and must refresh).
pub(crate) fn sealed_value(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    id: i64,
    version: i64,
) -> Result<Option<SealedValue>> {
    type ValueRow = (i64, i64, Vec<u8>, Option<Vec<u8>>);
    let row: Option<ValueRow> = conn
        .prepare_cached(
            "SELECT version, parent_id, meta, value FROM entries WHERE vault_id = ?1 AND id = ?2",
        )?
        .query_row(params![vault.info.id, id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((found_version, parent, meta, sealed)) = row else {
        return Ok(None);
    };
    if found_version != version {
        return Ok(None);
    }
    let entry = open_row(store_id, vault, id, version, parent, &meta)?;
    if entry.is_dir() {
        return Ok(None);
    }
    let sealed = sealed.ok_or_else(|| tamper(vault, id))?;
    SealedValue::new(
        vault.key.clone(),
        value_id(store_id, vault, id, version),
        describe(vault, id),
        entry.size,
        sealed,
    )
    .map(Some)
}

/// Decrypts the whole value of secret `id` at `version`; `Ok(None)` as for [`sealed_value`].
pub(crate) fn read_value(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    id: i64,
    version: i64,
) -> Result<Option<SecretBytes>> {
    sealed_value(conn, store_id, vault, id, version)?
        .map(|v| v.read_all())
        .transpose()
}

/// Rows that failed authentication, by id, with the error.
pub(crate) type Damaged = Vec<(i64, StoreError)>;

/// What a write puts into a row.
pub(crate) struct RowContent<'a> {
    pub parent: i64,
    pub name: &'a str,
    pub kind: EntryKind,
    pub acl: AclOverride,
    /// The plaintext for a secret; `None` for a directory.
    pub value: Option<&'a [u8]>,
    pub mtime_ns: i64,
    pub limits: Limits,
    /// When the value was written: `None` for a new value (now, `mtime_ns`); a rewrite that
    /// keeps the value (ACL, move, limits) passes the old time on, so a limit's `ttl`, which
    /// counts from it, means the same at every application.
    pub written_ns: Option<i64>,
}

/// When the value of `entry` was written (its record's `created_ns`, kept by every rewrite
/// that keeps the value; for rows written before that rule, its last rewrite).
pub(crate) fn written_ns(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    entry: &Entry,
) -> Result<i64> {
    let sealed: Vec<u8> = conn
        .prepare_cached(
            "SELECT meta FROM entries WHERE vault_id = ?1 AND id = ?2 AND version = ?3",
        )?
        .query_row(params![vault.info.id, entry.id, entry.version], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or_else(|| tamper(vault, entry.id))?;
    let meta: EntryMeta = records::open_json(
        &vault.key,
        &meta_aad(store_id, vault, entry.id, entry.version),
        &sealed,
        || describe(vault, entry.id),
    )?;
    Ok(meta.created_ns)
}

fn seal_into(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    id: i64,
    version: i64,
    generation: i64,
    content: &RowContent<'_>,
) -> Result<Entry> {
    let now = content.mtime_ns;
    let mut meta = EntryMeta {
        v: RECORD_VERSION,
        parent: content.parent,
        name: content.name.to_owned(),
        kind: content.kind,
        acl: content.acl.clone(),
        size: content.value.map_or(0, |v| v.len() as u64),
        mtime_ns: now,
        created_ns: content.written_ns.unwrap_or(now),
        expires_ns: content.limits.expires_ns,
        max_opens: content.limits.max_opens,
    };
    meta.v = meta.needed_version();
    let sealed_meta =
        records::seal_json(&vault.key, &meta_aad(store_id, vault, id, version), &meta);
    let sealed_value = content
        .value
        .map(|v| value::seal(&vault.key, &value_id(store_id, vault, id, version), v));
    let tag = crypto::name_tag(&vault.tag_key, content.parent, content.name);
    conn.prepare_cached(
        "UPDATE entries SET parent_id = ?1, name_tag = ?2, version = ?3, seq = ?4, meta = ?5,
         value = ?6 WHERE id = ?7",
    )?
    .execute(params![
        content.parent,
        &tag[..],
        version,
        generation,
        sealed_meta,
        sealed_value,
        id
    ])?;
    Ok(entry_from(id, version, meta))
}

/// Inserts a new row, inside the caller's write transaction.
pub(crate) fn insert(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    generation: i64,
    content: &RowContent<'_>,
) -> Result<Entry> {
    // The id is part of the associated data, so the row is created first to learn it.
    // The placeholder tag is unique (it is random) and replaced before the transaction ends.
    let placeholder: [u8; 32] = crypto::random_array();
    conn.prepare_cached(
        "INSERT INTO entries (vault_id, parent_id, name_tag, version, seq, meta)
         VALUES (?1, ?2, ?3, 1, ?4, x'')",
    )?
    .execute(params![
        vault.info.id,
        content.parent,
        &placeholder[..],
        generation
    ])?;
    let id = conn.last_insert_rowid();
    seal_into(conn, store_id, vault, id, 1, generation, content)
}

/// Replaces row `old` with `content` at the next version, inside the caller's write transaction.
pub(crate) fn rewrite(
    conn: &Connection,
    store_id: &[u8; 16],
    vault: &OpenVault,
    generation: i64,
    old: &Entry,
    content: &RowContent<'_>,
) -> Result<Entry> {
    seal_into(
        conn,
        store_id,
        vault,
        old.id,
        old.version + 1,
        generation,
        content,
    )
}

/// Deletes rows and leaves tombstones for mounted readers.
pub(crate) fn delete(
    conn: &Connection,
    vault: &OpenVault,
    generation: i64,
    ids: &[i64],
) -> Result<()> {
    for id in ids {
        conn.prepare_cached("DELETE FROM entries WHERE vault_id = ?1 AND id = ?2")?
            .execute(params![vault.info.id, id])?;
        conn.prepare_cached("INSERT INTO deleted (vault_id, entry_id, seq) VALUES (?1, ?2, ?3)")?
            .execute(params![vault.info.id, id, generation])?;
    }
    Ok(())
}
