//! The store format (round 2): migration of a store made by the round-1 release, rollback and
//! forged-head detection by the CLI and by a live mount, and a mount daemon that keeps its
//! SQLite locks when one of its connections fails to open.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{assert_fails, assert_success, require_tool, TestStore};
use crate::mounts::{can_mount, within};

/// Exit code of a failed integrity check.
const INTEGRITY: i32 = 3;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-store")
}

/// A [`TestStore`] over a copy of the round-1 fixture (store and key file).
fn v1_copy() -> TestStore {
    let dir = tempfile::Builder::new()
        .prefix("vaultfs-test-v1-")
        .tempdir()
        .unwrap();
    let ts = TestStore {
        store: dir.path().join("store").join("store.db"),
        key: dir.path().join("key"),
        dir,
    };
    std::fs::create_dir_all(ts.store.parent().unwrap()).unwrap();
    std::fs::create_dir(ts.tmpdir()).unwrap();
    std::fs::copy(fixture_dir().join("store.db"), &ts.store).unwrap();
    std::fs::copy(fixture_dir().join("key"), &ts.key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [&ts.store, &ts.key] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(
        ts.store.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    ts
}

#[test]
fn migrate_upgrades_a_round_one_store_byte_exact() {
    let ts = v1_copy();
    // Before migration every other command says what to do, in one line.
    let line = ts.fails(&["cat", "app:/api/token"], 1);
    assert!(
        line.contains("store format 1") && line.contains("vaultfs migrate"),
        "{line}"
    );
    let before = std::fs::read(&ts.store).unwrap();
    let out = ts.run(&["migrate"], b"");
    assert_success(&out, &["migrate"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("from store format 1 to 2"), "{said}");
    assert!(said.contains("2 vaults"), "{said}");
    assert_ne!(std::fs::read(&ts.store).unwrap(), before);

    assert_eq!(ts.cat("app:/api/token"), b"tok-1\n");
    assert_eq!(ts.cat("app:/a/b/c/deep"), b"deep");
    let big = std::fs::read(fixture_dir().join("big.expected")).unwrap();
    assert_eq!(big.len(), 200 * 1024);
    assert_eq!(ts.cat("app:/blobs/big"), big);
    assert_eq!(ts.cat("app:/empty"), b"");
    assert_eq!(ts.cat("web:/db/password"), b"web-pass");
    assert_eq!(ts.ok_text(&["ls", "app"]), "a/\napi/\nblobs/\nempty\n");
    // A header line, then one line per vault.
    assert_eq!(ts.ok_text(&["vault", "list"]).lines().count(), 3);
    let api = ts.ok_text(&["acl", "show", "app:/api/token"]);
    assert!(api.contains("daemon") && api.contains("0550"), "{api}");
    let web = ts.ok_text(&["acl", "show", "web:/db/password"]);
    assert!(
        web.contains("group  daemon") && web.contains("0440"),
        "{web}"
    );
    let vault = ts.ok_text(&["acl", "show", "app"]);
    assert!(vault.contains("0440"), "{vault}");
    // The 200 KiB value is now sealed in 64 KiB chunks: 4 chunks of 40 bytes' overhead each.
    let db = ts.db();
    let sealed: i64 = db
        .query_row(
            "SELECT max(length(value)) FROM entries WHERE value IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sealed, 1 + 200 * 1024 + 4 * 40);
    drop(db);
    // Writes work, and a second migration has nothing to do.
    ts.write("app:/api/token", b"tok-2");
    assert_eq!(ts.cat("app:/api/token"), b"tok-2");
    let out = ts.run(&["migrate"], b"");
    assert_success(&out, &["migrate"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to do"));
}

#[test]
fn a_store_format_or_record_version_from_the_future_is_refused() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"value");
    let db = ts.db();
    db.execute("UPDATE meta SET value = 3 WHERE key = 'format'", [])
        .unwrap();
    drop(db);
    let line = ts.fails(&["cat", "v:/s"], 1);
    assert!(line.contains("store format 3"), "{line}");
    let line = ts.fails(&["migrate"], 1);
    assert!(line.contains("store format 3"), "{line}");
}

/// `sqlite3 DB SQL`, failing the test on error.
fn sqlite3(db: &Path, sql: &str) {
    assert!(require_tool("sqlite3"), "sqlite3 is needed");
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_restored_older_store_is_refused_unless_allowed() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"old-value");
    ts.write("v:/other", b"kept");
    let backup = ts.path("old.db");
    sqlite3(&ts.store, &format!(".backup {}", backup.display()));
    ts.write("v:/s", b"new-value");
    ts.ok(&["rm", "v:/other"]);
    // The consistent older copy goes back in place of the live store (no process has it open).
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", ts.store.display()));
    }
    std::fs::copy(&backup, &ts.store).unwrap();
    let args = ["cat", "v:/s"];
    let out = ts.run(&args, b"");
    let line = assert_fails(&out, &args, INTEGRITY);
    assert!(
        line.contains("rolled back") && line.contains("--allow-rollback"),
        "{line}"
    );
    assert!(out.stdout.is_empty());
    // Every command that opens the store refuses it, writes included.
    ts.fails(&["write", "v:/x"], INTEGRITY);
    ts.fails(&["ls", "v"], INTEGRITY);
    // Accepted on purpose: the old value, and from then on the restored head is the baseline.
    assert_eq!(
        ts.ok(&["--allow-rollback", "cat", "v:/s"]),
        b"old-value".to_vec()
    );
    assert_eq!(ts.cat("v:/other"), b"kept");
    ts.write("v:/s", b"after");
    assert_eq!(ts.cat("v:/s"), b"after");
}

#[test]
fn a_forged_head_counter_is_refused() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"value");
    sqlite3(&ts.store, "UPDATE generation SET value = value + 7");
    let args = ["cat", "v:/s"];
    let out = ts.run(&args, b"");
    let line = assert_fails(&out, &args, INTEGRITY);
    assert!(line.contains("store head"), "{line}");
    // A write would have re-MAC'd the forged counter into an authentic one: refused too.
    ts.fails(&["write", "v:/t"], INTEGRITY);
    sqlite3(&ts.store, "UPDATE generation SET value = value - 7");
    assert_eq!(ts.cat("v:/s"), b"value");
}

/// The head rows as they are now: (counter, [(vault_id, mac)]).
fn head_rows(ts: &TestStore) -> (i64, Vec<(i64, Vec<u8>)>) {
    let db = ts.db();
    let seq = db
        .query_row("SELECT value FROM generation", [], |r| r.get(0))
        .unwrap();
    let macs = db
        .prepare("SELECT vault_id, mac FROM head")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    (seq, macs)
}

#[test]
fn a_mount_cannot_be_frozen_or_fed_a_forged_head() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"v1");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    let file = mnt.join("s");
    assert_eq!(std::fs::read(&file).unwrap(), b"v1");
    // Freeze: after a real write, put the old (authentic) head back so that the counter the
    // mount compares says nothing changed. The old code kept serving v1.
    let (seq, macs) = head_rows(&ts);
    ts.write("app:/s", b"v2");
    let db = ts.db();
    db.execute("UPDATE generation SET value = ?1", [seq])
        .unwrap();
    for (vault, mac) in &macs {
        db.execute(
            "UPDATE head SET mac = ?1 WHERE vault_id = ?2",
            rusqlite::params![mac, vault],
        )
        .unwrap();
    }
    drop(db);
    // A change made behind the writers' change signal (by SQL, not by vaultfs) is seen at the
    // mount's next poll of the authenticated head, every 100 ms; opens before it may still be
    // served the state last verified.
    std::thread::sleep(Duration::from_millis(300));
    let f = file.clone();
    let got = within(
        Duration::from_secs(15),
        "read of a frozen store",
        move || std::fs::read(f).map_err(|e| e.raw_os_error()),
    );
    assert_ne!(got, Ok(b"v1".to_vec()), "the mount served the frozen view");
    assert_eq!(got, Err(Some(libc::EIO)));
    // A forged counter (no key) is refused the same way.
    let ts2 = TestStore::new();
    ts2.vault("app", &[]);
    ts2.write("app:/s", b"w1");
    let mnt2 = ts2.path("mnt");
    let _m2 = ts2.mount("app", &mnt2);
    let file2 = mnt2.join("s");
    assert_eq!(std::fs::read(&file2).unwrap(), b"w1");
    sqlite3(&ts2.store, "UPDATE generation SET value = value + 1");
    std::thread::sleep(Duration::from_millis(300));
    let got = within(
        Duration::from_secs(15),
        "read with a forged head",
        move || std::fs::read(file2).map_err(|e| e.raw_os_error()),
    );
    assert_eq!(got, Err(Some(libc::EIO)));
}

/// Whether process `pid` holds a POSIX lock on the file with inode `ino` (/proc/locks).
fn holds_lock(pid: u32, ino: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: POSIX  ADVISORY  READ 1234 08:02:5678 0 EOF"
        f.get(1) == Some(&"POSIX")
            && f.get(4) == Some(&pid.to_string().as_str())
            && f.get(5)
                .and_then(|dev_ino| dev_ino.rsplit(':').next())
                .and_then(|i| i.parse::<u64>().ok())
                == Some(ino)
    })
}

#[test]
fn a_failed_connection_open_keeps_the_daemons_sqlite_locks() {
    if !can_mount() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"v1");
    let mnt = ts.path("mnt");
    let (mut daemon, _m) = ts.mount_foreground("app", &mnt);
    let pid = daemon.id();
    let file = mnt.join("s");
    assert_eq!(std::fs::read(&file).unwrap(), b"v1");
    let ino = std::fs::metadata(&ts.store).unwrap().ino();
    assert!(
        holds_lock(pid, ino),
        "the daemon holds no lock on the store"
    );

    // With the WAL lock bytes held, concurrent opens empty the daemon's connection pool, so it
    // opens new connections, which fail. The old code then opened and closed store.db itself,
    // which dropped every POSIX lock the daemon held on it.
    let lock = crate::mounts::WalLock::hold(&ts.store);
    // Opens of the secret read above skip the store until the next poll round meets the lock.
    std::thread::sleep(Duration::from_millis(300));
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let f = file.clone();
            std::thread::spawn(move || std::fs::read(f).map_err(|e| e.raw_os_error()))
        })
        .collect();
    let results = within(
        Duration::from_secs(30),
        "reads on a locked store",
        move || {
            readers
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        },
    );
    assert!(
        results.contains(&Err(Some(libc::EIO))),
        "no read failed while the WAL locks were held: {results:?}"
    );
    drop(lock);
    assert!(
        holds_lock(pid, ino),
        "the daemon lost its lock on the store"
    );

    // A writer that finds no other connection deletes the WAL when it closes; with the daemon's
    // lock intact it must not, and the mount serves what was written.
    ts.write("app:/s", b"v2-after-the-fault");
    assert!(
        Path::new(&format!("{}-wal", ts.store.display())).exists(),
        "the writer deleted the WAL under the daemon"
    );
    let f = file.clone();
    let got = within(Duration::from_secs(10), "read after the fault", move || {
        std::fs::read(f).unwrap()
    });
    assert_eq!(got, b"v2-after-the-fault");
    assert!(holds_lock(pid, ino));
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = within(Duration::from_secs(10), "daemon exit", move || {
        daemon.wait()
    });
}

#[test]
fn key_add_takes_a_label_and_refuses_the_same_key_twice() {
    let ts = TestStore::new();
    let key = ts.key.to_str().unwrap().to_owned();
    let line = ts.fails(&["key", "add", "--new-key-file", &key], 1);
    assert!(line.contains("already unlocks key slot 1"), "{line}");
    let backup = ts.path("backup.key");
    let backup = backup.to_str().unwrap();
    ts.ok(&["keygen", backup]);
    ts.ok(&[
        "key",
        "add",
        "--new-key-file",
        backup,
        "--label",
        "offsite backup",
    ]);
    let line = ts.fails(&["key", "add", "--new-key-file", backup], 1);
    assert!(line.contains("already unlocks key slot 2"), "{line}");
    let db = ts.db();
    let label: Option<String> = db
        .query_row("SELECT label FROM key_slots WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(label.as_deref(), Some("offsite backup"));
}

/// A copy of `ts`'s store at `name` into which the attacker has put back every key slot of
/// `backup` (and, with `old_vaults`, the backup's vault rows: its wrapped vault keys).
fn transplant(ts: &TestStore, backup: &Path, name: &str, old_vaults: bool) -> PathBuf {
    let copy = ts.path(name);
    sqlite3(&ts.store, &format!(".backup {}", copy.display()));
    let db = rusqlite::Connection::open(&copy).unwrap();
    db.execute("ATTACH ?1 AS old", [backup.to_str().unwrap()])
        .unwrap();
    db.execute_batch(
        "DELETE FROM key_slots;
         INSERT INTO key_slots (id, kind, params, wrapped, created_ns)
           SELECT id, kind, params, wrapped, created_ns FROM old.key_slots;",
    )
    .unwrap();
    if old_vaults {
        db.execute_batch(
            "DELETE FROM vaults;
             INSERT INTO vaults SELECT * FROM old.vaults;",
        )
        .unwrap();
    }
    copy
}

#[test]
fn a_removed_key_with_an_old_backup_reads_nothing_written_after_key_rotate() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"before");
    let removed = ts.path("removed.key");
    let removed_s = removed.to_str().unwrap().to_owned();
    ts.ok(&["keygen", &removed_s]);
    ts.ok(&["key", "add", "--new-key-file", &removed_s]);
    let backup = ts.path("backup.db");
    sqlite3(&ts.store, &format!(".backup {}", backup.display()));
    let out = ts.run(&["key", "remove", "2"], b"");
    assert_success(&out, &["key", "remove", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("vaultfs key rotate"));

    let as_removed = |store: &Path, args: &[&str]| {
        let mut cmd = ts.cmd_without_key();
        cmd.env("VAULTFS_STORE", store)
            .env("VAULTFS_STATE_DIR", ts.path("attacker-state"))
            .arg("--key-file")
            .arg(&removed)
            .args(args);
        crate::common::run_command(&mut cmd, b"")
    };
    // Without a rotation the attack works: the backup's slot unwraps the same master key, which
    // still unwraps the live store's vault keys, so a value written after the removal leaks.
    ts.write("v:/s", b"after-remove");
    let copy = transplant(&ts, &backup, "attack1.db", false);
    let out = as_removed(&copy, &["cat", "v:/s"]);
    assert_eq!(
        out.stdout, b"after-remove",
        "the control attack failed: {out:?}"
    );

    // Rotation: not asked on a non-terminal without --yes; then fresh keys, one slot.
    let line = ts.fails(&["key", "rotate"], 2);
    assert!(line.contains("--yes"), "{line}");
    ts.ok(&["key", "rotate", "--yes"]);
    let secret = b"written-after-rotation";
    ts.write("v:/s", secret);
    ts.write("v:/new", secret);
    assert_eq!(ts.cat("v:/s"), secret);
    assert_eq!(ts.ok_text(&["ls", "v"]), "new\ns\n");

    for (name, old_vaults) in [("attack2.db", false), ("attack3.db", true)] {
        let copy = transplant(&ts, &backup, name, old_vaults);
        for args in [
            &["cat", "v:/s"][..],
            &["cat", "v:/new"],
            &["--allow-rollback", "cat", "v:/s"],
            &["ls", "v"],
        ] {
            let out = as_removed(&copy, args);
            assert!(
                !out.status.success(),
                "{name} {args:?}: the removed key read the store"
            );
            assert!(
                !crate::common::contains(&out.stdout, secret)
                    && !crate::common::contains(&out.stderr, secret),
                "{name} {args:?}: the value leaked"
            );
        }
    }
    // The live store is intact for the key that rotated it.
    assert_eq!(ts.cat("v:/new"), secret);
}
