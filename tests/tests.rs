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
// Open handles under attack: versions, replacements, torn reads, mmap.
mod handles;
// Locked, frozen, replaced and removed stores: bounded waits, no stale or mixed state.
mod stalls;
// The change signal: opens skip the store round when nothing was written, and stay exact.
mod signal;
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
// Delivery to services: the credential socket (direct and under a real systemd), `watch`.
mod actions;
mod credsock;
mod nixos_actions;
mod watch;
// Host keys as key slots (age, ssh-ed25519), scoped to vaults.
mod hostkeys;
// Bundles: two hosts, round trip, rollback refusal, tamper of every line kind.
mod bundles;
// Migration from agenix (.age files) and sops (plaintext documents).
mod migration_age;
// `vaultfs edit`: $EDITOR on a RAM filesystem.
mod edit;
// The NixOS module's bundle and identity options, run as systemd would.
mod nixos_bundle;
// Grants, service identity, expiry and read limits.
mod nixos_policy;
mod policy;
mod policy_limits;
// The audit mirror: journal and stderr.
mod audit_mirror;
mod policy_templates;
// Kernel-checked mounts: no opens in the daemon, pushed invalidation, refusals.
mod kernel_checks;
// A store in etcd: a real 3-member cluster (the harness), three hosts serving replicas.
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod fleet;
// The NixOS module's etcd options under the real nixpkgs lib.
mod nixos_etcd;
