//! The encrypted store behind vaultfs: one SQLite file holding only ciphertext.
//!
//! # Design
//! A random master key is wrapped by one or more key slots (a passphrase through Argon2id, or a
//! key file), so credentials can be added and removed without touching a secret. Each vault has
//! its own random key, sealed under the master key. Every entry (directory or secret) is a row
//! whose metadata (name, ACL, size, times) and value are sealed separately with
//! XChaCha20-Poly1305 under the vault key; the associated data binds each ciphertext to the
//! store, vault, row id and row version. Someone who can write the file can delete or roll back
//! rows, but cannot read, forge, swap, rename or re-permission one: each of those fails
//! authentication with [`StoreError::Tampered`].
//!
//! Names are stored only sealed; lookups use a keyed hash of (parent id, name) as an index.
//! Every committed change bumps a generation counter, which the FUSE driver compares at each
//! open to know when its in-memory tree is stale.
#![deny(missing_docs)]
// Unsafe code only in `dump` (one madvise call).
#![deny(unsafe_code)]

mod acl;
mod address;
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
mod migrate;
mod reader;
mod records;
mod rows;
mod secret;
mod store;
mod sys;
mod value;

pub use acl::{
    parse_mode, projected_mode, AclOverride, AclSource, EffectiveAcl, Inherited, VaultAcl,
    MODE_MASK,
};
pub use address::{validate_name, Address, VaultPath, MAX_NAME_LEN};
pub use entries::Listing;
pub use error::{Result, StoreError};
pub use head::default_state_dir;
pub use keyslot::{Credential, KdfParams, SlotInfo, MIN_KEY_FILE_LEN};
pub use migrate::{migrate, Migrated};
pub use reader::{Changes, Snapshot, VaultReader};
pub use records::EntryKind;
pub use rows::{Entry, MAX_SECRET_SIZE, ROOT_PARENT};
pub use secret::{Key, SecretBytes};
pub use store::{OpenOptions, Store, VaultInfo};
pub use value::SealedValue;
