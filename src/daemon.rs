//! Running mounts as a daemon: forking into the background with a readiness report to the
//! parent, systemd's `sd_notify`, and unmounting on SIGTERM/SIGINT.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

use anyhow::{Context, Result};
use vaultfs_store::{Credential, Store};

pub use crate::config::MountSpec;

use crate::exit;
use crate::hygiene;

/// Whom to tell that every mount is ready.
pub enum Readiness {
    /// Nobody (foreground without systemd).
    Quiet,
    /// The parent of a forked daemon, waiting on a pipe.
    Parent(std::fs::File),
    /// systemd, through `$NOTIFY_SOCKET`.
    Systemd,
}

impl Readiness {
    /// For a foreground process: systemd when it asked, else nobody.
    pub fn foreground() -> Readiness {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(_) => Readiness::Systemd,
            None => Readiness::Quiet,
        }
    }

    fn ready(&mut self, mounts: usize) {
        match self {
            Readiness::Quiet => {}
            Readiness::Parent(pipe) => {
                let _ = pipe.write_all(b"0\n");
            }
            Readiness::Systemd => sd_notify(&format!(
                "READY=1\nSTATUS=serving {mounts} mount(s)\nMAINPID={}",
                std::process::id()
            )),
        }
    }

    fn failed(&mut self, err: &anyhow::Error) {
        if let Readiness::Parent(pipe) = self {
            let code = exit_code_number(err);
            let _ = write!(pipe, "{code}\n{err:#}");
        }
    }
}

fn exit_code_number(err: &anyhow::Error) -> u8 {
    // ExitCode has no accessor; map through the same rule.
    let code = exit::code_for(err);
    [exit::USAGE_OR_AUTH, exit::INTEGRITY]
        .into_iter()
        .find(|c| ExitCode::from(*c) == code)
        .unwrap_or(exit::FAILURE)
}

/// Sends one `sd_notify` message; systemd's socket may be abstract (`@...`).
pub fn sd_notify(message: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = UnixDatagram::unbound()
        .and_then(|sock| addr.and_then(|a| sock.send_to_addr(message.as_bytes(), &a)));
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd at {path}: {e}");
    }
}

/// Forks. The parent waits until the child reports readiness or failure and returns the exit
/// code to leave with; the child gets `Ok(None)` with the readiness pipe to report on.
///
/// Called while the process has one thread and no SQLite handle, so the child starts clean.
pub fn fork_daemon() -> Result<std::result::Result<Readiness, ExitCode>> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create a pipe");
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process is single-threaded here (no thread has been started), so the child
    // may run arbitrary code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("cannot fork the daemon"),
        0 => {
            drop(read_end);
            detach_from_terminal()?;
            Ok(Ok(Readiness::Parent(std::fs::File::from(write_end))))
        }
        _child => {
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
                    Ok(Err(ExitCode::from(exit::FAILURE)))
                }
            }
        }
    }
}

/// New session, cwd `/` (never hold a mountpoint busy), stdin and stdout on /dev/null.
/// stderr stays until readiness, then goes to the log file or /dev/null (see [`quiet_stderr`]).
fn detach_from_terminal() -> Result<()> {
    // SAFETY: setsid has no preconditions; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    std::env::set_current_dir("/").context("cannot change to /")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: both fds are valid.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
    }
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
    // SAFETY: both fds are valid.
    unsafe {
        libc::dup2(
            std::os::fd::AsRawFd::as_raw_fd(&target),
            libc::STDERR_FILENO,
        )
    };
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and every thread it starts afterwards, so
/// that only [`spawn_signal_thread`]'s `sigwait` sees them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a zeroed, then emptied, set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Unmounts every mount on SIGTERM or SIGINT; the serving threads then return.
fn spawn_signal_thread(set: libc::sigset_t, mut unmounters: Vec<vaultfs_fs::Unmounter>) {
    let spawned = std::thread::Builder::new()
        .name("vaultfs-signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: set is a valid signal set; sig a valid out-parameter.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if sig == libc::SIGHUP {
                // No terminal to hang up on; nothing to reload yet.
                continue;
            }
            tracing::info!("signal {sig}: unmounting");
            for u in &mut unmounters {
                if let Err(e) = u.unmount() {
                    tracing::warn!("cannot unmount {}: {e}", u.mountpoint().display());
                }
            }
            return;
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the signal thread ({e}); SIGTERM will leave stale mounts");
    }
}

/// Opens the store, mounts every spec, reports readiness, and serves until all are unmounted.
/// Mount failures are reported to `readiness` (so `vaultfs mount` prints them) and returned.
pub fn serve(
    store_path: &std::path::Path,
    cred: Credential,
    specs: &[MountSpec],
    mut readiness: Readiness,
    log_file: Option<&std::path::Path>,
) -> Result<()> {
    let signals = block_signals();
    // From here on, logging never waits on its sink (this is after any fork).
    crate::logging::start_writer();
    let daemonized = matches!(readiness, Readiness::Parent(_));
    let mounted = match mount_all(store_path, cred, specs) {
        Ok(m) => m,
        Err(e) => {
            readiness.failed(&e);
            return Err(e);
        }
    };
    let mut mounted = mounted;
    let unmounters = mounted.iter_mut().map(|m| m.unmounter()).collect();
    spawn_signal_thread(signals, unmounters);
    for m in &mounted {
        tracing::info!("serving {} at {}", m.describe(), m.mountpoint().display());
    }
    if daemonized {
        quiet_stderr(log_file)?;
    }
    readiness.ready(mounted.len());
    drop(readiness);

    let threads: Vec<_> = mounted
        .into_iter()
        .map(|m| {
            let where_ = m.mountpoint().to_owned();
            let handle = std::thread::Builder::new()
                .name("vaultfs-session".into())
                .spawn(move || m.run());
            (where_, handle)
        })
        .collect();
    let mut failed = false;
    for (mountpoint, handle) in threads {
        let result = handle
            .map_err(anyhow::Error::from)
            .and_then(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("the session thread panicked"))
            })
            .and_then(|r| r.map_err(anyhow::Error::from));
        if let Err(e) = result {
            tracing::error!("{}: {e:#}", mountpoint.display());
            failed = true;
        }
    }
    sd_notify("STOPPING=1");
    if failed {
        anyhow::bail!("a mount ended with an error");
    }
    Ok(())
}

fn mount_all(
    store_path: &std::path::Path,
    cred: Credential,
    specs: &[MountSpec],
) -> Result<Vec<vaultfs_fs::Mounted>> {
    // Failure is warned about inside; mounting still works.
    hygiene::lock_memory();
    let store = Store::open(store_path, &cred)?;
    drop(cred);
    let mut readers = Vec::new();
    for spec in specs {
        let reader = store
            .reader(&spec.source.vault)
            .with_context(|| format!("cannot mount {}", spec.source))?;
        readers.push(reader);
    }
    drop(store);
    let mut mounted: Vec<vaultfs_fs::Mounted> = Vec::new();
    for (spec, reader) in specs.iter().zip(readers) {
        match vaultfs_fs::mount(reader, spec.source.path.clone(), &spec.mountpoint) {
            Ok(m) => mounted.push(m),
            Err(e) => {
                // Leave nothing half-done: unmount what is already mounted.
                for m in &mut mounted {
                    let _ = m.unmounter().unmount();
                }
                return Err(e).with_context(|| {
                    format!(
                        "cannot mount {} at {}",
                        spec.source,
                        spec.mountpoint.display()
                    )
                });
            }
        }
    }
    Ok(mounted)
}
