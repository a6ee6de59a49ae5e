//! `serve`: every mount of a TOML config from one foreground process (systemd, NixOS).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use vaultfs_store::Address;

use crate::cli::Cli;
use crate::credentials;
use crate::daemon::{self, MountSpec, Readiness};
use crate::exit::{usage, UsageError};

/// The config file. It names secrets but holds none, so it may live in the Nix store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeConfig {
    /// The store; `--store`/`VAULTFS_STORE` win over it.
    store: Option<PathBuf>,
    /// The key file; `--key-file`/`VAULTFS_KEY_FILE` win over it.
    key_file: Option<PathBuf>,
    #[serde(rename = "mount", default)]
    mounts: Vec<MountConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MountConfig {
    source: String,
    mountpoint: PathBuf,
    #[serde(default = "read_only_default")]
    read_only: bool,
}

fn read_only_default() -> bool {
    true
}

/// A config checked for everything that can be checked without the store.
#[derive(Debug)]
pub struct CheckedConfig {
    /// The store, if the config names one.
    pub store: Option<PathBuf>,
    /// The key file, if the config names one.
    pub key_file: Option<PathBuf>,
    /// The mounts, in order.
    pub mounts: Vec<MountSpec>,
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse_config(text: &str, origin: &str) -> Result<CheckedConfig> {
    let config: ServeConfig = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.message().to_owned();
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            match line {
                Some(l) => usage!("{origin}:{l}: {msg}"),
                None => usage!("{origin}: {msg}"),
            }
        }
    };
    if config.mounts.is_empty() {
        usage!("{origin}: no [[mount]] sections: nothing to serve");
    }
    let mut seen = HashSet::new();
    let mut mounts = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        let which = format!("{origin}: mount #{}", i + 1);
        let source = Address::parse(&m.source).map_err(|e| UsageError(format!("{which}: {e}")))?;
        if !m.mountpoint.is_absolute() {
            usage!(
                "{which}: mountpoint {} must be absolute",
                m.mountpoint.display()
            );
        }
        if !m.read_only {
            usage!("{which}: read-write mounts are not supported; remove read_only = false");
        }
        if !seen.insert(m.mountpoint.clone()) {
            usage!(
                "{which}: mountpoint {} is used twice",
                m.mountpoint.display()
            );
        }
        mounts.push(MountSpec {
            source,
            mountpoint: m.mountpoint.clone(),
        });
    }
    for path in [&config.store, &config.key_file].into_iter().flatten() {
        if !path.is_absolute() {
            usage!("{origin}: {} must be an absolute path", path.display());
        }
    }
    Ok(CheckedConfig {
        store: config.store,
        key_file: config.key_file,
        mounts,
    })
}

/// `serve --config FILE [--check]`.
pub fn serve(cli: &Cli, config_path: &Path, check: bool) -> Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read config {}", config_path.display()))?;
    let config = parse_config(&text, &config_path.display().to_string())?;
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
        (None, Some(k), None) => credentials::key_file(k)?,
        _ => credentials::unlock_credential(cli)?,
    };
    daemon::serve(
        &store_path,
        cred,
        &config.mounts,
        Readiness::foreground(),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_valid_config() {
        let c = parse_config(
            "store = \"/var/lib/vaultfs/store.db\"\n[[mount]]\nsource = \"nix:/nix-tokens\"\nmountpoint = \"/run/keys/nix-tokens\"\n[[mount]]\nsource = \"ssh\"\nmountpoint = \"/run/keys/ssh\"\nread_only = true\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.mounts.len(), 2);
        assert_eq!(c.mounts[0].source.to_string(), "nix:/nix-tokens");
    }

    #[test]
    fn rejects_bad_configs_with_a_reason() {
        let cases = [
            ("", "no [[mount]]"),
            ("[[mount]]\nsource = \"nix:rel\"\nmountpoint = \"/a\"\n", "mount #1"),
            ("[[mount]]\nsource = \"nix\"\nmountpoint = \"rel\"\n", "absolute"),
            ("[[mount]]\nsource = \"nix\"\nmountpoint = \"/a\"\nread_only = false\n", "read-write"),
            ("[[mount]]\nsource = \"n\"\nmountpoint = \"/a\"\n[[mount]]\nsource = \"m\"\nmountpoint = \"/a\"\n", "twice"),
            ("[[mount]]\nsource = \"n\"\nmountpoint = \"/a\"\ncolour = 1\n", "t:"),
            ("store = [\n", "t:"),
        ];
        for (text, want) in cases {
            let err = parse_config(text, "t").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
