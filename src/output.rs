//! How entries are shown: `ls -l` lines, mode strings, times.

use vaultfs_store::{projected_mode, Listing};

/// `rwxr-x---` style, with the type letter first.
pub fn mode_string(mode: u16, is_dir: bool) -> String {
    let mut s = String::with_capacity(10);
    s.push(if is_dir { 'd' } else { '-' });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// A UTC timestamp `YYYY-MM-DD HH:MM:SS` from ns since the epoch (no time zone database needed).
pub fn format_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days, after Howard Hinnant's public-domain algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One `ls -l` line: mode, owner, group, size, modified time (UTC), name.
pub fn long_line(item: &Listing) -> String {
    let is_dir = item.entry.is_dir();
    let name = if is_dir {
        format!("{}/", item.entry.name)
    } else {
        item.entry.name.clone()
    };
    format!(
        "{} {:<8} {:<8} {:>8} {} {}",
        mode_string(projected_mode(item.acl.mode.value, is_dir), is_dir),
        item.acl.owner.value,
        item.acl.group.value,
        item.entry.size,
        format_time(item.entry.mtime_ns),
        name
    )
}

/// Warns (once, on stderr) when an owner or group does not resolve on this host: a name that
/// resolves to nothing grants nothing (a mount denies that class rather than fall back to
/// root), while a number is a uid or gid granted as is, entry or not (containers use ids the
/// host does not list), so the warning says which of the two happened.
pub fn warn_unresolved(owner: Option<&str>, group: Option<&str>) {
    if let Some(owner) = owner {
        match owner.parse::<u32>() {
            Ok(uid) if vaultfs_fs::nss::user_name(uid).is_none() => eprintln!(
                "vaultfs: warning: uid {uid} has no passwd entry here; granted to uid {uid} as a number"
            ),
            Ok(_) => {}
            Err(_) if vaultfs_fs::nss::user_id(owner).is_none() => eprintln!(
                "vaultfs: warning: user {owner:?} does not exist on this host; mounts will grant its access to nobody"
            ),
            Err(_) => {}
        }
    }
    if let Some(group) = group {
        match group.parse::<u32>() {
            Ok(gid) if vaultfs_fs::nss::group_name(gid).is_none() => eprintln!(
                "vaultfs: warning: gid {gid} has no group entry here; granted to gid {gid} as a number"
            ),
            Ok(_) => {}
            Err(_) if vaultfs_fs::nss::group_id(group).is_none() => eprintln!(
                "vaultfs: warning: group {group:?} does not exist on this host; mounts will grant its access to nobody"
            ),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_modes_and_times() {
        assert_eq!(mode_string(0o440, false), "-r--r-----");
        assert_eq!(mode_string(0o750, true), "drwxr-x---");
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(
            format_time(1_700_000_000 * 1_000_000_000),
            "2023-11-14 22:13:20"
        );
    }
}
