//! The FUSE driver that serves a vaultfs vault, a directory of it, or one secret as files.
//!
//! The driver keeps the vault's tree (names, attributes, ACLs, never values) in memory and
//! follows the store's change counter; every open is checked against the current ACL with the
//! caller's uid and groups, and values are decrypted per read and wiped at once. See
//! `DESIGN.md` for the cache rules that keep rotated values from ever being served stale.
#![deny(missing_docs)]
// Every syscall goes through nix's safe wrappers.
#![deny(unsafe_code)]

mod access;
mod audit;
mod driver;
mod handles;
pub mod identity;
mod invalidate;
mod limits;
mod mount;
pub mod mountinfo;
mod mountpoint;
pub mod nss;
mod refresher;
mod unmount;
mod view;
mod workers;

pub use driver::Options;
pub use mount::{mount, MountError, Mounted, Unmounter};
pub use unmount::{unmount, UnmountError, Unmounted};
