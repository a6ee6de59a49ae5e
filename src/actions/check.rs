//! Whether the units an action names exist, asked of the service manager (`systemctl show -p
//! LoadState`): a misspelled unit is an error at `serve --check` and at daemon start, never a
//! silent no-op at the first rotation.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::ActionSpec;

use super::run::{systemctl, systemd_runs};

/// A problem with a named unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitCheck {
    /// The manager says the unit does not exist.
    Missing(String),
    /// The manager could not be asked (no systemd, no user manager running, no bus).
    Unknown(String),
}

/// Checks every unit `actions` name; an empty list when all exist (or none is named).
pub fn check_units(actions: &[ActionSpec]) -> Vec<UnitCheck> {
    let mut out = Vec::new();
    let units: Vec<_> = actions
        .iter()
        .flat_map(|a| a.kind.units().into_iter().map(move |u| (a, u)))
        .collect();
    if units.is_empty() {
        return out;
    }
    if !systemd_runs() {
        out.push(UnitCheck::Unknown(
            "systemd is not running here: unit names of on-change actions are not checked"
                .to_owned(),
        ));
        return out;
    }
    for (action, (unit, user)) in units {
        let manager = user.map_or("the system manager".to_owned(), |u| {
            format!("{u}'s user manager")
        });
        match load_state(unit, user) {
            Ok(state) if state == "not-found" => out.push(UnitCheck::Missing(format!(
                "{}: unit {unit} does not exist ({manager} has no such unit; a typo?)",
                action.origin
            ))),
            Ok(_) => {}
            Err(e) => out.push(UnitCheck::Unknown(format!(
                "{}: cannot ask {manager} about {unit}: {e}",
                action.origin
            ))),
        }
    }
    out
}

/// How long systemd may take to answer about one unit (a stuck bus must not hang the check).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// `systemctl show -p LoadState --value UNIT`.
fn load_state(unit: &str, user: Option<&str>) -> Result<String, String> {
    let mut cmd: Command = systemctl(user);
    let mut child = cmd
        .args(["show", "-p", "LoadState", "--value", "--", unit])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    let deadline = Instant::now() + ASK_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("systemctl did not answer within {ASK_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("cannot wait for systemctl: {e}")),
        }
    }
    // It has exited: its (small) output is all in the pipes.
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot read systemctl's answer: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err
            .lines()
            .next()
            .unwrap_or("systemctl failed")
            .trim()
            .to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
