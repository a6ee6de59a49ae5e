//! Telling the caller which files' bytes changed, for on-change actions (restart a service
//! when its secret rotates).
//!
//! The refresher already knows which rows changed; a row version moves on every write, even
//! one that stores the same bytes, and a template's rendering moves when any input does. So
//! after each applied batch the tracker reads the bytes of every file whose content number
//! moved (a secret's value, a template's rendering), hashes them with the caller's keyed hash
//! and reports only those whose hash differs from the last one: a rewrite with the same bytes
//! reports nothing. The first scan, at mount start, is the baseline and reports nothing. No
//! plaintext and no unkeyed digest is kept between scans.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use vaultfs_store::{EntryKind, SecretBytes, StoreError, VaultPath};

use crate::driver::{render_from, Shared};

/// What the caller of a mount does with changes.
pub trait ChangeHook: Send + Sync + std::fmt::Debug {
    /// A keyed hash of the bytes a reader would read (the key is the caller's, so no digest
    /// that could confirm a guessed secret exists outside it).
    fn fingerprint(&self, bytes: &[u8]) -> [u8; 32];
    /// Whether changes of the file at `path` (a vault path) matter: others are never read
    /// or hashed, so a mount whose actions watch one file does not decrypt the whole vault.
    fn watches(&self, path: &VaultPath) -> bool {
        let _ = path;
        true
    }
    /// Files whose bytes changed in one applied batch. Called on the mount's refresher thread:
    /// it must return at once (queue the work).
    fn changed(&self, changes: Vec<Change>);
}

/// One file whose bytes changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its path in the vault (not in the mount).
    pub path: VaultPath,
    /// The keyed hash of its new bytes; `None` when it is gone (removed, renamed away, or a
    /// template that no longer renders).
    pub fingerprint: Option<[u8; 32]>,
    /// The keyed hash of its bytes before (at mount start or the last report); `None` when it
    /// did not exist.
    pub previous: Option<[u8; 32]>,
}

/// What the tracker last saw of one file.
#[derive(Debug)]
struct Seen {
    content: i64,
    path: VaultPath,
    fingerprint: Option<[u8; 32]>,
}

/// The per-mount tracker behind a [`ChangeHook`].
#[derive(Debug)]
pub(crate) struct Tracker {
    hook: Arc<dyn ChangeHook>,
    seen: Mutex<HashMap<i64, Seen>>,
    /// A batch was applied since the last scan.
    due: AtomicBool,
}

impl Tracker {
    pub(crate) fn new(hook: Arc<dyn ChangeHook>) -> Tracker {
        Tracker {
            hook,
            seen: Mutex::new(HashMap::new()),
            due: AtomicBool::new(false),
        }
    }

    /// A batch was applied: the next [`scan_if_due`](Self::scan_if_due) looks.
    pub(crate) fn mark_due(&self) {
        self.due.store(true, Ordering::Release);
    }

    /// Scans when a batch was applied since the last scan. Called by the refresher after it
    /// finished its round, so opens waiting for that round never wait for the hashing.
    pub(crate) fn scan_if_due(&self, shared: &Shared) {
        if self.due.swap(false, Ordering::AcqRel) {
            self.scan(shared, false);
        }
    }

    /// Compares every file with what was seen last and reports the differences (nothing when
    /// `baseline`). Runs on the refresher thread after a batch was applied (and at load).
    pub(crate) fn scan(&self, shared: &Shared, baseline: bool) {
        let files = shared.tree().files();
        let mut seen = self.seen.lock();
        let mut changes = Vec::new();
        let mut present = HashSet::with_capacity(files.len());
        for (id, content, kind, path) in files {
            if !self.hook.watches(&path) {
                continue;
            }
            present.insert(id);
            if seen
                .get(&id)
                .is_some_and(|s| s.content == content && s.path == path)
            {
                continue;
            }
            let bytes = match kind {
                EntryKind::Template => rendered(shared, id),
                _ => shared.reader.read_value(id, content).map(|v| v.map(Some)),
            };
            let fingerprint = match bytes {
                Ok(Some(b)) => b.map(|b| self.hook.fingerprint(b.expose())),
                // Changed again since the tree was read: the next batch brings it.
                Ok(None) => continue,
                Err(e) => {
                    // Unreadable for now (locked, damaged): looked at again after the next
                    // batch; the open path reports the error itself.
                    tracing::debug!(
                        "{}: cannot hash {path} for on-change actions: {e}",
                        shared.describe()
                    );
                    continue;
                }
            };
            let old = seen.insert(
                id,
                Seen {
                    content,
                    path: path.clone(),
                    fingerprint,
                },
            );
            match old {
                Some(old) if old.path != path => {
                    changes.push(Change {
                        path: old.path,
                        fingerprint: None,
                        previous: old.fingerprint,
                    });
                    changes.push(Change {
                        path,
                        fingerprint,
                        previous: None,
                    });
                }
                Some(old) if old.fingerprint == fingerprint => {}
                None if baseline => {}
                old => changes.push(Change {
                    path,
                    fingerprint,
                    previous: old.and_then(|o| o.fingerprint),
                }),
            }
        }
        let gone: Vec<i64> = seen
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(old) = seen.remove(&id) {
                if old.fingerprint.is_some() {
                    changes.push(Change {
                        path: old.path,
                        fingerprint: None,
                        previous: old.fingerprint,
                    });
                }
            }
        }
        drop(seen);
        if !changes.is_empty() && !baseline {
            self.hook.changed(changes);
        }
    }
}

/// Template `id` rendered as its latest rendering stands: `Ok(Some(None))` when it does not
/// render (opens fail), `Ok(None)` when it changed since.
fn rendered(shared: &Shared, id: i64) -> Result<Option<Option<SecretBytes>>, StoreError> {
    let Some(render) = shared.tree().render(id).cloned() else {
        return Ok(Some(None));
    };
    if !render.ok {
        return Ok(Some(None));
    }
    let (id, version) = render.made_of[0];
    let what = format!("{}: entry #{id}", shared.reader.vault_name());
    let Some(template) = shared.reader.template(id, version, &what)? else {
        return Ok(None);
    };
    match render_from(&shared.reader, &what, &template, &render.made_of) {
        Ok(v) => Ok(v.map(Some)),
        Err(StoreError::Template { .. }) => Ok(Some(None)),
        Err(e) => Err(e),
    }
}
