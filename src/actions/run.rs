//! Running one action. Under systemd the daemon's unit is hardened (no CAP_KILL, a system-call
//! filter), so units are restarted and signalled by asking the service manager (`systemctl`),
//! and commands run as transient units (`systemd-run`), outside that hardening. Without
//! systemd, commands run as children and signals are sent directly.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::ActionKind;

/// How long a `systemctl` call may take (it only queues a job: `--no-block`).
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an `exec` command may run before it is stopped and counted as failed.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether systemd is the service manager (sd_booted(3)).
pub fn systemd_runs() -> bool {
    std::path::Path::new("/run/systemd/system").exists()
}

/// `systemctl`, for the system manager or `user`'s (`--user -M USER@`).
pub fn systemctl(user: Option<&str>) -> Command {
    let mut cmd = Command::new("systemctl");
    if let Some(u) = user {
        cmd.arg("--user").arg("-M").arg(format!("{u}@"));
    }
    cmd
}

/// The action, for log lines.
pub fn describe(kind: &ActionKind) -> String {
    let who = |user: &Option<String>| match user {
        Some(u) => format!(" (user {u})"),
        None => String::new(),
    };
    match kind {
        ActionKind::Units {
            units,
            reload,
            user,
        } => format!(
            "{} {}{}",
            if *reload { "reload" } else { "restart" },
            units.join(" "),
            who(user)
        ),
        ActionKind::SignalUnit { unit, signal, user } => {
            format!("SIG{signal} to {unit}{}", who(user))
        }
        ActionKind::SignalPidfile { pidfile, signal } => {
            format!("SIG{signal} to the pid in {}", pidfile.display())
        }
        ActionKind::Exec { argv } => format!("run {:?}", argv[0]),
    }
}

/// Runs the action once; the error is one line for the log.
pub fn perform(kind: &ActionKind) -> Result<(), String> {
    if let ActionKind::SignalPidfile { pidfile, signal } = kind {
        return signal_pidfile(pidfile, signal);
    }
    match command(kind, systemd_runs()) {
        // systemctl's own messages name units, never values: its stderr may be logged.
        Some((cmd, limit, is_systemctl)) => status(cmd, limit, is_systemctl),
        None => Err("nothing to run".to_owned()),
    }
}

/// The command that performs `kind` (`None` for a pidfile signal, sent directly), how long it
/// may take, and whether it is systemctl.
fn command(kind: &ActionKind, systemd: bool) -> Option<(Command, Duration, bool)> {
    match kind {
        ActionKind::Units {
            units,
            reload,
            user,
        } => {
            let mut cmd = systemctl(user.as_deref());
            cmd.arg("--no-block")
                .arg(if *reload {
                    "try-reload-or-restart"
                } else {
                    "try-restart"
                })
                .arg("--")
                .args(units);
            Some((cmd, SYSTEMCTL_TIMEOUT, true))
        }
        ActionKind::SignalUnit { unit, signal, user } => {
            let mut cmd = systemctl(user.as_deref());
            cmd.arg("kill")
                .arg("--kill-whom=main")
                .arg(format!("--signal=SIG{signal}"))
                .arg("--")
                .arg(unit);
            Some((cmd, SYSTEMCTL_TIMEOUT, true))
        }
        ActionKind::SignalPidfile { .. } => None,
        // A transient unit runs outside the daemon's hardening; `--wait` reports the
        // command's exit status, so a failure is retried like any other.
        ActionKind::Exec { argv } if systemd => {
            let mut cmd = Command::new("systemd-run");
            cmd.args([
                "--quiet",
                "--collect",
                "--wait",
                "--service-type=exec",
                "--description=vaultfs on-change action",
            ])
            .arg(format!(
                "--property=RuntimeMaxSec={}",
                EXEC_TIMEOUT.as_secs()
            ))
            .arg("--")
            .args(argv);
            Some((cmd, EXEC_TIMEOUT + Duration::from_secs(30), false))
        }
        ActionKind::Exec { argv } => {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            Some((cmd, EXEC_TIMEOUT, false))
        }
    }
}

fn signal_pidfile(pidfile: &std::path::Path, signal: &str) -> Result<(), String> {
    use nix::sys::signal::Signal;
    let text = std::fs::read_to_string(pidfile)
        .map_err(|e| format!("cannot read pid file {}: {e}", pidfile.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| format!("pid file {} does not hold a pid", pidfile.display()))?;
    let sig: Signal = format!("SIG{signal}")
        .parse()
        .map_err(|_| format!("unknown signal {signal}"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(|e| {
        format!(
            "cannot send SIG{signal} to pid {pid} (from {}): {e}",
            pidfile.display()
        )
    })
}

/// Runs `cmd` (stdin and stdout closed) for at most `limit`. The last line of its stderr goes
/// into the message only when `show_stderr` (systemctl's; a user's command might print a
/// secret, so its output is never logged).
pub fn status(mut cmd: Command, limit: Duration, show_stderr: bool) -> Result<(), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // Read stderr on the side, so a chatty child never blocks on a full pipe.
    let mut stderr = child.stderr.take();
    let (text_tx, text_rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("vaultfs-stderr".into())
        .spawn(move || {
            let mut text = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(64 * 1024).read_to_end(&mut text);
                // Drain the rest unread.
                let _ = std::io::copy(s, &mut std::io::sink());
            }
            let _ = text_tx.send(text);
        });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{program} did not finish within {limit:?}; stopped"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("cannot wait for {program}: {e}")),
        }
    };
    let status = status?;
    if status.success() {
        return Ok(());
    }
    if !show_stderr {
        return Err(format!("{program} {status}"));
    }
    // A grandchild may hold the pipe open: never wait for it long.
    let text = text_rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    let last = String::from_utf8_lossy(&text)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    Err(format!("{program} {status}{last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(kind: &ActionKind, systemd: bool) -> Vec<String> {
        let (cmd, _, _) = command(kind, systemd).unwrap();
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn actions_become_these_commands() {
        let units = ActionKind::Units {
            units: vec!["a.service".into(), "b.service".into()],
            reload: false,
            user: None,
        };
        assert_eq!(
            argv(&units, true),
            [
                "systemctl",
                "--no-block",
                "try-restart",
                "--",
                "a.service",
                "b.service"
            ]
        );
        let reload = ActionKind::Units {
            units: vec!["a.service".into()],
            reload: true,
            user: Some("alice".into()),
        };
        assert_eq!(
            argv(&reload, true),
            [
                "systemctl",
                "--user",
                "-M",
                "alice@",
                "--no-block",
                "try-reload-or-restart",
                "--",
                "a.service"
            ]
        );
        let signal = ActionKind::SignalUnit {
            unit: "a.service".into(),
            signal: "HUP".into(),
            user: None,
        };
        assert_eq!(
            argv(&signal, true),
            [
                "systemctl",
                "kill",
                "--kill-whom=main",
                "--signal=SIGHUP",
                "--",
                "a.service"
            ]
        );
        let exec = ActionKind::Exec {
            argv: vec!["/bin/echo".into(), "--x".into()],
        };
        let under_systemd = argv(&exec, true);
        assert_eq!(under_systemd[0], "systemd-run");
        assert!(under_systemd.contains(&"--wait".to_owned()));
        assert_eq!(
            under_systemd[under_systemd.len() - 3..],
            ["--", "/bin/echo", "--x"]
        );
        assert_eq!(argv(&exec, false), ["/bin/echo", "--x"]);
        let pidfile = ActionKind::SignalPidfile {
            pidfile: "/run/x.pid".into(),
            signal: "HUP".into(),
        };
        assert!(command(&pidfile, true).is_none());
    }

    #[test]
    fn a_pidfile_signal_reaches_its_process_and_a_bad_pidfile_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfile = dir.path().join("x.pid");
        std::fs::write(&pidfile, format!("{}\n", child.id())).unwrap();
        let kind = ActionKind::SignalPidfile {
            pidfile: pidfile.clone(),
            signal: "TERM".into(),
        };
        perform(&kind).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        std::fs::write(&pidfile, "nope").unwrap();
        let err = perform(&kind).unwrap_err();
        assert!(err.contains("does not hold a pid"), "{err}");
        std::fs::remove_file(&pidfile).unwrap();
        let err = perform(&kind).unwrap_err();
        assert!(err.contains("cannot read pid file"), "{err}");
    }

    #[test]
    fn a_direct_exec_reports_its_exit_status_and_never_its_output() {
        let fail = ActionKind::Exec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo s3cret >&2; exit 4".into(),
            ],
        };
        let (cmd, _, show) = command(&fail, false).unwrap();
        let err = status(cmd, Duration::from_secs(10), show).unwrap_err();
        assert!(err.contains("exit status: 4"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let slow = ActionKind::Exec {
            argv: vec!["/bin/sleep".into(), "30".into()],
        };
        let (cmd, _, show) = command(&slow, false).unwrap();
        let t = std::time::Instant::now();
        let err = status(cmd, Duration::from_millis(300), show).unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
