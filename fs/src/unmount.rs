//! Unmounting, one way for the CLI (`vaultfs umount`) and the daemon (SIGTERM, shutdown).
//!
//! A mount is addressed by its directory fd and name, and checked by mount id right before the
//! call, so neither a path someone renamed nor a symlink swapped in can point the unmount at
//! another filesystem. Files still open make a plain unmount fail with `EBUSY`; the mount is
//! then detached (`MNT_DETACH`): the path is free at once and the daemon's session ends when
//! the last file closes.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::mount::{umount2, MntFlags};
use nix::sys::stat::Mode;

use crate::mountinfo;
use crate::mountpoint::{self, Found, Walked};

/// How an unmount went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Unmounted; the daemon's session has ended. (Without root, fusermount3 detaches
    /// lazily, and this is what it reports.)
    Clean,
    /// Files were open: detached lazily; the daemon's session ends when the last one closes.
    Detached,
}

/// Why an unmount failed.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    /// Nothing vaultfs is mounted there.
    #[error("{0}: not a vaultfs mount")]
    NotVaultfs(PathBuf),
    /// The path could not be walked safely.
    #[error("{0}")]
    Path(String),
    /// The kernel or fusermount3 refused.
    #[error("cannot unmount {path}: {error}")]
    Io {
        /// The mountpoint.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
}

/// Unmounts the vaultfs mount (live or dead) at `path`, with or without a trailing slash.
/// Anything else mounted there is left alone.
pub fn unmount(path: &Path) -> Result<Unmounted, UnmountError> {
    let root = nix::unistd::geteuid().is_root();
    let found = match mountpoint::walk(path, None, !root).map_err(UnmountError::Path)? {
        Walked::Found(f) | Walked::Dead(f) => f,
    };
    let io_err = |error| UnmountError::Io {
        path: found.path.clone(),
        error,
    };
    let id = found
        .is_mount_root()
        .map_err(io_err)?
        .ok_or_else(|| UnmountError::NotVaultfs(found.path.clone()))?;
    let ours = mountinfo::by_id(id)
        .map_err(io_err)?
        .is_some_and(|e| e.is_vaultfs());
    if !ours {
        return Err(UnmountError::NotVaultfs(found.path.clone()));
    }
    // The walk's descriptor of the mount's root is itself a use of the mount: holding it
    // across umount2 would make every unmount "busy" and lazy.
    let Found {
        parent,
        name,
        path,
        fd,
        ..
    } = found;
    drop(fd);
    unmount_at(&parent, &name, id, &path)
}

/// Unmounts the mount `id`, which must be the topmost mount on `name` in the directory
/// `parent`; `shown` names it in errors (and, without root, is what fusermount3 gets).
/// How often, and how far apart, a busy unmount is tried again before it detaches lazily.
const BUSY_RETRIES: usize = 10;
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

pub(crate) fn unmount_at(
    parent: &OwnedFd,
    name: &OsStr,
    id: u32,
    shown: &Path,
) -> Result<Unmounted, UnmountError> {
    let io_err = |error: io::Error| UnmountError::Io {
        path: shown.to_owned(),
        error,
    };
    let gone = || mountinfo::by_id(id).map(|e| e.is_none()).unwrap_or(false);
    match openat(
        parent,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        // Closed at once: an open fd inside the mount would itself make it busy.
        Ok(fd) => {
            let now = mountinfo::mount_id(&fd).map_err(io_err)?;
            if now != id {
                if gone() {
                    return Ok(Unmounted::Clean);
                }
                return Err(io_err(io::Error::other(
                    "another filesystem is mounted on top of it",
                )));
            }
        }
        Err(_) if gone() => return Ok(Unmounted::Clean),
        Err(e) => return Err(io_err(e.into())),
    }
    if !nix::unistd::geteuid().is_root() {
        return fusermount_unmount(shown).map_err(io_err);
    }
    // The mountpoint's own dentry cannot be renamed or replaced while mounted, so this path
    // names the mount just checked.
    let mut target = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd()));
    target.push(name);
    // A file closed a moment ago can keep the mount busy for a few milliseconds (a reader
    // that just exited, a listing that just ended): try a little before detaching lazily.
    let mut attempt = umount2(&target, MntFlags::UMOUNT_NOFOLLOW);
    for _ in 0..BUSY_RETRIES {
        if attempt != Err(Errno::EBUSY) {
            break;
        }
        std::thread::sleep(BUSY_PAUSE);
        attempt = umount2(&target, MntFlags::UMOUNT_NOFOLLOW);
    }
    match attempt {
        Ok(()) => Ok(Unmounted::Clean),
        Err(Errno::EBUSY) => {
            tracing::debug!("unmount {}: busy; detaching lazily", shown.display());
            umount2(&target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                .map_err(|e| io_err(e.into()))?;
            Ok(Unmounted::Detached)
        }
        Err(Errno::EINVAL) if gone() => Ok(Unmounted::Clean),
        Err(e) => Err(io_err(e.into())),
    }
}

/// Without root, only the setuid fusermount3 may unmount (it checks the mount is the
/// caller's).
fn fusermount_unmount(path: &Path) -> io::Result<Unmounted> {
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg("--")
        .arg(path)
        .output()?;
    if out.status.success() {
        Ok(Unmounted::Clean)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(io::Error::other(format!(
            "fusermount3: {}",
            err.lines().next().unwrap_or("failed")
        )))
    }
}
