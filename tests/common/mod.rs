//! The shared harness: the built binary, a fresh store per test, and small helpers.
//!
//! Every test gets its own temp dir holding the key file, the store and a private `TMPDIR`, so
//! tests run in parallel without sharing state and nothing is left behind.

#![allow(dead_code)] // each test module uses a different part of the harness

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `vaultfs` binary cargo built for this test run.
pub fn vaultfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vaultfs"))
}

/// Whether the tests run as root (mounts and `allow_other` need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `name` is an executable on `PATH`. A missing tool skips the calling test with a line
/// on stderr, except in CI (`CI=true`), where `.ci/run` installs every tool and a missing one is
/// a broken machine, not a reason to pass silently.
pub fn require_tool(name: &str) -> bool {
    if on_path(name) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("required tool {name:?} is not on PATH (CI=true, so this is an error, not a skip; .ci/run should install it)");
    }
    eprintln!("skipping: {name:?} is not on PATH");
    false
}

fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `n` bytes from the OS's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    getrandom::fill(&mut out).expect("the OS random number generator failed");
    out
}

/// A fresh name usable as a vault name, a path component and an environment variable name:
/// a letter, then 19 lower-case letters or digits.
pub fn random_name() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut name = String::from("n");
    for b in random_bytes(19) {
        name.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
    }
    name
}

/// The exit code, panicking with the output when the process died of a signal.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| {
        panic!(
            "process died of a signal: {:?}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs `cmd` with `stdin` fed from a thread (so a large input cannot deadlock against a full
/// stdout pipe) and collects its output.
pub fn run_command(cmd: &mut Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        // A command that does not read stdin closes the pipe early; that is not a failure.
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for vaultfs");
    feeder.join().expect("stdin feeder thread");
    out
}

/// A fresh store, unlocked by a key file, in its own temp dir.
pub struct TestStore {
    /// Holds everything below; removed on drop.
    pub dir: tempfile::TempDir,
    /// The store file (`<dir>/store/store.db`).
    pub store: PathBuf,
    /// The key file of the store's first key slot.
    pub key: PathBuf,
}

impl TestStore {
    /// Runs `vaultfs keygen` and `vaultfs init` in a new temp dir.
    pub fn new() -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("vaultfs-test-")
            .tempdir()
            .expect("create a temp dir");
        let ts = TestStore {
            store: dir.path().join("store").join("store.db"),
            key: dir.path().join("key"),
            dir,
        };
        std::fs::create_dir(ts.tmpdir()).expect("create the test's TMPDIR");
        let key = ts.key.to_str().expect("temp paths are UTF-8").to_owned();
        ts.ok(&["keygen", &key]);
        ts.ok(&["init"]);
        ts
    }

    /// The `TMPDIR` every command of this store runs with.
    pub fn tmpdir(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// A path inside the test's temp dir, which this makes world-traversable so that the
    /// users a mount test creates can reach mounts inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755));
        self.dir.path().join(name)
    }

    /// The binary, pointed at this store and key, with logging at its default and a private
    /// `TMPDIR`. It runs in a new session, without a controlling terminal, so a test that
    /// forgets a credential fails at once instead of waiting on a passphrase prompt.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(vaultfs_bin());
        cmd.env("VAULTFS_STORE", &self.store)
            .env("VAULTFS_KEY_FILE", &self.key)
            .env("TMPDIR", self.tmpdir())
            .env_remove("VAULTFS_LOG")
            .env_remove("RUST_LOG");
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd
    }

    /// Like [`cmd`](Self::cmd), without `VAULTFS_KEY_FILE`: the caller passes a credential.
    pub fn cmd_without_key(&self) -> Command {
        let mut cmd = self.cmd();
        cmd.env_remove("VAULTFS_KEY_FILE");
        cmd
    }

    /// Runs `vaultfs ARGS` with `stdin` and returns whatever happened.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_command(self.cmd().args(args), stdin)
    }

    /// Runs `vaultfs ARGS`, asserts exit 0, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args, b"");
        assert_success(&out, args);
        out.stdout
    }

    /// Like [`ok`](Self::ok), as text.
    pub fn ok_text(&self, args: &[&str]) -> String {
        String::from_utf8(self.ok(args)).expect("stdout is UTF-8")
    }

    /// Runs `vaultfs ARGS`, asserts exit code `expected`, a single-line error on stderr and no
    /// panic, and returns that line.
    pub fn fails(&self, args: &[&str], expected: i32) -> String {
        let out = self.run(args, b"");
        assert_fails(&out, args, expected)
    }

    /// Runs `vaultfs ARGS`, asserts a non-zero exit, a single-line error and no panic, and
    /// returns the line (for failures whose exit code is not part of the contract).
    pub fn fails_any(&self, args: &[&str]) -> String {
        let out = self.run(args, b"");
        assert_ne!(
            code(&out),
            0,
            "`vaultfs {}` succeeded but should have failed",
            describe(args)
        );
        assert_fails(&out, args, code(&out))
    }

    /// Stores `value` at `addr` with `vaultfs write`.
    pub fn write(&self, addr: &str, value: &[u8]) {
        let out = self.run(&["write", addr], value);
        assert_success(&out, &["write", addr]);
    }

    /// `vaultfs cat ADDR`, asserting success.
    pub fn cat(&self, addr: &str) -> Vec<u8> {
        self.ok(&["cat", addr])
    }

    /// `vaultfs vault create NAME EXTRA...`.
    pub fn vault(&self, name: &str, extra: &[&str]) {
        let mut args = vec!["vault", "create", name];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// A direct connection to the store's SQLite file, for inspecting or tampering with rows.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.store).expect("open the store with rusqlite")
    }
}

impl Default for TestStore {
    fn default() -> Self {
        TestStore::new()
    }
}

fn describe<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts exit 0, showing stderr otherwise.
pub fn assert_success<S: AsRef<OsStr>>(out: &Output, args: &[S]) {
    assert!(
        out.status.success(),
        "`vaultfs {}` failed with {:?}\nstderr: {}",
        describe(args),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts exit code `expected`, exactly one line on stderr and no panic; returns the line.
pub fn assert_fails<S: AsRef<OsStr>>(out: &Output, args: &[S], expected: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        code(out),
        expected,
        "`vaultfs {}`: unexpected exit code\nstderr: {stderr}",
        describe(args)
    );
    assert!(
        !stderr.contains("panicked"),
        "`vaultfs {}` panicked: {stderr}",
        describe(args)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "`vaultfs {}`: expected a one-line error, got: {stderr:?}",
        describe(args)
    );
    lines[0].to_owned()
}

/// Every regular file below `root`, recursively.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Writes a credential file (key or passphrase) with mode 0600, as vaultfs requires.
pub fn write_private(path: &Path, data: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
