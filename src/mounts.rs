//! Which vaultfs mounts this host has, from `/proc/self/mountinfo`: commands that change a
//! vault under a live mount (such as `vault remove`) warn about them first.

use std::path::PathBuf;

/// The mountpoints of every vaultfs mount whose source is vault `name` (mount source
/// `vaultfs:NAME`, filesystem type `fuse.vaultfs`).
pub fn of_vault(name: &str) -> Vec<PathBuf> {
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
