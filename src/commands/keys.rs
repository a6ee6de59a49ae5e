//! `keygen`, `init` and `key add|remove|list`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use vaultfs_store::{Credential, KdfParams, Store};

use crate::cli::{Cli, KdfArgs, KeyCommand};
use crate::credentials;
use crate::exit::usage;

fn kdf(args: KdfArgs) -> Result<KdfParams> {
    if !(8..=4096).contains(&args.kdf_memory) {
        usage!("--kdf-memory must be between 8 and 4096 MiB");
    }
    if !(1..=64).contains(&args.kdf_iterations) {
        usage!("--kdf-iterations must be between 1 and 64");
    }
    Ok(KdfParams {
        memory_kib: args.kdf_memory * 1024,
        iterations: args.kdf_iterations,
        parallelism: 1,
    })
}

/// Writes 32 random bytes, hex-encoded on one line, to a new file of mode 0600.
pub fn keygen(path: &Path) -> Result<()> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut())
        .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    let mut text = zeroize::Zeroizing::new(String::with_capacity(65));
    for b in key.iter() {
        use std::fmt::Write as _;
        let _ = write!(text, "{b:02x}");
    }
    text.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| match path.exists() {
            true => format!(
                "{}: already exists; refusing to overwrite a key",
                path.display()
            ),
            false => format!("cannot create key file {}", path.display()),
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write key file {}", path.display()))?;
    eprintln!("wrote a new key to {}", path.display());
    Ok(())
}

/// Creates the store with its first key slot.
pub fn init(cli: &Cli, args: KdfArgs) -> Result<()> {
    let path = credentials::store_path(cli);
    if path.exists() {
        return Err(vaultfs_store::StoreError::AlreadyInitialized(path).into());
    }
    credentials::check_store_dir(&path)?;
    let cred = match (&cli.key_file, &cli.passphrase_file) {
        (Some(k), _) => credentials::key_file(k)?,
        (None, Some(p)) => credentials::passphrase_file(p)?,
        (None, None) => credentials::new_passphrase()?,
    };
    Store::create(&path, &cred, kdf(args)?)?;
    // A store in etcd is created in a local copy first: name the store, not the copy.
    let shown = match &cli.store {
        Some(s) if crate::etcd::is_etcd(s) => s.clone(),
        _ => path,
    };
    eprintln!("created store {}", shown.display());
    Ok(())
}

/// `key list|add|remove`.
pub fn key(cli: &Cli, cmd: &KeyCommand) -> Result<()> {
    if let KeyCommand::Rotate { yes, kdf: k } = cmd {
        return rotate(cli, *yes, kdf(*k)?);
    }
    let mut store = credentials::open_store(cli)?;
    match cmd {
        KeyCommand::List { json } => {
            let slots = store.key_slots()?;
            let vaults = store.list_vaults()?;
            let scope_of = |slot: &vaultfs_store::SlotInfo| -> Option<Vec<String>> {
                slot.scope.as_ref().map(|ids| {
                    ids.iter()
                        .map(|id| {
                            vaults
                                .iter()
                                .find(|v| v.id == *id)
                                .map_or(format!("#{id}"), |v| v.name.clone())
                        })
                        .collect()
                })
            };
            if *json {
                let items = slots
                    .iter()
                    .map(|slot| {
                        serde_json::json!({
                            "id": slot.id,
                            "kind": slot.kind,
                            "kdf": slot.kdf.map(|k| serde_json::json!({
                                "algorithm": "argon2id",
                                "memory_mib": k.memory_kib / 1024,
                                "iterations": k.iterations,
                            })),
                            "added": crate::output::format_time(slot.created_ns),
                            "label": slot.label,
                            "recipient": slot.recipient,
                            "fingerprint": slot.fingerprint,
                            "scope": scope_of(slot),
                        })
                    })
                    .collect();
                crate::output::print_json(&serde_json::Value::Array(items));
                return Ok(());
            }
            let mut table = crate::output::Table::new(&[
                "ID",
                "KIND",
                "LABEL",
                "SCOPE",
                "FINGERPRINT",
                "KDF",
                "ADDED (UTC)",
            ])
            .right(0);
            for slot in &slots {
                let kdf = slot.kdf.map_or("-".to_owned(), |k| {
                    format!("argon2id m={}MiB t={}", k.memory_kib / 1024, k.iterations)
                });
                table.row(vec![
                    slot.id.to_string(),
                    slot.kind.clone(),
                    slot.label.clone().unwrap_or_else(|| "-".into()),
                    scope_of(slot).map_or("all".into(), |v| v.join(",")),
                    slot.fingerprint.clone().unwrap_or_else(|| "-".into()),
                    kdf,
                    crate::output::format_time(slot.created_ns),
                ]);
            }
            table.print();
        }
        KeyCommand::Add {
            recipient: Some(recipient),
            vaults,
            label,
            ..
        } => {
            let recipient = vaultfs_store::Recipient::parse(recipient)?;
            let id = store.add_recipient_slot(&recipient, vaults, label.as_deref())?;
            let scope = if vaults.is_empty() {
                "the whole store".to_owned()
            } else {
                format!("vault(s) {}", vaults.join(", "))
            };
            eprintln!(
                "added key slot {id} for {} ({}), opening {scope}",
                recipient.kind(),
                recipient.fingerprint()
            );
        }
        KeyCommand::Add {
            new_key_file,
            new_passphrase_file,
            label,
            kdf: k,
            ..
        } => {
            let cred: Credential = match (new_key_file, new_passphrase_file) {
                (Some(f), _) => credentials::key_file(f)?,
                (None, Some(f)) => credentials::passphrase_file(f)?,
                (None, None) => {
                    crate::tty::new_passphrase("--new-key-file or --new-passphrase-file")?
                }
            };
            let id = store.add_key_slot(&cred, kdf(*k)?, label.as_deref())?;
            eprintln!("added key slot {id}");
        }
        KeyCommand::Rotate { .. } => unreachable!("handled above"),
        KeyCommand::Remove { id } => {
            store.remove_key_slot(*id)?;
            eprintln!("removed key slot {id}");
            eprintln!("note: its key still opens copies of the store made before; `vaultfs key rotate` re-keys the store");
        }
    }
    Ok(())
}

/// `key rotate`: lists the slots it will remove, asks (or takes `--yes`), then re-keys.
fn rotate(cli: &Cli, yes: bool, kdf: KdfParams) -> Result<()> {
    use std::io::IsTerminal;
    let path = credentials::store_path(cli);
    credentials::require_store(&path)?;
    let cred = credentials::unlock_credential(cli)?;
    let options = vaultfs_store::OpenOptions {
        allow_rollback: cli.allow_rollback,
        ..Default::default()
    };
    let mut store = Store::open_with(&path, &cred, &options)?;
    let slots = store.key_slots()?;
    if !yes && !std::io::stdin().is_terminal() {
        let ids: Vec<String> = slots.iter().map(|s| s.id.to_string()).collect();
        usage!(
            "refusing to rotate keys without --yes (stdin is not a terminal): it replaces key slot(s) {}",
            ids.join(", ")
        );
    }
    eprintln!(
        "key rotate replaces the master key and every vault key, re-encrypts every secret, and \
         replaces these {} key slot(s) with one for the key given (host-key slots are re-wrapped, not removed):",
        slots.iter().filter(|s| s.recipient.is_none()).count()
    );
    for s in slots.iter().filter(|s| s.recipient.is_none()) {
        eprintln!(
            "  slot {} ({}{})",
            s.id,
            s.kind,
            s.label
                .as_deref()
                .map(|l| format!(", {l:?}"))
                .unwrap_or_default()
        );
    }
    if !yes {
        eprint!("continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            usage!("key rotate cancelled; nothing changed");
        }
    }
    let done = store
        .rotate_keys(&cred, kdf)
        .with_context(|| format!("cannot rotate the keys of {}", path.display()))?;
    eprintln!(
        "rotated the master key and {} vault key(s), re-encrypted {} entries; the key given is now slot {}; remount running mounts",
        done.vaults, done.entries, done.slot
    );
    eprintln!(
        "re-sealed {} audit record(s) under the new vault keys (`vaultfs audit --verify` checks them)",
        done.audit_records
    );
    for v in &done.audit_not_resealed {
        eprintln!(
            "warning: vault {v}: its audit log did not verify under the old key, so it was left sealed under it, not re-sealed; `vaultfs audit --verify` reports it as a former-key segment"
        );
    }
    if !done.rewrapped_slots.is_empty() {
        let ids: Vec<String> = done.rewrapped_slots.iter().map(|i| i.to_string()).collect();
        eprintln!(
            "re-wrapped host-key slot(s) {} to the new keys; export their bundles again",
            ids.join(", ")
        );
    }
    Ok(())
}
