//! The store and the CLI, end to end through the real binary (issue #2): values round-trip byte
//! for byte, nothing readable reaches the disk, tampered rows are refused with exit 3 and a
//! message naming the row, credentials and addresses fail with one clear line, concurrent
//! writers lose nothing, and key slots, `env`, ACLs, `ls -l` and help behave as documented.

use std::process::{Command, Output};

use crate::common::{
    assert_fails, assert_success, code, random_bytes, random_name, run_command, vaultfs_bin,
    TestStore,
};

// keygen, init, credentials and key slots.
mod keys;
// Nothing readable on disk; old values gone after a rewrite.
mod disk;
// Rows changed behind the store's back are refused.
mod tamper;
// Several processes writing at once.
mod concurrency;
// `vaultfs env`.
mod env;
// Input from a terminal or an empty pipe.
mod input;
// Commands against a vault mounted on this host.
mod mounted;
// Shell completions and man pages.
mod docs;
// Tables and JSON.
mod lists;
// The quick-start demo.
mod demo;

/// Exit code for a malformed address or a wrong credential (src/exit.rs).
const USAGE_OR_AUTH: i32 = 2;
/// Exit code for a row that failed authentication (src/exit.rs).
const INTEGRITY: i32 = 3;

/// A random printable value: letters and digits, so its hex and base64 forms are meaningful.
fn random_text(n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes(n)
        .into_iter()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()])
        .collect()
}

#[test]
fn harness_finds_tools_and_root() {
    use crate::common::{is_root, require_tool};
    assert!(require_tool("sh"));
    let id = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(is_root(), String::from_utf8_lossy(&id.stdout).trim() == "0");
    let (a, b) = (random_name(), random_name());
    assert_ne!(a, b);
    assert_eq!(a.len(), 20);
}

/// A test that cannot run fails, unless VAULTFS_TEST_SKIP opts out; then the run lists it. CI
/// never skips. Checked by running this test binary again, as a child, on this very test.
#[test]
fn harness_fails_or_lists_what_it_cannot_run() {
    const TOOL: &str = "no-such-tool-vaultfs-probe";
    if std::env::var_os("VAULTFS_HARNESS_PROBE").is_some() {
        crate::common::require_tool(TOOL);
        return;
    }
    let probe = |ci: bool, skip: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "cli::harness_fails_or_lists_what_it_cannot_run",
            "--exact",
            "--test-threads=1",
        ])
        .env("VAULTFS_HARNESS_PROBE", "1")
        .env_remove("VAULTFS_TEST_SKIP")
        .env_remove("CI");
        if ci {
            cmd.env("CI", "true");
        }
        if let Some(kinds) = skip {
            cmd.env("VAULTFS_TEST_SKIP", kinds);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = probe(false, None);
    assert!(!ok, "a missing tool passed: {text}");
    assert!(
        text.contains(TOOL) && text.contains(&format!("VAULTFS_TEST_SKIP={TOOL}")),
        "{text}"
    );
    let (ok, text) = probe(false, Some(&format!("root,{TOOL}")));
    assert!(ok, "opted out, the test should be skipped: {text}");
    assert!(
        text.contains("SKIPPED cli::harness_fails_or_lists_what_it_cannot_run")
            && text.contains("SKIPPED 1 test(s)"),
        "the skip is not listed: {text}"
    );
    let (ok, text) = probe(false, Some("all"));
    assert!(ok && text.contains("SKIPPED 1 test(s)"), "{text}");
    let (ok, text) = probe(true, Some("all"));
    assert!(!ok, "CI=true skipped a test: {text}");
}

// ----- round trips -----

#[test]
fn values_round_trip_byte_for_byte() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    let every_byte: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let nuls = b"\0\0a\0\n\0".to_vec();
    let big = random_bytes(1 << 20);
    let cases: [(&str, &[u8]); 5] = [
        ("v:/empty", b""),
        ("v:/bytes", &every_byte),
        ("v:/nuls", &nuls),
        ("v:/trailing-newlines", b"token\n\n"),
        ("v:/dir/big", &big),
    ];
    for (addr, value) in cases {
        ts.write(addr, value);
    }
    for (addr, value) in cases {
        let got = ts.cat(addr);
        // Compared without assert_eq!, which would print a MiB of bytes.
        assert!(
            got == value,
            "{addr}: read {} bytes, wrote {}",
            got.len(),
            value.len()
        );
    }
    // A rewrite replaces the whole value, also with a shorter one.
    ts.write("v:/dir/big", b"short");
    assert_eq!(ts.cat("v:/dir/big"), b"short");
    ts.write("v:/bytes", b"");
    assert_eq!(ts.cat("v:/bytes"), b"");
}

#[test]
fn oversized_secret_is_refused_and_nothing_stored() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"old");
    let huge = vec![b'x'; 16 * 1024 * 1024 + 1];
    let out = ts.run(&["write", "v:/s"], &huge);
    let line = assert_fails(&out, &["write (16 MiB + 1)"], 1);
    assert!(line.contains("larger than"), "{line}");
    assert_eq!(ts.cat("v:/s"), b"old");
}

/// Ids of the rows holding a value, oldest first.
fn secret_ids(ts: &TestStore) -> Vec<i64> {
    let db = ts.db();
    let mut stmt = db
        .prepare("SELECT id FROM entries WHERE value IS NOT NULL ORDER BY id")
        .unwrap();
    let ids = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<Vec<i64>>>()
        .unwrap();
    ids
}

// ----- bad input -----

// An address holding NUL cannot be passed at all (argv strings end at NUL); the store's own
// unit tests refuse `nix:/a\0b`. Here: the forms a shell can deliver.
#[test]
fn bad_addresses_are_one_line_usage_errors() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    let long = format!("v:/{}", "x".repeat(256));
    let cases: [(&str, &str); 8] = [
        ("nix:relative", "must be absolute"),
        ("nix:/../x", "`.` and `..`"),
        ("nix:/a/./b", "`.` and `..`"),
        ("v:/a/..", "`.` and `..`"),
        ("nix:/a//b", "empty path component"),
        (":/x", "missing vault name"),
        (&long, "longer than 255 bytes"),
        ("v", "not a whole vault"),
    ];
    for (addr, reason) in cases {
        for args in [vec!["cat", addr], vec!["rm", addr], vec!["mkdir", addr]] {
            let line = ts.fails(&args, USAGE_OR_AUTH);
            assert!(line.contains("invalid address"), "{args:?}: {line}");
            assert!(line.contains(reason), "{args:?}: {line}");
        }
        let out = ts.run(&["write", addr], b"value");
        let line = assert_fails(&out, &["write", addr], USAGE_OR_AUTH);
        assert!(line.contains(reason), "write {addr}: {line}");
    }
    // 255 bytes is the limit, not past it.
    let longest = format!("v:/{}", "x".repeat(255));
    ts.write(&longest, b"fits");
    assert_eq!(ts.cat(&longest), b"fits");
    // Vault names follow the same rules, and may not hold `:`.
    ts.fails(&["vault", "create", "a:b"], USAGE_OR_AUTH);
    ts.fails(&["vault", "create", ".."], USAGE_OR_AUTH);
    let line = ts.fails(&["vault", "create", "m", "--mode", "9999"], USAGE_OR_AUTH);
    assert!(line.contains("invalid mode"), "{line}");
    // Nothing was stored by the refused commands.
    assert_eq!(ts.ok_text(&["ls", "v"]), format!("{}\n", "x".repeat(255)));
    // A header and one vault.
    assert_eq!(ts.ok_text(&["vault", "list"]).lines().count(), 2);
}

#[test]
fn unknown_vault_is_named() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    for args in [
        &["cat", "nosuch:/x"][..],
        &["ls", "nosuch"],
        &["acl", "show", "nosuch:/x"],
        &["vault", "remove", "nosuch"],
    ] {
        let line = ts.fails_any(args);
        assert!(line.contains("\"nosuch\""), "{args:?}: {line}");
    }
    let out = ts.run(&["write", "nosuch:/x"], b"value");
    assert_ne!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nosuch\""));
    // A header and one vault.
    assert_eq!(ts.ok_text(&["vault", "list"]).lines().count(), 2);
    let line = ts.fails_any(&["cat", "v:/missing"]);
    assert!(line.contains("v:/missing: no such file"), "{line}");
}

#[test]
fn vault_remove_needs_force_when_not_empty() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.vault("empty", &[]);
    ts.write("v:/d/s", b"still here");
    let line = ts.fails_any(&["vault", "remove", "v"]);
    assert!(
        line.contains("not empty") && line.contains("--force"),
        "{line}"
    );
    assert_eq!(ts.cat("v:/d/s"), b"still here");
    ts.ok(&["vault", "remove", "empty"]);
    ts.ok(&["vault", "remove", "v", "--force"]);
    let line = ts.fails_any(&["cat", "v:/d/s"]);
    assert!(line.contains("no vault named \"v\""), "{line}");
    assert_eq!(ts.ok_text(&["vault", "list"]), "");
    // The name is free again, and the new vault starts empty.
    ts.vault("v", &[]);
    assert_eq!(ts.ok_text(&["ls", "v"]), "");
}

#[test]
fn rm_mv_and_mkdir() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.vault("w", &[]);
    ts.ok(&["mkdir", "v:/d"]);
    ts.fails_any(&["mkdir", "v:/d"]);
    ts.ok(&["mkdir", "-p", "v:/d"]);
    ts.fails_any(&["mkdir", "v:/x/y"]);
    ts.ok(&["mkdir", "-p", "v:/x/y"]);
    ts.write("v:/d/s", b"s");
    let line = ts.fails_any(&["rm", "v:/d"]);
    assert!(line.contains("not empty"), "{line}");
    ts.ok(&["rm", "-r", "v:/d"]);
    ts.fails_any(&["cat", "v:/d/s"]);

    ts.write("v:/a", b"A");
    ts.write("v:/b", b"B");
    ts.ok(&["mv", "v:/a", "v:/x/y/a"]);
    assert_eq!(ts.cat("v:/x/y/a"), b"A");
    ts.fails_any(&["cat", "v:/a"]);
    let line = ts.fails_any(&["mv", "v:/b", "v:/x/y/a"]);
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(ts.cat("v:/x/y/a"), b"A", "mv must not replace");
    ts.fails_any(&["mv", "v:/x", "v:/x/y/z"]);
    ts.fails_any(&["mv", "v:/b", "w:/b"]);
    assert_eq!(ts.cat("v:/b"), b"B");
    ts.fails_any(&["write", "v:/x"]); // a directory
    assert_eq!(ts.ok_text(&["ls", "v"]), "b\nx/\n");
}

// ----- ACLs and listings -----

/// The `(value, source)` of the `label` line of `acl show`.
fn acl_field(show: &str, label: &str) -> (String, String) {
    let line = show
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label))
        .unwrap_or_else(|| panic!("no {label} line in {show}"));
    let rest = line[label.len()..].trim();
    let (value, source) = rest.split_once(" (").expect("value (source)");
    (
        value.trim().to_owned(),
        source.trim_end_matches(')').to_owned(),
    )
}

#[test]
fn acl_unset_removes_overrides_so_the_entry_inherits_again() {
    let ts = TestStore::new();
    ts.vault(
        "v",
        &["--owner", "root", "--group", "root", "--mode", "0400"],
    );
    ts.write("v:/s", b"x");
    ts.ok(&[
        "acl", "set", "v:/s", "--owner", "daemon", "--group", "nogroup", "--mode", "0440",
    ]);
    ts.ok(&["acl", "unset", "v:/s", "--mode"]);
    let show = ts.ok_text(&["acl", "show", "v:/s"]);
    assert_eq!(
        acl_field(&show, "mode"),
        ("0400".into(), "vault v default".into())
    );
    assert_eq!(
        acl_field(&show, "owner"),
        ("daemon".into(), "set here".into())
    );
    ts.ok(&["acl", "unset", "v:/s"]);
    let show = ts.ok_text(&["acl", "show", "v:/s"]);
    for l in ["owner", "group", "mode"] {
        assert_eq!(acl_field(&show, l).1, "vault v default", "{show}");
    }
    assert_eq!(ts.cat("v:/s"), b"x", "the value is untouched");
    let err = ts.fails_any(&["acl", "unset", "v"]);
    assert!(err.contains("cannot be removed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn acl_show_says_where_each_value_comes_from() {
    let ts = TestStore::new();
    ts.vault(
        "v",
        &["--owner", "root", "--group", "root", "--mode", "0400"],
    );
    ts.write("v:/dir/s", b"x");
    ts.ok(&[
        "acl", "set", "v:/dir", "--owner", "daemon", "--mode", "0440",
    ]);
    ts.ok(&["acl", "set", "v:/dir/s", "--group", "nogroup"]);

    let show = ts.ok_text(&["acl", "show", "v:/dir/s"]);
    assert_eq!(show.lines().next(), Some("v:/dir/s"));
    let f = |l| acl_field(&show, l);
    assert_eq!(
        f("owner"),
        ("daemon".into(), "inherited from v:/dir".into())
    );
    assert_eq!(f("group"), ("nogroup".into(), "set here".into()));
    assert_eq!(f("mode"), ("0440".into(), "inherited from v:/dir".into()));
    assert!(show.contains("-r--r-----"), "{show}");

    let show = ts.ok_text(&["acl", "show", "v:/dir"]);
    let f = |l| acl_field(&show, l);
    assert_eq!(f("owner"), ("daemon".into(), "set here".into()));
    assert_eq!(f("group"), ("root".into(), "vault v default".into()));
    assert!(show.contains("dr-xr-x---"), "{show}");

    let show = ts.ok_text(&["acl", "show", "v"]);
    for l in ["owner", "group", "mode"] {
        assert_eq!(acl_field(&show, l).1, "vault v default", "{show}");
    }
    // Changing the vault's default shows through wherever nothing overrides it.
    ts.ok(&["acl", "set", "v", "--group", "daemon"]);
    let show = ts.ok_text(&["acl", "show", "v:/dir"]);
    assert_eq!(
        acl_field(&show, "group"),
        ("daemon".into(), "vault v default".into())
    );
    let line = ts.fails(&["acl", "set", "v:/dir"], USAGE_OR_AUTH);
    assert!(line.contains("nothing to set"), "{line}");
}

#[test]
fn ls_long_shows_mode_owner_group_and_size() {
    let ts = TestStore::new();
    ts.vault(
        "v",
        &["--owner", "root", "--group", "root", "--mode", "0440"],
    );
    ts.write("v:/dir/s", b"12345");
    ts.write("v:/top", b"hello world");
    ts.ok(&[
        "acl", "set", "v:/top", "--owner", "daemon", "--group", "nogroup", "--mode", "0600",
    ]);
    assert_eq!(ts.ok_text(&["ls", "v"]), "dir/\ntop\n");

    let fields = |listing: &str| -> Vec<Vec<String>> {
        listing
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    let listing = ts.ok_text(&["ls", "-l", "v"]);
    let (header, listing) = listing.split_once('\n').unwrap();
    assert!(header.starts_with("MODE"), "{header}");
    let rows = fields(listing);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(
            row.len(),
            7,
            "mode owner group size date time name: {row:?}"
        );
        let (date, time) = (row[4].as_bytes(), row[5].as_bytes());
        assert!(
            date.len() == 10 && date[4] == b'-' && date[7] == b'-',
            "{row:?}"
        );
        assert!(
            time.len() == 8 && time[2] == b':' && time[5] == b':',
            "{row:?}"
        );
    }
    assert_eq!(rows[0][..4], ["dr-xr-x---", "root", "root", "0"]);
    assert_eq!(rows[0][6], "dir/");
    assert_eq!(rows[1][..4], ["-rw-------", "daemon", "nogroup", "11"]);
    assert_eq!(rows[1][6], "top");

    let rows = fields(&ts.ok_text(&["ls", "-l", "v:/dir"]));
    assert_eq!(rows[0][0], "MODE", "a header first");
    let rows = &rows[1..];
    assert_eq!(rows[0][..4], ["-r--r-----", "root", "root", "5"]);
    assert_eq!(rows[0][6], "s");
    // A single secret lists itself.
    let rows = fields(&ts.ok_text(&["ls", "--long", "v:/top"]));
    assert_eq!(rows.len(), 2, "a header and the secret");
    assert_eq!(rows[1][6], "top");
}

// ----- help -----

fn help(path: &[&str]) -> Output {
    let mut cmd = Command::new(vaultfs_bin());
    cmd.args(path).arg("--help");
    run_command(&mut cmd, b"")
}

#[test]
fn help_of_every_command_has_an_example() {
    let commands: [&[&str]; 22] = [
        &[],
        &["keygen"],
        &["init"],
        &["key", "list"],
        &["key", "add"],
        &["key", "remove"],
        &["vault", "create"],
        &["vault", "list"],
        &["vault", "remove"],
        &["write"],
        &["cat"],
        &["ls"],
        &["rm"],
        &["mv"],
        &["mkdir"],
        &["acl", "show"],
        &["acl", "set"],
        &["env"],
        &["mount"],
        &["umount"],
        &["serve"],
        &["demo"],
    ];
    for path in commands {
        let out = help(path);
        assert_success(&out, path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Example"), "`{path:?} --help`:\n{stdout}");
        assert!(stdout.contains("vaultfs"), "`{path:?} --help`:\n{stdout}");
    }
}

#[test]
fn help_of_every_command_group_has_an_example() {
    for path in [&["key"][..], &["vault"], &["acl"]] {
        let out = help(path);
        assert_success(&out, path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Example"), "`{path:?} --help`:\n{stdout}");
    }
}
