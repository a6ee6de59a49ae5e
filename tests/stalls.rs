//! Never hang, never lie (reliability round 2): with the store locked, frozen, replaced or
//! removed, `ls`, `stat` and lookups of known names answer from memory at once, opens fail
//! with EIO at their deadline, and nothing is served that the store did not say.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{require_tool, TestStore};
use crate::mounts::{can_mount, wait_until, within, MountGuard, WalLock};

/// The bound asserted for `ls`/`stat`: far above what they take (they never wait on the store;
/// the worst seen is printed), far below the seconds a stuck store used to cost.
const INSTANT: Duration = Duration::from_secs(1);

/// A value big enough (64 KiB) that reading it needs pages SQLite has not cached.
fn value_of(name: &str) -> Vec<u8> {
    let mut v = format!("value of {name}").into_bytes();
    v.resize(64 * 1024, b'.');
    v
}

/// Times `ls -l` (a listing and a stat of every entry) and a stat of each named file, each
/// bounded; returns the worst.
fn worst_listing_and_stat(dir: &Path, names: &[String]) -> Duration {
    let mut worst = Duration::ZERO;
    for name in names {
        let started = Instant::now();
        let path = dir.join(name);
        within(INSTANT * 5, "stat on a stuck store", move || {
            std::fs::metadata(path).unwrap()
        });
        worst = worst.max(started.elapsed());
        let started = Instant::now();
        let d = dir.to_owned();
        within(INSTANT * 5, "ls -l on a stuck store", move || {
            for e in std::fs::read_dir(d).unwrap() {
                e.unwrap().metadata().unwrap();
            }
        });
        worst = worst.max(started.elapsed());
    }
    worst
}

/// Starts `n` opens at once; returns how each ended and the longest one took.
fn concurrent_opens(files: Vec<PathBuf>) -> (Vec<Result<Vec<u8>, i32>>, Duration) {
    let started = Instant::now();
    let threads: Vec<_> = files
        .into_iter()
        .map(|f| {
            std::thread::spawn(move || std::fs::read(f).map_err(|e| e.raw_os_error().unwrap_or(0)))
        })
        .collect();
    let results = within(
        Duration::from_secs(30),
        "opens on a stuck store",
        move || {
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        },
    );
    (results, started.elapsed())
}

fn secrets(ts: &TestStore, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("s{i:02}")).collect();
    let dir = ts.path("import");
    std::fs::create_dir_all(&dir).unwrap();
    for name in &names {
        std::fs::write(dir.join(name), value_of(name)).unwrap();
    }
    ts.ok(&["import", dir.to_str().unwrap(), "app:/"]);
    names
}

#[test]
fn a_held_wal_lock_never_stalls_ls_or_stat_and_opens_fail_at_their_deadline() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    let names = secrets(&ts, 40);
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    assert_eq!(std::fs::read(mnt.join("s00")).unwrap(), value_of("s00"));

    let lock = WalLock::hold(&ts.store);
    // An unchanged secret read before the lock (s00) may be served from the last verified
    // state until the mount's next poll round meets the lock (100 ms); after it, every open
    // waits for the store.
    std::thread::sleep(Duration::from_millis(300));
    // Far more opens than the mount has request threads (8): none of them may hold one.
    let files: Vec<PathBuf> = names.iter().map(|n| mnt.join(n)).collect();
    let opens = std::thread::spawn(move || concurrent_opens(files));
    std::thread::sleep(Duration::from_millis(200));
    // Names never looked up yet, so each stat is a real LOOKUP answered by the daemon.
    let worst = worst_listing_and_stat(&mnt, &names[20..]);
    let (results, took) = opens.join().unwrap();
    for r in &results {
        assert_eq!(r, &Err(libc::EIO), "an open on a locked store");
    }
    // The default deadline is 2 s; queueing behind a full pool only fails faster.
    assert!(took < Duration::from_secs(8), "40 opens took {took:?}");
    eprintln!("locked store: worst ls/stat {worst:?}; 40 concurrent opens all EIO in {took:?}");
    assert!(worst < INSTANT, "ls/stat took {worst:?} on a locked store");
    drop(lock);
    wait_until(
        Duration::from_secs(10),
        "the store to be read again",
        || std::fs::read(mnt.join("s01")).is_ok_and(|v| v == value_of("s01")),
    );
}

#[test]
fn the_open_deadline_is_configurable() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"v");
    let mnt = ts.path("mnt");
    let out = ts.run(
        &[
            "mount",
            "--open-timeout-ms",
            "300",
            "app",
            mnt.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    let _m = MountGuard { path: mnt.clone() };
    let _lock = WalLock::hold(&ts.store);
    let started = Instant::now();
    let err = std::fs::read(mnt.join("s")).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(
        took < Duration::from_millis(1500),
        "a 300 ms deadline took {took:?}"
    );
    let bad = ts.run(
        &["mount", "--open-timeout-ms", "0", "app", "/nonexistent"],
        b"",
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

/// A store on a FUSE filesystem whose daemon is stopped: every access to it hangs.
struct FrozenBackend {
    plain: PathBuf,
    pid: i32,
}

impl FrozenBackend {
    fn start(root: &Path) -> FrozenBackend {
        let cipher = root.join("cipher");
        let plain = root.join("plain");
        std::fs::create_dir_all(&cipher).unwrap();
        std::fs::create_dir_all(&plain).unwrap();
        let init = Command::new("gocryptfs")
            .args(["-q", "-init", "-extpass", "echo backend-pass"])
            .arg(&cipher)
            .output()
            .unwrap();
        assert!(init.status.success(), "gocryptfs -init: {init:?}");
        let mount = Command::new("gocryptfs")
            .args(["-q", "-extpass", "echo backend-pass"])
            .arg(&cipher)
            .arg(&plain)
            .output()
            .unwrap();
        assert!(mount.status.success(), "gocryptfs: {mount:?}");
        let out = Command::new("pgrep")
            .args(["-f", &format!("gocryptfs.*{}", plain.display())])
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("the gocryptfs daemon")
            .trim()
            .parse()
            .unwrap();
        FrozenBackend { plain, pid }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill with a pid we found and a valid signal.
        unsafe { libc::kill(self.pid, sig) };
    }
}

impl Drop for FrozenBackend {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = Command::new("umount").arg("-l").arg(&self.plain).output();
    }
}

#[test]
fn a_store_on_a_frozen_filesystem_never_stalls_ls_or_stat() {
    if !can_mount() || !require_tool("gocryptfs") {
        return;
    }
    let mut ts = TestStore::new();
    ts.vault("app", &[]);
    let names = secrets(&ts, 30);
    let backend = FrozenBackend::start(&ts.path("backend"));
    // Move the (closed) store onto the FUSE backend.
    let moved = backend.plain.join("store.db");
    std::fs::copy(&ts.store, &moved).unwrap();
    ts.store = moved;
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    assert_eq!(std::fs::read(mnt.join("s00")).unwrap(), value_of("s00"));

    backend.signal(libc::SIGSTOP);
    // Clean pages of the store stay in the kernel's cache and would answer without the
    // backend: drop them, so reading a value not read yet must ask the stopped daemon.
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    let files: Vec<PathBuf> = names.iter().map(|n| mnt.join(n)).collect();
    let opens = std::thread::spawn(move || concurrent_opens(files));
    std::thread::sleep(Duration::from_millis(200));
    let worst = worst_listing_and_stat(&mnt, &names[15..]);
    let (results, took) = opens.join().unwrap();
    backend.signal(libc::SIGCONT);
    // What SQLite still has in memory may be served (nothing can change a frozen store);
    // everything else fails at the deadline.
    for (name, r) in names.iter().zip(&results) {
        match r {
            Ok(v) => assert!(v == &value_of(name)),
            Err(e) => assert_eq!(*e, libc::EIO, "an open on a frozen store"),
        }
    }
    assert!(
        results.iter().filter(|r| r.is_err()).count() > 20,
        "the store was not frozen"
    );
    eprintln!("frozen store: worst ls/stat {worst:?}; 30 concurrent opens all EIO in {took:?}");
    assert!(took < Duration::from_secs(8), "opens took {took:?}");
    assert!(worst < INSTANT, "ls/stat took {worst:?} on a frozen store");
    wait_until(
        Duration::from_secs(10),
        "the thawed store to be read",
        || std::fs::read(mnt.join("s01")).is_ok_and(|v| v == value_of("s01")),
    );
    drop(backend);
}

fn mount_logged(ts: &TestStore, source: &str, mnt: &Path, log: &Path) -> MountGuard {
    let out = ts.run(
        &[
            "mount",
            "--log-file",
            log.to_str().unwrap(),
            source,
            mnt.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    MountGuard {
        path: mnt.to_owned(),
    }
}

#[test]
fn a_replaced_store_is_noticed_once_and_the_last_good_state_keeps_serving() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"before");
    // A consistent copy of the store as it was: what `mv` will put in place later.
    let copy = ts.path("copy.db");
    let backup = Command::new("sqlite3")
        .arg(&ts.store)
        .arg(format!(".backup '{}'", copy.display()))
        .output()
        .unwrap();
    assert!(backup.status.success(), "{backup:?}");
    ts.write("app:/s", b"after");
    let mnt = ts.path("mnt");
    let log = ts.path("daemon.log");
    let _m = mount_logged(&ts, "app", &mnt, &log);
    assert_eq!(std::fs::read(mnt.join("s")).unwrap(), b"after");

    std::fs::rename(&copy, &ts.store).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the replacement to be logged",
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("deleted or replaced")),
    );
    // Many opens at once, more than the connections the mount has open: none may read the
    // new file (through a connection opened by path after the swap).
    let (results, _) = concurrent_opens(vec![mnt.join("s"); 64]);
    for r in &results {
        match r {
            Ok(v) => assert_eq!(v, b"after", "a read of the file put in place"),
            Err(e) => assert_eq!(*e, libc::EIO),
        }
    }
    assert!(
        results.iter().any(Result::is_ok),
        "the last good state is served"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("deleted or replaced").count(), 1, "{text}");
}

#[test]
fn a_removed_vault_is_served_as_an_empty_tree_and_logged_once() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("nix", &[]);
    ts.write("nix:/tok", b"t1");
    let mnt = ts.path("mnt");
    let log = ts.path("daemon.log");
    let _m = mount_logged(&ts, "nix", &mnt, &log);
    assert_eq!(std::fs::read(mnt.join("tok")).unwrap(), b"t1");
    ts.ok(&["vault", "remove", "nix", "--force", "--yes"]);
    let dir = mnt.clone();
    wait_until(Duration::from_secs(5), "the tree to empty", move || {
        std::fs::read_dir(&dir).unwrap().count() == 0
    });
    // A vault created again under the name has a new key: this mount does not serve it.
    ts.vault("nix", &[]);
    ts.write("nix:/tok", b"t2");
    std::thread::sleep(Duration::from_millis(400));
    assert!(std::fs::read(mnt.join("tok")).is_err());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("was removed").count(), 1, "{text}");
    assert!(!text.contains("cannot follow changes"), "{text}");
}

#[test]
fn a_shared_pool_of_opens_recovers_after_the_store_unlocks() {
    if !can_mount() {
        return;
    }
    let ts = Arc::new(TestStore::new());
    ts.vault("app", &[]);
    ts.write("app:/s", b"v1");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    {
        let _lock = WalLock::hold(&ts.store);
        let files = vec![mnt.join("s"); 100];
        let (results, _) = concurrent_opens(files);
        assert!(results.iter().all(|r| r == &Err(libc::EIO)));
    }
    ts.write("app:/s", b"v2");
    wait_until(
        Duration::from_secs(10),
        "the new value after the lock",
        || std::fs::read(mnt.join("s")).is_ok_and(|v| v == b"v2"),
    );
}

#[test]
fn a_truncated_store_fails_opens_with_eio_and_logs_once_per_entry_not_per_open() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    let names = secrets(&ts, 3);
    // Into the main file, out of the WAL, so that cutting the file loses the values.
    let checkpoint = Command::new("sqlite3")
        .arg(&ts.store)
        .arg("PRAGMA wal_checkpoint(TRUNCATE);")
        .output()
        .unwrap();
    assert!(checkpoint.status.success(), "{checkpoint:?}");
    let mnt = ts.path("mnt");
    let log = ts.path("daemon.log");
    let _m = mount_logged(&ts, "app", &mnt, &log);
    // Cut the file under the mount (same inode, so not a replacement): the values' pages
    // are gone.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&ts.store)
        .unwrap();
    file.set_len(4096).unwrap();
    drop(file);
    let files: Vec<PathBuf> = (0..300).map(|i| mnt.join(&names[i % 3])).collect();
    let (results, _) = concurrent_opens(files);
    assert!(
        results.iter().all(|r| r == &Err(libc::EIO)),
        "every open of a value that is gone fails with EIO: {:?}",
        results.iter().filter(|r| r.is_ok()).count()
    );
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .count();
    assert!(
        (1..=4).contains(&lines),
        "300 failed opens made {lines} log lines:\n{text}"
    );
}
