//! Store commands against a store kept in etcd.
//!
//! Every command runs unchanged against a local copy of the store (a cache of ciphertext, one
//! per user and address): the copy is brought up to the head in etcd, the command runs on it,
//! and the rows it changed go back to etcd in one transaction that compares the head key's
//! revision. Every commit moves the head, so two writers cannot both succeed from the same
//! head: the loser drops its copy, re-reads etcd and runs the command again (its stdin was
//! kept in memory for that), a few times, then gives up with one line.
//!
//! Why a copy rather than a second store implementation: the store's rules (ACLs, the head,
//! format checks, sealing) then exist once, and the copy is exactly what a local store is.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use vaultfs_store::{mirror, Bundle, SecretBytes, Store};

use super::client::{Conn, EtcdOptions};
use super::url::EtcdUrl;
use crate::cli::{Cli, Command, TemplateCommand};
use crate::credentials;

/// The largest value an etcd store holds. etcd refuses requests over 1.5 MiB; a 1 MiB value
/// is a ~1.4 MiB row line once sealed and base64-encoded.
pub const MAX_VALUE: usize = 1 << 20;
/// Operations per etcd transaction (etcd's default `--max-txn-ops` is 128; a few are kept for
/// the head, the compare and the batch marker).
const TXN_OPS: usize = 120;
/// Bytes of row lines per transaction, under etcd's 1.5 MiB request limit.
const TXN_BYTES: usize = 1_200_000;
/// Attempts before a write that keeps conflicting gives up.
const TRIES: usize = 8;
/// How long a batched write may hold other writers off (its marker's lease).
const PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// How often a writer looks again while another one's batched write is in progress.
const PENDING_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// The most stdin kept for a retry.
const MAX_STDIN: u64 = 256 << 20;

/// What the copy was synced to.
struct Synced {
    /// The head key's mod revision (0: no store in etcd yet).
    head_rev: i64,
    /// Row keys in etcd left by an unfinished batched write (newer than the head): deleted by
    /// the next write.
    orphans: Vec<String>,
    /// What etcd holds now, when it differs from the state the head covers (a batched write
    /// died after overwriting rows, and the copy was rebuilt from etcd's history at the head):
    /// the next write diffs against this, so it puts back what the dead write overwrote.
    etcd_rows: Option<BTreeMap<String, String>>,
    /// The text read from etcd, when the copy was rebuilt from it: verified before a write
    /// builds on it, so a row edited in etcd is never sealed into a new head.
    text: Option<String>,
}

/// Runs `inner` (the command) against the store at `url`.
pub fn run(
    cli: &Cli,
    url: &EtcdUrl,
    opts: &EtcdOptions,
    inner: impl Fn(&Cli) -> Result<ExitCode>,
) -> Result<ExitCode> {
    let cache = cache_path(url)?;
    // The copy's own "highest head seen" lives next to it: a write that etcd then refuses
    // raised it, and must not make the next command see etcd's head as a rollback. The floor
    // that counts for etcd is kept by this module ([`Floor`]).
    let state = with_suffix(&cache, ".state");
    super::remember_state_dir();
    std::env::set_var("VAULTFS_STATE_DIR", &state);
    credentials::override_store_path(cache.clone());
    let _lock = lock_copy(&cache)?;
    // Set while a command may have changed the copy and etcd has not taken the change yet: a
    // command killed in between leaves the copy ahead of etcd (its own head state raised with
    // it), so the next one rebuilds the copy from etcd instead of building on it.
    let dirty = with_suffix(&cache, ".dirty");
    if dirty.exists() {
        tracing::debug!(
            "etcd: the last command stopped before etcd took its change; rebuilding the copy"
        );
        discard(&cache);
    }
    let is_init = matches!(cli.command, Command::Init { .. });
    let stdin = capture_stdin(&cli.command)?;
    let mut conn = Conn::open(url, opts)?;
    for attempt in 1..=TRIES {
        let t0 = std::time::Instant::now();
        let synced = wait_synced(&mut conn, url, &cache, cli.allow_rollback, is_init)?;
        tracing::debug!("etcd: copy synced in {:?}", t0.elapsed());
        let _feeder = match &stdin {
            Some(bytes) => Some(feed_stdin(bytes)?),
            None => None,
        };
        let before = read_rows(&cache)?;
        tracing::debug!("etcd: rows read in {:?}", t0.elapsed());
        // Commands that change no replicated row need no marker; `env` never returns to
        // remove one (it execs its program).
        let read_only = matches!(
            cli.command,
            Command::Cat { .. } | Command::Ls { .. } | Command::Env { .. }
        );
        if !read_only {
            write_small(&dirty, "").with_context(|| format!("cannot write {}", dirty.display()))?;
        }
        let result = inner(cli);
        tracing::debug!("etcd: command ran in {:?}", t0.elapsed());
        let after = read_rows(&cache)?;
        let same = match (&before, &after) {
            (Some(a), Some(b)) => a.generation == b.generation && a.lines == b.lines,
            (None, None) => true,
            _ => false,
        };
        if same {
            let _ = std::fs::remove_file(&dirty);
            // The command opened the copy and so verified its head: the floor may rise.
            if let (Ok(_), Some(rows)) = (&result, &after) {
                Floor::new(&cache).raise(rows.generation);
            }
            return result;
        }
        tracing::debug!("etcd: rows compared in {:?}", t0.elapsed());
        match push(&mut conn, url, &cache, &synced, before.as_ref()) {
            Ok(Pushed::Done {
                generation,
                batches,
            }) => {
                let _ = std::fs::remove_file(&dirty);
                Floor::new(&cache).raise(generation);
                if batches > 1 {
                    eprintln!(
                        "vaultfs: wrote to {url} in {batches} etcd transactions (etcd allows 128 operations per transaction); hosts apply the change when the last one lands"
                    );
                }
                return result;
            }
            Ok(Pushed::Conflict) => {
                discard(&cache);
                if attempt == TRIES {
                    bail!(
                        "etcd: the store at {url} changed concurrently, gave up after {TRIES} tries"
                    );
                }
                tracing::debug!(attempt, "etcd: head moved under the write; retrying");
                // A random pause, growing with the attempts, so writers that collided do not
                // collide again in lockstep.
                let mut r = [0u8; 2];
                let _ = getrandom::fill(&mut r);
                let ms = u64::from(u16::from_le_bytes(r)) % (25 * attempt as u64);
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            Err(e) => {
                discard(&cache);
                return Err(e);
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// How long a command waits for another one using the same copy.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes the copy for this process: two commands of one user against one store would
/// otherwise send each other's changes, or drop the copy under each other. A lock file of its
/// own (never one of SQLite's files, whose locks a close would drop).
fn lock_copy(cache: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = with_suffix(cache, ".lock");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(&path)
        .with_context(|| format!("cannot open the lock of the etcd copy {}", path.display()))?;
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < until => {
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
                "waited {} s for another vaultfs command using the local copy of this etcd store ({})",
                LOCK_WAIT.as_secs(),
                path.display()
            ),
            Err((_, e)) => bail!("cannot lock {}: {e}", path.display()),
        }
    }
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits()
}

/// [`sync_cache`], waiting (bounded by the marker's lease) while another writer's batched
/// write is between its parts: its rows are not covered by a head yet.
fn wait_synced(
    conn: &mut Conn,
    url: &EtcdUrl,
    cache: &Path,
    allow_rollback: bool,
    is_init: bool,
) -> Result<Synced> {
    let until = std::time::Instant::now() + PENDING_TTL + conn.timeout;
    loop {
        if let Some(s) = sync_cache(conn, cache, allow_rollback, is_init)? {
            return Ok(s);
        }
        if std::time::Instant::now() > until {
            bail!("etcd: a batched write to {url} has been in progress for over {} s; try again later", PENDING_TTL.as_secs());
        }
        std::thread::sleep(PENDING_POLL);
    }
}

fn read_rows(cache: &Path) -> Result<Option<mirror::Rows>> {
    if !cache.exists() {
        return Ok(None);
    }
    Ok(Some(mirror::read_rows(cache)?))
}

/// Where this user keeps the copy of the store at `url`: `$XDG_CACHE_HOME/vaultfs/etcd`
/// (`~/.cache/...`), or `/var/cache/vaultfs/etcd` for root, one file per address.
fn cache_path(url: &EtcdUrl) -> Result<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("VAULTFS_CACHE_DIR").filter(|d| !d.is_empty()) {
        PathBuf::from(d)
    } else if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/cache/vaultfs/etcd")
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(d).join("vaultfs/etcd")
    } else {
        let home = std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| anyhow!("no HOME: set VAULTFS_CACHE_DIR for the etcd store's copy"))?;
        PathBuf::from(home).join(".cache/vaultfs/etcd")
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the etcd cache directory {}", dir.display()))?;
    }
    credentials::check_store_dir(&dir.join("x"))?;
    let mut hosts = url.hosts.clone();
    hosts.sort();
    let id = blake3::hash(format!("{} {}", hosts.join(","), url.prefix).as_bytes());
    Ok(dir.join(format!("{}.db", &id.to_hex()[..24])))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Drops the copy (and what belongs to it), so the next command rebuilds it from etcd.
fn discard(cache: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal", ".rev", ".signal", ".dirty"] {
        let _ = std::fs::remove_file(with_suffix(cache, suffix));
    }
    let _ = std::fs::remove_dir_all(with_suffix(cache, ".state"));
}

/// The highest etcd store head this user has seen (a rollback in etcd is refused below it),
/// raised only by heads a command verified or a write committed.
struct Floor(PathBuf);

impl Floor {
    fn new(cache: &Path) -> Floor {
        Floor(with_suffix(cache, ".floor"))
    }
    fn get(&self) -> i64 {
        std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
    fn raise(&self, generation: i64) {
        if generation > self.get() {
            let _ = write_small(&self.0, &generation.to_string());
        }
    }
    fn set(&self, generation: i64) {
        let _ = write_small(&self.0, &generation.to_string());
    }
}

fn write_small(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = with_suffix(path, &format!(".tmp{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?
        .write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// Brings the copy to etcd's head: nothing to do when the head key has not moved since the
/// last sync, else a full read of the prefix rebuilt into the copy in one transaction.
fn sync_cache(
    conn: &mut Conn,
    cache: &Path,
    allow_rollback: bool,
    is_init: bool,
) -> Result<Option<Synced>> {
    let url = conn.url.clone();
    let head = conn.get(&url.head_key())?;
    let Some(head) = head else {
        discard(cache);
        if !is_init {
            bail!("no vaultfs store at {url}; create one with `vaultfs --store {url} init`");
        }
        return Ok(Some(Synced {
            head_rev: 0,
            orphans: vec![],
            etcd_rows: None,
            text: None,
        }));
    };
    if is_init {
        bail!("a vaultfs store already exists at {url}");
    }
    // `.rev` is "HEAD_REVISION ROW_COUNT ROWS_MOD_REVISION" of this copy's own last write. The
    // head unmoved is not enough: a row edited, put back or deleted directly in etcd leaves the
    // head alone, and only the full read below verifies the rows; so the rows' fingerprint must
    // not have moved either.
    let rev_file = with_suffix(cache, ".rev");
    let known: Vec<i64> = std::fs::read_to_string(&rev_file)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    if let [rev, count, rows_rev] = known[..] {
        if rev == head.mod_revision
            && cache.exists()
            && conn.fingerprint(&url.row_key(""), 0)? == (count, rows_rev)
        {
            return Ok(Some(Synced {
                head_rev: head.mod_revision,
                orphans: vec![],
                etcd_rows: None,
                text: None,
            }));
        }
    }
    let (_, kvs) = conn.range_all(&url.root())?;
    let mut head_text = None;
    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    if kvs.iter().any(|kv| kv.key == url.pending_key()) {
        return Ok(None);
    }
    for kv in kvs {
        if kv.key == url.head_key() {
            head_text = Some((kv.value, kv.mod_revision));
        } else if let Some(row) = url.row_of(&kv.key) {
            rows.insert(row.to_owned(), kv.value);
        }
    }
    // The head may have moved between the two reads: the full read is what counts.
    let Some((head_text, head_rev)) = head_text else {
        bail!("the store at {url} disappeared while it was read; try again");
    };
    let generation = mirror::head_generation(&head_text)
        .ok_or_else(|| anyhow!("etcd: {}: not a vaultfs head record", url.head_key()))?;
    let floor = Floor::new(cache);
    if generation < floor.get() && !allow_rollback {
        // Exit 3, as for a local store put back from an old copy.
        return Err(vaultfs_store::StoreError::Rollback {
            path: PathBuf::from(url.to_string()),
            found: generation,
            seen: floor.get(),
        }
        .into());
    }
    let mut orphans: Vec<String> = rows
        .iter()
        .filter(|(_, line)| mirror::entry_seq(line).is_some_and(|seq| seq > generation))
        .map(|(k, _)| k.clone())
        .collect();
    let mut etcd_rows = None;
    if !orphans.is_empty() {
        // A batched write died between its transactions (its marker's lease ran out). Rows it
        // put are newer than the head, and a row it overwrote lost the value the head still
        // covers: dropping the newer rows alone would drop that entry. The state the head
        // covers is in etcd's own history at the head's revision (the head and the last batch
        // commit together): build on it, and diff the next write against what etcd holds now.
        match conn.range_all_at(&url.root(), head_rev) {
            Ok((_, at_head)) => {
                tracing::warn!(
                    "etcd: {url}: an unfinished batched write left {} rows; the next write puts back the state the head covers",
                    orphans.len()
                );
                let now = std::mem::take(&mut rows);
                rows = at_head
                    .into_iter()
                    .filter_map(|kv| Some((url.row_of(&kv.key)?.to_owned(), kv.value)))
                    .collect();
                etcd_rows = Some(now);
                // The diff against what etcd holds deletes them.
                orphans.clear();
            }
            Err(e) => {
                // Compacted past the head: only the newer rows can be told apart.
                tracing::debug!("etcd: the head's revision is no longer readable: {e:#}");
                for k in &orphans {
                    rows.remove(k);
                }
            }
        }
    }
    let (text, keys) = mirror::assemble(
        &head_text,
        rows.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let bundle = Bundle::parse(&text, &url.to_string()).map_err(|e| match e {
        vaultfs_store::StoreError::BadBundle { line, reason, .. } => {
            let key = keys
                .get(line.saturating_sub(1))
                .and_then(Option::as_ref)
                .map_or_else(|| url.head_key(), |r| url.row_key(r));
            anyhow::Error::new(vaultfs_store::StoreError::Tampered {
                what: format!("etcd key {key} ({reason})"),
            })
        }
        other => other.into(),
    })?;
    if let Err(e) = bundle.mirror(cache) {
        // A copy of another store at this address (re-created), or a damaged copy: rebuild.
        tracing::debug!("etcd: rebuilding the local copy: {e}");
        discard(cache);
        bundle.mirror(cache)?;
    }
    if allow_rollback {
        floor.set(generation);
    }
    let _ = write_small(&rev_file, &head_rev.to_string());
    Ok(Some(Synced {
        head_rev,
        orphans,
        etcd_rows,
        text: Some(text),
    }))
}

enum Pushed {
    Done { generation: i64, batches: usize },
    Conflict,
}

/// Sends what the command changed in the copy to etcd.
fn push(
    conn: &mut Conn,
    url: &EtcdUrl,
    cache: &Path,
    synced: &Synced,
    before: Option<&mirror::Rows>,
) -> Result<Pushed> {
    let (store, cred) = open_copy(cache)?;
    if let Some(read) = &synced.text {
        // What the write builds on must be what the store head in etcd covers (the check
        // lines need a vault, so a store without one has nothing to verify yet).
        if read.lines().any(|l| l.starts_with("vault ")) {
            Bundle::parse(read, &url.to_string())
                .and_then(|b| b.show(Some(&cred)))
                .map_err(|e| {
                    // Kept as the store's error, so a tampered store exits 3 as a local one does.
                    let what = if e.is_tamper() { "tamper: " } else { "" };
                    anyhow::Error::new(e).context(format!(
                        "etcd: {what}the store at {url} does not verify; nothing was written"
                    ))
                })?;
        }
    }
    let t0 = std::time::Instant::now();
    let text = store.export_mirror()?;
    tracing::debug!("etcd: exported in {:?}", t0.elapsed());
    let generation = store.head();
    drop(store);
    let (head, rows) = mirror::split(&text);
    let empty = BTreeMap::new();
    let old = match &synced.etcd_rows {
        Some(now) => now,
        None => before.map_or(&empty, |b| &b.lines),
    };
    let mut ops: Vec<(String, Option<String>)> = Vec::new();
    for (k, line) in &rows {
        if old.get(k) != Some(line) {
            check_size(url, line)?;
            ops.push((url.row_key(k), Some(line.clone())));
        }
    }
    for k in old.keys() {
        if !rows.contains_key(k) {
            ops.push((url.row_key(k), None));
        }
    }
    for k in &synced.orphans {
        if !rows.contains_key(k) {
            ops.push((url.row_key(k), None));
        }
    }
    let guard = if synced.head_rev == 0 {
        Compare::version(url.head_key(), CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(url.head_key(), CompareOp::Equal, synced.head_rev)
    };
    let batches: Vec<Vec<TxnOp>> = plan(ops, head.len())
        .into_iter()
        .map(|batch| {
            batch
                .into_iter()
                .map(|(key, value)| match value {
                    Some(v) => TxnOp::put(key, v, None),
                    None => TxnOp::delete(key, None),
                })
                .collect()
        })
        .collect();
    let n = batches.len();
    // The batch marker lives on a lease, so a writer that dies between its batches does not
    // hold every other writer off for longer than the lease.
    let lease = if n > 1 {
        Some(conn.lease_grant(PENDING_TTL.as_secs() as i64)?)
    } else {
        None
    };
    let mut revision = 0;
    for (i, mut ops) in batches.into_iter().enumerate() {
        if i + 1 == n {
            ops.push(TxnOp::put(url.head_key(), head.clone(), None));
            ops.push(TxnOp::delete(url.pending_key(), None));
        } else {
            let with_lease = lease.map(|l| etcd_client::PutOptions::new().with_lease(l));
            ops.push(TxnOp::put(url.pending_key(), "batch", with_lease));
        }
        let txn = Txn::new().when(vec![guard.clone()]).and_then(ops);
        let resp = conn.txn(txn)?;
        if !resp.succeeded() {
            return Ok(Pushed::Conflict);
        }
        revision = resp.header().map_or(0, |h| h.revision());
    }
    // The copy now is what etcd holds at that revision (the head key's): the next command
    // needs no full read unless someone else writes meanwhile.
    if revision > 0 {
        // The rows as of that revision (a compaction meanwhile just means a full read next time).
        if let Ok((count, rows_rev)) = conn.fingerprint(&url.row_key(""), revision) {
            let _ = write_small(
                &with_suffix(cache, ".rev"),
                &format!("{revision} {count} {rows_rev}"),
            );
        }
    }
    Ok(Pushed::Done {
        generation,
        batches: n,
    })
}

/// Splits a write's puts (`Some`) and deletes (`None`) into transactions of at most
/// [`TXN_OPS`] operations and about [`TXN_BYTES`]; the last one also carries the head (of
/// `head_len` bytes), so it gets one of its own when the last batch is full of one big value.
fn plan(ops: Vec<(String, Option<String>)>, head_len: usize) -> Vec<Vec<(String, Option<String>)>> {
    let mut batches: Vec<Vec<(String, Option<String>)>> = vec![vec![]];
    let mut bytes = 0;
    for (key, value) in ops {
        let size = key.len() + value.as_ref().map_or(0, String::len);
        let cur = batches.last_mut().expect("never empty");
        if !cur.is_empty() && (cur.len() >= TXN_OPS || bytes + size > TXN_BYTES) {
            batches.push(vec![]);
            bytes = 0;
        }
        bytes += size;
        batches.last_mut().expect("never empty").push((key, value));
    }
    if bytes + head_len > TXN_BYTES + 200_000 {
        batches.push(vec![]);
    }
    batches
}

/// Opens the copy with a credential the command already read.
fn open_copy(cache: &Path) -> Result<(Store, vaultfs_store::Credential)> {
    let options = vaultfs_store::OpenOptions {
        allow_rollback: true,
        state_dir: None,
    };
    let mut last = None;
    for cred in credentials::remembered() {
        match Store::open_with(cache, &cred, &options) {
            Ok(s) => return Ok((s, cred)),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => anyhow::Error::new(e).context("cannot open the local copy to send the change to etcd"),
        None => anyhow!("the command changed the store without a credential vaultfs can reuse; nothing was sent to etcd"),
    })
}

/// Refuses an entry whose value is over [`MAX_VALUE`], before anything is sent.
fn check_size(url: &EtcdUrl, line: &str) -> Result<()> {
    let value_b64 = line.rsplit(' ').next().unwrap_or_default();
    if !line.starts_with("entry ") || value_b64 == "-" {
        return Ok(());
    }
    // Sealed values carry 40 bytes per 64 KiB chunk and a small header.
    let approx = value_b64.len() / 4 * 3;
    if approx > MAX_VALUE + 1024 + MAX_VALUE / 65536 * 40 {
        bail!(
            "a value of about {} KiB does not fit an etcd store ({url}): values there are limited to 1 MiB (etcd refuses requests over 1.5 MiB)",
            approx / 1024
        );
    }
    Ok(())
}

/// Reads stdin whole, for the commands that read it, so a retry can give it again.
fn capture_stdin(cmd: &Command) -> Result<Option<SecretBytes>> {
    let reads = match cmd {
        Command::Write { .. } => true,
        Command::Import { format, .. } => format.is_some(),
        Command::Template { cmd, .. } => matches!(cmd, TemplateCommand::Set { from: None, .. }),
        Command::Unwrap { token, .. } => token == "-",
        _ => false,
    };
    if !reads || std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let bytes = credentials::read_secret(std::io::stdin().lock(), MAX_STDIN)
        .context("cannot read stdin")?
        .ok_or_else(|| anyhow!("stdin is larger than 256 MiB"))?;
    Ok(Some(bytes))
}

/// Puts `bytes` behind a fresh pipe on fd 0, written by a thread; the previous pipe (from an
/// earlier attempt) closes, so its writer stops.
fn feed_stdin(bytes: &SecretBytes) -> Result<std::thread::JoinHandle<()>> {
    let (r, w) = nix::unistd::pipe().context("pipe")?;
    nix::unistd::dup2_stdin(&r).context("dup2")?;
    drop(r);
    let bytes = bytes.clone();
    Ok(std::thread::spawn(move || {
        use std::io::Write;
        let mut w = std::fs::File::from(w);
        let _ = w.write_all(bytes.expose());
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: usize, size: usize) -> Vec<(String, Option<String>)> {
        (0..n)
            .map(|i| (format!("k{i}"), Some("x".repeat(size))))
            .collect()
    }

    #[test]
    fn small_writes_are_one_transaction() {
        let p = plan(ops(3, 100), 500);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].len(), 3);
        assert_eq!(
            plan(vec![], 500).len(),
            1,
            "a head-only write still sends the head"
        );
    }

    #[test]
    fn batches_respect_the_operation_and_byte_limits() {
        let p = plan(ops(1000, 100), 500);
        assert!(p.iter().all(|b| b.len() <= TXN_OPS));
        assert_eq!(p.iter().map(Vec::len).sum::<usize>(), 1000);
        let p = plan(ops(10, 500_000), 500);
        assert!(p.iter().all(|b| b
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
            .sum::<usize>()
            <= TXN_BYTES));
        // One maximal value: alone, and the head gets a transaction of its own.
        let p = plan(ops(1, 1_450_000), 500);
        assert_eq!(p.len(), 2);
        assert!(p[1].is_empty());
    }

    #[test]
    fn values_over_the_cap_are_refused_with_one_line() {
        let url = EtcdUrl::parse("etcd://h:1/p").unwrap();
        let b64 = |n: usize| "A".repeat(n.div_ceil(3) * 4);
        let line = |n: usize| format!("entry 1 2 1 0 3 tag meta {}", b64(n));
        assert!(check_size(&url, &line(MAX_VALUE + 16 * 40 + 64)).is_ok());
        let e = check_size(&url, &line(MAX_VALUE + 100_000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 MiB") && !e.contains('\n'), "{e}");
        assert!(check_size(&url, "entry 1 2 1 0 3 tag meta -").is_ok());
    }
}
