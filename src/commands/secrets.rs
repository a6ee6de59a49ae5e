//! `write`, `cat`, `ls`, `rm`, `mv`, `mkdir`.

use std::io::Write;

use anyhow::{Context, Result};
use vaultfs_store::{Address, MAX_SECRET_SIZE};

use crate::cli::Cli;
use crate::credentials;
use crate::output;

/// Stores stdin as the secret at `address`.
pub fn write(cli: &Cli, address: &str) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    let mut store = credentials::open_store(cli)?;
    let value = credentials::read_secret(std::io::stdin().lock(), MAX_SECRET_SIZE as u64)
        .context("reading the secret from stdin")?
        .ok_or_else(|| {
            anyhow::anyhow!("{addr}: the secret on stdin is larger than {MAX_SECRET_SIZE} bytes")
        })?;
    store.write(&addr, value.expose())?;
    Ok(())
}

/// Writes the secret at `address` to stdout.
pub fn cat(cli: &Cli, address: &str) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    let store = credentials::open_store(cli)?;
    let value = store.read(&addr)?;
    let mut out = std::io::stdout().lock();
    match out.write_all(value.expose()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A reader that stopped early (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// Lists a vault or directory.
pub fn ls(cli: &Cli, address: &str, long: bool) -> Result<()> {
    let addr = Address::parse(address)?;
    let store = credentials::open_store(cli)?;
    let listing = store.list(&addr)?;
    let mut out = std::io::stdout().lock();
    for item in &listing {
        let line = if long {
            output::long_line(item)
        } else if item.entry.is_dir() {
            format!("{}/", item.entry.name)
        } else {
            item.entry.name.clone()
        };
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(())
}

/// Removes an entry.
pub fn rm(cli: &Cli, address: &str, recursive: bool) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    credentials::open_store(cli)?.remove(&addr, recursive)?;
    Ok(())
}

/// Renames an entry.
pub fn mv(cli: &Cli, from: &str, to: &str) -> Result<()> {
    let from = Address::parse_entry(from)?;
    let to = Address::parse_entry(to)?;
    credentials::open_store(cli)?.rename(&from, &to)?;
    Ok(())
}

/// Creates a directory.
pub fn mkdir(cli: &Cli, address: &str, parents: bool) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    credentials::open_store(cli)?.mkdir(&addr, parents)?;
    Ok(())
}
