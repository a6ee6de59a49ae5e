//! Process hygiene: locked memory, no dumps or ptrace by same-uid processes, nothing secret in
//! argv or the environment.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{random_name, TestStore};
use crate::mounts::*;

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

#[test]
fn the_daemon_locks_its_memory_and_keeps_secrets_out_of_argv_and_environ() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    let value = format!("canary-{}", random_name());
    ts.write("app:/s", value.as_bytes());
    let mnt = ts.path("mnt");
    let (daemon, _g) = ts.mount_foreground("app", &mnt);
    assert_eq!(std::fs::read(mnt.join("s")).unwrap(), value.as_bytes());
    let pid = daemon.id();
    let locked: u64 = status_field(pid, "VmLck")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(locked > 0, "VmLck is 0: mlockall did not take");
    let key = std::fs::read(&ts.key).unwrap();
    for file in ["cmdline", "environ"] {
        let text = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
        assert!(!contains(&text, value.as_bytes()), "value in {file}");
        assert!(!contains(&text, key.trim_ascii()), "key in {file}");
    }
    let mut daemon = daemon;
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    within(Duration::from_secs(10), "daemon exit", move || {
        daemon.wait().unwrap()
    });
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs `args` as `user` through setpriv, which execs: the child's pid is the program's.
fn spawn_as(user: &str, env: &[(&str, &Path)], args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("setpriv")
}

#[test]
fn a_same_uid_process_cannot_read_a_vaultfs_process_memory() {
    if !can_mount() {
        return;
    }
    let user_name = "vfs-dump";
    let uid = user(user_name, None);
    let ts = TestStore::new();
    let home = ts.path("dump-home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
    let store = home.join("store.db");
    let key = home.join("key");
    let bin = crate::common::vaultfs_bin();
    let bin = bin.to_str().unwrap();
    let env = [
        ("VAULTFS_STORE", store.as_path()),
        ("VAULTFS_KEY_FILE", key.as_path()),
    ];
    for args in [
        vec![bin, "keygen", key.to_str().unwrap()],
        vec![bin, "init"],
        vec![bin, "vault", "create", "mine"],
    ] {
        let out = spawn_as(user_name, &env, &args).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A vaultfs process of that user, alive inside vaultfs (reading a secret from stdin),
    // next to a plain process of the same user.
    let mut writer = spawn_as(user_name, &env, &[bin, "write", "--allow-empty", "mine:/x"]);
    let mut sleeper = spawn_as(user_name, &[], &["sleep", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    let peek = |pid: u32, what: &str| {
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                user_name,
                "--regid",
                user_name,
                "--init-groups",
                "--",
            ])
            .args(["head", "-c", "16", &format!("/proc/{pid}/{what}")])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(
        peek(sleeper.id(), "environ").0,
        "a plain process's environ is readable"
    );
    for what in ["environ", "mem"] {
        let (ok, err) = peek(writer.id(), what);
        assert!(
            !ok,
            "/proc/PID/{what} of a vaultfs process was readable by its own uid"
        );
        assert!(err.contains("Permission denied"), "{what}: {err}");
    }
    // The kernel marks it undumpable: its /proc files belong to root.
    let owner = std::fs::metadata(format!("/proc/{}/environ", writer.id()))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    assert_eq!(owner, 0);

    drop(writer.stdin.take());
    assert!(writer.wait().unwrap().success());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
