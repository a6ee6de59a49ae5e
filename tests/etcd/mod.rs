//! A real etcd cluster for the fleet tests: three `etcd` members (Debian's etcd 3.4) on free
//! loopback ports, each with its own data directory under the test's temp dir, driven with
//! `etcdctl`. Members can be killed, stopped and restarted; the cluster compacts and
//! defragments, and puts raw keys (for tamper tests). Dropping it kills every member, so a
//! failing test leaves no etcd behind.
#![allow(dead_code)] // each fleet test uses a different part of the harness

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::requirement;

/// How long a cluster (or a restarted member) may take to report healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
/// Each `etcdctl` call's own bound, so a dead member cannot stall the harness.
const ETCDCTL_TIMEOUT: &str = "3s";

/// Whether etcd and etcdctl are installed (Debian: etcd-server, etcd-client). Unmet, a test
/// fails, unless opted out with `VAULTFS_TEST_SKIP=etcd` (never under `CI=true`).
pub fn have_etcd() -> bool {
    requirement(
        on_path("etcd") && on_path("etcdctl"),
        "etcd",
        "the fleet tests need etcd and etcdctl (Debian: apt-get install etcd-server etcd-client)",
    )
}

fn on_path(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One etcd member: its ports, data directory, log file and (while running) process.
pub struct Member {
    /// The member's name in the cluster (`m0`, `m1`, ...).
    pub name: String,
    /// The port clients connect to.
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    tls: bool,
}

impl Member {
    /// `http(s)://127.0.0.1:PORT`, this member's client URL.
    pub fn client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Whether the member's process is running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// A running etcd cluster; every member is killed on drop.
pub struct Cluster {
    /// The members, in the order of `--initial-cluster`.
    pub members: Vec<Member>,
    initial_cluster: String,
    token: String,
    opts: Options,
    /// `USER:PASSWORD` etcdctl authenticates with, once auth is enabled.
    pub etcdctl_user: Option<String>,
}

/// TLS files for the members' client port (peers stay on plain loopback).
#[derive(Clone, Debug)]
pub struct Tls {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The members' certificate (SAN IP 127.0.0.1) and key.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate etcdctl uses (members require one).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// How the cluster runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Client TLS with client certificates required.
    pub tls: Option<Tls>,
    /// `--auth-token-ttl` in seconds (etcd's simple tokens), to make tokens expire in a test.
    pub auth_token_ttl: Option<u32>,
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate with openssl.
pub fn make_tls(dir: &Path) -> Tls {
    assert!(crate::common::require_tool("openssl"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "[server]\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n\
         [client]\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=vaultfs-test-ca",
    ]);
    for (name, ext) in [("server", "server"), ("client", "client")] {
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN=vaultfs-test-{name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-extensions",
            ext,
        ]);
    }
    for key in ["ca.key", "server.key", "client.key"] {
        crate::common::write_private(&dir.join(key), std::fs::read(dir.join(key)).unwrap());
    }
    Tls {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// Binds `n` distinct free loopback ports at once (so none repeats), then frees them for etcd.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Cluster {
    /// Starts an `n`-member cluster with its data under `dir` and waits (bounded) until every
    /// member is healthy and a leader is elected.
    pub fn start(dir: &Path, n: usize) -> Cluster {
        Cluster::start_with(dir, n, Options::default())
    }

    /// Like [`start`](Self::start), with TLS and auth token options.
    pub fn start_with(dir: &Path, n: usize, opts: Options) -> Cluster {
        // Ports freed by free_ports can be taken by another test before etcd binds them: a
        // member that dies at start is retried with a whole new set of ports.
        let mut last = String::new();
        for _ in 0..3 {
            match Cluster::try_start(dir, n, &opts) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("cannot start a {n}-member etcd cluster: {last}");
    }

    fn try_start(dir: &Path, n: usize, opts: &Options) -> Result<Cluster, String> {
        let ports = free_ports(2 * n);
        let token = format!("vaultfs-{}", crate::common::random_name());
        let base = dir.join(format!("etcd-{token}"));
        std::fs::create_dir_all(&base).expect("create the etcd dir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: base.join(format!("m{i}.data")),
                log: base.join(format!("m{i}.log")),
                child: None,
                tls: opts.tls.is_some(),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            members,
            initial_cluster,
            token,
            opts: opts.clone(),
            etcdctl_user: None,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            for i in 0..n {
                if !cluster.members[i].running() {
                    return Err(format!(
                        "member {} exited at start: {}",
                        cluster.members[i].name,
                        cluster.log_tail(i)
                    ));
                }
            }
            if cluster.all_healthy() && cluster.leader().is_some() {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not healthy within {HEALTHY_WITHIN:?}: {}",
                    cluster.log_tail(0)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster.clone();
        let token = self.token.clone();
        let opts = self.opts.clone();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} is already running", m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("open the member's log");
        let mut cmd = Command::new("etcd");
        if let Some(tls) = &opts.tls {
            cmd.arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        if let Some(ttl) = opts.auth_token_ttl {
            cmd.arg(format!("--auth-token-ttl={ttl}"));
        }
        let child = cmd
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(&initial)
            .arg("--initial-cluster-token")
            .arg(&token)
            // Ignored once the data dir exists: a restarted member rejoins with its own state.
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            // etcd's own metrics listener and the pprof endpoints stay off: only loopback ports
            // this harness chose are opened.
            .env_remove("ETCD_LISTEN_METRICS_URLS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        m.child = Some(child);
    }

    /// The last lines of member `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Every member's client URL, comma separated (etcdctl's `--endpoints`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/PREFIX` (`etcds://` with TLS), the
    /// store address vaultfs takes.
    pub fn store_url(&self, prefix: &str) -> String {
        let hosts = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",");
        let scheme = if self.opts.tls.is_some() {
            "etcds"
        } else {
            "etcd"
        };
        format!("{scheme}://{hosts}/{}", prefix.trim_start_matches('/'))
    }

    /// The store address naming only the members `which` (the same prefix).
    pub fn store_url_of(&self, which: &[usize], prefix: &str) -> String {
        let hosts = which
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.members[i].client_port))
            .collect::<Vec<_>>()
            .join(",");
        format!("etcd://{hosts}/{}", prefix.trim_start_matches('/'))
    }

    /// Runs `etcdctl ARGS` against the running members (all of them when none runs), bounded
    /// by its own timeouts.
    pub fn etcdctl(&self, args: &[&str], stdin: &[u8]) -> Output {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url())
            .collect();
        let endpoints = if live.is_empty() {
            self.endpoints()
        } else {
            live.join(",")
        };
        self.etcdctl_at(&endpoints, args, stdin)
    }

    fn etcdctl_at(&self, endpoints: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new("etcdctl");
        if let Some(tls) = &self.opts.tls {
            cmd.arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        if let Some(user) = &self.etcdctl_user {
            // etcdctl takes USER:PASSWORD only in argv; this is the test cluster's root.
            cmd.arg(format!("--user={user}"));
        }
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--dial-timeout={ETCDCTL_TIMEOUT}"))
            .arg(format!("--command-timeout={ETCDCTL_TIMEOUT}"))
            .args(args);
        crate::common::run_command(&mut cmd, stdin)
    }

    /// Runs `etcdctl ARGS`, asserting success; returns stdout.
    pub fn etcdctl_ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let out = self.etcdctl(args, stdin);
        assert!(
            out.status.success(),
            "etcdctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Whether every member answers `endpoint health`.
    pub fn all_healthy(&self) -> bool {
        self.etcdctl(&["endpoint", "health"], b"").status.success()
    }

    /// `endpoint status` of each running member, as JSON objects.
    fn statuses(&self) -> Vec<serde_json::Value> {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url())
            .collect();
        if live.is_empty() {
            return Vec::new();
        }
        let out = self.etcdctl_at(&live.join(","), &["endpoint", "status", "-w", "json"], b"");
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default()
    }

    /// The index of the member that is leader now, if one is elected and answers.
    pub fn leader(&self) -> Option<usize> {
        for s in self.statuses() {
            let me = &s["Status"]["header"]["member_id"];
            let leader = &s["Status"]["leader"];
            if !leader.is_null() && me == leader && leader.as_u64() != Some(0) {
                let endpoint = s["Endpoint"].as_str().unwrap_or_default();
                return self.members.iter().position(|m| m.client_url() == endpoint);
            }
        }
        None
    }

    /// Waits (bounded) for a leader among the running members and returns its index.
    pub fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no etcd leader within {HEALTHY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs member `i` (a crash: no graceful leader hand-off) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs member `i` and reaps it (a clean stop).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops every member.
    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }

    /// Restarts member `i` from its data directory (it rejoins the cluster).
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Restarts every stopped member and waits (bounded) until the cluster is healthy.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.wait_healthy();
    }

    /// Waits (bounded) until every member is healthy and there is a leader.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        while !(self.all_healthy() && self.leader().is_some()) {
            assert!(
                Instant::now() < deadline,
                "the etcd cluster is not healthy within {HEALTHY_WITHIN:?}: {}",
                self.log_tail(0)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> i64 {
        // A get of a key nobody writes still carries the store's revision in its header.
        let out = self.etcdctl_ok(&["get", "-w", "json", "/vaultfs-test-harness/probe"], b"");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("etcdctl get -w json");
        v["header"]["revision"].as_i64().expect("a revision")
    }

    /// Compacts the history up to the current revision (physically, waiting for it) and
    /// defragments every member: what an operator's maintenance does under load.
    pub fn compact_and_defrag(&self) -> i64 {
        let rev = self.revision();
        let out = self.etcdctl(&["compact", "--physical", &rev.to_string()], b"");
        // Nothing written since the last compaction: the revision is compacted already.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("required revision has been compacted"),
            "etcdctl compact {rev}: {stderr}"
        );
        self.etcdctl_ok(&["defrag"], b"");
        rev
    }

    /// Every key under `prefix` with its raw value and modification revision.
    pub fn dump(&self, prefix: &str) -> Vec<Kv> {
        // etcdctl's JSON carries keys and values base64-encoded; values are binary.
        let out = self.etcdctl_ok(&["get", "--prefix", "-w", "json", prefix], b"");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("etcdctl get -w json");
        v["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| Kv {
                        key: b64(kv["key"].as_str().unwrap_or_default()),
                        value: b64(kv["value"].as_str().unwrap_or_default()),
                        mod_revision: kv["mod_revision"].as_i64().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Puts `value` at `key` directly, as someone with write access to etcd could.
    pub fn put_raw(&self, key: &[u8], value: &[u8]) {
        let key = std::str::from_utf8(key).expect("vaultfs keys in etcd are text");
        // The value comes from stdin: binary-safe, and never in argv.
        self.etcdctl_ok(&["put", key], value);
    }
}

/// One key of an etcd dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    /// The key, as bytes.
    pub key: Vec<u8>,
    /// The raw value.
    pub value: Vec<u8>,
    /// The revision that last wrote it.
    pub mod_revision: i64,
}

impl Kv {
    /// The key as text, for messages.
    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// Standard base64 (etcdctl's JSON encoding of keys and values) decoded.
fn b64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {text:?}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
