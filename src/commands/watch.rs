//! `watch ADDR... -- CMD`: run a command after each change of secrets, for systems without
//! systemd (with systemd, `serve`'s on-change actions do this).

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Result;
use vaultfs_store::Address;

use crate::cli::Cli;
use crate::credentials;
use crate::hygiene;
use crate::watch::{poll_change, Coalescer, Fingerprinter, WatchArgs, Watched};

/// Watches `addresses` and runs `command` after each change of their bytes; never returns
/// but on an error at start.
pub fn watch(
    cli: &Cli,
    addresses: &[String],
    timing: &WatchArgs,
    command: &[String],
) -> Result<()> {
    let addrs = addresses
        .iter()
        .map(|a| Address::parse(a))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // A long-lived process holding keys: keep its pages out of swap.
    hygiene::lock_memory();
    let store = credentials::open_store(cli)?;
    let mut watched = Watched::new(store, addrs)?;
    let fp = Fingerprinter::new()?;
    let mut last = watched.fingerprint(&fp)?;
    let mut owed = Coalescer::new(timing.quiet());
    let (program, args) = command.split_first().expect("clap requires a command");
    tracing::info!("watching {} address(es)", addresses.len());
    loop {
        std::thread::sleep(timing.poll());
        if poll_change(&mut watched, &mut last, |w| w.fingerprint(&fp)) {
            tracing::info!("a watched secret changed");
            owed.changed(Instant::now());
        }
        if !owed.due(Instant::now()) {
            continue;
        }
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => {
                tracing::info!("ran {program:?} after a change");
                owed.succeeded();
            }
            Ok(s) => {
                let (n, delay) = owed.failed(Instant::now());
                tracing::warn!("{program:?} failed ({s}), attempt {n}; retrying in {delay:?}");
            }
            Err(e) => {
                let (n, delay) = owed.failed(Instant::now());
                tracing::warn!("cannot run {program:?} ({e}), attempt {n}; retrying in {delay:?}");
            }
        }
    }
}
