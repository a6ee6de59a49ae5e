//! `mount` and `umount`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use vaultfs_store::Address;

use crate::cli::Cli;
use crate::credentials;
use crate::daemon::{self, MountSpec, Readiness};

/// `path` made absolute against the current directory, which the daemon leaves.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}: cannot make absolute", path.display()))
}

/// Mounts `source` at `mountpoint`; without `foreground`, returns once the mount is ready and
/// leaves a daemon serving it.
pub fn mount(
    cli: &Cli,
    source: &str,
    mountpoint: &Path,
    foreground: bool,
    log_file: Option<&Path>,
) -> Result<ExitCode> {
    let source = Address::parse(source)?;
    let spec = MountSpec {
        source,
        mountpoint: absolute(mountpoint)?,
    };
    if let Some(path) = log_file {
        crate::logging::to_file(path)?;
    }
    let store_path = credentials::store_path(cli);
    credentials::require_store(&store_path)?;
    // Ask for the passphrase while the terminal is still ours; fork before SQLite or any
    // thread exists.
    let cred = credentials::unlock_credential(cli)?;
    let readiness = if foreground {
        Readiness::foreground()
    } else {
        match daemon::fork_daemon()? {
            Ok(child) => child,
            Err(parent_exit) => return Ok(parent_exit),
        }
    };
    let daemonized = matches!(readiness, Readiness::Parent(_));
    match daemon::serve(&store_path, cred, &[spec], readiness, log_file) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The parent has printed the error already.
        Err(e) if daemonized => Ok(crate::exit::code_for(&e)),
        Err(e) => Err(e),
    }
}

/// Unmounts a vaultfs mount; its daemon sees the session end and exits 0.
pub fn umount(mountpoint: &Path) -> Result<()> {
    let path = absolute(mountpoint)?;
    if !vaultfs_fs::is_vaultfs_mount(&path).context("cannot read /proc/self/mountinfo")? {
        crate::exit::usage!("{}: not a vaultfs mount", path.display());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let status = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&path)
            .status()
            .context("cannot run fusermount3")?;
        anyhow::ensure!(
            status.success(),
            "fusermount3 could not unmount {}",
            path.display()
        );
        return Ok(());
    }
    let c = CString::new(path.as_os_str().as_bytes()).context("path holds a NUL byte")?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBUSY) {
        // Files are open: detach now; the daemon exits when the last one closes.
        vaultfs_fs::detach(&path).with_context(|| format!("cannot detach {}", path.display()))?;
        eprintln!(
            "vaultfs: {} is busy; detached it (the daemon exits when its last file closes)",
            path.display()
        );
        return Ok(());
    }
    Err(err).with_context(|| format!("cannot unmount {}", path.display()))
}
