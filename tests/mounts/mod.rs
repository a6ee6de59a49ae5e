//! Helpers for tests that mount: guards that never leave a mount behind, real Unix users, and
//! waiting with a deadline (a hang fails the test instead of blocking CI).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{is_root, requirement, TestStore};

/// Mount tests need root (mount(2), allow_other, useradd) and /dev/fuse. Without them a test
/// fails, unless the user opted out with `VAULTFS_TEST_SKIP=root` (see [`requirement`]).
pub fn can_mount() -> bool {
    requirement(
        is_root() && Path::new("/dev/fuse").exists(),
        "root",
        "mount tests need root and /dev/fuse",
    )
}

/// Lazily unmounts its mountpoint on drop, so a failing test leaves nothing mounted.
pub struct MountGuard {
    pub path: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

impl TestStore {
    /// `vaultfs mount SOURCE MOUNTPOINT` (daemonized); the guard unmounts.
    pub fn mount(&self, source: &str, mountpoint: &Path) -> MountGuard {
        let out = self.run(&["mount", source, mountpoint.to_str().unwrap()], b"");
        assert!(
            out.status.success(),
            "mount {source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(mountpoint),
            "mount returned before the mount was ready"
        );
        MountGuard {
            path: mountpoint.to_owned(),
        }
    }

    /// `vaultfs mount --foreground`, as a child the test can signal.
    pub fn mount_foreground(&self, source: &str, mountpoint: &Path) -> (Child, MountGuard) {
        let child = self
            .cmd()
            .args([
                "mount",
                "--foreground",
                source,
                mountpoint.to_str().unwrap(),
            ])
            .spawn()
            .expect("spawn mount --foreground");
        wait_until(Duration::from_secs(10), "the foreground mount", || {
            is_mounted(mountpoint)
        });
        (
            child,
            MountGuard {
                path: mountpoint.to_owned(),
            },
        )
    }
}

/// Whether `path` is a mountpoint of a vaultfs filesystem (live or stale).
pub fn is_mounted(path: &Path) -> bool {
    vaultfs_fs::mountinfo::mounted_at(path)
        .expect("read /proc/self/mountinfo")
        .is_some_and(|e| e.is_vaultfs())
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a thread and fails the test if it does not finish within `limit`: the way to
/// assert "never hangs" without a timed performance assertion.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}: it hangs"))
}

static USERS: Mutex<()> = Mutex::new(());

/// Creates (once) a system user `name`, optionally in supplementary group `group`.
pub fn user(name: &str, group: Option<&str>) -> u32 {
    let _lock = USERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(g) = group {
        if !Command::new("getent")
            .args(["group", g])
            .output()
            .unwrap()
            .status
            .success()
        {
            let out = Command::new("groupadd").arg(g).output().unwrap();
            assert!(out.status.success(), "groupadd {g}: {out:?}");
        }
    }
    if !Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success()
    {
        let mut c = Command::new("useradd");
        c.args(["-M", "-s", "/bin/sh", name]);
        let out = c.output().unwrap();
        assert!(out.status.success(), "useradd {name}: {out:?}");
    }
    if let Some(g) = group {
        let out = Command::new("usermod")
            .args(["-aG", g, name])
            .output()
            .unwrap();
        assert!(out.status.success(), "usermod {name}: {out:?}");
    }
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Runs a shell command as `user` (with their supplementary groups).
pub fn as_user(user: &str, script: &str) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", script])
        .output()
        .expect("runuser")
}

/// Reads `path` as `user`: the content, or the error text.
pub fn cat_as(user: &str, path: &Path) -> Result<Vec<u8>, String> {
    let out = as_user(user, &format!("cat '{}'", path.display()));
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Holds a write lock on SQLite's WAL lock bytes of a store's -shm file (offsets 120..128: the
/// write, checkpoint, recovery and read-mark locks), as a wedged writer or a hostile process of
/// the store's owner could: even WAL readers wait on them. Released on drop.
pub struct WalLock(std::fs::File);

impl WalLock {
    /// Takes the lock on `store`'s -shm file.
    pub fn hold(store: &Path) -> WalLock {
        let shm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("{}-shm", store.display()))
            .unwrap();
        let lock = WalLock(shm);
        // The daemon's own readers hold shared read-mark locks for the length of one read
        // transaction (its change poll runs every 100 ms), so the write lock may have to wait
        // for one to end: retry instead of failing on the first EAGAIN.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while let Err(e) = lock.try_set(libc::F_WRLCK) {
            assert!(
                std::time::Instant::now() < deadline,
                "cannot lock the WAL lock bytes of {} within 10 s: {e}",
                store.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        lock
    }

    fn set(&self, kind: i32) {
        if let Err(e) = self.try_set(kind) {
            panic!("fcntl: {e}");
        }
    }

    fn try_set(&self, kind: i32) -> std::io::Result<()> {
        // SAFETY: a zeroed flock is valid; fcntl gets a valid fd and pointer.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = 120;
        fl.l_len = 8;
        let rc =
            unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&self.0), libc::F_SETLK, &fl) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl Drop for WalLock {
    fn drop(&mut self) {
        self.set(libc::F_UNLCK);
    }
}
