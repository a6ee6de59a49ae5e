//! `env`: run a command with secrets in its environment, replacing this process.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;

use anyhow::{Context, Result};
use vaultfs_store::{Address, SecretBytes, Store};

use crate::cli::Cli;
use crate::credentials;
use crate::exit::usage;

/// Whether `name` is a portable environment variable name.
fn valid_var(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Splits `VAULT:/PATH=VAR`; an `=` followed by something that is not a variable name belongs
/// to the path.
fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once('=') {
        Some((addr, var)) if valid_var(var) => (addr, Some(var)),
        _ => (spec, None),
    }
}

fn var_for(addr: &Address, name: &str) -> Result<String> {
    if !valid_var(name) {
        usage!("{addr}: {name:?} is not a valid variable name; name one with {addr}=VAR");
    }
    Ok(name.to_owned())
}

fn collect(store: &Store, spec: &str, out: &mut Vec<(String, SecretBytes)>) -> Result<()> {
    let (address, var) = split_spec(spec);
    let addr = Address::parse_entry(address)?;
    let listing = store.list(&addr)?;
    let is_single =
        listing.len() == 1 && listing[0].path == addr.path && !listing[0].entry.is_dir();
    if is_single {
        let name = var.map_or_else(
            || var_for(&addr, addr.path.file_name().unwrap_or_default()),
            |v| Ok(v.to_owned()),
        )?;
        out.push((name, store.read(&addr)?));
        return Ok(());
    }
    if var.is_some() {
        usage!("{addr} is a directory: its secrets are exported under their own names, so =VAR does not apply");
    }
    for item in listing.iter().filter(|l| l.entry.is_dir()) {
        eprintln!(
            "vaultfs: env: skipped {}:{}/ (a directory; name it to export what is in it)",
            addr.vault, item.path
        );
    }
    for item in listing.iter().filter(|l| !l.entry.is_dir()) {
        let child = Address {
            vault: addr.vault.clone(),
            path: item.path.clone(),
        };
        let name = var_for(&child, &item.entry.name)?;
        out.push((name, store.read(&child)?));
    }
    Ok(())
}

/// Drops one trailing newline, as a shell's `$(...)` does (it drops them all; one is what
/// `printf '%s\n' ... | vaultfs write` adds). Only `env` does this: a variable is text, while
/// `cat`, mounts and `import` serve bytes exactly.
fn strip_newline(value: &mut SecretBytes) {
    let v = value.expose_mut();
    if v.last() == Some(&b'\n') {
        v.pop();
    }
}

/// Reads every secret, then execs `command` with them in its environment.
pub fn env(cli: &Cli, specs: &[String], raw: bool, command: &[String]) -> Result<()> {
    let store = credentials::open_store(cli)?;
    let mut vars = Vec::new();
    for spec in specs {
        collect(&store, spec, &mut vars)?;
    }
    if !raw {
        vars.iter_mut().for_each(|(_, v)| strip_newline(v));
    }
    drop(store);
    let (program, args) = command.split_first().expect("clap requires a command");
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for (name, value) in &vars {
        if value.expose().contains(&0) {
            usage!("secret for {name} holds a NUL byte, which an environment variable cannot");
        }
        cmd.env(name, std::ffi::OsStr::from_bytes(value.expose()));
    }
    // exec only returns on failure; the secrets in `vars` are wiped as they drop.
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot run {program:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_specs() {
        assert_eq!(split_spec("a:/B=VAR"), ("a:/B", Some("VAR")));
        assert_eq!(split_spec("a:/B"), ("a:/B", None));
        assert_eq!(split_spec("a:/x=1y"), ("a:/x=1y", None));
        assert!(valid_var("_A1"));
        assert!(!valid_var("nix-tokens"));
        assert!(!valid_var(""));
    }
}
