//! Mirrors audit records to the journal (or stderr) as structured fields, as they commit to
//! the store's sealed log, so an existing log pipeline sees opens and denials without reading
//! the store. Optional (off unless configured) and lossy by design: the sealed log in the
//! store is the record; the mirror never blocks the audit writer (a full journal socket or
//! log queue drops the line and counts it). Never a value: a record holds none. A record's
//! path (`vault:/path`) is sent only when the admin opts in; otherwise it is left out and
//! masked in the rule text.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use vaultfs_store::AuditRecord;

use crate::config::{MirrorSpec, MirrorTarget};

/// journald's native protocol socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The environment variable that sets the mirror of a command or daemon not run by `serve`
/// (`off`, `auto`, `journal`, `stderr`), and the one that opts in to paths (`1`).
pub const ENV_MIRROR: &str = "VAULTFS_AUDIT_MIRROR";
/// See [`ENV_MIRROR`].
pub const ENV_PATHS: &str = "VAULTFS_AUDIT_MIRROR_PATHS";

/// The mirror the environment asks for, if any; a bad value is an error naming the variable.
pub fn from_env() -> anyhow::Result<Option<MirrorSpec>> {
    let Some(text) = std::env::var_os(ENV_MIRROR) else {
        return Ok(None);
    };
    let text = text.to_string_lossy();
    let Some(target) = MirrorTarget::parse(&text) else {
        crate::exit::usage!("{ENV_MIRROR}={text:?}: give off, auto, journal or stderr");
    };
    let paths = std::env::var_os(ENV_PATHS).is_some_and(|v| v == "1");
    Ok(Some(MirrorSpec { target, paths }))
}

/// Where one process's mirror writes.
enum Out {
    /// Connected at the first record, not at install: a daemon forks and closes what it
    /// inherited in between.
    Journal(OnceLock<Option<UnixDatagram>>),
    Stderr,
}

struct Mirror {
    out: Out,
    paths: bool,
    /// Records the journal did not take (its socket full or gone), reported with the next.
    lost: AtomicU64,
}

/// Installs the mirror `spec` asks for in this process (the first call wins). `journal` and
/// `auto` use the journal when its socket exists, else stderr (said once, on stderr).
pub fn install(spec: MirrorSpec) {
    let out = match spec.target {
        MirrorTarget::Off => return,
        MirrorTarget::Stderr => Out::Stderr,
        MirrorTarget::Auto | MirrorTarget::Journal => match Path::new(JOURNAL_SOCKET).exists() {
            true => Out::Journal(OnceLock::new()),
            false => {
                if spec.target == MirrorTarget::Journal {
                    tracing::warn!(
                        "the audit mirror asks for the journal, but {JOURNAL_SOCKET} cannot be reached; mirroring to stderr"
                    );
                }
                Out::Stderr
            }
        },
    };
    let mirror = Mirror {
        out,
        paths: spec.paths,
        lost: AtomicU64::new(0),
    };
    vaultfs_store::set_audit_mirror(move |vault, record| mirror.send(vault, record));
}

fn journal() -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect(JOURNAL_SOCKET).ok()?;
    // Never wait on journald: a full socket drops the record (counted).
    sock.set_nonblocking(true).ok()?;
    Some(sock)
}

impl Mirror {
    fn send(&self, vault: &str, record: &AuditRecord) {
        let fields = fields(vault, record, self.paths);
        match &self.out {
            Out::Stderr => crate::logging::emit_plain(&logfmt(&fields)),
            Out::Journal(sock) => {
                let Some(sock) = sock.get_or_init(journal) else {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut fields = fields;
                let lost = self.lost.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    fields.push(("VAULTFS_MIRROR_LOST", lost.to_string()));
                }
                if sock.send(&native(&fields)).is_err() {
                    self.lost.fetch_add(1 + lost, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The journal fields of `record`, MESSAGE first. `VAULTFS_PATH` only when `paths`; without
/// it, the path is masked wherever it appears in the rule text.
pub fn fields(vault: &str, r: &AuditRecord, paths: bool) -> Vec<(&'static str, String)> {
    let decision = r.decision.as_deref().unwrap_or("-");
    let priority = match decision {
        "alarm" => 4, // warning
        "deny" => 5,  // notice
        _ if r.event == "lost" => 4,
        _ => 6, // info
    };
    let mask = |text: &str| -> String {
        match (&r.path, paths) {
            (Some(p), false) => {
                let mut t = text.replace(p.as_str(), "<path>");
                if let Some((_, local)) = p.split_once(':') {
                    if local.len() > 1 {
                        t = t.replace(local, "<path>");
                    }
                }
                t
            }
            _ => text.to_owned(),
        }
    };
    let mut message = format!("vaultfs audit: {} {decision} vault {vault}", r.event);
    if paths {
        if let Some(p) = &r.path {
            message = format!("vaultfs audit: {} {decision} {p}", r.event);
        }
    }
    if let Some(uid) = r.uid {
        message.push_str(&format!(" uid {uid}"));
    }
    let mut f = vec![
        ("MESSAGE", message),
        ("PRIORITY", priority.to_string()),
        ("SYSLOG_IDENTIFIER", "vaultfs-audit".to_owned()),
        ("VAULTFS_EVENT", r.event.clone()),
        ("VAULTFS_DECISION", decision.to_owned()),
        ("VAULTFS_VAULT", vault.to_owned()),
        ("VAULTFS_TIME_NS", r.t_ns.to_string()),
    ];
    let mut opt = |key: &'static str, v: Option<String>| {
        if let Some(v) = v {
            f.push((key, v));
        }
    };
    opt("VAULTFS_PATH", r.path.clone().filter(|_| paths));
    opt("VAULTFS_VERSION", r.version.map(|v| v.to_string()));
    opt("VAULTFS_UID", r.uid.map(|v| v.to_string()));
    opt("VAULTFS_GID", r.gid.map(|v| v.to_string()));
    opt("VAULTFS_PID", r.tgid.map(|v| v.to_string()));
    opt("VAULTFS_EXE", r.exe.clone());
    opt("VAULTFS_UNIT", r.unit.clone());
    opt("VAULTFS_RULE", r.rule.as_deref().map(mask));
    f
}

/// The native protocol's datagram: `KEY=value\n`, or for a value with a newline, `KEY\n`, its
/// length as 64-bit little-endian, the bytes and `\n`.
pub fn native(fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend_from_slice(k.as_bytes());
        if v.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        } else {
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// One logfmt line: `vaultfs-audit key=value ...`, MESSAGE and PRIORITY left out, keys in
/// lower case without the `VAULTFS_` prefix, values quoted when they need it.
pub fn logfmt(fields: &[(&str, String)]) -> String {
    let mut line = String::from("vaultfs-audit");
    for (k, v) in fields {
        if matches!(*k, "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER") {
            continue;
        }
        let key = k.trim_start_matches("VAULTFS_").to_ascii_lowercase();
        let plain = !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
        if plain {
            line.push_str(&format!(" {key}={v}"));
        } else {
            line.push_str(&format!(
                " {key}={}",
                serde_json::to_string(v).unwrap_or_default()
            ));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        AuditRecord {
            t_ns: 5,
            event: "open".into(),
            path: Some("pol:/app/db".into()),
            version: Some(2),
            uid: Some(1000),
            gid: Some(100),
            tgid: Some(42),
            exe: Some("/usr/bin/cat".into()),
            unit: Some("/system.slice/x.service".into()),
            decision: Some("deny".into()),
            rule: Some("no grant for /app/db".into()),
        }
    }

    #[test]
    fn paths_only_when_asked_and_masked_in_the_rule() {
        let hidden = fields("pol", &record(), false);
        let text = format!("{hidden:?}");
        assert!(!text.contains("/app/db"), "{text}");
        assert!(text.contains("\"no grant for <path>\""), "{text}");
        let shown = fields("pol", &record(), true);
        assert!(shown.contains(&("VAULTFS_PATH", "pol:/app/db".to_owned())));
        assert!(shown.contains(&("PRIORITY", "5".to_owned())));
    }

    #[test]
    fn native_frames_a_multiline_value_by_length() {
        let bytes = native(&[("A", "x".into()), ("B", "1\n2".into())]);
        assert_eq!(bytes, b"A=x\nB\n\x03\0\0\0\0\0\0\x001\n2\n");
    }

    #[test]
    fn logfmt_quotes_what_needs_it() {
        let line = logfmt(&fields("pol", &record(), false));
        assert!(
            line.starts_with("vaultfs-audit event=open decision=deny vault=pol"),
            "{line}"
        );
        assert!(line.contains(" rule=\"no grant for <path>\""), "{line}");
        assert!(
            line.contains(" uid=1000 ") && !line.contains("MESSAGE"),
            "{line}"
        );
    }
}
