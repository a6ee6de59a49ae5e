//! The sealed records: what a row holds once decrypted. Versioned JSON, so fields can be added
//! (expiry, read limits, identity rules: see DESIGN.md) without a new table layout.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::acl::{AclOverride, VaultAcl};
use crate::crypto;
use crate::error::{Result, StoreError};
use crate::secret::{Key, SecretBytes};

/// The record format version written by this build.
pub(crate) const RECORD_VERSION: u32 = 1;

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

/// A vault row's sealed content.
#[derive(Serialize, Deserialize)]
pub(crate) struct VaultRecord {
    pub v: u32,
    pub name: String,
    /// The vault key, hex; wiped on drop.
    pub key: String,
    pub acl: VaultAcl,
    pub created_ns: i64,
}

impl Drop for VaultRecord {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// An entry row's sealed metadata (the value is sealed separately, so listing a vault never
/// decrypts a value).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
}

/// Serializes `record` and seals it.
pub(crate) fn seal_json<T: Serialize>(key: &Key, aad: &[u8], record: &T) -> Vec<u8> {
    let plain = SecretBytes::new(serde_json::to_vec(record).expect("records serialize"));
    crypto::seal(key, aad, plain.expose())
}

/// Opens and parses a sealed record; `what` names the row in the error.
pub(crate) fn open_json<T: for<'de> Deserialize<'de>>(
    key: &Key,
    aad: &[u8],
    sealed: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T> {
    let plain =
        crypto::open(key, aad, sealed).ok_or_else(|| StoreError::Tampered { what: what() })?;
    serde_json::from_slice(plain.expose()).map_err(|_| StoreError::Tampered {
        what: "a record".into(),
    })
}

/// Nanoseconds since the epoch, now.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
