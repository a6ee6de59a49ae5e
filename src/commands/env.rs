//! `env`: run a command with secrets in its environment, replacing this process; or, with
//! `--restart-on-change`, as its parent, restarting it with fresh values after each change.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vaultfs_store::{Address, SecretBytes, Store};

use crate::cli::Cli;
use crate::credentials;
use crate::exit::usage;
use crate::hygiene;
use crate::watch::{self, poll_change, Coalescer, Fingerprinter, WatchArgs, Watched};

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

/// Every variable the specs name, read from `store`.
/// Without `raw`, one trailing newline of each value is dropped (see [`strip_newline`]).
fn collect_all(store: &Store, specs: &[String], raw: bool) -> Result<Vec<(String, SecretBytes)>> {
    let mut vars = Vec::new();
    for spec in specs {
        collect(store, spec, &mut vars)?;
    }
    if !raw {
        vars.iter_mut().for_each(|(_, v)| strip_newline(v));
    }
    Ok(vars)
}

/// `command` with `vars` in its environment.
fn command_with(
    command: &[String],
    vars: &[(String, SecretBytes)],
) -> Result<std::process::Command> {
    let (program, args) = command.split_first().expect("clap requires a command");
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    crate::etcd::restore_child_env(&mut cmd);
    for (name, value) in vars {
        if value.expose().contains(&0) {
            usage!("secret for {name} holds a NUL byte, which an environment variable cannot");
        }
        cmd.env(name, std::ffi::OsStr::from_bytes(value.expose()));
    }
    Ok(cmd)
}

/// Reads every secret, then execs `command` with them in its environment.
pub fn env(
    cli: &Cli,
    specs: &[String],
    raw: bool,
    command: &[String],
    timing: &WatchArgs,
) -> Result<()> {
    if timing.any() {
        usage!("--quiet-period and --poll-interval apply only with --restart-on-change");
    }
    let store = credentials::open_store(cli)?;
    let vars = collect_all(&store, specs, raw)?;
    drop(store);
    let mut cmd = command_with(command, &vars)?;
    // exec only returns on failure; the secrets in `vars` are wiped as they drop.
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot run {:?}", command[0]))
}

/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The exit code a shell would report for `status`.
fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Sends `sig` to `child` and waits for it, killing it after [`STOP_TIMEOUT`].
fn stop(child: &mut Child, sig: i32) -> ExitStatus {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                tracing::warn!(
                    "child {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                    child.id()
                );
                let _ = child.kill();
                return child.wait().unwrap_or_else(|_| {
                    ExitStatus::from_raw(nix::sys::signal::Signal::SIGKILL as i32)
                });
            }
        }
    }
}

/// `env --restart-on-change`: runs `command` as a child with the secrets in its environment and
/// restarts it (SIGTERM, wait, start) with fresh values after each change of their bytes.
/// Returns the child's exit code when it exits on its own, or after passing on SIGTERM, SIGINT
/// or SIGHUP.
pub fn env_restarting(
    cli: &Cli,
    specs: &[String],
    raw: bool,
    command: &[String],
    timing: &WatchArgs,
) -> Result<ExitCode> {
    let addrs = specs
        .iter()
        .map(|s| Address::parse_entry(split_spec(s).0))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // A long-lived process holding keys: keep its pages out of swap.
    hygiene::lock_memory();
    let store = credentials::open_store(cli)?;
    let vars = collect_all(&store, specs, raw)?;
    let mut watched = Watched::new(store, addrs)?;
    let fp = Fingerprinter::new()?;
    let fingerprint = |vars: &[(String, SecretBytes)]| {
        fp.of(vars.iter().map(|(n, v)| (n.as_str(), Some(v.expose()))))
    };
    let mut last = fingerprint(&vars);
    watch::catch_stop_signals();
    let program = &command[0];
    let mut child = Some(
        command_with(command, &vars)?
            .spawn()
            .with_context(|| format!("cannot run {program:?}"))?,
    );
    drop(vars);
    let mut owed = Coalescer::new(timing.quiet());
    loop {
        std::thread::sleep(timing.poll());
        if let Some(sig) = watch::stop_signal() {
            return Ok(match child.as_mut() {
                Some(c) => exit_code(stop(c, sig)),
                None => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
            });
        }
        if let Some(c) = child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                tracing::info!("{program:?} exited ({status})");
                return Ok(exit_code(status));
            }
        }
        let changed = poll_change(&mut watched, &mut last, |w| {
            Ok(fingerprint(&collect_all(w.store(), specs, raw)?))
        });
        if changed {
            tracing::info!("a secret changed; restarting {program:?} once quiet");
            owed.changed(Instant::now());
        }
        if !owed.due(Instant::now()) {
            continue;
        }
        let restarted = collect_all(watched.store(), specs, raw).and_then(|vars| {
            if let Some(mut old) = child.take() {
                stop(&mut old, nix::sys::signal::Signal::SIGTERM as i32);
            }
            let new = command_with(command, &vars)?
                .spawn()
                .with_context(|| format!("cannot run {program:?}"))?;
            Ok((new, fingerprint(&vars)))
        });
        match restarted {
            Ok((new, print)) => {
                tracing::info!("restarted {program:?} with fresh values");
                child = Some(new);
                last = print;
                owed.succeeded();
            }
            Err(e) => {
                let (n, delay) = owed.failed(Instant::now());
                tracing::warn!(
                    "cannot restart {program:?} ({e:#}), attempt {n}; retrying in {delay:?}"
                );
            }
        }
    }
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
