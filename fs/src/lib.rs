//! The FUSE driver that serves a vaultfs vault, a directory of it, or one secret as files.
//!
//! The driver keeps the vault's tree (names, attributes, ACLs, never values) in memory and
//! follows the store's change counter; every open is checked against the current ACL with the
//! caller's uid and groups, and values are decrypted per read and wiped at once. See
//! `DESIGN.md` for the cache rules that keep rotated values from ever being served stale.
#![deny(missing_docs)]

mod access;
mod driver;
mod handles;
mod invalidate;
mod mount;
pub mod nss;
mod refresher;
mod view;
mod workers;

pub use driver::Options;
pub use mount::{clear_stale, detach, is_vaultfs_mount, mount, MountError, Mounted, Unmounter};
