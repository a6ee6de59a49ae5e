//! Mounting: preparing the mountpoint (clearing a stale vaultfs mount, creating a file or
//! directory), starting the FUSE session on several threads, and unmounting without hanging.
//!
//! As root the mount is made here, not by fuser: fuser 0.18 canonicalizes the path and mounts
//! on that string, which follows whatever symlink another user swaps in. Instead the
//! mountpoint is walked through fds (see `mountpoint`), `/dev/fuse` is opened and mount(2)
//! targets `/proc/self/fd/N`, the exact object checked; fuser gets the device fd
//! (`Session::from_fd`). Without root, fusermount3 must mount, by path, so the path is refused
//! when anyone else could change one of its components.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use nix::mount::MsFlags;
use vaultfs_store::{EntryKind, StoreError, VaultPath, VaultReader};

use crate::driver::{Options, Shared, VaultFs};
use crate::invalidate::{self, Invalidator};
use crate::mountinfo::{self, SOURCE_PREFIX};
use crate::mountpoint::{self, Created, Found, Kind, Walked};
use crate::refresher;
use crate::unmount::{unmount_at, UnmountError, Unmounted};

/// Request threads: enough that one slow request never stalls the others on a small machine.
const REQUEST_THREADS: usize = 8;

/// The filesystem type of vaultfs mounts (fusermount3 gives the same).
const FS_TYPE: &str = "fuse.vaultfs";

/// Dead mounts cleared at one mountpoint before giving up (each is one stacked layer).
const MAX_STALE: usize = 8;

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing exists at the mounted path.
    #[error("no such secret or directory in the vault")]
    SourceMissing,
    /// The mountpoint is unfit or unsafe.
    #[error("mountpoint {path}: {reason}")]
    Mountpoint {
        /// The mountpoint.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The kernel or fusermount refused the mount.
    #[error("the kernel refused the mount at {path}: {error}{}", hint(error))]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// A live vaultfs mount is already there.
    #[error("{0} is already a vaultfs mount; unmount it first (vaultfs umount)")]
    AlreadyMounted(PathBuf),
    /// A kernel-checked mount was asked for a vault that needs per-open decisions.
    #[error(
        "kernel checks refused: {vault}:{path} has {why}, which needs the daemon at every \
         open; a kernel-checked mount cannot serve templates, grants (with or without unit \
         or exe conditions) or read limits (mount without --kernel-checks, or remove it)"
    )]
    KernelChecksRefused {
        /// The vault.
        vault: String,
        /// The first entry that needs the daemon.
        path: String,
        /// What it has.
        why: &'static str,
    },
}

impl MountError {
    /// Whether the error is in what was asked for (exit code 2) rather than in what
    /// happened while mounting.
    pub fn is_usage(&self) -> bool {
        matches!(self, MountError::KernelChecksRefused { .. })
    }
}

/// What to try when a mount is refused for lack of privilege.
fn hint(error: &io::Error) -> &'static str {
    let root = nix::unistd::geteuid().is_root();
    match error.kind() {
        io::ErrorKind::PermissionDenied if !root => {
            " (without root, mounting needs read-write access to /dev/fuse and the setuid \
             fusermount3 from the fuse3 package)"
        }
        io::ErrorKind::NotFound => " (is the fuse3 package installed and /dev/fuse present?)",
        _ => "",
    }
}

/// Where a mount sits: the directory fd and name it was mounted on, its mount id when this
/// process made it, and what `mount` created there.
#[derive(Debug)]
struct Place {
    path: PathBuf,
    parent: OwnedFd,
    name: OsString,
    id: Option<u32>,
    created: parking_lot::Mutex<Option<Created>>,
}

impl Place {
    /// Removes the mountpoint `mount` created, once; a no-op while anything is mounted on it
    /// (the object found there is then another one).
    fn remove_created(&self) {
        if let Some(created) = self.created.lock().take() {
            mountpoint::remove_created(&self.parent, &self.name, &created);
        }
    }
}

impl Drop for Place {
    /// Also covers a mount given up before it was served (another mount of `serve` failed).
    fn drop(&mut self) {
        self.remove_created();
    }
}

/// A live mount. [`Mounted::run`] serves it until it is unmounted.
pub struct Mounted {
    session: Session<VaultFs>,
    place: Arc<Place>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.place.path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum How {
    /// Mounted by this process with mount(2): unmounted by mount id through the parent fd.
    Direct(Arc<Place>),
    /// Mounted through fusermount3: fuser unmounts (lazily, with fusermount3 -u -z).
    Fuser(SessionUnmounter),
}

/// Unmounts a mount from another thread (a signal handler thread, say).
#[derive(Debug)]
pub struct Unmounter {
    how: How,
    mountpoint: PathBuf,
}

impl Unmounter {
    /// Unmounts; when files are still open (EBUSY), detaches lazily so the mountpoint is free
    /// at once and the session ends when the last file closes.
    pub fn unmount(&mut self) -> io::Result<Unmounted> {
        match &mut self.how {
            How::Direct(place) => match place.id {
                Some(id) => {
                    unmount_at(&place.parent, &place.name, id, &place.path).map_err(|e| match e {
                        UnmountError::Io { error, .. } => error,
                        other => io::Error::other(other.to_string()),
                    })
                }
                None => Ok(Unmounted::Clean),
            },
            How::Fuser(inner) => inner.unmount().map(|()| Unmounted::Clean),
        }
    }

    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

/// Clears the dead FUSE mount `dead` if it is vaultfs's own (its mountinfo entry, found by the
/// mount id of the very object walked, says `vaultfs:VAULT`); refuses anything else.
fn clear_dead(dead: Found, fail: &dyn Fn(String) -> MountError) -> Result<(), MountError> {
    let ids = mountinfo::mount_id(&dead.fd).and_then(|here| {
        let parent = mountinfo::mount_id(&dead.parent)?;
        Ok((here, parent))
    });
    let (id, parent_id) = ids.map_err(|e| fail(format!("cannot read its mount id: {e}")))?;
    let entry = mountinfo::by_id(id).map_err(|e| fail(format!("cannot read mountinfo: {e}")))?;
    let entry = match entry {
        Some(e) if id != parent_id && e.is_vaultfs() => e,
        Some(e) => {
            return Err(fail(format!(
                "a {} filesystem from {} is mounted there and does not answer; it is not \
                 vaultfs's, so it is left alone (unmount it yourself: umount -l {})",
                e.fs_type,
                e.source,
                dead.path.display()
            )))
        }
        None => return Err(fail("its filesystem does not answer".into())),
    };
    tracing::warn!(
        "{}: clearing a stale mount of {} left by a daemon that died",
        dead.path.display(),
        entry.source
    );
    drop(dead.fd);
    unmount_at(&dead.parent, &dead.name, id, &dead.path)
        .map_err(|e| fail(format!("cannot clear a stale mount: {e}")))?;
    Ok(())
}

/// Finds (creating if missing) the object to mount on: a directory for a vault or a subtree,
/// a regular file for one secret. Returns it with its `rootmode`.
fn prepare_mountpoint(
    path: &Path,
    kind: EntryKind,
    strict: bool,
) -> Result<(Found, u32), MountError> {
    let fail = |reason: String| MountError::Mountpoint {
        path: path.to_owned(),
        reason,
    };
    let kind = match kind {
        EntryKind::Dir => Kind::Dir,
        // A template is served as a regular file.
        EntryKind::File | EntryKind::Template => Kind::File,
    };
    for _ in 0..MAX_STALE {
        let found = match mountpoint::walk(path, Some(kind), strict).map_err(fail)? {
            Walked::Dead(dead) => {
                clear_dead(dead, &fail)?;
                continue;
            }
            Walked::Found(found) => found,
        };
        let id = found
            .is_mount_root()
            .map_err(|e| fail(format!("cannot read its mount id: {e}")))?;
        if let Some(id) = id {
            if mountinfo::by_id(id)
                .map_err(|e| fail(format!("cannot read mountinfo: {e}")))?
                .is_some_and(|e| e.is_vaultfs())
            {
                return Err(MountError::AlreadyMounted(found.path));
            }
        }
        let rootmode = mountpoint::check_kind(&found, kind, path).map_err(fail)?;
        return Ok((found, rootmode));
    }
    Err(fail("too many dead mounts stacked there".into()))
}

/// The mount(2) arguments fuser's own root path derives from `config`: source (`FSName`),
/// filesystem type (`fuse.` + `Subtype`), flags (nosuid and nodev unless `Suid`/`Dev`), and
/// the options the kernel takes as text. One list of options serves both mount paths.
fn direct_mount_args(config: &Config) -> (String, String, MsFlags, String) {
    let mut source = "/dev/fuse".to_string();
    let mut fs_type = "fuse".to_string();
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mut text = Vec::new();
    for option in &config.mount_options {
        match option {
            MountOption::FSName(name) => source = name.clone(),
            MountOption::Subtype(sub) => fs_type = format!("fuse.{sub}"),
            MountOption::RO => flags |= MsFlags::MS_RDONLY,
            MountOption::RW => flags -= MsFlags::MS_RDONLY,
            MountOption::NoSuid => flags |= MsFlags::MS_NOSUID,
            MountOption::Suid => flags -= MsFlags::MS_NOSUID,
            MountOption::NoDev => flags |= MsFlags::MS_NODEV,
            MountOption::Dev => flags -= MsFlags::MS_NODEV,
            MountOption::NoExec => flags |= MsFlags::MS_NOEXEC,
            MountOption::Exec => flags -= MsFlags::MS_NOEXEC,
            MountOption::NoAtime => flags |= MsFlags::MS_NOATIME,
            MountOption::Atime => flags -= MsFlags::MS_NOATIME,
            MountOption::Sync => flags |= MsFlags::MS_SYNCHRONOUS,
            MountOption::DirSync => flags |= MsFlags::MS_DIRSYNC,
            MountOption::Async => flags -= MsFlags::MS_SYNCHRONOUS,
            MountOption::DefaultPermissions => text.push("default_permissions".to_string()),
            MountOption::CUSTOM(value) => text.push(value.clone()),
            // fusermount3's business; never set for a direct mount.
            MountOption::AutoUnmount => {}
        }
    }
    if config.acl != SessionACL::Owner {
        text.push("allow_other".to_string());
    }
    (source, fs_type, flags, text.join(","))
}

/// Mounts a FUSE filesystem on exactly the object `found` refers to, with the options fuser
/// would use as root. Returns the `/dev/fuse` fd for `Session::from_fd`.
fn mount_direct(found: &Found, rootmode: u32, config: &Config) -> io::Result<OwnedFd> {
    let dev: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?
        .into();
    let (source, fs_type, flags, extra) = direct_mount_args(config);
    let mut options = format!(
        "fd={},rootmode={rootmode:o},user_id={},group_id={}",
        dev.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid(),
    );
    if !extra.is_empty() {
        options.push(',');
        options.push_str(&extra);
    }
    let target = PathBuf::from(format!("/proc/self/fd/{}", found.fd.as_raw_fd()));
    nix::mount::mount(
        Some(source.as_str()),
        &target,
        Some(fs_type.as_str()),
        flags,
        Some(options.as_str()),
    )?;
    Ok(dev)
}

/// The id of the mount just made on `found`: the topmost mount at its name, which must be a
/// vaultfs mount of `vault` sitting directly on the object walked. Anything else means the
/// name was swapped between the walk and the mount.
fn identify(found: &Found, vault: &str) -> io::Result<u32> {
    let top = nix::fcntl::openat(
        &found.parent,
        found.name.as_os_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let id = mountinfo::mount_id(&top)?;
    let under = mountinfo::mount_id(&found.fd)?;
    let ok = mountinfo::by_id(id)?
        .is_some_and(|e| e.parent_id == under && e.fs_type == FS_TYPE && e.vault() == Some(vault));
    if ok {
        Ok(id)
    } else {
        Err(io::Error::other(
            "the mountpoint was replaced while it was being mounted",
        ))
    }
}

/// Mounts `source` of the vault `reader` reads at `mountpoint`. Returns once the kernel has
/// completed the FUSE handshake: the mount is usable from then on.
pub fn mount(
    reader: VaultReader,
    source: VaultPath,
    mountpoint: &Path,
    options: &Options,
) -> Result<Mounted, MountError> {
    let vault = reader.vault_name().to_owned();
    let (invalidator, queue) = Invalidator::new();
    let shared = Arc::new(Shared::load(
        reader,
        source.clone(),
        invalidator.clone(),
        options.clone(),
    )?);
    let kind = {
        let tree = shared.tree();
        for name in tree.unresolved_names() {
            tracing::warn!(
                "{vault}: {name} does not exist on this host; its access is granted to nobody"
            );
        }
        if let Some((path, why)) = tree.blocked().into_iter().next() {
            return Err(MountError::KernelChecksRefused {
                vault,
                path: path.to_string(),
                why,
            });
        }
        match tree.node(fuser::INodeNo::ROOT) {
            Some(node) => node.kind,
            None => return Err(MountError::SourceMissing),
        }
    };
    let root = nix::unistd::geteuid().is_root();
    let (found, rootmode) = prepare_mountpoint(mountpoint, kind, !root)?;
    let mount_failed = |error: io::Error| MountError::Mount {
        path: found.path.clone(),
        error,
    };

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("{SOURCE_PREFIX}{vault}")),
        MountOption::Subtype("vaultfs".into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    // As root, let the users the ACL names reach the files; the driver checks every open.
    config.acl = if root {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(REQUEST_THREADS);
    config.clone_fd = true;

    let remove_created = |found: &Found| {
        if let Some(created) = &found.created {
            mountpoint::remove_created(&found.parent, &found.name, created);
        }
    };
    let (session, id) = if root {
        let dev = mount_direct(&found, rootmode, &config).map_err(|e| {
            remove_created(&found);
            mount_failed(e)
        })?;
        // The handshake first: until INIT is answered, any request to the mount would block.
        let session = Session::from_fd(VaultFs::new(shared.clone()), dev, config.acl, config);
        let id = identify(&found, &vault);
        match (session, id) {
            (Ok(session), Ok(id)) => (session, Some(id)),
            (session, id) => {
                if let Ok(id) = id {
                    let _ = unmount_at(&found.parent, &found.name, id, &found.path);
                    remove_created(&found);
                }
                let error = match (session, id) {
                    (Err(e), _) | (_, Err(e)) => e,
                    _ => io::Error::other("mount failed"),
                };
                return Err(mount_failed(error));
            }
        }
    } else {
        let session =
            Session::new(VaultFs::new(shared.clone()), &found.path, &config).map_err(|e| {
                remove_created(&found);
                mount_failed(e)
            })?;
        (session, None)
    };
    let place = Arc::new(Place {
        path: found.path.clone(),
        parent: found.parent,
        name: found.name,
        id,
        created: parking_lot::Mutex::new(found.created),
    });
    // A mount made here is not unmounted by fuser when the session is dropped.
    let give_up = |error: io::Error| {
        if let Some(id) = place.id {
            let _ = unmount_at(&place.parent, &place.name, id, &place.path);
        }
        mount_failed(error)
    };
    let notifier = session.notifier();
    std::thread::Builder::new()
        .name("vaultfs-notify".into())
        .spawn(move || invalidate::run_notifier(invalidator, queue, notifier))
        .map_err(give_up)?;
    let weak = Arc::downgrade(&shared);
    std::thread::Builder::new()
        .name("vaultfs-refresh".into())
        .spawn(move || refresher::run(weak))
        .map_err(give_up)?;
    // Optional: without it, changes still reach `ls` within the poll interval.
    let weak = Arc::downgrade(&shared);
    if let Err(e) = std::thread::Builder::new()
        .name("vaultfs-watch".into())
        .spawn(move || crate::signal::watch(weak))
    {
        tracing::debug!("no watcher of the change signal: {e}");
    }
    Ok(Mounted {
        session,
        place,
        shared,
    })
}

impl Mounted {
    /// A handle that unmounts this mount from another thread.
    pub fn unmounter(&mut self) -> Unmounter {
        let how = if self.place.id.is_some() {
            How::Direct(self.place.clone())
        } else {
            How::Fuser(self.session.unmount_callable())
        };
        Unmounter {
            how,
            mountpoint: self.place.path.clone(),
        }
    }

    /// The mountpoint (absolute, symlinks resolved).
    pub fn mountpoint(&self) -> &Path {
        &self.place.path
    }

    /// What is mounted, as `VAULT:/PATH`.
    pub fn describe(&self) -> String {
        self.shared.describe()
    }

    /// Serves requests until the filesystem is unmounted (by [`Unmounter::unmount`], `vaultfs
    /// umount`, `umount` or `fusermount3 -u`), then removes the mountpoint if `mount` created
    /// it and it is still that same, empty object.
    pub fn run(self) -> io::Result<()> {
        let Mounted {
            session,
            shared,
            place,
        } = self;
        let result = session.run();
        // The mountpoint goes first, as soon as the session ends; then the audit's last
        // records (its clean stop) are written, which may take a batch's time.
        place.remove_created();
        if let Some(k) = &shared.kernel {
            tracing::info!("{}: {}", shared.describe(), k.summary());
        }
        shared.finish_audit();
        // The refresher holds only a weak reference; dropping the last strong one stops it,
        // which drops the invalidation queue and so ends the notifier thread.
        drop(shared);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_mounts_get_the_options_fuser_would_pass() {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("vaultfs:app".into()),
            MountOption::Subtype("vaultfs".into()),
            MountOption::RO,
            MountOption::NoExec,
            MountOption::NoAtime,
            MountOption::DefaultPermissions,
        ];
        config.acl = SessionACL::All;
        let (source, fs_type, flags, text) = direct_mount_args(&config);
        assert_eq!(source, "vaultfs:app");
        assert_eq!(fs_type, FS_TYPE);
        assert_eq!(
            flags,
            MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NOATIME
        );
        assert_eq!(text, "default_permissions,allow_other");
    }
}
