//! Telling whoever started us that every mount is ready (or why none is): the parent of a
//! forked daemon through a pipe, or systemd through `sd_notify`.

use std::io::Write;

use crate::exit::Exit;

/// Whom to tell that every mount is ready.
pub enum Readiness {
    /// Nobody (foreground without systemd).
    Quiet,
    /// The parent of a forked daemon, waiting on a pipe.
    Parent(std::fs::File),
    /// systemd, through `$NOTIFY_SOCKET`.
    Systemd,
}

impl Readiness {
    /// For a foreground process: systemd when it asked, else nobody.
    pub fn foreground() -> Readiness {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(_) => Readiness::Systemd,
            None => Readiness::Quiet,
        }
    }

    /// Every mount is up.
    pub fn ready(&mut self, mounts: usize) {
        match self {
            Readiness::Quiet => {}
            Readiness::Parent(pipe) => {
                let _ = pipe.write_all(b"0\n");
            }
            Readiness::Systemd => sd_notify(&format!(
                "READY=1\nSTATUS=serving {mounts} mount(s)\nMAINPID={}",
                std::process::id()
            )),
        }
    }

    /// Nothing is served; `err` says why.
    pub fn failed(&mut self, err: &anyhow::Error) {
        if let Readiness::Parent(pipe) = self {
            let code = Exit::of(err).code();
            let _ = write!(pipe, "{code}\n{err:#}");
        }
    }
}

/// Sends one `sd_notify` message; systemd's socket may be abstract (`@...`).
pub fn sd_notify(message: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = UnixDatagram::unbound()
        .and_then(|sock| addr.and_then(|a| sock.send_to_addr(message.as_bytes(), &a)));
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd at {path}: {e}");
    }
}
