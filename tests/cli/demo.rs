//! `vaultfs demo`: its transcript pastes as printed, `--keep` says how to clean up, and without
//! `--keep` nothing is left behind.

use crate::common::{contains, TestStore};
use crate::mounts::{can_mount, is_mounted};

/// `demo --keep`: every command line of its transcript runs as printed (all but the mount,
/// which is in place), and its clean-up lines leave nothing behind.
#[test]
fn the_demo_transcript_pastes_and_keep_says_how_to_clean_up() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.path("kept-demo");
    let out = std::process::Command::new(crate::common::vaultfs_bin())
        .args(["demo", "--keep", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let _guard = crate::mounts::MountGuard {
        path: dir.join("mnt"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&dir.join("mnt")), "--keep leaves it mounted");
    // Command lines are the ones neither indented (output) nor comments.
    let commands: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && !l.is_empty())
        .filter(|l| !l.contains(" mount demo "))
        .collect();
    assert!(commands.iter().any(|l| l.contains("umount")), "{stdout}");
    assert!(commands.iter().any(|l| l.starts_with("rm -r")), "{stdout}");
    let script = commands.join("\n");
    let run = std::process::Command::new("sh")
        .args(["-ec", &script])
        .env_remove("VAULTFS_STORE")
        .env_remove("VAULTFS_KEY_FILE")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the transcript did not paste:\n{script}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(contains(&run.stdout, b"rotated"), "{script}");
    assert!(!is_mounted(&dir.join("mnt")), "the clean-up lines unmount");
    assert!(!dir.exists(), "the clean-up lines remove the demo");
}

/// A demo that fails half-way (here: its mountpoint is taken by a file) still removes what it
/// made, and only that.
#[test]
fn a_failed_demo_leaves_nothing_of_its_own_behind() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.path("failing-demo");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("mnt"), b"the user's file").unwrap();
    let out = std::process::Command::new(crate::common::vaultfs_bin())
        .args(["demo", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["mnt"], "only the user's file is left");
    assert_eq!(std::fs::read(dir.join("mnt")).unwrap(), b"the user's file");
}
