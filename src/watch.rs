//! Noticing that secrets changed, for `vaultfs watch` and `vaultfs env --restart-on-change`.
//!
//! Polling is cheap: one indexed read of the store's change counter per interval; values are
//! read only when it moved. A change is a change of the bytes a consumer would read, compared
//! through a hash keyed with a random per-process key, so no plaintext (and no unkeyed digest
//! of it, which would let a low-entropy secret be guessed) is kept between polls, and a
//! rewrite with the same bytes is no change. Changes are coalesced over a quiet window so a
//! burst of writes is one action, never at start; a failing action is retried with
//! exponential backoff (Vault Agent's tight retry loop, vault#12566, is what this avoids).

use std::time::{Duration, Instant};

use anyhow::Result;
use vaultfs_store::{Address, SecretBytes, Store, StoreError, VaultReader};

/// How often the change counter is read unless `--poll-interval` says otherwise.
pub const DEFAULT_POLL: &str = "250ms";
/// The quiet window unless `--quiet-period` says otherwise.
pub const DEFAULT_QUIET: &str = "1s";
/// The first retry delay of a failing action; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// The longest delay between retries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Parses `500ms`, `1s`, `1.5s`, `2m` or a bare number of seconds (for clap).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 1s, 2m)"))?;
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{text:?} is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The timing options of `watch` and `env --restart-on-change`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WatchArgs {
    /// Run only after the secrets stayed unchanged this long, so a burst of writes is one run [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub quiet_period: Option<Duration>,
    /// How often to look at the store's change counter [default: 250ms]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
}

impl WatchArgs {
    /// Whether any option was given.
    pub fn any(&self) -> bool {
        self.quiet_period.is_some() || self.poll_interval.is_some()
    }

    /// The quiet window.
    pub fn quiet(&self) -> Duration {
        self.quiet_period
            .unwrap_or_else(|| parse_duration(DEFAULT_QUIET).expect("a valid default"))
    }

    /// The polling interval (at least 10 ms: never a busy loop).
    pub fn poll(&self) -> Duration {
        self.poll_interval
            .unwrap_or_else(|| parse_duration(DEFAULT_POLL).expect("a valid default"))
            .max(Duration::from_millis(10))
    }
}

/// Looks for a change: `Ok(true)` when the watched bytes differ from `last` (which is then
/// updated). A failed read is logged and looked at again at the next poll.
pub fn poll_change(
    watched: &mut Watched,
    last: &mut [u8; 32],
    fingerprint: impl FnOnce(&Watched) -> Result<[u8; 32]>,
) -> bool {
    match watched.moved() {
        Ok(false) => false,
        Ok(true) => match fingerprint(watched) {
            Ok(now) if now != *last => {
                *last = now;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!("cannot read the watched secrets ({e:#}); trying again");
                watched.look_again();
                false
            }
        },
        Err(e) => {
            tracing::warn!("cannot read the store's change counter ({e:#}); trying again");
            false
        }
    }
}

/// A keyed hash of named values; the key is random per process and wiped on drop.
pub struct Fingerprinter {
    key: zeroize::Zeroizing<[u8; 32]>,
}

impl Fingerprinter {
    /// A fingerprinter with a fresh random key.
    pub fn new() -> Result<Fingerprinter> {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut())
            .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
        Ok(Fingerprinter { key })
    }

    /// The fingerprint of `items`: each a name and a value, or `None` when nothing is there.
    /// Lengths are hashed too, so no two different lists collide by concatenation.
    pub fn of<'a>(&self, items: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for (name, value) in items {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            match value {
                None => {
                    h.update(&[0]);
                }
                Some(v) => {
                    h.update(&[1]);
                    h.update(&(v.len() as u64).to_le_bytes());
                    h.update(v);
                }
            }
        }
        *h.finalize().as_bytes()
    }
}

/// Coalescing and retry: when an action is owed and may run.
#[derive(Debug)]
pub struct Coalescer {
    quiet: Duration,
    last_change: Option<Instant>,
    not_before: Option<Instant>,
    backoff: Duration,
    failures: u32,
}

impl Coalescer {
    /// Nothing owed yet.
    pub fn new(quiet: Duration) -> Coalescer {
        Coalescer {
            quiet,
            last_change: None,
            not_before: None,
            backoff: BACKOFF_START,
            failures: 0,
        }
    }

    /// Records a change seen at `now`: the action is owed once things stay quiet.
    pub fn changed(&mut self, now: Instant) {
        self.last_change = Some(now);
    }

    /// Whether the owed action may run at `now`: quiet for the window, and past any backoff.
    pub fn due(&self, now: Instant) -> bool {
        let Some(last) = self.last_change else {
            return false;
        };
        now.duration_since(last) >= self.quiet && self.not_before.is_none_or(|t| now >= t)
    }

    /// The action ran: nothing is owed, and the backoff starts over.
    pub fn succeeded(&mut self) {
        self.last_change = None;
        self.not_before = None;
        self.backoff = BACKOFF_START;
        self.failures = 0;
    }

    /// The action failed at `now`: it stays owed; returns the attempt number and the delay
    /// before the next one.
    pub fn failed(&mut self, now: Instant) -> (u32, Duration) {
        let delay = self.backoff;
        self.failures += 1;
        self.not_before = Some(now + delay);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        (self.failures, delay)
    }
}

/// The values behind a list of addresses, read through the store: a secret is itself, a
/// directory is every secret directly in it.
pub struct Watched {
    store: Store,
    counter: VaultReader,
    addresses: Vec<Address>,
    generation: i64,
}

impl Watched {
    /// Checks that every address names something now (a typo is an error, not a silent
    /// watch of nothing), and remembers the change counter.
    pub fn new(store: Store, addresses: Vec<Address>) -> Result<Watched> {
        let first = addresses
            .first()
            .ok_or_else(|| anyhow::anyhow!("nothing to watch"))?;
        let counter = store.reader(&first.vault)?;
        for addr in &addresses {
            store.list(addr)?;
        }
        let generation = counter.generation()?;
        Ok(Watched {
            store,
            counter,
            addresses,
            generation,
        })
    }

    /// The store, for callers that read more than the values (e.g. `env`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the store's change counter moved since the last call: one indexed read.
    pub fn moved(&mut self) -> Result<bool> {
        let now = self.counter.generation()?;
        let moved = now != self.generation;
        self.generation = now;
        Ok(moved)
    }

    /// Makes the next [`moved`](Self::moved) answer yes: for a caller that could not act on
    /// this change (the store was busy) and must look again.
    pub fn look_again(&mut self) {
        self.generation = -1;
    }

    /// Every watched value, by address (then path, for directories); a missing address is
    /// one `None` item.
    pub fn values(&self) -> Result<Vec<(String, Option<SecretBytes>)>> {
        let mut out = Vec::new();
        for addr in &self.addresses {
            let listing = match self.store.list(addr) {
                Ok(l) => l,
                Err(e) if is_absent(&e) => {
                    out.push((addr.to_string(), None));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for item in listing.iter().filter(|l| !l.entry.is_dir()) {
                let child = Address {
                    vault: addr.vault.clone(),
                    path: item.path.clone(),
                };
                let value = match self.store.read(&child) {
                    Ok(v) => Some(v),
                    Err(e) if is_absent(&e) => None,
                    Err(e) => return Err(e.into()),
                };
                out.push((child.to_string(), value));
            }
        }
        Ok(out)
    }

    /// The fingerprint of every watched value.
    pub fn fingerprint(&self, fp: &Fingerprinter) -> Result<[u8; 32]> {
        let values = self.values()?;
        Ok(fp.of(values
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_ref().map(SecretBytes::expose)))))
    }
}

/// Whether `e` says only that nothing is at an address (any more).
fn is_absent(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::NotFound(_) | StoreError::NotADirectory(_) | StoreError::NoSuchVault(_)
    )
}

/// The stop signal a long-lived watcher received (0: none), set by its signal thread and read
/// by its loop.
static SIGNALLED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Catches SIGTERM, SIGINT and SIGHUP so the loop can stop its child first: they are blocked
/// in this thread (and the threads it starts later) and taken by one thread with `sigwait`.
/// Children start with an empty signal mask (the standard library resets it at spawn).
pub fn catch_stop_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(sig);
    }
    if let Err(e) = set.thread_block() {
        tracing::warn!("cannot block stop signals ({e}); SIGTERM will not reach the child");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("vaultfs-stop".into())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                SIGNALLED.store(sig as i32, std::sync::atomic::Ordering::SeqCst);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the signal thread ({e})");
    }
}

/// The stop signal received, if any.
pub fn stop_signal() -> Option<i32> {
    match SIGNALLED.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn fingerprints_are_keyed_and_unambiguous() {
        let a = Fingerprinter::new().unwrap();
        let b = Fingerprinter::new().unwrap();
        let v = [("x", Some(&b"v"[..]))];
        assert_eq!(a.of(v), a.of(v));
        assert_ne!(a.of(v), b.of(v), "a per-process key");
        assert_ne!(a.of([("x", Some(&b""[..]))]), a.of([("x", None)]));
        assert_ne!(
            a.of([("ab", Some(&b"c"[..]))]),
            a.of([("a", Some(&b"bc"[..]))])
        );
    }

    #[test]
    fn coalesces_and_backs_off() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(Duration::from_secs(1));
        assert!(!c.due(s(5000)), "nothing owed at start");
        c.changed(s(0));
        c.changed(s(900));
        assert!(!c.due(s(1800)), "still inside the quiet window");
        assert!(c.due(s(1900)));
        assert_eq!(c.failed(s(1900)), (1, Duration::from_secs(1)));
        assert!(!c.due(s(2800)));
        assert!(c.due(s(2900)));
        assert_eq!(c.failed(s(2900)), (2, Duration::from_secs(2)));
        assert_eq!(c.failed(s(4900)), (3, Duration::from_secs(4)));
        c.succeeded();
        assert!(!c.due(s(100_000)));
        for _ in 0..20 {
            c.failed(s(0));
        }
        assert_eq!(c.failed(s(0)).1, BACKOFF_MAX);
    }
}
