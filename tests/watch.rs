//! `vaultfs watch` and `vaultfs env --restart-on-change`: long-lived processes that act on a
//! change of a secret's bytes, coalesced, never at start, with backoff on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{random_name, TestStore};
use crate::mounts::wait_until;

/// A long-lived vaultfs child: SIGKILLed and reaped on drop; its stderr goes to a file.
struct Watcher {
    child: Child,
    log: PathBuf,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watcher {
    fn start(ts: &TestStore, args: &[&str]) -> Watcher {
        let log = ts.path(&format!("watch-{}.log", random_name()));
        let child = ts
            .cmd()
            .env("VAULTFS_LOG", "info")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn vaultfs");
        Watcher { child, log }
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

/// `vaultfs watch ADDR -- sh -c 'echo run >> FILE'`, started and watching.
fn watch_appending(ts: &TestStore, addr: &str, quiet: &str, file: &Path) -> Watcher {
    let script = format!("echo run >> '{}'", file.display());
    let w = Watcher::start(
        ts,
        &[
            "watch",
            "--quiet-period",
            quiet,
            "--poll-interval",
            "50ms",
            addr,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_until(Duration::from_secs(10), "watch to start", || {
        w.log().contains("watching 1 address(es)")
    });
    w
}

#[test]
fn a_burst_of_writes_runs_the_command_once() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    let addr = format!("{vault}:/tok");
    ts.write(&addr, b"v0");
    let runs = ts.path("runs");
    let w = watch_appending(&ts, &addr, "2s", &runs);
    // A long-lived process holding keys locks its memory (the daemon's hygiene).
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.child.id())).unwrap();
    let locked = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .map(|v| {
            v.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap()
        });
    if crate::common::is_root() {
        assert!(
            locked.unwrap_or(0) > 0,
            "watch does not lock its memory:\n{status}"
        );
    }
    for i in 1..=20 {
        ts.write(&addr, format!("v{i}").as_bytes());
    }
    wait_until(Duration::from_secs(15), "the command to run", || {
        !lines(&runs).is_empty()
    });
    // Well past the quiet window: still exactly one run.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(lines(&runs).len(), 1, "log:\n{}", w.log());
    assert!(!w.log().contains("v20"), "a value in the log");
}

#[test]
fn nothing_runs_at_start_or_for_an_unchanged_rewrite() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    let addr = format!("{vault}:/tok");
    ts.write(&addr, b"same");
    ts.write(&format!("{vault}:/other"), b"x");
    let runs = ts.path("runs");
    let w = watch_appending(&ts, &addr, "500ms", &runs);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(lines(&runs).is_empty(), "ran at start");
    // The same bytes again, and a change to a secret nobody watches: no run.
    for _ in 0..3 {
        ts.write(&addr, b"same");
    }
    ts.write(&format!("{vault}:/other"), b"y");
    std::thread::sleep(Duration::from_millis(2000));
    assert!(lines(&runs).is_empty(), "ran for an unchanged rewrite");
    // A real change runs it (so the silence above was not a dead watcher).
    ts.write(&addr, b"different");
    wait_until(Duration::from_secs(10), "the command to run", || {
        lines(&runs).len() == 1
    });
    // Removing the secret is a change too.
    ts.ok(&["rm", &addr]);
    wait_until(Duration::from_secs(10), "the command to run again", || {
        lines(&runs).len() == 2
    });
    drop(w);
}

#[test]
fn a_failing_command_backs_off() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    let addr = format!("{vault}:/tok");
    ts.write(&addr, b"a");
    let attempts = ts.path("attempts");
    let script = format!("date +%s%N >> '{}'; exit 3", attempts.display());
    let w = Watcher::start(
        &ts,
        &[
            "watch",
            "--quiet-period",
            "200ms",
            "--poll-interval",
            "50ms",
            &addr,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_until(Duration::from_secs(10), "watch to start", || {
        w.log().contains("watching 1 address(es)")
    });
    ts.write(&addr, b"b");
    wait_until(Duration::from_secs(10), "the first attempt", || {
        !lines(&attempts).is_empty()
    });
    // Backoff 1 s, 2 s, 4 s: attempts at about 0, 1, 3 and 7 s. A busy machine only delays
    // them, so the gaps are checked as lower bounds, and a fifth attempt must not come before
    // the 8 s gap that follows the fourth.
    wait_until(Duration::from_secs(40), "four attempts", || {
        lines(&attempts).len() >= 4
    });
    std::thread::sleep(Duration::from_millis(500));
    let times: Vec<f64> = lines(&attempts)
        .iter()
        .map(|l| l.parse::<u64>().unwrap() as f64 / 1e9)
        .collect();
    assert_eq!(times.len(), 4, "a tight loop: {times:?}\n{}", w.log());
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, at_least) in gaps.iter().zip([0.9, 1.9, 3.9]) {
        assert!(*gap >= at_least, "gaps do not back off: {gaps:?}");
    }
    let log = w.log();
    assert!(
        log.contains("failed (exit status: 3), attempt 1; retrying in 1s"),
        "{log}"
    );
    // Later attempts' lines differ only by numbers: the log's rate limiter counts them.
}

#[test]
fn env_restart_on_change_restarts_the_child_with_the_new_value() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    let addr = format!("{vault}:/tok");
    let first = random_name();
    ts.write(&addr, first.as_bytes());
    let values = ts.path("values");
    let terms = ts.path("terms");
    let script = format!(
        "trap 'echo $$ >> \"{terms}\"; exit 0' TERM; echo \"$$ $TOK\" >> \"{values}\"; while :; do sleep 0.05; done",
        terms = terms.display(),
        values = values.display()
    );
    let mut w = Watcher::start(
        &ts,
        &[
            "env",
            "--restart-on-change",
            "--quiet-period",
            "300ms",
            "--poll-interval",
            "50ms",
            &format!("{addr}=TOK"),
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_until(Duration::from_secs(10), "the child to start", || {
        lines(&values).len() == 1
    });
    let pid0 = lines(&values)[0].split(' ').next().unwrap().to_owned();
    assert_eq!(lines(&values)[0], format!("{pid0} {first}"));

    let second = random_name();
    ts.write(&addr, second.as_bytes());
    wait_until(Duration::from_secs(10), "the restart", || {
        lines(&values).len() == 2
    });
    let got = lines(&values);
    let pid1 = got[1].split(' ').next().unwrap().to_owned();
    assert_eq!(got[1], format!("{pid1} {second}"), "fresh value");
    assert_ne!(pid0, pid1);
    assert_eq!(
        lines(&terms),
        vec![pid0.clone()],
        "the old child got SIGTERM"
    );

    // The same bytes again: no restart.
    ts.write(&addr, second.as_bytes());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        lines(&values).len(),
        2,
        "restarted for an unchanged rewrite"
    );

    // SIGTERM to vaultfs reaches the child; vaultfs exits with its code.
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(w.child.id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = w.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "env did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", w.log());
    assert_eq!(lines(&terms), vec![pid0, pid1]);
    let log = w.log();
    assert!(
        !log.contains(&first) && !log.contains(&second),
        "a value in the log"
    );
}

#[test]
fn watch_refuses_a_missing_address_and_env_timing_without_restart() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    let err = ts.fails_any(&["watch", &format!("{vault}:/typo"), "--", "true"]);
    assert!(err.contains("typo"), "{err}");
    ts.write(&format!("{vault}:/tok"), b"x");
    let err = ts.fails(
        &[
            "env",
            "--quiet-period",
            "1s",
            &format!("{vault}:/tok"),
            "--",
            "true",
        ],
        2,
    );
    assert!(err.contains("--restart-on-change"), "{err}");
    // clap's own usage error: exit 2, naming the bad value.
    let out = ts.run(
        &[
            "watch",
            "--quiet-period",
            "soon",
            &format!("{vault}:/tok"),
            "--",
            "true",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"soon\" is not a duration"));
}

#[test]
fn watching_a_directory_sees_a_new_secret_in_it() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    ts.write(&format!("{vault}:/app/a"), b"1");
    let runs = ts.path("runs");
    let w = watch_appending(&ts, &format!("{vault}:/app"), "300ms", &runs);
    ts.write(&format!("{vault}:/elsewhere"), b"1");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        lines(&runs).is_empty(),
        "ran for a secret outside the directory"
    );
    ts.write(&format!("{vault}:/app/b"), b"2");
    wait_until(Duration::from_secs(10), "the command to run", || {
        lines(&runs).len() == 1
    });
    drop(w);
}
