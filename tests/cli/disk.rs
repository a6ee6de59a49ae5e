//! Nothing readable reaches the disk: values, names and ACLs are found in no file of the
//! store (main file, WAL, shared memory, journal) nor in the process's TMPDIR, raw or encoded;
//! and a replaced or removed value leaves no trace (secure_delete).

use std::path::Path;

use super::{random_text, secret_ids};
use crate::common::{contains, files_under, random_name, TestStore};

/// Standard base64 with the given alphabet, padding included.
fn base64(data: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn hex(data: &[u8], upper: bool) -> Vec<u8> {
    data.iter()
        .flat_map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
            .into_bytes()
        })
        .collect()
}

/// The forms in which `canary` could sit in a file: raw, hex, and base64 at each of the three
/// alignments it can have inside a longer encoded buffer (only whole 3-byte groups are encoded,
/// so each needle is exact whatever surrounds it).
fn encodings(canary: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("raw".to_owned(), canary.to_vec()),
        ("hex".to_owned(), hex(canary, false)),
        ("HEX".to_owned(), hex(canary, true)),
    ];
    for skip in 0..3 {
        let rest = &canary[skip..];
        let whole = &rest[..rest.len() / 3 * 3];
        out.push((format!("base64+{skip}"), base64(whole, B64_STD)));
        out.push((format!("base64url+{skip}"), base64(whole, B64_URL)));
    }
    out
}

/// Every (file, canary, form) where a canary is found below `root`.
fn leaks(root: &Path, canaries: &[(&str, &[u8])]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files_under(root) {
        let data = std::fs::read(&file).unwrap();
        for (what, canary) in canaries {
            for (form, needle) in encodings(canary) {
                if contains(&data, &needle) {
                    found.push(format!("{} holds the {what} ({form})", file.display()));
                }
            }
        }
    }
    found
}

#[test]
fn leak_scanner_finds_planted_canaries() {
    assert_eq!(base64(b"Man", B64_STD), b"TWFu");
    assert_eq!(base64(b"foobar", B64_STD), b"Zm9vYmFy");
    assert_eq!(base64(b"fo", B64_STD), b"Zm8=");
    assert_eq!(base64(&[0xfb, 0xff], B64_URL), b"-_8=");
    let canary = random_text(40);
    let dir = tempfile::tempdir().unwrap();
    for (i, prefix) in ["", "x", "xy"].iter().enumerate() {
        let mut buf = prefix.as_bytes().to_vec();
        buf.extend_from_slice(&canary);
        let planted = [
            (format!("raw{i}"), buf.clone()),
            (format!("hex{i}"), hex(&buf, false)),
            (format!("b64{i}"), base64(&buf, B64_STD)),
        ];
        for (name, data) in planted {
            let path = dir.path().join(&name);
            std::fs::write(&path, data).unwrap();
            let hits = leaks(dir.path(), &[("canary", &canary)]);
            assert!(!hits.is_empty(), "{name}: not found");
            std::fs::remove_file(path).unwrap();
        }
    }
}

#[test]
fn no_plaintext_on_disk() {
    let ts = TestStore::new();
    let value = random_text(48);
    let name = random_name();
    let dir = random_name();
    let vault = random_name();
    let other = random_name();
    let owner = random_name();
    ts.vault(&vault, &[]);
    // An idle connection of our own keeps the -wal and -shm files alive after each command
    // exits, so they can be scanned with everything the commands wrote into them.
    let holder = ts.db();
    let _: i64 = holder
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();

    let addr = format!("{vault}:/{dir}/{name}");
    let moved = format!("{vault}:/{name}");
    let other_addr = format!("{vault}:/{other}");
    ts.write(&addr, &value);
    ts.write(&other_addr, b"another value");
    assert_eq!(ts.cat(&addr), value);
    let listing = ts.ok_text(&["ls", &format!("{vault}:/{dir}")]);
    assert_eq!(listing.trim(), name);
    ts.ok(&["ls", "-l", &vault]);
    ts.ok(&["acl", "set", &addr, "--mode", "0440", "--owner", &owner]);
    ts.ok(&["acl", "show", &addr]);
    ts.ok(&["mkdir", "-p", &format!("{vault}:/{dir}/sub")]);
    ts.ok(&["mv", &addr, &moved]);
    ts.ok(&["rm", &other_addr]);
    ts.write(&moved, &value);
    ts.ok(&["env", &format!("{moved}=CANARY"), "--", "true"]);
    ts.ok(&["vault", "list"]);
    ts.ok(&["key", "list"]);
    assert_eq!(ts.cat(&moved), value);

    let canaries: [(&str, &[u8]); 5] = [
        ("secret value", &value),
        ("secret name", name.as_bytes()),
        ("directory name", dir.as_bytes()),
        ("vault name", vault.as_bytes()),
        ("owner name", owner.as_bytes()),
    ];
    let files = files_under(ts.dir.path());
    let wal = ts.store.with_extension("db-wal");
    assert!(files.contains(&wal), "no WAL to scan: {files:?}");
    let found = leaks(ts.dir.path(), &canaries);
    assert!(found.is_empty(), "plaintext on disk:\n{}", found.join("\n"));

    // Once the last connection closes, the WAL is checkpointed into the main file.
    drop(holder);
    let found = leaks(ts.dir.path(), &canaries);
    assert!(found.is_empty(), "plaintext on disk:\n{}", found.join("\n"));
}

/// The sealed value of the only secret row whose id is `id`.
fn sealed_value(ts: &TestStore, id: i64) -> Vec<u8> {
    ts.db()
        .query_row("SELECT value FROM entries WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
}

#[test]
fn replaced_and_removed_values_leave_no_trace_in_the_store_files() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    // A value in the row itself, one that spills into overflow pages, and a large one.
    let sizes = [200, 5_000, 200_000];
    let mut old = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let value = random_text(*size);
        ts.write(&format!("v:/s{i}"), &value);
        old.push(value);
    }
    ts.write("v:/gone", &random_text(3_000));
    let ids = secret_ids(&ts);
    assert_eq!(ids.len(), 4);
    let sealed: Vec<Vec<u8>> = ids.iter().map(|&id| sealed_value(&ts, id)).collect();

    for i in 0..sizes.len() {
        ts.write(&format!("v:/s{i}"), format!("new value {i}").as_bytes());
    }
    ts.ok(&["rm", "v:/gone"]);

    // Every 64-byte window at a few offsets of each old ciphertext, and the old plaintexts.
    let mut canaries: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, ct) in sealed.iter().enumerate() {
        for at in [0, ct.len() / 2, ct.len() - 64] {
            canaries.push((
                format!("old ciphertext {i} at {at}"),
                ct[at..at + 64].to_vec(),
            ));
        }
    }
    for (i, value) in old.iter().enumerate() {
        canaries.push((format!("old value {i}"), value[..64].to_vec()));
    }
    for file in files_under(ts.dir.path()) {
        let data = std::fs::read(&file).unwrap();
        for (what, needle) in &canaries {
            assert!(
                !contains(&data, needle),
                "{} still holds the {what} (secure_delete)",
                file.display()
            );
        }
    }
    for i in 0..sizes.len() {
        assert_eq!(
            ts.cat(&format!("v:/s{i}")),
            format!("new value {i}").as_bytes()
        );
    }
}
