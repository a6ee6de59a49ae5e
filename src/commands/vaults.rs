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
            // SAFETY: geteuid/getegid have no preconditions.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
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
        VaultCommand::List => {
            for v in store.list_vaults()? {
                println!(
                    "{}\t{}\t{}\t{:04o}",
                    v.name, v.acl.owner, v.acl.group, v.acl.mode
                );
            }
        }
        VaultCommand::Remove { name, force } => {
            store.remove_vault(name, *force)?;
            eprintln!("removed vault {name}");
        }
    }
    Ok(())
}
