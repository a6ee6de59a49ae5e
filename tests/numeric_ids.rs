//! Numeric owners and groups: a number is a uid or gid, granted as is (containers use ids the
//! host does not list), with one warning line when this host has no entry for it; a name that
//! does not resolve grants nothing.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::common::TestStore;
use crate::mounts::can_mount;

/// An id above `from` that has no passwd entry and no group entry on this host.
fn unused_id(from: u32) -> u32 {
    (from..from + 1000)
        .find(|id| {
            ["passwd", "group"].iter().all(|db| {
                !Command::new("getent")
                    .args([*db, id.to_string().as_str()])
                    .output()
                    .unwrap()
                    .status
                    .success()
            })
        })
        .expect("a free id")
}

fn stderr_of(ts: &TestStore, args: &[&str]) -> String {
    let out = ts.run(args, b"");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    err
}

#[test]
fn a_numeric_owner_without_an_entry_is_granted_with_one_warning() {
    if !can_mount() {
        return;
    }
    let id = unused_id(4242);
    let ts = TestStore::new();
    let err = stderr_of(
        &ts,
        &[
            "vault",
            "create",
            "c",
            "--owner",
            &id.to_string(),
            "--group",
            &id.to_string(),
        ],
    );
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(
        warnings,
        [
            format!("vaultfs: warning: uid {id} has no passwd entry here; granted to uid {id} as a number"),
            format!("vaultfs: warning: gid {id} has no group entry here; granted to gid {id} as a number"),
        ],
        "{err}"
    );
    ts.write("c:/tok", b"for the container");
    ts.write("c:/other", b"x");
    let other = unused_id(id + 1);
    let err = stderr_of(
        &ts,
        &["acl", "set", "c:/other", "--owner", &other.to_string()],
    );
    assert_eq!(
        err.trim(),
        format!(
            "vaultfs: warning: uid {other} has no passwd entry here; granted to uid {other} as a number"
        ),
    );

    // Granted for real: a process running as that bare uid reads the secret through a mount.
    let mnt = ts.path("mnt-numeric");
    let _m = ts.mount("c", &mnt);
    let meta = std::fs::metadata(mnt.join("tok")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (id, id));
    let as_id = |file: &str| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={id}"),
                &format!("--regid={id}"),
                "--clear-groups",
                "cat",
            ])
            .arg(mnt.join(file))
            .output()
            .unwrap()
    };
    let out = as_id("tok");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"for the container");
    assert!(!as_id("other").status.success(), "another uid's secret");
}

#[test]
fn a_numeric_id_with_an_entry_is_quiet_and_an_unknown_name_is_named() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/x", b"x");
    // uid 0 and gid 0 exist everywhere: no warning.
    let err = stderr_of(&ts, &["acl", "set", "v:/x", "--owner", "0", "--group", "0"]);
    assert!(err.is_empty(), "{err}");
    let err = stderr_of(
        &ts,
        &["acl", "set", "v:/x", "--owner", "vfs-ops-nosuchuser"],
    );
    assert_eq!(
        err.trim(),
        "vaultfs: warning: user \"vfs-ops-nosuchuser\" does not exist on this host; mounts will grant its access to nobody"
    );
}
