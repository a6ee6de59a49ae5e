//! A store kept somewhere else than one SQLite file (etcd): the text of
//! [`Store::export_mirror`](crate::Store::export_mirror) split into one record per row plus
//! one "head" record, and put back together in the one order the bundle checks cover.
//!
//! Why bundle lines: they are already the store's rows in a stable text form, every one sealed
//! or MAC'd, and [`Bundle::apply`](crate::Bundle::apply) already verifies a whole set of them
//! against the store head (rows newer than the head, removed or swapped rows, rollbacks) and
//! applies it to a read-only replica in one transaction. A backend only moves lines.
//!
//! The head record holds the header, `head`, `vaults`, `mac` and `check` lines; each row
//! record is one `slot`, `vault` or `entry` line, named by [`row_key`].

use std::collections::BTreeMap;
use std::path::Path;

use crate::bundle;
use crate::db;
use crate::error::{Result, StoreError};

/// The rows of a store as lines, read without a key.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    /// The store head (`generation`) of the file.
    pub generation: i64,
    /// Every `slot`, `vault` and `entry` line, by [`row_key`].
    pub lines: BTreeMap<String, String>,
}

/// Reads every slot, vault and entry of the store at `path` as the lines an export would
/// write, without unlocking it: comparing this before and after a command gives the rows it
/// changed, whatever the command was.
pub fn read_rows(path: &Path) -> Result<Rows> {
    let (conn, _) = db::open(path, db::WRITE_BUSY_TIMEOUT)?;
    let sqlite = |e| StoreError::from_sqlite(path, e);
    let tx = conn.unchecked_transaction().map_err(sqlite)?;
    let generation: i64 = tx
        .query_row("SELECT value FROM generation WHERE id = 1", [], |r| {
            r.get(0)
        })
        .map_err(sqlite)?;
    let mut lines = BTreeMap::new();
    {
        let mut stmt = tx
            .prepare("SELECT id, kind, created_ns, label, params, wrapped FROM key_slots")
            .map_err(sqlite)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(bundle::slot_line(
                    r.get(0)?,
                    &r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get::<_, Option<String>>(3)?.as_deref(),
                    &r.get::<_, String>(4)?,
                    &r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .map_err(sqlite)?;
        for line in rows {
            push(&mut lines, line.map_err(sqlite)?);
        }
        let mut stmt = tx
            .prepare("SELECT id, version, name_tag, wrapped_key, sealed FROM vaults")
            .map_err(sqlite)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(bundle::vault_line(
                    r.get(0)?,
                    r.get(1)?,
                    &r.get::<_, Vec<u8>>(2)?,
                    &r.get::<_, Vec<u8>>(3)?,
                    &r.get::<_, Vec<u8>>(4)?,
                ))
            })
            .map_err(sqlite)?;
        for line in rows {
            push(&mut lines, line.map_err(sqlite)?);
        }
        let mut stmt = tx
            .prepare(
                "SELECT id, version, parent_id, seq, name_tag, meta, value, vault_id FROM entries",
            )
            .map_err(sqlite)?;
        let rows = stmt
            .query_map([], |r| bundle::entry_line(r.get(7)?, r))
            .map_err(sqlite)?;
        for line in rows {
            push(&mut lines, line.map_err(sqlite)?);
        }
    }
    Ok(Rows { generation, lines })
}

fn push(lines: &mut BTreeMap<String, String>, line: String) {
    if let Some(key) = row_key(&line) {
        lines.insert(key, line);
    }
}

/// The name of a row line: `slot/ID`, `vault/ID` or `entry/VAULT/ID`; `None` for a line of
/// the head record or anything else.
pub fn row_key(line: &str) -> Option<String> {
    let mut f = line.split(' ');
    let kind = f.next()?;
    let a: i64 = f.next()?.parse().ok()?;
    match kind {
        "slot" | "vault" => Some(format!("{kind}/{a}")),
        "entry" => {
            let b: i64 = f.next()?.parse().ok()?;
            Some(format!("entry/{a}/{b}"))
        }
        _ => None,
    }
}

/// Splits mirror text into its head record and its row lines (by [`row_key`]).
pub fn split(text: &str) -> (String, BTreeMap<String, String>) {
    let mut head = String::new();
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        match row_key(line) {
            Some(key) => {
                rows.insert(key, line.to_owned());
            }
            None => {
                head.push_str(line);
                head.push('\n');
            }
        }
    }
    (head, rows)
}

/// The head (generation) a head record names, if it is well formed enough to say.
pub fn head_generation(head: &str) -> Option<i64> {
    head.lines()
        .find_map(|l| l.strip_prefix("head "))
        .and_then(|g| g.parse().ok())
}

/// The `seq` (the head that last wrote it) of an `entry` line.
pub fn entry_seq(line: &str) -> Option<i64> {
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        ["entry", _, _, _, _, seq, ..] => seq.parse().ok(),
        _ => None,
    }
}

/// Puts a head record and row lines back into bundle text, in the export's order (the order
/// the `check` lines cover). Also returns, per line of the text, the row key it came from
/// (`None` for head lines), so an error naming a line can name the record.
pub fn assemble<'a>(
    head: &str,
    rows: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (String, Vec<Option<String>>) {
    let rank_of = |line: &str| -> (u8, i64, i64) {
        let mut f = line.split(' ');
        let kind = f.next().unwrap_or_default();
        let a = f.next().and_then(|s| s.parse().ok()).unwrap_or(i64::MAX);
        let b = f.next().and_then(|s| s.parse().ok()).unwrap_or(i64::MAX);
        match kind {
            "slot" => (0, a, 0),
            "vault" => (1, a, 0),
            _ => (2, a, b),
        }
    };
    let mut sorted: Vec<(&str, &str)> = rows.into_iter().collect();
    sorted.sort_by_cached_key(|(_, line)| rank_of(line));
    let (pre, checks): (Vec<&str>, Vec<&str>) =
        head.lines().partition(|l| !l.starts_with("check "));
    let mut text = String::new();
    let mut keys = Vec::new();
    for l in pre {
        text.push_str(l);
        text.push('\n');
        keys.push(None);
    }
    for (key, line) in sorted {
        text.push_str(line);
        text.push('\n');
        keys.push(Some(key.to_owned()));
    }
    for l in checks {
        text.push_str(l);
        text.push('\n');
        keys.push(None);
    }
    (text, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyslot::{Credential, KdfParams};
    use crate::secret::SecretBytes;
    use crate::{Address, ApplyOptions, Bundle, Identity, Recipient, Store, VaultAcl};

    fn store(dir: &Path) -> (Store, Credential) {
        let cred = Credential::KeyFile(SecretBytes::new(vec![9; 32]));
        let mut s = Store::create(&dir.join("src.db"), &cred, KdfParams::default()).unwrap();
        let acl = VaultAcl {
            owner: "root".into(),
            group: "root".into(),
            mode: 0o400,
        };
        s.create_vault("web", acl.clone()).unwrap();
        s.create_vault("db", acl).unwrap();
        s.write(&Address::parse("web:/a").unwrap(), b"one").unwrap();
        s.write(&Address::parse("web:/d/b").unwrap(), b"two")
            .unwrap();
        s.write(&Address::parse("db:/c").unwrap(), b"three")
            .unwrap();
        (s, cred)
    }

    /// Split, shuffled and put back together, the export is the same text; read without a
    /// key, the rows are the same lines; and a mirror rebuilt from it opens with the key.
    #[test]
    fn split_assemble_read_and_mirror_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (s, cred) = store(dir.path());
        let text = s.export_mirror().unwrap();
        let (head, rows) = split(&text);
        assert_eq!(head_generation(&head), Some(s.head()));
        let mut shuffled: Vec<(&str, &str)> =
            rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        shuffled.reverse();
        let (again, keys) = assemble(&head, shuffled);
        assert_eq!(again, text);
        assert_eq!(keys.len(), text.lines().count());
        let raw = read_rows(&dir.path().join("src.db")).unwrap();
        assert_eq!(raw.lines, rows);
        assert_eq!(raw.generation, s.head());
        let copy = dir.path().join("copy.db");
        Bundle::parse(&again, "m").unwrap().mirror(&copy).unwrap();
        let opened = Store::open_with(
            &copy,
            &cred,
            &crate::OpenOptions {
                state_dir: None,
                ..Default::default()
            },
        )
        .unwrap();
        let v = opened.read(&Address::parse("db:/c").unwrap()).unwrap();
        assert_eq!(v.expose(), b"three");
        assert_eq!(read_rows(&copy).unwrap().lines, rows);
    }

    /// A host applies the assembled mirror; a row rolled back to an older line, or removed,
    /// no longer matches the check, and nothing is applied.
    #[test]
    fn host_refuses_an_edited_or_removed_row() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = store(dir.path());
        let id = age::x25519::Identity::generate();
        let recipient = Recipient::parse(&id.to_public().to_string()).unwrap();
        s.add_recipient_slot(&recipient, &["web".to_owned()], Some("h"))
            .unwrap();
        let old = split(&s.export_mirror().unwrap()).1;
        s.write(&Address::parse("web:/a").unwrap(), b"uno").unwrap();
        let (head, rows) = split(&s.export_mirror().unwrap());
        let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_owned();
        let host = Credential::Identity(
            Identity::parse(&SecretBytes::new(secret.into_bytes()), "id".as_ref()).unwrap(),
        );
        let replica = dir.path().join("replica.db");
        let opts = ApplyOptions::default();
        let changed: Vec<&String> = rows
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        let entry_key = changed
            .iter()
            .find(|k| k.starts_with("entry/"))
            .copied()
            .unwrap();
        // Rolled back: the old line of the entry, under the new head.
        let mut rolled = rows.clone();
        rolled.insert(entry_key.clone(), old[entry_key].clone());
        let (text, _) = assemble(&head, rolled.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let err = Bundle::parse(&text, "etcd")
            .unwrap()
            .apply(&replica, &host, &opts)
            .unwrap_err();
        assert!(err.is_tamper(), "{err}");
        // Removed.
        let mut removed = rows.clone();
        removed.remove(entry_key);
        let (text, _) = assemble(&head, removed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let err = Bundle::parse(&text, "etcd")
            .unwrap()
            .apply(&replica, &host, &opts)
            .unwrap_err();
        assert!(err.is_tamper(), "{err}");
        let (text, _) = assemble(&head, rows.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let done = Bundle::parse(&text, "etcd")
            .unwrap()
            .apply(&replica, &host, &opts)
            .unwrap();
        assert_eq!(done.vaults, vec!["web".to_owned()]);
    }
}
