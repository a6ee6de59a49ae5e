//! The credential socket: systemd's `LoadCredential=ID:/path/to.sock` connects here at unit
//! start and reads the credential until the connection ends.
//!
//! systemd (systemd.exec(5)) binds its end of the connection to the abstract address
//! `\0<random>/unit/<unit>/<ID>` before connecting, so the peer address names the unit and the
//! credential, and the kernel vouches for the peer's uid (SO_PEERCRED): 0 is the system
//! manager, any other uid that user's manager. Only the root-owned system manager can claim a
//! unit for uid 0; a user can bind any abstract name, so rules for a non-zero uid trust the
//! unit name only as far as that user is trusted with their own units.
//!
//! A refusal must not look like an empty secret. An AF_UNIX stream cannot be reset the way a
//! TCP connection can (SO_LINGER 0 still ends in a clean end-of-file, because systemd sends
//! nothing that could be left unread), and systemd 252 takes end-of-file without data as an
//! empty credential and starts the unit. But it refuses a credential larger than its limit of
//! 1 MiB (systemd.exec(5): "an upper limit of 1 MiB is enforced"): the unit then fails at
//! once, `status=243/CREDENTIALS` ("Failed to set up credentials: Protocol error"). So a
//! refusal answers a systemd peer with [`refusal`]: a text line repeated past that limit,
//! which says what it is should a manager ever accept it. Peers that are not systemd (no
//! `LoadCredential=` address) are closed on without a word.
//!
//! The secret is read from the daemon's own vault readers at each request, so a rotation is
//! seen at the next unit start. Each connection is served on a short-lived thread with a write
//! timeout, and the number of connections in flight is bounded, so a client that never reads
//! or vanishes holds up nobody else.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use vaultfs_store::{Address, Entry, EntryKind, SecretBytes, VaultPath, VaultReader, ROOT_PARENT};

use crate::config::{CredentialRule, CredentialSocketSpec};

/// How long one answer may take to write before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog (never refused: a refusal would
/// fail a unit), each in-flight one being bounded by [`WRITE_TIMEOUT`].
const MAX_IN_FLIGHT: usize = 64;
/// systemd's limit on one credential (CREDENTIAL_SIZE_MAX in systemd 252; documented in
/// systemd.exec(5)). A larger answer fails the unit's start.
pub const SYSTEMD_CREDENTIAL_MAX: usize = 1024 * 1024;
/// What a refusal repeats.
pub const REFUSAL_LINE: &[u8] =
    b"vaultfs: credential refused (no rule grants it); see the vaultfs log\n";

/// The answer to a refused systemd peer: [`REFUSAL_LINE`] repeated past
/// [`SYSTEMD_CREDENTIAL_MAX`], so systemd fails the unit instead of handing it an empty file.
pub fn refusal() -> &'static [u8] {
    static TEXT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let lines = SYSTEMD_CREDENTIAL_MAX / REFUSAL_LINE.len() + 1;
        REFUSAL_LINE.repeat(lines)
    })
}

/// Who asked: what the kernel says about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The peer's uid.
    pub uid: u32,
    /// The unit named in the peer address.
    pub unit: String,
    /// The credential id named in the peer address.
    pub id: String,
}

/// Parses systemd's peer address `<random>/unit/<unit>/<ID>` (the abstract name without its
/// leading NUL). Anything else is not a `LoadCredential=` request.
pub fn parse_peer_name(name: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(name).ok()?;
    let mut parts = text.split('/');
    let (random, kind, unit, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || random.is_empty() || kind != "unit" {
        return None;
    }
    if unit.is_empty() || id.is_empty() {
        return None;
    }
    Some((unit.to_owned(), id.to_owned()))
}

/// The rule that grants `req`, if any.
pub fn find_rule<'a>(rules: &'a [CredentialRule], req: &Request) -> Option<&'a CredentialRule> {
    rules
        .iter()
        .find(|r| r.uid == req.uid && r.unit == req.unit && r.id == req.id)
}

/// The bytes a reader of `addr` gets (a template rendered from its inputs), looked up in one
/// consistent snapshot of the vault. `Ok(None)` when there is nothing to read there (missing, a
/// directory, or a template input that is missing).
pub fn read_secret(reader: &VaultReader, addr: &Address) -> Result<Option<SecretBytes>> {
    // A rewrite between the snapshot and the read makes read_value answer None: look again.
    for _ in 0..5 {
        let snap = reader.snapshot()?;
        // An expired secret is missing here as on a mount, and so is a template's input.
        let now = crate::output::now_ns();
        let Some(entry) =
            find(&snap.entries, &addr.path).filter(|e| !e.is_dir() && !e.limits.expired_at(now))
        else {
            return Ok(None);
        };
        if entry.kind != EntryKind::Template {
            if let Some(value) = reader.read_value(entry.id, entry.version)? {
                return Ok(Some(value));
            }
            continue;
        }
        let Some(template) = reader.template(entry.id, entry.version, &addr.to_string())? else {
            continue;
        };
        let mut inputs = Vec::new();
        let mut moved = false;
        for input in template.inputs() {
            let found = find(&snap.entries, &input.path)
                .filter(|e| e.kind == EntryKind::File && input.vault == addr.vault)
                .filter(|e| !e.limits.expired_at(now));
            let value = match found {
                Some(e) => reader.read_value(e.id, e.version)?,
                None => return Ok(None),
            };
            moved |= value.is_none();
            inputs.push((input.clone(), value));
        }
        if moved {
            continue;
        }
        let rendered = template.render(|a| {
            inputs
                .iter()
                .find(|(i, _)| i == a)
                .and_then(|(_, v)| v.clone())
        });
        return rendered
            .map(Some)
            .with_context(|| format!("template {addr}"));
    }
    anyhow::bail!("{addr}: changes too fast to be read")
}

/// The entry at `path` among a vault's `entries`.
fn find<'a>(entries: &'a [Entry], path: &VaultPath) -> Option<&'a Entry> {
    let mut parent = ROOT_PARENT;
    let mut found = None;
    for name in path.components() {
        let e = entries
            .iter()
            .find(|e| e.parent == parent && &e.name == name)?;
        parent = e.id;
        found = Some(e);
    }
    found
}

/// The listening socket; removes its file when dropped.
pub struct CredentialSocket {
    listener: UnixListener,
    path: PathBuf,
    rules: Vec<CredentialRule>,
    readers: HashMap<String, Arc<VaultReader>>,
}

impl Drop for CredentialSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The vaults a spec reads from, to open readers for.
pub fn vaults(spec: &CredentialSocketSpec) -> Vec<String> {
    let mut names: Vec<String> = spec.rules.iter().map(|r| r.source.vault.clone()).collect();
    names.sort();
    names.dedup();
    names
}

impl CredentialSocket {
    /// Binds the socket (replacing a stale one left by a crash), with mode 0600 unless a rule
    /// serves a user manager (then 0666: the rules and SO_PEERCRED decide, not the mode).
    pub fn bind(
        spec: &CredentialSocketSpec,
        readers: HashMap<String, Arc<VaultReader>>,
    ) -> Result<CredentialSocket> {
        let path = &spec.socket;
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            // World-traversable, like /run/systemd: the socket's own mode and the rules guard
            // it, and user managers must reach it.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .with_context(|| format!("cannot create the directory of {shown}"))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
        }
        remove_stale(path)?;
        let listener =
            UnixListener::bind(path).with_context(|| format!("cannot listen on {shown}"))?;
        let mode = if spec.rules.iter().any(|r| r.uid != 0) {
            0o666
        } else {
            0o600
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {shown}"))?;
        Ok(CredentialSocket {
            listener,
            path: path.clone(),
            rules: spec.rules.clone(),
            readers,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections until the process ends.
    pub fn run(self) {
        let shared = Arc::new(Shared {
            rules: self.rules.clone(),
            readers: self.readers.clone(),
            in_flight: AtomicUsize::new(0),
        });
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("credential socket {}: {e}", self.path.display());
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            // Each connection in flight ends within WRITE_TIMEOUT, so this wait is bounded.
            while shared.in_flight.load(Ordering::SeqCst) >= MAX_IN_FLIGHT {
                std::thread::sleep(Duration::from_millis(10));
            }
            shared.in_flight.fetch_add(1, Ordering::SeqCst);
            let worker = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("vaultfs-credential".into())
                .spawn(move || {
                    worker.serve(stream);
                    worker.in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                tracing::error!("credential socket: cannot start a thread: {e}");
            }
        }
    }
}

fn remove_stale(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display())),
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

struct Shared {
    rules: Vec<CredentialRule>,
    readers: HashMap<String, Arc<VaultReader>>,
    in_flight: AtomicUsize,
}

impl Shared {
    fn serve(&self, stream: UnixStream) {
        let uid = match peer_uid(&stream) {
            Ok(uid) => uid,
            Err(e) => {
                tracing::warn!("credential socket: cannot identify the peer: {e}");
                return;
            }
        };
        let name = peer_abstract_name(&stream);
        let Some((unit, id)) = name.as_deref().and_then(parse_peer_name) else {
            tracing::warn!(
                "credential refused: uid {uid} connected from an address that is not systemd's LoadCredential= form"
            );
            return;
        };
        let req = Request { uid, unit, id };
        let Some(rule) = find_rule(&self.rules, &req) else {
            tracing::warn!(
                "credential refused: unit {} (uid {}) asked for id {}, which no rule grants",
                req.unit,
                req.uid,
                req.id
            );
            return refuse(stream, &req);
        };
        let value = match self.readers.get(&rule.source.vault) {
            Some(reader) => read_secret(reader, &rule.source),
            None => Err(anyhow::anyhow!("vault {} is not open", rule.source.vault)),
        };
        let value = match value {
            Ok(Some(v)) => v,
            Ok(None) => {
                tracing::error!(
                    "credential refused: unit {} (uid {}) id {}: no secret at {}",
                    req.unit,
                    req.uid,
                    req.id,
                    rule.source
                );
                return refuse(stream, &req);
            }
            Err(e) => {
                tracing::error!(
                    "credential refused: unit {} (uid {}) id {}: cannot read {}: {e:#}",
                    req.unit,
                    req.uid,
                    req.id,
                    rule.source
                );
                return refuse(stream, &req);
            }
        };
        let sent = send(stream, value.expose());
        drop(value);
        match sent {
            Ok(()) => tracing::info!(
                "credential sent: unit {} (uid {}) id {} from {}",
                req.unit,
                req.uid,
                req.id,
                rule.source
            ),
            Err(e) => {
                tracing::warn!(
                    "credential not delivered: unit {} (uid {}) id {} from {}: {e}",
                    req.unit,
                    req.uid,
                    req.id,
                    rule.source
                );
            }
        }
    }
}

/// Writes `bytes` and ends the stream, within [`WRITE_TIMEOUT`] per write.
fn send(mut stream: UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.write_all(bytes)?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// Answers a systemd peer with [`refusal`], which makes systemd fail the unit's start.
fn refuse(stream: UnixStream, req: &Request) {
    if let Err(e) = send(stream, refusal()) {
        tracing::debug!(
            "refusal to unit {} (uid {}) id {} not delivered: {e}",
            req.unit,
            req.uid,
            req.id
        );
    }
}

fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(cred.uid())
}

/// The peer's abstract address (without the leading NUL), if it has one.
fn peer_abstract_name(stream: &UnixStream) -> Option<Vec<u8>> {
    use std::os::linux::net::SocketAddrExt;
    let addr = stream.peer_addr().ok()?;
    addr.as_abstract_name().map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_systemds_peer_address() {
        assert_eq!(
            parse_peer_name(b"3a5c2e1f0b9d8c7a/unit/consumer.service/tok"),
            Some(("consumer.service".into(), "tok".into()))
        );
        for bad in [
            &b"3a5c/unit/consumer.service"[..],
            b"3a5c/unit/a.service/tok/x",
            b"3a5c/user/a.service/tok",
            b"/unit/a.service/tok",
            b"3a5c/unit//tok",
            b"3a5c/unit/a.service/",
            b"\xff/unit/a.service/tok",
        ] {
            assert_eq!(parse_peer_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_rule_must_match_uid_unit_and_id() {
        let rules = vec![CredentialRule {
            uid: 1000,
            unit: "app.service".into(),
            id: "tok".into(),
            source: Address::parse("v:/t").unwrap(),
        }];
        let req = |uid: u32, unit: &str, id: &str| Request {
            uid,
            unit: unit.into(),
            id: id.into(),
        };
        assert!(find_rule(&rules, &req(1000, "app.service", "tok")).is_some());
        assert!(find_rule(&rules, &req(0, "app.service", "tok")).is_none());
        assert!(find_rule(&rules, &req(1000, "other.service", "tok")).is_none());
        assert!(find_rule(&rules, &req(1000, "app.service", "key")).is_none());
    }

    #[test]
    fn a_refusal_is_over_systemds_limit_and_says_what_it_is() {
        let r = refusal();
        assert!(r.len() > SYSTEMD_CREDENTIAL_MAX);
        assert!(r.starts_with(REFUSAL_LINE));
        assert!(r.chunks(REFUSAL_LINE.len()).all(|c| c == REFUSAL_LINE));
    }
}
