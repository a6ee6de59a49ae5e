//! Grants, service identity, expiry and read limits, through real mounts, real users, real
//! processes in real cgroups, and real time.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{random_name, TestStore};
use crate::mounts::{as_user, can_mount, cat_as, user, wait_until};

const BOB: &str = "vfs-pol-bob";
const EVE: &str = "vfs-pol-eve";
const CAROL: &str = "vfs-pol-carol";
const DEPLOY: &str = "vfs-pol-deploy";

/// A vault closed to everyone but root (`0440 root:root`, so its root is `0550`), with two
/// secrets in one directory.
fn closed_vault(ts: &TestStore) {
    ts.vault(
        "pol",
        &["--owner", "root", "--group", "root", "--mode", "0440"],
    );
    ts.write("pol:/app/db", b"db-password");
    ts.write("pol:/app/other", b"other-secret");
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

#[test]
fn a_user_grant_opens_one_secret_through_a_closed_vault_and_nothing_else() {
    if !can_mount() {
        return;
    }
    user(BOB, None);
    user(EVE, None);
    let ts = TestStore::new();
    closed_vault(&ts);
    let mnt = ts.path("mnt");
    let _m = ts.mount("pol", &mnt);
    let db = mnt.join("app/db");
    assert!(cat_as(BOB, &db).is_err(), "no grant yet: bob cannot read");

    ts.ok(&["acl", "grant", "pol:/app/db", "--user", BOB]);
    wait_until(Duration::from_secs(3), "the grant in stat", || {
        mode_of(&mnt) & 0o001 != 0
    });
    assert_eq!(cat_as(BOB, &db).unwrap(), b"db-password");
    // ls -l never shows less than is allowed: other may search the way and read the file.
    assert_eq!(mode_of(&mnt), 0o551);
    assert_eq!(mode_of(&mnt.join("app")), 0o551);
    assert_eq!(mode_of(&db), 0o444);
    // The widened bits let the kernel through; the daemon still refuses everyone else.
    let eve = cat_as(EVE, &db).unwrap_err();
    assert!(eve.contains("Permission denied"), "{eve}");
    let other = cat_as(BOB, &mnt.join("app/other")).unwrap_err();
    assert!(other.contains("Permission denied"), "{other}");
    // Searchable, not listable.
    let ls = as_user(BOB, &format!("ls '{}'", mnt.display()));
    assert!(!ls.status.success(), "bob listed the vault root");

    let shown = ts.ok_text(&["acl", "show", "pol:/app/db"]);
    assert!(
        shown.contains(&format!("grant  user {BOB} (set here)")),
        "{shown}"
    );

    // Revoked: the next open fails, whatever the kernel cached.
    ts.ok(&["acl", "revoke", "pol:/app/db", "--user", BOB]);
    wait_until(Duration::from_secs(3), "the revocation", || {
        cat_as(BOB, &db).is_err()
    });
    assert_eq!(mode_of(&db), 0o440);
}

#[test]
fn a_group_grant_on_a_directory_is_inherited_and_shown_with_its_source() {
    if !can_mount() {
        return;
    }
    user(CAROL, Some(DEPLOY));
    user(EVE, None);
    let ts = TestStore::new();
    closed_vault(&ts);
    ts.ok(&["acl", "grant", "pol:/app", "--group", DEPLOY]);
    let shown = ts.ok_text(&["acl", "show", "pol:/app/other"]);
    assert!(
        shown.contains(&format!("grant  group {DEPLOY} (inherited from pol:/app)")),
        "{shown}"
    );
    let json = ts.ok_text(&["acl", "show", "--json", "pol:/app/other"]);
    assert!(json.contains(&format!("\"group\": \"{DEPLOY}\"")), "{json}");
    // An inherited grant is revoked where it is set.
    let err = ts.fails(&["acl", "revoke", "pol:/app/other", "--group", DEPLOY], 2);
    assert!(err.contains("inherited from pol:/app"), "{err}");

    let mnt = ts.path("mnt");
    let _m = ts.mount("pol", &mnt);
    assert_eq!(
        mode_of(&mnt.join("app")),
        0o555,
        "a granted directory lists"
    );
    assert_eq!(
        cat_as(CAROL, &mnt.join("app/other")).unwrap(),
        b"other-secret"
    );
    let ls = as_user(CAROL, &format!("ls '{}'", mnt.join("app").display()));
    assert!(ls.status.success(), "{ls:?}");
    assert!(cat_as(EVE, &mnt.join("app/db")).is_err());
    let ls = as_user(EVE, &format!("ls '{}'", mnt.join("app").display()));
    assert!(
        !ls.status.success(),
        "eve listed a directory granted to a group"
    );
}

#[test]
fn bad_grants_are_refused_with_one_line() {
    let ts = TestStore::new();
    closed_vault(&ts);
    for (args, want) in [
        (
            vec!["--user", BOB, "--exe", "bin/ssh"],
            "not an absolute path",
        ),
        (vec!["--user", BOB, "--unit", "a/b"], "neither a unit name"),
        (vec!["--user", ""], "--user is empty"),
    ] {
        let mut all = vec!["acl", "grant", "pol:/app/db"];
        all.extend(args);
        let err = ts.fails(&all, 2);
        assert!(err.contains(want), "{err}");
    }
    let err = ts.fails(&["acl", "grant", "pol", "--user", BOB], 2);
    assert!(err.contains("pol"), "{err}");
    let err = ts.fails(&["acl", "revoke", "pol:/app/db", "--user", BOB], 2);
    assert!(err.contains("no such grant"), "{err}");
}

/// The cgroup v2 hierarchy's mountpoint, from /proc/self/mountinfo.
fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 hierarchy is mounted (on these machines at /sys/fs/cgroup/unified)")
}

/// A cgroup the test creates and removes.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(rel: &str) -> Cgroup {
        let path = cgroup2_root().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&path).unwrap();
        Cgroup(path)
    }

    /// Runs `script` as `user` from a shell first moved into this cgroup.
    fn run_as(&self, user: &str, script: &str) -> std::process::Output {
        let procs = self.0.join("cgroup.procs");
        Command::new("sh")
            .args([
                "-c",
                &format!(
                    "echo $$ > '{}' && exec runuser -u {user} -- sh -c \"$0\"",
                    procs.display()
                ),
                script,
            ])
            .output()
            .unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once its processes have exited.
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_unit_grant_reads_only_from_inside_that_system_unit() {
    if !can_mount() {
        return;
    }
    user(BOB, None);
    let ts = TestStore::new();
    closed_vault(&ts);
    let unit = format!("test-pol-{}.service", random_name());
    ts.ok(&[
        "acl",
        "grant",
        "pol:/app/db",
        "--user",
        BOB,
        "--unit",
        &unit,
    ]);
    let mnt = ts.path("mnt");
    let _m = ts.mount("pol", &mnt);
    let db = mnt.join("app/db");
    let cat = format!("cat '{}'", db.display());

    let inside = Cgroup::new(&format!("system.slice/{unit}"));
    let out = inside.run_as(BOB, &cat);
    assert!(out.status.success(), "inside the unit: {out:?}");
    assert_eq!(out.stdout, b"db-password");
    // The same user outside it.
    assert!(cat_as(BOB, &db).is_err(), "bob read outside the unit");
    // A user's own unit of the same name (a delegated subtree) is not the system unit.
    let delegated = Cgroup::new(&format!(
        "user.slice/user-vfs-pol.slice/user@vfs-pol.service/{unit}"
    ));
    let out = delegated.run_as(BOB, &cat);
    assert!(
        !out.status.success(),
        "a user unit matched a system unit rule"
    );
    // Root inside the unit, a different principal: the grant is bob's.
    user(EVE, None);
    let out = inside.run_as(EVE, &cat);
    assert!(!out.status.success(), "eve read through bob's unit grant");
}

#[test]
fn an_exe_grant_matches_the_binary_by_inode_not_a_copy_nor_a_replacement() {
    if !can_mount() {
        return;
    }
    user(BOB, None);
    let ts = TestStore::new();
    closed_vault(&ts);
    let bin = ts.path("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let shell = bin.join("granted-sh");
    let copy = bin.join("copy-sh");
    std::fs::copy("/bin/sh", &shell).unwrap();
    std::fs::copy("/bin/sh", &copy).unwrap();
    ts.ok(&[
        "acl",
        "grant",
        "pol:/app/db",
        "--user",
        BOB,
        "--exe",
        shell.to_str().unwrap(),
    ]);
    let mnt = ts.path("mnt");
    let _m = ts.mount("pol", &mnt);
    let db = mnt.join("app/db");
    // The shell opens the file itself (a redirection), so the opener is the shell.
    // (`read` fails at the end of a value without a newline, having read it: echo anyway.)
    let read = format!("read v < '{}'; echo \"$v\"", db.display());
    let run = |sh: &Path, script: &str| {
        Command::new("runuser")
            .args(["-u", BOB, "--", sh.to_str().unwrap(), "-c", script])
            .output()
            .unwrap()
    };
    let out = run(&shell, &read);
    assert_eq!(out.stdout, b"db-password\n", "{out:?}");
    let out = run(&copy, &read);
    assert_eq!(out.stdout, b"\n", "a copy matched: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    assert!(cat_as(BOB, &db).is_err(), "cat matched a shell's grant");

    // Replaced on disk while a process of the old binary runs: that process no longer matches.
    let fifo = bin.join("go");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).unwrap();
    let up = bin.join("up");
    std::fs::write(&up, b"").unwrap();
    std::fs::set_permissions(&up, std::fs::Permissions::from_mode(0o666)).unwrap();
    let waiting = Command::new("runuser")
        .args([
            "-u",
            BOB,
            "--",
            shell.to_str().unwrap(),
            "-c",
            &format!(
                "echo up > '{}'; read go < '{}'; {read}",
                up.display(),
                fifo.display()
            ),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Replace only once the old binary runs (it says so in `up`).
    wait_until(Duration::from_secs(10), "the old shell to start", || {
        std::fs::read(&up).is_ok_and(|b| b == b"up\n")
    });
    let fresh = bin.join("fresh-sh");
    std::fs::copy("/bin/sh", &fresh).unwrap();
    std::fs::rename(&fresh, &shell).unwrap();
    std::fs::write(&fifo, b"go\n").unwrap();
    let out = crate::mounts::within(Duration::from_secs(10), "the waiting shell", move || {
        waiting.wait_with_output().unwrap()
    });
    assert_eq!(
        out.stdout, b"\n",
        "the replaced binary still matched: {out:?}"
    );
    // A process of the new binary does.
    assert_eq!(run(&shell, &read).stdout, b"db-password\n");
}

#[test]
fn an_expired_secret_leaves_the_mount_by_time_and_gc_deletes_it() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("pol", &[]);
    ts.write("pol:/keep", b"kept");
    let out = ts.run(&["write", "pol:/app/tmp", "--ttl", "3s"], b"short-lived");
    assert!(out.status.success(), "{out:?}");
    let long = ts.ok_text(&["ls", "-l", "pol:/app"]);
    assert!(long.contains("tmp (expires 20"), "{long}");
    let acl = ts.ok_text(&["acl", "show", "pol:/app/tmp"]);
    assert!(acl.contains("limits expires 20"), "{acl}");
    let mnt = ts.path("mnt");
    let _m = ts.mount("pol", &mnt);
    let tmp = mnt.join("app/tmp");
    assert_eq!(std::fs::read(&tmp).unwrap(), b"short-lived");

    // Nothing changes in the store: the mount notices by the clock.
    wait_until(
        Duration::from_secs(8),
        "the expiry in the mount's listing",
        || {
            !std::fs::read_dir(mnt.join("app"))
                .unwrap()
                .any(|e| e.unwrap().file_name() == "tmp")
        },
    );
    let err = std::fs::read(&tmp).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    assert_eq!(std::fs::read(mnt.join("keep")).unwrap(), b"kept");

    // The CLI hides it too, but `ls --expired` and `rm`/`gc` still reach it.
    assert!(!ts.ok_text(&["ls", "pol:/app"]).contains("tmp"));
    let listed = ts.ok_text(&["ls", "-l", "--expired", "pol:/app"]);
    assert!(listed.contains("tmp (expired 20"), "{listed}");
    let err = ts.fails_any(&["cat", "pol:/app/tmp"]);
    assert!(err.contains("pol:/app/tmp (expired)"), "{err}");
    let gc = ts.ok_text(&["gc"]);
    assert_eq!(gc, "removed pol:/app/tmp (expired)\n");
    assert!(!ts.ok_text(&["ls", "--expired", "pol:/app"]).contains("tmp"));
    assert_eq!(ts.cat("pol:/keep"), b"kept");
    assert_eq!(ts.ok_text(&["gc"]), "", "nothing left to delete");
}

#[test]
fn bad_limits_are_refused_and_nothing_is_written() {
    let ts = TestStore::new();
    ts.vault("pol", &[]);
    for (args, want) in [
        (vec!["--expires", "2001-01-01T00:00:00Z"], "in the past"),
        (vec!["--expires", "tomorrow"], "not an RFC 3339 time"),
        (vec!["--ttl", "soon"], "not a duration"),
        (vec!["--max-opens", "0"], "never be served"),
    ] {
        let mut all = vec!["write", "pol:/x"];
        all.extend(args);
        let out = ts.run(&all, b"v");
        assert_eq!(crate::common::code(&out), 2, "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("pol:/x") && err.contains(want), "{err}");
    }
    assert!(!ts.ok_text(&["ls", "--expired", "pol"]).contains('x'));
}

#[test]
fn a_read_limit_is_shared_by_every_mount_of_the_store_and_then_behaves_as_expired() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("pol", &[]);
    let out = ts.run(&["write", "pol:/once", "--max-opens", "1"], b"hand-off");
    assert!(out.status.success(), "{out:?}");
    let out = ts.run(&["write", "pol:/three", "--max-opens", "3"], b"three");
    assert!(out.status.success(), "{out:?}");
    assert!(ts
        .ok_text(&["ls", "-l", "pol"])
        .contains("once (max-opens 1)"));
    let (a, b) = (ts.path("a"), ts.path("b"));
    let _ma = ts.mount("pol", &a);
    let _mb = ts.mount("pol", &b);

    assert_eq!(std::fs::read(a.join("once")).unwrap(), b"hand-off");
    // Counted across mounts: the other daemon refuses it too, as if it had expired.
    let err = std::fs::read(b.join("once")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    assert_eq!(
        std::fs::read(a.join("once")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert!(!std::fs::read_dir(&a)
        .unwrap()
        .any(|e| e.unwrap().file_name() == "once"));

    // Twelve readers at once through both mounts: exactly three get the value.
    let readers: Vec<_> = (0..12)
        .map(|i| {
            let p = if i % 2 == 0 { &a } else { &b }.join("three");
            std::thread::spawn(move || std::fs::read(p).is_ok())
        })
        .collect();
    let served = readers
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(served, 3, "a limit of 3 served {served} opens");

    // A new value starts a new count.
    let out = ts.run(&["write", "pol:/once", "--max-opens", "1"], b"second");
    assert!(out.status.success(), "{out:?}");
    wait_until(Duration::from_secs(3), "the new value", || {
        std::fs::read(b.join("once")).is_ok_and(|v| v == b"second")
    });
    assert!(std::fs::read(a.join("once")).is_err());
}

#[test]
fn a_wrap_token_unwraps_once_for_one_version_until_its_time() {
    let ts = TestStore::new();
    ts.vault("pol", &[]);
    ts.write("pol:/deploy", b"deploy-key\n");
    let token = ts.ok_text(&["wrap", "pol:/deploy", "--ttl", "10m"]);
    let token = token.trim();
    assert!(token.starts_with("vaultfs-wrap-"), "{token}");
    assert!(!token.contains("deploy-key"));
    assert_eq!(ts.ok(&["unwrap", token]), b"deploy-key\n");
    let err = ts.fails_any(&["unwrap", token]);
    assert!(
        err.contains("already unwrapped") && err.contains("pol:/deploy"),
        "{err}"
    );

    // Bound to the version wrapped: a rotation makes the token worthless.
    let token = ts.ok_text(&["wrap", "pol:/deploy"]);
    ts.write("pol:/deploy", b"rotated");
    let err = ts.fails_any(&["unwrap", token.trim()]);
    assert!(err.contains("changed since it was wrapped"), "{err}");
    assert!(
        !err.contains("rotated") && !err.contains("deploy-key"),
        "{err}"
    );

    // Bound in time (real time: a two-second token).
    let token = ts.ok_text(&["wrap", "pol:/deploy", "--ttl", "2s"]);
    std::thread::sleep(Duration::from_millis(2200));
    let err = ts.fails_any(&["unwrap", token.trim()]);
    assert!(err.contains("expired"), "{err}");

    // From stdin; and a made-up token.
    let token = ts.ok_text(&["wrap", "pol:/deploy"]);
    let out = ts.run(&["unwrap", "-"], token.as_bytes());
    assert_eq!(out.stdout, b"rotated", "{out:?}");
    let err = ts.fails_any(&["unwrap", "vaultfs-wrap-00"]);
    assert!(err.contains("unknown wrap token"), "{err}");
}

/// `vaultfs audit ARGS` as text.
fn audit(ts: &TestStore, args: &[&str]) -> String {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    ts.ok_text(&all)
}

#[test]
fn every_open_and_change_is_audited_in_a_chain_that_detects_tampering() {
    if !can_mount() {
        return;
    }
    user(BOB, None);
    user(EVE, None);
    let ts = TestStore::new();
    closed_vault(&ts);
    ts.ok(&["acl", "grant", "pol:/app/db", "--user", BOB]);
    let out = ts.run(&["write", "pol:/once", "--max-opens", "1"], b"once-value");
    assert!(out.status.success());
    let mnt = ts.path("mnt");
    let m = ts.mount("pol", &mnt);
    let db = mnt.join("app/db");
    assert_eq!(cat_as(BOB, &db).unwrap(), b"db-password");
    assert!(cat_as(EVE, &db).is_err());
    assert_eq!(std::fs::read(mnt.join("once")).unwrap(), b"once-value");
    assert!(std::fs::read(mnt.join("once")).is_err());
    let token = ts.ok_text(&["wrap", "pol:/app/other"]);
    ts.ok(&["unwrap", token.trim()]);
    assert!(!ts.run(&["unwrap", token.trim()], b"").status.success());

    // Records are written in batches by the daemon's writer thread: wait for them.
    wait_until(
        Duration::from_secs(5),
        "the audit records of the opens",
        || audit(&ts, &["--denied"]).contains("read-once"),
    );
    let all = audit(&ts, &["pol"]);
    for value in ["db-password", "once-value", "other-secret"] {
        assert!(!all.contains(value), "a value in the audit log: {all}");
    }
    let bob = audit(&ts, &["--path", "pol:/app/db", "--user", BOB]);
    let bob_line = bob
        .lines()
        .find(|l| l.contains(" open ") && l.contains("allow"))
        .unwrap_or_else(|| panic!("no open of bob's: {bob}"));
    assert!(
        bob_line.contains(&format!("({BOB})"))
            && bob_line.contains("exe=/")
            && bob_line.contains("pid=")
            && bob_line.contains(&format!("rule=\"grant user {BOB}\"")),
        "{bob_line}"
    );
    let denied = audit(&ts, &["--denied"]);
    assert!(
        denied.contains(&format!("({EVE})")) && denied.contains("deny  pol:/app/db"),
        "{denied}"
    );
    assert!(!denied.contains(&format!("({BOB})")), "{denied}");
    assert!(denied.contains("read-once alarm pol:/once"), "{denied}");
    assert!(
        denied.contains("unwrap    alarm pol:/app/other"),
        "{denied}"
    );
    assert!(all.contains("acl       allow pol:/app/db"), "{all}");
    assert!(all.contains(" start "), "{all}");
    let json = audit(&ts, &["--json", "--path", "pol:/once"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v.as_array().unwrap().iter().any(|r| r["event"] == "write"),
        "{json}"
    );

    // A clean stop is recorded.
    drop(m);
    wait_until(Duration::from_secs(5), "the stop record", || {
        audit(&ts, &["pol"]).contains(" stop ")
    });
    assert!(audit(&ts, &["--verify"]).contains("chain intact"));

    // Pruning keeps a verifiable chain.
    let before = audit(&ts, &["pol"]).lines().count();
    ts.ok(&["audit", "prune", "--before", "2100-01-01T00:00:00Z"]);
    let after = audit(&ts, &["pol"]).lines().count();
    assert!(after >= 1 && after < before, "{before} -> {after}");
    assert!(audit(&ts, &["--verify"]).contains("chain intact"));
    for v in [&b"new"[..], b"newer", b"newest", b"last"] {
        ts.write("pol:/app/db", v);
    }

    // Tampering: a record removed from the middle, the tail cut, a record swapped.
    let db = ts.db();
    let seqs: Vec<i64> = db
        .prepare("SELECT seq FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(seqs.len() >= 5, "{seqs:?}");
    let backup: Vec<(i64, Vec<u8>)> = db
        .prepare("SELECT seq, sealed FROM audit")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let restore = |db: &rusqlite::Connection| {
        for (seq, sealed) in &backup {
            db.execute(
                "UPDATE audit SET sealed = ?2 WHERE seq = ?1",
                rusqlite::params![seq, sealed],
            )
            .unwrap();
        }
    };
    let (first, last) = (seqs[0], *seqs.last().unwrap());
    db.execute(
        "UPDATE audit SET sealed = (SELECT sealed FROM audit WHERE seq = ?2) WHERE seq = ?1",
        [first, last],
    )
    .unwrap();
    let err = ts.fails(&["audit", "--verify"], 3);
    assert!(err.contains("audit log"), "{err}");
    restore(&db);
    assert!(audit(&ts, &["--verify"]).contains("chain intact"));
    db.execute("DELETE FROM audit WHERE seq = ?1", [last])
        .unwrap();
    let err = ts.fails(&["audit", "--verify"], 3);
    assert!(err.contains("cut from the end"), "{err}");
    db.execute("DELETE FROM audit WHERE seq = ?1", [seqs[1]])
        .unwrap();
    let err = ts.fails(&["audit", "pol"], 3);
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn a_key_rotation_reseals_the_audit_log_so_it_stays_readable_and_checked() {
    let ts = TestStore::new();
    ts.vault("pol", &[]);
    ts.write("pol:/a", b"1");
    ts.ok(&["acl", "grant", "pol:/a", "--user", "root"]);
    assert!(audit(&ts, &["pol"]).contains("acl       allow pol:/a"));
    let sealed_before: Vec<Vec<u8>> = ts
        .db()
        .prepare("SELECT sealed FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let out = ts.run(&["key", "rotate", "--yes"], b"");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("re-sealed 2 audit record(s)"), "{said}");
    // Every record is sealed anew (none left under the old key) ...
    let sealed_after: Vec<Vec<u8>> = ts
        .db()
        .prepare("SELECT sealed FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sealed_after.len(), 2);
    assert!(sealed_before.iter().all(|b| !sealed_after.contains(b)));
    // ... and the whole log reads and checks with the new key, the old records included.
    ts.write("pol:/a", b"2");
    let verify = audit(&ts, &["--verify"]);
    assert!(
        verify.contains("vault pol: 3 records, chain intact from record 1")
            && !verify.contains("former vault key"),
        "{verify}"
    );
    let after = audit(&ts, &["pol"]);
    assert!(
        after.contains("acl       allow pol:/a") && after.matches("write     allow").count() == 2,
        "{after}"
    );

    // A log that does not verify is not laundered into a chain that checks: it is left under
    // the old key, the rotation says so, and verify reports the segment.
    ts.db()
        .execute(
            "UPDATE audit SET sealed = (SELECT sealed FROM audit WHERE seq = 1) WHERE seq = 2",
            [],
        )
        .unwrap();
    assert!(ts.fails_any(&["audit", "--verify"]).contains("audit log"));
    let out = ts.run(&["key", "rotate", "--yes"], b"");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("warning: vault pol: its audit log did not verify"),
        "{said}"
    );
    let verify = audit(&ts, &["--verify"]);
    assert!(
        verify.contains("records up to 3 were sealed under a former vault key"),
        "{verify}"
    );
}

#[test]
fn a_caller_outside_the_daemons_pid_namespace_fails_unit_and_exe_conditions_closed() {
    if !can_mount() || !crate::common::require_tool("unshare") {
        return;
    }
    user(BOB, None);
    let ts = TestStore::new();
    closed_vault(&ts);
    ts.ok(&["acl", "grant", "pol:/app/db", "--user", BOB, "--unit", "/"]);
    ts.ok(&["acl", "grant", "pol:/app/other", "--user", BOB]);
    // The daemon in a pid namespace of its own: the kernel reports every caller from the
    // host as pid 0.
    let mnt = ts.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let vaultfs = ts.cmd();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--"])
        .arg(vaultfs.get_program())
        .args(["mount", "--foreground", "pol", mnt.to_str().unwrap()]);
    for (k, v) in vaultfs.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    // (Foreground: the namespace ends with its first process.)
    let mut daemon = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _m = crate::mounts::MountGuard { path: mnt.clone() };
    wait_until(
        Duration::from_secs(10),
        "the mount in its own pid namespace",
        || crate::mounts::is_mounted(&mnt),
    );
    // A plain grant needs no process identity; a unit condition (even "/", which every
    // process of the host is under) cannot be checked, so it fails closed.
    assert_eq!(
        cat_as(BOB, &mnt.join("app/other")).unwrap(),
        b"other-secret"
    );
    let err = cat_as(BOB, &mnt.join("app/db")).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = crate::mounts::within(Duration::from_secs(10), "the daemon's exit", move || {
        daemon.wait()
    });
}
