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
    nix::unistd::geteuid().is_root()
}

/// Whether `name` is an executable on `PATH`; see [`requirement`] for what happens when not.
pub fn require_tool(name: &str) -> bool {
    requirement(on_path(name), name, &format!("{name:?} is not on PATH"))
}

/// Whether a test can go on. A test that cannot run never passes quietly: an unmet
/// requirement fails it with a line saying what is missing, unless the user opted out with
/// `VAULTFS_TEST_SKIP=KIND[,KIND...]` (or `all`), e.g. `VAULTFS_TEST_SKIP=root,nix` on a laptop.
/// Then the test is listed as skipped on stderr at once and again at the end of the run. CI
/// (`CI=true`) never skips: `.ci/run` installs every tool.
pub fn requirement(met: bool, kind: &str, missing: &str) -> bool {
    if met {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let opted_out = std::env::var("VAULTFS_TEST_SKIP").is_ok_and(|list| {
        list.split(',')
            .any(|k| k.trim() == kind || k.trim() == "all")
    });
    if ci || !opted_out {
        panic!(
            "{missing}; {}",
            if ci {
                "CI=true never skips (.ci/run installs every tool)".to_owned()
            } else {
                format!("install it, or set VAULTFS_TEST_SKIP={kind} to skip the tests that need it (the run lists them)")
            }
        );
    }
    record_skip(&format!("{missing} (VAULTFS_TEST_SKIP={kind})"));
    false
}

/// Skipped tests, printed again when the test binary exits.
static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn record_skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    // Written to the stderr handle, not through eprintln!, which the test harness captures
    // and only shows for failing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    let mut list = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if list.is_empty() {
        extern "C" fn summary() {
            let list = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "\nSKIPPED {} test(s) (VAULTFS_TEST_SKIP is set; this run does not cover them):",
                list.len()
            );
            for line in list.iter() {
                let _ = writeln!(err, "  {line}");
            }
        }
        // SAFETY: summary is a plain extern "C" fn that outlives the process.
        unsafe { libc::atexit(summary) };
    }
    list.push(format!("{test}: {why}"));
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
            .env("VAULTFS_STATE_DIR", self.dir.path().join("state"))
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
        // Empty input is refused unless asked for explicitly.
        let args: &[&str] = if value.is_empty() {
            &["write", "--allow-empty", addr]
        } else {
            &["write", addr]
        };
        let out = self.run(args, value);
        assert_success(&out, args);
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

/// A process whose stdin, stdout, stderr and controlling terminal are a pseudo-terminal, for
/// testing what a user at a terminal sees (echo, prompts, Ctrl-D).
pub struct OnPty {
    /// The terminal side the test types into and reads from.
    master: std::fs::File,
    child: std::process::Child,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl OnPty {
    /// Starts `cmd` (not yet spawned) on a new pseudo-terminal, in a new session whose
    /// controlling terminal it is (so `/dev/tty` opens, as for a user at a shell).
    pub fn spawn(mut cmd: Command) -> OnPty {
        use std::os::fd::{AsRawFd, OwnedFd};
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let master = std::fs::File::from(pty.master);
        let slave_fd = slave.as_raw_fd();
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        // SAFETY: setsid and ioctl are async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        drop(slave);
        // The command holds copies of the slave: dropped here, the child is the last holder and
        // the reader sees EIO once it exits.
        drop(cmd);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut from = master.try_clone().expect("dup the pty master");
        let sink = seen.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            master,
            child,
            seen,
            reader: Some(reader),
        }
    }

    /// Everything the terminal showed so far.
    pub fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (at most 10 s, else the test fails) until the terminal shows `text`.
    pub fn expect(&self, text: &str) {
        let start = std::time::Instant::now();
        while !contains(&self.seen(), text.as_bytes()) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "the terminal never showed {text:?}; it showed {:?}",
                String::from_utf8_lossy(&self.seen())
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Whether the terminal echoes what is typed now (its settings, as the shell would find
    /// them).
    pub fn echoes(&self) -> bool {
        let attrs = nix::sys::termios::tcgetattr(&self.master).expect("tcgetattr");
        attrs
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ECHO)
    }

    /// Types `bytes` as a user would.
    pub fn type_in(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the pty");
    }

    /// Waits (at most 10 s, else kills it and fails) for the process; returns its exit code and
    /// everything the terminal showed.
    pub fn finish(&mut self) -> (i32, Vec<u8>) {
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > std::time::Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!(
                    "the process on the terminal hangs; it showed {:?}",
                    String::from_utf8_lossy(&self.seen())
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let code = status.code().unwrap_or(-1);
        (code, self.seen())
    }
}

/// Writes a credential file (key or passphrase) with mode 0600, as vaultfs requires.
pub fn write_private(path: &Path, data: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
