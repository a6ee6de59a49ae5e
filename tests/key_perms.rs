//! Key files and store directories other users can touch are refused, the way ssh refuses a
//! private key others can read: one line naming the file or directory and the fix.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::{assert_fails, assert_success, run_command, vaultfs_bin, TestStore};
use crate::mounts::{as_user, can_mount, user};

const USAGE_OR_AUTH: i32 = 2;
const ALICE: &str = "vfs-ops-alice";
const BOB: &str = "vfs-ops-bob";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `vaultfs ARGS` as `user`, on `store` unlocked by `key`.
fn vaultfs_as(user: &str, store: &Path, key: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", "env"])
        .arg(format!("VAULTFS_STORE={}", store.display()))
        .arg(format!("VAULTFS_KEY_FILE={}", key.display()))
        .arg(vaultfs_bin())
        .args(args)
        .current_dir("/");
    run_command(&mut cmd, b"")
}

#[test]
fn a_key_file_others_can_read_or_write_is_refused() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    let key = ts.path("copy.key");
    std::fs::copy(&ts.key, &key).unwrap();
    let with_key =
        |args: &[&str]| run_command(ts.cmd().env("VAULTFS_KEY_FILE", &key).args(args), b"");
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o606, 0o610] {
        chmod(&key, mode);
        let out = with_key(&["ls", "v"]);
        let line = assert_fails(&out, &[format!("key file mode {mode:o}")], USAGE_OR_AUTH);
        assert!(
            line.contains(&format!("key file {}", key.display())),
            "{line}"
        );
        assert!(
            line.contains(&format!("chmod 600 {}", key.display())),
            "{line}"
        );
        assert!(line.contains(&format!("{mode:04o}")), "{line}");
    }
    for mode in [0o600, 0o400] {
        chmod(&key, mode);
        assert_success(
            &with_key(&["ls", "v"]),
            &[format!("key file mode {mode:o}")],
        );
    }
    // A passphrase file is as secret as a key file.
    let pass = ts.path("pass");
    std::fs::write(&pass, "some passphrase\n").unwrap();
    chmod(&pass, 0o644);
    let out = run_command(
        ts.cmd_without_key()
            .arg("--passphrase-file")
            .arg(&pass)
            .args(["ls", "v"]),
        b"",
    );
    let line = assert_fails(&out, &["passphrase file 0644"], USAGE_OR_AUTH);
    assert!(
        line.contains(&format!("chmod 600 {}", pass.display())),
        "{line}"
    );
}

#[test]
fn a_key_file_of_another_user_is_refused() {
    if !can_mount() {
        return;
    }
    let alice = user(ALICE, None);
    let ts = TestStore::new();
    ts.vault("v", &[]);
    // Root's key, handed to alice: she could swap in a key of her own at any time.
    let key = ts.path("alices.key");
    std::fs::copy(&ts.key, &key).unwrap();
    chmod(&key, 0o600);
    std::os::unix::fs::chown(&key, Some(alice), Some(alice)).unwrap();
    let out = run_command(
        ts.cmd().env("VAULTFS_KEY_FILE", &key).args(["ls", "v"]),
        b"",
    );
    let line = assert_fails(&out, &["a key file of alice's"], USAGE_OR_AUTH);
    assert!(line.contains(&key.display().to_string()), "{line}");
    assert!(line.contains(&format!("uid {alice}")), "{line}");

    // Alice's own store and key work for her, and her loose key is refused to her too.
    let home = ts.path("alice-home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(alice), Some(alice)).unwrap();
    let (store, key) = (home.join("store/store.db"), home.join("key"));
    for args in [
        vec!["keygen", key.to_str().unwrap()],
        vec!["init"],
        vec!["vault", "create", "mine"],
    ] {
        assert_success(&vaultfs_as(ALICE, &store, &key, &args), &args);
    }
    let out = as_user(ALICE, &format!("chmod 640 '{}'", key.display()));
    assert!(out.status.success());
    let out = vaultfs_as(ALICE, &store, &key, &["ls", "mine"]);
    let line = assert_fails(&out, &["alice's key at 0640"], USAGE_OR_AUTH);
    assert!(
        line.contains(&format!("chmod 600 {}", key.display())),
        "{line}"
    );
}

#[test]
fn a_store_directory_others_can_write_is_refused() {
    if !can_mount() {
        return;
    }
    let alice = user(ALICE, None);
    user(BOB, None);
    let ts = TestStore::new();
    let home = ts.path("alice-store-home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(alice), Some(alice)).unwrap();
    let dir = home.join("store");
    let (store, key) = (dir.join("store.db"), home.join("key"));
    for args in [
        vec!["keygen", key.to_str().unwrap()],
        vec!["init"],
        vec!["vault", "create", "mine"],
    ] {
        assert_success(&vaultfs_as(ALICE, &store, &key, &args), &args);
    }
    // Sticky or not, a directory others can write lets bob plant SQLite's side files.
    for mode in [0o1777, 0o777, 0o770, 0o730, 0o703] {
        chmod(&dir, mode);
        if mode & 0o002 != 0 {
            let planted = as_user(BOB, &format!("touch '{}/store.db-shm'", dir.display()));
            assert!(
                planted.status.success(),
                "the attack needs bob to write there"
            );
            std::fs::remove_file(dir.join("store.db-shm")).unwrap();
        }
        let out = vaultfs_as(ALICE, &store, &key, &["ls", "mine"]);
        let line = assert_fails(&out, &[format!("store dir {mode:o}")], USAGE_OR_AUTH);
        assert!(
            line.contains(&format!("store directory {}", dir.display())),
            "{line}"
        );
        assert!(
            line.contains(&format!("chmod go-w {}", dir.display())),
            "{line}"
        );
    }
    chmod(&dir, 0o755);
    assert_success(&vaultfs_as(ALICE, &store, &key, &["ls", "mine"]), &["0755"]);

    // Root does not use a store in a directory alice owns: she could plant files there.
    let out = run_command(
        ts.cmd()
            .env("VAULTFS_STORE", &store)
            .env("VAULTFS_KEY_FILE", &ts.key)
            .args(["vault", "list"]),
        b"",
    );
    let line = assert_fails(&out, &["root on alice's dir"], USAGE_OR_AUTH);
    assert!(
        line.contains(&format!("store directory {}", dir.display())),
        "{line}"
    );

    // Nor is a store created in a shared directory such as /tmp.
    let shared = ts.path("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let new_store = shared.join("store.db");
    let out = run_command(ts.cmd().env("VAULTFS_STORE", &new_store).arg("init"), b"");
    let line = assert_fails(&out, &["init in a 1777 dir"], USAGE_OR_AUTH);
    assert!(line.contains(&shared.display().to_string()), "{line}");
    assert!(!new_store.exists());
}
