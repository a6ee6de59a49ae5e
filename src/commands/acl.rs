//! `acl show|set`.

use anyhow::Result;
use vaultfs_store::{projected_mode, AclOverride, AclSource, Address, Inherited};

use crate::cli::{AclCommand, Cli};
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
            };
            if change.is_empty() {
                crate::exit::usage!("nothing to set: give --owner, --group or --mode");
            }
            output::warn_unresolved(change.owner.as_deref(), change.group.as_deref());
            let mut store = credentials::open_store(cli)?;
            store.set_acl(&addr, &change)?;
        }
    }
    Ok(())
}
