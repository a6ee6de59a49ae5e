//! `vaultfs-bench`: vaultfs against tmpfs and gocryptfs, measured side by side in one run.
//!
//! Machines are shared and noisy, so no figure stands alone: every repetition measures each
//! target back to back (the order rotates between repetitions), and vaultfs is reported as a
//! ratio to the baselines of the same repetition, as a median with its spread. Run it through
//! `bench/run`, which builds in release first. `vaultfs-bench reader ...` runs one reader
//! workload on any directory and prints JSON.

mod compare;
mod reader;
mod report;
mod stats;
mod sys;
mod targets;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::report::{Goal, Metric, Section};
use crate::stats::{fmt_num, quantile};
use crate::sys::{check_stop, MountGuard};
use crate::targets::{Gocryptfs, Populate, Vaultfs};

/// Secrets in the small-file workloads.
const SMALL: usize = 1_000;
/// Entries in the big directory (readdir, stat, CLI cat, rotation).
const BIG: usize = 10_000;
/// Every secret is this long.
const VALUE_LEN: usize = 64;

#[derive(Parser, Debug)]
#[command(
    name = "vaultfs-bench",
    about = "vaultfs against tmpfs and gocryptfs, side by side, in one run (needs root)",
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  bench/run                      # build in release, full run (~5 min)\n  bench/run --quick              # ~1 min\n  VAULTFS_BIN=/path/to/vaultfs bench/run --rotations 200\n  vaultfs-bench reader read /some/dir --threads 16"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one reader workload on a directory and print the result as JSON
    Reader(ReaderArgs),
    /// Compare two result files (ratios to the baselines, and vaultfs's own figures)
    Compare {
        /// The earlier run, e.g. bench/results/reference-*.json
        old: PathBuf,
        /// The later run, e.g. bench/results/latest.json
        new: PathBuf,
    },
}

#[derive(Args, Debug)]
struct ReaderArgs {
    /// read: open + read to EOF + close of every file; stat: stat of every file; readdir: full listings
    #[arg(value_enum)]
    op: Op,
    /// The directory (its regular files, not recursive)
    dir: PathBuf,
    /// Concurrent readers (read only)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// How long to run
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Op {
    Read,
    Stat,
    Readdir,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PopulateArg {
    /// `vaultfs import` if the binary has it, else the vaultfs-store crate
    Auto,
    /// `vaultfs import`
    Cli,
    /// The linked vaultfs-store crate, one transaction per secret
    Store,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The vaultfs binary under test
    #[arg(long, env = "VAULTFS_BIN", default_value = "target/release/vaultfs")]
    vaultfs: PathBuf,
    /// About a minute: 3 repetitions of 0.5 s, 200 rotations, 10 CLI calls
    #[arg(long)]
    quick: bool,
    /// Repetitions of every measurement [default: 7; --quick: 3]
    #[arg(long)]
    reps: Option<usize>,
    /// Seconds per throughput sample [default: 1.5; --quick: 0.5]
    #[arg(long)]
    seconds: Option<f64>,
    /// Rotations (write, then read through the mount) [default: 1000; --quick: 200]
    #[arg(long)]
    rotations: Option<usize>,
    /// Secrets in the scale vault [default: 100000]
    #[arg(long)]
    scale: Option<usize>,
    /// CLI calls per repetition [default: 20; --quick: 10]
    #[arg(long)]
    cat_calls: Option<usize>,
    /// Concurrent readers in the multi-reader workload
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Skip the scale workload
    #[arg(long)]
    skip_scale: bool,
    /// How vaultfs stores are filled
    #[arg(long, value_enum, default_value = "auto")]
    populate: PopulateArg,
    /// Where to write the JSON results (a Markdown copy of the tables goes next to it)
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// Free text recorded with the results, e.g. which vaultfs build this is
    #[arg(long, env = "BENCH_LABEL")]
    label: Option<String>,
    /// Scratch directory (a tmpfs is mounted inside) [default: a new /tmp/vaultfs-bench.PID]
    #[arg(long)]
    workdir: Option<PathBuf>,
}

struct Config {
    bin: PathBuf,
    reps: usize,
    dur: Duration,
    rotations: usize,
    scale: usize,
    cat_calls: usize,
    threads: usize,
    skip_scale: bool,
    populate: Populate,
    out: PathBuf,
    work: PathBuf,
    quick: bool,
    label: Option<String>,
}

impl Config {
    fn new(a: RunArgs) -> Result<Config> {
        let q = a.quick;
        let c = Config {
            bin: std::path::absolute(&a.vaultfs)?,
            reps: a.reps.unwrap_or(if q { 3 } else { 7 }),
            dur: Duration::from_secs_f64(a.seconds.unwrap_or(if q { 0.5 } else { 1.5 })),
            rotations: a.rotations.unwrap_or(if q { 200 } else { 1000 }),
            scale: a.scale.unwrap_or(100_000),
            cat_calls: a.cat_calls.unwrap_or(if q { 10 } else { 20 }),
            threads: a.threads,
            skip_scale: a.skip_scale,
            populate: match a.populate {
                PopulateArg::Auto => Populate::Auto,
                PopulateArg::Cli => Populate::Cli,
                PopulateArg::Store => Populate::Store,
            },
            out: a.out,
            work: match a.workdir {
                Some(w) => std::path::absolute(w)?,
                None => PathBuf::from(format!("/tmp/vaultfs-bench.{}", std::process::id())),
            },
            quick: q,
            label: a.label,
        };
        anyhow::ensure!(c.reps >= 1, "--reps must be at least 1");
        anyhow::ensure!(c.threads >= 1, "--threads must be at least 1");
        anyhow::ensure!(
            c.scale >= SMALL,
            "--scale must be at least {SMALL} (the scale vault holds the {SMALL} small files)"
        );
        Ok(c)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Reader(a)) => reader_cmd(a),
        Some(Cmd::Compare { old, new }) => compare::compare(&old, &new),
        None => {
            sys::install_signal_handlers();
            sys::become_subreaper();
            Config::new(cli.run).and_then(run)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn reader_cmd(a: ReaderArgs) -> Result<()> {
    let dur = Duration::from_secs_f64(a.seconds);
    let (sample, n) = match a.op {
        Op::Read | Op::Stat => {
            let files = reader::list_files(&a.dir)?;
            let n = files.len();
            // One untimed pass first: the measurement is of a warm cache.
            let s = match a.op {
                Op::Read => {
                    reader::read_pass(&files, None)?;
                    reader::read_files(&files, a.threads, dur, None)?
                }
                _ => {
                    reader::stat_pass(&files)?;
                    reader::stat_files(&files, dur)?
                }
            };
            (s, n)
        }
        Op::Readdir => {
            let c = reader::c_path(&a.dir)?;
            let n = reader::list_once(&c)?;
            (reader::readdir(&c, dur, n)?, n)
        }
    };
    let j = json!({
        "op": format!("{:?}", a.op).to_lowercase(),
        "dir": a.dir,
        "entries": n,
        "threads": a.threads,
        "ops": sample.ops,
        "secs": sample.secs,
        "ops_per_sec": sample.per_sec(),
        "ms_per_op": sample.ms_per_op(),
    });
    println!("{}", serde_json::to_string_pretty(&j)?);
    Ok(())
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

/// Mounts undone in reverse order when dropped.
#[derive(Default)]
struct Stack(Vec<MountGuard>);

impl Drop for Stack {
    fn drop(&mut self) {
        while let Some(g) = self.0.pop() {
            drop(g);
        }
    }
}

/// Dropped last: detaches anything still mounted below the work directory, then removes the
/// work directory if nothing is mounted there any more.
struct Sweep(PathBuf);

impl Drop for Sweep {
    fn drop(&mut self) {
        sys::sweep_mounts(&self.0);
        sys::reap_all();
        if !sys::mounts().iter().any(|(p, _)| p.starts_with(&self.0)) {
            let logs = self.0.join("logs");
            let keep =
                std::thread::panicking() || KEEP_LOG.load(std::sync::atomic::Ordering::SeqCst);
            if keep && logs.exists() {
                let saved =
                    std::env::temp_dir().join(format!("vaultfs-bench-logs.{}", std::process::id()));
                if std::fs::rename(&logs, &saved).is_ok() {
                    eprintln!(
                        "bench: the command logs of this run are in {}",
                        saved.display()
                    );
                }
            }
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

static KEEP_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One filesystem under test in the steady-state workloads.
struct Target {
    name: &'static str,
    /// The 1,000 small files.
    small: Vec<CString>,
    /// The 10,000-entry directory and its files.
    big_dir: CString,
    big: Vec<CString>,
}

impl Target {
    fn new(name: &'static str, small: &Path, big: &Path) -> Result<Target> {
        let t = Target {
            name,
            small: reader::list_files(small)?,
            big_dir: reader::c_path(big)?,
            big: reader::list_files(big)?,
        };
        anyhow::ensure!(
            t.small.len() == SMALL && t.big.len() == BIG,
            "{name}: found {} and {} files, expected {SMALL} and {BIG}",
            t.small.len(),
            t.big.len()
        );
        Ok(t)
    }
}

/// `items` rotated by `by`: each repetition starts with a different target.
fn rotated<T>(items: &[T], by: usize) -> impl Iterator<Item = &T> {
    let n = items.len();
    (0..n).map(move |i| &items[(i + by) % n])
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

fn run(cfg: Config) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the harness mounts tmpfs and FUSE filesystems: run it as root");
    }
    for tool in ["gocryptfs", "fusermount3", "mount", "umount", "cat"] {
        if targets::which(tool).is_none() {
            bail!("{tool} is missing (apt-get install -y gocryptfs fuse3)");
        }
    }
    if cfg.work.exists() && std::fs::read_dir(&cfg.work)?.next().is_some() {
        bail!("{} exists and is not empty", cfg.work.display());
    }
    std::fs::create_dir_all(&cfg.work)?;
    let _sweep = Sweep(cfg.work.clone());
    let result = run_in(&cfg);
    if result.is_err() && !sys::stopped() {
        KEEP_LOG.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    result
}

fn run_in(cfg: &Config) -> Result<()> {
    let started = Instant::now();
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let w = &cfg.work;
    sys::set_log_dir(&w.join("logs"))?;
    let fs = w.join("fs");
    let mnt = w.join("mnt");
    let mut stack = Stack::default();
    stack.0.push(sys::mount_tmpfs(&fs, "4g")?);
    let dur = cfg.dur;
    let mut notes: Vec<String> = Vec::new();

    // ----- setup -----
    progress(&format!(
        "setting up in {} (tmpfs; stores and gocryptfs ciphertext live there too)",
        w.display()
    ));
    let plain = fs.join("plain");
    targets::write_files(&plain.join("small"), "f", SMALL, 4)?;
    targets::write_files(&plain.join("big"), "e", BIG, 5)?;
    check_stop()?;
    let gc = Gocryptfs::init(&fs.join("gocryptfs-cipher"), &fs.join("gocryptfs-pass"))?;
    let gc_mnt = mnt.join("gocryptfs");
    let (g, gc_ready) = gc.mount(&gc_mnt)?;
    stack.0.push(g);
    targets::copy_tree(&plain, &gc_mnt)?;
    check_stop()?;

    let stores = fs.join("stores");
    std::fs::create_dir_all(&stores)?;
    let small_db = stores.join("small.db");
    let big_db = stores.join("big.db");
    let mut fills: Vec<serde_json::Value> = Vec::new();
    let mut vfs: Option<Vaultfs> = None;
    if !cfg.bin.exists() {
        notes.push(format!(
            "vaultfs left out: {} does not exist (build it, or set VAULTFS_BIN)",
            cfg.bin.display()
        ));
    } else {
        match Vaultfs::new(&cfg.bin, &fs.join("key")) {
            Ok(v) => vfs = Some(v),
            Err(e) => notes.push(format!("vaultfs left out: {e:#}")),
        }
    }
    let mut vfs_stores = false;
    if let Some(v) = &vfs {
        progress(&format!(
            "vaultfs {} ({}): mount {}, import {}",
            v.caps.version,
            v.bin.display(),
            if v.caps.mount { "yes" } else { "NO" },
            if v.caps.import { "yes" } else { "no" }
        ));
        let mut fill = |db: &Path, vault: &str, src: &Path, n: usize| -> Result<()> {
            let (took, how) = v.create_store(db, vault, src, cfg.populate)?;
            progress(&format!(
                "filled {vault} ({n} secrets) in {:.2} s via {how}",
                took.as_secs_f64()
            ));
            fills.push(
                json!({"vault": vault, "secrets": n, "secs": took.as_secs_f64(), "how": how}),
            );
            Ok(())
        };
        match fill(&small_db, "small", &plain.join("small"), SMALL)
            .and_then(|()| fill(&big_db, "big", &plain.join("big"), BIG))
        {
            Ok(()) => vfs_stores = true,
            Err(e) => notes.push(format!(
                "vaultfs left out: filling its stores failed: {e:#}"
            )),
        }
    }
    check_stop()?;

    let mut tgts = vec![
        Target::new("tmpfs", &plain.join("small"), &plain.join("big"))?,
        Target::new("gocryptfs", &gc_mnt.join("small"), &gc_mnt.join("big"))?,
    ];
    let v_small = mnt.join("vaultfs-small");
    let v_big = mnt.join("vaultfs-big");
    let mut vfs_mounted = false;
    if let (Some(v), true) = (&vfs, vfs_stores) {
        let mounted = v.mount(&small_db, "small", &v_small).and_then(|(g1, _)| {
            stack.0.push(g1);
            let (g2, _) = v.mount(&big_db, "big", &v_big)?;
            stack.0.push(g2);
            Target::new("vaultfs", &v_small, &v_big)
        });
        match mounted {
            Ok(t) => {
                tgts.push(t);
                vfs_mounted = true;
            }
            Err(e) => {
                let msg = format!(
                    "vaultfs mount is not available, so the mount workloads show only the baselines: {e:#}"
                );
                progress(&msg);
                notes.push(msg);
            }
        }
    }
    check_stop()?;

    // ----- the reader's ceiling -----
    let ceiling = reader::read_files(
        &tgts[0].small,
        1,
        dur.max(Duration::from_millis(500)),
        Some(VALUE_LEN),
    )?;
    progress(&format!(
        "reader ceiling on tmpfs (1 thread): {} ops/s",
        fmt_num(ceiling.per_sec())
    ));

    // ----- steady state: small-file reads, stat, readdir -----
    let cols: Vec<&str> = vec!["tmpfs", "gocryptfs", "vaultfs"];
    let ratio_cols = [
        ("vaultfs ÷ gocryptfs", "vaultfs", "gocryptfs"),
        ("vaultfs ÷ tmpfs", "vaultfs", "tmpfs"),
    ];
    let mut steady = Section::new(
        "steady",
        &format!(
            "Steady state: {} secrets of {VALUE_LEN} B, a {}-entry directory (warm; {} repetitions of {:.1} s, median [min–max])",
            thousands(SMALL),
            thousands(BIG),
            cfg.reps,
            dur.as_secs_f64()
        ),
        &cols,
        &ratio_cols,
    );
    let mut m_read1 = Metric::new("read_1", "small-file read, 1 reader", "ops/s", true);
    let mut m_readn = Metric::new(
        "read_n",
        &format!("small-file read, {} readers (total)", cfg.threads),
        "ops/s",
        true,
    );
    let mut m_stat = Metric::new(
        "stat",
        &format!("stat of every file ({})", thousands(BIG)),
        "ops/s",
        true,
    );
    let mut m_readdir = Metric::new(
        "readdir",
        &format!("readdir of {} entries", thousands(BIG)),
        "ms",
        false,
    );
    let mut failed: std::collections::BTreeMap<&str, String> = Default::default();
    for rep in 0..cfg.reps {
        for t in rotated(&tgts, rep) {
            if failed.contains_key(t.name) {
                continue;
            }
            let r = (|| -> Result<()> {
                check_stop()?;
                reader::read_pass(&t.small, Some(VALUE_LEN))?;
                let s = reader::read_files(&t.small, 1, dur, Some(VALUE_LEN))?;
                m_read1.push(t.name, s.per_sec());
                let s = reader::read_files(&t.small, cfg.threads, dur, Some(VALUE_LEN))?;
                m_readn.push(t.name, s.per_sec());
                Ok(())
            })();
            if let Err(e) = r {
                check_stop()?;
                failed.insert(t.name, format!("{e:#}"));
            }
        }
        for t in rotated(&tgts, rep) {
            if failed.contains_key(t.name) {
                continue;
            }
            let r = (|| -> Result<()> {
                check_stop()?;
                reader::stat_pass(&t.big)?;
                let s = reader::stat_files(&t.big, dur)?;
                m_stat.push(t.name, s.per_sec());
                reader::list_once(&t.big_dir)?;
                let s = reader::readdir(&t.big_dir, dur, BIG)?;
                m_readdir.push(t.name, s.ms_per_op());
                Ok(())
            })();
            if let Err(e) = r {
                check_stop()?;
                failed.insert(t.name, format!("{e:#}"));
            }
        }
        for m in [&mut m_read1, &mut m_readn, &mut m_stat, &mut m_readdir] {
            for c in &cols {
                m.pad(c, rep + 1);
            }
        }
        progress(&format!(
            "steady state: repetition {}/{} done",
            rep + 1,
            cfg.reps
        ));
    }
    for (t, e) in &failed {
        notes.push(format!("{t} failed during the steady-state workloads: {e}"));
    }
    let mut m_scaling = Metric::new(
        "scaling",
        &format!("{} readers ÷ 1 reader", cfg.threads),
        "×",
        true,
    );
    for c in &cols {
        if let (Some(n), Some(one)) = (m_readn.values.get(*c), m_read1.values.get(*c)) {
            for (a, b) in n.iter().zip(one) {
                m_scaling.push(c, a / b);
            }
        }
    }
    steady
        .metrics
        .extend([m_read1, m_readn, m_scaling, m_stat, m_readdir]);
    if let Some(v) = steady.metric("read_1").and_then(|m| m.summary("vaultfs")) {
        steady.notes.push(format!(
            "Reader ceiling: the same reader does {} ops/s on tmpfs (1 thread), {:.1}× the vaultfs figure, so the reader is not what limits vaultfs.",
            fmt_num(ceiling.per_sec()),
            ceiling.per_sec() / v.median
        ));
    } else {
        steady.notes.push(format!(
            "Reader ceiling: the same reader does {} ops/s on tmpfs (1 thread).",
            fmt_num(ceiling.per_sec())
        ));
    }
    steady.notes.push(format!(
        "{} cores; {} readers share them with the filesystem daemon.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cfg.threads
    ));

    // ----- CLI: cat of one secret from the 10,000-secret store -----
    progress("CLI: cat of one secret");
    let mut cli = Section::new(
        "cli",
        &format!(
            "CLI: one secret from a {}-secret store, wall time per call (median of {} calls per repetition)",
            thousands(BIG),
            cfg.cat_calls
        ),
        &["cat on tmpfs", "cat on gocryptfs", "vaultfs cat"],
        &[
            ("vaultfs ÷ cat on tmpfs", "vaultfs cat", "cat on tmpfs"),
            ("vaultfs ÷ cat on gocryptfs", "vaultfs cat", "cat on gocryptfs"),
        ],
    );
    let mut m_cat = Metric::new("cat", "cat of one secret", "ms", false);
    let cat_name = "e05000";
    let want = targets::content(cat_name);
    let cat_targets = ["cat on tmpfs", "cat on gocryptfs", "vaultfs cat"];
    let mut cat_failed: Option<String> = None;
    for rep in 0..cfg.reps {
        for t in rotated(&cat_targets, rep) {
            check_stop()?;
            let mut times = Vec::new();
            for _ in 0..cfg.cat_calls {
                let (got, took) = match *t {
                    "cat on tmpfs" => targets::cat_file(&plain.join("big").join(cat_name))?,
                    "cat on gocryptfs" => targets::cat_file(&gc_mnt.join("big").join(cat_name))?,
                    _ => match (&vfs, vfs_stores, &cat_failed) {
                        (Some(v), true, None) => {
                            match v.cat(&big_db, &format!("big:/{cat_name}")) {
                                Ok(r) => r,
                                Err(e) => {
                                    cat_failed = Some(format!("{e:#}"));
                                    break;
                                }
                            }
                        }
                        _ => break,
                    },
                };
                anyhow::ensure!(got == want, "{t}: wrong value for {cat_name}");
                times.push(ms(took));
            }
            if !times.is_empty() {
                m_cat.push(t, median(times));
            }
        }
        for c in cat_targets {
            m_cat.pad(c, rep + 1);
        }
    }
    if let Some(e) = cat_failed {
        notes.push(format!("vaultfs cat failed: {e}"));
    }
    m_cat.note = Some(
        "each call is a new process; `vaultfs cat` also unlocks the store with the key file".into(),
    );
    cli.metrics.push(m_cat);

    // ----- rotation: write, then read through the mount -----
    progress(&format!("rotation: {} writes", cfg.rotations));
    let mut rot = Section::new(
        "rotation",
        &format!(
            "Rotation: time from the write returning to the new value being read (N = {})",
            cfg.rotations
        ),
        &["tmpfs", "gocryptfs", "vaultfs"],
        &[],
    );
    let rot_name = "e09999";
    let mut m_lat = Metric::new(
        "rotation_latency",
        "write → new value read: median [min–max]",
        "ms",
        false,
    );
    let mut m_p99 = Metric::new("rotation_p99", "write → new value read: p99", "ms", false);
    let mut m_worst = Metric::new(
        "rotation_worst",
        &format!("write → new value read: worst of {}", cfg.rotations),
        "ms",
        false,
    );
    let mut m_stale = Metric::new(
        "rotation_stale",
        "first read after the write was stale",
        "reads",
        false,
    );
    let mut m_write = Metric::new("rotation_write", "the write itself (median)", "ms", false);
    let mut rot_one =
        |name: &str, file: &Path, write: &mut dyn FnMut(&[u8]) -> Result<Duration>| -> Result<()> {
            let mut lat = Vec::with_capacity(cfg.rotations);
            let mut writes = Vec::with_capacity(cfg.rotations);
            let mut stale = 0u64;
            for i in 0..cfg.rotations {
                check_stop()?;
                let value = format!("rotated {i:06} {}\n", "x".repeat(i % 32)).into_bytes();
                writes.push(ms(write(&value)?));
                let t0 = Instant::now();
                let mut first = true;
                loop {
                    let got = std::fs::read(file)
                        .with_context(|| format!("{name}: read {}", file.display()))?;
                    if got == value {
                        break;
                    }
                    if first {
                        stale += 1;
                        first = false;
                    }
                    if t0.elapsed() > Duration::from_secs(10) {
                        bail!("{name}: rotation {i}: the new value was not visible after 10 s");
                    }
                    std::thread::yield_now();
                }
                lat.push(ms(t0.elapsed()));
            }
            let mut sorted = lat.clone();
            sorted.sort_by(f64::total_cmp);
            m_p99.push(name, quantile(&sorted, 0.99));
            m_worst.push(name, *sorted.last().unwrap_or(&f64::NAN));
            m_stale.push(name, stale as f64);
            m_write.push(name, median(writes));
            for l in lat {
                m_lat.push(name, l);
            }
            Ok(())
        };
    let plain_write = |path: PathBuf| {
        move |value: &[u8]| -> Result<Duration> {
            let start = Instant::now();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, value)?;
            std::fs::rename(&tmp, &path)?;
            Ok(start.elapsed())
        }
    };
    let p = plain.join("big").join(rot_name);
    rot_one("tmpfs", &p, &mut plain_write(p.clone()))?;
    let p = gc_mnt.join("big").join(rot_name);
    rot_one("gocryptfs", &p, &mut plain_write(p.clone()))?;
    match (&vfs, vfs_mounted) {
        (Some(v), true) => {
            let addr = format!("big:/{rot_name}");
            let r = rot_one("vaultfs", &v_big.join(rot_name), &mut |value: &[u8]| {
                v.write(&big_db, &addr, value)
            });
            if let Err(e) = r {
                check_stop()?;
                notes.push(format!("vaultfs rotation failed: {e:#}"));
            }
        }
        _ => notes.push("rotation: vaultfs left out (no vaultfs mount)".into()),
    }
    rot.notes.push(
        "tmpfs and gocryptfs are written in-process (write a temporary file, rename it over the old one); vaultfs with `vaultfs write ADDR` (a new process), timed from its exit.".into(),
    );
    rot.metrics
        .extend([m_lat, m_p99, m_worst, m_stale, m_write]);

    // The steady-state mounts are no longer needed; unmount them now and check that they go.
    while let Some(mut g) = stack.0.pop() {
        if g.label == "tmpfs" {
            stack.0.push(g);
            break;
        }
        if let Err(e) = g.unmount() {
            notes.push(format!("unmount: {e:#}"));
        }
    }

    // ----- scale -----
    let mut scale_sec: Option<Section> = None;
    if cfg.skip_scale {
        notes.push("scale workload skipped (--skip-scale)".into());
    } else if let (Some(v), true) = (&vfs, vfs_mounted) {
        match scale(cfg, v, &gc, &fs, &mnt, &small_db, &mut fills, &mut notes) {
            Ok(s) => scale_sec = Some(s),
            Err(e) => {
                check_stop()?;
                notes.push(format!("scale workload failed: {e:#}"));
            }
        }
    } else {
        notes.push("scale workload left out: it needs a vaultfs mount".into());
    }

    // ----- goals -----
    let mut goals = vec![
        Goal::at_least(
            "small-file read ≥ 1.5× gocryptfs",
            steady
                .metric("read_1")
                .and_then(|m| m.ratio("vaultfs", "gocryptfs")),
            "×",
            1.5,
        ),
        Goal::at_least(
            &format!("{} readers ≥ 1.6× 1 reader", cfg.threads),
            steady.metric("scaling").and_then(|m| m.summary("vaultfs")),
            "×",
            1.6,
        ),
    ];
    let scale_label = format!("vaultfs {}k", cfg.scale / 1000);
    if let Some(s) = &scale_sec {
        goals.push(Goal::below(
            &format!("{} vault ready < 2 s", fmt_count(cfg.scale)),
            s.metric("ready").and_then(|m| m.summary(&scale_label)),
            "s",
            2.0,
        ));
        goals.push(Goal::below(
            &format!("{} vault daemon RSS < 150 MiB", fmt_count(cfg.scale)),
            s.metric("rss").and_then(|m| m.summary(&scale_label)),
            "MiB",
            150.0,
        ));
        goals.push(Goal::at_least(
            &format!(
                "{} vault read ops/s within 10% of the 1k vault",
                fmt_count(cfg.scale)
            ),
            s.metric("read")
                .and_then(|m| m.ratio(&scale_label, "vaultfs 1k")),
            "×",
            0.9,
        ));
    } else {
        for g in [
            "100k vault ready < 2 s",
            "100k vault daemon RSS < 150 MiB",
            "100k vault read ops/s within 10% of the 1k vault",
        ] {
            goals.push(Goal::below(g, None, "", 0.0));
        }
    }

    // ----- output -----
    let mut sections = vec![steady, cli, rot];
    if let Some(s) = scale_sec {
        sections.insert(1, s);
    }
    let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut md = String::new();
    md.push_str(&format!(
        "vaultfs-bench: {}{} | {} | {} cores | load {} → {} | {:.0} s{}\n\n",
        cfg.bin.display(),
        cfg.label
            .as_ref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default(),
        targets::Gocryptfs::version().unwrap_or_default(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load_start
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_end
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        started.elapsed().as_secs_f64(),
        if cfg.quick { " | --quick" } else { "" }
    ));
    for s in &sections {
        md.push_str(&s.markdown());
        md.push('\n');
    }
    md.push_str("### Goals (medians; not assertions)\n\n| goal | measured | |\n|---|---:|---|\n");
    for g in &goals {
        md.push_str(&g.markdown_row());
        md.push('\n');
    }
    if !notes.is_empty() {
        md.push_str("\n### Notes\n\n");
        for n in &notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    println!("\n{md}");

    let j = json!({
        "schema": "vaultfs-bench/1",
        "meta": meta(cfg, &load_start, &load_end, started.elapsed(), vfs.as_ref(), gc_ready),
        "fills": fills,
        "reader_ceiling_ops_per_sec": ceiling.per_sec(),
        "sections": sections.iter().map(Section::to_json).collect::<Vec<_>>(),
        "goals": goals.iter().map(Goal::to_json).collect::<Vec<_>>(),
        "notes": notes,
    });
    if let Some(dir) = cfg.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cfg.out, serde_json::to_string_pretty(&j)? + "\n")
        .with_context(|| format!("cannot write {}", cfg.out.display()))?;
    let md_path = cfg.out.with_extension("md");
    std::fs::write(&md_path, &md)?;
    progress(&format!(
        "wrote {} and {}",
        cfg.out.display(),
        md_path.display()
    ));
    Ok(())
}

/// 100000 as "100,000".
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_count(n: usize) -> String {
    if n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The scale workload: a vault of `cfg.scale` secrets against the 1,000-secret vault and
/// gocryptfs, each mounted afresh in every repetition.
#[allow(clippy::too_many_arguments)]
fn scale(
    cfg: &Config,
    v: &Vaultfs,
    gc: &Gocryptfs,
    fs: &Path,
    mnt: &Path,
    small_db: &Path,
    fills: &mut Vec<serde_json::Value>,
    notes: &mut Vec<String>,
) -> Result<Section> {
    progress(&format!("scale: writing {} files", cfg.scale));
    let src = fs.join("scale");
    // The same 1,000 small files at the root, and the rest in directories of 1,000.
    targets::write_files(&src, "f", SMALL, 4)?;
    let mut left = cfg.scale - SMALL;
    let mut d = 0;
    while left > 0 {
        let n = left.min(1000);
        targets::write_files(&src.join(format!("d{d:03}")), "g", n, 3)?;
        left -= n;
        d += 1;
        check_stop()?;
    }
    let scale_db = fs.join("stores").join("scale.db");
    let (took, how) = v.create_store(&scale_db, "scale", &src, cfg.populate)?;
    progress(&format!(
        "filled scale ({} secrets) in {:.2} s via {how}",
        cfg.scale,
        took.as_secs_f64()
    ));
    fills.push(
        json!({"vault": "scale", "secrets": cfg.scale, "secs": took.as_secs_f64(), "how": how}),
    );

    let big_label = format!("vaultfs {}k", cfg.scale / 1000);
    let tmpfs_label = format!("tmpfs {}k", cfg.scale / 1000);
    let cols = [
        "vaultfs 1k",
        big_label.as_str(),
        "gocryptfs",
        tmpfs_label.as_str(),
    ];
    let mut sec = Section::new(
        "scale",
        &format!(
            "Scale: a vault of {} secrets against the {}-secret vault (each mounted afresh per repetition; reads of the same {} files)",
            thousands(cfg.scale),
            thousands(SMALL),
            thousands(SMALL)
        ),
        &cols,
        &[
            (&format!("{} ÷ 1k", fmt_count(cfg.scale)), big_label.as_str(), "vaultfs 1k"),
            (&format!("{} ÷ gocryptfs", fmt_count(cfg.scale)), big_label.as_str(), "gocryptfs"),
        ],
    );
    let mut m_ready = Metric::new("ready", "mount → ready (key file)", "s", false);
    let mut m_first = Metric::new("first_read", "first read after ready", "ms", false);
    let mut m_rss = Metric::new("rss", "daemon RSS after mount", "MiB", false);
    let mut m_hwm = Metric::new("rss_peak", "daemon peak RSS after the reads", "MiB", false);
    let mut m_read = Metric::new("read", "small-file read, 1 reader", "ops/s", true);
    let which = ["vaultfs 1k", "scale", "gocryptfs"];
    let tmpfs_files = reader::list_files(&src)?;
    for rep in 0..cfg.reps {
        for t in rotated(&which, rep) {
            check_stop()?;
            let (label, mp) = match *t {
                "vaultfs 1k" => ("vaultfs 1k", mnt.join("scale-v1k")),
                "scale" => (big_label.as_str(), mnt.join("scale-vbig")),
                _ => ("gocryptfs", mnt.join("scale-gocryptfs")),
            };
            let (mut guard, took) = match *t {
                "vaultfs 1k" => v.mount(small_db, "small", &mp)?,
                "scale" => v.mount(&scale_db, "scale", &mp)?,
                _ => gc.mount(&mp)?,
            };
            m_ready.push(label, took.as_secs_f64());
            let daemon = guard.daemon;
            if let Some((rss, _)) = daemon.and_then(sys::rss_kib) {
                m_rss.push(label, mib(rss));
            }
            let dir = if *t == "gocryptfs" {
                mp.join("small")
            } else {
                mp.clone()
            };
            let first = reader::c_path(&dir.join("f0000"))?;
            let t0 = Instant::now();
            reader::read_whole(&first, &mut [0u8; 4096])?;
            m_first.push(label, ms(t0.elapsed()));
            let files = reader::list_files(&dir)?;
            anyhow::ensure!(
                files.len() == SMALL,
                "{label}: {} files at {}",
                files.len(),
                dir.display()
            );
            reader::read_pass(&files, Some(VALUE_LEN))?;
            let s = reader::read_files(&files, 1, cfg.dur, Some(VALUE_LEN))?;
            m_read.push(label, s.per_sec());
            if let Some((_, hwm)) = daemon.and_then(sys::rss_kib) {
                m_hwm.push(label, mib(hwm));
            }
            if let Err(e) = guard.unmount() {
                notes.push(format!("scale: unmount: {e:#}"));
            }
        }
        check_stop()?;
        let s = reader::read_files(&tmpfs_files, 1, cfg.dur, Some(VALUE_LEN))?;
        m_read.push(&tmpfs_label, s.per_sec());
        for m in [
            &mut m_ready,
            &mut m_first,
            &mut m_rss,
            &mut m_hwm,
            &mut m_read,
        ] {
            for c in &cols {
                m.pad(c, rep + 1);
            }
        }
        progress(&format!("scale: repetition {}/{} done", rep + 1, cfg.reps));
    }
    sec.metrics.extend([m_ready, m_first, m_rss, m_hwm, m_read]);
    sec.notes.push(format!(
        "gocryptfs: the same {} files in its {}-file tree. Its mount time includes scrypt (N=2^16) on the password, and its RSS up to 64 MiB of scrypt scratch memory, which Go returns to the system lazily (hence RSS after mount is either ~11 or ~74 MiB). The {}-secret store was filled via {how} in {:.1} s.",
        thousands(SMALL),
        thousands(SMALL + BIG),
        thousands(cfg.scale),
        took.as_secs_f64()
    ));
    Ok(sec)
}

fn meta(
    cfg: &Config,
    load_start: &str,
    load_end: &str,
    elapsed: Duration,
    vfs: Option<&Vaultfs>,
    gc_ready: Duration,
) -> serde_json::Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "date": date,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_start": load_start.trim(),
        "loadavg_end": load_end.trim(),
        "elapsed_secs": elapsed.as_secs_f64(),
        "repo_commit": git(&["rev-parse", "HEAD"]),
        "repo_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        "label": cfg.label,
        "vaultfs_bin": cfg.bin,
        "vaultfs_version": vfs.map(|v| v.caps.version.clone()),
        "vaultfs_mount": vfs.map(|v| v.caps.mount),
        "vaultfs_import": vfs.map(|v| v.caps.import),
        "gocryptfs": Gocryptfs::version(),
        "gocryptfs_first_mount_secs": gc_ready.as_secs_f64(),
        "options": {
            "quick": cfg.quick,
            "reps": cfg.reps,
            "seconds": cfg.dur.as_secs_f64(),
            "rotations": cfg.rotations,
            "scale": cfg.scale,
            "cat_calls": cfg.cat_calls,
            "threads": cfg.threads,
            "small": SMALL,
            "big": BIG,
            "value_len": VALUE_LEN,
        },
    })
}
