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
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let source = format!("vaultfs:{name}");
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            // Optional fields end at "-"; fstype and source follow it.
            let sep = fields.iter().position(|f| *f == b"-")?;
            let fstype = fields.get(sep + 1)?;
            let src = unescape(fields.get(sep + 2)?);
            (fstype.starts_with(b"fuse") && src == source.as_bytes())
                .then(|| fields.get(4).map(|p| bytes_path(&unescape(p))))
                .flatten()
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && field.len() >= i + 4 {
            let oct = &field[i + 1..i + 4];
            if let Some(b) = std::str::from_utf8(oct)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
            {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn bytes_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape(b"/run/a\\040b"), b"/run/a b");
        assert_eq!(unescape(b"plain"), b"plain");
        assert_eq!(unescape(b"end\\"), b"end\\");
    }
}
