//! `edit ADDR`: a secret in $EDITOR, through a file that lives only in RAM.
//!
//! The file sits in a fresh 0700 directory on a RAM filesystem ($XDG_RUNTIME_DIR, else
//! /dev/shm), is overwritten with zeros and removed with its directory afterwards, and is
//! written back only when its content changed. What this cannot prevent (README, "Editing"):
//! tmpfs pages can be swapped out, and editors may write swap, undo or backup files elsewhere;
//! TMPDIR points at the same directory to keep well-behaved ones inside it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vaultfs_store::{Address, StoreError, MAX_SECRET_SIZE};

use crate::cli::Cli;
use crate::credentials;
use crate::exit::usage;

/// tmpfs and ramfs magic numbers (statfs f_type).
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

fn on_ram(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| {
            // f_type's width differs between libcs and architectures.
            #[allow(clippy::unnecessary_cast)]
            let t = s.filesystem_type().0 as i64;
            t == TMPFS_MAGIC || t == RAMFS_MAGIC
        })
        .unwrap_or(false)
}

/// The first RAM-backed candidate directory.
fn ram_dir() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(PathBuf::from("/dev/shm")))
        .collect();
    for dir in &candidates {
        if dir.is_dir() && on_ram(dir) {
            return Ok(dir.clone());
        }
    }
    usage!(
        "no RAM filesystem to edit in ({} are not tmpfs); refusing to write the secret to disk",
        candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Removes the directory and overwrites every file in it first.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let p = e.path();
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    if m.is_file() {
                        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&p) {
                            let _ = f.write_all(&vec![0u8; m.len() as usize]);
                            let _ = f.sync_all();
                        }
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vaultfs edit ADDR`.
pub fn edit(cli: &Cli, address: &str) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    let editor = std::env::var("VISUAL")
        .ok()
        .or_else(|| std::env::var("EDITOR").ok())
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".into());
    let base = ram_dir()?;
    let mut store = credentials::open_store(cli)?;
    let old = match store.read(&addr) {
        Ok(v) => Some(v),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut rand = [0u8; 8];
    getrandom::fill(&mut rand).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let dir = base.join(format!(
        "vaultfs-edit-{}",
        rand.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let scratch = Scratch(dir);
    let name = addr
        .path
        .components()
        .last()
        .cloned()
        .unwrap_or_else(|| "secret".into());
    let file = scratch.0.join(&name);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .with_context(|| format!("cannot create {}", file.display()))?;
        if let Some(v) = &old {
            f.write_all(v.expose())?;
        }
    }
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("vaultfs-edit")
        .arg(&file)
        .env("TMPDIR", &scratch.0)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?}"))?;
    if !status.success() {
        anyhow::bail!("{addr}: the editor {editor:?} failed ({status}); nothing was written");
    }
    let f = std::fs::File::open(&file)
        .with_context(|| format!("{addr}: the edited file is gone; nothing was written"))?;
    let new = credentials::read_secret(f, MAX_SECRET_SIZE as u64)?
        .ok_or_else(|| anyhow::anyhow!("{addr}: larger than {MAX_SECRET_SIZE} bytes"))?;
    if old.as_ref().map(|o| o.expose()) == Some(new.expose()) {
        eprintln!("{addr}: unchanged");
        return Ok(());
    }
    store.write(&addr, new.expose())?;
    eprintln!("{addr}: saved");
    Ok(())
}
