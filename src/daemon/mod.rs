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

use crate::hygiene;

/// Opens the store, mounts every spec, reports readiness, and serves until all are unmounted.
/// Mount failures are reported to `readiness` (so `vaultfs mount` prints them) and returned.
pub fn serve(
    store_path: &std::path::Path,
    cred: Credential,
    specs: &[MountSpec],
    allow_rollback: bool,
    mut readiness: Readiness,
    log_file: Option<&std::path::Path>,
) -> Result<()> {
    let signals = process::block_signals();
    let daemonized = matches!(readiness, Readiness::Parent(_));
    let mounted = match mount_all(store_path, cred, specs, allow_rollback) {
        Ok(m) => m,
        Err(e) => {
            readiness.failed(&e);
            return Err(e);
        }
    };
    let mut mounted = mounted;
    let unmounters = mounted.iter_mut().map(|m| m.unmounter()).collect();
    process::spawn_signal_thread(signals, unmounters);
    for m in &mounted {
        tracing::info!("serving {} at {}", m.describe(), m.mountpoint().display());
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
    if failed {
        anyhow::bail!("a mount ended with an error");
    }
    Ok(())
}

fn mount_all(
    store_path: &std::path::Path,
    cred: Credential,
    specs: &[MountSpec],
    allow_rollback: bool,
) -> Result<Vec<vaultfs_fs::Mounted>> {
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
    drop(store);
    let mut mounted: Vec<vaultfs_fs::Mounted> = Vec::new();
    for (spec, reader) in specs.iter().zip(readers) {
        let options = vaultfs_fs::Options {
            open_timeout: spec.open_timeout,
        };
        match vaultfs_fs::mount(reader, spec.source.path.clone(), &spec.mountpoint, &options) {
            Ok(m) => mounted.push(m),
            Err(e) => {
                // Leave nothing half-done: unmount what is already mounted.
                for m in &mut mounted {
                    let _ = m.unmounter().unmount();
                }
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
    Ok(mounted)
}
