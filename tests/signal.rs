//! The change signal (issue 17, step 1): writers rewrite `<store>.signal` after each commit,
//! and a mount skips its store round on opens when nothing changed since the last one. These
//! tests hold the guarantees that must survive the shortcut: the next open after a write
//! returns sees it, a new name is found at once, and a frozen or forged signal delays what a
//! mount sees only until its next poll of the authenticated head.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::TestStore;
use crate::mounts::{can_mount, wait_until};

fn signal_of(store: &Path) -> std::path::PathBuf {
    let mut p = store.as_os_str().to_owned();
    p.push(".signal");
    p.into()
}

#[test]
fn writes_keep_a_private_signal_file_next_to_the_store() {
    let ts = TestStore::new();
    ts.vault("app", &[]);
    let sig = signal_of(&ts.store);
    ts.write("app:/s", b"v1");
    let meta = std::fs::symlink_metadata(&sig).expect("a write leaves the signal file");
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o777, 0o600, "the signal file is private");
    assert_eq!(meta.uid(), std::fs::metadata(&ts.store).unwrap().uid());
    let before = std::fs::read(&sig).unwrap();
    assert_eq!(before.len(), 8);
    ts.write("app:/s", b"v2");
    assert_ne!(
        std::fs::read(&sig).unwrap(),
        before,
        "every write changes it"
    );
    // Someone loosened it: the next write makes it private again.
    std::fs::set_permissions(&sig, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    ts.write("app:/s", b"v3");
    assert_eq!(std::fs::metadata(&sig).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn the_next_open_after_a_write_sees_it_however_hot_the_fast_path() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/hot", b"warm");
    ts.write("app:/s", b"v0");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    // Readers keep the mount's fast path busy (cached, unchanged opens) the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, hot) = (stop.clone(), mnt.join("hot"));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(std::fs::read(&hot).unwrap(), b"warm");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut stale = 0;
    for i in 0..150 {
        let value = format!("value {i}");
        ts.write("app:/s", value.as_bytes());
        if std::fs::read(mnt.join("s")).unwrap() != value.as_bytes() {
            stale += 1;
        }
        // Read it again at once: the version just opened is now cached.
        assert_eq!(std::fs::read(mnt.join("s")).unwrap(), value.as_bytes());
        // A name created by a write is found by the next lookup.
        let name = format!("new{i}");
        ts.write(&format!("app:/{name}"), b"fresh");
        assert_eq!(
            std::fs::read(mnt.join(&name)).ok().as_deref(),
            Some(&b"fresh"[..]),
            "a secret created by a write that returned"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(stale, 0, "stale first reads after a write returned");
    assert!(reads > 0);
}

#[test]
fn a_frozen_signal_delays_a_change_only_until_the_next_poll() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"v1");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    let sig = signal_of(&ts.store);
    for round in 0..5 {
        assert_eq!(
            std::fs::read(mnt.join("s")).unwrap(),
            format!("v{}", round + 1).as_bytes()
        );
        // Let a poll round take the current token as clean, then write and put the old token
        // back at once, as someone freezing the file would.
        std::thread::sleep(Duration::from_millis(250));
        let frozen = std::fs::read(&sig).unwrap();
        let next = format!("v{}", round + 2);
        ts.write("app:/s", next.as_bytes());
        std::fs::write(&sig, &frozen).unwrap();
        let started = Instant::now();
        wait_until(
            Duration::from_secs(2),
            "the new value despite a frozen signal",
            || std::fs::read(mnt.join("s")).is_ok_and(|v| v == next.as_bytes()),
        );
        // One poll interval (100 ms) plus scheduling on a loaded machine.
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "a frozen signal delayed the change by {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_signal_file_that_is_not_the_owners_is_ignored_and_opens_stay_exact() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"v1");
    let sig = signal_of(&ts.store);
    // Replaced by a file of another owner (as a restore by another user could leave it):
    // the mount must not trust it, and the writer cannot bump it... as root it can, so
    // make it a directory, which no writer can bump.
    std::fs::remove_file(&sig).unwrap();
    std::fs::create_dir(&sig).unwrap();
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    for i in 0..30 {
        let value = format!("w{i}");
        let out = ts.run(&["write", "app:/s"], value.as_bytes());
        assert!(
            out.status.success(),
            "a write must not fail over its signal: {out:?}"
        );
        assert_eq!(std::fs::read(mnt.join("s")).unwrap(), value.as_bytes());
    }
}

#[test]
fn ls_shows_a_written_secret_without_waiting_for_the_poll() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/first", b"x");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    // A listing is answered from the mount's tree without asking the store; the tree follows
    // the store at each poll (every 100 ms) and, with the signal watched, at once.
    let mut waits = Vec::new();
    for i in 0..21 {
        let name = format!("n{i}");
        ts.write(&format!("app:/{name}"), b"v");
        let started = Instant::now();
        loop {
            let listed = std::fs::read_dir(&mnt)
                .unwrap()
                .any(|e| e.unwrap().file_name().to_str() == Some(name.as_str()));
            if listed {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{name} never listed"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        waits.push(started.elapsed());
    }
    waits.sort();
    let median = waits[waits.len() / 2];
    eprintln!(
        "write → listed: median {median:?}, worst {:?}",
        waits.last().unwrap()
    );
    // Polling alone gives a median near 50 ms.
    assert!(median < Duration::from_millis(25), "median {median:?}");
}
