//! One module per command family.

pub mod acl;
pub mod demo;
pub mod env;
pub mod keys;
pub mod mount;
pub mod secrets;
pub mod serve;
pub mod vaults;
pub mod watch;
