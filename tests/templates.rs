//! Templates: files rendered from secrets in memory at each open, through the mount and `cat`.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::common::{code, TestStore};
use crate::mounts::{can_mount, cat_as, user, wait_until};

fn set(ts: &TestStore, addr: &str, text: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["template", "set", addr];
    args.extend_from_slice(extra);
    ts.run(&args, text.as_bytes())
}

#[test]
fn cat_renders_a_template_and_show_prints_its_text() {
    let ts = TestStore::new();
    ts.vault("ci", &[]);
    ts.write("ci:/gh", b"ghp_one\n");
    let text = "machine github.com login x password {{ ci:/gh | trim }}\n";
    let out = set(&ts, "ci:/netrc", text, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        ts.cat("ci:/netrc"),
        b"machine github.com login x password ghp_one\n"
    );
    let shown = ts.ok_text(&["template", "show", "ci:/netrc"]);
    assert!(shown.ends_with(text), "{shown}");
    // Rotation is seen by the next read.
    ts.write("ci:/gh", b"ghp_two\n");
    assert_eq!(
        ts.cat("ci:/netrc"),
        b"machine github.com login x password ghp_two\n"
    );
}

#[test]
fn a_template_is_refused_when_it_names_a_missing_or_foreign_secret_or_is_malformed() {
    let ts = TestStore::new();
    ts.vault("ci", &[]);
    ts.vault("other", &[]);
    ts.write("ci:/gh", b"x");
    ts.write("other:/tok", b"y");
    for (text, want) in [
        ("{{ ci:/missing }}", "ci:/missing"),
        ("{{ other:/tok }}", "its own vault"),
        ("{{ ci:/gh", "line 1"),
        ("{{ ci:/gh | upper }}", "unknown filter"),
    ] {
        let out = set(&ts, "ci:/t", text, &[]);
        assert_ne!(code(&out), 0, "{text} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{text}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_ne!(
        code(&ts.run(&["cat", "ci:/t"], b"")),
        0,
        "nothing was stored"
    );
}

#[test]
fn a_value_cannot_inject_a_line_and_json_is_escaped() {
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/pw", b"hunter2\nadmin=true");
    assert!(set(&ts, "app:/conf", "password={{ app:/pw }}\n", &[])
        .status
        .success());
    let out = ts.run(&["cat", "app:/conf"], b"");
    assert_ne!(code(&out), 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("{{ app:/pw }}") && err.contains("raw"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2") && !err.contains("admin"),
        "never the value: {err}"
    );
    assert!(out.stdout.is_empty(), "never a half-rendered file");

    ts.write("app:/pw", b"a\"b\\c");
    let json = r#"{"password": "{{ app:/pw }}"}"#;
    assert!(set(&ts, "app:/c.json", json, &["--format", "json"])
        .status
        .success());
    let out = ts.run(&["cat", "app:/c.json"], b"");
    assert_ne!(code(&out), 0, "a quote may not leave its JSON string");
    let escaped = r#"{"password": "{{ app:/pw | json }}"}"#;
    assert!(set(&ts, "app:/c.json", escaped, &["--format", "json"])
        .status
        .success());
    let rendered = ts.cat("app:/c.json");
    let parsed: serde_json::Value = serde_json::from_slice(&rendered).unwrap();
    assert_eq!(parsed["password"], "a\"b\\c");
}

#[test]
fn templates_and_secrets_do_not_turn_into_each_other() {
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"v");
    assert!(set(&ts, "app:/t", "{{ app:/s }}", &[]).status.success());
    let out = ts.run(&["write", "app:/t"], b"x");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a template"));
    let out = set(&ts, "app:/s", "static", &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a secret"));
    // A template moved onto its own input does not render itself.
    ts.ok(&["rm", "app:/s"]);
    ts.ok(&["mv", "app:/t", "app:/s"]);
    let out = ts.run(&["cat", "app:/s"], b"");
    assert_ne!(code(&out), 0);
}

#[test]
fn a_mounted_template_is_rendered_at_open_with_the_right_size_and_is_its_own_grant() {
    if !can_mount() {
        return;
    }
    user("vfs-t-app", None);
    let ts = TestStore::new();
    ts.vault("nix", &["--owner", "root", "--mode", "0444"]);
    ts.write("nix:/gh", b"ghp_aaaa\n");
    ts.write("nix:/gl", b"glpat_bbbb\n");
    ts.ok(&["acl", "set", "nix:/gh", "--mode", "0400"]);
    ts.ok(&["acl", "set", "nix:/gl", "--mode", "0400"]);
    let text = "access-tokens = github.com={{ nix:/gh | trim }} gitlab.com={{ nix:/gl | trim }}\n";
    assert!(set(&ts, "nix:/nix.conf", text, &[]).status.success());
    ts.ok(&[
        "acl",
        "set",
        "nix:/nix.conf",
        "--owner",
        "vfs-t-app",
        "--mode",
        "0400",
    ]);
    let mnt = ts.path("mnt");
    let log = ts.path("daemon.log");
    let out = ts.run(
        &[
            "mount",
            "--log-file",
            log.to_str().unwrap(),
            "nix",
            mnt.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    let _m = crate::mounts::MountGuard { path: mnt.clone() };
    let conf = mnt.join("nix.conf");
    let want = b"access-tokens = github.com=ghp_aaaa gitlab.com=glpat_bbbb\n";
    assert_eq!(std::fs::metadata(&conf).unwrap().size(), want.len() as u64);
    // The app may read the template but not its inputs: the template is the grant.
    assert_eq!(cat_as("vfs-t-app", &conf).unwrap(), want);
    assert!(cat_as("vfs-t-app", &mnt.join("gh")).is_err());

    // Rotating an input is seen by the next open, with the new size.
    ts.write("nix:/gh", b"ghp_longer_token\n");
    let want2 = b"access-tokens = github.com=ghp_longer_token gitlab.com=glpat_bbbb\n";
    let mut f = std::fs::File::open(&conf).unwrap();
    assert_eq!(f.metadata().unwrap().size(), want2.len() as u64);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut got).unwrap();
    assert_eq!(got, want2);

    // An input removed: opens fail (never a half-rendered file), logged once.
    ts.ok(&["rm", "nix:/gl"]);
    wait_until(
        Duration::from_secs(5),
        "opens of the broken template to fail",
        || std::fs::read(&conf).is_err(),
    );
    for _ in 0..10 {
        assert_eq!(
            std::fs::read(&conf).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("nix:/gl").count(), 1, "{text}");
    assert!(!text.contains("glpat"), "never a value in the log");
    // Put back: the template works again.
    ts.write("nix:/gl", b"glpat_cccc\n");
    wait_until(
        Duration::from_secs(5),
        "the template to render again",
        || std::fs::read(&conf).is_ok_and(|v| v.ends_with(b"glpat_cccc\n")),
    );
}

#[test]
fn a_template_mounts_as_a_single_file() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("ci", &[]);
    ts.write("ci:/gh", b"t1");
    assert!(set(&ts, "ci:/netrc", "password {{ ci:/gh }}\n", &[])
        .status
        .success());
    let file = ts.path("netrc");
    let _m = ts.mount("ci:/netrc", &file);
    assert_eq!(std::fs::read(&file).unwrap(), b"password t1\n");
    ts.write("ci:/gh", b"t2-rotated");
    let mut f = std::fs::File::open(&file).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut got).unwrap();
    assert_eq!(got, b"password t2-rotated\n");
}
