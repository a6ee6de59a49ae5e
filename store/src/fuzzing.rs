//! Entry points for the fuzz targets under `fuzz/` (feature `fuzzing` only): the decoders that
//! face bytes an attacker who can write the store file controls.

use crate::acl::VaultAcl;
use crate::crypto;
use crate::rows;
use crate::secret::Key;
use crate::store::{OpenVault, VaultInfo};

fn vault() -> OpenVault {
    OpenVault::new(
        VaultInfo {
            id: 1,
            name: "fuzz".into(),
            acl: VaultAcl {
                owner: "root".into(),
                group: "root".into(),
                mode: 0o400,
            },
            created_ns: 0,
            version: 1,
        },
        Key::from_bytes([7; 32]),
    )
}

/// Opens `data` as a sealed entry row (the attacker's ciphertext): must fail cleanly.
pub fn open_sealed_row(data: &[u8]) {
    let _ = rows::open_row(&[1; 16], &vault(), 1, 1, 0, data);
}

/// Seals `plaintext` under the right key and associated data, then decodes it as an entry row:
/// what the decoder does with any authenticated bytes (a future or buggy writer's record).
pub fn decode_entry_record(plaintext: &[u8]) {
    let vault = vault();
    let aad = rows::meta_aad(&[1; 16], &vault, 1, 1);
    let sealed = crypto::seal(&vault.key, &aad, plaintext);
    let _ = rows::open_row(&[1; 16], &vault, 1, 1, 0, &sealed);
}
