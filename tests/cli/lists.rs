//! Lists for people and for scripts: aligned columns under a header (`vault list`, `key list`,
//! `ls -l`) and `--json` (`ls`, `vault list`, `key list`, `acl show`).

use super::USAGE_OR_AUTH;
use crate::common::TestStore;

/// Asserts that every line starts each column where the header's title starts.
fn assert_aligned(text: &str, titles: &[&str]) {
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    let starts: Vec<usize> = titles
        .iter()
        .map(|t| {
            header
                .find(t)
                .unwrap_or_else(|| panic!("no {t} in {header:?}"))
        })
        .collect();
    assert_eq!(starts[0], 0, "{header}");
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "no rows under {header:?}");
    for row in rows {
        for (i, &start) in starts.iter().enumerate().skip(1) {
            // Left-aligned columns start under their title, after a separating space.
            let before = &row[..start];
            assert!(
                before.ends_with(' ') && !row[start..].starts_with(' ') || titles[i] == "SIZE",
                "column {} of {row:?} is not under {header:?}",
                titles[i]
            );
        }
    }
}

fn json(ts: &TestStore, args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&ts.ok(args))
        .unwrap_or_else(|e| panic!("`vaultfs {}` is not JSON: {e}", args.join(" ")))
}

#[test]
fn lists_have_a_header_and_aligned_columns() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.vault(
        "a-much-longer-vault-name",
        &["--owner", "daemon", "--group", "daemon"],
    );
    ts.write("v:/short", b"x");
    ts.write("v:/a-much-longer-secret-name", &[b'y'; 12345]);
    ts.ok(&["mkdir", "v:/dir"]);
    let key = ts.path("second.key");
    ts.ok(&["keygen", key.to_str().unwrap()]);
    ts.ok(&["key", "add", "--new-key-file", key.to_str().unwrap()]);

    let vaults = ts.ok_text(&["vault", "list"]);
    assert_aligned(&vaults, &["NAME", "OWNER", "GROUP", "MODE", "CREATED"]);
    assert_eq!(vaults.lines().count(), 3, "{vaults}");
    let keys = ts.ok_text(&["key", "list"]);
    assert_aligned(&keys, &["ID", "KIND", "KDF", "ADDED"]);
    let ls = ts.ok_text(&["ls", "-l", "v"]);
    assert_aligned(&ls, &["MODE", "OWNER", "GROUP", "SIZE", "MODIFIED", "NAME"]);
    // Sizes are right-aligned: they end where the SIZE title ends.
    let header = ls.lines().next().unwrap();
    let size_end = header.find("SIZE").unwrap() + 4;
    for row in ls.lines().skip(1) {
        assert!(
            row[..size_end].ends_with(|c: char| c.is_ascii_digit()),
            "{row}"
        );
        assert_eq!(&row[size_end..size_end + 1], " ", "{row}");
    }
    assert!(ls.contains(" 12345 "), "{ls}");
    // Plain `ls` stays one name per line.
    assert_eq!(
        ts.ok_text(&["ls", "v"]),
        "a-much-longer-secret-name\ndir/\nshort\n"
    );
}

#[test]
fn json_output_for_scripts() {
    let ts = TestStore::new();
    ts.vault("v", &["--mode", "0440"]);
    ts.write("v:/dir/s", b"12345");
    ts.ok(&["acl", "set", "v:/dir", "--owner", "daemon"]);

    let ls = json(&ts, &["ls", "--json", "v:/dir"]);
    let item = &ls.as_array().unwrap()[0];
    assert_eq!(item["name"], "s");
    assert_eq!(item["address"], "v:/dir/s");
    assert_eq!(item["kind"], "secret");
    assert_eq!(item["size"], 5);
    assert_eq!(item["owner"], "daemon");
    assert_eq!(item["mode"], "0440");
    assert!(
        !ts.ok_text(&["ls", "--json", "v:/dir"]).contains("12345\""),
        "no value"
    );

    let vaults = json(&ts, &["vault", "list", "--json"]);
    assert_eq!(vaults[0]["name"], "v");
    assert_eq!(vaults[0]["mode"], "0440");

    let keys = json(&ts, &["key", "list", "--json"]);
    assert_eq!(keys[0]["id"], 1);
    assert_eq!(keys[0]["kind"], "keyfile");

    let acl = json(&ts, &["acl", "show", "--json", "v:/dir/s"]);
    assert_eq!(acl["owner"]["value"], "daemon");
    assert_eq!(acl["owner"]["from"], "inherited from v:/dir");
    assert_eq!(acl["mode"]["value"], "0440");
    assert_eq!(acl["mode"]["from"], "vault v default");
    assert_eq!(acl["shown"], "-r--r-----");
}

#[test]
fn an_empty_owner_or_group_is_refused() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    for args in [
        &["acl", "set", "v", "--owner", ""][..],
        &["acl", "set", "v:/x", "--group", " "],
        &["vault", "create", "w", "--owner", ""],
    ] {
        let line = ts.fails(args, USAGE_OR_AUTH);
        assert!(line.contains("is empty"), "{args:?}: {line}");
    }
    assert!(!ts.ok_text(&["vault", "list"]).contains("\nw "));
}
