//! The row decoder: attacker-written ciphertext must fail cleanly, and any authenticated
//! plaintext (a future or broken writer's record) must decode or be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaultfs_store::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::open_sealed_row(data);
    fuzzing::decode_entry_record(data);
});
