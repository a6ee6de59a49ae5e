//! The FUSE driver that serves a vaultfs vault, a directory of it, or one secret as files.
//!
//! The driver keeps the vault's tree (names, attributes, ACLs, never values) in memory and
//! follows the store's authenticated head; every open is checked against the current ACL with
//! the caller's uid and groups, every version of a secret is its own inode, and a handle holds
//! its version's ciphertext and decrypts only the chunks a read returns. ARCHITECTURE.md at the
//! repository's root describes the read path and the threads.
#![deny(missing_docs)]
// Every syscall goes through nix's safe wrappers but one (`nowait`: preadv2 with RWF_NOWAIT).
#![deny(unsafe_code)]

mod access;
mod audit;
mod cache;
pub mod changes;
mod driver;
mod handles;
pub mod identity;
mod invalidate;
mod kernel;
mod limits;
mod mount;
pub mod mountinfo;
mod mountpoint;
mod nowait;
pub mod nss;
mod refresher;
mod signal;
mod unmount;
mod view;
mod workers;

pub use changes::{Change, ChangeHook};
pub use driver::Options;
pub use mount::{mount, MountError, Mounted, Unmounter};
pub use unmount::{unmount, UnmountError, Unmounted};
