//! Host keys as key slots: real age keys (age-keygen) and real ssh keys (ssh-keygen), slots
//! scoped to vaults, the exit code for a vault outside the scope, ssh-rsa refused, `key list`
//! fingerprints as ssh-keygen prints them, `key rotate` re-wrapping host-key slots, and a mount
//! served by a scoped host key.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{assert_fails, assert_success, require_tool, run_command, TestStore};
use crate::mounts::{can_mount, is_mounted, wait_until};

/// A fresh age identity made by `age-keygen`: (identity file, recipient).
pub fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    assert!(require_tool("age-keygen"));
    let file = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen: {out:?}");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    (
        file,
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
    )
}

/// A fresh unencrypted ssh key made by `ssh-keygen`: (private key file, public key line).
pub fn ssh_key(dir: &Path, name: &str, kind: &str) -> (PathBuf, String) {
    assert!(require_tool("ssh-keygen"));
    let file = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "host@test", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
    (file, public.trim().to_owned())
}

/// Runs vaultfs on `ts`'s store unlocked by `identity` only (no key file).
pub fn with_identity(ts: &TestStore, identity: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = ts.cmd_without_key();
    cmd.env("VAULTFS_IDENTITY", identity).args(args);
    run_command(&mut cmd, b"")
}

fn two_vaults() -> TestStore {
    let ts = TestStore::new();
    ts.vault("nix", &["--owner", "root", "--group", "root"]);
    ts.vault("web", &["--owner", "root", "--group", "root"]);
    ts.write("nix:/token", b"nix-secret");
    ts.write("web:/db/password", b"web-secret");
    ts
}

#[test]
fn scoped_age_slot_opens_exactly_its_vaults() {
    let ts = two_vaults();
    let (id, recipient) = age_key(ts.dir.path(), "web1.key");
    ts.ok(&[
        "key",
        "add",
        "--recipient",
        &recipient,
        "--label",
        "web1",
        "--vault",
        "web",
    ]);
    let out = with_identity(&ts, &id, &["cat", "web:/db/password"]);
    assert_success(&out, &["cat"]);
    assert_eq!(out.stdout, b"web-secret");
    // Any other vault: exit 2, named.
    let out = with_identity(&ts, &id, &["cat", "nix:/token"]);
    let line = assert_fails(&out, &["cat", "nix:/token"], 2);
    assert!(
        line.contains("this key does not open vault \"nix\""),
        "{line}"
    );
    // It lists only its vault, and may not write.
    let out = with_identity(&ts, &id, &["vault", "list"]);
    assert_success(&out, &["vault", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("web") && !listed.contains("nix"),
        "{listed}"
    );
    let out = with_identity(&ts, &id, &["rm", "web:/db/password"]);
    let line = assert_fails(&out, &["rm"], 2);
    assert!(line.contains("read-only"), "{line}");
    assert_eq!(ts.cat("web:/db/password"), b"web-secret");
    // The slot does not hold the master key: the wrapped payload holds 1 key, not the master.
    let db = ts.db();
    let params: String = db
        .query_row("SELECT params FROM key_slots WHERE kind = 'age'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(params.contains("\"vaults\":["), "{params}");
    // A different age key opens nothing: exit 2.
    let (other, _) = age_key(ts.dir.path(), "other.key");
    let out = with_identity(&ts, &other, &["cat", "web:/db/password"]);
    assert_fails(&out, &["cat"], 2);
}

#[test]
fn unscoped_ssh_host_key_opens_the_store_and_list_shows_its_fingerprint() {
    let ts = two_vaults();
    let (host, public) = ssh_key(ts.dir.path(), "ssh_host_ed25519_key", "ed25519");
    ts.ok(&["key", "add", "--recipient", &public, "--label", "web2"]);
    let out = with_identity(&ts, &host, &["cat", "nix:/token"]);
    assert_success(&out, &["cat"]);
    assert_eq!(out.stdout, b"nix-secret");
    // An unscoped host key can write (it holds the master key).
    let mut cmd = ts.cmd_without_key();
    cmd.env("VAULTFS_IDENTITY", &host)
        .args(["write", "nix:/new"]);
    assert_success(&run_command(&mut cmd, b"v"), &["write"]);
    assert_eq!(ts.cat("nix:/new"), b"v");
    // key list: kind, label, scope and the fingerprint ssh-keygen -l prints.
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(host.with_extension("pub"))
        .output()
        .unwrap();
    let fp = String::from_utf8(fp.stdout).unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_owned();
    assert!(fp.starts_with("SHA256:"));
    let list = ts.ok_text(&["key", "list"]);
    let row = list.lines().find(|l| l.contains("web2")).expect(&list);
    assert!(
        row.contains("ssh-ed25519") && row.contains(&fp) && row.contains("all"),
        "{row}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&ts.ok(&["key", "list", "--json"])).unwrap();
    let slot = json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "web2")
        .unwrap();
    assert_eq!(slot["fingerprint"], fp.as_str());
    assert_eq!(slot["kind"], "ssh-ed25519");
    // The same key twice is refused.
    let line = ts.fails_any(&["key", "add", "--recipient", &public]);
    assert!(line.contains("already"), "{line}");
}

#[test]
fn ssh_rsa_is_refused_with_the_advisory() {
    let ts = TestStore::new();
    let (rsa, public) = ssh_key(ts.dir.path(), "rsa", "rsa");
    let line = ts.fails(&["key", "add", "--recipient", &public], 2);
    assert!(line.contains("RUSTSEC-2023-0071"), "{line}");
    let out = with_identity(&ts, &rsa, &["vault", "list"]);
    let line = assert_fails(&out, &["vault", "list"], 2);
    assert!(line.contains("RUSTSEC-2023-0071"), "{line}");
    assert_eq!(
        ts.db()
            .query_row("SELECT count(*) FROM key_slots", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        1
    );
}

#[test]
fn rotate_rewraps_host_key_slots_without_their_secret() {
    let ts = two_vaults();
    let (id, recipient) = age_key(ts.dir.path(), "web1.key");
    let (host, public) = ssh_key(ts.dir.path(), "host", "ed25519");
    ts.ok(&["key", "add", "--recipient", &recipient, "--vault", "web"]);
    ts.ok(&["key", "add", "--recipient", &public]);
    let before: Vec<u8> = ts
        .db()
        .query_row(
            "SELECT wrapped FROM key_slots WHERE kind = 'age'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    ts.ok(&["key", "rotate", "--yes"]);
    let after: Vec<u8> = ts
        .db()
        .query_row(
            "SELECT wrapped FROM key_slots WHERE kind = 'age'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_ne!(before, after, "the slot was not re-wrapped");
    let out = with_identity(&ts, &id, &["cat", "web:/db/password"]);
    assert_success(&out, &["cat"]);
    assert_eq!(out.stdout, b"web-secret");
    let out = with_identity(&ts, &id, &["cat", "nix:/token"]);
    assert_fails(&out, &["cat"], 2);
    let out = with_identity(&ts, &host, &["cat", "nix:/token"]);
    assert_success(&out, &["cat"]);
    assert_eq!(out.stdout, b"nix-secret");
}

#[test]
fn a_swapped_recipient_is_not_rewrapped_to() {
    // Someone who can write the store replaces a slot's recipient with their own key: the
    // next rotation must not wrap the new keys to it.
    let ts = two_vaults();
    let (_, recipient) = age_key(ts.dir.path(), "web1.key");
    let (_, attacker) = age_key(ts.dir.path(), "attacker.key");
    ts.ok(&["key", "add", "--recipient", &recipient, "--vault", "web"]);
    ts.db()
        .execute(
            "UPDATE key_slots SET params = replace(params, ?1, ?2) WHERE kind = 'age'",
            [&recipient, &attacker],
        )
        .unwrap();
    let out = ts.run(&["key", "rotate", "--yes"], b"");
    assert_eq!(crate::common::code(&out), 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("key slot 2 (its recipient or scope) failed authentication"),
        "{err}"
    );
    assert_eq!(ts.cat("web:/db/password"), b"web-secret");
    let line = ts.fails(&["bundle", "export"], 3);
    assert!(line.contains("key slot"), "{line}");
}

#[test]
fn a_mount_served_by_a_scoped_host_key() {
    if !can_mount() {
        return;
    }
    let ts = two_vaults();
    let (id, recipient) = age_key(ts.dir.path(), "web1.key");
    ts.ok(&["key", "add", "--recipient", &recipient, "--vault", "web"]);
    let mnt = ts.path("web-mnt");
    let out = with_identity(&ts, &id, &["mount", "web", mnt.to_str().unwrap()]);
    assert_success(&out, &["mount", "web"]);
    let _guard = crate::mounts::MountGuard { path: mnt.clone() };
    assert!(is_mounted(&mnt));
    assert_eq!(
        std::fs::read(mnt.join("db/password")).unwrap(),
        b"web-secret"
    );
    // A rotation of the secret is seen through the mount.
    ts.write("web:/db/password", b"rotated");
    wait_until(std::time::Duration::from_secs(5), "the new value", || {
        std::fs::read(mnt.join("db/password")).ok().as_deref() == Some(&b"rotated"[..])
    });
    let other = ts.path("nix-mnt");
    let out = with_identity(&ts, &id, &["mount", "nix", other.to_str().unwrap()]);
    let line = assert_fails(&out, &["mount", "nix"], 2);
    assert!(line.contains("does not open vault \"nix\""), "{line}");
    assert!(!is_mounted(&other));
}

#[test]
fn a_removed_host_reads_nothing_written_after_rotate() {
    let ts = two_vaults();
    let (old_host, old_pub) = age_key(ts.dir.path(), "old.key");
    let (new_host, new_pub) = age_key(ts.dir.path(), "new.key");
    ts.ok(&[
        "key",
        "add",
        "--recipient",
        &old_pub,
        "--label",
        "old",
        "--vault",
        "web",
    ]);
    ts.ok(&[
        "key",
        "add",
        "--recipient",
        &new_pub,
        "--label",
        "new",
        "--vault",
        "web",
    ]);
    // The old host kept a copy of the store (a bundle is one) from before its removal.
    let copy = ts.dir.path().join("old-copy.db");
    std::fs::copy(&ts.store, &copy).unwrap();
    let slots: serde_json::Value =
        serde_json::from_slice(&ts.ok(&["key", "list", "--json"])).unwrap();
    let old_id = slots
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "old")
        .unwrap()["id"]
        .to_string();
    ts.ok(&["key", "remove", &old_id]);
    ts.ok(&["key", "rotate", "--yes"]);
    ts.write("web:/db/password", b"after-removal");
    let out = with_identity(&ts, &old_host, &["cat", "web:/db/password"]);
    assert_fails(&out, &["cat"], 2);
    // Its old slot, put back into the live file, unwraps only the old vault key: every row
    // written after the rotation fails to open with it.
    let live = ts.db();
    let old = rusqlite::Connection::open(&copy).unwrap();
    let (kind, params, wrapped): (String, String, Vec<u8>) = old
        .query_row(
            "SELECT kind, params, wrapped FROM key_slots WHERE label = 'old'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    live.execute(
        "INSERT INTO key_slots (kind, params, wrapped, created_ns, label) VALUES (?1, ?2, ?3, 0, 'old')",
        rusqlite::params![kind, params, wrapped],
    )
    .unwrap();
    let out = with_identity(&ts, &old_host, &["cat", "web:/db/password"]);
    assert_ne!(crate::common::code(&out), 0);
    assert!(!crate::common::contains(&out.stdout, b"after-removal"));
    let out = with_identity(&ts, &new_host, &["cat", "web:/db/password"]);
    assert_success(&out, &["cat"]);
    assert_eq!(out.stdout, b"after-removal");
}
