//! Integration tests: they run the real `vaultfs` binary against real stores and mounts.

// The shared harness: the binary, a fresh store per test, random names and values.
mod common;
// Helpers for tests that mount: guards, real users, deadlines.
mod mounts;

// The store and the CLI: round trips, no plaintext on disk, tamper detection, credentials,
// addresses, concurrency, key slots, `env`, ACLs and help.
mod cli;
mod faults;
mod hygiene;
mod import;
// Import of many files: flat memory, all or nothing.
mod import_stream;
// Key files and store directories other users can touch.
mod key_perms;
// Numeric owners and groups: granted as numbers, with a warning when the host lacks them.
mod numeric_ids;
// Logging under floods and blocked sinks.
mod logging;

// The FUSE mount: attributes, permissions, rotation, signals, stale mounts, stalls.
mod mount;
// Real clients through a mount: nix, curl, ssh-keygen, bubblewrap.
mod clients;
// The NixOS module and the systemd units: evaluation, verification, the exact ExecStart.
mod nixos;
