//! Finding, checking and creating a mountpoint without being steered by another local user.
//!
//! Root often mounts into directories others can write (a service's home, `/run/user/N`). A
//! path is a promise only as long as nobody renames or swaps its components, so the walk goes
//! one component at a time through directory fds (`openat` with `O_NOFOLLOW`), and the result
//! is an fd on the exact object found, which the mount then targets (`/proc/self/fd/N`). A
//! symlink is followed only when nobody but root and the caller could have put it there or can
//! swap it; missing directories and the single-secret file are created through the same fds
//! (`mkdirat`, `openat(O_CREAT|O_EXCL)`, `fchmod`), never by path.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{geteuid, unlinkat, UnlinkatFlags};

use crate::nss;

/// The kernel's own limit on symlinks followed in one lookup.
const MAX_LINKS: usize = 40;

/// What to create when the mountpoint is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory, mode 0755 (a vault or a directory of it).
    Dir,
    /// A regular file, mode 0400 (one secret).
    File,
}

/// An object `walk` created, remembered so that only that object, still there and still
/// empty, is removed again at unmount. The fd keeps its inode allocated: were it removed and
/// something else created under the name, that cannot get the same inode number.
#[derive(Debug)]
pub(crate) struct Created {
    fd: OwnedFd,
    kind: Kind,
}

/// The object a mountpoint path resolved to.
#[derive(Debug)]
pub(crate) struct Found {
    /// The path as walked: absolute, symlinks resolved, no trailing slash.
    pub path: PathBuf,
    /// The directory holding it (the parent in the walk, not by path).
    pub parent: OwnedFd,
    /// Its name in `parent`.
    pub name: OsString,
    /// The object itself (the topmost mount's root if something is mounted there).
    pub fd: OwnedFd,
    /// Set when `walk` created it.
    pub created: Option<Created>,
}

impl Found {
    /// Whether the object is the root of a mount (it lives on another mount than its
    /// directory).
    pub fn is_mount_root(&self) -> std::io::Result<Option<u32>> {
        let here = crate::mountinfo::mount_id(&self.fd)?;
        let parent = crate::mountinfo::mount_id(&self.parent)?;
        Ok((here != parent).then_some(here))
    }
}

fn flags_path() -> OFlag {
    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

fn trusted(uid: u32, euid: u32) -> bool {
    uid == 0 || uid == euid
}

fn user(uid: u32) -> String {
    match nss::user_name(uid) {
        Some(name) => format!("user {name}"),
        None => format!("uid {uid}"),
    }
}

/// Who other than root and the caller can rename, remove or replace the entry `child` in the
/// directory `dir`; `None` when nobody can.
fn replaceable_by(dir: &FileStat, child: &FileStat, euid: u32) -> Option<String> {
    if !trusted(dir.st_uid, euid) {
        return Some(format!("{} (who owns its directory)", user(dir.st_uid)));
    }
    if dir.st_mode & 0o022 == 0 {
        return None;
    }
    // In a sticky directory only an entry's owner (and the directory's) may rename it.
    let sticky = dir.st_mode & 0o1000 != 0;
    if sticky {
        return (!trusted(child.st_uid, euid))
            .then(|| format!("{} (who owns it)", user(child.st_uid)));
    }
    Some(if dir.st_mode & 0o002 != 0 {
        "any user (its directory is world-writable)".to_string()
    } else {
        match nss::group_name(dir.st_gid) {
            Some(g) => format!("group {g} (its directory is group-writable)"),
            None => format!("gid {} (its directory is group-writable)", dir.st_gid),
        }
    })
}

/// The result of a walk: the object, or a dead FUSE mount at the last component (its
/// filesystem answers `ENOTCONN`), which the caller must clear or refuse before walking again.
#[derive(Debug)]
pub(crate) enum Walked {
    /// The mountpoint, checked.
    Found(Found),
    /// A dead FUSE mount sits at the mountpoint.
    Dead(Found),
}

/// Creates the missing component `name` in `dir`: a directory (mode 0755 whatever the umask,
/// so the users an ACL names can reach the mount), or for the last component of a single-secret
/// mount an empty 0400 file. Returns an fd on it and whether this call created it.
fn create(dir: &OwnedFd, name: &OsStr, kind: Kind, euid: u32) -> Result<(OwnedFd, bool), String> {
    let named = |e: Errno| format!("cannot create {}: {}", name.to_string_lossy(), e.desc());
    match kind {
        Kind::Dir => {
            let made = match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(e) => return Err(named(e)),
            };
            // O_NOFOLLOW|O_DIRECTORY: a symlink swapped in after mkdirat is refused here.
            let fd = openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(named)?;
            let st = fstat(&fd).map_err(named)?;
            let ours = made && st.st_uid == euid;
            if ours {
                fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(named)?;
            }
            Ok((fd, ours))
        }
        Kind::File => {
            // O_CREAT|O_EXCL never follows a symlink and never opens what someone else made.
            let fd = openat(
                dir,
                name,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o400),
            )
            .map_err(named)?;
            fchmod(&fd, Mode::from_bits_truncate(0o400)).map_err(named)?;
            Ok((fd, true))
        }
    }
}

/// Walks the absolute `path` component by component. With `create`, missing components are
/// created (directories, and the last one as `create` says). `strict` also refuses a
/// non-symlink component someone else could replace: needed when the path itself, not an fd,
/// is handed on (to fusermount3).
pub(crate) fn walk(path: &Path, create_as: Option<Kind>, strict: bool) -> Result<Walked, String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    let euid = geteuid().as_raw();
    let mut queue: VecDeque<OsString> = VecDeque::new();
    let push_path = |queue: &mut VecDeque<OsString>, p: &Path, front: bool| {
        let comps: Vec<OsString> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect();
        if front {
            for c in comps.into_iter().rev() {
                queue.push_front(c);
            }
        } else {
            queue.extend(comps);
        }
    };
    push_path(&mut queue, path, false);
    // The mountpoint itself is "it" in messages; another component is named.
    let whole: PathBuf = path.components().collect();
    let shown = |p: &Path| {
        if p == whole {
            "it".to_string()
        } else {
            p.display().to_string()
        }
    };
    let open_root = || {
        openat(
            nix::fcntl::AT_FDCWD,
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open /: {}", e.desc()))
    };
    let mut dir = open_root()?;
    let mut dir_st = fstat(&dir).map_err(|e| format!("/: {}", e.desc()))?;
    let mut walked = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        let is_last = queue.is_empty();
        if name == ".." {
            if is_last {
                return Err(format!("{} must end in a name, not ..", path.display()));
            }
            dir = openat(&dir, "..", flags_path() | OFlag::O_DIRECTORY, Mode::empty())
                .map_err(|e| format!("{}/..: {}", walked.display(), e.desc()))?;
            dir_st = fstat(&dir).map_err(|e| format!("{}/..: {}", walked.display(), e.desc()))?;
            walked.pop();
            continue;
        }
        let here = walked.join(&name);
        let fail = |e: Errno| format!("{}: {}", here.display(), e.desc());
        let (fd, made) = match openat(&dir, name.as_os_str(), flags_path(), Mode::empty()) {
            Ok(fd) => (fd, false),
            Err(Errno::ENOENT) if create_as.is_some() => {
                let kind = if is_last {
                    create_as.unwrap_or(Kind::Dir)
                } else {
                    Kind::Dir
                };
                create(&dir, &name, kind, euid).map_err(|e| format!("{}: {e}", walked.display()))?
            }
            Err(e) => return Err(fail(e)),
        };
        if is_last {
            if let Err(Errno::ENOTCONN) = nix::sys::statfs::fstatfs(&fd) {
                return Ok(Walked::Dead(Found {
                    path: here,
                    parent: dir,
                    name,
                    fd,
                    created: None,
                }));
            }
        }
        let st = fstat(&fd).map_err(fail)?;
        let replaceable = replaceable_by(&dir_st, &st, euid);
        if is_kind(&st, SFlag::S_IFLNK) {
            if let Some(who) = replaceable {
                return Err(format!(
                    "{} is a symlink that {who} can replace; refusing to follow it",
                    shown(&here)
                ));
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(format!("{}: too many levels of symlinks", path.display()));
            }
            let target = readlinkat(&dir, name.as_os_str()).map_err(fail)?;
            let target = PathBuf::from(target);
            if target.is_absolute() {
                dir = open_root()?;
                dir_st = fstat(&dir).map_err(|e| format!("/: {}", e.desc()))?;
                walked = PathBuf::from("/");
            }
            push_path(&mut queue, &target, true);
            continue;
        }
        if strict {
            if let Some(who) = replaceable {
                return Err(format!(
                    "{} can be replaced by {who}; mount where only you and root can change the path",
                    shown(&here)
                ));
            }
        }
        if is_last {
            // Keep an O_PATH fd: it pins nothing but the object itself.
            let (fd, created) = if made {
                let again =
                    openat(&dir, name.as_os_str(), flags_path(), Mode::empty()).map_err(fail)?;
                let st2 = fstat(&again).map_err(fail)?;
                if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(format!(
                        "{} was replaced while it was created",
                        here.display()
                    ));
                }
                let created = Created {
                    fd: again
                        .try_clone()
                        .map_err(|e| format!("{}: {e}", here.display()))?,
                    kind: create_as.unwrap_or(Kind::Dir),
                };
                (again, Some(created))
            } else {
                (fd, None)
            };
            return Ok(Walked::Found(Found {
                path: here,
                parent: dir,
                name,
                fd,
                created,
            }));
        }
        if !is_kind(&st, SFlag::S_IFDIR) {
            return Err(format!("{} is not a directory", here.display()));
        }
        dir = fd;
        dir_st = st;
        walked = here;
    }
    Err(format!("{}: / cannot be a mountpoint", path.display()))
}

/// The kind of the object `fd` refers to, for the mount's `rootmode`, or why it is unfit.
pub(crate) fn check_kind(found: &Found, kind: Kind, asked: &Path) -> Result<u32, String> {
    let st = fstat(&found.fd).map_err(|e| format!("{}: {}", found.path.display(), e.desc()))?;
    let asked: PathBuf = asked.components().collect();
    let it = if found.path == asked {
        "it".to_string()
    } else {
        format!("{} (where it leads)", found.path.display())
    };
    match kind {
        Kind::Dir if is_kind(&st, SFlag::S_IFDIR) => {}
        Kind::File if is_kind(&st, SFlag::S_IFREG) => {}
        Kind::Dir => {
            return Err(format!(
                "{it} is not a directory; a vault or directory mounts on a directory"
            ))
        }
        Kind::File => {
            return Err(format!(
                "{it} is not a regular file; a single secret mounts on a file"
            ))
        }
    }
    Ok(st.st_mode & SFlag::S_IFMT.bits())
}

/// Removes what `walk` created at `name` in `parent`, if it is still the same object (same
/// device and inode, so nothing mounted on it) and still empty. Quietly leaves anything else.
pub(crate) fn remove_created(parent: impl AsFd, name: &OsStr, created: &Created) {
    let (Ok(st), Ok(ours)) = (
        fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        fstat(&created.fd),
    ) else {
        return;
    };
    if (st.st_dev, st.st_ino) != (ours.st_dev, ours.st_ino) {
        return;
    }
    let result = match created.kind {
        Kind::Dir => unlinkat(&parent, name, UnlinkatFlags::RemoveDir),
        Kind::File if st.st_size == 0 => unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir),
        Kind::File => return,
    };
    if let Err(e) = result {
        tracing::debug!(
            "leaving the mountpoint {} vaultfs created: {}",
            name.to_string_lossy(),
            e.desc()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn found(w: Walked) -> Found {
        match w {
            Walked::Found(f) => f,
            Walked::Dead(f) => panic!("dead mount at {}", f.path.display()),
        }
    }

    #[test]
    fn creates_dirs_0755_and_files_0400_through_fds() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/c");
        let f = found(walk(&dir, Some(Kind::Dir), false).unwrap());
        assert!(f.created.is_some());
        for p in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(tmp.path().join(p))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o755, "{p}");
        }
        let file = tmp.path().join("x/secret");
        let f2 = found(walk(&file, Some(Kind::File), false).unwrap());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o400);
        remove_created(&f2.parent, &f2.name, f2.created.as_ref().unwrap());
        assert!(!file.exists());
        remove_created(&f.parent, &f.name, f.created.as_ref().unwrap());
        assert!(!dir.exists());
        assert!(
            tmp.path().join("a/b").exists(),
            "only the mountpoint itself is removed"
        );
    }

    #[test]
    fn own_symlinks_are_followed_and_trailing_slashes_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        let f = found(walk(&tmp.path().join("link/"), None, false).unwrap());
        assert_eq!(f.path, tmp.path().canonicalize().unwrap().join("real"));
        let asked = tmp.path().join("link");
        assert_eq!(
            check_kind(&f, Kind::Dir, &asked).unwrap(),
            SFlag::S_IFDIR.bits()
        );
        let err = check_kind(&f, Kind::File, &asked).unwrap_err();
        assert!(
            err.contains("real (where it leads) is not a regular file"),
            "{err}"
        );
    }

    #[test]
    fn a_world_writable_directory_makes_symlinks_untrusted() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        symlink("/", open.join("link")).unwrap();
        let err = walk(&open.join("link"), None, false).unwrap_err();
        assert!(err.contains("is a symlink that any user"), "{err}");
        std::fs::create_dir(open.join("d")).unwrap();
        assert!(walk(&open.join("d"), None, false).is_ok());
        let err = walk(&open.join("d"), None, true).unwrap_err();
        assert!(err.contains("can be replaced by any user"), "{err}");
    }
}
