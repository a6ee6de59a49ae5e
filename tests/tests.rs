//! Integration tests: they run the real `vaultfs` binary against real stores and mounts.

mod nixos;
