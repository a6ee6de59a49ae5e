//! Kernel-checked mounts (`mount --kernel-checks`): the kernel decides access from the
//! attributes and opens never reach the daemon; rotation and revocation travel by pushed
//! invalidation, acknowledged before the writer returns; whatever needs a per-open decision is
//! refused at mount and hidden when it appears later.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{code, TestStore};
use crate::mounts::{can_mount, cat_as, is_mounted, user, within, MountGuard, WalLock};

const BOB: &str = "vfs-kmode-bob";

/// `vaultfs mount --kernel-checks SOURCE MNT`, logging at `info` to `log` (the daemon's
/// closing line counts the opens and reads that reached it).
fn mount_kernel(ts: &TestStore, source: &str, mnt: &Path, log: &Path) -> MountGuard {
    let out = crate::common::run_command(
        ts.cmd().env("VAULTFS_LOG", "info").args([
            "mount",
            "--kernel-checks",
            "--log-file",
            log.to_str().unwrap(),
            source,
            mnt.to_str().unwrap(),
        ]),
        b"",
    );
    assert!(
        out.status.success(),
        "mount --kernel-checks {source}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(mnt));
    MountGuard {
        path: mnt.to_owned(),
    }
}

/// Unmounts and waits for the daemon's closing line in `log`; returns the log.
fn unmount_and_log(ts: &TestStore, guard: MountGuard, log: &Path) -> String {
    ts.ok(&["umount", guard.path.to_str().unwrap()]);
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("reached the daemon") {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no closing line in the log: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The numbers of the daemon's closing line: (opens, reads).
fn counts(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("reached the daemon"))
        .expect("the closing line");
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // The time stamp's numbers come first; the last two are the counts.
    (nums[nums.len() - 2], nums[nums.len() - 1])
}

fn kernel_vault(ts: &TestStore) {
    ts.vault("kv", &["--mode", "0444"]);
    ts.write("kv:/a", b"value-0");
    ts.write("kv:/dir/b", b"bee");
}

#[test]
fn opens_never_reach_the_daemon_and_unchanged_reads_come_from_the_page_cache() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    kernel_vault(&ts);
    let (mnt, log) = (ts.path("mnt"), ts.path("mount.log"));
    let m = mount_kernel(&ts, "kv", &mnt, &log);
    for _ in 0..500 {
        assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"value-0");
        assert_eq!(std::fs::read(mnt.join("dir/b")).unwrap(), b"bee");
    }
    let log = unmount_and_log(&ts, m, &log);
    let (opens, reads) = counts(&log);
    // One OPEN, answered ENOSYS, switches the kernel to no-open for the whole mount; then
    // each secret is read from the store once and from the page cache after that.
    assert_eq!(opens, 1, "{log}");
    assert!(
        reads <= 2,
        "1,000 reads of 2 unchanged secrets: {reads} reached the daemon"
    );
    // The audit log says that this mount's opens were not audited, and has none of them.
    let mut audit = String::new();
    crate::mounts::wait_until(Duration::from_secs(10), "the audit's stop record", || {
        audit = ts.ok_text(&["audit"]);
        audit.contains(" stop ")
    });
    let start = audit
        .lines()
        .find(|l| l.contains(" start "))
        .expect("a start record");
    assert!(
        start.contains("kernel-checks: opens through this mount are not audited"),
        "{audit}"
    );
    assert!(!audit.lines().any(|l| l.contains(" open ")), "{audit}");
}

#[test]
fn no_stale_read_in_1000_rotations() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    kernel_vault(&ts);
    let (mnt, log) = (ts.path("mnt"), ts.path("mount.log"));
    let (one, one_log) = (ts.path("one"), ts.path("one.log"));
    let m = mount_kernel(&ts, "kv", &mnt, &log);
    // A single-secret mount: one inode for every version.
    let m1 = mount_kernel(&ts, "kv:/a", &one, &one_log);
    let mut stale = Vec::new();
    for i in 1..=1000 {
        let value = format!("value-{i}-{}", "x".repeat(i % 17));
        ts.write("kv:/a", value.as_bytes());
        // The next open after the write returned, through a path the kernel has cached.
        let got = std::fs::read(mnt.join("a")).unwrap();
        if got != value.as_bytes() {
            stale.push((i, String::from_utf8_lossy(&got).into_owned()));
        }
        if i % 10 == 0 {
            let got = std::fs::read(&one).unwrap();
            if got != value.as_bytes() {
                stale.push((
                    i,
                    format!("single-secret mount: {}", String::from_utf8_lossy(&got)),
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{} stale reads: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    drop(m1);
    let log = unmount_and_log(&ts, m, &log);
    assert_eq!(counts(&log).0, 1, "{log}");
}

/// A process running as `user` that opens and reads the path it is sent, one per line, and
/// answers `ok`, `denied` or `err N`: its next open follows a command at once, with no
/// process start in between (which would hide a late invalidation).
struct Reader {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Reader {
    fn spawn(user: &str) -> Reader {
        let script = "import sys\nfor l in sys.stdin:\n    try:\n        open(l.rstrip('\\n'), 'rb').read()\n        print('ok', flush=True)\n    except PermissionError:\n        print('denied', flush=True)\n    except OSError as e:\n        print('err', e.errno, flush=True)\n";
        let mut child = std::process::Command::new("runuser")
            .args(["-u", user, "--", "python3", "-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn a reader (runuser, python3)");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Reader { child, out }
    }

    fn open(&mut self, path: &Path) -> String {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", path.display()).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn chmod_and_chown_are_seen_by_bobs_next_open() {
    if !can_mount() {
        return;
    }
    user(BOB, None);
    let ts = TestStore::new();
    kernel_vault(&ts);
    let (mnt, log) = (ts.path("mnt"), ts.path("mount.log"));
    let _m = mount_kernel(&ts, "kv", &mnt, &log);
    let a = mnt.join("a");
    // Readable by all, and cached by the kernel.
    assert_eq!(cat_as(BOB, &a).unwrap(), b"value-0");
    assert_eq!(cat_as(BOB, &a).unwrap(), b"value-0");

    let mut bob = Reader::spawn(BOB);
    let b = mnt.join("dir/b");
    let mut worst = Duration::ZERO;
    for round in 0..20 {
        assert_eq!(bob.open(&a), "ok", "round {round}: readable by all");
        assert_eq!(bob.open(&b), "ok", "round {round}");
        let started = Instant::now();
        ts.ok(&["acl", "set", "kv:/a", "--mode", "0400"]);
        worst = worst.max(started.elapsed());
        // The very next open, as soon as the command returned.
        assert_eq!(
            bob.open(&a),
            "denied",
            "round {round}: bob's next open after chmod 0400"
        );
        assert_eq!(std::fs::read(&a).unwrap(), b"value-0", "root still reads");

        ts.ok(&["acl", "set", "kv:/a", "--owner", BOB]);
        assert_eq!(bob.open(&a), "ok", "round {round}: owner");
        ts.ok(&["acl", "set", "kv:/a", "--owner", "root"]);
        assert_eq!(bob.open(&a), "denied", "round {round}: after chown root");

        // A directory's mode reaches what is below it.
        ts.ok(&["acl", "set", "kv:/dir", "--mode", "0400"]);
        assert_eq!(
            bob.open(&b),
            "denied",
            "round {round}: search revoked on the directory"
        );
        ts.ok(&["acl", "set", "kv:/dir", "--mode", "0444"]);
        ts.ok(&["acl", "set", "kv:/a", "--mode", "0444"]);
    }
    let returned = worst;
    // The writer waits for the mount's acknowledgement: bounded, and short.
    assert!(
        returned < Duration::from_secs(2),
        "acl set took {returned:?}"
    );
}

#[test]
fn vaults_needing_per_open_decisions_are_refused_with_one_line_and_exit_2() {
    if !can_mount() {
        return;
    }
    user(BOB, None);
    type Setup = Box<dyn Fn(&TestStore)>;
    let cases: Vec<(&str, Setup, &str)> = vec![
        (
            "template",
            Box::new(|ts: &TestStore| {
                let out = ts.run(&["template", "set", "kv:/t"], b"x={{ kv:/a }}\n");
                assert!(out.status.success(), "{out:?}");
            }),
            "a template",
        ),
        (
            "grant",
            Box::new(|ts: &TestStore| {
                ts.ok(&["acl", "grant", "kv:/dir/b", "--user", BOB]);
            }),
            "a grant",
        ),
        (
            "unit grant",
            Box::new(|ts: &TestStore| {
                ts.ok(&[
                    "acl",
                    "grant",
                    "kv:/a",
                    "--user",
                    BOB,
                    "--unit",
                    "x.service",
                ]);
            }),
            "a grant with a unit or exe condition",
        ),
        (
            "read limit",
            Box::new(|ts: &TestStore| {
                let out = ts.run(&["write", "kv:/once", "--max-opens", "1"], b"once");
                assert!(out.status.success(), "{out:?}");
            }),
            "a read limit",
        ),
    ];
    for (what, setup, reason) in cases {
        let ts = TestStore::new();
        kernel_vault(&ts);
        setup(&ts);
        let mnt = ts.path("mnt");
        let args = ["mount", "--kernel-checks", "kv", mnt.to_str().unwrap()];
        let line = ts.fails(&args, 2);
        assert!(
            line.contains("kernel checks refused") && line.contains(reason),
            "{what}: {line}"
        );
        assert!(!is_mounted(&mnt), "{what}: mounted anyway");
        // The same vault mounts without the flag.
        let _m = ts.mount("kv", &mnt);
    }
    // A mounted subtree without such entries is fine: the check is on what the mount serves.
    let ts = TestStore::new();
    kernel_vault(&ts);
    ts.ok(&["acl", "grant", "kv:/a", "--user", BOB]);
    let (mnt, log) = (ts.path("mnt"), ts.path("mount.log"));
    let _m = mount_kernel(&ts, "kv:/dir", &mnt, &log);
    assert_eq!(std::fs::read(mnt.join("b")).unwrap(), b"bee");
}

#[test]
fn a_rule_that_appears_under_a_live_mount_hides_its_entries_and_is_logged() {
    if !can_mount() {
        return;
    }
    user(BOB, None);
    let ts = TestStore::new();
    kernel_vault(&ts);
    ts.write("kv:/c", b"sea");
    let (mnt, log) = (ts.path("mnt"), ts.path("mount.log"));
    let m = mount_kernel(&ts, "kv", &mnt, &log);
    let (a, b, c) = (mnt.join("a"), mnt.join("dir/b"), mnt.join("c"));
    for p in [&a, &b, &c] {
        assert!(std::fs::read(p).is_ok());
        assert!(cat_as(BOB, p).is_ok());
    }
    // A grant would widen the mode bits for the kernel: the entry goes instead, at once.
    ts.ok(&["acl", "grant", "kv:/a", "--user", BOB]);
    let gone = |p: &PathBuf| std::fs::read(p).map_err(|e| e.kind());
    assert_eq!(gone(&a), Err(std::io::ErrorKind::NotFound));
    assert!(cat_as(BOB, &a).is_err());
    // On a directory: its whole subtree.
    ts.ok(&["acl", "grant", "kv:/dir", "--group", "root"]);
    assert_eq!(gone(&b), Err(std::io::ErrorKind::NotFound));
    // A read limit on a new version.
    let out = ts.run(&["write", "kv:/c", "--max-opens", "3"], b"sea-2");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(gone(&c), Err(std::io::ErrorKind::NotFound));
    let listed: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(listed.is_empty(), "still listed: {listed:?}");
    // Revoking the grant brings the entry back, with its mode bits only.
    ts.ok(&["acl", "revoke", "kv:/a", "--user", BOB]);
    assert_eq!(std::fs::read(&a).unwrap(), b"value-0");
    let log = unmount_and_log(&ts, m, &log);
    for path in ["kv:/a: a grant", "kv:/dir: a grant", "kv:/c: a read limit"] {
        let n = log.lines().filter(|l| l.contains(path)).count();
        assert_eq!(n, 1, "one line for {path}:\n{log}");
    }
}

#[test]
fn expiry_is_pushed_by_invalidation_at_its_time() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    kernel_vault(&ts);
    let out = ts.run(&["write", "kv:/tmp", "--ttl", "2s"], b"short-lived");
    assert!(out.status.success(), "{out:?}");
    let written = Instant::now();
    let (mnt, log) = (ts.path("mnt"), ts.path("mount.log"));
    let _m = mount_kernel(&ts, "kv", &mnt, &log);
    let tmp = mnt.join("tmp");
    assert_eq!(std::fs::read(&tmp).unwrap(), b"short-lived");
    // Read from the page cache until it expires; then gone within a bounded delay (the
    // refresher wakes at the expiry, not at its next poll).
    let mut last_ok = written;
    loop {
        match std::fs::read(&tmp) {
            Ok(v) => {
                assert_eq!(v, b"short-lived");
                last_ok = Instant::now();
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
                break;
            }
        }
        assert!(written.elapsed() < Duration::from_secs(10), "never expired");
        std::thread::sleep(Duration::from_millis(2));
    }
    let late = last_ok.saturating_duration_since(written);
    // `write` returned after the expiry time was fixed, so "written" is a little late itself.
    assert!(
        late < Duration::from_millis(2000 + 100),
        "readable {late:?} after the write, for a 2 s ttl"
    );
}

#[test]
fn a_locked_store_never_hangs_ls_stat_or_cat_of_cached_secrets() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    kernel_vault(&ts);
    ts.write("kv:/never-read", b"n");
    let (mnt, log) = (ts.path("mnt"), ts.path("mount.log"));
    let _m = mount_kernel(&ts, "kv", &mnt, &log);
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"value-0");
    let lock = WalLock::hold(&ts.store);
    let m2 = mnt.clone();
    within(
        Duration::from_secs(5),
        "ls, stat and cat under a locked store",
        move || {
            for _ in 0..20 {
                assert!(std::fs::read_dir(&m2).unwrap().count() >= 3);
                assert_eq!(std::fs::metadata(m2.join("a")).unwrap().len(), 7);
                assert_eq!(std::fs::read(m2.join("a")).unwrap(), b"value-0");
            }
        },
    );
    // A secret never read needs the store: an error within the open timeout, never a hang.
    let m3 = mnt.clone();
    let r = within(
        Duration::from_secs(5),
        "cat of an uncached secret",
        move || std::fs::read(m3.join("never-read")).map_err(|e| e.raw_os_error()),
    );
    assert_eq!(r, Err(Some(libc::EIO)));
    drop(lock);
    assert_eq!(std::fs::read(mnt.join("never-read")).unwrap(), b"n");
}

#[test]
fn the_serve_config_key_turns_it_on_and_is_checked() {
    let ts = TestStore::new();
    let config = ts.path("serve.toml");
    let mnt = ts.path("mnt");
    std::fs::write(
        &config,
        format!(
            "[[mount]]\nsource = \"kv\"\nmountpoint = \"{}\"\nkernel_checks = true\n",
            mnt.display()
        ),
    )
    .unwrap();
    ts.ok(&[
        "serve",
        "--check",
        "--offline",
        "--config",
        config.to_str().unwrap(),
    ]);
    std::fs::write(
        &config,
        format!(
            "[[mount]]\nsource = \"kv\"\nmountpoint = \"{}\"\nkernel_checks = \"yes\"\n",
            mnt.display()
        ),
    )
    .unwrap();
    let out = ts.run(
        &[
            "serve",
            "--check",
            "--offline",
            "--config",
            config.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code(&out), 2, "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serve.toml:4") && err.contains("boolean"),
        "{err}"
    );
}

#[test]
fn the_nixos_option_writes_the_serve_key_for_that_mount_only() {
    if !crate::common::require_tool("nix-instantiate") {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = serde_json::json!({
        "enable": true,
        "keyFile": "/etc/vaultfs/key",
        "mounts": {
            "fast": { "source": "kv", "kernelChecks": true },
            "plain": { "source": "other" },
        },
    });
    let out = std::process::Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(repo.join("nixos/tests/eval.nix"))
        .args(["--argstr", "settingsJSON", &settings.to_string()])
        .env("NIX_REMOTE", "dummy://")
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v["configFile"]["text"].as_str().expect("configFile.text");
    let fast = text
        .split("[[mount]]")
        .find(|m| m.contains("\"kv\""))
        .unwrap();
    let plain = text
        .split("[[mount]]")
        .find(|m| m.contains("\"other\""))
        .unwrap();
    assert!(fast.contains("kernel_checks = true\n"), "{text}");
    assert!(!plain.contains("kernel_checks"), "{text}");
    // And the daemon accepts what the module wrote.
    let ts = TestStore::new();
    let config = ts.path("serve.toml");
    std::fs::write(&config, text).unwrap();
    ts.ok(&[
        "serve",
        "--check",
        "--offline",
        "--config",
        config.to_str().unwrap(),
    ]);
}

#[test]
fn rm_and_mv_are_seen_by_the_next_open() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    kernel_vault(&ts);
    ts.write("kv:/c", b"sea");
    let (mnt, log) = (ts.path("mnt"), ts.path("mount.log"));
    let _m = mount_kernel(&ts, "kv", &mnt, &log);
    for _ in 0..3 {
        assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"value-0");
        assert_eq!(std::fs::read(mnt.join("c")).unwrap(), b"sea");
    }
    ts.ok(&["rm", "kv:/c"]);
    let err = std::fs::read(mnt.join("c")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    ts.ok(&["mv", "kv:/a", "kv:/dir/a2"]);
    let err = std::fs::read(mnt.join("a")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    assert_eq!(std::fs::read(mnt.join("dir/a2")).unwrap(), b"value-0");
}

#[test]
fn serve_refuses_a_kernel_checked_mount_of_a_vault_with_a_template_with_exit_2() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    kernel_vault(&ts);
    let out = ts.run(&["template", "set", "kv:/t"], b"x={{ kv:/a }}\n");
    assert!(out.status.success(), "{out:?}");
    let mnt = ts.path("mnt");
    let config = ts.path("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[[mount]]\nsource = \"kv\"\nmountpoint = \"{}\"\nkernel_checks = true\n",
            mnt.display()
        ),
    )
    .unwrap();
    let mut cmd = ts.cmd();
    cmd.args(["serve", "--config", config.to_str().unwrap()]);
    let out = within(Duration::from_secs(20), "serve", move || {
        crate::common::run_command(&mut cmd, b"")
    });
    assert_eq!(code(&out), 2, "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("kernel checks refused: kv:/t has a template"),
        "{err}"
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_descriptor_opened_before_a_rotation_or_rm_keeps_its_version() {
    use std::io::{Read, Seek};
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    kernel_vault(&ts);
    let (mnt, log) = (ts.path("mnt"), ts.path("mount.log"));
    let _m = mount_kernel(&ts, "kv", &mnt, &log);
    let mut old = std::fs::File::open(mnt.join("a")).unwrap();
    let mut got = Vec::new();
    old.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"value-0");
    ts.write("kv:/a", b"a longer value-1");
    // The rotation dropped the old inode's pages and attributes: both come back from the
    // daemon, at the old version.
    assert_eq!(old.metadata().unwrap().len(), 7);
    old.rewind().unwrap();
    got.clear();
    old.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"value-0");
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"a longer value-1");
    // Removed: new opens fail, the old descriptor keeps its version (as on any filesystem).
    ts.ok(&["rm", "kv:/a"]);
    let err = std::fs::read(mnt.join("a")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    old.rewind().unwrap();
    got.clear();
    old.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"value-0");
}
