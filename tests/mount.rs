//! The FUSE mount, end to end: real mounts, real users, real signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::TestStore;
use crate::mounts::*;

#[test]
fn whole_vault_shows_tree_attributes_and_values() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault(
        "app",
        &["--owner", "root", "--group", "root", "--mode", "0440"],
    );
    ts.write("app:/token", b"tok-123");
    ts.write("app:/db/password", b"hunter2\n");
    ts.ok(&["acl", "set", "app:/db", "--mode", "0400"]);
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);

    let mut names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["db", "token"]);
    let token = std::fs::metadata(mnt.join("token")).unwrap();
    assert_eq!(
        (token.mode() & 0o7777, token.uid(), token.gid()),
        (0o440, 0, 0)
    );
    assert_eq!(token.len(), 7);
    assert!(token.is_file());
    let db = std::fs::metadata(mnt.join("db")).unwrap();
    assert!(db.is_dir());
    assert_eq!(
        db.mode() & 0o7777,
        0o500,
        "directories get x wherever they get r"
    );
    assert_eq!(
        std::fs::read(mnt.join("db/password")).unwrap(),
        b"hunter2\n"
    );
    assert_eq!(std::fs::read(mnt.join("token")).unwrap(), b"tok-123");
    // Stable inode numbers across lookups.
    assert_eq!(
        token.ino(),
        std::fs::metadata(mnt.join("token")).unwrap().ino()
    );

    // Read-only: writes, creates and removals are refused.
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("token"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = std::fs::write(mnt.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert!(std::fs::remove_file(mnt.join("token")).is_err());
}

#[test]
fn subtree_and_single_file_mounts() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("nix", &["--mode", "0400"]);
    ts.write("nix:/hosts/web/key", b"web-key");
    ts.write("nix:/nix-tokens", b"extra-access-tokens = github.com=abc\n");

    let sub = ts.path("sub");
    let _s = ts.mount("nix:/hosts", &sub);
    assert_eq!(std::fs::read(sub.join("web/key")).unwrap(), b"web-key");

    // The mountpoint of a single secret is a regular file, created when missing.
    let file = ts.path("keys/nix-tokens");
    let _f = ts.mount("nix:/nix-tokens", &file);
    let meta = std::fs::metadata(&file).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o7777, 0o400);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"extra-access-tokens = github.com=abc\n"
    );

    // A directory source on a file mountpoint, or a missing source, is a clear error.
    let out = ts.run(&["mount", "nix:/hosts", file.to_str().unwrap()], b"");
    assert!(!out.status.success());
    let out = ts.run(
        &["mount", "nix:/nope", ts.path("nope").to_str().unwrap()],
        b"",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nix:/nope") && err.contains("no such"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn rotation_is_seen_by_the_next_open_every_time() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("nix", &[]);
    ts.write("nix:/tok", b"v0");
    let file = ts.path("tok");
    let _m = ts.mount("nix:/tok", &file);
    // Warm the kernel's cache, then rotate: values grow and shrink so a stale size shows too.
    assert_eq!(std::fs::read(&file).unwrap(), b"v0");
    for i in 0..100 {
        let value = format!("value-{i}-{}", "x".repeat((i * 37) % 300));
        ts.write("nix:/tok", value.as_bytes());
        let got = std::fs::read(&file).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            value,
            "stale read at rotation {i}"
        );
        assert_eq!(std::fs::metadata(&file).unwrap().len(), value.len() as u64);
        // A second open with the cache warm sees the same.
        assert_eq!(std::fs::read(&file).unwrap(), value.as_bytes());
    }
}

#[test]
fn tree_changes_appear_within_a_second() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &["--mode", "0400"]);
    ts.write("app:/a", b"a");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    assert!(mnt.join("a").exists());
    let second = Duration::from_millis(1500);

    ts.write("app:/b", b"bb");
    wait_until(second, "a new secret in ls", || {
        std::fs::read_dir(&mnt)
            .unwrap()
            .any(|e| e.unwrap().file_name() == "b")
    });
    ts.ok(&["mv", "app:/a", "app:/renamed"]);
    wait_until(second, "a rename", || {
        !mnt.join("a").exists() && mnt.join("renamed").exists()
    });
    ts.ok(&["acl", "set", "app:/renamed", "--mode", "0440"]);
    wait_until(second, "an ACL change in stat", || {
        std::fs::metadata(mnt.join("renamed")).unwrap().mode() & 0o777 == 0o440
    });
    ts.ok(&["rm", "app:/b"]);
    wait_until(second, "a removal", || !mnt.join("b").exists());
    assert_eq!(std::fs::read(mnt.join("renamed")).unwrap(), b"a");
}

#[test]
fn permissions_follow_the_acl_at_every_open() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    user("vfs-owner", None);
    user("vfs-member", Some("vfs-readers"));
    user("vfs-other", None);
    ts.vault(
        "team",
        &[
            "--owner",
            "vfs-owner",
            "--group",
            "vfs-readers",
            "--mode",
            "0440",
        ],
    );
    ts.write("team:/secret", b"s3cret");
    let mnt = ts.path("mnt");
    let _m = ts.mount("team", &mnt);
    let secret = mnt.join("secret");

    assert_eq!(cat_as("vfs-owner", &secret).unwrap(), b"s3cret");
    // A member through a supplementary group only (the primary group is their own).
    assert_eq!(cat_as("vfs-member", &secret).unwrap(), b"s3cret");
    let denied = cat_as("vfs-other", &secret).unwrap_err();
    assert!(denied.contains("Permission denied"), "{denied}");

    // A handle opened before a revocation may finish; the next open fails.
    let mut holder = std::process::Command::new("runuser")
        .args(["-u", "vfs-member", "--", "sh", "-c"])
        .arg(format!(
            "exec 3<'{}' && echo opened && read go && cat <&3",
            secret.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "opened\n");

    ts.ok(&["acl", "set", "team:/secret", "--mode", "0400"]);
    let denied = cat_as("vfs-member", &secret).unwrap_err();
    assert!(denied.contains("Permission denied"), "revoked: {denied}");
    assert_eq!(cat_as("vfs-owner", &secret).unwrap(), b"s3cret");

    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert!(holder.wait().unwrap().success());
    assert_eq!(
        rest, b"s3cret",
        "the handle opened before the revocation finishes"
    );

    // Giving access back takes effect once the kernel's cached attributes expire or are
    // invalidated (the kernel checks mode bits too): within a second.
    ts.ok(&["acl", "set", "team:/secret", "--mode", "0440"]);
    wait_until(Duration::from_millis(1500), "a grant", || {
        cat_as("vfs-member", &secret).is_ok()
    });
}

#[test]
fn unknown_owner_denies_instead_of_falling_back() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    user("vfs-other", None);
    let out = ts.run(
        &[
            "vault",
            "create",
            "ghost",
            "--owner",
            "no-such-user-vfs",
            "--mode",
            "0400",
        ],
        b"",
    );
    assert!(out.status.success());
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(warning.contains("does not exist"), "{warning}");
    ts.write("ghost:/s", b"x");
    let mnt = ts.path("mnt");
    let _m = ts.mount("ghost", &mnt);
    let meta = std::fs::metadata(mnt.join("s")).unwrap();
    assert_eq!(meta.uid(), 65534, "an unresolved owner shows as nobody");
    assert!(cat_as("vfs-other", &mnt.join("s")).is_err());
}

#[test]
fn sigterm_unmounts_and_exits_zero_even_with_files_open() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"value");
    let mnt = ts.path("mnt");
    let (mut daemon, _g) = ts.mount_foreground("app", &mnt);
    let held = std::fs::File::open(mnt.join("s")).unwrap();
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    wait_until(Duration::from_secs(5), "the mount to be detached", || {
        !is_mounted(&mnt)
    });
    drop(held);
    let status = within(Duration::from_secs(10), "daemon exit", move || {
        daemon.wait().unwrap()
    });
    assert!(status.success(), "daemon exited with {status}");
}

#[test]
fn umount_command_ends_the_daemon() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"value");
    let mnt = ts.path("mnt");
    let (daemon, _g) = ts.mount_foreground("app", &mnt);
    ts.ok(&["umount", mnt.to_str().unwrap()]);
    assert!(!is_mounted(&mnt));
    let mut daemon = daemon;
    let status = within(Duration::from_secs(10), "daemon exit", move || {
        daemon.wait().unwrap()
    });
    assert!(status.success(), "daemon exited with {status}");
    let out = ts.run(&["umount", mnt.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2), "not a vaultfs mount any more");
}

#[test]
fn a_stale_mount_is_cleared_by_the_next_mount() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"value");
    let mnt = ts.path("mnt");
    let (mut daemon, _g) = ts.mount_foreground("app", &mnt);
    assert_eq!(std::fs::read(mnt.join("s")).unwrap(), b"value");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let err = std::fs::read_dir(&mnt).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));
    let _m = ts.mount("app", &mnt);
    assert_eq!(std::fs::read(mnt.join("s")).unwrap(), b"value");
    // The store took no damage.
    assert_eq!(ts.cat("app:/s"), b"value");
}

#[test]
fn sixteen_concurrent_readers_all_progress() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    for i in 0..16 {
        ts.write(&format!("app:/s{i}"), format!("value-{i}").as_bytes());
    }
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicU64>> = (0..16).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let path = mnt.join(format!("s{i}"));
            let (stop, count) = (stop.clone(), counts[i].clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let got = std::fs::read(&path).unwrap();
                    assert_eq!(got, format!("value-{i}").as_bytes());
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    for (i, c) in counts.iter().enumerate() {
        assert!(c.load(Ordering::Relaxed) > 0, "reader {i} made no progress");
    }
}

#[test]
fn ls_never_waits_for_a_writer() {
    if !can_mount() {
        return;
    }
    let ts = Arc::new(TestStore::new());
    ts.vault("app", &[]);
    ts.write("app:/s", b"v");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ts, stop) = (ts.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                ts.write(&format!("app:/w{}", i % 20), format!("{i}").as_bytes());
                i += 1;
            }
            i
        })
    };
    for _ in 0..50 {
        let dir = mnt.clone();
        within(Duration::from_secs(5), "ls during writes", move || {
            std::fs::read_dir(&dir).unwrap().count()
        });
        let file = mnt.join("s");
        let got = within(Duration::from_secs(5), "cat during writes", move || {
            std::fs::read(file).unwrap()
        });
        assert_eq!(got, b"v");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
}

#[test]
fn a_locked_store_gives_eio_in_bounded_time_then_recovers() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"v1");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    assert_eq!(std::fs::read(mnt.join("s")).unwrap(), b"v1");
    // A process stuck holding every WAL lock byte of the -shm file blocks even WAL readers:
    // the worst a wedged writer or a hostile same-uid process can do to the store.
    let lock = crate::mounts::WalLock::hold(&ts.store);
    // Until the mount's next poll round meets the lock (every 100 ms), an unchanged secret it
    // already read may be served from the state last verified.
    std::thread::sleep(Duration::from_millis(300));
    let file = mnt.join("s");
    let result = within(
        Duration::from_secs(15),
        "open on a locked store",
        move || std::fs::read(file).map_err(|e| e.raw_os_error()),
    );
    assert_eq!(result, Err(Some(libc::EIO)));
    // ls is served from memory and stays instant.
    let dir = mnt.clone();
    within(Duration::from_secs(2), "ls on a locked store", move || {
        std::fs::read_dir(dir).unwrap().count()
    });
    drop(lock);
    assert_eq!(std::fs::read(mnt.join("s")).unwrap(), b"v1");
}

#[test]
fn a_tampered_value_gives_eio_for_that_entry_only() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/good", b"good");
    ts.write("app:/bad", b"bad-value");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    let conn = rusqlite::Connection::open(&ts.store).unwrap();
    // Flip one byte of the newest value ciphertext (the one written last: "bad").
    let (id, mut value): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT id, value FROM entries WHERE value IS NOT NULL ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let last = value.len() - 1;
    value[last] ^= 1;
    conn.execute(
        "UPDATE entries SET value = ?1 WHERE id = ?2",
        rusqlite::params![value, id],
    )
    .unwrap();
    drop(conn);
    let err = std::fs::read(mnt.join("bad")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(std::fs::read(mnt.join("good")).unwrap(), b"good");
}

#[test]
fn serve_config_mounts_everything_and_stops_on_sigterm() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("nix", &[]);
    ts.write("nix:/nix-tokens", b"tokens");
    ts.write("nix:/ssh/id", b"key");
    let one = ts.path("run/nix-tokens");
    let two = ts.path("run/ssh");
    let config = ts.path("serve.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n[[mount]]\nsource = \"nix:/nix-tokens\"\nmountpoint = \"{}\"\n[[mount]]\nsource = \"nix:/ssh\"\nmountpoint = \"{}\"\n",
            ts.store.display(),
            one.display(),
            two.display()
        ),
    )
    .unwrap();
    ts.ok(&["serve", "--check", "--config", config.to_str().unwrap()]);
    let mut daemon = ts
        .cmd()
        .env_remove("VAULTFS_STORE")
        .args(["serve", "--config", config.to_str().unwrap()])
        .spawn()
        .unwrap();
    let _g1 = MountGuard { path: one.clone() };
    let _g2 = MountGuard { path: two.clone() };
    wait_until(Duration::from_secs(10), "both mounts", || {
        is_mounted(&one) && is_mounted(&two)
    });
    assert_eq!(std::fs::read(&one).unwrap(), b"tokens");
    assert_eq!(std::fs::read(two.join("id")).unwrap(), b"key");
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = within(Duration::from_secs(10), "serve exit", move || {
        daemon.wait().unwrap()
    });
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&one) && !is_mounted(&two));
}

#[test]
fn serve_check_rejects_bad_configs() {
    let ts = TestStore::new();
    let config = ts.path("bad.toml");
    std::fs::write(
        &config,
        "[[mount]]\nsource = \"nix:relative\"\nmountpoint = \"/x\"\n",
    )
    .unwrap();
    let out = ts.run(
        &["serve", "--check", "--config", config.to_str().unwrap()],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mount #1") && err.contains("nix:relative"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn foreground_mount_tells_systemd_it_is_ready() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"value");
    let socket_path = ts.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mnt = ts.path("mnt");
    let mut daemon = ts
        .cmd()
        .env("NOTIFY_SOCKET", &socket_path)
        .args(["mount", "--foreground", "app", mnt.to_str().unwrap()])
        .spawn()
        .unwrap();
    let _g = MountGuard { path: mnt.clone() };
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a READY=1 datagram");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.lines().any(|l| l == "READY=1"), "{message}");
    // Ready means usable: no polling needed.
    assert_eq!(std::fs::read(mnt.join("s")).unwrap(), b"value");
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGINT) };
    let status = within(Duration::from_secs(10), "daemon exit", move || {
        daemon.wait().unwrap()
    });
    assert!(status.success());
    let n = socket.recv(&mut buf).expect("a STOPPING=1 datagram");
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn the_quick_start_demo_mounts_lists_reads_and_cleans_up() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.path("demo");
    let out = std::process::Command::new(crate::common::vaultfs_bin())
        .args(["demo", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("-r-------- 1 root root"), "{stdout}");
    assert!(
        stdout.contains("extra-access-tokens = github.com=ghp_DEMO"),
        "{stdout}"
    );
    assert!(stdout.contains("rotated"), "{stdout}");
    assert!(!dir.exists(), "the demo removes its directory");
    assert!(!is_mounted(&dir.join("mnt")));
}
