//! Things going wrong: killed daemons and writers, a full disk, broken store files, and a whole
//! session searched for its canary afterwards.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{files_under, random_bytes, random_name, TestStore};
use crate::mounts::*;

#[test]
fn killing_the_daemon_during_reads_fails_them_fast_and_the_next_mount_recovers() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    for i in 0..8 {
        ts.write(&format!("app:/s{i}"), format!("value-{i}").as_bytes());
    }
    let mnt = ts.path("mnt");
    let (mut daemon, _g) = ts.mount_foreground("app", &mnt);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let (path, stop) = (mnt.join(format!("s{i}")), stop.clone());
            std::thread::spawn(move || {
                let mut errors = 0;
                while !stop.load(Ordering::Relaxed) && errors < 50 {
                    if std::fs::read(&path).is_err() {
                        errors += 1;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // Readers see errors (ENOTCONN), not a hang.
    within(
        Duration::from_secs(10),
        "readers after the kill",
        move || {
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
            for r in readers {
                r.join().unwrap();
            }
        },
    );
    let err = std::fs::read(mnt.join("s0")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));
    let _m = ts.mount("app", &mnt);
    for i in 0..8 {
        let want = format!("value-{i}");
        assert_eq!(
            std::fs::read(mnt.join(format!("s{i}"))).unwrap(),
            want.as_bytes()
        );
        assert_eq!(ts.cat(&format!("app:/s{i}")), want.as_bytes());
    }
}

#[test]
fn writers_killed_at_random_moments_never_leave_half_a_write() {
    let ts = Arc::new(TestStore::new());
    ts.vault("app", &[]);
    // Two writers that run to completion, recording what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let steady: Vec<_> = (0..2)
        .map(|w| {
            let (ts, stop) = (ts.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = HashMap::new();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let addr = format!("app:/steady{w}-{}", i % 5);
                    let value = format!("steady-{w}-{i}");
                    let out = ts.run(&["write", &addr], value.as_bytes());
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    last.insert(addr, value);
                    i += 1;
                }
                last
            })
        })
        .collect();
    // Writers killed with SIGKILL at random moments: each secret holds its last acknowledged
    // value or the one being written, never anything else.
    let mut committed: HashMap<String, Vec<u8>> = HashMap::new();
    // Values whose writer was killed since the last acknowledged write: any may have committed.
    let mut pending: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    // Kill moments spread over twice what a whole write takes on this machine now (it varies
    // with load), so some kills land before the commit and some after.
    let started = std::time::Instant::now();
    for i in 0..5 {
        ts.write(&format!("app:/timing{i}"), b"t");
    }
    let mut unit = started.elapsed() * 2 / 5 / 256;
    // The load changes while the test runs: when 50 kills in a row all land on the same side
    // of the commit, the spread is doubled or halved (at most 600 kills in all).
    let (mut landed_before, mut landed_after) = (0u32, 0u32);
    let delays = random_bytes(600);
    for (n, delay) in delays.iter().enumerate() {
        if n >= 300 && landed_before > 0 && landed_after > 0 {
            break;
        }
        if n > 0 && n % 50 == 0 {
            if landed_after == 0 {
                unit *= 2;
            } else if landed_before == 0 {
                unit /= 2;
            }
        }
        let addr = format!("app:/victim{}", n % 7);
        let value = format!("victim-{n}-{}", "v".repeat(n % 97)).into_bytes();
        let mut child = ts
            .cmd()
            .args(["write", &addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, &value).unwrap();
        drop(stdin);
        std::thread::sleep(unit * u32::from(*delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            landed_after += 1;
            committed.insert(addr.clone(), value);
            pending.remove(&addr);
        } else {
            landed_before += 1;
            pending.entry(addr).or_default().push(value);
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        landed_before > 0 && landed_after > 0,
        "the kills should land both before and after commits ({landed_before} before, \
         {landed_after} after)"
    );
    for t in steady {
        for (addr, value) in t.join().unwrap() {
            assert_eq!(
                ts.cat(&addr),
                value.as_bytes(),
                "acknowledged write lost: {addr}"
            );
        }
    }
    for n in 0..7 {
        let addr = format!("app:/victim{n}");
        let out = ts.run(&["cat", &addr], b"");
        let possible: Vec<&Vec<u8>> = committed
            .get(&addr)
            .into_iter()
            .chain(pending.get(&addr).into_iter().flatten())
            .collect();
        if out.status.success() {
            assert!(
                possible.iter().any(|v| **v == out.stdout),
                "{addr} holds something never written"
            );
        } else {
            assert!(
                !committed.contains_key(&addr),
                "{addr}: an acknowledged write is gone"
            );
        }
    }
    ts.ok(&["ls", "app"]);
}

/// A tmpfs of `size`, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn small_disk(ts: &TestStore, size: &str) -> SmallDisk {
    let dir = ts.path("disk");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("mount")
        // mode=0700: a tmpfs is 1777 by default, and vaultfs refuses a store others can
        // plant files next to.
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    SmallDisk(dir)
}

#[test]
fn a_full_disk_fails_one_write_clearly_and_keeps_the_rest() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let disk = small_disk(&ts, "400k");
    let store = disk.0.join("store.db");
    let cmd = |args: &[&str], stdin: &[u8]| {
        let mut c = ts.cmd();
        c.env("VAULTFS_STORE", &store);
        crate::common::run_command(c.args(args), stdin)
    };
    assert!(cmd(&["init"], b"").status.success());
    assert!(cmd(&["vault", "create", "v"], b"").status.success());
    let mut written = Vec::new();
    let mut failure = None;
    for i in 0..40 {
        let value = random_bytes(40_000);
        let out = cmd(&["write", &format!("v:/s{i}")], &value);
        if !out.status.success() {
            failure = Some(out);
            break;
        }
        written.push(value);
    }
    let out = failure.expect("a 400k disk filled up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("disk is full") && err.contains("store.db"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    assert!(!written.is_empty());
    for (i, value) in written.iter().enumerate() {
        let out = cmd(&["cat", &format!("v:/s{i}")], b"");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&out.stdout, value, "secret {i} after the disk filled");
    }
}

#[test]
fn broken_store_files_get_one_clear_line() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/x", b"abc");
    let bytes = std::fs::read(&ts.store).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("random", random_bytes(50_000)),
        ("empty", Vec::new()),
    ];
    let other = ts.path("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let mut files: Vec<(String, std::path::PathBuf)> = vec![("another SQLite file".into(), other)];
    for (name, content) in cases {
        let p = ts.path(&format!("{name}.db"));
        std::fs::write(&p, content).unwrap();
        files.push((name.into(), p));
    }
    files.push(("missing".into(), ts.path("missing.db")));
    for (what, path) in files {
        for args in [["cat", "v:/x"], ["ls", "v"]] {
            let mut c = ts.cmd();
            c.env("VAULTFS_STORE", &path);
            let out = crate::common::run_command(c.args(args), b"");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what}: {args:?} succeeded");
            assert_eq!(err.lines().count(), 1, "{what}: {err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
            assert!(
                err.contains("not a vaultfs store") || err.contains("vaultfs init"),
                "{what}: {err}"
            );
        }
    }
}

#[test]
fn a_store_on_read_only_media_can_be_read_and_mounted_but_not_written() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/x", b"from-backup");
    let disk = small_disk(&ts, "4m");
    std::fs::copy(&ts.store, disk.0.join("store.db")).unwrap();
    let out = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&disk.0)
        .output()
        .unwrap();
    assert!(out.status.success());
    let ro = disk.0.join("store.db");
    let cmd = |args: &[&str], stdin: &[u8]| {
        let mut c = ts.cmd();
        c.env("VAULTFS_STORE", &ro);
        crate::common::run_command(c.args(args), stdin)
    };
    let out = cmd(&["cat", "v:/x"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"from-backup");
    let out = cmd(&["write", "v:/y"], b"new");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("read-only") && err.lines().count() == 1,
        "{err}"
    );
    let mnt = ts.path("mnt");
    let out = cmd(&["mount", "v", mnt.to_str().unwrap()], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _g = MountGuard { path: mnt.clone() };
    assert_eq!(std::fs::read(mnt.join("x")).unwrap(), b"from-backup");
}

fn encodings(bytes: &[u8]) -> Vec<Vec<u8>> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![bytes.to_vec(), hex.into_bytes()];
    // base64 at each of the three alignments, without the ragged ends.
    for skip in 0..3 {
        let chunk = &bytes[skip..];
        let mut b64 = Vec::new();
        for c in chunk.chunks_exact(3) {
            let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
            for shift in [18, 12, 6, 0] {
                b64.push(B64[(n >> shift) as usize & 63]);
            }
        }
        out.push(b64);
    }
    out
}

#[test]
fn a_whole_session_leaves_its_canary_nowhere() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let value = format!("CANARY-{}-{}", random_name(), random_name()).into_bytes();
    let rotated = format!("ROTATED-{}-{}", random_name(), random_name()).into_bytes();
    let name = format!("name-{}", random_name());
    let log = ts.path("daemon.log");
    ts.vault("app", &["--mode", "0440"]);
    ts.write(&format!("app:/{name}"), &value);
    let mnt = ts.path("mnt");
    let out = ts
        .cmd()
        .env("VAULTFS_LOG", "trace")
        .args([
            "mount",
            "--log-file",
            log.to_str().unwrap(),
            "app",
            mnt.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let _g = MountGuard { path: mnt.clone() };
    let mut logs = out.stderr;
    assert_eq!(std::fs::read(mnt.join(&name)).unwrap(), value);
    for args in [
        vec!["acl", "set", &format!("app:/{name}"), "--mode", "0400"],
        vec!["ls", "-l", "app"],
        vec!["acl", "show", &format!("app:/{name}")],
    ] {
        let out = ts
            .cmd()
            .env("VAULTFS_LOG", "trace")
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success());
        logs.extend(out.stderr);
    }
    ts.write(&format!("app:/{name}"), &rotated);
    assert_eq!(std::fs::read(mnt.join(&name)).unwrap(), rotated);
    ts.ok(&["umount", mnt.to_str().unwrap()]);
    wait_until(
        Duration::from_secs(5),
        "the daemon to finish its log",
        || !is_mounted(&mnt),
    );
    logs.extend(std::fs::read(&log).unwrap());
    assert!(!logs.is_empty(), "trace logging captured nothing");

    for secret in [&value, &rotated] {
        for needle in encodings(secret) {
            assert!(
                !logs.windows(needle.len()).any(|w| w == needle),
                "a value is in the logs"
            );
            for file in files_under(ts.dir.path()) {
                if file == log {
                    continue;
                }
                let content = std::fs::read(&file).unwrap_or_default();
                assert!(
                    !content
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice()),
                    "a value is in {}",
                    file.display()
                );
            }
        }
    }
    // Names are not values: logs may say which file was opened, but the store may not.
    let store_files = files_under(ts.dir.path())
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("store.db"));
    for file in store_files {
        let content = std::fs::read(&file).unwrap_or_default();
        let found = content.windows(name.len()).any(|w| w == name.as_bytes());
        assert!(!found, "the name is in {}", file.display());
    }
}
