//! Shared test harness: a fresh store per test, and the real `vaultfs` binary.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub fn vaultfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vaultfs"))
}

/// Whether the tests run as root (mount tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `name` is on PATH. Under CI (`CI=true`), a missing tool fails the test: CI installs
/// every tool the tests drive, so a missing one is a broken CI, not a reason to skip.
pub fn require_tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is not installed; .ci/run must install it");
        }
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// A fresh store with a key file, in its own temp dir.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub key: PathBuf,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store.db");
        let key = dir.path().join("key");
        let ts = TestStore { dir, store, key };
        let out = Command::new(vaultfs_bin())
            .arg("keygen")
            .arg(&ts.key)
            .output()
            .expect("run keygen");
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ts.ok(&["init"]);
        ts
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(vaultfs_bin());
        c.env("VAULTFS_STORE", &self.store)
            .env("VAULTFS_KEY_FILE", &self.key)
            .env_remove("VAULTFS_LOG");
        c
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vaultfs");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().expect("wait vaultfs")
    }

    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args, b"");
        assert!(
            out.status.success(),
            "vaultfs {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn write(&self, addr: &str, value: &[u8]) {
        let out = self.run(&["write", addr], value);
        assert!(
            out.status.success(),
            "write {addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn cat(&self, addr: &str) -> Vec<u8> {
        self.ok(&["cat", addr])
    }

    pub fn vault(&self, name: &str, extra: &[&str]) {
        let mut args = vec!["vault", "create", name];
        args.extend_from_slice(extra);
        self.ok(&args);
    }
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("randomness");
    buf
}

/// A random lowercase name.
pub fn random_name() -> String {
    random_bytes(8)
        .iter()
        .map(|b| (b'a' + b % 26) as char)
        .collect()
}
