//! `vault create|list|remove`.

use anyhow::Result;
use vaultfs_store::{parse_mode, VaultAcl};

use crate::cli::{Cli, VaultCommand};
use crate::credentials;
use crate::exit::usage;
use crate::output;

/// Parses `--mode`, with a usage error naming the bad value.
pub fn mode_arg(text: &str) -> Result<u16> {
    match parse_mode(text) {
        Some(m) => Ok(m),
        None => {
            usage!("invalid mode {text:?}: expected octal permission bits such as 0400 or 0640")
        }
    }
}

/// `vault ...`.
pub fn vault(cli: &Cli, cmd: &VaultCommand) -> Result<()> {
    let mut store = credentials::open_store(cli)?;
    match cmd {
        VaultCommand::Create {
            name,
            owner,
            group,
            mode,
        } => {
            crate::commands::acl::reject_empty("--owner", owner.as_deref())?;
            crate::commands::acl::reject_empty("--group", group.as_deref())?;
            let (uid, gid) = (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            );
            let acl = VaultAcl {
                owner: owner
                    .clone()
                    .or_else(|| vaultfs_fs::nss::user_name(uid))
                    .unwrap_or_else(|| uid.to_string()),
                group: group
                    .clone()
                    .or_else(|| vaultfs_fs::nss::group_name(gid))
                    .unwrap_or_else(|| gid.to_string()),
                mode: mode_arg(mode)?,
            };
            output::warn_unresolved(Some(&acl.owner), Some(&acl.group));
            let info = store.create_vault(name, acl)?;
            eprintln!(
                "created vault {} (owner {}, group {}, mode {:04o})",
                info.name, info.acl.owner, info.acl.group, info.acl.mode
            );
        }
        VaultCommand::List { json } => {
            let vaults = store.list_vaults()?;
            if *json {
                let items = vaults
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "name": v.name,
                            "owner": v.acl.owner,
                            "group": v.acl.group,
                            "mode": format!("{:04o}", v.acl.mode),
                            "created": output::format_time(v.created_ns),
                        })
                    })
                    .collect();
                output::print_json(&serde_json::Value::Array(items));
            } else {
                let mut table =
                    output::Table::new(&["NAME", "OWNER", "GROUP", "MODE", "CREATED (UTC)"]);
                for v in &vaults {
                    table.row(vec![
                        v.name.clone(),
                        v.acl.owner.clone(),
                        v.acl.group.clone(),
                        format!("{:04o}", v.acl.mode),
                        output::format_time(v.created_ns),
                    ]);
                }
                table.print();
            }
        }
        VaultCommand::Remove { name, force, yes } => {
            confirm_unmounted(&credentials::store_path(cli), name, *yes)?;
            store.remove_vault(name, *force)?;
            eprintln!("removed vault {name}");
        }
    }
    Ok(())
}

/// A vault removed under a live mount leaves that mount serving an empty tree, and a vault
/// re-created under the same name has a new key, which an old mount cannot read. So removing
/// a mounted vault takes a yes: `--yes`, or an answer on the terminal. Without a terminal and
/// without `--yes` it is refused, as apt and systemctl refuse to guess.
fn confirm_unmounted(store: &std::path::Path, name: &str, yes: bool) -> Result<()> {
    let mounted = crate::mounts::of_vault(store, name);
    if mounted.is_empty() {
        return Ok(());
    }
    let places = mounted
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if yes {
        eprintln!("vaultfs: warning: vault {name} is mounted at {places}; those mounts now serve an empty tree");
        return Ok(());
    }
    let Some(answer) = crate::tty::ask(&format!(
        "vault {name} is mounted at {places}; its mounts will serve an empty tree. Remove it? [y/N] "
    )) else {
        usage!("vault {name} is mounted at {places} on this host; pass --yes to remove it anyway (its mounts then serve an empty tree)");
    };
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        usage!("vault {name} was not removed");
    }
    Ok(())
}
