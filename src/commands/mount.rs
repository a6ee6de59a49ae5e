//! `mount` and `umount`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use vaultfs_store::Address;

use crate::cli::Cli;
use crate::credentials;
use crate::daemon::{self, MountSpec, Readiness};

/// `path` made absolute against the current directory, which the daemon leaves. A trailing
/// slash is dropped: `mount nix:/tok /run/keys/tok/` means the path `/run/keys/tok`, which
/// the kernel would otherwise only accept as a directory (EISDIR for a one-secret mount).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .with_context(|| format!("{}: cannot make absolute", path.display()))?;
    Ok(abs.components().collect())
}

/// Mounts `source` at `mountpoint`; without `foreground`, returns once the mount is ready and
/// leaves a daemon serving it.
pub fn mount(
    cli: &Cli,
    source: &str,
    mountpoint: &Path,
    foreground: bool,
    log_file: Option<&Path>,
    open_timeout: std::time::Duration,
    kernel_checks: bool,
) -> Result<ExitCode> {
    let source = Address::parse(source)?;
    let spec = MountSpec {
        source,
        mountpoint: absolute(mountpoint)?,
        open_timeout,
        kernel_checks,
        actions: Vec::new(),
        quiet_period: crate::config::DEFAULT_QUIET_PERIOD,
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
    match daemon::serve(
        &store_path,
        cred,
        &[spec],
        cli.allow_rollback,
        readiness,
        log_file,
    ) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The parent has printed the error already.
        Err(e) if daemonized => Ok(crate::exit::Exit::of(&e).into()),
        Err(e) => Err(e),
    }
}

/// Unmounts a vaultfs mount; its daemon sees the session end and exits 0.
pub fn umount(mountpoint: &Path) -> Result<()> {
    let path = absolute(mountpoint)?;
    match vaultfs_fs::unmount(&path) {
        Ok(vaultfs_fs::Unmounted::Clean) => Ok(()),
        Ok(vaultfs_fs::Unmounted::Detached) => {
            eprintln!(
                "vaultfs: {} is busy; detached it (the daemon exits when its last file closes)",
                path.display()
            );
            Ok(())
        }
        Err(vaultfs_fs::UnmountError::NotVaultfs(p)) => {
            crate::exit::usage!("{}: not a vaultfs mount", p.display())
        }
        // A path that does not exist or cannot be walked safely: the argument is wrong.
        Err(vaultfs_fs::UnmountError::Path(reason)) => crate::exit::usage!("{reason}"),
        Err(e) => Err(e.into()),
    }
}
