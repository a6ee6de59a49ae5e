//! The `serve` config file: TOML naming the store, the key file and the mounts. It names
//! secrets but holds none, so it may live in the Nix store. This module depends on nothing
//! else of the binary, so the fuzz target in `fuzz/` can include it as it is.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;
use vaultfs_store::Address;

/// A config that was refused, with the reason (file, line or mount, and what is wrong).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// One mount to serve.
#[derive(Debug, Clone)]
pub struct MountSpec {
    /// What to mount.
    pub source: Address,
    /// Where (absolute).
    pub mountpoint: PathBuf,
    /// How long an open may wait for the store before it fails with EIO.
    pub open_timeout: std::time::Duration,
}

/// How long an open waits for the store unless the config says otherwise.
pub const DEFAULT_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The file as written.
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
    /// Milliseconds an open may wait for the store before it fails with EIO.
    open_timeout_ms: Option<u64>,
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
pub fn parse_config(text: &str, origin: &str) -> Result<CheckedConfig, ConfigError> {
    let fail = |msg: String| Err(ConfigError(msg));
    let config: ServeConfig = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.message().to_owned();
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            return match line {
                Some(l) => fail(format!("{origin}:{l}: {msg}")),
                None => fail(format!("{origin}: {msg}")),
            };
        }
    };
    if config.mounts.is_empty() {
        return fail(format!("{origin}: no [[mount]] sections: nothing to serve"));
    }
    let mut seen = HashSet::new();
    let mut mounts = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        let which = format!("{origin}: mount #{}", i + 1);
        let source = match Address::parse(&m.source) {
            Ok(a) => a,
            Err(e) => return fail(format!("{which}: {e}")),
        };
        if !m.mountpoint.is_absolute() {
            let shown = m.mountpoint.display();
            return fail(format!("{which}: mountpoint {shown} must be absolute"));
        }
        if !m.read_only {
            return fail(format!(
                "{which}: read-write mounts are not supported; remove read_only = false"
            ));
        }
        if !seen.insert(m.mountpoint.components().collect::<std::path::PathBuf>()) {
            let shown = m.mountpoint.display();
            return fail(format!("{which}: mountpoint {shown} is used twice"));
        }
        let open_timeout = match m.open_timeout_ms {
            None => DEFAULT_OPEN_TIMEOUT,
            Some(ms @ 1..=600_000) => std::time::Duration::from_millis(ms),
            Some(ms) => {
                return fail(format!(
                    "{which}: open_timeout_ms = {ms} is out of range (1 to 600000)"
                ))
            }
        };
        mounts.push(MountSpec {
            source,
            // Without a trailing slash, as `vaultfs mount` takes it.
            mountpoint: m.mountpoint.components().collect(),
            open_timeout,
        });
    }
    for path in [&config.store, &config.key_file].into_iter().flatten() {
        if !path.is_absolute() {
            return fail(format!(
                "{origin}: {} must be an absolute path",
                path.display()
            ));
        }
    }
    Ok(CheckedConfig {
        store: config.store,
        key_file: config.key_file,
        mounts,
    })
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
