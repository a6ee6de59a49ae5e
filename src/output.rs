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

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The name `ls` shows: directories end in `/`.
pub fn shown_name(item: &Listing) -> String {
    if item.entry.is_dir() {
        format!("{}/", item.entry.name)
    } else {
        item.entry.name.clone()
    }
}

/// What `ls -l` and `acl show` say of a value's limits (empty when it has none).
pub fn limits_text(limits: &vaultfs_store::Limits) -> String {
    let mut parts = Vec::new();
    if let Some(t) = limits.expires_ns {
        let word = if t <= now_ns() { "expired" } else { "expires" };
        parts.push(format!("{word} {} UTC", format_time(t)));
    }
    if let Some(n) = limits.max_opens {
        parts.push(format!("max-opens {n}"));
    }
    parts.join(", ")
}

/// One `ls -l` row: mode, owner, group, size, modified time (UTC), name.
pub fn long_row(item: &Listing) -> Vec<String> {
    let is_dir = item.entry.is_dir();
    vec![
        mode_string(projected_mode(item.acl.mode.value, is_dir), is_dir),
        item.acl.owner.value.clone(),
        item.acl.group.value.clone(),
        item.entry.size.to_string(),
        format_time(item.entry.mtime_ns),
        match limits_text(&item.entry.limits) {
            l if l.is_empty() => shown_name(item),
            l => format!("{} ({l})", shown_name(item)),
        },
    ]
}

/// The `ls --json` object of one entry (never its value).
pub fn listing_json(vault: &str, item: &Listing) -> serde_json::Value {
    let is_dir = item.entry.is_dir();
    serde_json::json!({
        "name": item.entry.name,
        "address": format!("{vault}:{}", item.path),
        "kind": if is_dir { "dir" } else { "secret" },
        "size": item.entry.size,
        "mtime": format_time(item.entry.mtime_ns),
        "mtime_ns": item.entry.mtime_ns,
        "owner": item.acl.owner.value,
        "group": item.acl.group.value,
        "mode": format!("{:04o}", item.acl.mode.value),
        "expires_ns": item.entry.limits.expires_ns,
        "max_opens": item.entry.limits.max_opens,
    })
}

/// Columns that line up: a header, then rows, each column as wide as its widest cell; the
/// columns named in `right` (numbers) are right-aligned. The last column is not padded.
pub struct Table {
    header: Vec<&'static str>,
    right: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            right: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Right-aligns column `index`.
    pub fn right(mut self, index: usize) -> Table {
        self.right.push(index);
        self
    }

    /// Adds a row (as many cells as the header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The lines, header first, without trailing spaces.
    pub fn lines(&self) -> Vec<String> {
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let all: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        all.iter()
            .map(|row| {
                let cells: Vec<String> = row
                    .iter()
                    .enumerate()
                    .map(|(c, cell)| {
                        let w = widths[c];
                        if self.right.contains(&c) {
                            format!("{cell:>w$}")
                        } else if c + 1 == row.len() {
                            cell.clone()
                        } else {
                            format!("{cell:<w$}")
                        }
                    })
                    .collect();
                cells.join("  ").trim_end().to_owned()
            })
            .collect()
    }

    /// Prints the lines to stdout; a closed pipe (`| head`) ends quietly. An empty table
    /// prints nothing, not even its header, so "no vaults" is an empty output.
    pub fn print(&self) {
        if !self.rows.is_empty() {
            print_lines(self.lines());
        }
    }
}

/// Prints lines to stdout, stopping quietly at a closed pipe.
pub fn print_lines(lines: impl IntoIterator<Item = String>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
}

/// Prints a JSON value (pretty, one trailing newline) for scripts.
pub fn print_json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    print_lines([text]);
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

    #[test]
    fn tables_align_under_their_header() {
        let mut t = Table::new(&["ID", "KIND", "SIZE", "NAME"]).right(2);
        t.row(vec!["1".into(), "keyfile".into(), "5".into(), "a".into()]);
        t.row(vec![
            "12".into(),
            "pass".into(),
            "1234".into(),
            "long name".into(),
        ]);
        assert_eq!(
            t.lines(),
            [
                "ID  KIND     SIZE  NAME",
                "1   keyfile     5  a",
                "12  pass     1234  long name"
            ]
        );
    }
}
