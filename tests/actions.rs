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
fn serve_check_asks_systemd_only_where_it_runs_and_never_offline() {
    let ts = TestStore::new();
    let cfg = ts.path("units.toml");
    let unit = format!("vaultfs-test-{}.service", random_name());
    std::fs::write(
        &cfg,
        format!("[[mount]]\nsource = \"web\"\nmountpoint = \"/run/keys/web\"\nreload_units = [\"{unit}\"]\n"),
    )
    .unwrap();
    let path = cfg.to_str().unwrap();
    let out = ts.run(&["serve", "--check", "--offline", "--config", path], b"");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.len() < 200 && !crate::common::contains(&out.stderr, b"warning"),
        "{out:?}"
    );
    if Path::new("/run/systemd/system").exists() {
        let line = ts.fails(&["serve", "--check", "--config", path], 2);
        assert!(
            line.contains(&format!("unit {unit} does not exist")),
            "{line}"
        );
    } else {
        let out = ts.run(&["serve", "--check", "--config", path], b"");
        assert!(out.status.success(), "{out:?}");
        assert!(
            crate::common::contains(&out.stderr, b"warning: systemd is not running here: unit names of on-change actions are not checked"),
            "{out:?}"
        );
    }
    // --offline belongs to --check.
    let out = ts.run(&["serve", "--offline", "--config", path], b"");
    assert_eq!(crate::common::code(&out), 2, "{out:?}");
    assert!(crate::common::contains(&out.stderr, b"--check"), "{out:?}");
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

/// The shipped, hardened unit (its system-call filter and capabilities: no CAP_KILL), with
/// the paths of the container.
fn shipped_unit() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/vaultfs.service"),
    )
    .expect("contrib/systemd/vaultfs.service")
    .replace("/usr/local/bin/vaultfs", "/opt/vaultfs/vaultfs")
    .replace("/etc/vaultfs/", "/opt/vaultfs/")
    .replace("[Service]\n", "[Service]\nEnvironment=VAULTFS_LOG=info\n")
}

#[test]
fn systemd_restarts_a_unit_once_per_burst_and_backs_off_a_failing_action() {
    if !can_mount() || !crate::common::require_tool("systemd-nspawn") {
        return;
    }
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    ts.write(&format!("{vault}:/app/tok"), b"v0");
    ts.write(&format!("{vault}:/flaky"), b"f0");

    let stage = ts.path("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(crate::common::vaultfs_bin(), stage.join("vaultfs")).unwrap();
    std::fs::copy(&ts.key, stage.join("key")).unwrap();
    let store = "/var/lib/vaultfs-test/store.db";
    std::fs::write(
        stage.join("serve.toml"),
        format!(
            "store = \"{store}\"\n[[mount]]\nsource = \"{vault}\"\nmountpoint = \"/run/keys/app\"\n\
             [[mount.on_change]]\npath = \"/app\"\nrestart_units = [\"app.service\"]\n\
             signal = {{ unit = \"hup.service\", signal = \"HUP\" }}\n\
             [[mount.on_change]]\npath = \"/flaky\"\n\
             exec = [\"/usr/bin/sh\", \"-c\", \"echo try >> /out/flaky.attempts; exit 1\"]\n"
        ),
    )
    .unwrap();
    // The same, with the unit name misspelled.
    std::fs::write(
        stage.join("typo.toml"),
        format!(
            "store = \"{store}\"\n[[mount]]\nsource = \"{vault}\"\nmountpoint = \"/run/keys/typo\"\n\
             quiet_period_ms = 200\nrestart_units = [\"apq.service\"]\n"
        ),
    )
    .unwrap();
    let write = |addr: &str, value: &str| {
        format!(
            "printf '{value}' | /opt/vaultfs/vaultfs --store {store} --key-file /opt/vaultfs/key write {vault}:{addr}\n"
        )
    };
    let mut probe = String::from(
        "set -x\nexec 2>/out/probe.log\n\
         systemctl start app.service hup.service\n\
         for i in $(seq 50); do [ -s /out/app.starts ] && break; sleep 0.1; done\n\
         # Never at daemon start: restart the daemon under a running app.\n\
         systemctl restart vaultfs.service\nsleep 3\n\
         cp /out/app.starts /out/starts.after-daemon-restart\n",
    );
    for i in 1..=20 {
        probe.push_str(&write("/app/tok", &format!("v{i}")));
    }
    probe.push_str(
        "sleep 4\ncp /out/app.starts /out/starts.after-burst\ncp /run/hup/count /out/hups.after-burst\n",
    );
    // The same bytes again: no restart. And the failing action, retried with backoff.
    probe.push_str(&write("/app/tok", "v20"));
    probe.push_str(&write("/flaky", "f1"));
    probe.push_str(&format!(
        "for i in $(seq 100); do [ -s /out/flaky.attempts ] && break; sleep 0.1; done\n\
         sleep 4.5\ncp /out/flaky.attempts /out/attempts.at-4.5s\n\
         cp /out/app.starts /out/starts.after-rewrite\n\
         cp /run/hup/count /out/hups.after-rewrite\n\
         /opt/vaultfs/vaultfs serve --check --config /opt/vaultfs/typo.toml 2>/out/typo.err; echo $? >/out/typo.rc\n\
         /opt/vaultfs/vaultfs serve --check --config /opt/vaultfs/serve.toml 2>/out/good.err; echo $? >/out/good.rc\n\
         # Run anyway (no check): loud at start and at every attempt, never a silent no-op.\n\
         VAULTFS_LOG=info /opt/vaultfs/vaultfs --store {store} --key-file /opt/vaultfs/key serve --config /opt/vaultfs/typo.toml 2>/out/typo-serve.log &\n\
         typo=$!\n\
         for i in $(seq 100); do mountpoint -q /run/keys/typo && break; sleep 0.1; done\n"
    ));
    probe.push_str(&write("/other", "o1"));
    probe.push_str(
        "sleep 2\nkill $typo; wait $typo\n\
         journalctl -b --no-pager >/out/journal.txt\n",
    );
    std::fs::write(stage.join("probe.sh"), probe).unwrap();

    let units = ts.path("units");
    std::fs::create_dir_all(&units).unwrap();
    let unit = |name: &str, text: &str| {
        let path = units.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let server = unit("vaultfs.service", &shipped_unit());
    // A small server that reads its secret at start and counts its starts.
    let app = unit(
        "app.service",
        "[Unit]\nAfter=vaultfs.service\nWants=vaultfs.service\n[Service]\nExecStart=/usr/bin/sh -c 'cat /run/keys/app/app/tok >/run/app.tok && echo start >>/out/app.starts && exec sleep infinity'\n",
    );
    // Another user's process: the daemon has no CAP_KILL, so only systemd can signal it.
    let hup = unit(
        "hup.service",
        "[Service]\nUser=nobody\nRuntimeDirectory=hup\nExecStart=/usr/bin/sh -c ': >/run/hup/count; trap \"echo hup >>/run/hup/count\" HUP; while :; do sleep 0.2; done'\n",
    );
    let probe = unit(
        "probe.service",
        "[Unit]\nAfter=vaultfs.service\nWants=vaultfs.service\n[Service]\nType=oneshot\nExecStart=/usr/bin/sh /opt/vaultfs/probe.sh\n",
    );
    let out = ts.path("out");
    let mut cmd = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/systemd-boot"),
    );
    cmd.args(["--run", "probe.service", "--out", out.to_str().unwrap()]);
    for u in [&server, &app, &hup, &probe] {
        cmd.args(["--unit", u.to_str().unwrap()]);
    }
    cmd.args([
        "--ro",
        &format!("{}:/opt/vaultfs", stage.display()),
        "--bind",
        &format!(
            "{}:/var/lib/vaultfs-test",
            ts.store.parent().unwrap().display()
        ),
        "--timeout",
        "90",
    ]);
    let status = crate::mounts::within(Duration::from_secs(120), "systemd-boot", move || {
        cmd.status()
    })
    .expect("run tests/support/systemd-boot");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let journal = read("journal.txt");
    let context = || {
        format!(
            "status {status:?}\nprobe.log:\n{}\nboot.log:\n{}\njournal:\n{journal}",
            read("probe.log"),
            read("boot.log")
        )
    };
    let starts = |name: &str| read(name).lines().count();
    assert_eq!(starts("starts.after-daemon-restart"), 1, "{}", context());
    assert_eq!(
        starts("starts.after-burst"),
        2,
        "one restart for 20 writes\n{}",
        context()
    );
    assert_eq!(
        starts("starts.after-rewrite"),
        2,
        "the same bytes\n{}",
        context()
    );
    assert_eq!(starts("hups.after-burst"), 1, "one SIGHUP\n{}", context());
    assert_eq!(starts("hups.after-rewrite"), 1, "{}", context());
    assert_eq!(
        journal.matches("Started app.service").count(),
        2,
        "{}",
        context()
    );
    // Attempts at 0 s, 1 s and 3 s (then 7 s): three in the first 4.5 s, never a tight loop.
    assert_eq!(starts("attempts.at-4.5s"), 3, "{}", context());
    assert!(
        journal.contains(
            "run \"/usr/bin/sh\" failed: systemd-run exit status: 1; attempt 1, retrying in 1s"
        ),
        "{}",
        context()
    );
    // A misspelled unit fails the check, naming it; the good config passes.
    let typo_serve = read("typo-serve.log");
    assert!(
        typo_serve.contains("mount #1: unit apq.service does not exist")
            && typo_serve.contains("this action will fail until the unit exists"),
        "{typo_serve}"
    );
    assert!(
        typo_serve.contains("mount #1: restart apq.service failed: systemctl exit status: 5: Failed to try-restart apq.service: Unit apq.service not found.; attempt 1"),
        "{typo_serve}"
    );
    assert_eq!(read("typo.rc").trim(), "2", "{}", context());
    let typo = read("typo.err");
    assert!(
        typo.contains("mount #1: unit apq.service does not exist"),
        "{typo}\n{}",
        context()
    );
    assert_eq!(
        read("good.rc").trim(),
        "0",
        "{}\n{}",
        read("good.err"),
        context()
    );
}

#[test]
fn the_readme_example_passes_serve_check() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("**On-change actions.**").expect("the section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..];
    let block = &block[..block.find("```").unwrap()];
    let ts = TestStore::new();
    let cfg = ts.path("readme.toml");
    std::fs::write(&cfg, block).unwrap();
    let out = ts.run(
        &[
            "serve",
            "--check",
            "--offline",
            "--config",
            cfg.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}\n{block}");
    assert!(
        crate::common::contains(&out.stderr, b"ok (1 mount(s), 4 on-change action(s)"),
        "{out:?}"
    );
}

#[test]
fn a_single_secret_mount_fires_for_its_secret() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    ts.write(&format!("{vault}:/tok"), b"one");
    ts.write(&format!("{vault}:/other"), b"x");
    let runs = ts.path("runs");
    let mnt = ts.path("tok");
    let config = format!(
        "[[mount]]\nsource = \"{vault}:/tok\"\nmountpoint = \"{}\"\nquiet_period_ms = 200\n{}",
        mnt.display(),
        append("tok", &runs, 0),
    );
    let server = Server::start(&ts, &config, &mnt);
    ts.write(&format!("{vault}:/other"), b"y");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        lines(&runs).is_empty(),
        "another secret: {:?}",
        lines(&runs)
    );
    ts.write(&format!("{vault}:/tok"), b"two");
    wait_until(Duration::from_secs(10), "the action", || {
        lines(&runs).len() == 1
    });
    assert_eq!(std::fs::read(&mnt).unwrap(), b"two", "{}", server.log());
}
