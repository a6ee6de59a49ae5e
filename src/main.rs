//! `vaultfs`: the command-line front end. The store and the FUSE driver live in their own
//! crates (`vaultfs-store`, `vaultfs-fs`); this binary parses arguments, gathers credentials,
//! adds context to errors and maps them to exit codes.

mod cli;
mod commands;
mod config;
mod credentials;
mod daemon;
mod exit;
mod hygiene;
mod logging;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    use commands::*;
    let done = match &cli.command {
        Command::Keygen { file } => keys::keygen(file),
        Command::Init { kdf } => keys::init(cli, *kdf),
        Command::Key(cmd) => keys::key(cli, cmd),
        Command::Vault(cmd) => vaults::vault(cli, cmd),
        Command::Write { address } => secrets::write(cli, address),
        Command::Cat { address } => secrets::cat(cli, address),
        Command::Import { dir, address } => secrets::import(cli, dir, address),
        Command::Ls { long, address } => secrets::ls(cli, address, *long),
        Command::Rm { recursive, address } => secrets::rm(cli, address, *recursive),
        Command::Mv { from, to } => secrets::mv(cli, from, to),
        Command::Mkdir { parents, address } => secrets::mkdir(cli, address, *parents),
        Command::Acl(cmd) => acl::acl(cli, cmd),
        Command::Env { secrets, command } => env::env(cli, secrets, command),
        Command::Mount {
            source,
            mountpoint,
            foreground,
            log_file,
        } => return mount::mount(cli, source, mountpoint, *foreground, log_file.as_deref()),
        Command::Umount { mountpoint } => mount::umount(mountpoint),
        Command::Serve { config, check } => serve::serve(cli, config, *check),
        Command::Demo { keep, dir } => demo::demo(dir.as_deref(), *keep),
    };
    done.map(|()| ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    hygiene::harden_process();
    let _log = logging::init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vaultfs: {err:#}");
            exit::code_for(&err)
        }
    }
}
