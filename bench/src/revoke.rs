//! Revocation: `vaultfs acl set` takes read access away from "other", and a process of
//! another user (uid 65534) opens the secret right after the command returns, until it is
//! denied. The latency is from the command's return to the first denied open; an open that
//! still succeeds after the return counts as late (it must not happen on either mode: the
//! default mode checks every open in the daemon, the kernel-checked mode has its attribute
//! invalidation acknowledged before the command returns).
//!
//! The other user's opens come from this binary re-run as `vaultfs-bench probe`, which drops
//! to uid and gid 65534 and answers one open per line on stdin: no process start sits between
//! the command's return and the open.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report::{Metric, Section};
use crate::setup::Env;
use crate::sys::check_stop;
use crate::{median, ms, progress, KC};

/// Revocations per system.
pub const ROUNDS: usize = 100;

/// The uid and gid the probe runs as (`nobody`/`nogroup` on most systems).
const PROBE_ID: u32 = 65534;

/// `vaultfs-bench probe`: drop to uid/gid 65534, then for each path on stdin open it, read it
/// and answer `ok`, `denied` (EACCES/EPERM) or `err N`.
pub fn probe() -> Result<()> {
    // SAFETY: plain system calls with valid arguments, before any thread is started.
    let dropped = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(PROBE_ID) == 0
            && libc::setuid(PROBE_ID) == 0
    };
    if !dropped {
        bail!(
            "cannot drop to uid {PROBE_ID}: {}",
            std::io::Error::last_os_error()
        );
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let answer = match std::fs::read(&line) {
            Ok(_) => "ok".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => "denied".into(),
            Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

struct Probe {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Probe {
    fn spawn() -> Result<Probe> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("probe")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the probe")?;
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Probe { child, out })
    }

    fn open(&mut self, path: &Path) -> Result<String> {
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{}", path.display())?;
        stdin.flush()?;
        let mut line = String::new();
        if self.out.read_line(&mut line)? == 0 {
            bail!("the probe exited");
        }
        Ok(line.trim().to_owned())
    }

    /// Opens `path` until the answer is `want`, at most `limit`; the time it took and whether
    /// the first answer was something else.
    fn until(&mut self, path: &Path, want: &str, limit: Duration) -> Result<(Duration, bool)> {
        let t0 = Instant::now();
        let mut first = true;
        let mut late = false;
        loop {
            let got = self.open(path)?;
            if got == want {
                return Ok((t0.elapsed(), late));
            }
            if got.starts_with("err") {
                bail!("{}: {got}", path.display());
            }
            if first {
                late = true;
            }
            first = false;
            if t0.elapsed() > limit {
                bail!("{}: still {got:?} after {limit:?}", path.display());
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lets uid 65534 reach the mounts: the work directories are made 0711 (searchable, not
/// listable) up to the first one this run did not create.
fn open_the_way(env: &Env, mountpoint: &Path) -> Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut at = mountpoint.parent();
    while let Some(d) = at {
        dirs.push(d.to_owned());
        let name = d.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("vaultfs-bench.")) || d == Path::new("/") {
            break;
        }
        at = d.parent();
    }
    anyhow::ensure!(
        dirs.iter()
            .any(|d| d.starts_with(&env.cfg.work) || env.cfg.work.starts_with(d)),
        "the mounts are not under the work directory"
    );
    for d in dirs {
        if d == Path::new("/") || d == Path::new("/tmp") {
            continue;
        }
        let mode = std::fs::metadata(&d)?.permissions().mode() & 0o7777;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o011))?;
    }
    Ok(())
}

/// The revocation section, for the default and the kernel-checked mounts of the small vault.
pub fn revocation(env: &mut Env) -> Result<Option<Section>> {
    let Some(v) = env.vfs.as_ref().filter(|_| env.vfs_mounted) else {
        return Ok(None);
    };
    let mut systems: Vec<(&str, &Path, PathBuf)> =
        vec![("vaultfs", env.small_db.as_path(), env.v_small.clone())];
    if let Some(k) = &env.v_small_k {
        systems.push((KC, env.small_k_db.as_path(), k.clone()));
    }
    progress(&format!(
        "revocation: {ROUNDS} chmods per system, opened by uid {PROBE_ID} after each"
    ));
    let cols: Vec<&str> = systems.iter().map(|(s, _, _)| *s).collect();
    let mut sec = Section::new(
        "revocation",
        &format!(
            "Revocation: `vaultfs acl set … --mode 0400` returns → the next open by another user is denied (N = {ROUNDS} per system)"
        ),
        &cols,
        &[],
    );
    let mut m_lat = Metric::new(
        "revoke_latency",
        "command returned → open denied: median [min–max]",
        "ms",
        false,
    );
    let mut m_worst = Metric::new(
        "revoke_worst",
        &format!("command returned → open denied: worst of {ROUNDS}"),
        "ms",
        false,
    );
    let mut m_late = Metric::new(
        "revoke_late",
        "opens that still succeeded after the command returned",
        "opens",
        false,
    );
    let mut m_cmd = Metric::new(
        "revoke_command",
        "the `acl set` command itself (median)",
        "ms",
        false,
    );
    let mut probe = Probe::spawn()?;
    for (name, db, dir) in &systems {
        open_the_way(env, dir)?;
        let file = dir.join("f0000");
        let r = (|| -> Result<()> {
            // The vault's root readable (and so searchable) by all, the secret by its mode.
            v.run(db, &["acl", "set", "small", "--mode", "0444"])?;
            let mut lat = Vec::with_capacity(ROUNDS);
            let mut cmds = Vec::with_capacity(ROUNDS);
            let mut late = 0u64;
            for _ in 0..ROUNDS {
                check_stop()?;
                v.run(db, &["acl", "set", "small:/f0000", "--mode", "0444"])?;
                probe.until(&file, "ok", Duration::from_secs(10))?;
                let took = v.run(db, &["acl", "set", "small:/f0000", "--mode", "0400"])?;
                cmds.push(ms(took));
                let (d, was_late) = probe.until(&file, "denied", Duration::from_secs(10))?;
                late += u64::from(was_late);
                lat.push(ms(d));
            }
            let worst = lat.iter().copied().fold(0.0, f64::max);
            m_worst.push(name, worst);
            m_late.push(name, late as f64);
            m_cmd.push(name, median(cmds));
            for l in lat {
                m_lat.push(name, l);
            }
            v.run(db, &["acl", "set", "small", "--mode", "0400"])?;
            Ok(())
        })();
        if let Err(e) = r {
            check_stop()?;
            env.notes
                .push(format!("revocation on {name} failed: {e:#}"));
        }
    }
    sec.metrics.extend([m_lat, m_worst, m_late, m_cmd]);
    sec.notes.push(format!(
        "the opens come from one process of uid {PROBE_ID} (this binary, `vaultfs-bench probe`), one open per line: the first open follows the command's exit with no process start in between; the latency includes the probe's own round trip."
    ));
    Ok(Some(sec))
}
