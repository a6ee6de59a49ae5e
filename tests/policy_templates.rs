//! Templates and the limits of their inputs: an expired or spent input is missing, so a
//! template made of it stops rendering (through the mount and `vaultfs cat`), never serving a
//! value its input no longer may.

use std::time::Duration;

use crate::common::{code, TestStore};
use crate::mounts::{can_mount, wait_until, MountGuard};

/// Mounts `vault` daemonized with its log in `daemon.log`; returns the guard and the log path.
fn mount_logged(ts: &TestStore, vault: &str) -> (MountGuard, std::path::PathBuf) {
    let mnt = ts.path("mnt");
    let log = ts.path("daemon.log");
    let out = ts.run(
        &[
            "mount",
            "--log-file",
            log.to_str().unwrap(),
            vault,
            mnt.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    (MountGuard { path: mnt }, log)
}

fn eio_from_now_on(conf: &std::path::Path) {
    wait_until(
        Duration::from_secs(8),
        "opens of the template to fail",
        || std::fs::read(conf).is_err(),
    );
    for _ in 0..10 {
        assert_eq!(
            std::fs::read(conf).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
    }
}

#[test]
fn a_template_stops_rendering_when_its_input_expires() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("pt", &[]);
    let out = ts.run(&["write", "pt:/tok", "--ttl", "2s"], b"short-token");
    assert!(out.status.success(), "{out:?}");
    let out = ts.run(&["template", "set", "pt:/conf"], b"token={{ pt:/tok }}\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(ts.cat("pt:/conf"), b"token=short-token\n");
    let (m, log) = mount_logged(&ts, "pt");
    let conf = m.path.join("conf");
    assert_eq!(std::fs::read(&conf).unwrap(), b"token=short-token\n");

    // Nothing changes in the store: real time passes, and the input is missing.
    eio_from_now_on(&conf);
    wait_until(Duration::from_secs(5), "the log to name the input", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("pt:/tok"))
    });
    eio_from_now_on(&conf);
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("pt:/tok").count(), 1, "logged once: {text}");
    assert!(!text.contains("short-token"), "never a value: {text}");

    // `vaultfs cat` agrees: one line naming the placeholder, no value.
    let out = ts.run(&["cat", "pt:/conf"], b"");
    assert_ne!(code(&out), 0, "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("pt:/tok"), "{err}");
    assert!(
        out.stdout.is_empty() && !err.contains("short-token"),
        "{err}"
    );

    // A fresh value (no expiry) makes it render again.
    ts.write("pt:/tok", b"renewed");
    wait_until(
        Duration::from_secs(5),
        "the template to render again",
        || std::fs::read(&conf).is_ok_and(|v| v == b"token=renewed\n"),
    );
    assert_eq!(ts.cat("pt:/conf"), b"token=renewed\n");
}

#[test]
fn a_template_stops_rendering_when_its_inputs_read_limit_is_spent() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("pt", &[]);
    let out = ts.run(&["write", "pt:/once", "--max-opens", "1"], b"once-token");
    assert!(out.status.success(), "{out:?}");
    let out = ts.run(&["template", "set", "pt:/conf"], b"token={{ pt:/once }}\n");
    assert!(out.status.success(), "{out:?}");
    let (m, log) = mount_logged(&ts, "pt");
    let conf = m.path.join("conf");
    assert_eq!(std::fs::read(&conf).unwrap(), b"token=once-token\n");
    // The one allowed open, then the refused one that marks it spent.
    assert_eq!(std::fs::read(m.path.join("once")).unwrap(), b"once-token");
    let err = std::fs::read(m.path.join("once")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");

    eio_from_now_on(&conf);
    wait_until(Duration::from_secs(5), "the log to name the input", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("pt:/once: no such secret"))
    });
    eio_from_now_on(&conf);
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap();
    let missing = text.matches("pt:/once: no such secret").count();
    assert_eq!(missing, 1, "logged once: {text}");
    assert!(!text.contains("once-token"), "never a value: {text}");
}

#[test]
fn the_credential_socket_sends_no_expired_secret_nor_a_template_made_of_one() {
    use crate::credsock::{ask, assert_refused, serve};
    let ts = TestStore::new();
    ts.vault("pt", &[]);
    let out = ts.run(&["write", "pt:/tok", "--ttl", "2s"], b"short-token");
    assert!(out.status.success(), "{out:?}");
    let out = ts.run(&["template", "set", "pt:/conf"], b"token={{ pt:/tok }}\n");
    assert!(out.status.success(), "{out:?}");
    let server = serve(
        &ts,
        &[
            (0, "consumer.service", "conf", "pt:/conf"),
            (0, "consumer.service", "tok", "pt:/tok"),
        ],
    );
    assert_eq!(
        ask(&server.socket, "consumer.service", "conf").unwrap(),
        b"token=short-token\n"
    );
    assert_eq!(
        ask(&server.socket, "consumer.service", "tok").unwrap(),
        b"short-token"
    );
    // Real time passes; nothing changes in the store.
    wait_until(Duration::from_secs(8), "the secret to expire", || {
        ask(&server.socket, "consumer.service", "tok").map_or(true, |v| v != b"short-token")
    });
    assert_refused(
        ask(&server.socket, "consumer.service", "tok"),
        "an expired secret",
    );
    assert_refused(
        ask(&server.socket, "consumer.service", "conf"),
        "a template made of an expired secret",
    );
}
