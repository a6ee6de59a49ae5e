//! `serve`: every mount of a TOML config from one foreground process (systemd, NixOS).

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::Cli;
use crate::config::parse_config;
use crate::credentials;
use crate::daemon::{self, Readiness};
use crate::exit::UsageError;

/// `serve --config FILE [--check]`.
pub fn serve(cli: &Cli, config_path: &Path, check: bool) -> Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read config {}", config_path.display()))?;
    let config =
        parse_config(&text, &config_path.display().to_string()).map_err(|e| UsageError(e.0))?;
    if check {
        eprintln!(
            "{}: ok ({} mount(s))",
            config_path.display(),
            config.mounts.len()
        );
        return Ok(());
    }
    let store_path = match (&cli.store, &config.store) {
        (None, Some(p)) => p.clone(),
        _ => credentials::store_path(cli),
    };
    credentials::require_store(&store_path)?;
    let cred = match (&cli.key_file, &config.key_file, &cli.passphrase_file) {
        (None, Some(k), None) if cli.identity.is_none() => credentials::key_file(k)?,
        _ => credentials::unlock_credential(cli)?,
    };
    daemon::serve(
        &store_path,
        cred,
        &config.mounts,
        cli.allow_rollback,
        Readiness::foreground(),
        None,
    )
}
