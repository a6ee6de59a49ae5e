//! `vaultfs-bench`: vaultfs against tmpfs and gocryptfs, side by side, in one run.
//!
//! The machines this runs on are shared and noisy, so every figure is measured next to its
//! baselines in the same run (repetitions interleave the targets) and reported as a median with
//! its spread and as a ratio. Run it through `bench/run`, which builds in release first.

mod targets;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::targets::{Mounted, Vaultfs};
use crate::workload as w;

struct Options {
    vaultfs: PathBuf,
    out: PathBuf,
    reps: usize,
    rounds: usize,
    scale: usize,
    rotations: usize,
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        vaultfs: PathBuf::from("target/release/vaultfs"),
        out: PathBuf::from("bench/results/latest.json"),
        reps: 5,
        rounds: 10,
        scale: 100_000,
        rotations: 1000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.reps = 3;
                o.rounds = 3;
                o.scale = 20_000;
                o.rotations = 100;
            }
            "--vaultfs" => o.vaultfs = PathBuf::from(value()?),
            "--out" => o.out = PathBuf::from(value()?),
            "--reps" => o.reps = value()?.parse()?,
            "--scale" => o.scale = value()?.parse()?,
            "--rotations" => o.rotations = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "vaultfs-bench [--quick] [--vaultfs BIN] [--out FILE] [--reps N] [--scale N] [--rotations N]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (see --help)"),
        }
    }
    o.vaultfs = std::path::absolute(&o.vaultfs)?;
    anyhow::ensure!(
        o.vaultfs.exists(),
        "{} not found: build it (bench/run does)",
        o.vaultfs.display()
    );
    Ok(o)
}

/// Median, min and max of repeated samples.
#[derive(Clone, Debug)]
struct Figure {
    samples: Vec<f64>,
}

impl Figure {
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s
    }
    fn median(&self) -> f64 {
        let s = self.sorted();
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }
    fn min(&self) -> f64 {
        self.sorted()[0]
    }
    fn max(&self) -> f64 {
        *self.sorted().last().unwrap()
    }
}

/// Results by (workload, target).
#[derive(Default)]
struct Results {
    rows: Vec<(String, String, String, Figure)>,
}

impl Results {
    fn add(&mut self, workload: &str, target: &str, unit: &str, sample: f64) {
        match self
            .rows
            .iter_mut()
            .find(|(w, t, _, _)| w == workload && t == target)
        {
            Some((_, _, _, f)) => f.samples.push(sample),
            None => self.rows.push((
                workload.into(),
                target.into(),
                unit.into(),
                Figure {
                    samples: vec![sample],
                },
            )),
        }
    }

    fn get(&self, workload: &str, target: &str) -> Option<&Figure> {
        self.rows
            .iter()
            .find(|(w, t, _, _)| w == workload && t == target)
            .map(|(_, _, _, f)| f)
    }
}

/// `n` files of `size` random-looking bytes, spread over `dirs` directories (0: flat).
fn files(prefix: &str, n: usize, size: usize, dirs: usize) -> Vec<(String, Vec<u8>)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ n as u64;
    (0..n)
        .map(|i| {
            let value: Vec<u8> = (0..size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b'a' + (state % 26) as u8
                })
                .collect();
            let name = match dirs {
                0 => format!("{prefix}{i:06}"),
                d => format!("d{:03}/{prefix}{i:06}", i % d),
            };
            (name, value)
        })
        .collect()
}

fn paths(dir: &Path, files: &[(String, Vec<u8>)]) -> Vec<PathBuf> {
    files.iter().map(|(n, _)| dir.join(n)).collect()
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("vaultfs-bench: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let o = parse_args()?;
    // SAFETY: geteuid has no preconditions.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "run as root: it mounts tmpfs, gocryptfs and vaultfs"
    );
    let root = std::env::temp_dir().join(format!("vaultfs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let result = run_all(&o, &root);
    let _ = std::fs::remove_dir_all(&root);
    let results = result?;
    report(&o, &results)
}

fn run_all(o: &Options, root: &Path) -> Result<Results> {
    let small = files("s", 1000, 64, 0);
    let listing = files("e", 10_000, 16, 0);
    let listing_files: Vec<(String, Vec<u8>)> = listing
        .iter()
        .map(|(n, v)| (format!("list/{n}"), v.clone()))
        .collect();
    let mut all = small.clone();
    all.extend(listing_files.iter().cloned());

    eprintln!("setting up tmpfs, gocryptfs and vaultfs with the same 11,000 files...");
    let tmpfs = targets::tmpfs(root, &all)?;
    let gocryptfs = targets::gocryptfs(root, &all)?;
    let vault = Vaultfs::create(&o.vaultfs, root, "vaultfs.store", &all)?;
    let (vaultfs, _) = vault.mount(&root.join("vaultfs"))?;
    let mounts: [(&str, &Mounted); 3] = [
        ("vaultfs", &vaultfs),
        ("tmpfs", &tmpfs),
        ("gocryptfs", &gocryptfs),
    ];

    let mut r = Results::default();
    for rep in 0..o.reps {
        eprintln!("repetition {}/{}", rep + 1, o.reps);
        for (name, m) in mounts {
            let small_paths = w::c_paths(&paths(&m.dir, &small));
            // Warm once: every target gets its caches filled the same way.
            w::read_files(&small_paths, 1)?;
            r.add(
                "read 1 thread",
                name,
                "ops/s",
                w::read_files(&small_paths, o.rounds)?,
            );
            r.add(
                "read 16 threads",
                name,
                "ops/s",
                w::read_files_parallel(&small_paths, o.rounds, 16)?,
            );
            r.add(
                "stat (warm)",
                name,
                "ops/s",
                w::stat_files(&small_paths, o.rounds)?,
            );
            let list_dir = m.dir.join("list");
            r.add(
                "readdir 10k",
                name,
                "ms",
                w::readdir_ms(&list_dir, listing.len())?,
            );
        }
    }

    eprintln!("vaultfs: rotation latency ({} rotations)...", o.rotations);
    rotation(o, &vault, &vaultfs.dir, &mut r)?;
    eprintln!("vaultfs: `vaultfs cat` in a 11,000-secret store...");
    for _ in 0..o.reps {
        let start = Instant::now();
        for _ in 0..20 {
            targets::run(vault.cmd().args(["cat", "v:/s000042"]))?;
        }
        r.add(
            "cli cat",
            "vaultfs",
            "ms",
            start.elapsed().as_secs_f64() * 1000.0 / 20.0,
        );
    }
    drop(vaultfs);
    drop(gocryptfs);
    drop(tmpfs);

    eprintln!("vaultfs: a vault of {} secrets...", o.scale);
    scale(o, root, &mut r)?;
    Ok(r)
}

/// Rotate a secret with `vaultfs write`, then read it through the mount at once: the read
/// must see the new value (counted if not) and its latency is the rotation latency.
fn rotation(o: &Options, vault: &Vaultfs, mnt: &Path, r: &mut Results) -> Result<()> {
    let file = w::c_paths(&[mnt.join("s000007")]).remove(0);
    let mut worst = Duration::ZERO;
    let mut stale = 0;
    let mut total = Duration::ZERO;
    for i in 0..o.rotations {
        let value = format!("rotated-{i}-{}", "x".repeat(i % 50));
        let mut child = vault
            .cmd()
            .args(["write", "v:/s000007"])
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, value.as_bytes())?;
        anyhow::ensure!(child.wait()?.success(), "vaultfs write failed");
        let start = Instant::now();
        let got = w::read_whole(&file)?;
        let took = start.elapsed();
        total += took;
        worst = worst.max(took);
        if got != value.as_bytes() {
            stale += 1;
        }
    }
    r.add(
        "rotation: first read (mean)",
        "vaultfs",
        "ms",
        total.as_secs_f64() * 1000.0 / o.rotations as f64,
    );
    r.add(
        "rotation: first read (worst)",
        "vaultfs",
        "ms",
        worst.as_secs_f64() * 1000.0,
    );
    r.add("rotation: stale reads", "vaultfs", "count", stale as f64);
    Ok(())
}

/// Mount time, RSS and read speed of a large vault, against the same reads in the small one.
fn scale(o: &Options, root: &Path, r: &mut Results) -> Result<()> {
    let big = files("b", o.scale, 64, 100);
    let vault = Vaultfs::create(&o.vaultfs, root, "scale.store", &big)?;
    let sample: Vec<(String, Vec<u8>)> = big.iter().step_by(o.scale / 1000).cloned().collect();
    for _ in 0..o.reps {
        let (m, took) = vault.mount(&root.join("scale"))?;
        r.add(
            "scale: mount to ready",
            "vaultfs",
            "ms",
            took.as_secs_f64() * 1000.0,
        );
        r.add(
            "scale: daemon RSS",
            "vaultfs",
            "MiB",
            targets::daemon_rss_kib(&m.dir)? as f64 / 1024.0,
        );
        let p = w::c_paths(&paths(&m.dir, &sample));
        w::read_files(&p, 1)?;
        r.add(
            "scale: read 1 thread",
            "vaultfs",
            "ops/s",
            w::read_files(&p, o.rounds)?,
        );
        drop(m);
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn report(o: &Options, r: &Results) -> Result<()> {
    println!(
        "\n{:<32} {:>24} {:>24} {:>22} {:>9} {:>9}",
        "workload", "vaultfs", "tmpfs", "gocryptfs", "vs tmpfs", "vs gocfs"
    );
    let cell = |f: Option<&Figure>| match f {
        Some(f) => format!("{} [{}-{}]", num(f.median()), num(f.min()), num(f.max())),
        None => "-".into(),
    };
    let mut json_rows = Vec::new();
    let mut seen = Vec::new();
    for (workload, _, unit, _) in &r.rows {
        if seen.contains(workload) {
            continue;
        }
        seen.push(workload.clone());
        let v = r.get(workload, "vaultfs");
        let t = r.get(workload, "tmpfs");
        let g = r.get(workload, "gocryptfs");
        let ratio = |b: Option<&Figure>| match (v, b) {
            (Some(v), Some(b)) if b.median() > 0.0 => Some(v.median() / b.median()),
            _ => None,
        };
        let show = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
        println!(
            "{:<32} {:>24} {:>24} {:>22} {:>9} {:>9}",
            format!("{workload} ({unit})"),
            cell(v),
            cell(t),
            cell(g),
            show(ratio(t)),
            show(ratio(g))
        );
        for (target, f) in [("vaultfs", v), ("tmpfs", t), ("gocryptfs", g)] {
            if let Some(f) = f {
                json_rows.push(json!({
                    "workload": workload, "target": target, "unit": unit,
                    "median": f.median(), "min": f.min(), "max": f.max(), "samples": f.samples,
                }));
            }
        }
    }
    let (v1, v16) = (
        r.get("read 1 thread", "vaultfs"),
        r.get("read 16 threads", "vaultfs"),
    );
    let (small, large) = (v1, r.get("scale: read 1 thread", "vaultfs"));
    let derived = json!({
        "read_vs_gocryptfs": v1.zip(r.get("read 1 thread", "gocryptfs")).map(|(a, b)| a.median() / b.median()),
        "scaling_16_over_1": v1.zip(v16).map(|(a, b)| b.median() / a.median()),
        "scale_read_vs_small_vault": small.zip(large).map(|(a, b)| b.median() / a.median()),
    });
    println!(
        "\nvaultfs 16 readers / 1 reader: {}; large vault reads / small vault reads: {}",
        derived["scaling_16_over_1"], derived["scale_read_vs_small_vault"]
    );
    println!(
        "figures: median [min-max] of the repetitions; ratios: vaultfs median / baseline median"
    );
    let doc = json!({
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "cpus": std::thread::available_parallelism()?.get(),
        "repetitions": o.reps,
        "rounds": o.rounds,
        "scale": o.scale,
        "rotations": o.rotations,
        "results": json_rows,
        "derived": derived,
    });
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("wrote {}", o.out.display());
    Ok(())
}

/// A figure for the table: whole numbers when large, a few decimals when small.
fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}
