//! The driver's own permission check, made at every open with the caller's uid, gid and
//! supplementary groups, so that revoking access takes effect at the next open whatever the
//! kernel has cached.

use crate::nss;
use crate::view::Node;

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
pub fn allowed(node: &Node, caller: Caller, want: u16) -> bool {
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
        if bits(3) != bits(0) && in_group(caller, gid) {
            return bits(3);
        }
        if caller.gid == gid {
            return bits(3);
        }
    }
    bits(0)
}

fn in_group(caller: Caller, gid: u32) -> bool {
    caller.gid == gid || nss::process_groups(caller.pid).is_some_and(|groups| groups.contains(&gid))
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
            acl: Acl { owner, group, mode },
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
