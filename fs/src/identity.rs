//! Who a FUSE request really comes from, beyond its uid and gid: the process (thread group),
//! its systemd unit (cgroup v2 path) and its executable (device and inode), for grants that
//! are limited to a unit or an executable.
//!
//! The kernel gives the daemon a thread id, not a process id, and nothing holds that id still:
//! the process may exit and its pid be reused while `/proc` is read. So the thread group is
//! pinned with a pidfd before reading, and checked to be alive after; an answer read from a
//! process that died meanwhile is thrown away. Anything that cannot be established fails
//! closed: a request from outside the daemon's pid namespace (pid 0), a process gone, an
//! executable the daemon may not inspect.

use std::fs;
use std::os::unix::fs::MetadataExt;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

/// What the daemon established about a caller's process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The thread group id (the process id as `ps` shows it).
    pub tgid: u32,
    /// The cgroup v2 path of the process (the `0::` line of `/proc/PID/cgroup`), such as
    /// `/system.slice/nginx.service`; `None` on a host without cgroup v2.
    pub cgroup: Option<String>,
    /// Device and inode of the executable the process runs (`/proc/PID/exe`); `None` when the
    /// daemon may not look (another uid's process without CAP_SYS_PTRACE, a kernel thread).
    pub exe: Option<(u64, u64)>,
}

/// Why no identity could be established.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The request came from outside the daemon's pid namespace (the kernel says pid 0).
    #[error("the caller is outside the daemon's pid namespace")]
    NoPid,
    /// The process exited (or its pid was reused) while it was being looked at.
    #[error("the calling process is gone")]
    Gone,
}

impl Identity {
    /// Establishes the identity of the process of thread `tid`.
    pub fn of(tid: u32) -> Result<Identity, IdentityError> {
        Identity::of_with(tid, true)
    }

    /// Like [`Identity::of`]; the executable is looked at only when `exe` says it is needed
    /// (a stat of `/proc/PID/exe` costs the open path).
    pub fn of_with(tid: u32, exe: bool) -> Result<Identity, IdentityError> {
        if tid == 0 {
            return Err(IdentityError::NoPid);
        }
        let tgid = status_field(tid, "Tgid:").ok_or(IdentityError::Gone)?;
        let pid = Pid::from_raw(tgid as i32).ok_or(IdentityError::NoPid)?;
        // Pinned from here: the pidfd keeps naming this process even if the pid is reused.
        let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(|_| IdentityError::Gone)?;
        let cgroup = fs::read_to_string(format!("/proc/{tgid}/cgroup"))
            .map_err(|_| IdentityError::Gone)?
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned));
        let exe = exe
            .then(|| fs::metadata(format!("/proc/{tgid}/exe")).ok())
            .flatten()
            .map(|m| (m.dev(), m.ino()));
        // A pidfd polls readable once its process has exited: then what was read above may
        // belong to a newer process that took the pid.
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&zero)) {
            Ok(0) => {}
            _ => return Err(IdentityError::Gone),
        }
        // The tgid read first must still be the thread's group: a thread id reused by
        // another process between the first read and the pin is caught here. (A main thread,
        // tid = tgid, is the pinned process itself.)
        if tid != tgid && status_field(tid, "Tgid:") != Some(tgid) {
            return Err(IdentityError::Gone);
        }
        Ok(Identity { tgid, cgroup, exe })
    }

    /// Whether the process belongs to the unit whose cgroup is `unit` (a full path from the
    /// cgroup v2 root, e.g. `/system.slice/nginx.service`): that cgroup or one below it (a
    /// unit with `Delegate=` may make sub-cgroups).
    pub fn in_unit(&self, unit: &str) -> bool {
        self.cgroup.as_deref().is_some_and(|c| {
            c == unit || (c.starts_with(unit) && c.as_bytes().get(unit.len()) == Some(&b'/'))
        })
    }

    /// Whether the process runs the file now at `path` (same device and inode): a binary
    /// replaced on disk since the process started, or a copy elsewhere, does not match.
    pub fn runs(&self, path: &str) -> bool {
        let Some(exe) = self.exe else {
            return false;
        };
        fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == exe)
    }
}

/// A numeric field of `/proc/TID/status` (the first number after `name`).
fn status_field(tid: u32, name: &str) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_maps_to_its_process() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get() as u32)
                .unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me);
        let id = Identity::of(tid).unwrap();
        assert_eq!(id.tgid, me, "a thread id maps to its thread group");
        assert!(id.runs("/proc/self/exe"));
        assert!(!id.runs("/bin/sh"));
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(Identity::of(0), Err(IdentityError::NoPid));
    }

    #[test]
    fn units_match_whole_path_components() {
        let id = Identity {
            tgid: 1,
            cgroup: Some("/system.slice/nginx.service".into()),
            exe: None,
        };
        assert!(id.in_unit("/system.slice/nginx.service"));
        assert!(!id.in_unit("/system.slice/nginx.serv"));
        assert!(!id.runs("/bin/sh"), "no exe known: fails closed");
        let user = Identity {
            cgroup: Some("/user.slice/user-1000.slice/user@1000.service/nginx.service".into()),
            ..id
        };
        assert!(!user.in_unit("/system.slice/nginx.service"));
    }
}
