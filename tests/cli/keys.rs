//! keygen, init, a missing store, wrong credentials and key slots.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use super::USAGE_OR_AUTH;
use crate::common::{
    assert_fails, assert_success, code, run_command, vaultfs_bin, write_private, TestStore,
};

#[test]
fn keygen_writes_mode_0600_and_refuses_to_overwrite() {
    let ts = TestStore::new();
    let meta = std::fs::metadata(&ts.key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "key file mode");
    let original = std::fs::read(&ts.key).unwrap();
    assert_eq!(original.len(), 65, "64 hex digits and a newline");
    assert!(original[..64].iter().all(u8::is_ascii_hexdigit));

    let key = ts.key.to_str().unwrap();
    let line = ts.fails_any(&["keygen", key]);
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read(&ts.key).unwrap(), original, "key overwritten");

    // Two new keys differ.
    let (a, b) = (ts.path("a.key"), ts.path("b.key"));
    ts.ok(&["keygen", a.to_str().unwrap()]);
    ts.ok(&["keygen", b.to_str().unwrap()]);
    assert_ne!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn init_refuses_an_existing_store() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"kept");
    let line = ts.fails_any(&["init"]);
    assert!(line.contains("already exists"), "{line}");

    // Not even with another credential: the store and its slots are untouched.
    let other = ts.path("other.key");
    ts.ok(&["keygen", other.to_str().unwrap()]);
    let out = run_command(ts.cmd().env("VAULTFS_KEY_FILE", &other).arg("init"), b"");
    assert_ne!(code(&out), 0);
    assert_eq!(ts.cat("v:/s"), b"kept");
    assert_eq!(ts.ok_text(&["key", "list"]).lines().count(), 2, "one slot");
}

#[test]
fn init_with_a_passphrase_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let pass = dir.path().join("pass");
    write_private(&pass, "a passphrase\n");
    let vaultfs = |args: &[&str], stdin: &[u8]| -> Output {
        let mut cmd = Command::new(vaultfs_bin());
        cmd.env_remove("VAULTFS_KEY_FILE")
            .env("VAULTFS_STORE", &store)
            .arg("--passphrase-file")
            .arg(&pass)
            .args(args);
        run_command(&mut cmd, stdin)
    };
    for bad in [
        &["init", "--kdf-memory", "7"][..],
        &["init", "--kdf-memory", "8", "--kdf-iterations", "0"],
    ] {
        let out = vaultfs(bad, b"");
        assert_fails(&out, bad, USAGE_OR_AUTH);
        assert!(!store.exists(), "{bad:?} left a store behind");
    }
    let fast = ["--kdf-memory", "8", "--kdf-iterations", "1"];
    let init: Vec<&str> = ["init"].iter().chain(&fast).copied().collect();
    assert_success(&vaultfs(&init, b""), &init);
    let mode = std::fs::metadata(&store).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "store file mode");
    assert_success(&vaultfs(&["vault", "create", "v"], b""), &["vault create"]);
    assert_success(&vaultfs(&["write", "v:/s"], b"value"), &["write"]);
    assert_eq!(vaultfs(&["cat", "v:/s"], b"").stdout, b"value");
    let list = String::from_utf8(vaultfs(&["key", "list"], b"").stdout).unwrap();
    assert!(
        list.contains("passphrase") && list.contains("argon2id m=8MiB t=1"),
        "{list}"
    );
}

#[test]
fn missing_store_says_how_to_create_one() {
    let ts = TestStore::new();
    let missing = ts.path("nowhere/store.db");
    for (args, stdin) in [
        (&["ls", "v"][..], &b""[..]),
        (&["cat", "v:/s"], b""),
        (&["write", "v:/s"], b"value"),
        (&["vault", "list"], b""),
    ] {
        let out = run_command(ts.cmd().env("VAULTFS_STORE", &missing).args(args), stdin);
        assert_ne!(code(&out), 0, "{args:?} succeeded without a store");
        let line = assert_fails(&out, args, code(&out));
        assert!(line.contains("vaultfs init"), "{args:?}: {line}");
        assert!(line.contains(missing.to_str().unwrap()), "{args:?}: {line}");
    }
    assert!(
        !missing.exists(),
        "a command created the store it could not find"
    );
    assert!(!missing.parent().unwrap().exists());
}

#[test]
fn wrong_key_or_passphrase_is_one_line_and_exit_2() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"value");
    let other = ts.path("other.key");
    ts.ok(&["keygen", other.to_str().unwrap()]);
    let pass = ts.path("pass");
    write_private(&pass, "not the passphrase\n");

    let attempts: [(&str, Command); 2] = [
        ("another key file", {
            let mut c = ts.cmd();
            c.env("VAULTFS_KEY_FILE", &other);
            c
        }),
        ("a passphrase", {
            let mut c = ts.cmd_without_key();
            c.arg("--passphrase-file").arg(&pass);
            c
        }),
    ];
    for (what, mut cmd) in attempts {
        let out = run_command(cmd.args(["cat", "v:/s"]), b"");
        let line = assert_fails(&out, &[what], USAGE_OR_AUTH);
        assert!(line.contains("wrong key or passphrase"), "{what}: {line}");
        assert!(out.stdout.is_empty());
    }

    // A file too short to be a key is refused before any slot is tried.
    let short = ts.path("short.key");
    write_private(&short, "0123456789abcdef\n");
    let out = run_command(
        ts.cmd().env("VAULTFS_KEY_FILE", &short).args(["ls", "v"]),
        b"",
    );
    let line = assert_fails(&out, &["short key"], USAGE_OR_AUTH);
    assert!(line.contains("shorter than 32 bytes"), "{line}");
}

#[test]
fn key_slots_add_open_and_remove() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"value");
    let pass = ts.path("pass");
    write_private(&pass, "correct horse battery staple\n");
    let pass_arg = pass.to_str().unwrap();
    ts.ok(&[
        "key",
        "add",
        "--new-passphrase-file",
        pass_arg,
        "--kdf-memory",
        "8",
        "--kdf-iterations",
        "1",
    ]);
    let slots = key_slots(&ts.ok_text(&["key", "list"]));
    assert_eq!(slots.len(), 2, "{slots:?}");
    let keyfile_id = slots.iter().find(|s| s.1 == "keyfile").unwrap().0.clone();
    let pass_id = slots
        .iter()
        .find(|s| s.1 == "passphrase")
        .unwrap()
        .0
        .clone();

    let with_pass = |args: &[&str]| -> Output {
        let mut cmd = ts.cmd_without_key();
        cmd.arg("--passphrase-file").arg(&pass).args(args);
        run_command(&mut cmd, b"")
    };
    let out = with_pass(&["cat", "v:/s"]);
    assert_success(&out, &["cat (passphrase)"]);
    assert_eq!(out.stdout, b"value");
    // The first line is the passphrase, with or without its line ending.
    let bare = ts.path("bare");
    write_private(&bare, "correct horse battery staple");
    let out = run_command(
        ts.cmd_without_key()
            .arg("--passphrase-file")
            .arg(&bare)
            .args(["cat", "v:/s"]),
        b"",
    );
    assert_success(&out, &["cat (passphrase without newline)"]);

    // Retire the key file, using the passphrase.
    assert_success(&with_pass(&["key", "remove", &keyfile_id]), &["key remove"]);
    let out = with_pass(&["cat", "v:/s"]);
    assert_eq!(out.stdout, b"value", "readable with the passphrase");
    let line = ts.fails(&["cat", "v:/s"], USAGE_OR_AUTH);
    assert!(line.contains("wrong key or passphrase"), "{line}");

    // The last slot stays.
    let out = with_pass(&["key", "remove", &pass_id]);
    let line = assert_fails(&out, &["key remove last"], 1);
    assert!(line.contains("last key slot"), "{line}");
    let out = with_pass(&["key", "remove", "999"]);
    let line = assert_fails(&out, &["key remove 999"], 1);
    assert!(line.contains("no key slot 999"), "{line}");
    assert_eq!(with_pass(&["cat", "v:/s"]).stdout, b"value");

    // A second key file slot, added with the passphrase, opens the store by itself.
    let second = ts.path("second.key");
    ts.ok(&["keygen", second.to_str().unwrap()]);
    assert_success(
        &with_pass(&["key", "add", "--new-key-file", second.to_str().unwrap()]),
        &["key add --new-key-file"],
    );
    let out = run_command(
        ts.cmd()
            .env("VAULTFS_KEY_FILE", &second)
            .args(["cat", "v:/s"]),
        b"",
    );
    assert_success(&out, &["cat (second key)"]);
    assert_eq!(out.stdout, b"value");
}

/// `(id, kind, kdf)` of each line of `key list` after the header.
fn key_slots(listing: &str) -> Vec<(String, String, String)> {
    let mut lines = listing.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ID"), "{header}");
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[1].to_owned(), f[2..].join(" "))
        })
        .collect()
}
