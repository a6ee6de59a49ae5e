//! Integration tests: they run the real `vaultfs` binary against real stores and mounts.

mod clients;
mod common;
mod import;
mod mount;
mod mounts;
