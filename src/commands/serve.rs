//! `serve`: every mount of a TOML config from one foreground process (systemd, NixOS).

use std::path::Path;

use anyhow::{Context, Result};

use crate::actions::{check_units, UnitCheck};
use crate::cli::Cli;
use crate::config::parse_config;
use crate::credentials;
use crate::daemon::{self, Readiness};
use crate::exit::UsageError;

/// `serve --config FILE [--check [--offline]]`.
pub fn serve(
    cli: &Cli,
    config_path: &Path,
    check: bool,
    offline: bool,
    replica: Option<&Path>,
    host: Option<&str>,
) -> Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read config {}", config_path.display()))?;
    let config =
        parse_config(&text, &config_path.display().to_string()).map_err(|e| UsageError(e.0))?;
    if check {
        let actions: Vec<_> = config
            .mounts
            .iter()
            .flat_map(|m| m.actions.iter().cloned())
            .collect();
        let mut missing = Vec::new();
        let problems = if offline {
            Vec::new()
        } else {
            check_units(&actions)
        };
        for problem in problems {
            match problem {
                UnitCheck::Missing(msg) => missing.push(msg),
                UnitCheck::Unknown(msg) => eprintln!("vaultfs: warning: {msg}"),
            }
        }
        if let Some(first) = missing.first() {
            let more = match missing.len() {
                1 => String::new(),
                n => format!(" (and {} more missing unit(s))", n - 1),
            };
            return Err(UsageError(format!("{}: {first}{more}", config_path.display())).into());
        }
        let rules = config.credentials.as_ref().map_or(0, |c| c.rules.len());
        eprintln!(
            "{}: ok ({} mount(s), {} on-change action(s), {rules} credential rule(s))",
            config_path.display(),
            config.mounts.len(),
            actions.len()
        );
        return Ok(());
    }
    match config.audit_mirror {
        Some(spec) => crate::audit_mirror::install(spec),
        None => {
            if let Some(spec) = crate::audit_mirror::from_env()? {
                crate::audit_mirror::install(spec);
            }
        }
    }
    let store_path = match (&cli.store, &config.store) {
        (None, Some(p)) => p.clone(),
        _ => credentials::store_path(cli),
    };
    if crate::etcd::is_etcd(&store_path) {
        #[cfg(feature = "etcd")]
        return crate::etcd::serve(
            cli,
            &store_path,
            &config,
            crate::etcd::HostArgs { replica, host },
        );
        #[cfg(not(feature = "etcd"))]
        return Err(UsageError(crate::etcd::NOT_BUILT.into()).into());
    }
    if replica.is_some() || host.is_some() {
        return Err(UsageError(format!(
            "--replica and --host are for a store in etcd (--store etcd://...), not {}",
            store_path.display()
        ))
        .into());
    }
    credentials::require_store(&store_path)?;
    let cred = match (&cli.key_file, &config.key_file, &cli.passphrase_file) {
        (None, Some(k), None) if cli.identity.is_none() => credentials::key_file(k)?,
        _ => credentials::unlock_credential(cli)?,
    };
    daemon::serve_with_credentials(
        &store_path,
        cred,
        &config.mounts,
        config.credentials.as_ref(),
        cli.allow_rollback,
        Readiness::foreground(),
        None,
    )
}
