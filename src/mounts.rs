//! Which vaultfs mounts this host has, from `/proc/self/mountinfo`: commands that change a
//! vault under a live mount (such as `vault remove`) warn about them first.

use std::path::{Path, PathBuf};

/// The mountpoints of every vaultfs mount of vault `name` served from the store at `store`.
///
/// mountinfo names only the vault (mount source `vaultfs:NAME`), and other stores may have a
/// vault of the same name mounted, so a mount counts only when some FUSE daemon (a process
/// with `/dev/fuse` open) has this very store file open. Where other processes cannot be
/// inspected (not root), every mount of that name counts: a warning too many beats none.
pub fn of_vault(store: &Path, name: &str) -> Vec<PathBuf> {
    match store_is_served(store) {
        Some(false) => Vec::new(),
        Some(true) | None => by_name(name),
    }
}

/// Whether a process holding `/dev/fuse` also holds `store` open; `None` when no other
/// process's open files could be read.
fn store_is_served(store: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(store) else {
        return Some(false);
    };
    let wanted = (meta.dev(), meta.ino());
    let me = std::process::id().to_string();
    let mut inspected = false;
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = proc_dir.file_name();
        if pid
            .to_str()
            .is_none_or(|p| !p.bytes().all(|b| b.is_ascii_digit()) || p == me)
        {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        inspected = true;
        let (mut fuse, mut holds_store) = (false, false);
        for fd in fds.flatten() {
            let path = fd.path();
            if std::fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/fuse")) {
                fuse = true;
            } else if std::fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == wanted) {
                holds_store = true;
            }
        }
        if fuse && holds_store {
            return Some(true);
        }
    }
    inspected.then_some(false)
}

/// Every vaultfs mount (type `fuse.vaultfs`, source `vaultfs:NAME`) of a vault called `name`.
fn by_name(name: &str) -> Vec<PathBuf> {
    let Ok(entries) = vaultfs_fs::mountinfo::entries() else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|e| e.is_vaultfs() && e.vault() == Some(name))
        .map(|e| e.mount_point)
        .collect()
}
