//! Mounts that undo themselves (Drop guards), daemons found and stopped by pid, commands with
//! time limits, and a stop flag set by SIGINT/SIGTERM/SIGHUP so that an interrupted run still
//! unwinds through the guards.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP set the stop flag instead of killing the process, so that the
/// loops end early and every guard unmounts what it mounted.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Makes this process the reaper of the daemons it starts: `vaultfs mount` and gocryptfs fork
/// a daemon and exit, and the orphaned daemon is then reparented here (instead of to an init
/// that might never reap it), so it can be waited for and is never left a zombie.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Reaps `pid` if it is an exited child of ours.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on one pid; fails harmlessly if it is not our child.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

/// Reaps every exited child (daemons reparented to us).
pub fn reap_all() {
    let mut status = 0;
    // SAFETY: as in `reap`.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

pub fn check_stop() -> Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    Ok(())
}

/// Mount points (with their filesystem types), from the fs crate's mountinfo parser.
pub fn mounts() -> Vec<(PathBuf, String)> {
    vaultfs_fs::mountinfo::entries()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.mount_point, e.fs_type))
        .collect()
}

pub fn is_mounted(path: &Path) -> bool {
    mounts().iter().any(|(p, _)| p == path)
}

static LOG_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
static LOG_N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Where every command's output goes, one file per command.
pub fn set_log_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let _ = LOG_DIR.set(dir.to_owned());
    Ok(())
}

/// A new, numbered log file for one command.
pub fn new_log(label: &str) -> PathBuf {
    let n = LOG_N.fetch_add(1, Ordering::SeqCst);
    let dir = LOG_DIR.get().cloned().unwrap_or_else(std::env::temp_dir);
    dir.join(format!("{n:04}-{label}.log"))
}

/// A finished command.
pub struct Ran {
    pub ok: bool,
    pub took: Duration,
    pub log: PathBuf,
}

/// Runs a command to completion within `limit`, stdout and stderr into a log file of its own
/// (a file, never a pipe: a daemon that inherits a pipe would keep us waiting); kills it on
/// timeout.
pub fn run_logged(cmd: &mut Command, label: &str, limit: Duration) -> Result<Ran> {
    let log = new_log(label);
    let file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ran {
                ok: status.success(),
                took: start.elapsed(),
                log,
            });
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{:?} did not finish within {}s",
                cmd.get_program(),
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a short command that must succeed.
pub fn run_ok(cmd: &mut Command, label: &str) -> Result<()> {
    let what = format!("{cmd:?}");
    let ran = run_logged(cmd, label, Duration::from_secs(300))?;
    if !ran.ok {
        bail!("{what} failed:\n{}", log_tail(&ran.log, 5));
    }
    Ok(())
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    reap(pid);
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Processes running `exe` with `arg` among their arguments (e.g. a daemon by its mountpoint).
pub fn find_pids(exe: &Path, arg: &OsStr) -> Vec<i32> {
    let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_owned());
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        if link != exe {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        use std::os::unix::ffi::OsStrExt;
        if cmdline
            .split(|b| *b == 0)
            .any(|a| OsStr::from_bytes(a) == arg)
        {
            found.push(pid);
        }
    }
    found
}

/// (VmRSS, VmHWM) of `pid` in KiB.
pub fn rss_kib(pid: i32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Ends a process we started (by pid): SIGTERM, then SIGKILL after `grace`.
pub fn stop_pid(pid: i32, grace: Duration) {
    if !alive(pid) {
        return;
    }
    // SAFETY: plain kill(2) on a pid this harness started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Waits until `pid` is gone, up to `limit`; whether it is.
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A mount that is undone when dropped: the given unmount command first, then a lazy
/// `umount -l` if it is still there; then its daemon (if any) is waited for and, if it does
/// not exit, stopped by pid.
pub struct MountGuard {
    pub path: PathBuf,
    pub label: String,
    pub daemon: Option<i32>,
    unmount: Vec<OsString>,
    active: bool,
}

impl MountGuard {
    pub fn new(
        path: &Path,
        label: &str,
        daemon: Option<i32>,
        unmount: Vec<OsString>,
    ) -> MountGuard {
        MountGuard {
            path: path.to_owned(),
            label: label.to_owned(),
            daemon,
            unmount,
            active: true,
        }
    }

    /// Unmounts; an error if the mount or its daemon had to be forced away.
    pub fn unmount(&mut self) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let mut problems = Vec::new();
        if is_mounted(&self.path) {
            let (prog, args) = self.unmount.split_first().expect("an unmount command");
            let mut cmd = Command::new(prog);
            cmd.args(args);
            match run_logged(&mut cmd, "unmount", Duration::from_secs(20)) {
                Ok(r) if r.ok => {}
                Ok(r) => problems.push(format!(
                    "{:?} failed: {}",
                    self.unmount,
                    log_tail(&r.log, 2)
                )),
                Err(e) => problems.push(format!("{e:#}")),
            }
            if is_mounted(&self.path) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.path)
                    .stderr(Stdio::null())
                    .status();
                problems.push("still mounted; detached it with umount -l".into());
            }
        }
        if let Some(pid) = self.daemon {
            if !wait_gone(pid, Duration::from_secs(5)) {
                stop_pid(pid, Duration::from_secs(2));
                problems.push(format!(
                    "daemon {pid} did not exit after unmount; killed it"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "{} ({}): {}",
                self.label,
                self.path.display(),
                problems.join("; ")
            )
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("bench: cleanup: {e:#}");
        }
    }
}

/// Mounts a tmpfs at `path` (created if missing).
pub fn mount_tmpfs(path: &Path, size: &str) -> Result<MountGuard> {
    std::fs::create_dir_all(path)?;
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("vaultfs-bench")
            .arg(path),
        "mount-tmpfs",
    )
    .context("cannot mount a tmpfs (the harness needs root)")?;
    Ok(MountGuard::new(
        path,
        "tmpfs",
        None,
        vec!["umount".into(), path.as_os_str().to_owned()],
    ))
}

/// Last resort at exit: detaches whatever is still mounted below `root`, deepest first.
pub fn sweep_mounts(root: &Path) {
    let mut left: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(root))
        .collect();
    left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    left.dedup();
    for p in left {
        eprintln!(
            "bench: cleanup: {} was still mounted; detaching it",
            p.display()
        );
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&p)
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        assert!(alive(std::process::id() as i32));
        assert!(rss_kib(std::process::id() as i32).is_some());
    }
}
