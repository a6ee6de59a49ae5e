//! `vaultfs-bench`: vaultfs against tmpfs and gocryptfs, measured side by side in one run.
//!
//! Machines are shared and noisy, so no figure stands alone: every repetition measures each
//! target back to back (the order rotates between repetitions), and vaultfs is reported as a
//! ratio to the baselines of the same repetition, as a median with its spread. Run it through
//! `bench/run`, which builds in release first. `vaultfs-bench reader ...` runs one reader
//! workload on any directory and prints JSON.

mod charts;
mod cli;
mod compare;
mod fleet;
mod large;
mod reader;
mod report;
mod revoke;
mod rotation;
mod scale;
mod setup;
mod stats;
mod steady;
mod sys;
mod targets;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::report::{Goal, Section};
use crate::stats::quantile;
use crate::sys::{check_stop, MountGuard};
use crate::targets::{Gocryptfs, Populate, Vaultfs};

/// Secrets in the small-file workloads.
const SMALL: usize = 1_000;
/// Entries in the big directory (readdir, stat, CLI cat, rotation).
const BIG: usize = 10_000;
/// Every secret is this long.
const VALUE_LEN: usize = 64;
/// The kernel-checked vaultfs mounts (`vaultfs mount --kernel-checks`), as a system.
pub const KC: &str = "vaultfs-kc";

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
    /// Open files named on stdin as uid 65534, one answer per line (the revocation workload)
    #[command(hide = true)]
    Probe,
    /// A store in a real etcd cluster served by three hosts: rotation latency to every mount
    /// (beside a single-member etcd), initial sync of a new host, replica reads vs a local store
    Fleet(fleet::FleetArgs),
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
        Some(Cmd::Probe) => revoke::probe(),
        Some(Cmd::Compare { old, new }) => compare::compare(&old, &new),
        Some(Cmd::Fleet(a)) => {
            sys::install_signal_handlers();
            sys::become_subreaper();
            fleet::run(a)
        }
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
    let mut env = setup::setup(cfg)?;
    check_stop()?;
    let (steady, ceiling) = steady::steady(&mut env)?;
    let cli = cli::cli(&mut env)?;
    let rot = rotation::rotation(&mut env)?;
    let revoked = match revoke::revocation(&mut env) {
        Ok(s) => s,
        Err(e) => {
            check_stop()?;
            env.notes.push(format!("revocation failed: {e:#}"));
            None
        }
    };
    let (large, tpl) = match large::large(&mut env) {
        Ok((l, t)) => (Some(l), t),
        Err(e) => {
            check_stop()?;
            env.notes.push(format!("large secrets failed: {e:#}"));
            (None, None)
        }
    };
    // The steady-state mounts are no longer needed; unmount them now and check that they go.
    env.unmount_all_but_tmpfs();

    let mut scale_sec: Option<Section> = None;
    if cfg.skip_scale {
        env.notes
            .push("scale workload skipped (--skip-scale)".into());
    } else if env.vfs_mounted {
        let v = env.vfs.as_ref().expect("mounted");
        match scale::scale(
            cfg,
            v,
            &env.gc,
            &env.fs,
            &env.mnt,
            &env.small_db,
            &mut env.fills,
            &mut env.notes,
        ) {
            Ok(s) => scale_sec = Some(s),
            Err(e) => {
                check_stop()?;
                env.notes.push(format!("scale workload failed: {e:#}"));
            }
        }
    } else {
        env.notes
            .push("scale workload left out: it needs a vaultfs mount".into());
    }
    let mut goals = goals(cfg, &steady, scale_sec.as_ref(), &rot, tpl.as_ref());
    goals.extend(kernel_goals(&steady, &rot, revoked.as_ref()));

    let mut sections = vec![steady];
    sections.extend(scale_sec);
    sections.push(cli);
    sections.push(rot);
    sections.extend(revoked);
    sections.extend(large);
    sections.extend(tpl);
    let out = Output {
        started,
        load_start,
        ceiling: ceiling.per_sec(),
        sections,
        goals,
    };
    output(cfg, &env, out)
}

/// What the run produced, for [`output`].
struct Output {
    started: Instant,
    load_start: String,
    ceiling: f64,
    sections: Vec<Section>,
    goals: Vec<Goal>,
}

/// The goals of the performance issues, as medians (not assertions).
fn goals(
    cfg: &Config,
    steady: &Section,
    scale_sec: Option<&Section>,
    rot: &Section,
    tpl: Option<&Section>,
) -> Vec<Goal> {
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
    if let Some(s) = scale_sec {
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

    goals.push(Goal::at_least(
        "small-file read ≥ 0.11× tmpfs",
        steady
            .metric("read_1")
            .and_then(|m| m.ratio("vaultfs", "tmpfs")),
        "×",
        0.11,
    ));
    goals.push(Goal::below(
        "stale first reads after a write = 0",
        rot.metric("rotation_stale")
            .and_then(|m| m.summary("vaultfs")),
        "reads",
        0.5,
    ));
    let _ = tpl;
    goals
}

/// The kernel-checked mode's goals (issue 17), as medians (not assertions).
fn kernel_goals(steady: &Section, rot: &Section, revoked: Option<&Section>) -> Vec<Goal> {
    vec![
        Goal::at_least(
            "kernel-checked small-file read ≥ 0.35× tmpfs",
            steady.metric("read_1").and_then(|m| m.ratio(KC, "tmpfs")),
            "×",
            0.35,
        ),
        Goal::below(
            "kernel-checked: stale first reads after a write = 0",
            rot.metric("rotation_stale").and_then(|m| m.summary(KC)),
            "reads",
            0.5,
        ),
        Goal::below(
            &format!(
                "kernel-checked: revocation seen by a new open, worst of {} < 100 ms",
                revoke::ROUNDS
            ),
            revoked
                .and_then(|s| s.metric("revoke_worst"))
                .and_then(|m| m.summary(KC)),
            "ms",
            100.0,
        ),
        Goal::below(
            "kernel-checked: opens allowed after the revoking command returned = 0",
            revoked
                .and_then(|s| s.metric("revoke_late"))
                .and_then(|m| m.summary(KC)),
            "opens",
            0.5,
        ),
    ]
}

/// Prints the Markdown tables and writes the JSON and Markdown results.
fn output(cfg: &Config, env: &setup::Env, o: Output) -> Result<()> {
    let Output {
        started,
        load_start,
        ceiling,
        sections,
        goals,
    } = o;
    let (vfs, gc_ready, fills, notes) = (env.vfs.as_ref(), env.gc_ready, &env.fills, &env.notes);
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
        for n in notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    println!("\n{md}");

    let j = json!({
        "schema": "vaultfs-bench/1",
        "meta": meta(cfg, &load_start, &load_end, started.elapsed(), vfs, gc_ready),
        "fills": fills,
        "reader_ceiling_ops_per_sec": ceiling,
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
    write_charts(cfg, &sections)
}

/// The SVG charts, next to the JSON: `<stem>-ops.svg` and `<stem>-rotation.svg`.
fn write_charts(cfg: &Config, sections: &[Section]) -> Result<()> {
    let stem = cfg
        .out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "latest".into());
    let dir = cfg.out.parent().unwrap_or(Path::new("."));
    let find = |id: &str| sections.iter().find(|s| s.id == id);
    let charts = [
        (
            "ops",
            find("steady").and_then(|s| {
                charts::ops_chart(
                    s,
                    &format!(
                        "Steady state: ops/s by system ({} secrets of {VALUE_LEN} B, median of {} repetitions)",
                        thousands(SMALL),
                        cfg.reps
                    ),
                )
            }),
        ),
        (
            "rotation",
            find("rotation").and_then(|s| {
                charts::rotation_chart(
                    s,
                    &format!(
                        "Rotation latency: write returned → new value read ({} rotations per system)",
                        cfg.rotations
                    ),
                )
            }),
        ),
    ];
    for (name, svg) in charts {
        if let Some(svg) = svg {
            let path = dir.join(format!("{stem}-{name}.svg"));
            std::fs::write(&path, svg)
                .with_context(|| format!("cannot write {}", path.display()))?;
            progress(&format!("wrote {}", path.display()));
        }
    }
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
