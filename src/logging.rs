//! Logging that can neither flood nor stall the filesystem.
//!
//! A failing store used to produce one line per failed open (1.5 million lines in 30 s), and a
//! log sink nobody reads (a full pipe, a stalled journal, a full disk) blocked the request
//! thread that logged, and with it every reader of the mount. So:
//!
//! - Repeats of errors, warnings and info lines are summarized (debug and trace, asked for to
//!   follow requests one by one, are not). A line is keyed by where it is logged and its text with the
//!   digits taken out; the first of a key is printed, repeats within [`WINDOW`] are counted and
//!   reported once ("repeated N times in the last 10 s"). Distinct texts from one place (other
//!   paths) still get their first line, up to [`DISTINCT_PER_SITE`] per window, then they too
//!   are counted.
//! - A serving daemon never writes from a request thread. Lines go into a bounded queue that
//!   one writer thread drains; when the queue is full, lines are dropped and counted, and the
//!   count is written ("N log lines lost") as soon as the sink takes lines again.
//!
//! Until [`start_writer`] is called (the daemon, after it forked), lines are written where they
//! are logged: a one-shot command has nothing to stall, and its last line must not be lost.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// How long repeats of one line are counted before the count is written.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How many different lines one logging statement may print per window before the rest are
/// only counted: a fault that touches every path must not print every path.
pub const DISTINCT_PER_SITE: usize = 16;
/// Lines waiting for the writer thread; beyond this they are dropped and counted.
const QUEUE: usize = 1024;
/// How long exit waits for the writer to drain: a blocked sink must not block exit.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// The filter when `VAULTFS_LOG` is unset or invalid. fuser's own records are kept to errors:
/// at debug it names every file looked up.
const DEFAULT_FILTER: &str = "warn,fuser=error,vaultfs::ready=info";

/// Where lines go: stderr, or the file of `mount --log-file`.
enum Sink {
    Stderr,
    File(std::fs::File),
}

impl Sink {
    fn write(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::File(f) => f.write_all(line.as_bytes()),
        }
    }
}

/// A message for the writer thread.
enum Msg {
    Line(String),
    /// Write every pending summary and the lost count, then answer.
    Flush(Sender<()>),
}

/// Which logging statement a line comes from. Records from the `log` crate (fuser) share one
/// callsite per level, so their target is part of it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Site {
    callsite: Identifier,
    target: Option<String>,
}

/// A line's key: its site and its text without digits; `None` is the site's overflow counter.
type Key = (Site, Option<String>);

struct Window {
    start: Instant,
    repeats: u64,
    level: Level,
    /// The first line's text, repeated in the summary.
    sample: String,
}

/// Counts repeats per key.
#[derive(Default)]
struct Limiter {
    windows: HashMap<Key, Window>,
    distinct: HashMap<Site, usize>,
}

impl Limiter {
    /// Whether to print a line now; `summaries` gets the counts of expired windows of the
    /// same key.
    fn admit(
        &mut self,
        site: Site,
        text: &str,
        level: Level,
        now: Instant,
        summaries: &mut Vec<String>,
    ) -> bool {
        let key = (site.clone(), Some(line_key(text)));
        if let Some(w) = self.windows.get_mut(&key) {
            if now.duration_since(w.start) < WINDOW {
                w.repeats += 1;
                return false;
            }
            if let Some(w) = self.remove(&key) {
                summaries.extend(summary(&key, &w, now));
            }
        }
        let count = self.distinct.entry(site.clone()).or_default();
        if *count >= DISTINCT_PER_SITE {
            let w = self.windows.entry((site, None)).or_insert_with(|| Window {
                start: now,
                repeats: 0,
                level,
                sample: text.to_owned(),
            });
            w.repeats += 1;
            return false;
        }
        *count += 1;
        self.windows.insert(
            key,
            Window {
                start: now,
                repeats: 0,
                level,
                sample: text.to_owned(),
            },
        );
        true
    }

    fn remove(&mut self, key: &Key) -> Option<Window> {
        let w = self.windows.remove(key)?;
        if key.1.is_some() {
            if let Some(n) = self.distinct.get_mut(&key.0) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.distinct.remove(&key.0);
                }
            }
        }
        Some(w)
    }

    /// Ends the windows older than [`WINDOW`] (all of them when `all`), returning the summary
    /// lines of those that counted repeats.
    fn expire(&mut self, now: Instant, all: bool) -> Vec<String> {
        let done: Vec<Key> = self
            .windows
            .iter()
            .filter(|(_, w)| all || now.duration_since(w.start) >= WINDOW)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in done {
            if let Some(w) = self.remove(&key) {
                out.extend(summary(&key, &w, now));
            }
        }
        out
    }
}

fn summary(key: &Key, w: &Window, now: Instant) -> Option<String> {
    if w.repeats == 0 {
        return None;
    }
    let secs = now
        .duration_since(w.start)
        .as_secs()
        .clamp(1, WINDOW.as_secs());
    let text = match key.1 {
        Some(_) => format!(
            "{} (repeated {} times in the last {secs} s)",
            w.sample, w.repeats
        ),
        None => format!(
            "{} more lines like \"{}\" in the last {secs} s (not shown)",
            w.repeats, w.sample
        ),
    };
    Some(line(w.level, &text))
}

/// What makes two lines "the same" for counting repeats: the text without its digits, except
/// for a tamper report, whose digits say which row was tampered with (etcd keys of rows are
/// numbers): each such row must be named at least once per window. The per-site cap still
/// bounds how many distinct ones print.
fn line_key(text: &str) -> String {
    if text.contains("tamper") {
        text.to_owned()
    } else {
        without_digits(text)
    }
}

/// `text` with every run of digits replaced by `#`, so that counters, ids and addresses do not
/// make each line unique.
fn without_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Everything the layer and the writer share.
struct Shared {
    limiter: Mutex<Limiter>,
    sink: Mutex<Sink>,
    /// Set once the writer thread runs; from then on nothing else writes to the sink.
    queue: OnceLock<Sender<Msg>>,
    lost: AtomicU64,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| Shared::new(Sink::Stderr))
}

impl Shared {
    fn new(sink: Sink) -> Shared {
        Shared {
            limiter: Mutex::new(Limiter::default()),
            sink: Mutex::new(sink),
            queue: OnceLock::new(),
            lost: AtomicU64::new(0),
        }
    }

    /// Hands `line` on: to the writer thread without waiting, or straight to the sink before
    /// there is one.
    fn emit(&self, line: String) {
        match self.queue.get() {
            Some(tx) => match tx.try_send(Msg::Line(line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                }
            },
            None => {
                if self.sink.lock().write(&line).is_err() {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Writes on the writer thread (or at exit); a failed write (full disk, closed pipe)
    /// counts as a lost line.
    fn write(&self, line: &str) {
        self.report_lost();
        if self.sink.lock().write(line).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn report_lost(&self) {
        let n = self.lost.swap(0, Ordering::Relaxed);
        if n == 0 {
            return;
        }
        let text = format!("{n} log lines lost (the log was not taking lines fast enough)");
        if self.sink.lock().write(&line(Level::WARN, &text)).is_err() {
            self.lost.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn write_summaries(&self, all: bool) {
        let summaries = self.limiter.lock().expire(Instant::now(), all);
        for s in summaries {
            self.write(&s);
        }
    }
}

/// Writes `text` (one line, newline added) to the log's sink as it is: no time, no level, no
/// repeat limiter (each line is one audit record, to be counted, never summarized). Like every
/// line, it never waits on a blocked sink once the daemon's writer thread runs: it is dropped
/// and counted instead.
pub fn emit_plain(text: &str) {
    shared().emit(format!("{text}\n"));
}

/// Formats one line: UTC time, level, text.
fn line(level: Level, text: &str) -> String {
    format!("{} {level:>5} {text}\n", utc_now())
}

/// RFC 3339 UTC time with microseconds, without a date crate.
fn utc_now() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
    log_target: Option<String>,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "log.target" => self.log_target = Some(value.to_owned()),
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}

/// The layer that formats, rate-limits and queues every event the filter lets through.
struct RateLimited;

impl<S: Subscriber> tracing_subscriber::Layer<S> for RateLimited {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut text = Text::default();
        event.record(&mut text);
        let target = text.log_target.as_deref().unwrap_or(meta.target());
        if is_normal_unmount(target, &text.message) {
            return;
        }
        text.message.push_str(&text.fields);
        let site = Site {
            callsite: meta.callsite(),
            target: text.log_target.clone(),
        };
        let shared = shared();
        if *meta.level() >= Level::DEBUG {
            // Asked for explicitly, to follow requests one by one: never summarized (still
            // queued, so a slow sink costs counted lines, not a stalled mount).
            shared.emit(line(*meta.level(), &text.message));
            return;
        }
        let mut summaries = Vec::new();
        let admitted = shared.limiter.lock().admit(
            site,
            &text.message,
            *meta.level(),
            Instant::now(),
            &mut summaries,
        );
        for s in summaries {
            shared.emit(s);
        }
        if admitted {
            shared.emit(line(*meta.level(), &text.message));
        }
    }
}

/// fuser warns "Failed to umount filesystem: Invalid argument" when the session ends because
/// `umount` already took the mount away: the normal way a mount ends, not a problem.
fn is_normal_unmount(target: &str, message: &str) -> bool {
    target.starts_with("fuser") && message.starts_with("Failed to umount") && {
        message.contains("os error 22") || message.contains("Invalid argument")
    }
}

/// Installs the logger: stderr, at `warn` unless `VAULTFS_LOG` says otherwise. No log line
/// ever holds a secret's value: the store's types redact themselves in Debug output. Records of
/// the `log` crate (fuser) go through the same filter.
///
/// The returned guard drains the queue and writes pending counts when dropped (bounded: a
/// blocked sink cannot hold exit up).
pub fn init() -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VAULTFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(RateLimited)
        .try_init();
    Guard(())
}

/// Sends every line to `path` (appended, created 0600), so `mount --log-file` keeps the lines
/// logged before the daemon detached as well as after.
pub fn to_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))?;
    *shared().sink.lock() = Sink::File(file);
    Ok(())
}

/// Starts the writer thread: from now on no thread that logs ever waits on the sink. Called
/// by the serving daemon after it forked (a thread started before `fork` would not exist in
/// the child).
pub fn start_writer() {
    spawn_writer(shared());
}

fn spawn_writer(shared: &'static Shared) {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    if shared.queue.set(tx).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("vaultfs-log".into())
        .spawn(move || writer(shared, rx));
    if spawned.is_err() {
        eprintln!("vaultfs: cannot start the log writer thread; log lines will be lost");
    }
}

fn writer(shared: &'static Shared, rx: Receiver<Msg>) {
    let tick = Duration::from_secs(1);
    let mut last = Instant::now();
    loop {
        match rx.recv_timeout(tick) {
            Ok(Msg::Line(l)) => shared.write(&l),
            Ok(Msg::Flush(done)) => {
                while let Ok(Msg::Line(l)) = rx.try_recv() {
                    shared.write(&l);
                }
                shared.write_summaries(true);
                shared.report_lost();
                let _ = done.send(());
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
        if last.elapsed() >= tick {
            last = Instant::now();
            shared.write_summaries(false);
            shared.report_lost();
        }
    }
}

/// Flushes the log at exit; see [`init`].
pub struct Guard(());

/// Drains the queue now (bounded), as at exit: for a process about to `exec` itself.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub fn flush() {
    drop(Guard(()));
}

impl Drop for Guard {
    fn drop(&mut self) {
        let shared = shared();
        match shared.queue.get() {
            Some(tx) => {
                let (done_tx, done_rx) = crossbeam_channel::bounded(1);
                if tx.send_timeout(Msg::Flush(done_tx), EXIT_WAIT).is_ok() {
                    let _ = done_rx.recv_timeout(EXIT_WAIT);
                }
            }
            None => {
                shared.write_summaries(true);
                shared.report_lost();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        struct Cs;
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unimplemented!()
            }
        }
        static CS: Cs = Cs;
        Site {
            callsite: Identifier(&CS),
            target: None,
        }
    }

    #[test]
    fn repeats_are_counted_and_summarized_once() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let mut s = Vec::new();
        assert!(l.admit(site(), "a:/x: read 1 failed", Level::WARN, t0, &mut s));
        for i in 0..999 {
            let text = format!("a:/x: read {i} failed");
            assert!(!l.admit(site(), &text, Level::WARN, t0, &mut s));
        }
        // Another path from the same place still gets its first line.
        assert!(l.admit(site(), "a:/y: read 1 failed", Level::WARN, t0, &mut s));
        assert!(s.is_empty());
        let out = l.expire(t0 + WINDOW, false);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].contains("repeated 999 times in the last 10 s"),
            "{out:?}"
        );
        assert!(l.windows.is_empty());
    }

    #[test]
    fn a_tamper_line_names_each_row_it_is_about() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let mut s = Vec::new();
        let line = |row: u32| format!("etcd: tamper: /p/r/entry/1/{row}: bad; refused");
        assert!(l.admit(site(), &line(2), Level::WARN, t0, &mut s));
        assert!(l.admit(site(), &line(3), Level::WARN, t0, &mut s));
        // The same row again is a repeat.
        assert!(!l.admit(site(), &line(3), Level::WARN, t0, &mut s));
    }

    #[test]
    fn distinct_lines_from_one_place_are_capped() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let mut s = Vec::new();
        let printed = (0..1000)
            .filter(|i| {
                let text = format!("a:/{} failed", "x".repeat(*i % 300 + 1));
                l.admit(site(), &text, Level::WARN, t0, &mut s)
            })
            .count();
        assert_eq!(printed, DISTINCT_PER_SITE);
        let out = l.expire(t0, true);
        assert!(out.iter().any(|o| o.contains("more lines like")), "{out:?}");
    }

    /// A sink that blocks (a pipe nobody reads) costs lines, counted, never a wait; once the
    /// pipe is read again the count is written.
    #[test]
    fn a_blocked_sink_drops_and_counts_lines_without_waiting() {
        use std::io::Read;
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        assert_eq!(
            nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap(),
            4096
        );
        let (mut read_end, write_end) = (
            std::fs::File::from(read_end),
            std::fs::File::from(write_end),
        );
        let shared: &'static Shared = Box::leak(Box::new(Shared::new(Sink::File(write_end))));
        spawn_writer(shared);
        let start = Instant::now();
        for i in 0..20_000 {
            shared.emit(line(Level::WARN, &format!("line {i} {}", "x".repeat(100))));
        }
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "emitting took {took:?}");
        assert!(
            shared.lost.load(Ordering::Relaxed) > 0,
            "lines were dropped"
        );
        // Read the pipe again: the writer gets going and reports what it lost.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 65536];
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let n = read_end.read(&mut buf).unwrap();
                all.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&all).contains(" after\n") {
                    return String::from_utf8_lossy(&all).into_owned();
                }
            }
            panic!("the line after the jam never came");
        });
        // One more line after the jam, as a daemon would log later.
        std::thread::sleep(Duration::from_millis(200));
        shared.emit(line(Level::WARN, "after"));
        let text = reader.join().unwrap();
        let lost: u64 = text
            .lines()
            .filter(|l| l.contains("log lines lost"))
            .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
            .sum();
        let delivered = text.lines().filter(|l| l.contains(" line ")).count() as u64;
        assert!(lost > 10_000, "{lost} lost");
        assert_eq!(lost + delivered, 20_000, "every line is written or counted");
    }

    #[test]
    fn utc_time_is_well_formed() {
        let t = utc_now();
        assert_eq!(t.len(), "2026-11-30T04:00:07.123456Z".len(), "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
