//! The kernel's table of mounts, `/proc/self/mountinfo`, parsed in one place for the daemon,
//! the CLI, the tests and the bench.
//!
//! Mounts are identified by their mount id, never by path: a path can name another mount by the
//! time it is used, while the id of the mount an fd lives on (`mnt_id` in `/proc/self/fdinfo`)
//! cannot change.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The source every vaultfs mount carries is `vaultfs:` followed by the vault name.
pub const SOURCE_PREFIX: &str = "vaultfs:";

/// One line of mountinfo (see proc_pid_mountinfo(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's unique id.
    pub id: u32,
    /// The id of the mount this one sits on.
    pub parent_id: u32,
    /// The `major:minor` of the filesystem.
    pub device: String,
    /// Where the mount is, relative to the process's root, with the kernel's octal escapes
    /// undone.
    pub mount_point: PathBuf,
    /// Per-mount options (`ro,nosuid,...`).
    pub options: String,
    /// The filesystem type: `fuse`, `fuse.vaultfs`, `tmpfs`...
    pub fs_type: String,
    /// The mount source (for vaultfs, `vaultfs:VAULT`), unescaped.
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

impl MountEntry {
    /// Whether this is a vaultfs mount: a FUSE filesystem whose source is `vaultfs:VAULT`.
    /// Mounts made with mount(2) directly by older versions carry type `fuse`; those made
    /// through fusermount3 or by this version carry `fuse.vaultfs`.
    pub fn is_vaultfs(&self) -> bool {
        matches!(self.fs_type.as_str(), "fuse" | "fuse.vaultfs") && self.vault().is_some()
    }

    /// The vault name in a `vaultfs:VAULT` source.
    pub fn vault(&self) -> Option<&str> {
        self.source
            .strip_prefix(SOURCE_PREFIX)
            .filter(|v| !v.is_empty())
    }
}

/// Undoes mountinfo's `\NNN` octal escapes (space, tab, newline and backslash).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4);
        match octal {
            Some(d) if field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

/// Parses one mountinfo line; `None` for a malformed one.
fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // Optional fields (shared:N, master:N...) end at a lone "-".
    let sep = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
    let number = |f: &[u8]| std::str::from_utf8(f).ok()?.parse().ok();
    Some(MountEntry {
        id: number(fields.first()?)?,
        parent_id: number(fields.get(1)?)?,
        device: text(fields.get(2)?),
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields.get(4)?))),
        options: text(fields.get(5)?),
        fs_type: text(fields.get(sep + 1)?),
        source: text(fields.get(sep + 2)?),
        super_options: fields.get(sep + 3).map(|f| text(f)).unwrap_or_default(),
    })
}

/// Parses the text of a mountinfo file, skipping malformed lines.
pub fn parse(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect()
}

/// The mounts of this process's mount namespace, in mount order (a mount stacked on another
/// comes after it).
pub fn entries() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read("/proc/self/mountinfo")?))
}

/// The mount with id `id`, if it is still mounted.
pub fn by_id(id: u32) -> io::Result<Option<MountEntry>> {
    Ok(entries()?.into_iter().find(|e| e.id == id))
}

/// The topmost mount whose mount point is exactly `path` (compared as given: pass an absolute
/// path without symlinks or trailing slash). For tests and tools: the daemon and the CLI go
/// by mount id.
pub fn mounted_at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(entries()?.into_iter().rfind(|e| e.mount_point == path))
}

/// The id of the mount the object `fd` refers to lives on: the `mnt_id` of
/// `/proc/self/fdinfo/FD`. For an fd opened on a mountpoint, that is the mount on top.
pub fn mount_id(fd: impl AsFd) -> io::Result<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no mnt_id in /proc/self/fdinfo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_optional_fields() {
        let text = b"36 35 98:0 /mnt1 /mnt\\040a\\134b rw,noatime master:1 shared:7 - fuse.vaultfs vaultfs:app rw,user_id=0\n\
                     37 36 0:5 / /plain ro - tmpfs tmpfs rw\n\
                     garbage\n";
        let e = parse(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].id, 36);
        assert_eq!(e[0].parent_id, 35);
        assert_eq!(e[0].mount_point, Path::new("/mnt a\\b"));
        assert_eq!(e[0].fs_type, "fuse.vaultfs");
        assert_eq!(e[0].source, "vaultfs:app");
        assert_eq!(e[0].super_options, "rw,user_id=0");
        assert!(e[0].is_vaultfs());
        assert_eq!(e[0].vault(), Some("app"));
        assert!(!e[1].is_vaultfs());
        assert_eq!(e[1].options, "ro");
    }

    #[test]
    fn other_fuse_filesystems_are_not_ours() {
        let e = parse(
            b"1 0 0:9 / /m rw - fuse.gocryptfs /tmp/c rw\n2 0 0:9 / /n rw - fuse vaultfs: rw\n",
        );
        assert!(!e[0].is_vaultfs());
        assert!(!e[1].is_vaultfs(), "an empty vault name is not ours");
    }

    #[test]
    fn own_root_is_listed_and_fds_have_mount_ids() {
        let all = entries().unwrap();
        assert!(!all.is_empty());
        let dir = std::fs::File::open("/").unwrap();
        let id = mount_id(&dir).unwrap();
        assert!(all.iter().any(|e| e.id == id));
    }
}
