//! Ownership and permissions: vault defaults, per-entry overrides, nearest ancestor wins.

use serde::{Deserialize, Serialize};

use crate::address::VaultPath;

/// The permission bits vaultfs keeps (no setuid, setgid or sticky bits on secrets).
pub const MODE_MASK: u16 = 0o777;

/// A vault's defaults: every entry inherits these unless it or an ancestor overrides them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultAcl {
    /// Owner user name, resolved through NSS at mount time.
    pub owner: String,
    /// Group name, resolved through NSS at mount time.
    pub group: String,
    /// Permission bits of secrets; directories get `x` wherever they get `r`.
    pub mode: u16,
}

/// What one entry overrides; `None` fields are inherited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclOverride {
    /// Owner user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Permission bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u16>,
    /// Read grants beyond owner, group and mode; inherited by everything below, added to
    /// (never replacing) the grants of the ancestors. Only `Store::grant`/`revoke` change them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

/// Read access for one more user or group, optionally only for the processes of one systemd
/// unit or one executable. The conditions only narrow: a grant never gives more than read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Who: a user or a group name (resolved through NSS at mount time).
    pub principal: Principal,
    /// Only processes whose cgroup v2 path is this unit's: a full path such as
    /// `/system.slice/nginx.service`, or a unit name, meaning `/system.slice/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Only processes running this executable: matched by the device and inode of the file
    /// at this absolute path at the time of the open (the path is what the admin wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// The principal of a [`Grant`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Principal {
    /// A user name.
    User(String),
    /// A group name.
    Group(String),
}

impl Grant {
    /// The cgroup v2 path a unit condition stands for: a name like `nginx.service` means the
    /// system unit, `/system.slice/nginx.service`; a path is taken as written. A user's own
    /// unit (under `/user.slice/...`) therefore never matches a system unit's rule.
    pub fn unit_cgroup(&self) -> Option<String> {
        self.unit.as_ref().map(|u| {
            if u.starts_with('/') {
                u.trim_end_matches('/').to_owned()
            } else {
                format!("/system.slice/{u}")
            }
        })
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.principal {
            Principal::User(u) => write!(f, "user {u}")?,
            Principal::Group(g) => write!(f, "group {g}")?,
        }
        if let Some(u) = &self.unit {
            write!(f, " unit {u}")?;
        }
        if let Some(e) = &self.exe {
            write!(f, " exe {e}")?;
        }
        Ok(())
    }
}

impl AclOverride {
    /// Whether this override changes nothing.
    pub fn is_empty(&self) -> bool {
        self.owner.is_none()
            && self.group.is_none()
            && self.mode.is_none()
            && self.grants.is_empty()
    }

    /// Applies the fields `change` sets, keeping the others.
    pub fn merge(&mut self, change: &AclOverride) {
        if change.owner.is_some() {
            self.owner.clone_from(&change.owner);
        }
        if change.group.is_some() {
            self.group.clone_from(&change.group);
        }
        if let Some(m) = change.mode {
            self.mode = Some(m & MODE_MASK);
        }
    }
}

/// Where an effective value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AclSource {
    /// The vault's defaults.
    Vault,
    /// An override on this entry or on the ancestor at this path.
    Entry(VaultPath),
}

/// One effective value and where it was inherited from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inherited<T> {
    /// The value in force.
    pub value: T,
    /// Where it was set.
    pub source: AclSource,
}

/// The ACL in force on one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveAcl {
    /// Owner user name.
    pub owner: Inherited<String>,
    /// Group name.
    pub group: Inherited<String>,
    /// Permission bits as stored (before the directory projection).
    pub mode: Inherited<u16>,
    /// Every grant in force: the entry's own and its ancestors', each with where it is set.
    pub grants: Vec<Inherited<Grant>>,
}

impl EffectiveAcl {
    /// Resolves `chain` (overrides from the root down to the entry, each with its path) against
    /// the vault's defaults: for each field, the nearest override wins.
    pub fn resolve<'a>(
        defaults: &VaultAcl,
        chain: impl IntoIterator<Item = (&'a VaultPath, &'a AclOverride)>,
    ) -> EffectiveAcl {
        let mut acl = EffectiveAcl {
            owner: Inherited {
                value: defaults.owner.clone(),
                source: AclSource::Vault,
            },
            group: Inherited {
                value: defaults.group.clone(),
                source: AclSource::Vault,
            },
            mode: Inherited {
                value: defaults.mode & MODE_MASK,
                source: AclSource::Vault,
            },
            grants: Vec::new(),
        };
        for (path, o) in chain {
            for g in &o.grants {
                acl.grants.push(Inherited {
                    value: g.clone(),
                    source: AclSource::Entry(path.clone()),
                });
            }
            if let Some(v) = &o.owner {
                acl.owner = Inherited {
                    value: v.clone(),
                    source: AclSource::Entry(path.clone()),
                };
            }
            if let Some(v) = &o.group {
                acl.group = Inherited {
                    value: v.clone(),
                    source: AclSource::Entry(path.clone()),
                };
            }
            if let Some(v) = o.mode {
                acl.mode = Inherited {
                    value: v & MODE_MASK,
                    source: AclSource::Entry(path.clone()),
                };
            }
        }
        acl
    }
}

/// The mode bits shown for an entry: a secret keeps its bits; a directory gets `x` wherever it
/// gets `r`, so a user who may read a secret may also reach it.
pub fn projected_mode(mode: u16, is_dir: bool) -> u16 {
    let mode = mode & MODE_MASK;
    if is_dir {
        mode | ((mode & 0o444) >> 2)
    } else {
        mode
    }
}

/// Parses an octal mode such as `0440`, `440` or `0o440`.
pub fn parse_mode(text: &str) -> Option<u16> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    let mode = u16::from_str_radix(digits, 8).ok()?;
    (mode & !MODE_MASK == 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_get_x_where_r() {
        assert_eq!(projected_mode(0o440, true), 0o550);
        assert_eq!(projected_mode(0o400, true), 0o500);
        assert_eq!(projected_mode(0o640, false), 0o640);
        assert_eq!(projected_mode(0o604, true), 0o705);
    }

    #[test]
    fn parses_modes() {
        assert_eq!(parse_mode("0440"), Some(0o440));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0o400"), Some(0o400));
        assert_eq!(parse_mode("4755"), None);
        assert_eq!(parse_mode("9"), None);
        assert_eq!(parse_mode(""), None);
    }

    #[test]
    fn nearest_override_wins_per_field() {
        let defaults = VaultAcl {
            owner: "root".into(),
            group: "root".into(),
            mode: 0o400,
        };
        let dir = VaultPath::parse("/d", "/d").unwrap();
        let file = VaultPath::parse("/d/f", "/d/f").unwrap();
        let dir_o = AclOverride {
            owner: Some("alice".into()),
            mode: Some(0o440),
            ..Default::default()
        };
        let file_o = AclOverride {
            mode: Some(0o400),
            ..Default::default()
        };
        let acl = EffectiveAcl::resolve(&defaults, [(&dir, &dir_o), (&file, &file_o)]);
        assert_eq!(acl.owner.value, "alice");
        assert_eq!(acl.owner.source, AclSource::Entry(dir.clone()));
        assert_eq!(acl.group.source, AclSource::Vault);
        assert_eq!(acl.mode.value, 0o400);
        assert_eq!(acl.mode.source, AclSource::Entry(file));
    }
}
