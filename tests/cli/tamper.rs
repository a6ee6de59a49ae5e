//! Rows changed behind the store's back, with SQLite directly: every command that meets one
//! exits 3 with one line naming the row, prints no value, and re-seals nothing.

use std::process::Output;

use super::{random_text, secret_ids, INTEGRITY};
use crate::common::{assert_fails, contains, TestStore};

/// A store with vault `v` holding secrets `a` and `b` (in that order) and their row ids.
struct Tampered {
    ts: TestStore,
    a: Vec<u8>,
    b: Vec<u8>,
    id_a: i64,
    id_b: i64,
}

impl Tampered {
    fn new() -> Tampered {
        let ts = TestStore::new();
        ts.vault("v", &[]);
        let (a, b) = (random_text(40), random_text(40));
        ts.write("v:/a", &a);
        ts.write("v:/b", &b);
        let ids = secret_ids(&ts);
        assert_eq!(ids.len(), 2);
        Tampered {
            ts,
            a,
            b,
            id_a: ids[0],
            id_b: ids[1],
        }
    }

    /// Swaps column `col` of rows `x` and `y` (through a third value, for UNIQUE columns).
    fn swap(&self, table: &str, col: &str, x: i64, y: i64) {
        let db = self.ts.db();
        let get = |id: i64| -> Vec<u8> {
            db.query_row(
                &format!("SELECT {col} FROM {table} WHERE id = ?1"),
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        let (vx, vy) = (get(x), get(y));
        assert_ne!(vx, vy);
        let set = |id: i64, v: &[u8]| {
            let n = db
                .execute(
                    &format!("UPDATE {table} SET {col} = ?1 WHERE id = ?2"),
                    rusqlite::params![v, id],
                )
                .unwrap();
            assert_eq!(n, 1);
        };
        set(x, b"placeholder");
        set(y, &vx);
        set(x, &vy);
    }

    /// Flips one bit in the middle of blob column `col` of row `id`.
    fn flip(&self, table: &str, col: &str, id: i64) {
        let db = self.ts.db();
        let mut blob: Vec<u8> = db
            .query_row(
                &format!("SELECT {col} FROM {table} WHERE id = ?1"),
                [id],
                |r| r.get(0),
            )
            .unwrap();
        let mid = blob.len() / 2;
        blob[mid] ^= 0x01;
        db.execute(
            &format!("UPDATE {table} SET {col} = ?1 WHERE id = ?2"),
            rusqlite::params![blob, id],
        )
        .unwrap();
    }

    /// Runs `args`; asserts exit 3, one line naming `row` and saying it failed authentication,
    /// and neither secret's value anywhere in the output.
    fn refused(&self, args: &[&str], row: &str) -> Output {
        let out = self.ts.run(args, b"");
        let line = assert_fails(&out, args, INTEGRITY);
        assert!(line.contains(row), "{args:?}: {line:?} does not name {row}");
        assert!(
            line.contains("failed authentication") && line.contains("tampered"),
            "{args:?}: {line}"
        );
        for value in [&self.a, &self.b] {
            assert!(!contains(&out.stdout, value), "{args:?}: a value on stdout");
            assert!(!contains(&out.stderr, value), "{args:?}: a value on stderr");
        }
        out
    }

    fn entry(&self, id: i64) -> String {
        format!("entry #{id} of vault \"v\"")
    }
}

#[test]
fn swapped_values_are_refused() {
    let t = Tampered::new();
    t.swap("entries", "value", t.id_a, t.id_b);
    let out = t.refused(&["cat", "v:/a"], &t.entry(t.id_a));
    assert!(out.stdout.is_empty());
    t.refused(&["cat", "v:/b"], &t.entry(t.id_b));
    t.refused(&["env", "v:/a", "--", "echo", "RAN"], &t.entry(t.id_a));
    // Commands that re-seal a row must not launder the swapped value into an authentic one.
    t.refused(&["mv", "v:/a", "v:/c"], &t.entry(t.id_a));
    t.refused(&["acl", "set", "v:/a", "--mode", "0440"], &t.entry(t.id_a));
    t.refused(&["cat", "v:/a"], &t.entry(t.id_a));
    // Listing reads only the (intact) metadata, never a value.
    assert_eq!(t.ts.ok_text(&["ls", "v"]), "a\nb\n");
    t.ts.ok(&["acl", "show", "v:/a"]);
    // Writing a new value replaces the bad one.
    t.ts.write("v:/a", b"fresh");
    assert_eq!(t.ts.cat("v:/a"), b"fresh");
}

#[test]
fn swapped_metadata_is_refused() {
    let t = Tampered::new();
    // The metadata holds the name, kind, size and ACL: a swap renames and re-permissions.
    t.swap("entries", "meta", t.id_a, t.id_b);
    let out = t.refused(&["cat", "v:/a"], &t.entry(t.id_a));
    assert!(out.stdout.is_empty());
    t.refused(&["cat", "v:/b"], &t.entry(t.id_b));
    t.refused(&["acl", "show", "v:/a"], &t.entry(t.id_a));
    let out = t.refused(&["ls", "v"], "of vault \"v\"");
    assert!(out.stdout.is_empty(), "ls printed a partial listing");
    t.refused(&["ls", "-l", "v"], "of vault \"v\"");
}

#[test]
fn swapped_rows_are_refused() {
    let t = Tampered::new();
    // Everything but the row id: name index, metadata and value move together. Asking for `a`
    // now finds row #b holding what was sealed for row #a.
    for col in ["name_tag", "meta", "value"] {
        t.swap("entries", col, t.id_a, t.id_b);
    }
    let out = t.refused(&["cat", "v:/a"], &t.entry(t.id_b));
    assert!(out.stdout.is_empty());
    t.refused(&["cat", "v:/b"], &t.entry(t.id_a));
    t.refused(&["ls", "v"], "of vault \"v\"");
}

#[test]
fn swapped_name_index_is_refused() {
    let t = Tampered::new();
    // Only the keyed name hashes: `a` now leads to `b`'s (authentic) row.
    t.swap("entries", "name_tag", t.id_a, t.id_b);
    let out = t.refused(&["cat", "v:/a"], &t.entry(t.id_b));
    assert!(out.stdout.is_empty());
    t.refused(&["cat", "v:/b"], &t.entry(t.id_a));
}

#[test]
fn flipped_value_bit_is_refused() {
    let t = Tampered::new();
    t.flip("entries", "value", t.id_b);
    let out = t.refused(&["cat", "v:/b"], &t.entry(t.id_b));
    assert!(out.stdout.is_empty());
    assert_eq!(t.ts.cat("v:/a"), t.a, "the intact neighbour");
    assert_eq!(t.ts.ok_text(&["ls", "v"]), "a\nb\n");
}

#[test]
fn changed_clear_columns_are_refused() {
    let t = Tampered::new();
    t.ts.ok(&["mkdir", "v:/d"]);
    // Moving `b` into `d` by its clear parent column: its sealed metadata says otherwise.
    let db = t.ts.db();
    let d: i64 = db
        .query_row("SELECT max(id) FROM entries", [], |r| r.get(0))
        .unwrap();
    db.execute(
        "UPDATE entries SET parent_id = ?1 WHERE id = ?2",
        [d, t.id_b],
    )
    .unwrap();
    // And bumping `a`'s version, which is bound into its metadata and value.
    db.execute(
        "UPDATE entries SET version = version + 1 WHERE id = ?1",
        [t.id_a],
    )
    .unwrap();
    drop(db);
    t.refused(&["ls", "v:/d"], &t.entry(t.id_b));
    t.refused(&["cat", "v:/b"], &t.entry(t.id_b));
    t.refused(&["cat", "v:/a"], &t.entry(t.id_a));
}

#[test]
fn flipped_acl_bit_is_refused() {
    let t = Tampered::new();
    t.ts.write("v:/d/s", b"inside");
    t.ts.ok(&["acl", "set", "v:/d", "--owner", "daemon", "--mode", "0440"]);
    let db = t.ts.db();
    let d: i64 = db
        .query_row(
            "SELECT id FROM entries WHERE value IS NULL ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    t.flip("entries", "meta", d);
    t.refused(&["acl", "show", "v:/d"], &t.entry(d));
    t.refused(&["acl", "show", "v:/d/s"], &t.entry(d));
    t.refused(&["cat", "v:/d/s"], &t.entry(d));
    t.refused(&["ls", "-l", "v"], &t.entry(d));
    assert_eq!(t.ts.cat("v:/a"), t.a, "entries outside the damage");
}

#[test]
fn vault_row_is_refused() {
    let t = Tampered::new();
    t.ts.vault("w", &[]);
    t.ts.write("w:/a", b"w's value");
    let db = t.ts.db();
    let vid = |name: &str| -> i64 {
        // Vault ids follow creation order: v first, then w.
        let ids: Vec<i64> = db
            .prepare("SELECT id FROM vaults ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        ids[usize::from(name == "w")]
    };
    let (v, w) = (vid("v"), vid("w"));
    drop(db);

    // The two vaults' name index swapped: asking for v must not serve w's secrets.
    t.swap("vaults", "name_tag", v, w);
    let out = t.refused(&["cat", "v:/a"], "vault \"v\"");
    assert!(!contains(&out.stdout, b"w's value"));
    t.refused(&["cat", "w:/a"], "vault \"w\"");
    t.swap("vaults", "name_tag", v, w);
    assert_eq!(t.ts.cat("v:/a"), t.a, "swapped back");

    // The vault keys (wrapped by the master key, bound to their row) swapped: v must not open
    // with w's key, nor w with v's; nor a whole vault row (key and record) moved to another id.
    t.swap("vaults", "wrapped_key", v, w);
    t.refused(&["cat", "v:/a"], "vault \"v\"");
    t.refused(&["cat", "w:/a"], "vault \"w\"");
    for col in ["name_tag", "sealed"] {
        t.swap("vaults", col, v, w);
    }
    t.refused(&["cat", "v:/a"], "vault \"v\"");
    for col in ["name_tag", "sealed", "wrapped_key"] {
        t.swap("vaults", col, v, w);
    }
    assert_eq!(t.ts.cat("v:/a"), t.a, "swapped back");

    // One bit of v's sealed row (its name, key and default ACL).
    t.flip("vaults", "sealed", v);
    t.refused(&["cat", "v:/a"], "vault \"v\"");
    t.refused(&["ls", "v"], "vault \"v\"");
    t.refused(&["acl", "show", "v"], "vault \"v\"");
    t.refused(&["write", "--allow-empty", "v:/c"], "vault \"v\"");
    t.refused(&["vault", "list"], &format!("vault row #{v}"));
    assert_eq!(t.ts.cat("w:/a"), b"w's value", "the other vault");
}
