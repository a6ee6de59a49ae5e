//! What a user typing at a terminal, or piping nothing, gets: empty input refused, secrets not
//! echoed, and errors that name the missing input (issue 12, bugs 2-4).

use super::USAGE_OR_AUTH;
use crate::common::{assert_fails, assert_success, contains, OnPty, TestStore};

#[test]
fn empty_input_is_refused_unless_allowed() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"sixteen byte val");
    // `false | vaultfs write v:/s`: nothing on stdin.
    let out = ts.run(&["write", "v:/s"], b"");
    let line = assert_fails(&out, &["write v:/s (empty)"], USAGE_OR_AUTH);
    assert!(
        line.contains("v:/s") && line.contains("empty") && line.contains("--allow-empty"),
        "{line}"
    );
    assert_eq!(ts.cat("v:/s"), b"sixteen byte val", "the old value is kept");
    let out = ts.run(&["write", "--allow-empty", "v:/s"], b"");
    assert_success(&out, &["write --allow-empty"]);
    assert_eq!(ts.cat("v:/s"), b"");
}

#[test]
fn a_secret_typed_on_a_terminal_is_not_echoed() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    let mut cmd = ts.cmd();
    cmd.args(["write", "v:/typed"]);
    let mut tty = OnPty::spawn(cmd);
    tty.expect("type the secret");
    tty.type_in(b"hunter2-typed-secret\n");
    // Ctrl-D at the start of a line ends the input.
    tty.type_in(b"\x04");
    let (code, seen) = tty.finish();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&seen));
    assert!(
        !contains(&seen, b"hunter2"),
        "the secret was echoed: {:?}",
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(ts.cat("v:/typed"), b"hunter2-typed-secret\n");
}

#[test]
fn ctrl_d_at_an_empty_terminal_write_keeps_the_old_value() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"old");
    let mut cmd = ts.cmd();
    cmd.args(["write", "v:/s"]);
    let mut tty = OnPty::spawn(cmd);
    tty.expect("type the secret");
    tty.type_in(b"\x04");
    let (code, seen) = tty.finish();
    assert_eq!(code, USAGE_OR_AUTH, "{}", String::from_utf8_lossy(&seen));
    assert!(contains(&seen, b"--allow-empty"));
    assert_eq!(ts.cat("v:/s"), b"old");
}

#[test]
fn key_add_without_a_new_key_names_the_missing_input() {
    let ts = TestStore::new();
    // The unlock key is given (VAULTFS_KEY_FILE); the new one is not, and there is no terminal.
    let line = ts.fails(&["key", "add"], USAGE_OR_AUTH);
    assert!(
        line.contains("--new-key-file") && line.contains("--new-passphrase-file"),
        "{line}"
    );
    assert!(!line.contains("pass --key-file"), "{line}");
}

#[test]
fn ctrl_d_at_a_passphrase_prompt_says_so() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    let mut cmd = ts.cmd_without_key();
    cmd.args(["ls", "v"]);
    let mut tty = OnPty::spawn(cmd);
    tty.expect("passphrase:");
    tty.type_in(b"\x04");
    let (code, seen) = tty.finish();
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(code, USAGE_OR_AUTH, "{text}");
    assert!(text.contains("no passphrase entered"), "{text}");
    assert!(!text.contains("no terminal"), "{text}");
}

#[test]
fn ctrl_c_while_typing_a_secret_gives_the_terminal_its_echo_back() {
    let ts = TestStore::new();
    ts.vault("v", &[]);
    ts.write("v:/s", b"old");
    let mut cmd = ts.cmd();
    cmd.args(["write", "v:/s"]);
    let mut tty = OnPty::spawn(cmd);
    assert!(tty.echoes(), "a fresh terminal echoes");
    tty.expect("type the secret");
    assert!(!tty.echoes(), "echo is off while the secret is typed");
    tty.type_in(b"half-typed");
    tty.type_in(b"\x03");
    let (code, seen) = tty.finish();
    assert_eq!(code, 128 + 2, "{}", String::from_utf8_lossy(&seen));
    assert!(!contains(&seen, b"half-typed"));
    assert!(tty.echoes(), "the shell gets its echo back");
    assert_eq!(ts.cat("v:/s"), b"old", "nothing was written");
}
