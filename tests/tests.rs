//! Integration tests: they run the real `vaultfs` binary against real stores and mounts.

// The shared harness: the binary, a fresh store per test, random names and values.
mod common;

// The store and the CLI (issue #2): round trips, no plaintext on disk, tamper detection,
// credentials, addresses, concurrency, key slots, `env`, ACLs and help.
mod cli;
