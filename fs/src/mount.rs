//! Mounting: preparing the mountpoint (clearing a stale mount, creating a file or directory),
//! starting the FUSE session on several threads, and unmounting without hanging.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use vaultfs_store::{EntryKind, StoreError, VaultPath, VaultReader};

use crate::driver::{Options, Shared, VaultFs};
use crate::invalidate::{self, Invalidator};
use crate::refresher;

/// Request threads: enough that one slow request never stalls the others on a small machine.
const REQUEST_THREADS: usize = 8;

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing exists at the mounted path.
    #[error("no such secret or directory in the vault")]
    SourceMissing,
    /// The mountpoint exists with the wrong type.
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
}

/// What to try when a mount is refused for lack of privilege.
fn hint(error: &io::Error) -> &'static str {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match error.kind() {
        io::ErrorKind::PermissionDenied if !root => {
            " (without root, mounting needs read-write access to /dev/fuse and the setuid \
             fusermount3 from the fuse3 package)"
        }
        io::ErrorKind::NotFound => " (is the fuse3 package installed and /dev/fuse present?)",
        _ => "",
    }
}

/// A live mount. [`Mounted::run`] serves it until it is unmounted.
pub struct Mounted {
    session: Session<VaultFs>,
    mountpoint: PathBuf,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Unmounts a mount from another thread (a signal handler thread, say).
#[derive(Debug)]
pub struct Unmounter {
    inner: SessionUnmounter,
    mountpoint: PathBuf,
}

impl Unmounter {
    /// Unmounts; when files are still open (EBUSY), detaches lazily so the mountpoint is free
    /// at once and the session ends when the last file closes.
    pub fn unmount(&mut self) -> io::Result<()> {
        match self.inner.unmount() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(
                    "unmount {}: {e}; detaching lazily",
                    self.mountpoint.display()
                );
                detach(&self.mountpoint)
            }
        }
    }

    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

/// Detaches whatever is mounted at `path` (`umount -l`).
pub fn detach(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `path` is the mountpoint of a vaultfs mount (live or stale), per mountinfo.
pub fn is_vaultfs_mount(path: &Path) -> io::Result<bool> {
    let info = std::fs::read("/proc/self/mountinfo")?;
    let wanted = escape_mountinfo(path);
    Ok(info.split(|&b| b == b'\n').any(|line| {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            return false;
        };
        fields.get(4) == Some(&wanted.as_slice())
            && fields.get(sep + 1).is_some_and(|t| t.starts_with(b"fuse"))
            && fields
                .get(sep + 2)
                .is_some_and(|s| s.starts_with(b"vaultfs"))
    }))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn escape_mountinfo(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend(format!("\\{b:03o}").bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// Whether the filesystem mounted at `path` answers: `statfs` always reaches a FUSE daemon
/// (a `stat` may be answered from the kernel's attribute cache even when the daemon is dead).
fn answers(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid path and buf a valid out-parameter.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clears a mount left at `path` by a daemon that died ("Transport endpoint is not connected").
/// Returns whether there was one.
pub fn clear_stale(path: &Path) -> io::Result<bool> {
    match answers(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(
                "{}: clearing a stale mount left by a daemon that died",
                path.display()
            );
            detach(path).or_else(|e| {
                // Without privilege to unmount, fusermount3 may still do it.
                let status = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(path)
                    .status();
                match status {
                    Ok(s) if s.success() => Ok(()),
                    _ => Err(e),
                }
            })?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Creates `path` and its missing parents with mode 0755 whatever the umask (the daemon's is
/// 077), so the users an ACL names can reach a mount in a directory vaultfs created.
fn create_dirs(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    for dir in missing.into_iter().rev() {
        std::fs::DirBuilder::new().mode(0o755).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Makes sure `path` exists with the kind the mounted root needs: a directory for a vault or
/// a subtree, a regular file for one secret.
fn prepare_mountpoint(path: &Path, kind: EntryKind) -> Result<(), MountError> {
    let fail = |reason: String| MountError::Mountpoint {
        path: path.to_owned(),
        reason,
    };
    clear_stale(path).map_err(|e| fail(format!("cannot clear a stale mount: {e}")))?;
    if is_vaultfs_mount(path).unwrap_or(false) {
        return Err(MountError::AlreadyMounted(path.to_owned()));
    }
    match (std::fs::metadata(path), kind) {
        (Ok(m), EntryKind::Dir) if m.is_dir() => Ok(()),
        (Ok(m), EntryKind::File | EntryKind::Template) if m.is_file() => Ok(()),
        (Ok(_), EntryKind::Dir) => Err(fail(
            "is not a directory; a vault or directory mounts on a directory".into(),
        )),
        (Ok(_), EntryKind::File | EntryKind::Template) => Err(fail(
            "is not a regular file; a single secret mounts on a file".into(),
        )),
        (Err(e), _) if e.kind() == io::ErrorKind::NotFound => {
            let created = match kind {
                EntryKind::Dir => create_dirs(path),
                EntryKind::File | EntryKind::Template => {
                    if let Some(parent) = path.parent() {
                        create_dirs(parent)
                            .map_err(|e| fail(format!("cannot create its directory: {e}")))?;
                    }
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o400)
                        .open(path)
                        .map(drop)
                }
            };
            created.map_err(|e| fail(format!("cannot create it: {e}")))
        }
        (Err(e), _) => Err(fail(e.to_string())),
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
        match tree.node(fuser::INodeNo::ROOT) {
            Some(node) => node.kind,
            None => return Err(MountError::SourceMissing),
        }
    };
    prepare_mountpoint(mountpoint, kind)?;

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("vaultfs:{vault}")),
        MountOption::Subtype("vaultfs".into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // As root, let the users the ACL names reach the files; the driver checks every open.
    config.acl = if root {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(REQUEST_THREADS);
    config.clone_fd = true;

    let session =
        Session::new(VaultFs::new(shared.clone()), mountpoint, &config).map_err(|error| {
            MountError::Mount {
                path: mountpoint.to_owned(),
                error,
            }
        })?;
    let notifier = session.notifier();
    std::thread::Builder::new()
        .name("vaultfs-notify".into())
        .spawn(move || invalidate::run_notifier(invalidator, queue, notifier))
        .map_err(|error| MountError::Mount {
            path: mountpoint.to_owned(),
            error,
        })?;
    let weak = Arc::downgrade(&shared);
    std::thread::Builder::new()
        .name("vaultfs-refresh".into())
        .spawn(move || refresher::run(weak))
        .map_err(|error| MountError::Mount {
            path: mountpoint.to_owned(),
            error,
        })?;
    Ok(Mounted {
        session,
        mountpoint: mountpoint.to_owned(),
        shared,
    })
}

impl Mounted {
    /// A handle that unmounts this mount from another thread.
    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter {
            inner: self.session.unmount_callable(),
            mountpoint: self.mountpoint.clone(),
        }
    }

    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What is mounted, as `VAULT:/PATH`.
    pub fn describe(&self) -> String {
        self.shared.describe()
    }

    /// Serves requests until the filesystem is unmounted (by [`Unmounter::unmount`], `umount`
    /// or `fusermount3 -u`), then returns.
    pub fn run(self) -> io::Result<()> {
        let Mounted {
            session, shared, ..
        } = self;
        let result = session.run();
        // The refresher holds only a weak reference; dropping the last strong one stops it,
        // which drops the invalidation queue and so ends the notifier thread.
        drop(shared);
        result
    }
}
