//! `serve` for a host of a store in etcd: start the sync task, wait (bounded) for its first
//! sync, then serve the mounts from the replica exactly as from a local store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use super::client::EtcdOptions;
use super::sync::{self, SyncTask};
use super::url::EtcdUrl;
use crate::cli::Cli;
use crate::config::CheckedConfig;
use crate::credentials;
use crate::daemon::{self, Readiness};
use crate::exit::UsageError;

/// How long `serve` waits for the first sync before serving what the replica has.
const FIRST_SYNC_WAIT: Duration = Duration::from_secs(30);

/// What `serve` was given beyond the config.
pub struct HostArgs<'a> {
    /// `--replica`.
    pub replica: Option<&'a Path>,
    /// `--host`.
    pub host: Option<&'a str>,
}

/// Serves `config`'s mounts from a replica of the etcd store `store`.
pub fn serve(cli: &Cli, store: &Path, config: &CheckedConfig, host: HostArgs<'_>) -> Result<()> {
    let url = EtcdUrl::parse(&store.to_string_lossy()).map_err(UsageError)?;
    let f = &config.fleet;
    let replica: PathBuf = host
        .replica
        .map(Path::to_path_buf)
        .or_else(|| f.replica.clone())
        .ok_or_else(|| {
            UsageError(format!(
                "a host of {url} needs a replica: --replica PATH or `replica = \"/var/lib/vaultfs/replica.db\"` in the config"
            ))
        })?;
    let name = match host.host.map(str::to_owned).or_else(|| f.host.clone()) {
        Some(h) => h,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .ok_or_else(|| anyhow!("cannot read the hostname: pass --host NAME"))?,
    };
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
        return Err(UsageError(format!("host name {name:?}: no '/', no space, not empty")).into());
    }
    let a = &cli.etcd;
    let opts = EtcdOptions {
        cacert: a.etcd_cacert.clone().or_else(|| f.etcd_cacert.clone()),
        cert: a.etcd_cert.clone().or_else(|| f.etcd_cert.clone()),
        key: a.etcd_key.clone().or_else(|| f.etcd_key.clone()),
        user: a.etcd_user.clone().or_else(|| f.etcd_user.clone()),
        password_file: a
            .etcd_password_file
            .clone()
            .or_else(|| f.etcd_password_file.clone()),
        timeout: Duration::from_millis(a.etcd_timeout_ms.max(1)),
    };
    // The host's key: --identity, the config's identity, a key file, or a passphrase.
    let cred = match (&cli.identity, &f.identity, &cli.key_file, &config.key_file) {
        (Some(p), _, _, _) | (None, Some(p), None, _) => credentials::identity(p)?,
        (None, None, None, Some(k)) if cli.passphrase_file.is_none() => credentials::key_file(k)?,
        _ => credentials::unlock_credential(cli)?,
    };
    // A second copy for the sync task (the mounts take the first).
    let sync_cred = credentials::remembered_sources()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no credential to give the sync task"))?;
    let existed = replica.exists();
    let mountpoints: Vec<PathBuf> = config.mounts.iter().map(|m| m.mountpoint.clone()).collect();
    let first = sync::start(SyncTask {
        url: url.clone(),
        opts,
        replica: replica.clone(),
        cred: sync_cred,
        host: name,
        state_dir: vaultfs_store::default_state_dir(),
        on_rekey: Box::new(move || restart(&mountpoints)),
    })?;
    match first.recv_timeout(FIRST_SYNC_WAIT) {
        Ok(Ok(head)) => tracing::info!(
            "etcd: replica {} at head {head} from {url}",
            replica.display()
        ),
        Ok(Err(why)) if existed => tracing::warn!(
            "etcd: first sync from {url} failed ({why}); serving the replica {} as it is",
            replica.display()
        ),
        Err(_) if existed => tracing::warn!(
            "etcd: no first sync from {url} within {} s; serving the replica {} as it is",
            FIRST_SYNC_WAIT.as_secs(),
            replica.display()
        ),
        Ok(Err(why)) => {
            return Err(anyhow!(
                "no replica yet at {} and the first sync from {url} failed: {why}",
                replica.display()
            ))
        }
        Err(_) => {
            return Err(anyhow!(
                "no replica yet at {} and no first sync from {url} within {} s",
                replica.display(),
                FIRST_SYNC_WAIT.as_secs()
            ))
        }
    }
    daemon::serve_with_credentials(
        &replica,
        cred,
        &config.mounts,
        config.credentials.as_ref(),
        cli.allow_rollback,
        Readiness::foreground(),
        None,
    )
    .with_context(|| format!("serving from the replica {}", replica.display()))
}

/// After a key rotation the mounts hold keys that no longer open the replica's rows (as for
/// a local store after `key rotate`). A fleet rotates without a visit to each host: unmount
/// (detaching what is busy) and start this same `serve` again in place, which opens the
/// replica with the host key and mounts with the new vault keys.
fn restart(mountpoints: &[PathBuf]) {
    for m in mountpoints {
        if let Err(e) = vaultfs_fs::unmount(m) {
            tracing::warn!("cannot unmount {} for the restart: {e}", m.display());
        }
    }
    let args: Vec<std::ffi::CString> = std::env::args_os()
        .filter_map(|a| std::ffi::CString::new(a.into_encoded_bytes()).ok())
        .collect();
    let exe = std::ffi::CString::new("/proc/self/exe").expect("no NUL");
    crate::logging::flush();
    let e = nix::unistd::execv(&exe, &args);
    tracing::error!("cannot restart serve ({e:?}); the mounts are gone, restart vaultfs");
    std::process::exit(1);
}
