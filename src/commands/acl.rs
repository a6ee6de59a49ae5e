//! `acl show|set`.

use anyhow::Result;
use vaultfs_store::{projected_mode, AclOverride, AclSource, Address, Grant, Inherited, Principal};

use crate::cli::{AclCommand, Cli, GrantArgs};
use crate::commands::vaults::mode_arg;
use crate::credentials;
use crate::output;

fn source(addr: &Address, s: &AclSource) -> String {
    match s {
        AclSource::Vault => format!("vault {} default", addr.vault),
        AclSource::Entry(p) if *p == addr.path => "set here".to_owned(),
        AclSource::Entry(p) => format!("inherited from {}:{p}", addr.vault),
    }
}

fn show_line<T: std::fmt::Display>(label: &str, addr: &Address, v: &Inherited<T>) {
    println!(
        "{label:<6} {:<12} ({})",
        v.value.to_string(),
        source(addr, &v.source)
    );
}

/// An empty user or group name would be stored and then resolve to nobody on every host.
pub fn reject_empty(flag: &str, value: Option<&str>) -> Result<()> {
    if value.is_some_and(|v| v.trim().is_empty()) {
        crate::exit::usage!("{flag} is empty: give a user or group name (or leave the option out to keep the current one)");
    }
    Ok(())
}

/// The grant `args` describe, checked: names not empty, a unit that is a unit, an absolute exe.
fn grant_of(args: &GrantArgs) -> Result<(Address, Grant)> {
    let addr = Address::parse(&args.address)?;
    if addr.path.is_root() {
        crate::exit::usage!("{addr}: grants are set on a directory or a secret, not on a vault's root; put the vault's secrets in a directory and grant that");
    }
    reject_empty("--user", args.user.as_deref())?;
    reject_empty("--group", args.group.as_deref())?;
    let principal = match (&args.user, &args.group) {
        (Some(u), None) => Principal::User(u.clone()),
        (None, Some(g)) => Principal::Group(g.clone()),
        _ => crate::exit::usage!("{addr}: give exactly one of --user and --group"),
    };
    if let Some(unit) = &args.unit {
        let ok = if unit.starts_with('/') {
            !unit.contains("/../") && !unit.ends_with("/..")
        } else {
            !unit.contains('/') && unit.contains('.')
        };
        if !ok || unit.trim().is_empty() {
            crate::exit::usage!("{addr}: --unit {unit:?} is neither a unit name (nginx.service) nor a cgroup path (/system.slice/nginx.service)");
        }
    }
    if let Some(exe) = &args.exe {
        if !exe.starts_with('/') {
            crate::exit::usage!("{addr}: --exe {exe:?} is not an absolute path");
        }
        if std::fs::metadata(exe).is_err() {
            eprintln!("warning: {exe} does not exist on this host: the grant matches no process here until it does");
        }
    }
    Ok((
        addr,
        Grant {
            principal,
            unit: args.unit.clone(),
            exe: args.exe.clone(),
        },
    ))
}

/// `acl ...`.
pub fn acl(cli: &Cli, cmd: &AclCommand) -> Result<()> {
    match cmd {
        AclCommand::Show { address, json } => {
            let addr = Address::parse(address)?;
            let store = credentials::open_store(cli)?;
            let acl = store.effective_acl(&addr)?;
            let is_dir = match store.stat(&addr)? {
                Some(l) => l.entry.is_dir(),
                None => true,
            };
            if *json {
                let field = |value: String, from: &AclSource| serde_json::json!({ "value": value, "from": source(&addr, from) });
                output::print_json(&serde_json::json!({
                    "address": addr.to_string(),
                    "kind": if is_dir { "dir" } else { "secret" },
                    "owner": field(acl.owner.value.clone(), &acl.owner.source),
                    "group": field(acl.group.value.clone(), &acl.group.source),
                    "mode": field(format!("{:04o}", acl.mode.value), &acl.mode.source),
                    "shown": output::mode_string(projected_mode(acl.mode.value, is_dir), is_dir),
                    "limits": store.stat(&addr)?.map(|l| serde_json::json!({
                        "expires_ns": l.entry.limits.expires_ns,
                        "max_opens": l.entry.limits.max_opens,
                    })),
                    "grants": acl.grants.iter().map(|g| serde_json::json!({
                        "user": match &g.value.principal { Principal::User(u) => Some(u), _ => None },
                        "group": match &g.value.principal { Principal::Group(n) => Some(n), _ => None },
                        "unit": g.value.unit,
                        "exe": g.value.exe,
                        "from": source(&addr, &g.source),
                    })).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            println!("{addr}");
            show_line("owner", &addr, &acl.owner);
            show_line("group", &addr, &acl.group);
            let mode = Inherited {
                value: format!("{:04o}", acl.mode.value),
                source: acl.mode.source.clone(),
            };
            show_line("mode", &addr, &mode);
            println!(
                "shown  {} {}",
                output::mode_string(projected_mode(acl.mode.value, is_dir), is_dir),
                if is_dir {
                    "(directory: x wherever r)"
                } else {
                    "(secret)"
                }
            );
            if let Some(l) = store.stat(&addr)? {
                let text = output::limits_text(&l.entry.limits);
                if !text.is_empty() {
                    println!("limits {text}");
                }
            }
            for g in &acl.grants {
                println!("grant  {} ({})", g.value, source(&addr, &g.source));
            }
        }
        AclCommand::Unset {
            address,
            owner,
            group,
            mode,
        } => {
            let addr = Address::parse(address)?;
            let all = !(*owner || *group || *mode);
            let which = vaultfs_store::AclFields {
                owner: *owner || all,
                group: *group || all,
                mode: *mode || all,
            };
            let mut store = credentials::open_store(cli)?;
            store.unset_acl(&addr, which)?;
        }
        AclCommand::Set {
            address,
            owner,
            group,
            mode,
        } => {
            let addr = Address::parse(address)?;
            reject_empty("--owner", owner.as_deref())?;
            reject_empty("--group", group.as_deref())?;
            let change = AclOverride {
                owner: owner.clone(),
                group: group.clone(),
                mode: mode.as_deref().map(mode_arg).transpose()?,
                ..AclOverride::default()
            };
            if change.is_empty() {
                crate::exit::usage!("nothing to set: give --owner, --group or --mode");
            }
            output::warn_unresolved(change.owner.as_deref(), change.group.as_deref());
            let mut store = credentials::open_store(cli)?;
            store.set_acl(&addr, &change)?;
            crate::commands::audit::record(
                &mut store,
                &addr,
                "acl",
                None,
                format!("set {change:?}"),
            );
        }
        AclCommand::Grant(args) => {
            let (addr, grant) = grant_of(args)?;
            let names = match &grant.principal {
                Principal::User(u) => (Some(u.as_str()), None),
                Principal::Group(g) => (None, Some(g.as_str())),
            };
            output::warn_unresolved(names.0, names.1);
            let mut store = credentials::open_store(cli)?;
            if store.grant(&addr, &grant)? {
                crate::commands::audit::record(
                    &mut store,
                    &addr,
                    "acl",
                    None,
                    format!("grant {grant}"),
                );
            } else {
                eprintln!("{addr}: already granted: {grant}");
            }
        }
        AclCommand::Limit(args) => crate::commands::limit::limit(cli, args)?,
        AclCommand::Revoke(args) => {
            let (addr, grant) = grant_of(args)?;
            let mut store = credentials::open_store(cli)?;
            if store.revoke(&addr, &grant)? {
                crate::commands::audit::record(
                    &mut store,
                    &addr,
                    "acl",
                    None,
                    format!("revoke {grant}"),
                );
            } else {
                let inherited = store
                    .effective_acl(&addr)?
                    .grants
                    .into_iter()
                    .find(|g| g.value == grant);
                match inherited {
                    Some(g) => crate::exit::usage!(
                        "{addr}: {grant} is {}; revoke it there",
                        source(&addr, &g.source)
                    ),
                    None => crate::exit::usage!("{addr}: no such grant: {grant}"),
                }
            }
        }
    }
    Ok(())
}
