//! `vaultfs-bench fleet` (`bench/run --fleet`): a store in a real 3-member etcd cluster served
//! by three `vaultfs serve` hosts on this machine, measured in one run against its baselines:
//!
//! - rotation: `vaultfs write` of a new value, then reads through all three hosts' mounts
//!   until each shows it (write to visible at all 3: p50/p99/max), each rotation paired with the
//!   same write against a single-member etcd started beside it (the write's own latency);
//! - initial sync: a new host (a new replica) serving a vault of 10,000 secrets, from
//!   `vaultfs serve` started to the mount ready (the daemon mounts after its first sync);
//! - steady reads: whole-file reads of 1,000 secrets through a replica's mount against the same
//!   secrets through a mount of a local store, interleaved, as a ratio.
//!
//! Everything lives under the work directory; every etcd member and daemon is stopped on the
//! way out (Drop guards), also on failure or Ctrl-C.

use std::ffi::OsString;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use serde_json::json;

use crate::reader;
use crate::stats::{fmt_num, paired_ratios, quantile, Summary};
use crate::sys::{self, check_stop, MountGuard};

/// Each value is this long (as the other workloads).
const VALUE_LEN: usize = 64;
/// How long one rotation may take to reach every mount before it counts as missed.
const ROTATION_LIMIT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct FleetArgs {
    /// The vaultfs binary under test (built with `--features etcd`)
    #[arg(long, env = "VAULTFS_BIN", default_value = "target/release/vaultfs")]
    vaultfs: PathBuf,
    /// Rotations, each paired with a write to the single-member etcd
    #[arg(long, default_value_t = 200)]
    rotations: usize,
    /// Secrets synced to a new host
    #[arg(long, default_value_t = 10_000)]
    sync_secrets: usize,
    /// New hosts started (each a fresh replica of the sync vault)
    #[arg(long, default_value_t = 3)]
    sync_reps: usize,
    /// Repetitions of the replica/local read comparison
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Seconds per read sample
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Where everything lives (bench/run passes a fresh directory)
    #[arg(long)]
    workdir: PathBuf,
    /// Where to write the JSON results (a Markdown copy goes next to it)
    #[arg(long, default_value = "bench/results/fleet-latest.json")]
    out: PathBuf,
}

/// etcd members started by the bench; killed on drop.
struct Etcd {
    members: Vec<(Child, u16)>,
}

impl Etcd {
    fn start(dir: &Path, n: usize) -> Result<Etcd> {
        let listeners: Vec<TcpListener> = (0..2 * n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<_>>()?;
        drop(listeners);
        let peers: Vec<String> = (0..n)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect();
        let mut etcd = Etcd {
            members: Vec::new(),
        };
        for i in 0..n {
            let (client, peer) = (ports[2 * i], ports[2 * i + 1]);
            let log = std::fs::File::create(dir.join(format!("etcd-{n}-m{i}.log")))?;
            let child = Command::new("etcd")
                .arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(dir.join(format!("etcd-{n}-m{i}.data")))
                .arg("--listen-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--listen-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-cluster")
                .arg(peers.join(","))
                .arg("--initial-cluster-token")
                .arg(format!("bench-{n}"))
                .args(["--initial-cluster-state", "new", "--logger", "zap"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("cannot start etcd (Debian: apt-get install etcd-server)")?;
            etcd.members.push((child, client));
        }
        let endpoints = etcd
            .members
            .iter()
            .map(|(_, p)| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={endpoints}"))
                .args(["--dial-timeout=2s", "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("cannot run etcdctl (Debian: apt-get install etcd-client)")?
                .success();
            if ok {
                return Ok(etcd);
            }
            ensure!(
                Instant::now() < deadline,
                "a {n}-member etcd is not healthy within 30 s (logs in {})",
                dir.display()
            );
            check_stop()?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self, prefix: &str) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        format!("etcd://{}{prefix}", hosts.join(","))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for (c, _) in &mut self.members {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The CLI on one store, unlocked by the admin key.
struct Cli {
    bin: PathBuf,
    store: String,
    key: PathBuf,
}

impl Cli {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("VAULTFS_STORE", &self.store)
            .env("VAULTFS_KEY_FILE", &self.key)
            .env_remove("VAULTFS_LOG");
        c
    }

    fn ok(&self, args: &[&str]) -> Result<()> {
        sys::run_ok(self.cmd().args(args), args[0])
    }

    /// Runs `args` with `stdin`; whether it exited 0, and how long it took.
    fn with_stdin(&self, args: &[&str], stdin: &[u8]) -> Result<(bool, Duration)> {
        let start = Instant::now();
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(stdin)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            eprintln!(
                "bench: fleet: vaultfs {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((out.status.success(), start.elapsed()))
    }
}

/// A `vaultfs serve` host: its mounts are undone and the daemon stopped on drop.
struct Host {
    mounts: Vec<MountGuard>,
    mnt: PathBuf,
}

fn keygen_host(dir: &Path) -> Result<(PathBuf, String)> {
    let key = dir.join("host_ed25519");
    sys::run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
            .arg(&key),
        "ssh-keygen",
    )?;
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    Ok((key, public.trim().to_owned()))
}

/// Starts `vaultfs serve` for `vaults` on a new replica and waits for every mount.
fn serve(
    cli: &Cli,
    dir: &Path,
    name: &str,
    identity: &Path,
    vaults: &[&str],
) -> Result<(Host, Duration)> {
    std::fs::create_dir_all(dir)?;
    let mnt = dir.join("mnt");
    let mut config = format!(
        "store = \"{}\"\nreplica = \"{}\"\nhost = \"{name}\"\nidentity = \"{}\"\n",
        cli.store,
        dir.join("replica.db").display(),
        identity.display()
    );
    for v in vaults {
        config.push_str(&format!(
            "[[mount]]\nsource = \"{v}\"\nmountpoint = \"{}\"\n",
            mnt.join(v).display()
        ));
    }
    let cfg = dir.join("serve.toml");
    std::fs::write(&cfg, config)?;
    let log = sys::new_log(&format!("serve-{name}"));
    let start = Instant::now();
    let child = Command::new(&cli.bin)
        .env("VAULTFS_STORE", &cli.store)
        .env("VAULTFS_STATE_DIR", dir.join("state"))
        .env("VAULTFS_LOG", "info")
        .env_remove("VAULTFS_KEY_FILE")
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let pid = child.id() as i32;
    // The daemon is reaped by the harness (the subreaper); the guards stop it.
    drop(child);
    // The daemon exits once its last mount is gone: only that guard waits for it (guards drop
    // in order, so the last one is undone last).
    let mounts: Vec<MountGuard> = vaults
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let p = mnt.join(v);
            let umount: Vec<OsString> =
                vec![cli.bin.clone().into(), "umount".into(), p.clone().into()];
            let daemon = (i + 1 == vaults.len()).then_some(pid);
            MountGuard::new(&p, &format!("serve {name} {v}"), daemon, umount)
        })
        .collect();
    let host = Host { mounts, mnt };
    loop {
        if host.mounts.iter().all(|m| sys::is_mounted(&m.path)) {
            return Ok((host, start.elapsed()));
        }
        if !sys::alive(pid) {
            bail!(
                "vaultfs serve ({name}) exited before mounting:\n{}",
                sys::log_tail(&log, 8)
            );
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!(
                "vaultfs serve ({name}) did not mount within 120 s:\n{}",
                sys::log_tail(&log, 8)
            );
        }
        check_stop()?;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A value of exactly VALUE_LEN bytes, distinct per `tag`.
fn value(tag: &str) -> Vec<u8> {
    let mut v = format!("{tag}-").into_bytes();
    v.resize(VALUE_LEN, b'x');
    v
}

/// `{"s00000": "...", ...}`: `n` secrets for `import --format json`.
fn document(n: usize, tag: &str) -> Vec<u8> {
    let entries: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            let v = String::from_utf8(value(&format!("{tag}{i:05}"))).expect("ASCII");
            (format!("s{i:05}"), json!(v))
        })
        .collect();
    serde_json::to_vec(&entries).expect("JSON")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn dist(samples: &[f64]) -> serde_json::Value {
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    json!({
        "n": s.len(),
        "p50": quantile(&s, 0.5),
        "p90": quantile(&s, 0.9),
        "p99": quantile(&s, 0.99),
        "max": s.last().copied().unwrap_or(f64::NAN),
        "samples": samples,
    })
}

fn row(name: &str, samples: &[f64]) -> String {
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    format!(
        "| {name} | {} | {} | {} | {} | {} |",
        s.len(),
        fmt_num(quantile(&s, 0.5)),
        fmt_num(quantile(&s, 0.9)),
        fmt_num(quantile(&s, 0.99)),
        fmt_num(s.last().copied().unwrap_or(f64::NAN))
    )
}

pub fn run(a: FleetArgs) -> Result<()> {
    let work = &a.workdir;
    std::fs::create_dir_all(work)?;
    sys::set_log_dir(&work.join("logs"))?;
    let bin = std::fs::canonicalize(&a.vaultfs)
        .with_context(|| format!("no vaultfs binary at {}", a.vaultfs.display()))?;
    let key = work.join("admin.key");
    let keygen = Command::new(&bin)
        .arg("keygen")
        .arg(&key)
        .output()
        .context("run vaultfs keygen")?;
    ensure!(keygen.status.success(), "vaultfs keygen failed");

    eprintln!("bench: fleet: starting a 3-member and a 1-member etcd");
    let three = Etcd::start(work, 3)?;
    let one = Etcd::start(work, 1)?;
    let fleet = Cli {
        bin: bin.clone(),
        store: three.url("/vaultfs/bench"),
        key: key.clone(),
    };
    let single = Cli {
        bin: bin.clone(),
        store: one.url("/vaultfs/bench"),
        key: key.clone(),
    };
    let local = Cli {
        bin: bin.clone(),
        store: work.join("local/store.db").display().to_string(),
        key: key.clone(),
    };
    for cli in [&fleet, &single, &local] {
        cli.ok(&["init"]).with_context(|| {
            format!(
                "vaultfs init on {} (is this vaultfs built with --features etcd?)",
                cli.store
            )
        })?;
        cli.ok(&[
            "vault", "create", "rot", "--owner", "root", "--group", "root",
        ])?;
        cli.ok(&[
            "vault", "create", "small", "--owner", "root", "--group", "root",
        ])?;
    }
    for cli in [&fleet, &local] {
        let (ok, _) = cli.with_stdin(
            &["import", "--format", "json", "small"],
            &document(1_000, "small"),
        )?;
        ensure!(ok, "import of 1,000 secrets into {} failed", cli.store);
    }
    for cli in [&fleet, &single] {
        let (ok, _) = cli.with_stdin(&["write", "rot:/r"], &value("initial"))?;
        ensure!(ok, "the first write to {} failed", cli.store);
    }

    eprintln!("bench: fleet: three hosts");
    let mut hosts = Vec::new();
    for i in 1..=3 {
        let dir = work.join(format!("web{i}"));
        std::fs::create_dir_all(&dir)?;
        let (identity, public) = keygen_host(&dir)?;
        let mut args = vec!["key", "add", "--recipient", &public, "--label"];
        let label = format!("web{i}");
        args.push(&label);
        args.extend(["--vault", "rot", "--vault", "small"]);
        fleet.ok(&args)?;
        let vaults: &[&str] = if i == 1 { &["rot", "small"] } else { &["rot"] };
        hosts.push(serve(&fleet, &dir, &label, &identity, vaults)?.0);
    }

    // ----- rotations -----
    eprintln!("bench: fleet: {} rotations", a.rotations);
    let files: Vec<PathBuf> = hosts.iter().map(|h| h.mnt.join("rot/r")).collect();
    let mut visible_all = Vec::new();
    let mut write3 = Vec::new();
    let mut write1 = Vec::new();
    let mut per_host: Vec<Vec<f64>> = vec![Vec::new(); hosts.len()];
    let mut missed = 0;
    for i in 0..a.rotations {
        check_stop()?;
        let v = value(&format!("rotation{i:06}"));
        // The baseline first or second, alternately, so neither always follows the other.
        let baseline = |write1: &mut Vec<f64>| -> Result<()> {
            let (ok, took) = single.with_stdin(&["write", "rot:/r"], &v)?;
            write1.push(if ok { ms(took) } else { f64::NAN });
            Ok(())
        };
        if i % 2 == 1 {
            baseline(&mut write1)?;
        }
        let start = Instant::now();
        let (ok, took) = fleet.with_stdin(&["write", "rot:/r"], &v)?;
        write3.push(if ok { ms(took) } else { f64::NAN });
        let mut seen: Vec<Option<f64>> = vec![None; files.len()];
        while ok && seen.iter().any(Option::is_none) && start.elapsed() < ROTATION_LIMIT {
            for (j, f) in files.iter().enumerate() {
                if seen[j].is_none() && std::fs::read(f).is_ok_and(|got| got == v) {
                    seen[j] = Some(ms(start.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if ok && seen.iter().all(Option::is_some) {
            visible_all.push(ms(start.elapsed()));
            for (j, s) in seen.iter().enumerate() {
                per_host[j].push(s.unwrap_or(f64::NAN));
            }
        } else {
            missed += 1;
            visible_all.push(f64::NAN);
        }
        if i % 2 == 0 {
            baseline(&mut write1)?;
        }
    }

    // ----- initial sync of a new host -----
    eprintln!(
        "bench: fleet: {} secrets, synced to {} new hosts",
        a.sync_secrets, a.sync_reps
    );
    fleet.ok(&[
        "vault", "create", "big", "--owner", "root", "--group", "root",
    ])?;
    let (ok, import_took) = fleet.with_stdin(
        &["import", "--format", "json", "big"],
        &document(a.sync_secrets, "big"),
    )?;
    ensure!(ok, "import of {} secrets failed", a.sync_secrets);
    let mut sync_secs = Vec::new();
    for r in 0..a.sync_reps {
        check_stop()?;
        let name = format!("new{r}");
        let dir = work.join(&name);
        std::fs::create_dir_all(&dir)?;
        let (identity, public) = keygen_host(&dir)?;
        fleet.ok(&[
            "key",
            "add",
            "--recipient",
            &public,
            "--label",
            &name,
            "--vault",
            "big",
        ])?;
        let (host, took) = serve(&fleet, &dir, &name, &identity, &["big"])?;
        let listed = reader::list_once(&reader::c_path(&host.mnt.join("big"))?)?;
        ensure!(
            listed == a.sync_secrets,
            "the new host lists {listed} of {} secrets",
            a.sync_secrets
        );
        sync_secs.push(took.as_secs_f64());
        drop(host);
    }

    // ----- steady reads: replica against a local store -----
    eprintln!("bench: fleet: reads from a replica against a local store");
    let local_mnt = work.join("local-mnt");
    std::fs::create_dir_all(&local_mnt)?;
    sys::run_ok(
        local.cmd().args(["mount", "small"]).arg(&local_mnt),
        "mount-local",
    )?;
    let local_daemon = sys::find_pids(&bin, local_mnt.as_os_str()).first().copied();
    let _local_guard = MountGuard::new(
        &local_mnt,
        "local store",
        local_daemon,
        vec![
            bin.clone().into(),
            "umount".into(),
            local_mnt.clone().into(),
        ],
    );
    let replica_files = reader::list_files(&hosts[0].mnt.join("small"))?;
    let local_files = reader::list_files(&local_mnt)?;
    ensure!(
        replica_files.len() == 1_000 && local_files.len() == 1_000,
        "expected 1,000 secrets on both mounts, got {} and {}",
        replica_files.len(),
        local_files.len()
    );
    reader::read_pass(&replica_files, Some(VALUE_LEN))?;
    reader::read_pass(&local_files, Some(VALUE_LEN))?;
    let dur = Duration::from_secs_f64(a.seconds);
    let (mut replica_rate, mut local_rate) = (Vec::new(), Vec::new());
    for r in 0..a.reps {
        check_stop()?;
        let pair = |files: &[std::ffi::CString], out: &mut Vec<f64>| -> Result<()> {
            out.push(reader::read_files(files, 1, dur, Some(VALUE_LEN))?.per_sec());
            Ok(())
        };
        if r % 2 == 0 {
            pair(&replica_files, &mut replica_rate)?;
            pair(&local_files, &mut local_rate)?;
        } else {
            pair(&local_files, &mut local_rate)?;
            pair(&replica_files, &mut replica_rate)?;
        }
    }
    let ratio = Summary::of(&paired_ratios(&replica_rate, &local_rate));
    drop(hosts);

    // ----- report -----
    let mut md = String::new();
    md.push_str("## Fleet: a store in etcd, three hosts on loopback\n\n");
    md.push_str(&format!(
        "{} rotations; ms from `vaultfs write` started to the value read back (goal: p99 < 100 ms at all 3).\n\n",
        a.rotations
    ));
    md.push_str(
        "| what | n | p50 | p90 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    md.push_str(
        &(row(
            "write → visible at all 3 mounts (3-member etcd)",
            &visible_all,
        ) + "\n"),
    );
    for (j, s) in per_host.iter().enumerate() {
        md.push_str(&(row(&format!("  … at web{}", j + 1), s) + "\n"));
    }
    let after_exit: Vec<f64> = visible_all
        .iter()
        .zip(&write3)
        .map(|(v, w)| (v - w).max(0.0))
        .collect();
    md.push_str(
        &(row(
            "  … of which after `vaultfs write` exited (the sync's share)",
            &after_exit,
        ) + "\n"),
    );
    md.push_str(&(row("`vaultfs write` exits (3-member etcd)", &write3) + "\n"));
    md.push_str(&(row("`vaultfs write` exits (1-member etcd, baseline)", &write1) + "\n"));
    md.push_str(&format!(
        "\nMissed rotations (not at all 3 within {ROTATION_LIMIT:?}): {missed}.\n\n"
    ));
    let sync = Summary::of(&sync_secs);
    md.push_str(&format!(
        "Initial sync of {} secrets to a new host (serve started → mount ready, every secret listed), goal < 2 s: median {} s [{}–{}] over {} hosts (the import itself took {:.2} s).\n\n",
        a.sync_secrets,
        sync.map_or("-".into(), |s| format!("{:.2}", s.median)),
        sync.map_or("-".into(), |s| format!("{:.2}", s.min)),
        sync.map_or("-".into(), |s| format!("{:.2}", s.max)),
        sync_secs.len(),
        import_took.as_secs_f64()
    ));
    let rs = Summary::of(&replica_rate);
    let ls = Summary::of(&local_rate);
    md.push_str(&format!(
        "Reads of 1,000 secrets (open/read/close, 1 reader), replica mount vs local-store mount, goal within 10%: replica {} /s, local {} /s, ratio {} [{}–{}] over {} paired repetitions.\n",
        rs.map_or("-".into(), |s| fmt_num(s.median)),
        ls.map_or("-".into(), |s| fmt_num(s.median)),
        ratio.map_or("-".into(), |s| format!("{:.3}", s.median)),
        ratio.map_or("-".into(), |s| format!("{:.3}", s.min)),
        ratio.map_or("-".into(), |s| format!("{:.3}", s.max)),
        replica_rate.len()
    ));
    println!("{md}");
    let result = json!({
        "rotations": a.rotations,
        "visible_all_ms": dist(&visible_all),
        "visible_per_host_ms": per_host.iter().map(|s| dist(s)).collect::<Vec<_>>(),
        "write_3member_ms": dist(&write3),
        "visible_after_write_exit_ms": dist(&after_exit),
        "write_1member_ms": dist(&write1),
        "missed": missed,
        "sync_secrets": a.sync_secrets,
        "sync_s": sync_secs,
        "import_s": import_took.as_secs_f64(),
        "replica_reads_per_s": replica_rate,
        "local_reads_per_s": local_rate,
        "replica_over_local": ratio.map(|s| s.to_json()),
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
    });
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_vec_pretty(&result)?)?;
    std::fs::write(a.out.with_extension("md"), md)?;
    eprintln!("bench: fleet: wrote {}", a.out.display());
    drop(three);
    drop(one);
    Ok(())
}
