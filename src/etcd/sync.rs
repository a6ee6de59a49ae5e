//! The sync task of `serve`: keeps a host's replica equal to the store in etcd.
//!
//! It holds the whole prefix in memory (a full read at each (re)connect, then the watch's
//! events), and after each batch of events rebuilds the store's bundle text from it and hands
//! that to [`Bundle::apply`], which verifies every row the host's key opens against the store
//! head's checks (so a row edited, rolled back or removed in etcd, or an older head, is refused
//! and the replica keeps its last good state) and applies the change in one transaction. Then
//! it bumps the replica's change signal, so the mounts see the new value at their next open,
//! as after a local `vaultfs write`.
//!
//! Why a full read at each connect instead of resuming from a persisted revision: the checks
//! cover all of a vault's rows, so verifying any change needs every row in memory anyway, and
//! a full read is also exactly what a compaction (the watch cancelled) requires.
//!
//! It runs on its own thread with its own tokio runtime; etcd being down only delays updates
//! (reconnects back off up to 5 s) and never blocks the mounts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use etcd_client::{Client, WatchOptions};
use tokio::sync::oneshot;
use vaultfs_store::{mirror, ApplyOptions, Bundle, Credential, StoreError};

use super::client::{self, EtcdOptions};
use super::url::EtcdUrl;

/// How the first sync went, reported once to `serve`.
pub type FirstSync = std::result::Result<i64, String>;

/// What the task needs.
pub struct SyncTask {
    /// Where the store is.
    pub url: EtcdUrl,
    /// How to reach it.
    pub opts: EtcdOptions,
    /// The host's replica.
    pub replica: PathBuf,
    /// The host's key (a scoped host slot, normally), as read: the applier thread makes the
    /// [`Credential`] (which may not cross threads) from it.
    pub cred: crate::credentials::CredentialSource,
    /// The name under `acks/`.
    pub host: String,
    /// Where the highest head applied is remembered.
    pub state_dir: Option<PathBuf>,
    /// Called after a change of vault keys (`key rotate`) was applied: the mounts hold the
    /// old keys and must be made again.
    pub on_rekey: Box<dyn Fn() + Send + Sync>,
}

/// The row lines of `view` to verify against `head`. Entries newer than the head are the
/// parts of a batched write whose last part never landed (its writer died; the marker's lease
/// ran out): no head covers them, so they are left out, and the next write deletes them.
fn covered_rows(
    url: &EtcdUrl,
    view: &BTreeMap<String, String>,
    head: &str,
) -> Vec<(String, String)> {
    let generation = mirror::head_generation(head).unwrap_or(i64::MAX);
    view.iter()
        .filter(|(_, v)| mirror::entry_seq(v).is_none_or(|seq| seq <= generation))
        .filter_map(|(k, v)| url.row_of(k).map(|r| (r.to_owned(), v.clone())))
        .collect()
}

/// The wrapped key of every vault line in `view`: it changes only when vault or master keys
/// are rotated.
fn vault_keys(view: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    view.iter()
        .filter(|(k, _)| k.contains("/r/vault/"))
        .map(|(k, v)| {
            (
                k.clone(),
                v.split(' ').nth(4).unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The most one reconnect waits.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the task on its own thread; the receiver gets the first sync's outcome (the head
/// applied, or why not).
pub fn start(task: SyncTask) -> Result<std::sync::mpsc::Receiver<FirstSync>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let applier = Applier::start(&task)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the etcd sync runtime: {e}"))?;
    std::thread::Builder::new()
        .name("etcd-sync".into())
        .spawn(move || {
            block_signals();
            let mut state = State {
                applier,
                task: Arc::new(task),
                view: BTreeMap::new(),
                first: Some(tx),
                failing: None,
                applied_rev: 0,
                warned_no_store: false,
                keys_applied: None,
            };
            rt.block_on(state.run());
        })
        .map_err(|e| anyhow!("cannot start the etcd sync thread: {e}"))?;
    Ok(rx)
}

/// A bundle to apply and where to send the outcome.
type Job = (
    String,
    oneshot::Sender<vaultfs_store::Result<vaultfs_store::Applied>>,
);

/// The thread that applies to the replica: it owns the host's [`Credential`] and does the
/// SQLite work, so the async side keeps answering etcd (keepalives) meanwhile.
struct Applier(std::sync::mpsc::Sender<Job>);

impl Applier {
    fn start(task: &SyncTask) -> Result<Applier> {
        let cred = task
            .cred
            .credential()
            .ok_or_else(|| anyhow!("the host key no longer parses"))?;
        drop(cred);
        let source = crate::credentials::CredentialSource::clone_of(&task.cred);
        let replica = task.replica.clone();
        let state_dir = task.state_dir.clone();
        let name = task.url.to_string();
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("etcd-apply".into())
            .spawn(move || {
                block_signals();
                let Some(cred): Option<Credential> = source.credential() else {
                    return;
                };
                let options = ApplyOptions {
                    allow_rollback: false,
                    state_dir,
                };
                for (text, reply) in rx {
                    let outcome = Bundle::parse(&text, &name)
                        .and_then(|b| b.apply(&replica, &cred, &options));
                    let _ = reply.send(outcome);
                }
            })
            .map_err(|e| anyhow!("cannot start the etcd apply thread: {e}"))?;
        Ok(Applier(tx))
    }

    async fn apply(&self, text: String) -> Option<vaultfs_store::Result<vaultfs_store::Applied>> {
        let (tx, rx) = oneshot::channel();
        self.0.send((text, tx)).ok()?;
        rx.await.ok()
    }
}

/// Keeps SIGTERM, SIGINT and SIGHUP for the daemon's signal thread, which waits for them.
fn block_signals() {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        set.add(sig);
    }
    let _ = set.thread_block();
}

struct State {
    applier: Applier,
    task: Arc<SyncTask>,
    /// Every key under the prefix but the acks, with its value.
    view: BTreeMap<String, String>,
    first: Option<std::sync::mpsc::Sender<FirstSync>>,
    /// The last connection error logged (each distinct one is logged once).
    failing: Option<String>,
    /// The etcd revision the replica reflects.
    applied_rev: i64,
    warned_no_store: bool,
    /// [`vault_keys`] of the last view applied.
    keys_applied: Option<BTreeMap<String, String>>,
}

impl State {
    async fn run(&mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    let text = format!("{e:#}");
                    if self.failing.as_deref() != Some(&text) {
                        tracing::warn!(
                            "etcd: {text}; the mounts keep serving the replica, retrying"
                        );
                        self.failing = Some(text.clone());
                    }
                    if let Some(tx) = self.first.take() {
                        let _ = tx.send(Err(text));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One connection: full read, apply, then watch until the watch ends.
    async fn session(&mut self) -> Result<()> {
        let task = self.task.clone();
        let url = &task.url;
        let timeout = if task.opts.timeout.is_zero() {
            client::DEFAULT_TIMEOUT
        } else {
            task.opts.timeout
        };
        let mut client: Client = client::connect(url, &task.opts).await?;
        // A full read can be large; its own bound grows with it (pages are bounded each).
        let (rev, kvs) = client::range_all(&mut client, url, timeout, &url.root()).await?;
        if self.failing.take().is_some() {
            tracing::warn!("etcd: {} reachable again", url.hosts_text());
        }
        let acks = url.acks_root();
        self.view = kvs
            .into_iter()
            .filter(|kv| !kv.key.starts_with(&acks))
            .map(|kv| (kv.key, kv.value))
            .collect();
        let all: BTreeSet<String> = self.view.keys().cloned().collect();
        self.reconcile(&mut client, rev, &all).await;
        let mut watch = client
            .watch_client()
            .max_decoding_message_size(64 << 20)
            .watch(
                url.root(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(rev + 1)
                        .with_progress_notify(),
                ),
            )
            .await
            .map_err(|e| client::unreachable(url, &client::short(&e)))?;
        loop {
            let Some(resp) = watch
                .message()
                .await
                .map_err(|e| client::unreachable(url, &client::short(&e)))?
            else {
                return Err(client::unreachable(url, "the watch ended"));
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    tracing::info!(
                        "etcd: history compacted past revision {} under {}; re-reading the prefix",
                        rev + 1,
                        url.prefix
                    );
                    return Ok(());
                }
                return Err(client::unreachable(
                    url,
                    &format!("the watch was cancelled: {}", resp.cancel_reason()),
                ));
            }
            let revision = resp.header().map_or(0, |h| h.revision());
            let mut changed = BTreeSet::new();
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                if key.starts_with(&acks) {
                    continue;
                }
                if kv.version() == 0 {
                    self.view.remove(&key);
                } else {
                    self.view.insert(
                        key.clone(),
                        String::from_utf8_lossy(kv.value()).into_owned(),
                    );
                }
                changed.insert(key);
            }
            if !changed.is_empty() {
                self.reconcile(&mut client, revision, &changed).await;
            }
        }
    }

    /// Verifies and applies the view at `rev`; `changed` are the keys that moved since the
    /// last look (named in a tamper line when the check does not say which row is wrong).
    async fn reconcile(&mut self, client: &mut Client, rev: i64, changed: &BTreeSet<String>) {
        let task = self.task.clone();
        let url = &task.url;
        if self.view.contains_key(&url.pending_key()) {
            tracing::debug!("etcd: a batched write is in progress; waiting for its last part");
            return;
        }
        let Some(head) = self.view.get(&url.head_key()).cloned() else {
            if !self.warned_no_store {
                tracing::warn!("etcd: no vaultfs store at {url} yet; waiting for one");
                self.warned_no_store = true;
            }
            if let Some(tx) = self.first.take() {
                let _ = tx.send(Err(format!("no vaultfs store at {url}")));
            }
            return;
        };
        self.warned_no_store = false;
        let rows = covered_rows(url, &self.view, &head);
        let (text, keys) =
            mirror::assemble(&head, rows.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let Some(outcome) = self.applier.apply(text).await else {
            tracing::error!("etcd: the apply thread is gone; the replica is no longer updated");
            return;
        };
        let changed_text = || {
            let mut v: Vec<&str> = changed.iter().map(String::as_str).collect();
            if v.len() > 5 {
                v.truncate(5);
                v.push("...");
            }
            v.join(", ")
        };
        match outcome {
            Ok(done) => {
                if !done.unchanged {
                    if let Err(e) = vaultfs_store::signal::bump(&task.replica) {
                        tracing::warn!(
                            "etcd: cannot bump the change signal of {}: {e}",
                            task.replica.display()
                        );
                    }
                    tracing::info!(
                        "etcd: applied head {} (revision {rev}) to {}: {} written, {} removed",
                        done.generation,
                        task.replica.display(),
                        done.changed,
                        done.removed
                    );
                }
                self.applied_rev = rev;
                if let Some(tx) = self.first.take() {
                    let _ = tx.send(Ok(done.generation));
                }
                self.ack(client, rev, done.generation).await;
                let keys = vault_keys(&self.view);
                let rekeyed = self.keys_applied.as_ref().is_some_and(|k| *k != keys);
                self.keys_applied = Some(keys);
                if rekeyed && !done.unchanged {
                    tracing::warn!(
                        "etcd: the store's keys were rotated (head {}); making the mounts again with the new keys",
                        done.generation
                    );
                    (task.on_rekey)();
                }
            }
            Err(StoreError::Rollback { found, seen, .. }) => {
                tracing::warn!(
                    "etcd: tamper: {} holds store head {found}, older than head {seen} this host applied (a rollback); the replica keeps head {seen}",
                    url.head_key()
                );
                self.first_failed(format!(
                    "the head in etcd ({found}) is older than the replica's ({seen})"
                ));
            }
            Err(StoreError::BadBundle { line, reason, .. }) => {
                let key = keys
                    .get(line.saturating_sub(1))
                    .and_then(|k| k.as_ref())
                    .map(|r| url.row_key(r))
                    .unwrap_or_else(changed_text);
                tracing::warn!(
                    "etcd: tamper: {key}: {reason}; refused, the replica keeps its last good state"
                );
                self.first_failed(format!("tamper: {key}: {reason}"));
            }
            Err(StoreError::WrongKey) => {
                tracing::warn!(
                    "etcd: this host's key opens no slot of the store at {url} (removed?); the replica keeps what it has"
                );
                self.first_failed("this host's key opens no slot of the store".into());
            }
            Err(e) => {
                tracing::warn!(
                    "etcd: cannot apply revision {rev} to {}: {e}",
                    task.replica.display()
                );
                self.first_failed(e.to_string());
            }
        }
    }

    fn first_failed(&mut self, why: String) {
        if let Some(tx) = self.first.take() {
            let _ = tx.send(Err(why));
        }
    }

    /// Records under `acks/HOST` the revision this host applied, for `fleet status`.
    async fn ack(&self, client: &mut Client, rev: i64, generation: i64) {
        let task = &self.task;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let value =
            serde_json::json!({"revision": rev, "head": generation, "time": now}).to_string();
        let timeout = if task.opts.timeout.is_zero() {
            client::DEFAULT_TIMEOUT
        } else {
            task.opts.timeout
        };
        if let Err(e) = client::bounded(
            &task.url,
            timeout,
            client.put(task.url.ack_key(&task.host), value, None),
        )
        .await
        {
            tracing::debug!("etcd: cannot record this host's ack: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn rows_no_head_covers_are_left_out() {
        let url = EtcdUrl::parse("etcd://h:1/p").unwrap();
        let head = "vaultfs-bundle 1 00\nhead 7\nvaults 1\n";
        let v = view(&[
            ("/p/head", head),
            ("/p/pending", "batch"),
            ("/p/r/vault/1", "vault 1 1 t w s"),
            ("/p/r/entry/1/2", "entry 1 2 1 0 7 t m v"),
            ("/p/r/entry/1/3", "entry 1 3 1 0 8 t m v"),
        ]);
        let rows = covered_rows(&url, &v, head);
        let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["entry/1/2", "vault/1"]);
    }

    #[test]
    fn a_rotation_changes_the_vault_keys_and_an_acl_change_does_not() {
        let a = view(&[("/p/r/vault/1", "vault 1 1 tag wrappedA sealedA")]);
        let acl = view(&[("/p/r/vault/1", "vault 1 2 tag wrappedA sealedB")]);
        let rotated = view(&[("/p/r/vault/1", "vault 1 2 tag wrappedB sealedC")]);
        assert_eq!(vault_keys(&a), vault_keys(&acl));
        assert_ne!(vault_keys(&a), vault_keys(&rotated));
    }
}
