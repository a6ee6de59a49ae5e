//! On-change actions of `vaultfs serve` (`restart_units`, `reload_units`, `signal`, `exec`):
//! fired only when the bytes a reader would get changed, never at start, once per burst, with
//! backoff on failure. Direct tests here (exec actions run as children: no systemd); under a
//! real systemd 252 in `systemd_restarts_a_unit_once_per_burst`.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{random_name, TestStore};
use crate::mounts::{can_mount, is_mounted, wait_until, MountGuard};

/// A `vaultfs serve` child: SIGTERM, reaped and unmounted on drop.
struct Server {
    child: Child,
    log: PathBuf,
    _guard: MountGuard,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(ts: &TestStore, config: &str, mountpoint: &Path) -> Server {
        let cfg = ts.path(&format!("serve-{}.toml", random_name()));
        std::fs::write(&cfg, config).unwrap();
        let log = ts.path(&format!("serve-{}.log", random_name()));
        let child = ts
            .cmd()
            .env("VAULTFS_LOG", "info")
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn vaultfs serve");
        let server = Server {
            child,
            log,
            _guard: MountGuard {
                path: mountpoint.to_owned(),
            },
        };
        wait_until(Duration::from_secs(10), "the mount", || {
            is_mounted(mountpoint)
        });
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `exec = ["/bin/sh", "-c", "echo TAG >> FILE; exit CODE"]` as TOML.
fn append(tag: &str, file: &Path, code: i32) -> String {
    format!(
        "exec = [\"/bin/sh\", \"-c\", \"echo {tag} >> '{}'; exit {code}\"]\n",
        file.display()
    )
}

#[test]
fn exec_actions_fire_once_per_burst_and_only_for_changed_bytes() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    ts.write(&format!("{vault}:/app/tok"), b"tok-0");
    ts.write(&format!("{vault}:/other"), b"x");
    let out = ts.run(
        &["template", "set", &format!("{vault}:/app/conf")],
        format!("token = {{{{ {vault}:/app/tok }}}}\n").as_bytes(),
    );
    assert!(out.status.success(), "{out:?}");
    let runs = ts.path("runs");
    let mnt = ts.path("mnt");
    let config = format!(
        "[[mount]]\nsource = \"{vault}\"\nmountpoint = \"{}\"\nquiet_period_ms = 1500\n{}\
         [[mount.on_change]]\npath = \"/app/tok\"\n{}\
         [[mount.on_change]]\npath = \"/app/conf\"\n{}",
        mnt.display(),
        append("any", &runs, 0),
        append("tok", &runs, 0),
        append("conf", &runs, 0),
    );
    let server = Server::start(&ts, &config, &mnt);
    let count = |tag: &str| lines(&runs).iter().filter(|l| *l == tag).count();

    // Never at start.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(lines(&runs).is_empty(), "ran at start: {:?}", lines(&runs));

    // A burst of 20 writes is one run of each action that watches it.
    for i in 1..=20 {
        ts.write(&format!("{vault}:/app/tok"), format!("tok-{i}").as_bytes());
    }
    wait_until(
        Duration::from_secs(10),
        "the actions after the burst",
        || lines(&runs).len() >= 3,
    );
    std::thread::sleep(Duration::from_millis(2500));
    let mut got = lines(&runs);
    got.sort();
    assert_eq!(got, ["any", "conf", "tok"], "{}", server.log());

    // The same bytes written again: nothing. Away and back within the window: nothing.
    ts.write(&format!("{vault}:/app/tok"), b"tok-20");
    ts.write(&format!("{vault}:/app/tok"), b"tok-21");
    ts.write(&format!("{vault}:/app/tok"), b"tok-20");
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        lines(&runs).len(),
        3,
        "{:?}\n{}",
        lines(&runs),
        server.log()
    );

    // Another secret: only the mount-wide action.
    ts.write(&format!("{vault}:/other"), b"y");
    wait_until(Duration::from_secs(10), "the mount-wide action", || {
        count("any") == 2
    });
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!((count("tok"), count("conf")), (1, 1), "{:?}", lines(&runs));

    // A removed secret is a change (readers now get nothing); the template it fed no longer
    // renders, which is a change of the template too.
    ts.ok(&["rm", &format!("{vault}:/app/tok")]);
    wait_until(Duration::from_secs(10), "the actions after rm", || {
        count("tok") == 2 && count("conf") == 2 && count("any") == 3
    });
    let log = server.log();
    assert!(log.contains("after a change"), "{log}");
    assert!(!log.contains("tok-2"), "a value in the log: {log}");
}

#[test]
fn a_failing_action_is_retried_with_backoff_and_logged() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    ts.write(&format!("{vault}:/tok"), b"one");
    let attempts = ts.path("attempts");
    let mnt = ts.path("mnt");
    let config = format!(
        "[[mount]]\nsource = \"{vault}\"\nmountpoint = \"{}\"\nquiet_period_ms = 200\n{}",
        mnt.display(),
        append("try", &attempts, 3),
    );
    let server = Server::start(&ts, &config, &mnt);
    ts.write(&format!("{vault}:/tok"), b"two");
    wait_until(Duration::from_secs(10), "the first attempt", || {
        !lines(&attempts).is_empty()
    });
    let first = Instant::now();
    // Retries 1 s, then 2 s, then 4 s later: three attempts in the first 5 s, never a loop.
    std::thread::sleep(Duration::from_millis(5000));
    let n = lines(&attempts).len();
    assert_eq!(
        n,
        3,
        "{n} attempts in {:?}\n{}",
        first.elapsed(),
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("failed: /bin/sh exit status: 3; attempt 1, retrying in 1s"),
        "{log}"
    );
    // Later attempts' lines differ only in numbers: the log summarizes them per 10 s window.
    assert!(log.contains(" ERROR "), "{log}");
}

#[test]
fn serve_check_refuses_bad_actions_with_one_line() {
    let ts = TestStore::new();
    let cfg = ts.path("bad.toml");
    std::fs::write(
        &cfg,
        "[[mount]]\nsource = \"web\"\nmountpoint = \"/run/keys/web\"\nrestart_units = [\"nginx\"]\n",
    )
    .unwrap();
    let line = ts.fails(&["serve", "--check", "--config", cfg.to_str().unwrap()], 2);
    assert!(
        line.contains("mount #1: restart_units: \"nginx\" is not a full unit name"),
        "{line}"
    );
}
