//! `acl limit`: expiry and read limits set on a secret's current value after it was written,
//! applied again and again (the NixOS module runs it at every start) without writing, without
//! moving an expiry forward and without handing out a fresh set of opens.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use crate::common::TestStore;
use crate::mounts::{can_mount, wait_until};

/// The store head (its change counter), read from the file: a no-op must leave it alone.
fn head(ts: &TestStore) -> i64 {
    ts.db()
        .query_row("SELECT value FROM generation WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// `acl limit ARGS`: its stderr, asserting success.
fn limit(ts: &TestStore, args: &[&str]) -> String {
    let mut all = vec!["acl", "limit"];
    all.extend_from_slice(args);
    let out = ts.run(&all, b"");
    assert!(out.status.success(), "{all:?}: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

fn limit_records(ts: &TestStore) -> usize {
    ts.ok_text(&["audit", "lim"])
        .matches("rule=\"limit")
        .count()
}

#[test]
fn a_read_limit_set_later_keeps_its_count_through_acl_changes_moves_and_reapplication() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("lim", &[]);
    ts.write("lim:/h", b"hand-off");
    let mnt = ts.path("mnt");
    let _m = ts.mount("lim", &mnt);
    // No limit yet: opens are not counted.
    for _ in 0..3 {
        assert_eq!(std::fs::read(mnt.join("h")).unwrap(), b"hand-off");
    }

    let said = limit(&ts, &["lim:/h", "--max-opens", "3"]);
    assert!(said.contains("max-opens 3 (version 2)"), "{said}");
    let (h, records) = (head(&ts), limit_records(&ts));
    assert_eq!(records, 1);
    // Applied again: nothing written, no head bump, no audit record.
    let said = limit(&ts, &["lim:/h", "--max-opens", "3"]);
    assert!(said.contains("already so"), "{said}");
    assert_eq!(head(&ts), h, "a no-op moved the store head");
    assert_eq!(limit_records(&ts), 1, "a no-op was audited");

    assert_eq!(std::fs::read(mnt.join("h")).unwrap(), b"hand-off"); // 1 of 3
                                                                    // An ACL change and a move rewrite the row (a new version) but keep the value: the count
                                                                    // goes on, it does not start again.
    ts.ok(&["acl", "grant", "lim:/h", "--user", "root"]);
    assert_eq!(std::fs::read(mnt.join("h")).unwrap(), b"hand-off"); // 2 of 3
    ts.ok(&["mv", "lim:/h", "lim:/moved"]);
    assert_eq!(std::fs::read(mnt.join("moved")).unwrap(), b"hand-off"); // 3 of 3
    let said = limit(&ts, &["lim:/moved", "--max-opens", "3"]);
    assert!(said.contains("already so"), "{said}");
    let err = std::fs::read(mnt.join("moved")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "a 4th open of 3: {err}");

    // Lifting the limit serves it again; putting it back does not reset what was counted.
    limit(&ts, &["lim:/moved", "--clear"]);
    assert_eq!(std::fs::read(mnt.join("moved")).unwrap(), b"hand-off");
    limit(&ts, &["lim:/moved", "--max-opens", "3"]);
    let err = std::fs::read(mnt.join("moved")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    limit(&ts, &["lim:/moved", "--max-opens", "4"]);
    assert_eq!(std::fs::read(mnt.join("moved")).unwrap(), b"hand-off"); // 4 of 4
    assert!(std::fs::read(mnt.join("moved")).is_err());

    // A new value is a new count (and starts with the limits it is written with: none).
    ts.write("lim:/moved", b"second");
    limit(&ts, &["lim:/moved", "--max-opens", "1"]);
    assert_eq!(std::fs::read(mnt.join("moved")).unwrap(), b"second");
    let err = std::fs::read(mnt.join("moved")).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "read-once read twice: {err}"
    );
    // The audit writer batches: the alarm arrives within its flush interval.
    wait_until(Duration::from_secs(5), "the read-once alarm", || {
        ts.ok_text(&["audit", "lim", "--denied"])
            .contains("read-once alarm lim:/moved")
    });
}

#[test]
fn a_ttl_counts_from_the_write_so_reapplying_it_never_moves_the_expiry() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("lim", &[]);
    ts.write("lim:/t", b"short-lived");
    let written = Instant::now();
    let mnt = ts.path("mnt");
    let _m = ts.mount("lim", &mnt);

    let first = limit(&ts, &["lim:/t", "--ttl", "4s"]);
    let shown = ts.ok_text(&["acl", "show", "lim:/t"]);
    std::thread::sleep(Duration::from_millis(1100));
    // A second later, and after an ACL change: the same expiry, so nothing to write.
    ts.ok(&["acl", "set", "lim:/t", "--mode", "0440"]);
    let h = head(&ts);
    let again = limit(&ts, &["lim:/t", "--ttl", "4s"]);
    assert!(again.contains("already so"), "{first} / {again}");
    assert_eq!(head(&ts), h);
    let limits = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("limits"))
            .map(str::to_owned)
    };
    assert_eq!(
        limits(&shown),
        limits(&ts.ok_text(&["acl", "show", "lim:/t"])),
        "the expiry moved"
    );

    assert_eq!(std::fs::read(mnt.join("t")).unwrap(), b"short-lived");
    wait_until(Duration::from_secs(10), "the expiry", || {
        std::fs::read(mnt.join("t")).is_err_and(|e| e.kind() == ErrorKind::NotFound)
    });
    assert!(
        written.elapsed() >= Duration::from_secs(4) - Duration::from_millis(200),
        "expired {:?} after the write, before its ttl",
        written.elapsed()
    );
    // A ttl shorter than the value's age: expired at once (the value is older than that).
    ts.write("lim:/old", b"old");
    std::thread::sleep(Duration::from_millis(1100));
    let said = limit(&ts, &["lim:/old", "--ttl", "1s"]);
    assert!(said.contains("expiry is past"), "{said}");
    let err = std::fs::read(mnt.join("old")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(ts.ok_text(&["gc"]).contains("removed lim:/old (expired)"));
}

#[test]
fn an_absolute_expiry_set_later_takes_the_secret_off_the_mount_at_that_time() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("lim", &[]);
    ts.write("lim:/cert", b"cert");
    let mnt = ts.path("mnt");
    let _m = ts.mount("lim", &mnt);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{at}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let when = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    limit(&ts, &["lim:/cert", "--expires", &when]);
    let again = limit(&ts, &["lim:/cert", "--expires", &when]);
    assert!(again.contains("already so"), "{again}");
    assert!(ts
        .ok_text(&["ls", "-l", "lim:/"])
        .contains("cert (expires 20"));
    assert_eq!(std::fs::read(mnt.join("cert")).unwrap(), b"cert");
    wait_until(Duration::from_secs(8), "the expiry", || {
        std::fs::read(mnt.join("cert")).is_err()
    });
    assert!(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            >= at
    );
}

#[test]
fn bad_limit_requests_fail_with_one_line_naming_the_secret_and_write_nothing() {
    let ts = TestStore::new();
    ts.vault("lim", &[]);
    ts.write("lim:/d/x", b"v");
    let out = ts.run(&["template", "set", "lim:/tpl"], b"x={{ lim:/d/x }}\n");
    assert!(out.status.success(), "{out:?}");
    let h = head(&ts);
    for (args, code, want) in [
        (vec!["lim:/d/x"], 2, "nothing to set"),
        (vec!["lim:/d/x", "--max-opens", "0"], 2, "never be served"),
        (vec!["lim:/d/x", "--ttl", "soon"], 2, "not a duration"),
        (
            vec!["lim:/d/x", "--expires", "tomorrow"],
            2,
            "not an RFC 3339 time",
        ),
        (vec!["lim:/d", "--max-opens", "1"], 1, "is a directory"),
        (vec!["lim:/nope", "--max-opens", "1"], 1, "no such file"),
        (
            vec!["lim:/tpl", "--max-opens", "1"],
            1,
            "mounts do not count its opens",
        ),
    ] {
        let mut all = vec!["acl", "limit"];
        all.extend_from_slice(&args);
        let err = ts.fails(&all, code);
        assert!(
            err.contains(args[0]) && err.contains(want),
            "{args:?}: {err}"
        );
    }
    // --if-exists: a secret (or vault) not written yet is skipped, exit 0.
    let said = limit(&ts, &["lim:/nope", "--if-exists", "--max-opens", "1"]);
    assert!(
        said.contains("lim:/nope") && said.contains("--if-exists"),
        "{said}"
    );
    limit(&ts, &["other:/nope", "--if-exists", "--max-opens", "1"]);
    assert_eq!(head(&ts), h, "a refused limit wrote something");
    assert!(!ts.ok_text(&["ls", "-l", "lim:/d"]).contains("max-opens"));
    // A template may expire; `acl show --json` says so.
    limit(&ts, &["lim:/tpl", "--expires", "2099-01-01T00:00:00Z"]);
    let shown: serde_json::Value =
        serde_json::from_str(&ts.ok_text(&["acl", "show", "--json", "lim:/tpl"])).unwrap();
    assert_eq!(shown["limits"]["expires_ns"], 4_070_908_800_000_000_000i64);
    assert_eq!(shown["limits"]["max_opens"], serde_json::Value::Null);
}
