//! The controlling terminal: prompts whose input is not echoed, and telling "no terminal"
//! apart from "the user ended the input" so an error names what was really missing.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use anyhow::Result;
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use vaultfs_store::SecretBytes;

use crate::exit::usage;

/// Whether a prompt can be shown: a controlling terminal exists (`/dev/tty` opens). The prompts
/// read `/dev/tty`, not stdin, so a pipe on stdin does not decide this.
pub fn has_terminal() -> bool {
    std::fs::File::open("/dev/tty").is_ok()
}

/// Asks a question on the terminal (`/dev/tty`) and returns the answer line, or `None` when
/// there is no terminal or stdin is not one (a script must say `--yes` rather than be asked).
pub fn ask(question: &str) -> Option<String> {
    use std::io::{BufRead, Write};
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let mut out = tty.try_clone().ok()?;
    out.write_all(question.as_bytes()).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(tty).read_line(&mut line).ok()?;
    Some(line)
}

/// Asks on the terminal without echo. `missing` names the options that would have supplied the
/// value, for the error when there is no terminal to ask on.
pub fn prompt_hidden(text: &str, missing: &str) -> Result<SecretBytes> {
    match rpassword::prompt_password(text) {
        Ok(p) => Ok(SecretBytes::new(p.into_bytes())),
        // Ctrl-D on an empty line: the terminal is there, the user chose not to answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            usage!("no passphrase entered (end of input at the prompt)")
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => usage!("interrupted"),
        Err(_) => usage!("no key given: pass {missing} (there is no terminal to ask on)"),
    }
}

/// A new passphrase, asked twice. `missing` names the options that supply one without a prompt.
pub fn new_passphrase(missing: &str) -> Result<vaultfs_store::Credential> {
    if !has_terminal() {
        usage!(
            "no new key given: pass {missing} (there is no terminal to ask a new passphrase on)"
        );
    }
    let first = prompt_hidden("new passphrase: ", missing)?;
    if first.is_empty() {
        usage!("empty passphrase");
    }
    let second = prompt_hidden("repeat passphrase: ", missing)?;
    if first.expose() != second.expose() {
        usage!("the passphrases differ");
    }
    Ok(vaultfs_store::Credential::Passphrase(first))
}

/// Turns off echo on stdin while it lives, when stdin is a terminal; restores the previous
/// settings on drop. Newlines still echo (`ECHONL`), so a multi-line secret shows its shape.
pub struct EchoOff {
    saved: Option<Termios>,
}

impl EchoOff {
    /// Switches echo off on stdin if it is a terminal; a no-op otherwise.
    pub fn stdin() -> EchoOff {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return EchoOff { saved: None };
        }
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return EchoOff { saved: None };
        };
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        if termios::tcsetattr(stdin.as_fd(), SetArg::TCSAFLUSH, &quiet).is_err() {
            return EchoOff { saved: None };
        }
        restore_on_signal(saved.clone());
        EchoOff { saved: Some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// Ctrl-C (or a SIGTERM/SIGHUP) while echo is off would leave the user's shell without echo:
/// those signals are blocked here and taken by a thread that restores the terminal, then exits
/// as the shell expects from a signal (128 + its number).
fn restore_on_signal(saved: Termios) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(sig);
    }
    if set.thread_block().is_err() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("vaultfs-tty".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &saved);
                eprintln!();
                std::process::exit(128 + sig as i32);
            }
        });
}
