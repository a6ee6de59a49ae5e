//! Mountpoints under attack: root mounts into directories another user controls, and that
//! user plants symlinks, dead FUSE mounts and odd paths. Each attack runs as a real second
//! user (`vfs-mnt-*`); each test is bounded in time and leaves nothing mounted.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{require_tool, TestStore};
use crate::mounts::{as_user, can_mount, is_mounted, user, wait_until, MountGuard};

/// A directory owned by `name` inside the test's dir: the place root is asked to mount into.
fn home_of(ts: &TestStore, name: &str) -> PathBuf {
    let uid = user(name, None);
    let home = ts.path(&format!("home-{name}"));
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), None).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    home
}

fn run_as(name: &str, script: &str) {
    let out = as_user(name, script);
    assert!(out.status.success(), "as {name}: {script}: {out:?}");
}

/// Anything mounted exactly at `path`, vaultfs or not.
fn anything_mounted_at(path: &Path) -> bool {
    vaultfs_fs::mountinfo::mounted_at(path).unwrap().is_some()
}

/// `vaultfs mount` that must fail with one line naming `needle`; whatever it mounted anyway
/// (old code) is unmounted by the guards.
fn mount_refused(ts: &TestStore, source: &str, at: &Path, also: &[&Path], needle: &str) -> String {
    let _guards: Vec<MountGuard> = [at]
        .iter()
        .chain(also.iter())
        .map(|p| MountGuard {
            path: p.to_path_buf(),
        })
        .collect();
    let out = ts.run(&["mount", source, at.to_str().unwrap()], b"");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    for p in also {
        assert!(
            !anything_mounted_at(p),
            "mounting at {} mounted over {} (stderr: {err})",
            at.display(),
            p.display()
        );
    }
    assert_eq!(
        out.status.code(),
        Some(1),
        "mount at {}: {err}",
        at.display()
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    err
}

#[test]
fn a_symlink_another_user_controls_is_never_followed_to_mount() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"value");
    let eve = "vfs-mnt-eve";
    let home = home_of(&ts, eve);
    // Root's directory and root's 0600 file: what eve wants a vault mounted over.
    let target = ts.path("etc-like");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(target.join("keep"), b"root's").unwrap();
    let secret = ts.path("shadow-like");
    std::fs::write(&secret, b"root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The mountpoint itself is a symlink.
    let vault = home.join("vault");
    run_as(
        eve,
        &format!("ln -s '{}' '{}'", target.display(), vault.display()),
    );
    let err = mount_refused(&ts, "app", &vault, &[&target], "is a symlink");
    assert!(
        err.contains(&vault.display().to_string()),
        "names the component: {err}"
    );
    assert!(err.contains(eve), "says who can swap it: {err}");

    // A component in the middle is a symlink.
    let link = home.join("link");
    run_as(
        eve,
        &format!("ln -s '{}' '{}'", ts.dir.path().display(), link.display()),
    );
    let err = mount_refused(
        &ts,
        "app",
        &link.join("etc-like"),
        &[&target],
        "is a symlink",
    );
    assert!(
        err.contains(&link.display().to_string()),
        "names the component: {err}"
    );

    // One secret onto a root-owned file through a symlink.
    let tok = home.join("tok");
    run_as(
        eve,
        &format!("ln -s '{}' '{}'", secret.display(), tok.display()),
    );
    mount_refused(&ts, "app:/s", &tok, &[&secret], "is a symlink");
    let meta = std::fs::metadata(&secret).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"root's");

    // A real directory in eve's home is fine: root mounts on exactly that object.
    let real = home.join("real");
    run_as(eve, &format!("mkdir '{}'", real.display()));
    let _m = ts.mount("app", &real);
    assert_eq!(std::fs::read(real.join("s")).unwrap(), b"value");
}

#[test]
fn missing_mountpoints_are_created_0755_through_fds_never_through_a_symlink() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"value");
    let eve = "vfs-mnt-eve2";
    let home = home_of(&ts, eve);
    // Root's private directory, which must not gain directories (or a mount) from eve.
    let private = ts.path("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = home.join("link");
    run_as(
        eve,
        &format!("ln -s '{}' '{}'", private.display(), link.display()),
    );
    mount_refused(
        &ts,
        "app",
        &link.join("new/dir"),
        &[&private.join("new/dir")],
        "is a symlink",
    );
    assert!(
        !private.join("new").exists(),
        "a directory was created through eve's symlink"
    );
    assert_eq!(
        std::fs::metadata(&private).unwrap().mode() & 0o7777,
        0o700,
        "root's directory kept its mode"
    );

    // Created directories get exactly 0755 (the daemon's umask is 077), the file 0400.
    let deep = ts.path("fresh/a/b");
    let m = ts.mount("app", &deep);
    drop(m);
    for p in ["fresh", "fresh/a"] {
        let mode = std::fs::metadata(ts.path(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{p}");
    }
    let tok = ts.path("fresh2/tok");
    let _m = ts.mount("app:/s", &tok);
    let mode = std::fs::metadata(ts.path("fresh2")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    assert_eq!(std::fs::read(&tok).unwrap(), b"value");
}

#[test]
fn only_a_dead_vaultfs_mount_is_cleared_never_another_dead_fuse_mount() {
    if !can_mount() || !require_tool("gocryptfs") {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"value");
    let cipher = ts.path("cipher");
    let mnt = ts.path("gmnt");
    std::fs::create_dir(&cipher).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let _guard = MountGuard { path: mnt.clone() };
    let init = Command::new("gocryptfs")
        .args(["-init", "-q", "-extpass", "echo pw", "-scryptn", "10"])
        .arg(&cipher)
        .output()
        .unwrap();
    assert!(init.status.success(), "gocryptfs -init: {init:?}");
    // Its source even claims to be a vault: only vaultfs's own type counts.
    let mut server = Command::new("gocryptfs")
        .args(["-f", "-q", "-extpass", "echo pw", "-fsname", "vaultfs:app"])
        .arg(&cipher)
        .arg(&mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the gocryptfs mount", || {
        anything_mounted_at(&mnt)
    });
    server.kill().unwrap();
    server.wait().unwrap();
    let err = std::fs::read_dir(&mnt).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));

    let err = ts.fails(&["mount", "app", mnt.to_str().unwrap()], 1);
    assert!(err.contains("not vaultfs"), "{err}");
    assert!(err.contains(mnt.to_str().unwrap()), "{err}");
    let entry = vaultfs_fs::mountinfo::mounted_at(&mnt).unwrap();
    assert!(
        entry.is_some_and(|e| e.fs_type == "fuse.gocryptfs"),
        "the dead gocryptfs mount was detached"
    );
    assert!(!is_mounted(&mnt));

    // A dead vaultfs mount, by contrast, is cleared.
    let ours = ts.path("mnt");
    let (mut daemon, _g) = ts.mount_foreground("app", &ours);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(&ours).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    let _m = ts.mount("app", &ours);
    assert_eq!(std::fs::read(ours.join("s")).unwrap(), b"value");
}

#[test]
fn umount_takes_a_trailing_slash_and_removes_what_mount_created() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"value");
    let created = ts.path("made/here");
    let _g = ts.mount("app", &created);
    ts.ok(&["umount", &format!("{}/", created.display())]);
    assert!(!is_mounted(&created));
    wait_until(
        Duration::from_secs(10),
        "the created mountpoint to go",
        || !created.exists(),
    );
    assert!(
        ts.path("made").is_dir(),
        "only the mountpoint itself is removed"
    );

    // One secret, the path given with a trailing slash (a file is still what is made).
    let file = ts.path("made/tok");
    let _g = MountGuard { path: file.clone() };
    ts.ok(&["mount", "app:/s", &format!("{}/", file.display())]);
    assert!(is_mounted(&file));
    assert_eq!(std::fs::read(&file).unwrap(), b"value");
    ts.ok(&["umount", file.to_str().unwrap()]);
    wait_until(Duration::from_secs(10), "the created file to go", || {
        !file.exists()
    });

    // A mountpoint that was there before stays.
    let existing = ts.path("existing");
    std::fs::create_dir(&existing).unwrap();
    let (mut daemon, _g) = ts.mount_foreground("app", &existing);
    ts.ok(&["umount", &format!("{}//", existing.display())]);
    let status = crate::mounts::within(Duration::from_secs(10), "daemon exit", move || {
        daemon.wait().unwrap()
    });
    assert!(status.success());
    assert!(existing.is_dir());

    // Something not vaultfs at the path: a usage error, nothing unmounted.
    let out = ts.run(&["umount", existing.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Only while it is still the object mount made: one another user put there meanwhile stays.
    let eve = "vfs-mnt-eve4";
    let home = home_of(&ts, eve);
    let mnt = home.join("mnt");
    let (mut daemon, _g) = ts.mount_foreground("app", &mnt);
    // A file held open keeps the detached mount, and so the daemon, alive after umount.
    let held = std::fs::File::open(mnt.join("s")).unwrap();
    let out = ts.run(&["umount", mnt.to_str().unwrap()], b"");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy; detached"));
    // The path is free at once: eve swaps root's empty directory for her own.
    run_as(eve, &format!("rmdir '{0}' && mkdir '{0}'", mnt.display()));
    drop(held);
    let status = crate::mounts::within(Duration::from_secs(10), "daemon exit", move || {
        daemon.wait().unwrap()
    });
    assert!(status.success(), "daemon exited with {status}");
    let meta = std::fs::metadata(&mnt).expect("eve's directory was removed");
    assert_eq!(
        meta.uid(),
        user(eve, None),
        "not the directory vaultfs made"
    );
}

#[test]
fn without_root_a_mountpoint_another_user_can_change_is_refused() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let eve = "vfs-mnt-eve3";
    let bob = "vfs-mnt-bob";
    let eve_home = home_of(&ts, eve);
    let bob_home = home_of(&ts, bob);
    // Eve offers bob a directory in her home; she can swap it (or a symlink) at any time,
    // and without root the path, not an fd, goes to fusermount3.
    let offered = eve_home.join("for-bob");
    run_as(
        eve,
        &format!("mkdir '{0}' && chmod 777 '{0}'", offered.display()),
    );
    let bin = crate::common::vaultfs_bin();
    let script = format!(
        "set -e; export VAULTFS_STORE='{h}/store/store.db' VAULTFS_KEY_FILE='{h}/key' TMPDIR='{h}'; \
         '{b}' keygen '{h}/key' >/dev/null 2>&1; '{b}' init >/dev/null 2>&1; \
         '{b}' vault create app >/dev/null 2>&1; printf v | '{b}' write app:/s 2>/dev/null; exec '{b}' mount app '{m}'",
        h = bob_home.display(),
        b = bin.display(),
        m = offered.display(),
    );
    let _g = MountGuard {
        path: offered.clone(),
    };
    let out = crate::mounts::within(Duration::from_secs(60), "bob's mount", move || {
        as_user(bob, &script)
    });
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    // (Without root the daemon may also warn that it cannot lock its memory.)
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("vaultfs:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(
        errors[0].contains(&format!("can be replaced by user {eve}")),
        "names who can change it: {err}"
    );
    assert!(!anything_mounted_at(&offered));
}
