//! `vaultfs env`: secrets as environment variables of an exec'd command, never in argv.

use std::process::Output;

use super::{random_text, USAGE_OR_AUTH};
use crate::common::{assert_fails, assert_success, code, contains, TestStore};

/// `vaultfs env SPECS -- sh -c SCRIPT`.
fn env_sh(ts: &TestStore, specs: &[&str], script: &str) -> Output {
    let mut args = vec!["env"];
    args.extend_from_slice(specs);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    ts.run(&args, b"")
}

#[test]
fn exports_secrets_and_passes_the_exit_code() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    let token = random_text(32);
    ts.write("v:/TOKEN", &token);
    let out = env_sh(&ts, &["v:/TOKEN"], r#"printf %s "$TOKEN""#);
    assert_success(&out, &["env v:/TOKEN"]);
    assert_eq!(out.stdout, token);

    // `=VAR` renames; the secret's own name is then not set.
    let out = env_sh(
        &ts,
        &["v:/TOKEN=OTHER"],
        r#"printf '%s|%s' "$OTHER" "${TOKEN-unset}""#,
    );
    assert_success(&out, &["env =VAR"]);
    assert_eq!(out.stdout, [&token[..], b"|unset"].concat());

    // A directory exports the secrets directly inside it.
    ts.write("v:/app/A", b"alpha");
    ts.write("v:/app/B", b"beta two");
    ts.write("v:/app/sub/C", b"nested");
    let out = env_sh(
        &ts,
        &["v:/app"],
        r#"printf '%s|%s|%s' "$A" "$B" "${C-unset}""#,
    );
    assert_success(&out, &["env v:/app"]);
    assert_eq!(out.stdout, b"alpha|beta two|unset");

    // Several specs at once.
    let out = env_sh(&ts, &["v:/app", "v:/TOKEN"], r#"printf %s "$A$TOKEN""#);
    assert_eq!(out.stdout, [&b"alpha"[..], &token].concat());

    // The child's exit code is the exit code (exec, not a wrapper).
    for status in [0, 1, 7, 42] {
        let out = env_sh(&ts, &["v:/TOKEN"], &format!("exit {status}"));
        assert_eq!(code(&out), status);
    }
    let line = ts.fails_any(&["env", "v:/TOKEN", "--", "/nonexistent/program"]);
    assert!(line.contains("cannot run"), "{line}");
}

#[test]
fn keeps_secrets_out_of_argv() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    let token = random_text(32);
    ts.write("v:/TOKEN", &token);
    // The shell is what vaultfs exec'd into: its argv is the whole command line left behind.
    let out = env_sh(
        &ts,
        &["v:/TOKEN"],
        r#"cat /proc/$$/cmdline; printf '\n--\n%s' "$TOKEN""#,
    );
    assert_success(&out, &["env (cmdline)"]);
    let (cmdline, value) = out
        .stdout
        .split_at(out.stdout.windows(4).position(|w| w == b"\n--\n").unwrap());
    assert_eq!(&value[4..], &token[..], "the child got the secret");
    assert!(contains(cmdline, b"sh\0-c\0"), "{cmdline:?}");
    assert!(!contains(cmdline, &token), "the secret is in argv");
    assert!(!contains(cmdline, b"vaultfs"), "vaultfs did not exec");
}

#[test]
fn refuses_unusable_secrets_with_one_line() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    let value = random_text(24);
    ts.write("v:/has-dash", &value);
    let line = ts.fails(&["env", "v:/has-dash", "--", "true"], USAGE_OR_AUTH);
    assert!(line.contains("=VAR"), "{line}");
    ts.ok(&["env", "v:/has-dash=OK_NAME", "--", "true"]);

    let with_nul = [&value[..], b"\0tail"].concat();
    ts.write("v:/NUL", &with_nul);
    let out = ts.run(&["env", "v:/NUL", "--", "echo", "RAN"], b"");
    let line = assert_fails(&out, &["env v:/NUL"], USAGE_OR_AUTH);
    assert!(line.contains("NUL"), "{line}");
    assert!(!contains(&out.stderr, &value), "the value in an error");
    assert!(out.stdout.is_empty(), "the command ran");

    ts.write("v:/d/x=y", b"v");
    let line = ts.fails(&["env", "v:/d=VAR", "--", "true"], USAGE_OR_AUTH);
    assert!(line.contains("is a directory"), "{line}");
}

#[test]
fn one_trailing_newline_is_dropped_unless_raw() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    // What the README shows: `printf '...\n' | vaultfs write`.
    ts.write("v:/TOKEN", b"ghp_x\n");
    ts.write("v:/TWO", b"a\n\n");
    ts.write("v:/NONE", b"plain");
    let script = r#"printf '[%s][%s][%s]' "$TOKEN" "$TWO" "$NONE""#;
    // Brackets show exactly where each value ends.
    let out = env_sh(&ts, &["v:/TOKEN", "v:/TWO", "v:/NONE"], script);
    assert_success(&out, &["env (default)"]);
    assert_eq!(out.stdout, b"[ghp_x][a\n][plain]");
    let mut args = vec!["env", "--raw", "v:/TOKEN", "v:/TWO", "v:/NONE"];
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let out = ts.run(&args, b"");
    assert_success(&out, &args);
    assert_eq!(out.stdout, b"[ghp_x\n][a\n\n][plain]");
    // `cat` serves the bytes exactly.
    assert_eq!(ts.cat("v:/TOKEN"), b"ghp_x\n");
}

#[test]
fn a_directory_export_says_which_subdirectories_it_skipped() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/app/A", b"alpha");
    ts.write("v:/app/sub/C", b"nested");
    ts.write("v:/app/deeper/D", b"nested too");
    let out = env_sh(&ts, &["v:/app"], r#"printf '%s|%s' "$A" "${C-unset}""#);
    assert_success(&out, &["env v:/app"]);
    assert_eq!(out.stdout, b"alpha|unset");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped v:/app/sub/"), "{err}");
    assert!(err.contains("skipped v:/app/deeper/"), "{err}");
}
