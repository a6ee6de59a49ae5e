//! Sealing and opening of rows: XChaCha20-Poly1305 with associated data that names the row.
//!
//! XChaCha20's 192-bit nonces are drawn at random for every seal; at that size random nonces
//! never collide in practice, so no nonce counter has to survive crashes. The associated data
//! binds each ciphertext to the store, the table, the row id and the row version, so a sealed
//! value moved to another row, another vault or another store fails to open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::secret::{Key, SecretBytes};

pub(crate) const NONCE_LEN: usize = 24;
/// Poly1305's tag.
pub(crate) const TAG_LEN: usize = 16;

/// Fills `buf` from the OS's CSPRNG.
///
/// # Panics
/// If the OS has no randomness to give, which no secure fallback exists for.
pub(crate) fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// Random bytes of a fixed size.
pub(crate) fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill_random(&mut out);
    out
}

/// Encrypts `plaintext`; the result is `nonce || ciphertext || tag`.
pub(crate) fn seal(key: &Key, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let nonce: [u8; NONCE_LEN] = random_array();
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Decrypts what [`seal`] produced; `None` when the key, the associated data or a byte differs.
pub(crate) fn open(key: &Key, aad: &[u8], sealed: &[u8]) -> Option<SecretBytes> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(SecretBytes::new)
}

/// A keyed MAC (BLAKE3) over `parts`, each length-prefixed so no two inputs collide.
pub(crate) fn mac(key: &Key, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(key.expose());
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

/// Compares two MACs without an early exit.
pub(crate) fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Associated data naming one row: `label || store id || ids...`.
pub(crate) fn aad(label: &str, store_id: &[u8; 16], ids: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + 1 + 16 + 8 * ids.len());
    out.extend_from_slice(label.as_bytes());
    out.push(0);
    out.extend_from_slice(store_id);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// A deterministic, keyed tag for a name, so names can be looked up by index without being
/// stored readable.
pub(crate) fn name_tag(key: &Key, parent: i64, name: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(key.expose());
    hasher.update(&parent.to_le_bytes());
    hasher.update(name.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Lower-case hex, for salts in slot parameters.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex.
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    // Only the lowercase hex `to_hex` writes: one text per value, so an edited bundle line
    // (an `a` made `A`) never parses to the same bytes and slips past its check.
    if text.len() % 2 != 0 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let key = Key::random();
        let sid = [7u8; 16];
        let a = aad("entry", &sid, &[1, 2]);
        let sealed = seal(&key, &a, b"value");
        assert_eq!(open(&key, &a, &sealed).unwrap().expose(), b"value");
        assert!(open(&key, &aad("entry", &sid, &[1, 3]), &sealed).is_none());
        assert!(open(&Key::random(), &a, &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(open(&key, &a, &flipped).is_none());
        assert!(open(&key, &a, &sealed[..10]).is_none());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex(&to_hex(&[0, 255, 16])).unwrap(), vec![0, 255, 16]);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
        assert!(
            from_hex("AB").is_none(),
            "one text per value: lowercase only"
        );
    }
}
