//! The FUSE driver that serves vaultfs vaults as files.

pub mod nss;
