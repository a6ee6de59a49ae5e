//! The mount's audit writer: request threads hand records to a bounded queue and never wait
//! on SQLite; one writer thread appends them in batches (one transaction per batch). When the
//! queue is full a record is dropped and counted, and the writer appends a `lost` record with
//! the count, so a gap is visible in the log rather than silent. A crash loses what was queued
//! and not yet written (at most one batch interval's worth). `VAULTFS_AUDIT=off` in the
//! daemon's environment turns the audit off (for measurements).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};
use vaultfs_store::{AuditRecord, VaultReader};

use crate::access::{Caller, Decision};
use crate::view::now_ns;

/// Records waiting for the writer at most.
const QUEUE: usize = 8192;
/// Records per transaction at most.
const BATCH: usize = 512;
/// How long the writer waits for more records before writing what it has.
const LINGER: Duration = Duration::from_millis(50);

/// The audit writer of one mount.
pub(crate) struct Auditor {
    /// Who each recent caller was (see [`WhoCache`]).
    who: Mutex<WhoCache>,
    queue: RwLock<Option<Sender<AuditRecord>>>,
    lost: Arc<AtomicU64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Auditor {
    /// Starts the writer for `reader`'s vault and records the start (disabled by
    /// `VAULTFS_AUDIT=off`); `note` goes in the start record's rule (a kernel-checked mount
    /// says there that its opens are not audited, so the log shows the gap).
    pub(crate) fn start(reader: &Arc<VaultReader>, note: Option<&str>) -> Auditor {
        let off = std::env::var("VAULTFS_AUDIT").is_ok_and(|v| v == "off");
        let lost = Arc::new(AtomicU64::new(0));
        if off {
            return Auditor {
                who: Mutex::new(WhoCache::default()),
                queue: RwLock::new(None),
                lost,
                writer: Mutex::new(None),
            };
        }
        let (tx, rx) = bounded(QUEUE);
        let reader = reader.clone();
        let counted = lost.clone();
        let writer = std::thread::Builder::new()
            .name("vaultfs-audit".into())
            .spawn(move || write_loop(&reader, &rx, &counted))
            .ok();
        let auditor = Auditor {
            who: Mutex::new(WhoCache::default()),
            queue: RwLock::new(writer.as_ref().map(|_| tx)),
            lost,
            writer: Mutex::new(writer),
        };
        auditor.record(AuditRecord {
            t_ns: now_ns(),
            event: "start".into(),
            tgid: Some(std::process::id()),
            rule: note.map(str::to_owned),
            ..Default::default()
        });
        auditor
    }

    /// Queues `record`; never blocks (a full queue drops it and counts the loss).
    pub(crate) fn record(&self, record: AuditRecord) {
        let queue = self.queue.read();
        let Some(queue) = queue.as_ref() else {
            return;
        };
        match queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether records are kept at all.
    pub(crate) fn enabled(&self) -> bool {
        self.queue.read().is_some()
    }

    /// Records a clean stop and waits for the writer to write everything queued. Called when
    /// the mount's session ends (the last reference to the mount may be dropped by a thread
    /// the process does not wait for).
    pub(crate) fn finish(&self) {
        if !self.enabled() {
            return;
        }
        self.record(AuditRecord {
            t_ns: now_ns(),
            event: "stop".into(),
            tgid: Some(std::process::id()),
            ..Default::default()
        });
        self.queue.write().take();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
    }

    /// Records an open (or opendir) and its decision.
    pub(crate) fn open(
        &self,
        event: &str,
        path: impl FnOnce() -> String,
        version: i64,
        caller: Caller,
        decision: &Decision,
    ) {
        // The path is built only when it is recorded: this runs on every open.
        if !self.enabled() {
            return;
        }
        let path = path();
        let who = WhoCache::of(&self.who, caller.pid);
        self.record(AuditRecord {
            t_ns: now_ns(),
            event: event.into(),
            path: Some(path),
            version: Some(version),
            uid: Some(caller.uid),
            gid: Some(caller.gid),
            tgid: who.tgid,
            exe: who.exe,
            unit: who.unit,
            decision: Some(if decision.allowed { "allow" } else { "deny" }.into()),
            rule: Some(decision.rule.clone()),
        });
    }
}

impl Drop for Auditor {
    /// A clean stop is recorded; an unclean one shows as a `start` without a `stop`.
    fn drop(&mut self) {
        self.finish();
    }
}

/// How long a caller's exe and unit are reused for its next records.
const WHO_TTL: Duration = Duration::from_secs(1);

/// Reading three files of /proc on every open would cost the read path more than the rest of
/// the audit; so a process's record fields are kept for [`WHO_TTL`], pinned by a pidfd (a
/// thread that exited is never taken for a new one with its id). The cost: a process that execs another
/// binary or moves to another cgroup within that second is recorded with its former exe or
/// unit. Access decisions never use this cache (see `identity`).
#[derive(Default)]
struct WhoCache {
    known: std::collections::HashMap<u32, (std::time::Instant, std::os::fd::OwnedFd, Who)>,
}

impl WhoCache {
    /// The record fields of caller thread `tid`. The cache's lock is held only to look up and
    /// to insert, never across the reads of /proc, so concurrent opens do not queue behind
    /// one another's /proc reads.
    fn of(cache: &Mutex<WhoCache>, tid: u32) -> Who {
        {
            let mut cache = cache.lock();
            if let Some((at, pidfd, who)) = cache.known.get(&tid) {
                let mut fds = [rustix::event::PollFd::new(
                    pidfd,
                    rustix::event::PollFlags::IN,
                )];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                if at.elapsed() < WHO_TTL
                    && matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(0))
                {
                    return who.clone();
                }
                cache.known.remove(&tid);
            }
        }
        let who = Who::of(tid);
        if let Some(fd) = pin(tid, who.tgid == Some(tid)) {
            let mut cache = cache.lock();
            if cache.known.len() >= 1024 {
                cache.known.clear();
            }
            cache
                .known
                .insert(tid, (std::time::Instant::now(), fd, who.clone()));
        }
        who
    }
}

/// A pidfd that pins caller thread `tid` (a process's main thread, or with `PIDFD_THREAD`,
/// Linux 6.9 and later, any thread), so a reused id is never taken for the old caller; `None`
/// where it cannot be pinned, and then the caller is not cached.
fn pin(tid: u32, main_thread: bool) -> Option<std::os::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_raw(tid as i32)?;
    let flags = if main_thread {
        rustix::process::PidfdFlags::empty()
    } else {
        rustix::process::PidfdFlags::from_bits_retain(libc::O_EXCL as u32)
    };
    rustix::process::pidfd_open(pid, flags).ok()
}

/// What the audit says of a caller's process (best effort: a process gone leaves `None`s).
#[derive(Clone)]
struct Who {
    tgid: Option<u32>,
    exe: Option<String>,
    unit: Option<String>,
}

impl Who {
    fn of(tid: u32) -> Who {
        if tid == 0 {
            return Who {
                tgid: None,
                exe: None,
                unit: None,
            };
        }
        let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Tgid:"))
                    .and_then(|v| v.trim().parse().ok())
            });
        let pid = tgid.unwrap_or(tid);
        Who {
            tgid,
            exe: std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            unit: std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ok()
                .and_then(|c| {
                    c.lines()
                        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
                }),
        }
    }
}

fn write_loop(reader: &VaultReader, queue: &Receiver<AuditRecord>, lost: &AtomicU64) {
    let log = reader.audit_log();
    let mut conn = None;
    let mut failing = false;
    loop {
        let mut batch = Vec::new();
        match queue.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => batch.push(r),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if !batch.is_empty() {
            std::thread::sleep(LINGER);
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        let dropped = lost.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            batch.push(AuditRecord {
                t_ns: now_ns(),
                event: "lost".into(),
                rule: Some(format!("{dropped} records lost: the audit queue was full")),
                ..Default::default()
            });
        }
        if batch.is_empty() {
            continue;
        }
        if conn.is_none() {
            conn = reader.audit_connection().ok();
        }
        let result = match conn.as_mut() {
            Some(c) => log.append(c, &batch),
            None => Err(vaultfs_store::StoreError::InvalidOperation(
                "cannot open the store".into(),
            )),
        };
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::warn!("{}: the audit log is written again", log.vault_name());
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::error!(
                        "{}: cannot write the audit log: {e}; records are counted as lost",
                        log.vault_name()
                    );
                }
                failing = true;
                conn = None;
                lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
    }
}
