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
// The store format: migration from round 1, the authenticated head, SQLite locks kept.
mod store_format;

// The FUSE mount: attributes, permissions, rotation, signals, stale mounts, stalls.
mod mount;
// Open handles under attack: versions, replacements, torn reads, mmap.
mod handles;
// Locked, frozen, replaced and removed stores: bounded waits, no stale or mixed state.
mod stalls;
// Templates: files rendered from secrets at open.
mod templates;
// Mountpoints under attack: symlinks, created paths, dead foreign mounts, umount.
mod mountpoints;
// Real clients through a mount: nix, curl, ssh-keygen, bubblewrap.
mod clients;
// The NixOS module and the systemd units: evaluation, verification, the exact ExecStart.
mod nixos;
// The README's CLI tour, run as written.
mod readme_tour;
// Grants, service identity, expiry and read limits.
mod policy;
