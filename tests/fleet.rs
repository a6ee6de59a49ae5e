//! A store in a real 3-member etcd cluster and three hosts (three `vaultfs serve` daemons, each
//! in its own temp dir with its own scoped host slot and local replica): every store command
//! against etcd, rotations reaching every mount, the leader killed mid-rotation, the whole
//! cluster stopped and restarted, compaction and defragmentation under load, a removed host,
//! rows rolled back or garbled directly in etcd, `fleet status`, and concurrent writers.
//!
//! Fleet tests run one at a time (each starts a cluster and three daemons; in parallel on a
//! small machine, etcd's elections would time out for reasons no test is about).

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{assert_fails, assert_success, code, random_name, run_command, TestStore};
use crate::etcd::{have_etcd, Cluster, Kv};
use crate::hostkeys::{age_key, ssh_key};
use crate::mounts::{can_mount, is_mounted, wait_until, within, MountGuard};

/// How long a value may take to reach a mount before a test calls it lost. Far above the
/// goal (100 ms): this bounds a hang, it does not measure (bench/ does).
const PROPAGATION: Duration = Duration::from_secs(15);
/// How long a read through a mount may take while etcd is down: reads never wait on etcd.
const READ_BOUND: Duration = Duration::from_secs(2);
/// How long `vaultfs write` may take to fail with etcd down (its timeouts are ~3 s).
const WRITE_FAIL_BOUND: Duration = Duration::from_secs(15);

static ONE_FLEET_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One host: a `vaultfs serve` daemon with its own dir, identity, replica and mount.
pub struct Host {
    /// Its name (`web1`...), also its slot's label and its ack key.
    pub name: String,
    /// Its own directory: identity, replica, config, log, TMPDIR, state.
    pub dir: PathBuf,
    /// Its host key (age identity or OpenSSH ed25519 private key).
    pub identity: PathBuf,
    /// The mount of the fleet's vault.
    pub mnt: PathBuf,
    /// The replica the daemon keeps.
    pub replica: PathBuf,
    /// The daemon's stderr (VAULTFS_LOG=info).
    pub log: PathBuf,
    child: Option<Child>,
    _guard: MountGuard,
}

impl Host {
    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reads `path` (relative to the mount) with a bound: a hang fails the test.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let file = self.mnt.join(path.trim_start_matches('/'));
        within(READ_BOUND * 5, "a read through a fleet mount", move || {
            std::fs::read(file).ok()
        })
    }

    /// Waits (bounded) until `path` reads `value` through this host's mount.
    pub fn wait_value(&self, path: &str, value: &[u8]) {
        let start = Instant::now();
        loop {
            if self.read(path).as_deref() == Some(value) {
                return;
            }
            assert!(
                start.elapsed() < PROPAGATION,
                "{}: {path} never showed the value written {:?} ago; it shows {:?}\nlog:\n{}",
                self.name,
                PROPAGATION,
                self.read(path)
                    .map(|v| String::from_utf8_lossy(&v).into_owned()),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until `path` is gone from this host's mount.
    pub fn wait_gone(&self, path: &str) {
        let file = self.mnt.join(path.trim_start_matches('/'));
        wait_until(PROPAGATION, &format!("{}: {path} to go", self.name), || {
            !file.exists()
        });
    }

    /// The daemon's pid (to show it was never restarted).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    /// Every file the host keeps on disk (its dir, the mount excluded): replica, state, logs.
    pub fn disk_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let path = entry.path();
            if path == self.mnt {
                continue;
            }
            if path.is_dir() {
                out.extend(crate::common::files_under(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    /// Whether the daemon is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `sig` to the daemon (SIGSTOP/SIGCONT to freeze its sync).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A frozen daemon must be thawed to hear SIGTERM.
            // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGCONT);
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A cluster, a store in it (administered with a key file), one vault, and hosts serving it.
/// Drops hosts (daemons, mounts) first, then the cluster, then the temp dir.
pub struct Fleet {
    /// The hosts, `web1`...
    pub hosts: Vec<Host>,
    /// The etcd cluster.
    pub cluster: Cluster,
    /// The admin's view: `VAULTFS_STORE=etcd://...`, `VAULTFS_KEY_FILE` the first slot.
    pub admin: TestStore,
    /// The key prefix of the store in etcd (`/vaultfs/<random>`).
    pub prefix: String,
    /// The vault every host mounts.
    pub vault: String,
    /// The store address the next host's daemon gets, when not the admin's.
    url_override: Option<String>,
    /// Extra environment of the admin's commands (etcd TLS and user options).
    pub admin_env: Vec<(String, String)>,
    /// Extra top-level lines of every host's serve config (etcd TLS and user keys).
    pub host_config: String,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Fleet {
    /// A cluster and an initialized store with one vault, no hosts yet.
    pub fn store_only() -> Fleet {
        let serial = ONE_FLEET_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("vaultfs-fleet-")
            .tempdir()
            .expect("create a temp dir");
        let cluster = Cluster::start(dir.path(), 3);
        let prefix = format!("/vaultfs/{}", random_name());
        let admin = TestStore {
            store: PathBuf::from(cluster.store_url(&prefix)),
            key: dir.path().join("admin.key"),
            dir,
        };
        std::fs::create_dir(admin.tmpdir()).unwrap();
        admin.ok(&["keygen", admin.key.to_str().unwrap()]);
        admin.ok(&["init"]);
        let vault = random_name();
        admin.vault(&vault, &["--owner", "root", "--group", "root"]);
        Fleet {
            hosts: Vec::new(),
            cluster,
            admin,
            prefix,
            vault,
            url_override: None,
            admin_env: Vec::new(),
            host_config: String::new(),
            _serial: serial,
        }
    }

    /// A store and `n` hosts, each mounting the vault from its replica.
    pub fn new(n: usize) -> Fleet {
        let mut fleet = Fleet::store_only();
        fleet.admin.write(&fleet.addr("/seed"), b"seed-0");
        for i in 1..=n {
            fleet.add_host(&format!("web{i}"));
        }
        fleet
    }

    /// `VAULT:/PATH` in the fleet's vault.
    pub fn addr(&self, path: &str) -> String {
        format!("{}:{path}", self.vault)
    }

    /// The store address (`etcd://.../PREFIX`).
    pub fn url(&self) -> String {
        self.admin.store.to_str().unwrap().to_owned()
    }

    /// Adds a host: its own key (odd hosts age, even hosts ssh-ed25519), a slot scoped to the
    /// vault labelled with its name, then `vaultfs serve` with a replica, waiting (bounded) for
    /// its mount.
    pub fn add_host(&mut self, name: &str) -> &Host {
        let dir = self.admin.path(&format!("host-{name}"));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let (identity, public) = if self.hosts.len() % 2 == 0 {
            age_key(&dir, "identity")
        } else {
            ssh_key(&dir, "identity", "ed25519")
        };
        self.admin_ok(&[
            "key",
            "add",
            "--recipient",
            &public,
            "--label",
            name,
            "--vault",
            &self.vault,
        ]);
        let host = self.serve(name, &dir, &identity);
        self.hosts.push(host);
        self.hosts.last().unwrap()
    }

    /// Like [`add_host`](Self::add_host), the daemon given its own store address (the same
    /// prefix, other endpoints).
    pub fn add_host_at(&mut self, name: &str, url: &str) -> &Host {
        let saved = self.url_override.replace(url.to_owned());
        self.add_host(name);
        self.url_override = saved;
        self.hosts.last().unwrap()
    }

    fn serve(&self, name: &str, dir: &Path, identity: &Path) -> Host {
        let mnt = dir.join("mnt");
        let replica = dir.join("replica.db");
        let log = dir.join("serve.log");
        let config = dir.join("serve.toml");
        let url = self.url_override.clone().unwrap_or_else(|| self.url());
        std::fs::write(
            &config,
            format!(
                "store = \"{}\"\nreplica = \"{}\"\nhost = \"{name}\"\nidentity = \"{}\"\n{}\
                 [[mount]]\nsource = \"{}\"\nmountpoint = \"{}\"\n",
                url,
                replica.display(),
                identity.display(),
                self.host_config,
                self.vault,
                mnt.display()
            ),
        )
        .unwrap();
        let child = self
            .admin
            .cmd_without_key()
            .env("VAULTFS_LOG", "info")
            // VAULTFS_STORE wins over the config's `store`: the same address.
            .env("VAULTFS_STORE", &url)
            .env("TMPDIR", dir.join("tmp"))
            .env("VAULTFS_STATE_DIR", dir.join("state"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("spawn vaultfs serve");
        let mut host = Host {
            name: name.to_owned(),
            dir: dir.to_owned(),
            identity: identity.to_owned(),
            mnt: mnt.clone(),
            replica,
            log,
            child: Some(child),
            _guard: MountGuard { path: mnt.clone() },
        };
        let start = Instant::now();
        while !is_mounted(&mnt) {
            assert!(
                host.alive(),
                "{name}: vaultfs serve exited before mounting:\n{}",
                host.log()
            );
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name}: no mount within 30 s:\n{}",
                host.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        host
    }

    /// Writes `value` at `path` with the CLI (asserting exit 0).
    pub fn write(&self, path: &str, value: &[u8]) {
        let addr = self.addr(path);
        let out = self.admin_run(&["write", &addr], value);
        assert_success(&out, &["write", &addr]);
    }

    /// `vaultfs ARGS` as the admin, with [`admin_env`](Self::admin_env).
    pub fn admin_run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = self.admin.cmd();
        cmd.envs(self.admin_env.iter().map(|(k, v)| (k, v)))
            .args(args);
        run_command(&mut cmd, stdin)
    }

    /// Like [`admin_run`](Self::admin_run), asserting exit 0; stdout.
    pub fn admin_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.admin_run(args, b"");
        assert_success(&out, args);
        out.stdout
    }

    /// Waits (bounded) until every host's mount shows `value` at `path`.
    pub fn wait_everywhere(&self, path: &str, value: &[u8]) {
        for h in &self.hosts {
            h.wait_value(path, value);
        }
    }

    /// Every key under the store's prefix, with raw values.
    pub fn dump(&self) -> Vec<Kv> {
        self.cluster.dump(&self.prefix)
    }
}

/// The keys whose value changed between two dumps (present in both), acks excluded.
fn changed(before: &[Kv], after: &[Kv], prefix: &str) -> Vec<(Kv, Kv)> {
    let acks = format!("{prefix}/acks/");
    after
        .iter()
        .filter(|a| !a.key.starts_with(acks.as_bytes()))
        .filter_map(|a| {
            before
                .iter()
                .find(|b| b.key == a.key && b.value != a.value)
                .map(|b| (b.clone(), a.clone()))
        })
        .collect()
}

/// Lines of `host`'s log that say "tamper" and name `key`. The store head is the exception:
/// a head put back alone is seen as the rows it no longer covers, and the line may name one of
/// those instead, so for it any tamper line naming a key of the same prefix counts.
fn tamper_lines(host: &Host, key: &str) -> usize {
    let named = match key.strip_suffix("/head") {
        Some(prefix) => format!("{prefix}/"),
        None => key.to_owned(),
    };
    host.log()
        .lines()
        .filter(|l| l.contains("tamper") && l.contains(&named))
        .count()
}

/// Waits (bounded) for one more tamper line naming `key` than the `seen` before.
fn wait_tamper(host: &Host, key: &str, seen: usize) {
    let start = Instant::now();
    while tamper_lines(host, key) <= seen {
        assert!(
            start.elapsed() < PROPAGATION,
            "{}: no tamper line naming {key} within {PROPAGATION:?}; log:\n{}",
            host.name,
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fleet_ready() -> bool {
    have_etcd() && can_mount()
}

/// `vaultfs ARGS` with `stdin`, timed.
fn timed(ts: &TestStore, args: &[&str], stdin: &[u8]) -> (Output, Duration) {
    let start = Instant::now();
    let out = ts.run(args, stdin);
    (out, start.elapsed())
}

#[test]
fn every_store_command_works_against_etcd_and_etcd_sees_only_ciphertext() {
    if !have_etcd() {
        return;
    }
    let fleet = Fleet::store_only();
    let ts = &fleet.admin;
    let v = &fleet.vault;
    let value = format!("plain-{}", random_name());
    ts.write(&format!("{v}:/db/password"), value.as_bytes());
    assert_eq!(ts.cat(&format!("{v}:/db/password")), value.as_bytes());
    ts.ok(&["mkdir", &format!("{v}:/empty")]);
    assert_eq!(ts.ok_text(&["ls", v]), "db/\nempty/\n");
    ts.ok(&["mv", &format!("{v}:/db/password"), &format!("{v}:/db/pw")]);
    assert_eq!(ts.ok_text(&["ls", &format!("{v}:/db")]), "pw\n");
    assert_eq!(ts.cat(&format!("{v}:/db/pw")), value.as_bytes());
    ts.ok(&["acl", "set", &format!("{v}:/db/pw"), "--mode", "0440"]);
    let acl = ts.ok_text(&["acl", "show", &format!("{v}:/db/pw"), "--json"]);
    assert!(acl.contains("440"), "{acl}");
    ts.write(&format!("{v}:/gone"), b"x");
    ts.ok(&["rm", &format!("{v}:/gone")]);
    let line = ts.fails(&["cat", &format!("{v}:/gone")], 1);
    assert!(line.contains("/gone"), "{line}");
    let vaults = ts.ok_text(&["vault", "list"]);
    assert!(vaults.contains(v.as_str()), "{vaults}");
    let (_, recipient) = age_key(ts.dir.path(), "host.key");
    ts.ok(&[
        "key",
        "add",
        "--recipient",
        &recipient,
        "--label",
        "web9",
        "--vault",
        v,
    ]);
    let slots: serde_json::Value =
        serde_json::from_slice(&ts.ok(&["key", "list", "--json"])).unwrap();
    assert_eq!(slots.as_array().unwrap().len(), 2, "{slots}");
    assert!(
        slots
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["label"] == "web9"),
        "{slots}"
    );
    // import is batched under etcd's 128 operations per transaction, and says so.
    let doc: serde_json::Map<String, serde_json::Value> = (0..300)
        .map(|i| {
            (
                format!("k{i:03}"),
                serde_json::json!(format!("imported-{i}")),
            )
        })
        .collect();
    let out = ts.run(
        &["import", "--format", "json", &format!("{v}:/bulk")],
        &serde_json::to_vec(&doc).unwrap(),
    );
    assert_success(&out, &["import"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("etcd transactions"), "{said}");
    assert_eq!(
        ts.ok_text(&["ls", &format!("{v}:/bulk")]).lines().count(),
        300
    );
    assert_eq!(ts.cat(&format!("{v}:/bulk/k299")), b"imported-299");
    // A template is stored there too (its text; cat renders it).
    let out = ts.run(
        &["template", "set", &format!("{v}:/conf")],
        format!("pw={{{{ {v}:/db/pw }}}}\n").as_bytes(),
    );
    assert_success(&out, &["template", "set"]);
    assert_eq!(
        ts.cat(&format!("{v}:/conf")),
        format!("pw={value}\n").as_bytes()
    );
    // A value over the cap is refused before anything is sent, saying the cap.
    let out = ts.run(&["write", &format!("{v}:/big")], &vec![b'x'; 2 << 20]);
    let line = assert_fails(&out, &["write", "(2 MiB)"], code(&out));
    assert!(line.contains("1 MiB"), "{line}");
    // A second process sees the same state: it lives in etcd, not in a local file.
    assert!(!ts.dir.path().join("store").exists());
    // etcd holds ciphertext only: no value, vault name or path in any key or value.
    let dump = fleet.dump();
    assert!(!dump.is_empty(), "nothing under {}", fleet.prefix);
    for kv in &dump {
        for needle in [
            value.as_bytes(),
            v.as_bytes(),
            b"password",
            b"db/pw",
            b"imported-",
            b"bulk",
            b"pw={{",
        ] {
            assert!(
                !crate::common::contains(&kv.key, needle)
                    && !crate::common::contains(&kv.value, needle),
                "etcd key {} holds {:?} in clear",
                kv.key_text(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn etcd_unreachable_is_one_line_naming_the_endpoints_within_bounds() {
    if !have_etcd() {
        return;
    }
    let mut fleet = Fleet::store_only();
    fleet.cluster.stop_all();
    let endpoint = format!("127.0.0.1:{}", fleet.cluster.members[0].client_port);
    for args in [
        vec!["cat".to_owned(), fleet.addr("/x")],
        vec!["ls".to_owned(), fleet.vault.clone()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, took) = timed(&fleet.admin, &args, b"");
        let line = assert_fails(&out, &args, 1);
        assert!(took < WRITE_FAIL_BOUND, "{args:?} took {took:?}");
        assert!(line.contains(&endpoint), "{line}");
    }
    let (out, took) = timed(&fleet.admin, &["write", &fleet.addr("/x")], b"value");
    let line = assert_fails(&out, &["write"], 1);
    assert!(took < WRITE_FAIL_BOUND, "write took {took:?}");
    assert!(line.contains(&endpoint), "{line}");
    assert!(!line.contains("value"), "{line}");
}

#[test]
fn three_hosts_see_every_rotation() {
    if !fleet_ready() {
        return;
    }
    let fleet = Fleet::new(3);
    fleet.wait_everywhere("/seed", b"seed-0");
    for i in 0..30 {
        let value = format!("rotation-{i}-{}", random_name());
        fleet.write("/rot", value.as_bytes());
        fleet.wait_everywhere("/rot", value.as_bytes());
    }
    // Each host keeps its own encrypted replica: the value is in no host file in clear.
    let last = fleet.hosts[0].read("/rot").unwrap();
    for h in &fleet.hosts {
        assert!(
            h.replica.exists(),
            "{}: no replica at {}",
            h.name,
            h.replica.display()
        );
        for f in h.disk_files() {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(
                !crate::common::contains(&bytes, &last),
                "{} holds a secret in clear",
                f.display()
            );
        }
    }
    // A delete reaches every mount too.
    fleet.admin.ok(&["rm", &fleet.addr("/seed")]);
    for h in &fleet.hosts {
        h.wait_gone("/seed");
    }
    // The hosts' slots are scoped: a host key opens its vault, not another one.
    let other = random_name();
    fleet.admin.vault(&other, &[]);
    fleet.admin.write(&format!("{other}:/s"), b"other");
    let mut cmd = fleet.admin.cmd_without_key();
    cmd.env("VAULTFS_IDENTITY", &fleet.hosts[0].identity)
        .args(["cat", &format!("{other}:/s")]);
    let out = run_command(&mut cmd, b"");
    assert_fails(&out, &["cat"], 2);
}

#[test]
fn fleet_status_shows_every_host_converged_after_a_write() {
    if !fleet_ready() {
        return;
    }
    let fleet = Fleet::new(3);
    fleet.write("/s", b"v1");
    fleet.wait_everywhere("/s", b"v1");
    let start = Instant::now();
    loop {
        let text = fleet.admin.ok_text(&["fleet", "status"]);
        let lines: Vec<&str> = text.lines().collect();
        let all = fleet.hosts.iter().all(|h| {
            lines.iter().any(|l| {
                l.split_whitespace().next() == Some(&h.name) && l.contains("converged=yes")
            })
        });
        if all {
            break;
        }
        assert!(
            start.elapsed() < PROPAGATION,
            "fleet status never showed every host converged:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&fleet.admin.ok(&["fleet", "status", "--json"])).unwrap();
    let rows = json
        .as_array()
        .or_else(|| json["hosts"].as_array())
        .unwrap_or_else(|| panic!("fleet status --json: {json}"));
    for h in &fleet.hosts {
        let row = rows
            .iter()
            .find(|r| r["host"] == h.name.as_str())
            .unwrap_or_else(|| panic!("{} missing: {json}", h.name));
        assert_eq!(row["converged"], true, "{json}");
    }
    // A host that stops acking (frozen) is shown as not converged after the next write.
    fleet.hosts[2].signal(libc::SIGSTOP);
    fleet.write("/s", b"v2");
    fleet.hosts[0].wait_value("/s", b"v2");
    fleet.hosts[1].wait_value("/s", b"v2");
    let text = fleet.admin.ok_text(&["fleet", "status"]);
    let web3 = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("web3"))
        .unwrap_or_else(|| panic!("no web3 line:\n{text}"));
    assert!(web3.contains("converged=no"), "{text}");
    fleet.hosts[2].signal(libc::SIGCONT);
    fleet.hosts[2].wait_value("/s", b"v2");
}

#[test]
fn killing_the_leader_mid_rotations_loses_no_committed_write() {
    if !fleet_ready() {
        return;
    }
    let mut fleet = Fleet::new(3);
    fleet.wait_everywhere("/seed", b"seed-0");
    // Writes of distinct keys and one rotating key, on a thread; each records whether it exited 0.
    let committed: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let committed = committed.clone();
        let stop = stop.clone();
        let cmd_env = fleet.admin.cmd();
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = cmd_env
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        let vault = fleet.vault.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            let mut failures = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 400 {
                let path = format!("/k/{i}");
                let value = format!("v{i}-{}", random_name());
                let mut cmd = std::process::Command::new(crate::common::vaultfs_bin());
                cmd.envs(envs.iter().map(|(k, v)| (k, v)))
                    .args(["write", &format!("{vault}:{path}")]);
                let out = run_command(&mut cmd, value.as_bytes());
                if out.status.success() {
                    committed.lock().unwrap().push((path, value));
                } else {
                    failures += 1;
                    let err = String::from_utf8_lossy(&out.stderr).into_owned();
                    assert_eq!(err.lines().count(), 1, "not one line: {err}");
                    assert!(!err.contains("panicked"), "{err}");
                }
                i += 1;
            }
            failures
        })
    };
    let count = |c: &Arc<Mutex<Vec<(String, String)>>>| c.lock().unwrap().len();
    wait_until(Duration::from_secs(60), "10 writes before the kill", || {
        count(&committed) >= 10
    });
    let leader = fleet.cluster.wait_leader();
    fleet.cluster.kill(leader);
    let at_kill = count(&committed);
    // Propagation continues on the two members left: more writes commit.
    wait_until(Duration::from_secs(60), "10 writes after the kill", || {
        count(&committed) >= at_kill + 10
    });
    // The old leader comes back and catches up; a second leader dies too.
    fleet.cluster.restart(leader);
    fleet.cluster.wait_healthy();
    let second = fleet.cluster.wait_leader();
    fleet.cluster.kill(second);
    let at_second = count(&committed);
    wait_until(
        Duration::from_secs(60),
        "10 writes after the second kill",
        || count(&committed) >= at_second + 10,
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let failures = writer.join().expect("the writer thread");
    // With one member of three down and a leader elected, the cluster has its quorum: every
    // command succeeds, whichever endpoint the client picks first.
    fleet.cluster.wait_leader();
    for i in 0..20 {
        let path = format!("/quorum/{i}");
        let value = format!("q{i}");
        let out = fleet
            .admin
            .run(&["write", &fleet.addr(&path)], value.as_bytes());
        assert_success(&out, &["write", &path, "(2 of 3 members up)"]);
        let out = fleet.admin.run(&["cat", &fleet.addr(&path)], b"");
        assert_success(&out, &["cat", &path, "(2 of 3 members up)"]);
        assert_eq!(out.stdout, value.as_bytes());
    }
    fleet.cluster.restart(second);
    fleet.cluster.wait_healthy();
    let committed = committed.lock().unwrap().clone();
    // Every write that exited 0 is visible at every host, and in the store.
    for (path, value) in &committed {
        fleet.wait_everywhere(path, value.as_bytes());
    }
    let listed = fleet.admin.ok_text(&["ls", &fleet.addr("/k")]);
    for (path, _) in &committed {
        let name = path.trim_start_matches("/k/");
        assert!(
            listed.lines().any(|l| l == name),
            "{path} committed but not listed"
        );
    }
    eprintln!(
        "leader kill: {} writes committed, {failures} failed with one line",
        committed.len()
    );
    // And a write after all that still reaches every host.
    fleet.write("/after", b"after");
    fleet.wait_everywhere("/after", b"after");
}

#[test]
fn with_every_member_down_mounts_serve_and_writes_fail_then_hosts_converge() {
    if !fleet_ready() {
        return;
    }
    let mut fleet = Fleet::new(3);
    fleet.write("/dir/a", b"last-known");
    fleet.wait_everywhere("/dir/a", b"last-known");
    let pids: Vec<u32> = fleet.hosts.iter().map(Host::pid).collect();
    fleet.cluster.stop_all();
    // Give the sync tasks time to notice and retry against nothing.
    std::thread::sleep(Duration::from_secs(2));
    for h in &fleet.hosts {
        for _ in 0..5 {
            let dir = h.mnt.join("dir");
            let file = dir.join("a");
            let start = Instant::now();
            let (listing, meta, value) = within(READ_BOUND, "ls/stat/open with etcd down", {
                let (dir, file) = (dir.clone(), file.clone());
                move || {
                    let listing: Vec<String> = std::fs::read_dir(&dir)
                        .map(|rd| {
                            rd.filter_map(|e| e.ok())
                                .map(|e| e.file_name().to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    let meta = std::fs::metadata(&file).map(|m| m.len()).ok();
                    let value = std::fs::read(&file).ok();
                    (listing, meta, value)
                }
            });
            assert!(start.elapsed() < READ_BOUND);
            assert_eq!(listing, ["a"], "{}", h.name);
            assert_eq!(meta, Some(10), "{}", h.name);
            assert_eq!(value.as_deref(), Some(&b"last-known"[..]), "{}", h.name);
        }
    }
    let (out, took) = timed(&fleet.admin, &["write", &fleet.addr("/dir/a")], b"lost");
    let line = assert_fails(&out, &["write"], 1);
    assert!(took < WRITE_FAIL_BOUND, "the write took {took:?} to fail");
    let endpoint = format!("127.0.0.1:{}", fleet.cluster.members[0].client_port);
    assert!(line.contains(&endpoint), "{line}");
    eprintln!("write with etcd down: {took:?}: {line}");
    fleet.cluster.restart_all();
    fleet.write("/dir/a", b"after-restart");
    fleet.wait_everywhere("/dir/a", b"after-restart");
    for (h, pid) in fleet.hosts.iter_mut().zip(pids) {
        assert!(h.alive(), "{} exited:\n{}", h.name, h.log());
        assert_eq!(h.pid(), pid, "{} was restarted", h.name);
    }
}

#[test]
fn compaction_and_defrag_under_load_leave_no_stale_value() {
    if !fleet_ready() {
        return;
    }
    let mut fleet = Fleet::new(2);
    // web3 talks to member m2 only: with m2 down its watch is gone, and when m2 is back the
    // revision web3 would resume from has been compacted away.
    let only_m2 = fleet.cluster.store_url_of(&[2], &fleet.prefix);
    fleet.add_host_at("web3", &only_m2);
    fleet.write("/doomed", b"doomed");
    fleet.write("/load", b"load-start");
    fleet.wait_everywhere("/doomed", b"doomed");
    fleet.cluster.stop(2);
    fleet.admin.ok(&["rm", &fleet.addr("/doomed")]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let last: Arc<Mutex<Option<String>>> = Arc::default();
    let writer = {
        let (stop, last) = (stop.clone(), last.clone());
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = fleet
            .admin
            .cmd()
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        let addr = fleet.addr("/load");
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let value = format!("load-{n}-{}", random_name());
                let mut cmd = std::process::Command::new(crate::common::vaultfs_bin());
                cmd.envs(envs.iter().map(|(k, v)| (k, v)))
                    .args(["write", &addr]);
                let out = run_command(&mut cmd, value.as_bytes());
                assert_success(&out, &["write", &addr]);
                *last.lock().unwrap() = Some(value);
                n += 1;
            }
            n
        })
    };
    // Compaction and defragmentation of the live members while the writer runs; web1 and web2
    // follow throughout.
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        let rev = fleet.cluster.compact_and_defrag();
        eprintln!("compaction round {round} at revision {rev}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let writes = writer.join().expect("the writer");
    assert!(writes > 3, "only {writes} writes under load");
    fleet.cluster.compact_and_defrag();
    let last = last.lock().unwrap().clone().unwrap();
    fleet.hosts[0].wait_value("/load", last.as_bytes());
    fleet.hosts[1].wait_value("/load", last.as_bytes());
    // m2 comes back (and applies the compaction); web3 resumes, finds its revision compacted,
    // re-reads the prefix: the last value, and the secret deleted meanwhile is gone.
    fleet.cluster.restart(2);
    fleet.cluster.wait_healthy();
    fleet.wait_everywhere("/load", last.as_bytes());
    for h in &fleet.hosts {
        h.wait_gone("/doomed");
    }
    // It really was cut off while the history was compacted (its log says so), and then
    // caught up without a restart.
    let log = fleet.hosts[2].log();
    assert!(
        log.contains("keep serving the replica") && log.contains("reachable again"),
        "web3 was never cut off from etcd:\n{log}"
    );
    // And it follows the watch again afterwards.
    fleet.write("/after", b"after");
    fleet.wait_everywhere("/after", b"after");
}

#[test]
fn a_removed_host_reads_nothing_new_after_a_rekey() {
    if !fleet_ready() {
        return;
    }
    let mut fleet = Fleet::new(3);
    fleet.write("/s", b"before-removal");
    fleet.wait_everywhere("/s", b"before-removal");
    let slots: serde_json::Value =
        serde_json::from_slice(&fleet.admin.ok(&["key", "list", "--json"])).unwrap();
    let id = slots
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "web3")
        .unwrap_or_else(|| panic!("no web3 slot: {slots}"))["id"]
        .to_string();
    fleet.admin.ok(&["key", "remove", &id]);
    fleet.admin.ok(&["key", "rotate", "--yes"]);
    // Nobody visits the hosts: the kept ones make their mounts again with the new keys by
    // themselves (the same daemon, re-executed in place); the removed one keeps running on what
    // it has.
    let pids: Vec<u32> = fleet.hosts.iter().map(Host::pid).collect();
    let secret = format!("after-removal-{}", random_name());
    fleet.write("/s", secret.as_bytes());
    fleet.hosts[0].wait_value("/s", secret.as_bytes());
    fleet.hosts[1].wait_value("/s", secret.as_bytes());
    for (h, pid) in fleet.hosts.iter_mut().zip(pids) {
        assert!(h.alive(), "{} exited:\n{}", h.name, h.log());
        assert_eq!(h.pid(), pid, "{} was replaced by another process", h.name);
    }
    // web3 had as long as the others, and then some: it shows nothing new.
    std::thread::sleep(Duration::from_secs(2));
    let removed = &fleet.hosts[2];
    assert_ne!(
        removed.read("/s").as_deref(),
        Some(secret.as_bytes()),
        "the removed host reads the new value"
    );
    let mut cmd = fleet.admin.cmd_without_key();
    cmd.env("VAULTFS_IDENTITY", &removed.identity)
        .args(["cat", &fleet.addr("/s")]);
    let out = run_command(&mut cmd, b"");
    assert_ne!(code(&out), 0);
    assert!(!crate::common::contains(&out.stdout, secret.as_bytes()));
    // Nothing on its disk holds the new value either.
    for f in removed.disk_files() {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !crate::common::contains(&bytes, secret.as_bytes()),
            "{} holds the new value",
            f.display()
        );
    }
}

#[test]
fn rows_rolled_back_garbled_or_deleted_in_etcd_are_refused_as_tamper() {
    if !fleet_ready() {
        return;
    }
    let fleet = Fleet::new(1);
    let host = &fleet.hosts[0];
    fleet.write("/s", b"good-1");
    fleet.write("/keep", b"kept");
    host.wait_value("/s", b"good-1");
    host.wait_value("/keep", b"kept");
    let before = fleet.dump();
    fleet.write("/s", b"good-2");
    host.wait_value("/s", b"good-2");
    let after = fleet.dump();
    let rows = changed(&before, &after, &fleet.prefix);
    assert!(!rows.is_empty(), "the write changed no key in etcd");
    // Each changed key, put back alone to its older value: refused, logged, and the mount
    // keeps serving the last good value.
    for (old, new) in &rows {
        let key = old.key_text();
        let seen = tamper_lines(host, &key);
        fleet.cluster.put_raw(&old.key, &old.value);
        wait_tamper(host, &key, seen);
        assert_eq!(
            host.read("/s").as_deref(),
            Some(&b"good-2"[..]),
            "{}",
            host.log()
        );
        fleet.cluster.put_raw(&new.key, &new.value);
    }
    // Garbage in place of each changed key: refused the same way.
    for (_, new) in &rows {
        let key = new.key_text();
        let seen = tamper_lines(host, &key);
        fleet.cluster.put_raw(
            &new.key,
            &crate::common::random_bytes(new.value.len().max(16)),
        );
        wait_tamper(host, &key, seen);
        assert_eq!(host.read("/s").as_deref(), Some(&b"good-2"[..]));
        fleet.cluster.put_raw(&new.key, &new.value);
    }
    // A row deleted directly in etcd (no sealed tombstone): /keep is still served.
    let (keep_key, keep_value) = {
        let before_keep = fleet.dump();
        fleet.write("/keep", b"kept-2");
        host.wait_value("/keep", b"kept-2");
        // Keys every write changes (the head, say) were changed by the write of /s too; the
        // row of /keep is what only this write changed.
        let by_s: Vec<Vec<u8>> = rows.iter().map(|(o, _)| o.key.clone()).collect();
        changed(&before_keep, &fleet.dump(), &fleet.prefix)
            .into_iter()
            .map(|(_, n)| (n.key, n.value))
            .find(|(k, _)| !by_s.contains(k))
            .expect("the row of /keep")
    };
    let key = String::from_utf8_lossy(&keep_key).into_owned();
    let seen = tamper_lines(host, &key);
    fleet.cluster.etcdctl_ok(&["del", &key], b"");
    wait_tamper(host, &key, seen);
    assert_eq!(host.read("/keep").as_deref(), Some(&b"kept-2"[..]));
    // The CLI verifies what it reads as the replica does: no write lands on a tampered store.
    let out = fleet.admin.run(&["write", &fleet.addr("/s")], b"good-x");
    assert_ne!(
        code(&out),
        0,
        "a write landed on a tampered store (hosts will refuse it and every write after it)"
    );
    // Exit 3, as for a local store that fails its checks.
    let line = assert_fails(&out, &["write"], 3);
    assert!(line.contains("tamper"), "{line}");
    // Once the row is put back, honest writes reach the mount again.
    fleet.cluster.put_raw(&keep_key, &keep_value);
    fleet.write("/keep", b"kept-3");
    fleet.write("/s", b"good-3");
    host.wait_value("/s", b"good-3");
    host.wait_value("/keep", b"kept-3");
}

#[test]
fn two_concurrent_cli_writers_lose_no_update() {
    if !fleet_ready() {
        return;
    }
    let fleet = Fleet::new(1);
    const WRITES: usize = 15;
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|who| {
            let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = fleet
                .admin
                .cmd()
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                .collect();
            let vault = fleet.vault.clone();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for i in 0..WRITES {
                    let path = format!("/c/{who}{i}");
                    let value = format!("{who}-{i}");
                    let mut cmd = std::process::Command::new(crate::common::vaultfs_bin());
                    cmd.envs(envs.iter().map(|(k, v)| (k, v)))
                        .args(["write", &format!("{vault}:{path}")]);
                    let out = run_command(&mut cmd, value.as_bytes());
                    if out.status.success() {
                        ok.push((path, value.clone()));
                    } else {
                        let err = String::from_utf8_lossy(&out.stderr).into_owned();
                        assert_eq!(code(&out), 1, "{err}");
                        assert!(err.contains("changed concurrently"), "{err}");
                        assert_eq!(err.lines().count(), 1, "{err}");
                    }
                    // Both also rewrite one shared secret: the last write wins, whole.
                    let mut cmd = std::process::Command::new(crate::common::vaultfs_bin());
                    cmd.envs(envs.iter().map(|(k, v)| (k, v)))
                        .args(["write", &format!("{vault}:/shared")]);
                    let _ = run_command(&mut cmd, value.as_bytes());
                }
                ok
            })
        })
        .collect();
    let committed: Vec<(String, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("a writer"))
        .collect();
    assert!(
        committed.len() >= WRITES,
        "most writes should commit after retries: {} of {}",
        committed.len(),
        2 * WRITES
    );
    let listed = fleet.admin.ok_text(&["ls", &fleet.addr("/c")]);
    for (path, value) in &committed {
        let name = path.trim_start_matches("/c/");
        assert!(listed.lines().any(|l| l == name), "{path} lost:\n{listed}");
        assert_eq!(fleet.admin.cat(&fleet.addr(path)), value.as_bytes());
        fleet.hosts[0].wait_value(path, value.as_bytes());
    }
    let shared = fleet.admin.cat(&fleet.addr("/shared"));
    let shared = String::from_utf8(shared).unwrap();
    assert!(
        shared.starts_with("a-") || shared.starts_with("b-"),
        "{shared:?}"
    );
    fleet.hosts[0].wait_value("/shared", shared.as_bytes());
}

#[test]
fn harness_cluster_elects_survives_a_leader_kill_and_compacts() {
    // The harness itself, against etcd alone: what every fleet test above stands on.
    if !have_etcd() {
        return;
    }
    let _serial = ONE_FLEET_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    cluster.put_raw(b"/h/a", b"\x00\x01binary\nvalue");
    let dump = cluster.dump("/h/");
    assert_eq!(dump.len(), 1);
    assert_eq!(dump[0].value, b"\x00\x01binary\nvalue");
    let leader = cluster.wait_leader();
    cluster.kill(leader);
    let next = cluster.wait_leader();
    assert_ne!(next, leader);
    cluster.put_raw(b"/h/b", b"b");
    cluster.restart(leader);
    cluster.wait_healthy();
    let rev = cluster.compact_and_defrag();
    assert!(rev >= 3, "{rev}");
    let out = cluster.etcdctl(&["get", "--rev=2", "/h/a"], b"");
    assert!(!out.status.success(), "revision 2 survived the compaction");
    let ports: Vec<u16> = cluster
        .members
        .iter_mut()
        .map(|m| {
            assert!(m.running());
            m.client_port
        })
        .collect();
    drop(cluster);
    // No member outlives the harness.
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "an etcd member still listens on {port}"
        );
    }
}

/// An environment variable set to a value, or removed.
type EnvChange = (String, Option<String>);

#[test]
fn tls_client_certificates_and_an_etcd_user_scoped_to_the_prefix_with_expiring_tokens() {
    if !fleet_ready() {
        return;
    }
    let serial = ONE_FLEET_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::Builder::new()
        .prefix("vaultfs-fleet-tls-")
        .tempdir()
        .unwrap();
    let tls = crate::etcd::make_tls(dir.path());
    // Tokens live 3 s: a host that did not refresh its token would stop following.
    let mut cluster = Cluster::start_with(
        dir.path(),
        3,
        crate::etcd::Options {
            tls: Some(tls.clone()),
            auth_token_ttl: Some(3),
        },
    );
    let prefix = format!("/vaultfs/{}", random_name());
    // etcd's RBAC: user `web` may read and write the store's prefix only.
    for args in [
        vec!["user", "add", "root:root-pw", "--interactive=false"],
        vec!["role", "add", "vaultfs"],
        vec![
            "role",
            "grant-permission",
            "vaultfs",
            "--prefix=true",
            "readwrite",
            &prefix,
        ],
        vec!["user", "add", "web:web-pw", "--interactive=false"],
        vec!["user", "grant-role", "web", "vaultfs"],
        vec!["user", "add", "other:other-pw", "--interactive=false"],
        vec!["auth", "enable"],
    ] {
        cluster.etcdctl_ok(&args, b"");
    }
    cluster.etcdctl_user = Some("root:root-pw".to_owned());
    let password = dir.path().join("web.pw");
    crate::common::write_private(&password, "web-pw\n");
    let admin = TestStore {
        store: PathBuf::from(cluster.store_url(&prefix)),
        key: dir.path().join("admin.key"),
        dir,
    };
    std::fs::create_dir(admin.tmpdir()).unwrap();
    admin.ok(&["keygen", admin.key.to_str().unwrap()]);
    let env = |k: &str, v: &Path| (k.to_owned(), v.to_str().unwrap().to_owned());
    let admin_env = vec![
        env("VAULTFS_ETCD_CACERT", &tls.ca),
        env("VAULTFS_ETCD_CERT", &tls.client_cert),
        env("VAULTFS_ETCD_KEY", &tls.client_key),
        ("VAULTFS_ETCD_USER".to_owned(), "web".to_owned()),
        env("VAULTFS_ETCD_PASSWORD_FILE", &password),
    ];
    let mut fleet = Fleet {
        hosts: Vec::new(),
        cluster,
        admin,
        prefix,
        vault: random_name(),
        url_override: None,
        admin_env,
        host_config: format!(
            "etcd_cacert = \"{}\"\netcd_cert = \"{}\"\netcd_key = \"{}\"\netcd_user = \"web\"\n\
             etcd_password_file = \"{}\"\n",
            tls.ca.display(),
            tls.client_cert.display(),
            tls.client_key.display(),
            password.display()
        ),
        _serial: serial,
    };
    fleet.admin_ok(&["init"]);
    fleet.admin_ok(&["vault", "create", &fleet.vault.clone(), "--owner", "root"]);
    fleet.write("/s", b"over-tls-1");
    assert_eq!(fleet.admin_ok(&["cat", &fleet.addr("/s")]), b"over-tls-1");
    fleet.add_host("web1");
    fleet.hosts[0].wait_value("/s", b"over-tls-1");
    // Longer than a token lives: the host and the CLI still get through.
    std::thread::sleep(Duration::from_secs(5));
    fleet.write("/s", b"over-tls-2");
    fleet.hosts[0].wait_value("/s", b"over-tls-2");

    // Each wrong credential: one line, a non-zero exit, no password anywhere in it.
    let wrong = fleet.admin.path("wrong.pw");
    crate::common::write_private(&wrong, "not-the-password\n");
    let cat = ["cat".to_owned(), fleet.addr("/s")];
    let cases: Vec<(&str, Vec<EnvChange>)> = vec![
        (
            "a wrong password",
            vec![(
                "VAULTFS_ETCD_PASSWORD_FILE".into(),
                Some(wrong.to_str().unwrap().into()),
            )],
        ),
        (
            "a user without access to the prefix",
            vec![
                ("VAULTFS_ETCD_USER".into(), Some("other".into())),
                (
                    "VAULTFS_ETCD_PASSWORD_FILE".into(),
                    Some({
                        let p = fleet.admin.path("other.pw");
                        crate::common::write_private(&p, "other-pw\n");
                        p.to_str().unwrap().into()
                    }),
                ),
            ],
        ),
        (
            "no client certificate",
            vec![
                ("VAULTFS_ETCD_CERT".into(), None),
                ("VAULTFS_ETCD_KEY".into(), None),
            ],
        ),
        (
            "no CA (the members' certificate is not trusted)",
            vec![("VAULTFS_ETCD_CACERT".into(), None)],
        ),
    ];
    for (what, changes) in cases {
        let mut cmd = fleet.admin.cmd();
        for (k, v) in &fleet.admin_env {
            if !changes.iter().any(|(c, _)| c == k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &changes {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.args(&cat);
        let start = Instant::now();
        let out = run_command(&mut cmd, b"");
        assert!(
            start.elapsed() < WRITE_FAIL_BOUND,
            "{what}: took {:?}",
            start.elapsed()
        );
        assert_ne!(code(&out), 0, "{what}: cat succeeded");
        let line = assert_fails(&out, &cat, code(&out));
        for secret in ["web-pw", "other-pw", "not-the-password", "over-tls"] {
            assert!(!line.contains(secret), "{what}: {line}");
        }
        eprintln!("{what}: {line}");
        if what == "no client certificate" {
            assert!(
                line.contains("--etcd-cert"),
                "{what}: says what is missing: {line}"
            );
        }
    }
}

/// A `vaultfs import` whose every transaction would overwrite existing rows.
fn bulk(tag: &str, n: usize) -> Vec<u8> {
    let doc: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| (format!("k{i:03}"), serde_json::json!(format!("{tag}-{i}"))))
        .collect();
    serde_json::to_vec(&doc).unwrap()
}

#[test]
fn a_batched_write_killed_between_its_transactions_loses_no_secret() {
    if !fleet_ready() {
        return;
    }
    let fleet = Fleet::store_only();
    let v = fleet.vault.clone();
    const N: usize = 900;
    let out = fleet.admin.run(
        &["import", "--format", "json", &format!("{v}:/bulk")],
        &bulk("old", N),
    );
    assert_success(&out, &["import"]);
    let pending = format!("{}/pending", fleet.prefix);
    // A second import overwrites every one of them in several transactions; it is killed as
    // soon as etcd reports its first one (the one that puts the batch marker). A writer fast
    // enough to finish first is simply run again.
    let mut killed = false;
    for _ in 0..5 {
        let mut watch = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", fleet.cluster.endpoints()))
            .args(["watch", &pending])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl watch");
        // Let the watch register before the writer starts.
        std::thread::sleep(Duration::from_millis(300));
        let mut writer = fleet
            .admin
            .cmd()
            .args(["import", "--format", "json", &format!("{v}:/bulk")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vaultfs import");
        let mut input = writer.stdin.take().unwrap();
        std::io::Write::write_all(&mut input, &bulk("new", N)).unwrap();
        drop(input);
        let stdout = watch.stdout.take().unwrap();
        let saw_put = within(Duration::from_secs(30), "the batch marker", move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l == "PUT")
        });
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(writer.id() as i32, libc::SIGKILL) };
        let status = writer.wait().unwrap();
        let _ = watch.kill();
        let _ = watch.wait();
        assert!(saw_put, "the import never put its batch marker");
        if !status.success() {
            killed = true;
            break;
        }
    }
    assert!(
        killed,
        "the import finished before it could be killed, 5 times"
    );
    // The marker's lease would free the store within a minute; revoke it as its expiry would.
    let leases = String::from_utf8(fleet.cluster.etcdctl_ok(&["lease", "list"], b"")).unwrap();
    for id in leases.lines().filter_map(|l| l.split_whitespace().next()) {
        if id.chars().all(|c| c.is_ascii_hexdigit()) {
            fleet.cluster.etcdctl_ok(&["lease", "revoke", id], b"");
        }
    }
    // The dead import never committed: the next write builds on the state the head covers,
    // puts back what the dead one overwrote, and every secret reads its old value, whole.
    fleet.admin.write(&fleet.addr("/after"), b"after-1");
    assert_eq!(fleet.admin.cat(&fleet.addr("/after")), b"after-1");
    let listed = fleet.admin.ok_text(&["ls", &fleet.addr("/bulk")]);
    assert_eq!(listed.lines().count(), N, "{listed}");
    for i in (0..N).step_by(7) {
        assert_eq!(
            fleet.admin.cat(&fleet.addr(&format!("/bulk/k{i:03}"))),
            format!("old-{i}").as_bytes()
        );
    }
    // etcd itself holds that state again: a copy built afresh from it agrees, and a host
    // replica built from it serves it.
    let fresh = fleet.admin.path("fresh-cache");
    let out = run_command(
        fleet
            .admin
            .cmd()
            .env("VAULTFS_CACHE_DIR", &fresh)
            .args(["cat", &fleet.addr("/bulk/k001")]),
        b"",
    );
    assert_success(&out, &["cat from a fresh copy"]);
    assert_eq!(out.stdout, b"old-1");
}

#[test]
fn env_against_etcd_gives_its_program_the_users_own_state_directory() {
    if !fleet_ready() {
        return;
    }
    let fleet = Fleet::store_only();
    fleet.admin.write(&fleet.addr("/TOKEN"), b"tok-1\n");
    let out = fleet.admin.run(
        &[
            "env",
            &fleet.addr("/TOKEN"),
            "--",
            "sh",
            "-c",
            "printf '%s|%s' \"$TOKEN\" \"$VAULTFS_STATE_DIR\"",
        ],
        b"",
    );
    assert_success(&out, &["env"]);
    let own = fleet.admin.dir.path().join("state");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("tok-1|{}", own.display()),
        "the program must see the secret and the state directory it was started with, not \
         the etcd copy's"
    );
    // And the store works on after `env` replaced itself with its program.
    fleet.admin.write(&fleet.addr("/TOKEN"), b"tok-2\n");
    assert_eq!(fleet.admin.cat(&fleet.addr("/TOKEN")), b"tok-2\n");
}
