//! `vaultfs`: the command-line front end. The store and the FUSE driver live in their own
//! crates (`vaultfs-store`, `vaultfs-fs`); this binary parses arguments, gathers credentials,
//! adds context to errors and maps them to exit codes.
//!
//! System calls go through `nix`'s safe wrappers; the one `unsafe` call left is `fork`, in
//! `daemon/fork.rs`, which says why it is sound.
#![deny(unsafe_code)]

mod actions;
mod audit_mirror;
mod cli;
mod commands;
mod config;
mod credentials;
mod credsock;
mod daemon;
mod etcd;
mod exit;
mod hygiene;
mod logging;
mod mounts;
mod output;
mod tty;
mod watch;
mod when;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    // A store in etcd: the command runs on a local copy, synced before and sent after.
    if let Some(done) = etcd::intercept(cli, run_local) {
        return done;
    }
    run_local(cli)
}

fn run_local(cli: &Cli) -> anyhow::Result<ExitCode> {
    use commands::*;
    // `serve` takes its mirror from its config first.
    if !matches!(cli.command, Command::Serve { .. }) {
        if let Some(spec) = audit_mirror::from_env()? {
            audit_mirror::install(spec);
        }
    }
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
        Command::Import {
            dir,
            address,
            age,
            age_identity,
            format,
            ..
        } => import::import(
            cli,
            dir,
            address.as_deref(),
            age,
            age_identity.as_deref(),
            format.as_deref(),
        ),
        Command::Bundle { cmd, .. } => bundle::bundle(cli, cmd),
        Command::Edit { address, .. } => edit::edit(cli, address),
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
            restart_on_change: true,
            timing,
            ..
        } => return env::env_restarting(cli, secrets, *raw, command, timing),
        Command::Env {
            secrets,
            raw,
            command,
            timing,
            ..
        } => env::env(cli, secrets, *raw, command, timing),
        Command::Watch {
            addresses,
            timing,
            command,
            ..
        } => commands::watch::watch(cli, addresses, timing, command),
        Command::Mount {
            source,
            mountpoint,
            foreground,
            log_file,
            open_timeout_ms,
            kernel_checks,
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
                *kernel_checks,
            );
        }
        Command::Umount { mountpoint } => mount::umount(mountpoint),
        Command::Serve {
            config,
            check,
            offline,
            replica,
            host,
            ..
        } => serve::serve(
            cli,
            config,
            *check,
            *offline,
            replica.as_deref(),
            host.as_deref(),
        ),
        Command::Fleet { cmd, .. } => etcd::fleet(cli, cmd),
        Command::Demo { keep, dir } => demo::demo(dir.as_deref(), *keep),
        Command::Completions { shell } => docs::completions(*shell),
        Command::Man { command } => docs::man(command.as_deref()),
        Command::Migrate { .. } => commands::migrate::migrate(cli),
    };
    done.map(|()| exit::Exit::Success.into())
}

fn main() -> ExitCode {
    hygiene::harden_process();
    let _log = logging::init();
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
