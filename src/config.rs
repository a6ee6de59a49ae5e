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
    /// Let the kernel check access and skip opens (`kernel_checks = true`).
    pub kernel_checks: bool,
    /// What to do when the bytes under this mount change (empty: nothing).
    pub actions: Vec<ActionSpec>,
    /// How long changes must stay quiet before the actions run.
    pub quiet_period: std::time::Duration,
}

/// The quiet window of on-change actions unless `quiet_period_ms` says otherwise.
pub const DEFAULT_QUIET_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// One on-change action: what it watches and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// The vault path watched: a secret, a template or a directory (everything under it);
    /// the mount's source path for a mount-wide action.
    pub path: vaultfs_store::VaultPath,
    /// What the action does.
    pub kind: ActionKind,
    /// Where the action was configured (mount #N, or mount #N on_change #M), for messages.
    pub origin: String,
}

/// What an action does when its watched bytes changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    /// `systemctl try-restart` (`reload: false`) or `try-reload-or-restart` (`reload: true`);
    /// `user`: that user's service manager (`--user -M USER@`).
    Units {
        /// The full unit names.
        units: Vec<String>,
        /// Reload rather than restart.
        reload: bool,
        /// A user manager's user, or `None` for the system manager.
        user: Option<String>,
    },
    /// A signal to a unit's main process (`systemctl kill --kill-whom=main`).
    SignalUnit {
        /// The full unit name.
        unit: String,
        /// The signal's name without `SIG` (e.g. `HUP`).
        signal: String,
        /// A user manager's user, or `None` for the system manager.
        user: Option<String>,
    },
    /// A signal to the process whose pid a file holds.
    SignalPidfile {
        /// The pid file (absolute).
        pidfile: PathBuf,
        /// The signal's name without `SIG`.
        signal: String,
    },
    /// A command (argv, not a shell line): a transient unit under systemd, else a child.
    Exec {
        /// The program and its arguments.
        argv: Vec<String>,
    },
}

impl ActionKind {
    /// The units this action names, with the user whose manager runs them.
    pub fn units(&self) -> Vec<(&str, Option<&str>)> {
        match self {
            ActionKind::Units { units, user, .. } => units
                .iter()
                .map(|u| (u.as_str(), user.as_deref()))
                .collect(),
            ActionKind::SignalUnit { unit, user, .. } => vec![(unit.as_str(), user.as_deref())],
            _ => Vec::new(),
        }
    }
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
    /// For a store in etcd: see [`FleetConfig`] (inline, since `deny_unknown_fields` and
    /// `flatten` do not mix).
    replica: Option<PathBuf>,
    host: Option<String>,
    identity: Option<PathBuf>,
    etcd_cacert: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    etcd_user: Option<String>,
    etcd_password_file: Option<PathBuf>,
    #[serde(rename = "mount", default)]
    mounts: Vec<MountConfig>,
    /// The credential socket for systemd's `LoadCredential=`.
    credentials: Option<CredentialsConfig>,
    /// Mirroring of the audit log to the journal or stderr.
    audit: Option<AuditConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditConfig {
    /// `off`, `auto` (the journal when its socket exists, else stderr), `journal`, `stderr`.
    mirror: String,
    /// Whether mirrored records name the secret's path (off unless asked).
    #[serde(default)]
    mirror_paths: bool,
}

/// Where audit records are mirrored as they commit, besides the store's sealed log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorTarget {
    /// Nowhere.
    Off,
    /// The journal when its socket exists, else stderr.
    Auto,
    /// The journal (native protocol); stderr when its socket is missing.
    Journal,
    /// stderr, one logfmt line per record.
    Stderr,
}

impl MirrorTarget {
    /// Parses `off`, `auto`, `journal` or `stderr`.
    pub fn parse(text: &str) -> Option<MirrorTarget> {
        Some(match text {
            "off" => MirrorTarget::Off,
            "auto" => MirrorTarget::Auto,
            "journal" => MirrorTarget::Journal,
            "stderr" => MirrorTarget::Stderr,
            _ => return None,
        })
    }
}

/// The audit mirror a config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorSpec {
    /// Where.
    pub target: MirrorTarget,
    /// Whether records name the secret's path.
    pub paths: bool,
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
    /// The kernel checks access and opens never reach the daemon.
    #[serde(default)]
    kernel_checks: bool,
    /// Units restarted when anything under the mount changes.
    restart_units: Option<Vec<String>>,
    /// Units reloaded (or restarted) when anything under the mount changes.
    reload_units: Option<Vec<String>>,
    /// A signal sent when anything under the mount changes.
    signal: Option<SignalConfig>,
    /// A command run when anything under the mount changes.
    exec: Option<Vec<String>>,
    /// The user whose service manager runs the units named here (`systemctl --user`).
    user: Option<String>,
    /// Milliseconds changes must stay quiet before actions run.
    quiet_period_ms: Option<u64>,
    /// Actions for one secret, template or directory under the mount.
    #[serde(default)]
    on_change: Vec<OnChangeConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnChangeConfig {
    /// The vault path watched (`/tls/cert.pem`), at or under the mount's source.
    path: String,
    restart_units: Option<Vec<String>>,
    reload_units: Option<Vec<String>>,
    signal: Option<SignalConfig>,
    exec: Option<Vec<String>>,
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalConfig {
    /// The unit whose main process gets the signal.
    unit: Option<String>,
    /// Or the file holding the pid that gets it.
    pidfile: Option<PathBuf>,
    /// `HUP`, `SIGHUP`, `USR1`, ...
    signal: String,
}

/// The signals an action may send (names without `SIG`).
pub const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "USR1", "USR2", "TERM", "CONT", "STOP", "TSTP", "WINCH", "ALRM", "KILL",
];

/// The action fields shared by a mount and its `on_change` tables.
struct ActionFields<'a> {
    restart_units: &'a Option<Vec<String>>,
    reload_units: &'a Option<Vec<String>>,
    signal: &'a Option<SignalConfig>,
    exec: &'a Option<Vec<String>>,
    user: &'a Option<String>,
}

/// Whether `name` is a full unit name systemctl would take (`app.service`, `a@b.timer`).
fn valid_unit(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".service",
        ".socket",
        ".target",
        ".timer",
        ".path",
        ".mount",
        ".automount",
        ".swap",
        ".slice",
        ".scope",
        ".device",
    ];
    valid_component(name)
        && !name.starts_with('-')
        && SUFFIXES
            .iter()
            .any(|s| name.len() > s.len() && name.ends_with(s))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

/// Whether `name` is a user name we may hand to `systemctl -M NAME@`.
fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Checks one block of action fields and appends its actions, watching `path`.
fn check_actions(
    fields: ActionFields<'_>,
    path: &vaultfs_store::VaultPath,
    which: &str,
    out: &mut Vec<ActionSpec>,
) -> Result<(), ConfigError> {
    let fail = |msg: String| Err(ConfigError(msg));
    let user = match fields.user {
        Some(u) if !valid_user(u) => {
            return fail(format!("{which}: user {u:?} is not a user name"))
        }
        Some(u) => Some(u.clone()),
        None => None,
    };
    let mut push = |kind: ActionKind| {
        out.push(ActionSpec {
            path: path.clone(),
            kind,
            origin: which.to_owned(),
        })
    };
    let mut names_units = false;
    for (key, list, reload) in [
        ("restart_units", fields.restart_units, false),
        ("reload_units", fields.reload_units, true),
    ] {
        let Some(units) = list else { continue };
        if units.is_empty() {
            return fail(format!("{which}: {key} is empty"));
        }
        if let Some(bad) = units.iter().find(|u| !valid_unit(u)) {
            return fail(format!(
                "{which}: {key}: {bad:?} is not a full unit name (e.g. \"app.service\")"
            ));
        }
        names_units = true;
        push(ActionKind::Units {
            units: units.clone(),
            reload,
            user: user.clone(),
        });
    }
    if let Some(sig) = fields.signal {
        let name = sig.signal.trim_start_matches("SIG").to_ascii_uppercase();
        if !SIGNALS.contains(&name.as_str()) {
            return fail(format!(
                "{which}: signal {:?} is not one of {}",
                sig.signal,
                SIGNALS.join(", ")
            ));
        }
        match (&sig.unit, &sig.pidfile) {
            (Some(unit), None) => {
                if !valid_unit(unit) {
                    return fail(format!(
                        "{which}: signal: unit {unit:?} is not a full unit name (e.g. \"app.service\")"
                    ));
                }
                names_units = true;
                push(ActionKind::SignalUnit {
                    unit: unit.clone(),
                    signal: name,
                    user: user.clone(),
                });
            }
            (None, Some(pidfile)) => {
                if !pidfile.is_absolute() {
                    return fail(format!(
                        "{which}: signal: pidfile {} must be absolute",
                        pidfile.display()
                    ));
                }
                push(ActionKind::SignalPidfile {
                    pidfile: pidfile.clone(),
                    signal: name,
                });
            }
            _ => {
                return fail(format!(
                    "{which}: signal needs exactly one of unit = \"...\" or pidfile = \"...\""
                ))
            }
        }
    }
    if let Some(argv) = fields.exec {
        match argv.first() {
            None => return fail(format!("{which}: exec is empty")),
            Some(p) if !p.starts_with('/') => {
                return fail(format!(
                    "{which}: exec: {p:?} must be an absolute path (no shell, no PATH lookup)"
                ))
            }
            Some(_) => {}
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return fail(format!("{which}: exec: an argument contains a NUL byte"));
        }
        push(ActionKind::Exec { argv: argv.clone() });
    }
    if user.is_some() && !names_units {
        return fail(format!(
            "{which}: user is set but no unit is named (it applies to restart_units, \
             reload_units and signal.unit)"
        ));
    }
    Ok(())
}

fn read_only_default() -> bool {
    true
}

/// A host of a store kept in etcd (`store = "etcd://..."`): where its replica is, its name
/// and key, and how to reach etcd. `--replica`, `--host`, `--identity` and the `--etcd-*`
/// options win over these.
#[derive(Debug, Default, Clone)]
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub struct FleetConfig {
    /// The local replica the mounts read.
    pub replica: Option<PathBuf>,
    /// This host's name under `acks/` (default: the hostname).
    pub host: Option<String>,
    /// The host key that opens its slot.
    pub identity: Option<PathBuf>,
    /// CA certificate for `etcds://`.
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate.
    pub etcd_cert: Option<PathBuf>,
    /// Its key.
    pub etcd_key: Option<PathBuf>,
    /// etcd user.
    pub etcd_user: Option<String>,
    /// File holding that user's password.
    pub etcd_password_file: Option<PathBuf>,
}

/// A config checked for everything that can be checked without the store.
#[derive(Debug)]
pub struct CheckedConfig {
    /// The store, if the config names one.
    pub store: Option<PathBuf>,
    /// The key file, if the config names one.
    pub key_file: Option<PathBuf>,
    /// Replica, host and etcd settings, for a store in etcd.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fleet: FleetConfig,
    /// The mounts, in order.
    pub mounts: Vec<MountSpec>,
    /// The credential socket, if the config has a `[credentials]` section.
    pub credentials: Option<CredentialSocketSpec>,
    /// The audit mirror, if the config has an `[audit]` section.
    pub audit_mirror: Option<MirrorSpec>,
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
        let quiet_period = match m.quiet_period_ms {
            None => DEFAULT_QUIET_PERIOD,
            Some(ms @ 0..=3_600_000) => std::time::Duration::from_millis(ms),
            Some(ms) => {
                return fail(format!(
                    "{which}: quiet_period_ms = {ms} is out of range (0 to 3600000)"
                ))
            }
        };
        let mut actions = Vec::new();
        let fields = ActionFields {
            restart_units: &m.restart_units,
            reload_units: &m.reload_units,
            signal: &m.signal,
            exec: &m.exec,
            user: &m.user,
        };
        check_actions(fields, &source.path, &which, &mut actions)?;
        for (j, c) in m.on_change.iter().enumerate() {
            let here = format!("{which} on_change #{}", j + 1);
            let path = match vaultfs_store::VaultPath::parse(&c.path, &c.path) {
                Ok(p) => p,
                Err(e) => return fail(format!("{here}: path {:?}: {e}", c.path)),
            };
            if !path.starts_with(&source.path) {
                return fail(format!(
                    "{here}: path {path} is not under the mount's source {source}"
                ));
            }
            let before = actions.len();
            let fields = ActionFields {
                restart_units: &c.restart_units,
                reload_units: &c.reload_units,
                signal: &c.signal,
                exec: &c.exec,
                user: &c.user,
            };
            check_actions(fields, &path, &here, &mut actions)?;
            if actions.len() == before {
                return fail(format!(
                    "{here}: no action (restart_units, reload_units, signal or exec)"
                ));
            }
        }
        mounts.push(MountSpec {
            source,
            // Without a trailing slash, as `vaultfs mount` takes it.
            mountpoint: m.mountpoint.components().collect(),
            open_timeout,
            kernel_checks: m.kernel_checks,
            actions,
            quiet_period,
        });
    }
    let fleet = FleetConfig {
        replica: config.replica,
        host: config.host,
        identity: config.identity,
        etcd_cacert: config.etcd_cacert,
        etcd_cert: config.etcd_cert,
        etcd_key: config.etcd_key,
        etcd_user: config.etcd_user,
        etcd_password_file: config.etcd_password_file,
    };
    let f = &fleet;
    let store_file = config.store.as_ref().filter(|s| !crate::etcd::is_etcd(s));
    for path in [store_file, config.key_file.as_ref()]
        .into_iter()
        .chain(
            [
                &f.replica,
                &f.identity,
                &f.etcd_cacert,
                &f.etcd_cert,
                &f.etcd_key,
                &f.etcd_password_file,
            ]
            .map(Option::as_ref),
        )
        .flatten()
    {
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
    let audit_mirror = match &config.audit {
        None => None,
        Some(a) => match MirrorTarget::parse(&a.mirror) {
            Some(target) => Some(MirrorSpec {
                target,
                paths: a.mirror_paths,
            }),
            None => {
                return fail(format!(
                    "{origin}: [audit] mirror = {:?}: give \"off\", \"auto\", \"journal\" or \"stderr\"",
                    a.mirror
                ))
            }
        },
    };
    Ok(CheckedConfig {
        store: config.store,
        key_file: config.key_file,
        fleet,
        mounts,
        credentials,
        audit_mirror,
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
    fn parses_on_change_actions() {
        let c = parse_config(
            "[[mount]]\nsource = \"web:/srv\"\nmountpoint = \"/run/keys/web\"\nrestart_units = [\"a.service\", \"b@x.service\"]\nquiet_period_ms = 250\n[[mount.on_change]]\npath = \"/srv/tls/cert.pem\"\nreload_units = [\"nginx.service\"]\nsignal = { unit = \"nginx.service\", signal = \"SIGHUP\" }\nuser = \"alice\"\n[[mount.on_change]]\npath = \"/srv/tls\"\nexec = [\"/bin/true\", \"x\"]\nsignal = { pidfile = \"/run/x.pid\", signal = \"usr1\" }\n",
            "t",
        )
        .unwrap();
        let m = &c.mounts[0];
        assert_eq!(m.quiet_period, std::time::Duration::from_millis(250));
        let kinds: Vec<_> = m
            .actions
            .iter()
            .map(|a| (a.path.to_string(), a.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (
                    "/srv".into(),
                    ActionKind::Units {
                        units: vec!["a.service".into(), "b@x.service".into()],
                        reload: false,
                        user: None
                    }
                ),
                (
                    "/srv/tls/cert.pem".into(),
                    ActionKind::Units {
                        units: vec!["nginx.service".into()],
                        reload: true,
                        user: Some("alice".into())
                    }
                ),
                (
                    "/srv/tls/cert.pem".into(),
                    ActionKind::SignalUnit {
                        unit: "nginx.service".into(),
                        signal: "HUP".into(),
                        user: Some("alice".into())
                    }
                ),
                (
                    "/srv/tls".into(),
                    ActionKind::SignalPidfile {
                        pidfile: "/run/x.pid".into(),
                        signal: "USR1".into()
                    }
                ),
                (
                    "/srv/tls".into(),
                    ActionKind::Exec {
                        argv: vec!["/bin/true".into(), "x".into()]
                    }
                ),
            ]
        );
        assert!(
            m.actions[2].origin.contains("mount #1 on_change #1"),
            "{:?}",
            m.actions[2]
        );
        let plain = parse_config("[[mount]]\nsource = \"n\"\nmountpoint = \"/a\"\n", "t").unwrap();
        assert!(plain.mounts[0].actions.is_empty());
        assert_eq!(plain.mounts[0].quiet_period, DEFAULT_QUIET_PERIOD);
    }

    #[test]
    fn rejects_bad_actions_with_a_reason() {
        let m = "[[mount]]\nsource = \"v:/d\"\nmountpoint = \"/a\"\n";
        let cases = [
            ("restart_units = []\n", "restart_units is empty"),
            (
                "restart_units = [\"nginx\"]\n",
                "\"nginx\" is not a full unit name",
            ),
            ("reload_units = [\"a b.service\"]\n", "not a full unit name"),
            ("reload_units = [\"-x.service\"]\n", "not a full unit name"),
            (
                "signal = { unit = \"a.service\", signal = \"BOOM\" }\n",
                "signal \"BOOM\" is not one of",
            ),
            ("signal = { signal = \"HUP\" }\n", "exactly one of unit"),
            (
                "signal = { unit = \"a.service\", pidfile = \"/p\", signal = \"HUP\" }\n",
                "exactly one of unit",
            ),
            (
                "signal = { pidfile = \"p\", signal = \"HUP\" }\n",
                "must be absolute",
            ),
            ("exec = []\n", "exec is empty"),
            ("exec = [\"logger\"]\n", "absolute path"),
            (
                "exec = [\"/bin/x\"]\nuser = \"alice\"\n",
                "user is set but no unit",
            ),
            (
                "restart_units = [\"a.service\"]\nuser = \"a;b\"\n",
                "not a user name",
            ),
            ("quiet_period_ms = 99999999\n", "quiet_period_ms"),
            ("restart = [\"a.service\"]\n", "t:"),
            (
                "[[mount.on_change]]\npath = \"/e/x\"\nexec = [\"/bin/x\"]\n",
                "on_change #1: path /e/x is not under",
            ),
            (
                "[[mount.on_change]]\npath = \"rel\"\nexec = [\"/bin/x\"]\n",
                "on_change #1: path",
            ),
            (
                "[[mount.on_change]]\npath = \"/d/x\"\n",
                "on_change #1: no action",
            ),
        ];
        for (extra, want) in cases {
            let text = format!("{m}{extra}");
            let err = parse_config(&text, "t").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains("mount #1") || want == "t:", "{text:?}: {err}");
        }
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
