//! `vaultfs`: the command-line front end. The store and the FUSE driver live in their own
//! crates (`vaultfs-store`, `vaultfs-fs`); this binary parses arguments, gathers credentials,
//! adds context to errors and maps them to exit codes.
//!
//! System calls go through `nix`'s safe wrappers; the one `unsafe` call left is `fork`, in
//! `daemon/fork.rs`, which says why it is sound.
#![deny(unsafe_code)]

mod cli;
mod commands;
mod config;
mod credentials;
mod daemon;
mod exit;
mod hygiene;
mod mounts;
mod output;
mod tty;
mod when;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    use commands::*;
    let done = match &cli.command {
        Command::Keygen { file } => keys::keygen(file),
        Command::Init { kdf, .. } => keys::init(cli, *kdf),
        Command::Key { cmd, .. } => keys::key(cli, cmd),
        Command::Vault { cmd, .. } => vaults::vault(cli, cmd),
        Command::Write {
            address,
            allow_empty,
            limits,
            ..
        } => secrets::write(cli, address, *allow_empty, limits),
        Command::Cat { address, .. } => secrets::cat(cli, address),
        Command::Import { dir, address, .. } => secrets::import(cli, dir, address),
        Command::Ls {
            long,
            json,
            address,
            expired,
            ..
        } => secrets::ls(cli, address, *long, *json, *expired),
        Command::Gc { .. } => secrets::gc(cli),
        Command::Audit { args, .. } => audit::audit(cli, args),
        Command::Wrap { address, ttl, .. } => secrets::wrap(cli, address, ttl),
        Command::Unwrap { token, .. } => secrets::unwrap(cli, token),
        Command::Rm {
            recursive, address, ..
        } => secrets::rm(cli, address, *recursive),
        Command::Mv { from, to, .. } => secrets::mv(cli, from, to),
        Command::Mkdir {
            parents, address, ..
        } => secrets::mkdir(cli, address, *parents),
        Command::Acl { cmd, .. } => acl::acl(cli, cmd),
        Command::Template { cmd, .. } => template::template(cli, cmd),
        Command::Env {
            secrets,
            raw,
            command,
            ..
        } => env::env(cli, secrets, *raw, command),
        Command::Mount {
            source,
            mountpoint,
            foreground,
            log_file,
            open_timeout_ms,
            ..
        } => {
            let timeout = std::time::Duration::from_millis(*open_timeout_ms);
            return mount::mount(
                cli,
                source,
                mountpoint,
                *foreground,
                log_file.as_deref(),
                timeout,
            );
        }
        Command::Umount { mountpoint } => mount::umount(mountpoint),
        Command::Serve { config, check, .. } => serve::serve(cli, config, *check),
        Command::Demo { keep, dir } => demo::demo(dir.as_deref(), *keep),
        Command::Completions { shell } => docs::completions(*shell),
        Command::Man { command } => docs::man(command.as_deref()),
        Command::Migrate { .. } => commands::migrate::migrate(cli),
    };
    done.map(|()| exit::Exit::Success.into())
}

/// Logs go to stderr, at `warn` unless `VAULTFS_LOG` says otherwise. No log line ever holds a
/// secret's value: the store's types redact themselves in Debug output. fuser's own records
/// are kept to errors: at debug it names every file looked up, and it warns about unmounting
/// a filesystem that `umount` already took away.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VAULTFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    hygiene::harden_process();
    init_logging();
    let mut cli = Cli::parse();
    cli.absorb_store_args();
    match run(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vaultfs: {err:#}");
            exit::Exit::of(&err).into()
        }
    }
}
