//! Running mounts as a daemon. This module is the orchestration: open the store, mount every
//! spec, report readiness, serve until every mount ends. [`process`] holds the fork, terminal
//! and signal handling, [`notify`] the readiness report, [`fork`] the one `unsafe` call.

mod fork;
mod notify;
mod process;

use anyhow::{Context, Result};
use vaultfs_store::{Credential, Store};

pub use crate::config::MountSpec;
pub use notify::{sd_notify, Readiness};
pub use process::{fork_daemon, quiet_stderr};

use crate::config::CredentialSocketSpec;
use crate::credsock::{self, CredentialSocket};
use crate::hygiene;

/// Opens the store, mounts every spec, reports readiness, and serves until all are unmounted.
/// Mount failures are reported to `readiness` (so `vaultfs mount` prints them) and returned.
pub fn serve(
    store_path: &std::path::Path,
    cred: Credential,
    specs: &[MountSpec],
    allow_rollback: bool,
    readiness: Readiness,
    log_file: Option<&std::path::Path>,
) -> Result<()> {
    serve_with_credentials(
        store_path,
        cred,
        specs,
        None,
        allow_rollback,
        readiness,
        log_file,
    )
}

/// [`serve`], plus the credential socket of `credentials` (see [`credsock`]).
pub fn serve_with_credentials(
    store_path: &std::path::Path,
    cred: Credential,
    specs: &[MountSpec],
    credentials: Option<&CredentialSocketSpec>,
    allow_rollback: bool,
    mut readiness: Readiness,
    log_file: Option<&std::path::Path>,
) -> Result<()> {
    let signals = process::block_signals();
    // From here on, logging never waits on its sink (this is after any fork).
    crate::logging::start_writer();
    let daemonized = matches!(readiness, Readiness::Parent(_));
    let (mounted, socket) = match mount_all(store_path, cred, specs, credentials, allow_rollback) {
        Ok(m) => m,
        Err(e) => {
            readiness.failed(&e);
            return Err(e);
        }
    };
    let mut mounted = mounted;
    let unmounters = mounted.iter_mut().map(|m| m.unmounter()).collect();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    process::spawn_signal_thread(signals, unmounters, stop_tx);
    let socket_path = socket.as_ref().map(|s| s.path().to_owned());
    if let Some(socket) = socket {
        tracing::info!(target: "vaultfs::ready", "serving credentials at {}", socket.path().display());
        std::thread::Builder::new()
            .name("vaultfs-credsock".into())
            .spawn(move || socket.run())
            .context("cannot start the credential socket thread")?;
    }
    for m in &mounted {
        tracing::info!(target: "vaultfs::ready", "serving {} at {}", m.describe(), m.mountpoint().display());
    }
    if daemonized {
        quiet_stderr(log_file)?;
    }
    readiness.ready(mounted.len());
    drop(readiness);

    let threads: Vec<_> = mounted
        .into_iter()
        .map(|m| {
            let where_ = m.mountpoint().to_owned();
            let handle = std::thread::Builder::new()
                .name("vaultfs-session".into())
                .spawn(move || m.run());
            (where_, handle)
        })
        .collect();
    if threads.is_empty() {
        // Only a credential socket: serve until SIGTERM or SIGINT.
        let _ = stop_rx.recv();
    }
    let mut failed = false;
    for (mountpoint, handle) in threads {
        let result = handle
            .map_err(anyhow::Error::from)
            .and_then(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("the session thread panicked"))
            })
            .and_then(|r| r.map_err(anyhow::Error::from));
        if let Err(e) = result {
            tracing::error!("{}: {e:#}", mountpoint.display());
            failed = true;
        }
    }
    sd_notify("STOPPING=1");
    if let Some(path) = socket_path {
        let _ = std::fs::remove_file(path);
    }
    if failed {
        anyhow::bail!("a mount ended with an error");
    }
    Ok(())
}

type MountedAll = (Vec<vaultfs_fs::Mounted>, Option<CredentialSocket>);

fn mount_all(
    store_path: &std::path::Path,
    cred: Credential,
    specs: &[MountSpec],
    credentials: Option<&CredentialSocketSpec>,
    allow_rollback: bool,
) -> Result<MountedAll> {
    // Failure is warned about inside; mounting still works.
    hygiene::lock_memory();
    let options = vaultfs_store::OpenOptions {
        allow_rollback,
        ..Default::default()
    };
    let store = Store::open_with(store_path, &cred, &options)?;
    drop(cred);
    let mut readers = Vec::new();
    for spec in specs {
        let reader = store
            .reader(&spec.source.vault)
            .with_context(|| format!("cannot mount {}", spec.source))?;
        readers.push(reader);
    }
    // The socket's vaults get readers of their own: a daemon holds only the keys of the
    // vaults it serves.
    let mut socket_readers = std::collections::HashMap::new();
    if let Some(spec) = credentials {
        for vault in credsock::vaults(spec) {
            let reader = store
                .reader(&vault)
                .with_context(|| format!("cannot serve credentials from vault {vault}"))?;
            socket_readers.insert(vault, std::sync::Arc::new(reader));
        }
    }
    drop(store);
    let socket = match credentials {
        Some(spec) => Some(CredentialSocket::bind(spec, socket_readers)?),
        None => None,
    };
    let hooks = crate::actions::start(specs)?;
    let mut mounted: Vec<vaultfs_fs::Mounted> = Vec::new();
    for ((spec, reader), on_change) in specs.iter().zip(readers).zip(hooks) {
        let options = vaultfs_fs::Options {
            open_timeout: spec.open_timeout,
            on_change,
            kernel_checks: spec.kernel_checks,
        };
        match vaultfs_fs::mount(reader, spec.source.path.clone(), &spec.mountpoint, &options) {
            Ok(m) => mounted.push(m),
            Err(e) => {
                // Leave nothing half-done: unmount what is already mounted.
                for m in &mut mounted {
                    let _ = m.unmounter().unmount();
                }
                // A refused kernel-checked mount is a usage error (exit 2), in one line.
                let e = if e.is_usage() {
                    anyhow::Error::new(crate::exit::UsageError(e.to_string()))
                } else {
                    anyhow::Error::new(e)
                };
                return Err(e).with_context(|| {
                    format!(
                        "cannot mount {} at {}",
                        spec.source,
                        spec.mountpoint.display()
                    )
                });
            }
        }
    }
    Ok((mounted, socket))
}
