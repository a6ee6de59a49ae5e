//! The open fast path's change check: has anything committed since the refresher last read
//! the store's authenticated head?
//!
//! Every writer rewrites the store's signal file (`vaultfs_store::signal`) with a fresh token
//! after its commit and before its command returns. The refresher reads the token at the
//! start of each round and, when the round succeeds, publishes it as "clean". An open whose
//! token read equals the clean one knows that no write returned between that round's look at
//! the head and now, so the tree is current and it need not ask for a round (a SQLite read
//! transaction and two thread hand-offs). Any other token, or none, and the open waits for a
//! round as before.
//!
//! The file is read with `pread` on a descriptor held from the first round that finds it,
//! not mapped: a mapped file that someone truncates kills the reader with SIGBUS. It is not
//! trusted: whoever can write it can freeze it, which delays what opens see until the next
//! periodic round (every `POLL_INTERVAL`, on the authenticated head) and no further; a file
//! owned by anyone but the store's owner is not used at all. SQLite's own files are never
//! opened here.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

/// Whether `file` lives on a filesystem held in memory (tmpfs).
fn in_memory(file: &File) -> bool {
    nix::sys::statfs::fstatfs(file)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// No clean token: opens wait for a round.
const NONE: u64 = 0;

/// The daemon's side of the signal file.
#[derive(Debug)]
pub struct ChangeSignal {
    store: PathBuf,
    pub(crate) path: PathBuf,
    /// The open signal file and its (device, inode), once a round found a usable one.
    file: RwLock<Option<(File, (u64, u64))>>,
    /// The token read at the start of the last round that succeeded, or [`NONE`].
    clean: AtomicU64,
    /// Whether an unusable signal file was already reported.
    warned: AtomicU64,
}

impl ChangeSignal {
    /// The signal of the store at `store`; nothing is opened until [`ChangeSignal::follow`].
    pub fn new(store: &Path) -> ChangeSignal {
        ChangeSignal {
            store: store.to_owned(),
            path: vaultfs_store::signal::path_of(store),
            file: RwLock::new(None),
            clean: AtomicU64::new(NONE),
            warned: AtomicU64::new(0),
        }
    }

    /// The current token; `NONE` when there is no usable file or it holds no token. Tokens
    /// are random, so mapping a token of 0 to 1 loses nothing but a 2^-64 chance.
    fn token(&self) -> u64 {
        let file = self.file.read();
        let Some((f, _)) = file.as_ref() else {
            return NONE;
        };
        match vaultfs_store::signal::read(f) {
            Ok(Some(t)) => t.max(1),
            _ => NONE,
        }
    }

    /// For the refresher, at the start of a round and before it reads the store: (re)opens
    /// the signal file if it appeared or was replaced, and returns the token to publish if
    /// the round succeeds.
    pub fn round_start(&self) -> u64 {
        // Until this round succeeds, opens wait for a round: a round stuck on a locked or
        // frozen store must not leave the fast path open behind it.
        self.clean.store(NONE, Ordering::Release);
        self.follow();
        self.token()
    }

    /// For the refresher: the round that started with `token` succeeded (the tree is
    /// current as of the store's state when it started), or failed (`None`).
    pub fn round_end(&self, token: Option<u64>) {
        self.clean.store(token.unwrap_or(NONE), Ordering::Release);
    }

    /// Whether no writer signalled a change since the start of the last successful round:
    /// then the tree is current and an open need not wait for a round.
    ///
    /// Called on request threads: the token is read only from the page cache
    /// ([`crate::nowait`]); a read that would wait for the store's disk counts as a change,
    /// and the open takes the slow path on an opener thread instead.
    pub fn unchanged(&self) -> bool {
        let clean = self.clean.load(Ordering::Acquire);
        if clean == NONE {
            return false;
        }
        let file = self.file.read();
        let Some((f, _)) = file.as_ref() else {
            return false;
        };
        let mut token = [0u8; 8];
        let read = match crate::nowait::read_cached(f, &mut token, 0) {
            // tmpfs cannot say (EOPNOTSUPP), but it is memory: a plain read never waits for a
            // device there. Any other filesystem that cannot say (FUSE) takes the slow path.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && in_memory(f) => {
                std::os::unix::fs::FileExt::read_at(f, &mut token, 0)
            }
            other => other,
        };
        matches!(read, Ok(8)) && u64::from_le_bytes(token).max(1) == clean
    }

    /// Opens the signal file when it first appears, and again when it was replaced (a
    /// writer re-creates it after a restore or a deletion); drops it when it is unusable.
    fn follow(&self) {
        let Ok(meta) = std::fs::symlink_metadata(&self.path) else {
            *self.file.write() = None;
            return;
        };
        let id = (meta.dev(), meta.ino());
        if self
            .file
            .read()
            .as_ref()
            .is_some_and(|(_, held)| *held == id)
        {
            return;
        }
        let store_uid = std::fs::metadata(&self.store).map(|m| m.uid()).ok();
        if !meta.is_file() || store_uid != Some(meta.uid()) || on_network_fs(&self.path) {
            *self.file.write() = None;
            if self.warned.swap(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "{}: not a regular file owned by the store's owner on a local filesystem; \
                     ignored (changes are seen by polling the store instead)",
                    self.path.display()
                );
            }
            return;
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&self.path);
        *self.file.write() = match opened {
            Ok(f) => f
                .metadata()
                .ok()
                .map(|m| (m.dev(), m.ino()))
                .map(|opened_id| (f, opened_id)),
            Err(_) => None,
        };
    }
}

/// A kernel-checked mount's acknowledgement file (see `vaultfs_store::signal::wait_for_acks`):
/// after the invalidations of a round are sent, the token that round applied is written here,
/// and writers wait for it before they return. The file is held under an exclusive `flock`
/// for the daemon's life (so a writer can tell a dead daemon's file) and removed on drop.
#[derive(Debug)]
pub struct Acker {
    file: nix::fcntl::Flock<File>,
    path: PathBuf,
}

impl Acker {
    /// Creates the acknowledgement file of one mount of `store`. It is created and locked
    /// under another name first, then renamed into place, so a writer never finds it
    /// unlocked and takes it for a dead daemon's.
    pub fn create(store: &Path) -> std::io::Result<Acker> {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let suffix = format!("{}.{n}", std::process::id());
        let mut path = vaultfs_store::signal::ack_prefix(store);
        path.push(&suffix);
        let path = PathBuf::from(path);
        let mut temp = vaultfs_store::signal::path_of(store).into_os_string();
        temp.push(format!(".new.{suffix}"));
        let temp = PathBuf::from(temp);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            // It carries only a random token of the signal, which carries no secret; writers
            // other than the daemon's user must be able to read it.
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)?;
        // The daemon's umask (077) would keep writers of other users out.
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| std::io::Error::from(e))?;
        if let Err(e) = std::fs::rename(&temp, &path) {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        Ok(Acker { file, path })
    }

    /// Says that every change signalled up to `token` is applied and its invalidations sent.
    pub fn ack(&self, token: u64) {
        use std::os::unix::fs::FileExt;
        if let Err(e) = self.file.write_all_at(&token.to_le_bytes(), 0) {
            tracing::debug!("{}: {e}", self.path.display());
        }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Wakes the refresher as soon as a writer rewrites the signal (inotify on the store's
/// directory), so `ls`, `stat` and the kernel's caches follow a write at once instead of at the
/// next poll. Only a hint: inotify is asynchronous, so opens never rely on it (they read the
/// signal themselves). Ends when the mount does.
pub fn watch(shared: std::sync::Weak<crate::driver::Shared>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let Some((dir, name)) = shared.upgrade().and_then(|s| {
        let path = &s.signal.path;
        Some((path.parent()?.to_owned(), path.file_name()?.to_owned()))
    }) else {
        return;
    };
    let Ok(inotify) = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK) else {
        return;
    };
    let mask = AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO;
    if inotify.add_watch(&dir, mask).is_err() {
        return;
    }
    loop {
        // A timeout lets the thread notice that the mount is gone.
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(1000u16));
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !matches!(ready, Ok(n) if n > 0) {
            continue;
        }
        let Ok(events) = inotify.read_events() else {
            continue;
        };
        if events
            .iter()
            .any(|e| e.name.as_deref() == Some(name.as_os_str()))
        {
            shared.request_round();
        }
    }
}

/// Whether `path` is on a FUSE or network filesystem, where a read may hang: the fast path
/// reads the signal on FUSE request threads, which must never block.
fn on_network_fs(path: &Path) -> bool {
    const REMOTE: [i64; 6] = [
        0x6573_5546, // FUSE
        0x6969,      // NFS
        0xFF53_4D42, // CIFS
        0xFE53_4D42, // SMB2
        0x0102_1997, // 9p
        0x00C3_6400, // Ceph
    ];
    match nix::sys::statfs::statfs(path) {
        // The field's type differs between C libraries and architectures.
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => REMOTE.contains(&(st.filesystem_type().0 as i64)),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_only_after_a_clean_round_and_until_the_next_bump() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.db");
        std::fs::write(&store, b"").unwrap();
        let s = ChangeSignal::new(&store);
        // No file yet: never unchanged.
        let t = s.round_start();
        s.round_end(Some(t));
        assert!(!s.unchanged());
        vaultfs_store::signal::bump(&store).unwrap();
        assert!(!s.unchanged(), "the file is only followed by a round");
        let t = s.round_start();
        assert!(!s.unchanged(), "not before the round succeeded");
        s.round_end(Some(t));
        assert!(s.unchanged());
        vaultfs_store::signal::bump(&store).unwrap();
        assert!(!s.unchanged(), "a bump after the round's start");
        let t = s.round_start();
        s.round_end(None);
        assert!(!s.unchanged(), "a failed round clears it");
        s.round_end(Some(t));
        assert!(s.unchanged());
        // Replaced: until the next round the old file is read (a delay of one poll interval
        // at most); that round follows the new one.
        std::fs::remove_file(vaultfs_store::signal::path_of(&store)).unwrap();
        vaultfs_store::signal::bump(&store).unwrap();
        let t = s.round_start();
        s.round_end(Some(t));
        assert!(s.unchanged());
        vaultfs_store::signal::bump(&store).unwrap();
        assert!(!s.unchanged(), "bumps of the new file are seen");
    }
}
