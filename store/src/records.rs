//! The sealed records: what a row holds once decrypted. Versioned JSON: every record carries
//! `v`, and a record whose version this build does not know is refused
//! ([`StoreError::UnsupportedRecord`]) before any other field is read; unknown fields are refused
//! too, so a newer writer's rule is never silently ignored.

use serde::{Deserialize, Serialize};

use crate::acl::{AclOverride, VaultAcl};
use crate::crypto;
use crate::error::{Result, StoreError};
use crate::secret::{Key, SecretBytes};

/// The newest record format version this build reads and writes.
pub(crate) const RECORD_VERSION: u32 = 3;
/// The version written when a record needs nothing newer, so a store that uses no grant,
/// expiry or read limit stays readable by the builds before them.
pub(crate) const BASE_RECORD_VERSION: u32 = 2;

/// A directory or a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A secret (a regular file).
    File,
    /// A template: a file rendered from other secrets of its vault when it is read. Its value
    /// is a [`TemplateRecord`](crate::template) (the text and its format).
    Template,
}

/// A vault row's sealed content, sealed under the vault's own key (the key itself is wrapped
/// apart, under the master key), so a holder of the vault key alone can follow the row.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VaultRecord {
    pub v: u32,
    pub name: String,
    pub acl: VaultAcl,
    pub created_ns: i64,
}

/// An entry row's sealed metadata (the value is sealed separately, so listing a vault never
/// decrypts a value).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryMeta {
    pub v: u32,
    pub parent: i64,
    pub name: String,
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "AclOverride::is_empty")]
    pub acl: AclOverride,
    pub size: u64,
    pub mtime_ns: i64,
    pub created_ns: i64,
    /// Version 3: when the secret stops being served (ns since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ns: Option<i64>,
    /// Version 3: how many opens through mounts may succeed, counted in local state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_opens: Option<u64>,
}

impl EntryMeta {
    /// The lowest record version that can hold this record: an older build must refuse a
    /// record with a grant, expiry or read limit rather than serve it without them.
    pub fn needed_version(&self) -> u32 {
        if self.acl.grants.is_empty() && self.expires_ns.is_none() && self.max_opens.is_none() {
            BASE_RECORD_VERSION
        } else {
            RECORD_VERSION
        }
    }
}

/// Serializes `record` and seals it.
pub(crate) fn seal_json<T: Serialize>(key: &Key, aad: &[u8], record: &T) -> Vec<u8> {
    let plain = SecretBytes::new(serde_json::to_vec(record).expect("records serialize"));
    crypto::seal(key, aad, plain.expose())
}

/// Just the version of a record, read before anything else.
#[derive(Deserialize)]
struct Version {
    v: u64,
}

/// Opens and parses a sealed record; `what` names the row in the error.
pub(crate) fn open_json<T: for<'de> Deserialize<'de>>(
    key: &Key,
    aad: &[u8],
    sealed: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T> {
    let plain = match crypto::open(key, aad, sealed) {
        Some(p) => p,
        None => return Err(StoreError::Tampered { what: what() }),
    };
    let v = match serde_json::from_slice::<Version>(plain.expose()) {
        Ok(Version { v })
            if (u64::from(BASE_RECORD_VERSION)..=u64::from(RECORD_VERSION)).contains(&v) =>
        {
            v as u32
        }
        _ => RECORD_VERSION,
    };
    decode(plain.expose(), v, what)
}

/// Parses an authenticated record of version `expected`.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    plain: &[u8],
    expected: u32,
    what: impl FnOnce() -> String,
) -> Result<T> {
    match serde_json::from_slice::<Version>(plain) {
        Ok(Version { v }) if v == u64::from(expected) => {}
        Ok(Version { v }) => {
            return Err(StoreError::UnsupportedRecord {
                what: what(),
                found: v,
                supported: expected.into(),
            })
        }
        Err(_) => return Err(StoreError::Tampered { what: what() }),
    }
    serde_json::from_slice(plain).map_err(|_| StoreError::Tampered { what: what() })
}

/// Nanoseconds since the epoch, now.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_json(v: u32, extra: &str) -> Vec<u8> {
        format!(
            r#"{{"v":{v},"parent":0,"name":"a","kind":"file","size":1,"mtime_ns":0,"created_ns":0{extra}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn unknown_versions_and_fields_fail_closed() {
        let key = Key::random();
        let what = || "entry #1".to_owned();
        let ok: EntryMeta = open_json(
            &key,
            b"ad",
            &crypto::seal(&key, b"ad", &meta_json(2, "")),
            what,
        )
        .unwrap();
        assert_eq!(ok.name, "a");
        // A newer writer's record: refused by version before any field is read.
        let future = crypto::seal(&key, b"ad", &meta_json(4, r#","expires_at":5"#));
        let err = open_json::<EntryMeta>(&key, b"ad", &future, what).unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::UnsupportedRecord {
                    found: 4,
                    supported: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("entry #1 has record version 4"),
            "{err}"
        );
        // A field this build does not know, under a known version: never silently ignored.
        let unknown = crypto::seal(&key, b"ad", &meta_json(2, r#","read_limit":1"#));
        assert!(open_json::<EntryMeta>(&key, b"ad", &unknown, what)
            .unwrap_err()
            .is_tamper());
    }
}
