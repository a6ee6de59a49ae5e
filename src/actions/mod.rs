//! On-change actions of `serve`: restart, reload or signal units, or run a command, when the
//! bytes a consumer of a mount would read changed.
//!
//! Each mount's driver reports changed files with keyed hashes of the old and new bytes (see
//! `vaultfs_fs::changes`); nothing is reported at start, and a rewrite with the same bytes is
//! not a change. Here each action keeps, per path it watches, the hash from its last run (or
//! from mount start) and the latest one; after the quiet window it runs only if some path
//! really differs, so a burst of writes is one run and a burst that ends where it started is
//! none. A failed run stays owed and is retried with exponential backoff, logged at error
//! level each time (a typo in a unit name must never be a silent no-op).

mod check;
mod run;

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vaultfs_fs::{Change, ChangeHook};
use vaultfs_store::VaultPath;

pub use check::{check_units, UnitCheck};

use crate::config::{ActionSpec, MountSpec};
use crate::watch::{Coalescer, Fingerprinter};

/// How often the action thread looks at owed actions while any is owed or running.
const TICK: Duration = Duration::from_millis(100);

/// What the action thread is told.
enum Event {
    /// Mount `mount` reported changed files.
    Changed(usize, Vec<Change>),
    /// Action `action` finished a run.
    Done(usize, std::result::Result<(), String>),
}

/// The hook one mount calls: hashes with the daemon's key and queues the changes.
struct MountHook {
    mount: usize,
    /// What this mount's actions watch: only these files are hashed.
    paths: Vec<VaultPath>,
    fingerprinter: Arc<Fingerprinter>,
    events: parking_lot::Mutex<Sender<Event>>,
}

impl std::fmt::Debug for MountHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHook")
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

impl ChangeHook for MountHook {
    fn fingerprint(&self, bytes: &[u8]) -> [u8; 32] {
        self.fingerprinter.of([("", Some(bytes))])
    }

    fn watches(&self, path: &VaultPath) -> bool {
        self.paths.iter().any(|p| path.starts_with(p))
    }

    fn changed(&self, changes: Vec<Change>) {
        // The action thread lives as long as the daemon; a send fails only at exit.
        let _ = self.events.lock().send(Event::Changed(self.mount, changes));
    }
}

/// A keyed hash of a file's bytes; `None` when it does not exist.
type Hash = Option<[u8; 32]>;

/// One configured action and its state.
struct Action {
    mount: usize,
    spec: ActionSpec,
    owed: Coalescer,
    /// Per changed path: the hash at the last successful run (or mount start), the latest.
    pending: HashMap<VaultPath, (Hash, Hash)>,
    running: bool,
    /// The latest hashes when the running attempt started.
    ran_with: HashMap<VaultPath, Hash>,
}

impl Action {
    /// Whether some watched path's bytes differ from those at the last run.
    fn really_changed(&self) -> bool {
        self.pending.values().any(|(then, now)| then != now)
    }
}

/// Starts the action thread for `specs` and returns each mount's hook (`None` for a mount
/// without actions).
pub fn start(specs: &[MountSpec]) -> Result<Vec<Option<Arc<dyn ChangeHook>>>> {
    let actions: Vec<Action> = specs
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            m.actions.iter().map(move |a| Action {
                mount: i,
                spec: a.clone(),
                owed: Coalescer::new(m.quiet_period),
                pending: HashMap::new(),
                running: false,
                ran_with: HashMap::new(),
            })
        })
        .collect();
    if actions.is_empty() {
        return Ok(specs.iter().map(|_| None).collect());
    }
    let fingerprinter = Arc::new(Fingerprinter::new()?);
    let (tx, rx) = mpsc::channel();
    let hooks = specs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (!m.actions.is_empty()).then(|| {
                Arc::new(MountHook {
                    mount: i,
                    paths: m.actions.iter().map(|a| a.path.clone()).collect(),
                    fingerprinter: fingerprinter.clone(),
                    events: parking_lot::Mutex::new(tx.clone()),
                }) as Arc<dyn ChangeHook>
            })
        })
        .collect();
    std::thread::Builder::new()
        .name("vaultfs-actions".into())
        .spawn(move || run_loop(actions, rx, tx))
        .context("cannot start the on-change action thread")?;
    Ok(hooks)
}

fn run_loop(mut actions: Vec<Action>, rx: Receiver<Event>, tx: Sender<Event>) {
    // A missing unit is told at once, loudly, and again at every failed run. Asked here, not
    // before mounting: a slow bus never delays the mounts.
    let specs: Vec<ActionSpec> = actions.iter().map(|a| a.spec.clone()).collect();
    for problem in check_units(&specs) {
        if let UnitCheck::Missing(msg) = problem {
            tracing::error!("{msg}; this action will fail until the unit exists");
        }
    }
    loop {
        let busy = actions.iter().any(|a| a.running || !a.pending.is_empty());
        let event = if busy {
            match rx.recv_timeout(TICK) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(e) => Some(e),
                Err(_) => return,
            }
        };
        for event in event
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            handle(&mut actions, event, Instant::now());
        }
        let now = Instant::now();
        for i in take_due(&mut actions, now) {
            let spec = actions[i].spec.clone();
            let done = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("vaultfs-action".into())
                .spawn(move || {
                    let result = run::perform(&spec.kind);
                    let _ = done.send(Event::Done(i, result));
                });
            if let Err(e) = spawned {
                let a = &mut actions[i];
                a.running = false;
                let (n, delay) = a.owed.failed(now);
                tracing::error!(
                    "{}: cannot start a thread for the action ({e}); attempt {n}, retrying in {delay:?}",
                    a.spec.origin
                );
            }
        }
    }
}

/// The actions to run now (marked running, with what they run for remembered); an owed action
/// whose watched bytes are back to those of its last run is dropped.
fn take_due(actions: &mut [Action], now: Instant) -> Vec<usize> {
    let mut due = Vec::new();
    for (i, a) in actions.iter_mut().enumerate() {
        if a.running || !a.owed.due(now) {
            continue;
        }
        if !a.really_changed() {
            // A burst that ended with the bytes of the last run: nothing to do.
            tracing::debug!(
                "{}: back to the bytes of the last run; nothing to do",
                a.spec.origin
            );
            a.pending.clear();
            a.owed.succeeded();
            continue;
        }
        a.running = true;
        a.ran_with = a
            .pending
            .iter()
            .map(|(p, (_, now))| (p.clone(), *now))
            .collect();
        due.push(i);
    }
    due
}

fn handle(actions: &mut [Action], event: Event, now: Instant) {
    match event {
        Event::Changed(mount, changes) => {
            for a in actions.iter_mut().filter(|a| a.mount == mount) {
                let mut hit = false;
                let watched = a.spec.path.clone();
                for c in changes.iter().filter(|c| c.path.starts_with(&watched)) {
                    a.pending
                        .entry(c.path.clone())
                        .and_modify(|(_, now)| *now = c.fingerprint)
                        .or_insert((c.previous, c.fingerprint));
                    hit = true;
                }
                if hit {
                    tracing::debug!("{}: watched bytes changed", a.spec.origin);
                    a.owed.changed(now);
                }
            }
        }
        Event::Done(i, result) => {
            let Some(a) = actions.get_mut(i) else { return };
            a.running = false;
            let what = run::describe(&a.spec.kind);
            match result {
                Ok(()) => {
                    tracing::info!("{}: {what} after a change", a.spec.origin);
                    // What the run saw is the new reference; changes that came while it ran
                    // stay owed, for one more quiet window.
                    for (path, saw) in a.ran_with.drain() {
                        if let Some(entry) = a.pending.get_mut(&path) {
                            entry.0 = saw;
                        }
                    }
                    a.pending.retain(|_, (then, now)| then != now);
                    a.owed.succeeded();
                    if !a.pending.is_empty() {
                        a.owed.changed(now);
                    }
                }
                Err(e) => {
                    let (n, delay) = a.owed.failed(now);
                    tracing::error!(
                        "{}: {what} failed: {e}; attempt {n}, retrying in {delay:?}",
                        a.spec.origin
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ActionKind;

    fn action(path: &str) -> Action {
        Action {
            mount: 0,
            spec: ActionSpec {
                path: VaultPath::parse(path, path).unwrap(),
                kind: ActionKind::Exec {
                    argv: vec!["/bin/true".into()],
                },
                origin: "t".into(),
            },
            owed: Coalescer::new(Duration::from_secs(1)),
            pending: HashMap::new(),
            running: false,
            ran_with: HashMap::new(),
        }
    }

    fn change(path: &str, previous: u8, now: u8) -> Event {
        let h = |b: u8| (b != 0).then_some([b; 32]);
        Event::Changed(
            0,
            vec![Change {
                path: VaultPath::parse(path, path).unwrap(),
                fingerprint: h(now),
                previous: h(previous),
            }],
        )
    }

    #[test]
    fn a_burst_is_one_run_after_the_quiet_window_and_only_for_watched_paths() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut actions = vec![action("/tls"), action("/other")];
        for (i, ms) in (0..20).zip((0..).step_by(50)) {
            handle(&mut actions, change("/tls/cert", i + 1, i + 2), at(ms));
        }
        assert!(
            take_due(&mut actions, at(1900)).is_empty(),
            "inside the window"
        );
        assert_eq!(take_due(&mut actions, at(2000)), vec![0]);
        assert!(actions[0].running && actions[1].pending.is_empty());
        assert!(
            take_due(&mut actions, at(9000)).is_empty(),
            "one run at a time"
        );
        handle(&mut actions, Event::Done(0, Ok(())), at(2100));
        assert!(!actions[0].running && actions[0].pending.is_empty());
        assert!(
            take_due(&mut actions, at(99_000)).is_empty(),
            "nothing owed"
        );
    }

    #[test]
    fn bytes_back_to_those_of_the_last_run_fire_nothing() {
        let t0 = Instant::now();
        let mut actions = vec![action("/")];
        handle(&mut actions, change("/a", 1, 2), t0);
        handle(&mut actions, change("/a", 2, 1), t0);
        assert!(take_due(&mut actions, t0 + Duration::from_secs(2)).is_empty());
        assert!(actions[0].pending.is_empty());
        // Created then removed: nothing either.
        handle(&mut actions, change("/b", 0, 3), t0);
        handle(&mut actions, change("/b", 3, 0), t0);
        assert!(take_due(&mut actions, t0 + Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn a_change_during_a_run_is_owed_again_and_a_failure_backs_off() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut actions = vec![action("/")];
        handle(&mut actions, change("/a", 1, 2), at(0));
        assert_eq!(take_due(&mut actions, at(1000)), vec![0]);
        handle(&mut actions, change("/a", 2, 3), at(1100));
        handle(&mut actions, Event::Done(0, Ok(())), at(1200));
        assert_eq!(actions[0].pending.len(), 1, "the change seen while it ran");
        assert!(
            take_due(&mut actions, at(2100)).is_empty(),
            "a new quiet window"
        );
        assert_eq!(take_due(&mut actions, at(2200)), vec![0]);
        handle(&mut actions, Event::Done(0, Err("boom".into())), at(2300));
        assert!(
            take_due(&mut actions, at(3200)).is_empty(),
            "backing off 1 s"
        );
        assert_eq!(take_due(&mut actions, at(3300)), vec![0]);
        handle(&mut actions, Event::Done(0, Err("boom".into())), at(3300));
        assert!(take_due(&mut actions, at(5200)).is_empty(), "then 2 s");
        assert_eq!(take_due(&mut actions, at(5300)), vec![0]);
    }
}
