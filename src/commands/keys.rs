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
    eprintln!("created store {}", path.display());
    Ok(())
}

/// `key list|add|remove`.
pub fn key(cli: &Cli, cmd: &KeyCommand) -> Result<()> {
    let mut store = credentials::open_store(cli)?;
    match cmd {
        KeyCommand::List => {
            println!("{:<4} {:<11} {:<20} ADDED", "ID", "KIND", "KDF");
            for slot in store.key_slots()? {
                let kdf = slot.kdf.map_or("-".to_owned(), |k| {
                    format!("argon2id m={}MiB t={}", k.memory_kib / 1024, k.iterations)
                });
                println!(
                    "{:<4} {:<11} {:<20} {}",
                    slot.id,
                    slot.kind,
                    kdf,
                    crate::output::format_time(slot.created_ns)
                );
            }
        }
        KeyCommand::Add {
            new_key_file,
            new_passphrase_file,
            kdf: k,
        } => {
            let cred: Credential = match (new_key_file, new_passphrase_file) {
                (Some(f), _) => credentials::key_file(f)?,
                (None, Some(f)) => credentials::passphrase_file(f)?,
                (None, None) => credentials::new_passphrase()?,
            };
            let id = store.add_key_slot(&cred, kdf(*k)?)?;
            eprintln!("added key slot {id}");
        }
        KeyCommand::Remove { id } => {
            store.remove_key_slot(*id)?;
            eprintln!("removed key slot {id}");
        }
    }
    Ok(())
}
