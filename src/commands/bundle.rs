//! `bundle export|apply|show`: sealed vaults for many hosts, committed next to their config.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use vaultfs_store::{ApplyOptions, Bundle, Credential, StoreError};

use crate::cli::{BundleCommand, Cli};
use crate::credentials;

/// `vaultfs bundle ...`
pub fn bundle(cli: &Cli, cmd: &BundleCommand) -> Result<()> {
    match cmd {
        BundleCommand::Export { vaults, for_label } => {
            let store = credentials::open_store(cli)?;
            let text = store
                .export_bundle(vaults, for_label.as_deref())
                .context("cannot export a bundle")?;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the bundle to stdout")?;
            eprintln!(
                "exported {} line(s) at store head {}",
                text.lines().count(),
                store.head()
            );
            Ok(())
        }
        BundleCommand::Apply { file, keep_newer } => apply(cli, file, *keep_newer),
        BundleCommand::Show { file } => show(cli, file),
    }
}

fn read(file: &Path) -> Result<Bundle> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read bundle {}", file.display()))?;
    Ok(Bundle::parse(&text, &file.display().to_string())?)
}

fn apply(cli: &Cli, file: &Path, keep_newer: bool) -> Result<()> {
    let bundle = read(file)?;
    let cred = credentials::unlock_credential(cli)?;
    let path = credentials::store_path(cli);
    let options = ApplyOptions {
        allow_rollback: cli.allow_rollback,
        state_dir: vaultfs_store::default_state_dir(),
    };
    match bundle.apply(&path, &cred, &options) {
        Ok(done) if done.unchanged => {
            eprintln!(
                "{}: already at head {}; nothing to do",
                path.display(),
                done.generation
            );
            Ok(())
        }
        Ok(done) => {
            eprintln!(
                "applied {} to {}: head {} -> {}, {} entr(ies) written, {} removed; vaults: {}",
                file.display(),
                path.display(),
                done.previous.map_or("none".into(), |p| p.to_string()),
                done.generation,
                done.changed,
                done.removed,
                done.vaults.join(", ")
            );
            Ok(())
        }
        Err(StoreError::Rollback { found, seen, .. }) if keep_newer => {
            eprintln!(
                "vaultfs: warning: bundle {} is older (head {found}) than this host's store (head {seen}); not applied, the newer secrets keep serving",
                file.display()
            );
            Ok(())
        }
        Err(StoreError::Rollback { found, seen, .. }) => Err(StoreError::BadBundle {
            file: file.display().to_string(),
            line: 2,
            reason: format!(
                "its head {found} is older than this host's {seen} (a rolled-back deploy would bring back revoked secrets); pass --allow-rollback to apply it anyway"
            ),
        }
        .into()),
        // It names the file and line already.
        Err(e @ StoreError::BadBundle { .. }) => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("cannot apply bundle {}", file.display())),
    }
}

fn show(cli: &Cli, file: &Path) -> Result<()> {
    let bundle = read(file)?;
    let cred: Option<Credential> =
        if cli.identity.is_some() || cli.key_file.is_some() || cli.passphrase_file.is_some() {
            Some(credentials::unlock_credential(cli)?)
        } else {
            None
        };
    let shown = bundle.show(cred.as_ref())?;
    println!("store {} at head {}", shown.store_id, shown.generation);
    for (id, name, count) in &shown.vaults {
        println!(
            "vault #{id} {}: {count} entr(ies)",
            name.as_deref()
                .unwrap_or("(sealed: the key given does not open it)")
        );
    }
    for s in &shown.slots {
        let scope = s.scope.as_ref().map_or("all".to_owned(), |ids| {
            ids.iter()
                .map(|i| format!("#{i}"))
                .collect::<Vec<_>>()
                .join(",")
        });
        println!(
            "slot {} {} {} {} scope={scope}{}",
            s.id,
            s.kind,
            s.label.as_deref().unwrap_or("-"),
            s.fingerprint,
            if s.opens {
                " (opens with the key given)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
