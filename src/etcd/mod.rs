//! A store kept in etcd (`--store etcd://HOST:PORT,.../PREFIX`): the CLI's backend and the
//! `serve` sync task. Everything that talks to etcd (the `etcd-client` crate and the tokio
//! runtime it needs) lives in this module, behind the `etcd` cargo feature, because its build
//! needs `protoc`; without the feature an etcd address fails with one line.
//!
//! etcd holds the store's rows as bundle lines (see `vaultfs_store::mirror`): ciphertext and
//! MACs only, names sealed, under `PREFIX/head` and `PREFIX/r/...`; hosts record what they
//! applied under `PREFIX/acks/HOST`.

pub mod url;

#[cfg(feature = "etcd")]
mod backend;
#[cfg(feature = "etcd")]
mod client;
#[cfg(feature = "etcd")]
mod fleet;
#[cfg(feature = "etcd")]
mod serve;
#[cfg(feature = "etcd")]
mod sync;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command, FleetCommand};
use crate::exit::UsageError;
pub use url::is_etcd;
use url::EtcdUrl;

#[cfg(feature = "etcd")]
pub use serve::{serve, HostArgs};

/// The one line for an etcd address in a build without the feature.
#[cfg_attr(feature = "etcd", allow(dead_code))]
pub const NOT_BUILT: &str =
    "this vaultfs was built without etcd support: rebuild with `cargo build --features etcd`";

/// The address of `--store`, when it is an etcd one.
pub fn url_of(cli: &Cli) -> Option<Result<EtcdUrl>> {
    let store = cli.store.as_ref()?;
    if !is_etcd(store) {
        return None;
    }
    Some(EtcdUrl::parse(&store.to_string_lossy()).map_err(|e| anyhow::Error::new(UsageError(e))))
}

/// Runs a store command against etcd when `--store` names etcd; `None` when the command runs
/// as usual (a store file, or a command that handles etcd itself).
pub fn intercept(cli: &Cli, local: impl Fn(&Cli) -> Result<ExitCode>) -> Option<Result<ExitCode>> {
    let url = match url_of(cli)? {
        Ok(u) => u,
        Err(e) => return Some(Err(e)),
    };
    let refuse = |why: &str| Some(Err(anyhow::Error::new(UsageError(why.to_owned()))));
    match &cli.command {
        Command::Serve { .. }
        | Command::Fleet { .. }
        | Command::Keygen { .. }
        | Command::Umount { .. }
        | Command::Demo { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => return None,
        Command::Mount { .. } => {
            return refuse(&format!(
                "mount reads a local store, never etcd: run `vaultfs serve --store {url} --replica PATH --config FILE` on the host"
            ))
        }
        Command::Watch { .. } | Command::Env {
            restart_on_change: true,
            ..
        } => {
            return refuse(&format!(
                "watching for changes needs a local store: point it at a host's replica of {url}"
            ))
        }
        Command::Migrate { .. } => {
            return refuse(&format!(
                "{url} is written in this vaultfs's format; there is nothing to migrate"
            ))
        }
        Command::Bundle {
            cmd: crate::cli::BundleCommand::Apply { .. },
            ..
        } => {
            return refuse(&format!(
                "a bundle is applied to a host's store file, not to {url}"
            ))
        }
        _ => {}
    }
    Some(run(cli, &url, local))
}

#[cfg(feature = "etcd")]
fn run(cli: &Cli, url: &EtcdUrl, local: impl Fn(&Cli) -> Result<ExitCode>) -> Result<ExitCode> {
    backend::run(cli, url, &options(&cli.etcd), local)
}

#[cfg(not(feature = "etcd"))]
fn run(_: &Cli, _: &EtcdUrl, _: impl Fn(&Cli) -> Result<ExitCode>) -> Result<ExitCode> {
    Err(UsageError(NOT_BUILT.into()).into())
}

/// The `VAULTFS_STATE_DIR` this process was started with, kept when a command against an etcd
/// store points it at its local copy's state: a program that `env` runs gets the user's own.
static STARTED_STATE_DIR: std::sync::OnceLock<Option<std::ffi::OsString>> =
    std::sync::OnceLock::new();

/// Remembers the state directory the process was started with (before the etcd backend
/// points it elsewhere).
#[cfg(feature = "etcd")]
fn remember_state_dir() {
    let _ = STARTED_STATE_DIR.set(std::env::var_os("VAULTFS_STATE_DIR"));
}

/// Gives a child process the state directory this process was started with, when a command
/// against an etcd store changed it for its local copy.
pub fn restore_child_env(cmd: &mut std::process::Command) {
    match STARTED_STATE_DIR.get() {
        Some(Some(dir)) => cmd.env("VAULTFS_STATE_DIR", dir),
        Some(None) => cmd.env_remove("VAULTFS_STATE_DIR"),
        None => cmd,
    };
}

/// `fleet status`.
pub fn fleet(cli: &Cli, cmd: &FleetCommand) -> Result<()> {
    let url = match url_of(cli) {
        Some(u) => u?,
        None => {
            return Err(UsageError(
                "fleet status needs the store's etcd address: --store etcd://HOST:PORT/PREFIX"
                    .into(),
            )
            .into())
        }
    };
    let FleetCommand::Status { json } = cmd;
    fleet_status(cli, &url, *json)
}

#[cfg(feature = "etcd")]
fn fleet_status(cli: &Cli, url: &EtcdUrl, json: bool) -> Result<()> {
    fleet::status(url, &options(&cli.etcd), json)
}

#[cfg(not(feature = "etcd"))]
fn fleet_status(_: &Cli, _: &EtcdUrl, _: bool) -> Result<()> {
    Err(UsageError(NOT_BUILT.into()).into())
}

/// The connection options from the command line.
#[cfg(feature = "etcd")]
fn options(a: &crate::cli::EtcdArgs) -> client::EtcdOptions {
    client::EtcdOptions {
        cacert: a.etcd_cacert.clone(),
        cert: a.etcd_cert.clone(),
        key: a.etcd_key.clone(),
        user: a.etcd_user.clone(),
        password_file: a.etcd_password_file.clone(),
        timeout: std::time::Duration::from_millis(a.etcd_timeout_ms.max(1)),
    }
}
