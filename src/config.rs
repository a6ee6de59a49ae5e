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
    /// The credential socket for systemd's `LoadCredential=`.
    credentials: Option<CredentialsConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsConfig {
    socket: PathBuf,
    #[serde(rename = "rule", default)]
    rules: Vec<CredentialRuleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialRuleConfig {
    unit: String,
    id: String,
    source: String,
    #[serde(default)]
    uid: u32,
}

/// The credential socket: where it listens and what it may answer.
#[derive(Debug, Clone)]
pub struct CredentialSocketSpec {
    /// The socket's path (absolute).
    pub socket: PathBuf,
    /// Who gets what; anything no rule names is refused.
    pub rules: Vec<CredentialRule>,
}

/// One grant: the unit `unit` started by the service manager running as `uid` (0: the system
/// manager, another uid: that user's manager) gets the secret at `source` as credential `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRule {
    /// The peer's uid, as the kernel reports it (SO_PEERCRED).
    pub uid: u32,
    /// The full unit name, e.g. `consumer.service`.
    pub unit: String,
    /// The credential id of `LoadCredential=ID:...`.
    pub id: String,
    /// The secret to send.
    pub source: Address,
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
    /// The credential socket, if the config has a `[credentials]` section.
    pub credentials: Option<CredentialSocketSpec>,
}

/// Whether `name` can appear as one component of systemd's peer address (a unit name or a
/// credential id): non-empty, no `/`, no NUL, no whitespace.
fn valid_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name
            .chars()
            .any(|c| c == '/' || c == '\0' || c.is_whitespace())
}

fn check_credentials(
    config: &CredentialsConfig,
    origin: &str,
) -> Result<CredentialSocketSpec, ConfigError> {
    let fail = |msg: String| Err(ConfigError(msg));
    if !config.socket.is_absolute() {
        return fail(format!(
            "{origin}: [credentials] socket {} must be an absolute path",
            config.socket.display()
        ));
    }
    if config.rules.is_empty() {
        return fail(format!(
            "{origin}: [credentials] has no [[credentials.rule]]: the socket would refuse everything"
        ));
    }
    let mut seen = HashSet::new();
    let mut rules = Vec::new();
    for (i, r) in config.rules.iter().enumerate() {
        let which = format!("{origin}: credentials rule #{}", i + 1);
        if !valid_component(&r.unit) || !r.unit.contains('.') {
            return fail(format!(
                "{which}: unit {:?} is not a full unit name (e.g. \"app.service\")",
                r.unit
            ));
        }
        if !valid_component(&r.id) {
            return fail(format!("{which}: id {:?} is not a credential id", r.id));
        }
        let source = match Address::parse_entry(&r.source) {
            Ok(a) => a,
            Err(e) => return fail(format!("{which}: {e}")),
        };
        if !seen.insert((r.uid, r.unit.clone(), r.id.clone())) {
            return fail(format!(
                "{which}: unit {} (uid {}) already has a rule for id {}",
                r.unit, r.uid, r.id
            ));
        }
        rules.push(CredentialRule {
            uid: r.uid,
            unit: r.unit.clone(),
            id: r.id.clone(),
            source,
        });
    }
    Ok(CredentialSocketSpec {
        socket: config.socket.clone(),
        rules,
    })
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
    if config.mounts.is_empty() && config.credentials.is_none() {
        return fail(format!(
            "{origin}: no [[mount]] sections and no [credentials]: nothing to serve"
        ));
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
    let credentials = match &config.credentials {
        Some(c) => Some(check_credentials(c, origin)?),
        None => None,
    };
    Ok(CheckedConfig {
        store: config.store,
        key_file: config.key_file,
        mounts,
        credentials,
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
        assert!(c.credentials.is_none());
    }

    #[test]
    fn accepts_a_credentials_only_config() {
        let c = parse_config(
            "[credentials]\nsocket = \"/run/vaultfs/credentials.sock\"\n[[credentials.rule]]\nunit = \"consumer.service\"\nid = \"tok\"\nsource = \"app:/tok\"\n[[credentials.rule]]\nunit = \"app.service\"\nid = \"tok\"\nsource = \"app:/user/tok\"\nuid = 1000\n",
            "t",
        )
        .unwrap();
        assert!(c.mounts.is_empty());
        let creds = c.credentials.unwrap();
        assert_eq!(creds.rules.len(), 2);
        assert_eq!(creds.rules[0].uid, 0);
        assert_eq!(creds.rules[1].uid, 1000);
        assert_eq!(creds.rules[1].source.to_string(), "app:/user/tok");
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
            ("[credentials]\nsocket = \"rel.sock\"\n[[credentials.rule]]\nunit = \"a.service\"\nid = \"t\"\nsource = \"v:/t\"\n", "absolute"),
            ("[credentials]\nsocket = \"/run/c.sock\"\n", "no [[credentials.rule]]"),
            ("[credentials]\nsocket = \"/run/c.sock\"\n[[credentials.rule]]\nunit = \"a/b.service\"\nid = \"t\"\nsource = \"v:/t\"\n", "rule #1: unit"),
            ("[credentials]\nsocket = \"/run/c.sock\"\n[[credentials.rule]]\nunit = \"a.service\"\nid = \"t/x\"\nsource = \"v:/t\"\n", "rule #1: id"),
            ("[credentials]\nsocket = \"/run/c.sock\"\n[[credentials.rule]]\nunit = \"a.service\"\nid = \"t\"\nsource = \"v\"\n", "rule #1"),
            ("[credentials]\nsocket = \"/run/c.sock\"\n[[credentials.rule]]\nunit = \"a.service\"\nid = \"t\"\nsource = \"v:/t\"\n[[credentials.rule]]\nunit = \"a.service\"\nid = \"t\"\nsource = \"v:/u\"\n", "already has a rule"),
        ];
        for (text, want) in cases {
            let err = parse_config(text, "t").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
