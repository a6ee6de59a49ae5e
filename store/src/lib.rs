//! The encrypted store behind vaultfs: one SQLite file holding only ciphertext.
//!
//! # Design
//! A random master key is wrapped by one or more key slots (a passphrase through Argon2id, or a
//! key file; each with an optional label), so credentials can be added and removed without
//! touching a secret. Each vault has its own random key, wrapped by the master key and bound to
//! the vault's id; the vault's record (name, ACL defaults) is sealed under the vault key itself.
//! Every entry (directory or secret) is a row whose metadata (name, ACL, size, times) and value
//! are sealed separately with XChaCha20-Poly1305 under the vault key; the associated data binds
//! each ciphertext to the store, vault, row id and row version. Values are sealed in 64 KiB
//! chunks ([`SealedValue`]), each also bound to its index, the chunk count and the length, so a
//! read decrypts only the chunks it returns. Someone who can write the file can delete or roll
//! back single rows, but cannot read, forge, swap, rename or re-permission one: each of those
//! fails authentication with [`StoreError::Tampered`].
//!
//! # Versions
//! The store (`meta.format`, now 2) and every sealed record (`v`, and the value layout byte)
//! carry a version; one this build does not know is refused with one line
//! ([`StoreError::UnsupportedFormat`], [`StoreError::UnsupportedRecord`]), never half-read. A
//! format-1 store is [`StoreError::NeedsMigration`] until [`migrate`] upgrades it.
//!
//! # Who holds which key
//! [`Store`] holds the master key. [`Store::reader`] hands a [`VaultReader`] only the store id,
//! the path and the vault's key (and keys derived from it): a mount daemon drops the `Store`
//! once its readers exist and serves without the master key.
//!
//! # Host keys and bundles
//! A key slot may also be a public key ([`Recipient`]: age X25519 or ssh-ed25519, opened by an
//! [`Identity`]), so an admin can add a host without its secret and `key rotate` can re-wrap it.
//! Scoped to vaults, such a slot wraps only those vault keys: the handle it opens
//! ([`Store::is_scoped`]) reads those vaults and writes nothing. [`Store::export_bundle`] writes
//! the sealed rows of some vaults and the slots that open them as text, and [`Bundle::apply`]
//! makes a host's store a read-only replica of them (same store id), refusing an older head.
//!
//! # The store head
//! Names are stored only sealed; lookups use a keyed hash of (parent id, name) as an index.
//! Every committed change bumps the head (a counter, `generation`) and MACs it under a
//! master-derived key and under a key derived from each vault's key. The FUSE driver compares it
//! at each open to know when its in-memory tree is stale, and a [`VaultReader`] returns only a
//! verified head: a forged counter or rows newer than the head are [`StoreError::Tampered`], a
//! head older than one seen is [`StoreError::Rollback`]. The CLI remembers the highest head in a
//! MAC'd state file ([`default_state_dir`], [`OpenOptions`]).
#![deny(missing_docs)]
// Unsafe code only in `dump` (one madvise call) and `sys` (statvfs, geteuid).
#![deny(unsafe_code)]

mod acl;
mod address;
mod audit;
mod bundle;
mod counts;
mod crypto;
mod db;
mod dump;
mod entries;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod head;
mod keyslot;
mod limit;
mod migrate;
pub mod mirror;
mod reader;
mod recipient;
mod records;
mod rotate;
mod rows;
mod secret;
pub mod signal;
mod store;
mod sys;
pub mod template;
mod value;
mod wrap;

pub use acl::{
    parse_mode, projected_mode, AclOverride, AclSource, EffectiveAcl, Grant, Inherited, Principal,
    VaultAcl, MODE_MASK,
};
pub use address::{validate_name, Address, VaultPath, MAX_NAME_LEN};
pub use audit::{set_audit_mirror, AuditLog, AuditRecord, Verified};
pub use bundle::{Applied, ApplyOptions, Bundle, Shown, ShownSlot};
pub use counts::OpenCounts;
pub use entries::{AclFields, Listing};
pub use error::{Result, StoreError};
pub use head::default_state_dir;
pub use keyslot::{Credential, KdfParams, SlotInfo, MIN_KEY_FILE_LEN};
pub use limit::{Expiry, LimitChange, LimitOutcome};
pub use migrate::{migrate, Migrated};
pub use reader::{Changes, Snapshot, VaultReader};
pub use recipient::{Identity, Recipient};
pub use records::EntryKind;
pub use rotate::Rotated;
pub use rows::{Entry, Limits, MAX_SECRET_SIZE, ROOT_PARENT};
pub use secret::{Key, SecretBytes};
pub use store::{OpenOptions, Store, VaultInfo};
pub use value::SealedValue;
pub use wrap::{UnwrapError, Wrapped};
