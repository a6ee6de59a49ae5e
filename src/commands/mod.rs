//! One module per command family.

pub mod acl;
pub mod audit;
pub mod bundle;
pub mod demo;
pub mod docs;
pub mod edit;
pub mod env;
pub mod import;
pub mod keys;
pub mod limit;
pub mod migrate;
pub mod mount;
pub mod secrets;
pub mod serve;
pub mod template;
pub mod vaults;
pub mod watch;
