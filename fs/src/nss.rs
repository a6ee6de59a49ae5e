//! User and group names, resolved through NSS (so LDAP, systemd's DynamicUser and the like work),
//! and the caller's supplementary groups.
//!
//! Lookups go through nix, which grows its buffer on `ERANGE`, so a group with thousands of
//! members or a long LDAP entry resolves instead of looking absent.

use nix::unistd::{Gid, Group, Uid, User};

/// The uid of user `name` (a number is taken as a uid as it is).
pub fn user_id(name: &str) -> Option<u32> {
    if let Ok(uid) = name.parse::<u32>() {
        return Some(uid);
    }
    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
}

/// The gid of group `name` (a number is taken as a gid as it is).
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The name of user `uid`.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The name of group `gid`.
pub fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// The supplementary groups of process `pid`, from `/proc/PID/status`. These are the groups the
/// kernel itself checks the process against (they may differ from the NSS database, e.g. under
/// systemd's SupplementaryGroups=). `None` when the process is gone.
pub fn process_groups(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Groups:"))?;
    Some(
        line["Groups:".len()..]
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_both_ways() {
        assert_eq!(user_id("root"), Some(0));
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_name(0).as_deref(), Some("root"));
        assert_eq!(user_id("no-such-user-vaultfs"), None);
        assert_eq!(user_id("1234"), Some(1234));
        assert_eq!(user_id("a\0b"), None, "a NUL byte is no name, not a panic");
    }

    #[test]
    fn own_groups_are_readable() {
        assert!(process_groups(std::process::id()).is_some());
    }
}
