//! The process side of a daemon: forking into the background with a readiness pipe, leaving
//! the terminal, and turning SIGTERM/SIGINT into an unmount.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};

use super::fork::{fork, Forked};
use super::notify::Readiness;
use crate::exit::Exit;

/// Forks. The parent waits until the child reports readiness or failure and returns the exit
/// code to leave with; the child gets the readiness pipe to report on.
///
/// Called while the process has one thread and no SQLite handle, so the child starts clean.
pub fn fork_daemon() -> Result<std::result::Result<Readiness, ExitCode>> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    match fork()? {
        Forked::Child => {
            drop(read_end);
            detach_from_terminal()?;
            Ok(Ok(Readiness::Parent(std::fs::File::from(write_end))))
        }
        Forked::Parent => {
            drop(write_end);
            let mut report = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut report);
            let (code, message) = report.split_once('\n').unwrap_or((report.as_str(), ""));
            match code.trim().parse::<u8>() {
                Ok(0) => Ok(Err(ExitCode::SUCCESS)),
                Ok(code) => {
                    eprintln!("vaultfs: {message}");
                    Ok(Err(ExitCode::from(code)))
                }
                Err(_) => {
                    eprintln!("vaultfs: the mount daemon exited before the mount was ready");
                    Ok(Err(Exit::Failure.into()))
                }
            }
        }
    }
}

/// New session, cwd `/` (never hold a mountpoint busy), stdin and stdout on /dev/null.
/// stderr stays until readiness, then goes to the log file or /dev/null (see [`quiet_stderr`]).
fn detach_from_terminal() -> Result<()> {
    // Failure (already a session leader) is harmless.
    let _ = nix::unistd::setsid();
    std::env::set_current_dir("/").context("cannot change to /")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    nix::unistd::dup2_stdin(&null).context("cannot point stdin at /dev/null")?;
    nix::unistd::dup2_stdout(&null).context("cannot point stdout at /dev/null")?;
    Ok(())
}

/// Points stderr at `log` (or /dev/null), so a daemon never holds its parent's pipes open.
pub fn quiet_stderr(log: Option<&std::path::Path>) -> Result<()> {
    let target = match log {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open log file {}", path.display()))?,
        None => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .context("cannot open /dev/null")?,
    };
    nix::unistd::dup2_stderr(&target).context("cannot redirect stderr")?;
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and every thread it starts afterwards, so
/// that only [`spawn_signal_thread`]'s `sigwait` sees them.
pub fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(sig);
    }
    if let Err(e) = set.thread_block() {
        tracing::warn!("cannot block signals ({e}); SIGTERM may leave a stale mount");
    }
    set
}

/// Unmounts every mount on SIGTERM or SIGINT; the serving threads then return.
///
/// `stopped` is told too, for a daemon that serves only a credential socket.
pub fn spawn_signal_thread(
    set: SigSet,
    mut unmounters: Vec<vaultfs_fs::Unmounter>,
    stopped: std::sync::mpsc::Sender<()>,
) {
    let spawned = std::thread::Builder::new()
        .name("vaultfs-signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else {
                continue;
            };
            if sig == Signal::SIGHUP {
                // No terminal to hang up on; nothing to reload yet.
                continue;
            }
            tracing::info!("{sig}: unmounting");
            for u in &mut unmounters {
                if let Err(e) = u.unmount() {
                    tracing::warn!("cannot unmount {}: {e}", u.mountpoint().display());
                }
            }
            let _ = stopped.send(());
            return;
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the signal thread ({e}); SIGTERM will leave stale mounts");
    }
}
