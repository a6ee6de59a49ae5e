//! `completions` and `man`: generated from the same clap definitions as `--help`, so they never
//! drift from the real command line.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::usage;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vaultfs", &mut out);
    write_stdout(&out)
}

/// Writes the man page of vaultfs, or of `command` (`vaultfs-COMMAND(1)`), to stdout.
pub fn man(command: Option<&str>) -> Result<()> {
    let mut root = Cli::command();
    root.build();
    let page = match command {
        None => root,
        Some(name) => match root.find_subcommand(name) {
            Some(sub) => sub
                .clone()
                .display_name(format!("vaultfs-{name}"))
                .version(env!("CARGO_PKG_VERSION")),
            None => usage!("no command {name:?}; see `vaultfs --help`"),
        },
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .context("cannot render the man page")?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) is not an error worth a message.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
