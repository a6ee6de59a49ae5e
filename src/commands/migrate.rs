//! `vaultfs migrate`: upgrade a store made by an older vaultfs to this build's format.

use anyhow::{Context, Result};
use vaultfs_store::{OpenOptions, Store};

use crate::cli::Cli;
use crate::credentials;

/// Upgrades the store in one transaction, then opens it once so this host records its head.
pub fn migrate(cli: &Cli) -> Result<()> {
    let path = credentials::store_path(cli);
    credentials::require_store(&path)?;
    let cred = credentials::unlock_credential(cli)?;
    let done = vaultfs_store::migrate(&path, &cred)
        .with_context(|| format!("cannot migrate the store at {}", path.display()))?;
    if done.from == done.to {
        eprintln!(
            "{} is already at store format {}; nothing to do",
            path.display(),
            done.to
        );
        return Ok(());
    }
    let options = OpenOptions {
        allow_rollback: cli.allow_rollback,
        ..Default::default()
    };
    Store::open_with(&path, &cred, &options)?;
    eprintln!(
        "migrated {} from store format {} to {}: {} vaults, {} entries re-sealed",
        path.display(),
        done.from,
        done.to,
        done.vaults,
        done.entries
    );
    Ok(())
}
