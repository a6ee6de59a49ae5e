//! The change signal: `<store>.signal`, a small file of our own next to the store that every
//! writer rewrites after each commit, before its command returns.
//!
//! Why: a mount daemon must make "the next open after a write returned sees the new value"
//! exact, and asking SQLite for the head on every open costs a read transaction and a thread
//! hand-off. Reading 8 bytes of this file costs one `pread`, and the daemon only needs to know
//! whether anything committed since its last verified look at the head; when nothing did, the
//! head it verified then is still current.
//!
//! Each writer stores a fresh random token (not a counter: concurrent writers need no lock to
//! make a value nobody saw before, and equal tokens mean "no write since"). The file carries
//! no secret and is not trusted: someone who can write it can freeze or forge it, which only
//! delays what a mount sees until its next periodic look at the authenticated head (the
//! refresher's poll). SQLite's own files are never opened here (closing a descriptor of one
//! would drop SQLite's POSIX locks); this file is not one of them.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The signal file of the store at `store`: `<store>.signal`.
pub fn path_of(store: &Path) -> PathBuf {
    let mut p = OsString::from(store.as_os_str());
    p.push(".signal");
    PathBuf::from(p)
}

/// Writes a fresh token into the signal file of `store`, creating it (mode 0600, owned like
/// the store) if it is missing. Called after a commit, so a reader that sees the new token and
/// then reads the head sees that commit.
pub fn bump(store: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let path = path_of(store);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    // A store written by root on behalf of its owner: keep the file the owner's, so the
    // owner's own writes can still bump it.
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(store_meta) = std::fs::metadata(store) {
            if meta.uid() != store_meta.uid() || meta.gid() != store_meta.gid() {
                let _ = std::os::unix::fs::fchown(
                    &file,
                    Some(store_meta.uid()),
                    Some(store_meta.gid()),
                );
            }
        }
    }
    let mut token = [0u8; 8];
    getrandom::fill(&mut token).map_err(|e| io::Error::other(e.to_string()))?;
    file.write_all_at(&token, 0)?;
    drop(file);
    wait_for_acks(store, ACK_WAIT);
    Ok(())
}

/// How long a writer waits for the kernel-checked mounts of its store to confirm a change.
pub const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The prefix of the acknowledgement files of `store`'s kernel-checked mounts:
/// `<store>.signal.ack.`; each mount adds its own suffix.
pub fn ack_prefix(store: &Path) -> OsString {
    let mut p = path_of(store).into_os_string();
    p.push(".ack.");
    p
}

/// Waits (up to `limit`) until every live kernel-checked mount of `store` has acknowledged
/// the signal's current token.
///
/// Why: a kernel-checked mount never sees an open (the kernel answers it from its caches),
/// so the daemon cannot check the signal at the open as other mounts do. Instead it pushes
/// invalidations the moment it sees a change, and then writes the token it has applied to
/// its acknowledgement file (`<store>.signal.ack.*`, held under an exclusive `flock` while
/// the daemon lives). A writer returns only once each acknowledgement matches, so "the next
/// open after the write returned sees it" holds there too. A file whose lock is free belongs
/// to a daemon that died and is removed; a mount that does not answer in time (its store
/// read is stuck) is named in one warning and the writer goes on: that mount then sees the
/// change within its poll interval once the store answers.
pub fn wait_for_acks(store: &Path, limit: std::time::Duration) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let prefix = ack_prefix(store);
    let Some(dir) = Path::new(&prefix).parent().map(Path::to_owned) else {
        return;
    };
    let Some(stem) = Path::new(&prefix)
        .file_name()
        .map(|n| n.as_bytes().to_vec())
    else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let Ok(listing) = std::fs::read_dir(&dir) else {
        return;
    };
    let owner = std::fs::metadata(store).map(|m| m.uid()).ok();
    let mut waiting = Vec::new();
    for entry in listing.flatten() {
        if !entry.file_name().as_bytes().starts_with(&stem) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        // Only root's (a daemon serving others) or the store owner's files count.
        match file.metadata() {
            Ok(m) if m.is_file() && (m.uid() == 0 || Some(m.uid()) == owner) => {}
            _ => continue,
        }
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
            // Nobody holds it: its daemon is gone.
            Ok(_) => {
                let _ = std::fs::remove_file(&path);
            }
            Err((file, _)) => waiting.push((path, file)),
        }
    }
    if waiting.is_empty() {
        return;
    }
    let Ok(signal) = std::fs::File::open(path_of(store)) else {
        return;
    };
    let deadline = std::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_micros(50);
    loop {
        // The current token, not only ours: a later writer's token covers our commit too.
        let Ok(Some(current)) = read(&signal) else {
            return;
        };
        waiting.retain(|(_, f)| !matches!(read(f), Ok(Some(t)) if t == current.max(1)));
        if waiting.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            for (path, _) in &waiting {
                tracing::warn!(
                    "{}: a kernel-checked mount did not confirm the change within {} ms; it \
                     sees it within its poll interval once its store answers",
                    path.display(),
                    limit.as_millis()
                );
            }
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(2));
    }
}

/// Reads the token of the signal file `file` (opened by the caller), `None` if it is shorter
/// than a token (never written).
pub fn read(file: &std::fs::File) -> io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let mut token = [0u8; 8];
    let n = file.read_at(&mut token, 0)?;
    Ok((n == token.len()).then(|| u64::from_le_bytes(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn every_bump_is_a_new_token_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.db");
        std::fs::write(&store, b"").unwrap();
        let path = path_of(&store);
        assert_eq!(path, dir.path().join("store.db.signal"));
        bump(&store).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let a = read(&file).unwrap().unwrap();
        bump(&store).unwrap();
        let b = read(&file).unwrap().unwrap();
        assert_ne!(a, b, "a bump must change the token");
        assert_eq!(file.metadata().unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_symlink_in_its_place_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.db");
        std::fs::write(&store, b"").unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, path_of(&store)).unwrap();
        assert!(bump(&store).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn writers_wait_for_live_acknowledgements_and_remove_dead_ones() {
        use std::os::unix::fs::FileExt;
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.db");
        std::fs::write(&store, b"").unwrap();
        let ack = |n: &str| {
            let mut p = ack_prefix(&store);
            p.push(n);
            PathBuf::from(p)
        };
        // A dead daemon's file (nobody holds its lock): removed, not waited for.
        std::fs::write(ack("1.0"), [0u8; 8]).unwrap();
        let t = Instant::now();
        bump(&store).unwrap();
        assert!(t.elapsed() < Duration::from_millis(500));
        assert!(!ack("1.0").exists());
        // A live one that never answers: waited for until the limit.
        let live = std::fs::File::create(ack("2.0")).unwrap();
        let live = nix::fcntl::Flock::lock(live, nix::fcntl::FlockArg::LockExclusive).unwrap();
        let t = Instant::now();
        std::fs::File::create(path_of(&store)).unwrap();
        let signal = std::fs::OpenOptions::new()
            .write(true)
            .open(path_of(&store))
            .unwrap();
        signal.write_all_at(&7u64.to_le_bytes(), 0).unwrap();
        wait_for_acks(&store, Duration::from_millis(200));
        assert!(t.elapsed() >= Duration::from_millis(200));
        // One that answers with the current token: the wait ends at once.
        live.write_all_at(&7u64.to_le_bytes(), 0).unwrap();
        let t = Instant::now();
        wait_for_acks(&store, Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn an_empty_file_has_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(read(&std::fs::File::open(&p).unwrap()).unwrap(), None);
    }
}
