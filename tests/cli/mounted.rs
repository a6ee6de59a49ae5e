//! Commands run against a vault that is mounted on this host (issue 12, bugs 1 and 5): removing
//! a mounted vault asks first, and a mountpoint with a trailing slash is taken as the path.

use super::USAGE_OR_AUTH;
use crate::common::{assert_fails, assert_success, OnPty, TestStore};
use crate::mounts::{can_mount, is_mounted};

#[test]
fn removing_a_mounted_vault_warns_and_needs_a_yes() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let vault = crate::common::random_name();
    ts.vault(&vault, &[]);
    ts.write(&format!("{vault}:/tok"), b"sixteen byte val");
    let mnt = ts.path("m");
    let _m = ts.mount(&vault, &mnt);

    // No terminal and no --yes: refused, naming the mount; nothing removed.
    let args = ["vault", "remove", &vault, "--force"];
    let out = ts.run(&args, b"");
    let line = assert_fails(&out, &args, USAGE_OR_AUTH);
    assert!(
        line.contains(&vault) && line.contains(mnt.to_str().unwrap()) && line.contains("--yes"),
        "{line}"
    );
    assert_eq!(ts.cat(&format!("{vault}:/tok")), b"sixteen byte val");

    // Another store's vault of the same name is not the mounted one: removed without a question.
    let other = TestStore::new();
    other.vault(&vault, &[]);
    other.write(&format!("{vault}:/tok"), b"other store");
    let out = other.run(&["vault", "remove", &vault, "--force"], b"");
    assert_success(&out, &["vault remove (another store)"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("mounted"));

    // On a terminal: asked; "n" keeps it.
    let mut cmd = ts.cmd();
    cmd.args(args);
    let mut tty = OnPty::spawn(cmd);
    tty.expect("[y/N]");
    tty.type_in(b"n\n");
    let (code, seen) = tty.finish();
    assert_eq!(code, USAGE_OR_AUTH, "{}", String::from_utf8_lossy(&seen));
    assert_eq!(ts.cat(&format!("{vault}:/tok")), b"sixteen byte val");

    // --yes removes it, with a warning naming the mount.
    let out = ts.run(&["vault", "remove", &vault, "--force", "--yes"], b"");
    assert_success(&out, &["vault remove --yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mounted at") && err.contains(mnt.to_str().unwrap()),
        "{err}"
    );
    assert!(!ts.ok_text(&["vault", "list"]).contains(&vault));

    // An unmounted vault is removed without a question.
    ts.vault("other", &[]);
    ts.ok(&["vault", "remove", "other"]);
}

#[test]
fn a_mountpoint_with_a_trailing_slash_is_taken_as_the_path() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("nix", &[]);
    ts.write("nix:/tok", b"token-value");
    let file = ts.path("tok");
    let with_slash = format!("{}/", file.display());
    let out = ts.run(&["mount", "nix:/tok", &with_slash], b"");
    let _guard = crate::mounts::MountGuard { path: file.clone() };
    assert_success(&out, &["mount nix:/tok DIR/tok/"]);
    assert!(is_mounted(&file));
    assert_eq!(std::fs::read(&file).unwrap(), b"token-value");
    ts.ok(&["umount", &with_slash]);
    assert!(!is_mounted(&file));
}
