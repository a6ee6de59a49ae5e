//! `audit`: who read what and when, from the vaults' sealed, hash-chained audit logs; and the
//! records the CLI itself adds (write, acl, unwrap, gc).

use anyhow::Result;
use vaultfs_store::{Address, AuditRecord, Store};

use crate::cli::{AuditArgs, AuditCommand, Cli};
use crate::credentials;
use crate::output;

/// Appends one record of this command's own doing to the audit log of `addr`'s vault. Best
/// effort: the change is made already, so a failure to record it is reported, not fatal.
pub fn record(store: &mut Store, addr: &Address, event: &str, version: Option<i64>, rule: String) {
    let rec = of_this_process(addr, event, version, rule);
    if let Err(e) = store.audit(&addr.vault, &[rec]) {
        eprintln!("warning: {addr}: the change was made but could not be audited: {e}");
    }
}

/// A record of this command's own doing, with this process's identity.
pub fn of_this_process(
    addr: &Address,
    event: &str,
    version: Option<i64>,
    rule: String,
) -> AuditRecord {
    AuditRecord {
        t_ns: output::now_ns(),
        event: event.into(),
        path: Some(addr.to_string()),
        version,
        uid: Some(nix::unistd::getuid().as_raw()),
        gid: Some(nix::unistd::getgid().as_raw()),
        tgid: Some(std::process::id()),
        exe: std::env::current_exe()
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        unit: std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            }),
        decision: Some("allow".into()),
        rule: Some(rule),
    }
}

/// Like [`record`], for a refused action (a second unwrap).
pub fn record_denied(store: &mut Store, addr: &Address, event: &str, rule: String) {
    let rec = AuditRecord {
        t_ns: output::now_ns(),
        event: event.into(),
        path: Some(addr.to_string()),
        uid: Some(nix::unistd::getuid().as_raw()),
        gid: Some(nix::unistd::getgid().as_raw()),
        tgid: Some(std::process::id()),
        decision: Some("alarm".into()),
        rule: Some(rule),
        ..Default::default()
    };
    if let Err(e) = store.audit(&addr.vault, &[rec]) {
        eprintln!("warning: {addr}: could not audit a refused {event}: {e}");
    }
}

fn since_of(text: &str) -> Result<i64> {
    if let Some(t) = crate::when::parse_instant(text) {
        return Ok(t);
    }
    if let Some(d) = crate::when::parse_duration(text) {
        return Ok(output::now_ns() - i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    }
    crate::exit::usage!("--since {text:?}: give an RFC 3339 time (2026-12-31T00:00:00Z) or a duration back from now (1h, 7d)");
}

fn uid_of(user: &str) -> Result<u32> {
    if let Ok(n) = user.parse() {
        return Ok(n);
    }
    match vaultfs_fs::nss::user_id(user) {
        Some(u) => Ok(u),
        None => crate::exit::usage!("--user {user:?}: no such user on this host"),
    }
}

fn line(r: &AuditRecord) -> String {
    let mut out = format!(
        "{} {:<9} {:<5}",
        output::format_time(r.t_ns),
        r.event,
        r.decision.as_deref().unwrap_or("-")
    );
    if let Some(p) = &r.path {
        out.push_str(&format!(" {p}"));
    }
    if let Some(v) = r.version {
        out.push_str(&format!(" v{v}"));
    }
    if let Some(u) = r.uid {
        let name = vaultfs_fs::nss::user_name(u).unwrap_or_else(|| u.to_string());
        out.push_str(&format!(" uid={u}({name})"));
    }
    if let Some(g) = r.gid {
        out.push_str(&format!(" gid={g}"));
    }
    if let Some(t) = r.tgid {
        out.push_str(&format!(" pid={t}"));
    }
    if let Some(e) = &r.exe {
        out.push_str(&format!(" exe={e}"));
    }
    if let Some(u) = &r.unit {
        out.push_str(&format!(" unit={u}"));
    }
    if let Some(rule) = &r.rule {
        out.push_str(&format!(" rule={rule:?}"));
    }
    out
}

/// `audit ...`.
pub fn audit(cli: &Cli, args: &AuditArgs) -> Result<()> {
    let mut store = credentials::open_store(cli)?;
    let prune_vault = match &args.cmd {
        Some(AuditCommand::Prune { vault, .. }) => vault.clone(),
        None => None,
    };
    let vaults: Vec<String> = match args.vault.as_ref().or(prune_vault.as_ref()) {
        Some(v) => vec![v.clone()],
        None => match &args.path {
            Some(p) => vec![Address::parse(p)?.vault],
            None => store.list_vaults()?.into_iter().map(|v| v.name).collect(),
        },
    };
    if let Some(AuditCommand::Prune { before, .. }) = &args.cmd {
        let Some(before_ns) = crate::when::parse_instant(before) else {
            crate::exit::usage!(
                "--before {before:?} is not an RFC 3339 time such as 2026-12-31T00:00:00Z"
            );
        };
        for v in &vaults {
            let n = store.audit_prune(v, before_ns)?;
            println!("vault {v}: {n} records pruned");
        }
        return Ok(());
    }
    if args.verify {
        for v in &vaults {
            let (_, verified) = store.audit_records(v)?;
            println!(
                "vault {v}: {} records, chain intact from record {} to the head",
                verified.records, verified.first_seq
            );
            if verified.former_key > 0 {
                println!(
                    "vault {v}: records up to {} were sealed under a former vault key (the vault was created again, a mount started before a key rotation wrote them, or key rotate found the log tampered and left it) and cannot be shown or checked",
                    verified.former_key
                );
            }
        }
        return Ok(());
    }
    let path = args.path.as_deref().map(Address::parse).transpose()?;
    let uid = args.user.as_deref().map(uid_of).transpose()?;
    let since = args.since.as_deref().map(since_of).transpose()?;
    let mut shown = Vec::new();
    for v in &vaults {
        let (records, _) = store.audit_records(v)?;
        shown.extend(records.into_iter().filter(|r| {
            path.as_ref().is_none_or(|p| {
                let want = p.to_string();
                r.path.as_deref().is_some_and(|rp| {
                    rp == want || rp.starts_with(&format!("{}/", want.trim_end_matches('/')))
                })
            }) && uid.is_none_or(|u| r.uid == Some(u))
                && since.is_none_or(|t| r.t_ns >= t)
                && (!args.denied || matches!(r.decision.as_deref(), Some("deny" | "alarm")))
                && args
                    .unit
                    .as_deref()
                    .is_none_or(|u| r.unit.as_deref().is_some_and(|ru| ru.ends_with(u)))
        }));
    }
    shown.sort_by_key(|r| r.t_ns);
    if args.json {
        output::print_json(&serde_json::to_value(&shown)?);
    } else {
        output::print_lines(shown.iter().map(line));
    }
    Ok(())
}
