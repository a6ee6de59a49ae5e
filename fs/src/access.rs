//! The driver's own permission check, made at every open with the caller's uid, gid and
//! supplementary groups, so that revoking access takes effect at the next open whatever the
//! kernel has cached.

use crate::identity::Identity;
use crate::nss;
use crate::view::{Node, Tree};

/// Who is asking, as the kernel reported it.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// Effective uid.
    pub uid: u32,
    /// Effective (primary) gid.
    pub gid: u32,
    /// Process id in the mount's pid namespace; used only to read supplementary groups.
    pub pid: u32,
}

/// Read access, as a mode bit triple position.
pub const READ: u16 = 0o4;

/// Whether `caller` may access `node` for the rwx bits in `want` (e.g. [`READ`]).
///
/// The POSIX rule: the owner class decides for the owner, else the group class for a member of
/// the group, else the other class. An owner or group that does not resolve on this host
/// matches nobody. Root may read anything, as it can on any filesystem.
#[cfg(test)]
pub fn allowed(node: &Node, caller: Caller, want: u16) -> bool {
    allowed_with(node, caller, want, &mut Groups::default())
}

/// The caller's supplementary groups, read from /proc at most once per decision.
#[derive(Default)]
struct Groups(Option<Option<Vec<u32>>>);

impl Groups {
    fn contains(&mut self, caller: Caller, gid: u32) -> bool {
        caller.gid == gid
            || self
                .0
                .get_or_insert_with(|| nss::process_groups(caller.pid))
                .as_ref()
                .is_some_and(|g| g.contains(&gid))
    }
}

fn allowed_with(node: &Node, caller: Caller, want: u16, groups: &mut Groups) -> bool {
    if caller.uid == 0 {
        return true;
    }
    let perm = node.perm();
    let bits = |shift: u16| (perm >> shift) & want == want;
    if node.acl.owner == Some(caller.uid) {
        return bits(6);
    }
    if let Some(gid) = node.acl.group {
        // Supplementary groups cost a read of /proc; ask only when the answer matters.
        if bits(3) != bits(0) && groups.contains(caller, gid) {
            return bits(3);
        }
        if caller.gid == gid {
            return bits(3);
        }
    }
    bits(0)
}

/// Search (x) access, for the directories on the way to an entry.
pub const SEARCH: u16 = 0o1;

/// The outcome of a check and the rule that decided it (for logs and the audit trail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether access is allowed.
    pub allowed: bool,
    /// What decided: `root`, `mode`, a grant as written, or why none applied.
    pub rule: String,
}

impl Decision {
    fn allow(rule: impl Into<String>) -> Decision {
        Decision {
            allowed: true,
            rule: rule.into(),
        }
    }

    fn deny(rule: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            rule: rule.into(),
        }
    }
}

/// Whether `caller` may read `node` (open a secret, or list a directory).
///
/// Owner, group and mode decide as POSIX says, with search access checked on every directory
/// between the mounted root and the entry (the kernel can no longer do that alone: directories
/// on the way to a granted entry are shown searchable by all). Failing that, a grant in force
/// on the entry allows it when its principal is the caller (uid, or primary or supplementary
/// group) and its unit and exe conditions, if any, hold for the caller's process.
pub fn decide(tree: &Tree, node: &Node, caller: Caller) -> Decision {
    if caller.uid == 0 {
        return Decision::allow("root");
    }
    let mut groups = Groups::default();
    // Grants first: a user grant is decided by the uid alone, without reading /proc.
    let mut identity: Option<Result<Identity, String>> = None;
    let mut why = "mode";
    for g in node.acl.grants.iter() {
        let principal =
            g.uid == Some(caller.uid) || g.gid.is_some_and(|gid| groups.contains(caller, gid));
        if !principal {
            continue;
        }
        if g.grant.unit.is_some() || g.grant.exe.is_some() {
            let id = identity.get_or_insert_with(|| {
                let exe = node.acl.grants.iter().any(|g| g.grant.exe.is_some());
                Identity::of_with(caller.pid, exe).map_err(|e| e.to_string())
            });
            let Ok(id) = id else {
                why = "grant conditions unverifiable";
                continue;
            };
            if let Some(unit) = g.grant.unit_cgroup() {
                if !id.in_unit(&unit) {
                    why = "grant unit does not match";
                    continue;
                }
            }
            if let Some(exe) = &g.grant.exe {
                if !id.runs(exe) {
                    why = "grant exe does not match";
                    continue;
                }
            }
        }
        return Decision::allow(format!("grant {}", g.grant));
    }
    if allowed_with(node, caller, READ, &mut groups)
        && path_searchable(tree, node, caller, &mut groups)
    {
        return Decision::allow("mode");
    }
    Decision::deny(why)
}

/// Whether every directory from the mounted root down to `node`'s parent lets `caller`
/// search it by owner, group and mode.
fn path_searchable(tree: &Tree, node: &Node, caller: Caller, groups: &mut Groups) -> bool {
    if !tree.has_reach() {
        // Nothing is widened: the kernel checked the path with the real bits already.
        return true;
    }
    let mut at = node;
    while let Some(parent) = tree.parent(at) {
        if !allowed_with(parent, caller, SEARCH, groups) {
            return false;
        }
        at = parent;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Acl;
    use vaultfs_store::EntryKind;

    fn node(owner: Option<u32>, group: Option<u32>, mode: u16) -> Node {
        Node {
            id: 1,
            parent: 0,
            name: "s".into(),
            kind: EntryKind::File,
            version: 1,
            content: 1,
            size: 1,
            mtime_ns: 0,
            acl: Acl {
                owner,
                group,
                mode,
                grants: std::sync::Arc::from(Vec::new()),
            },
            reach: false,
            limits: Default::default(),
        }
    }

    fn caller(uid: u32, gid: u32) -> Caller {
        // pid 0 has no /proc entry: no supplementary groups.
        Caller { uid, gid, pid: 0 }
    }

    #[test]
    fn posix_classes() {
        let n = node(Some(1000), Some(100), 0o440);
        assert!(allowed(&n, caller(1000, 5), READ), "owner");
        assert!(allowed(&n, caller(1001, 100), READ), "group");
        assert!(!allowed(&n, caller(1001, 5), READ), "other");
        assert!(allowed(&n, caller(0, 0), READ), "root");
        let owner_denied = node(Some(1000), Some(100), 0o044);
        assert!(
            !allowed(&owner_denied, caller(1000, 100), READ),
            "owner class decides"
        );
    }

    #[test]
    fn unresolved_names_match_nobody() {
        let n = node(None, None, 0o440);
        assert!(!allowed(&n, caller(65534, 65534), READ));
        assert!(!allowed(&n, caller(1000, 1000), READ));
    }
}
