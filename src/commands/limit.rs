//! `acl limit`: the expiry and read limit of a secret's current value, set after the write and
//! idempotent, so the NixOS module can apply it at every start without moving anything.

use anyhow::Result;
use vaultfs_store::{Address, Expiry, LimitChange, StoreError};

use crate::cli::{Cli, LimitSetArgs};
use crate::credentials;
use crate::output;

/// The change the options ask for, checked.
fn change_of(addr: &Address, args: &LimitSetArgs) -> Result<LimitChange> {
    let l = &args.limits;
    if !args.clear && l.expires.is_none() && l.ttl.is_none() && l.max_opens.is_none() {
        crate::exit::usage!(
            "{addr}: nothing to set: give --expires, --ttl, --max-opens or --clear"
        );
    }
    let expires = match (&l.expires, &l.ttl) {
        (Some(t), _) => match crate::when::parse_instant(t) {
            Some(at) => Expiry::At(at),
            None => crate::exit::usage!(
                "{addr}: --expires {t:?} is not an RFC 3339 time such as 2026-12-31T00:00:00Z"
            ),
        },
        (None, Some(d)) => match crate::when::parse_duration(d) {
            Some(ttl) => Expiry::AfterWrite(ttl),
            None => crate::exit::usage!(
                "{addr}: --ttl {d:?} is not a duration such as 24h, 10m or 1h30m"
            ),
        },
        (None, None) if args.clear => Expiry::Never,
        (None, None) => Expiry::Keep,
    };
    if l.max_opens == Some(0) {
        crate::exit::usage!("{addr}: --max-opens 0 would never be served; give 1 or more");
    }
    let max_opens = match l.max_opens {
        Some(n) => Some(Some(n)),
        None if args.clear => Some(None),
        None => None,
    };
    Ok(LimitChange { expires, max_opens })
}

/// `acl limit ADDR ...`.
pub fn limit(cli: &Cli, args: &LimitSetArgs) -> Result<()> {
    let addr = Address::parse_entry(&args.address)?;
    let change = change_of(&addr, args)?;
    let mut rule = vec!["limit".to_owned()];
    if args.clear {
        rule.push("--clear".into());
    }
    let l = &args.limits;
    for (flag, v) in [("--expires", &l.expires), ("--ttl", &l.ttl)] {
        if let Some(v) = v {
            rule.push(format!("{flag} {v}"));
        }
    }
    if let Some(n) = l.max_opens {
        rule.push(format!("--max-opens {n}"));
    }
    let mut store = credentials::open_store(cli)?;
    // Queued with the change: committed in its transaction, dropped when nothing changes.
    store.audit_with_next_write(
        &addr.vault,
        crate::commands::audit::of_this_process(&addr, "acl", None, rule.join(" ")),
    );
    let done = match store.set_limits(&addr, &change) {
        Err(e @ (StoreError::NotFound(_) | StoreError::NoSuchVault(_))) if args.if_exists => {
            eprintln!("{addr}: {e}; no limit set (--if-exists)");
            return Ok(());
        }
        other => other?,
    };
    let text = match output::limits_text(&done.limits) {
        t if t.is_empty() => "no limits".to_owned(),
        t => t,
    };
    if !done.changed {
        eprintln!("{addr}: already so ({text}); nothing written");
        return Ok(());
    }
    eprintln!("{addr}: {text} (version {})", done.version);
    if done
        .limits
        .expires_ns
        .is_some_and(|t| t <= output::now_ns())
    {
        eprintln!("warning: {addr}: its expiry is past: it is not served any more (vaultfs gc deletes it)");
    }
    Ok(())
}
