//! Values sealed in chunks: the one place that knows a value's layout.
//!
//! A value is `format byte || chunk 0 || chunk 1 ...`, each chunk `nonce || ciphertext || tag` of
//! at most [`CHUNK_SIZE`] plaintext bytes (an empty value is one empty chunk, so "no chunks" is
//! never valid). Every chunk's associated data names the store, vault, entry, version, the chunk's
//! index, the chunk count and the plaintext length, so a chunk dropped, reordered, or moved from
//! another entry or version fails authentication. A read decrypts only the chunks it returns.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::crypto::{self, NONCE_LEN, TAG_LEN};
use crate::error::{Result, StoreError};
use crate::secret::{Key, SecretBytes};

/// Plaintext bytes per chunk: large enough that the 40-byte overhead is noise, small enough that
/// a 4 KiB read decrypts little.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;

/// The value layout written by this build (the blob's first byte).
pub(crate) const VALUE_FORMAT: u8 = 2;

const CHUNK_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// What a value is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ValueId {
    pub store_id: [u8; 16],
    pub vault_id: i64,
    pub id: i64,
    pub version: i64,
}

fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK_SIZE as u64).max(1)
}

fn chunk_aad(vid: &ValueId, index: u64, count: u64, len: u64) -> Vec<u8> {
    crypto::aad(
        "vaultfs value chunk v2",
        &vid.store_id,
        &[
            vid.vault_id,
            vid.id,
            vid.version,
            index as i64,
            count as i64,
            len as i64,
        ],
    )
}

/// The sealed size of a value of `len` plaintext bytes.
fn sealed_len(len: u64) -> Option<u64> {
    chunk_count(len)
        .checked_mul(CHUNK_OVERHEAD as u64)?
        .checked_add(len)?
        .checked_add(1)
}

/// Seals `plain` for `vid`.
pub(crate) fn seal(key: &Key, vid: &ValueId, plain: &[u8]) -> Vec<u8> {
    let len = plain.len() as u64;
    let count = chunk_count(len);
    let mut out = Vec::with_capacity(sealed_len(len).unwrap_or(0) as usize);
    out.push(VALUE_FORMAT);
    let mut chunks: Vec<&[u8]> = plain.chunks(CHUNK_SIZE).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend_from_slice(&crypto::seal(
            key,
            &chunk_aad(vid, i as u64, count, len),
            chunk,
        ));
    }
    out
}

/// A secret's value at one version, still sealed: what an open file handle holds.
///
/// It keeps the ciphertext and the vault key, so reads never touch the store again and always
/// return this version's bytes, whatever is written after.
pub struct SealedValue {
    key: Key,
    vid: ValueId,
    /// For error messages: `entry #id of vault "name"`.
    what: String,
    len: u64,
    blob: Vec<u8>,
}

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedValue")
            .field("entry", &self.what)
            .field("version", &self.vid.version)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl SealedValue {
    /// Checks the layout of `blob` for a value of `len` bytes (from the entry's authenticated
    /// metadata); the chunks themselves are authenticated as they are read.
    pub(crate) fn new(
        key: Key,
        vid: ValueId,
        what: String,
        len: u64,
        blob: Vec<u8>,
    ) -> Result<SealedValue> {
        match blob.first() {
            Some(&VALUE_FORMAT) => {}
            Some(&found) => {
                return Err(StoreError::UnsupportedRecord {
                    what: format!("the value of {what}"),
                    found: found.into(),
                    supported: VALUE_FORMAT.into(),
                })
            }
            None => return Err(StoreError::Tampered { what }),
        }
        if sealed_len(len) != Some(blob.len() as u64) {
            return Err(StoreError::Tampered { what });
        }
        Ok(SealedValue {
            key,
            vid,
            what,
            len,
            blob,
        })
    }

    /// Plaintext size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decrypts only the chunks overlapping `[offset, offset + size)`, clamped to the length,
    /// and returns exactly those bytes (empty at or after the end). A chunk that fails
    /// authentication is [`StoreError::Tampered`] naming the entry; no byte of it is returned.
    pub fn read(&self, offset: u64, size: usize) -> Result<SecretBytes> {
        let end = offset.saturating_add(size as u64).min(self.len);
        if offset >= end {
            return Ok(SecretBytes::default());
        }
        let count = chunk_count(self.len);
        let cipher = XChaCha20Poly1305::new(self.key.expose().into());
        let first = offset / CHUNK_SIZE as u64;
        let last = (end - 1) / CHUNK_SIZE as u64;
        let mut out = SecretBytes::new(Vec::with_capacity((end - offset) as usize));
        for index in first..=last {
            let chunk_start = index * CHUNK_SIZE as u64;
            let plain_len = (self.len - chunk_start).min(CHUNK_SIZE as u64) as usize;
            let at = 1 + index as usize * (CHUNK_SIZE + CHUNK_OVERHEAD);
            let sealed = self
                .blob
                .get(at..at + plain_len + CHUNK_OVERHEAD)
                .ok_or_else(|| self.tampered())?;
            let (nonce, ct) = sealed.split_at(NONCE_LEN);
            let plain = SecretBytes::new(
                cipher
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: ct,
                            aad: &chunk_aad(&self.vid, index, count, self.len),
                        },
                    )
                    .map_err(|_| self.tampered())?,
            );
            let from = offset.saturating_sub(chunk_start) as usize;
            let to = ((end - chunk_start) as usize).min(plain.len());
            let part = plain
                .expose()
                .get(from..to)
                .ok_or_else(|| self.tampered())?;
            out.expose_mut().extend_from_slice(part);
        }
        Ok(out)
    }

    /// The whole value.
    pub(crate) fn read_all(&self) -> Result<SecretBytes> {
        self.read(0, usize::try_from(self.len).unwrap_or(usize::MAX))
    }

    fn tampered(&self) -> StoreError {
        StoreError::Tampered {
            what: self.what.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vid(id: i64, version: i64) -> ValueId {
        ValueId {
            store_id: [3; 16],
            vault_id: 1,
            id,
            version,
        }
    }

    fn sealed(key: &Key, v: ValueId, plain: &[u8]) -> Result<SealedValue> {
        SealedValue::new(
            key.clone(),
            v,
            "entry #1".into(),
            plain.len() as u64,
            seal(key, &v, plain),
        )
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 65536) as u8).collect()
    }

    #[test]
    fn reads_any_range_exactly() {
        let key = Key::random();
        for n in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE + 17,
        ] {
            let plain = pattern(n);
            let v = sealed(&key, vid(1, 1), &plain).unwrap();
            assert_eq!(v.len(), n as u64);
            assert_eq!(v.read_all().unwrap().expose(), &plain[..]);
            for (off, size) in [(0, 1), (1, 4096), (CHUNK_SIZE - 3, 10), (n, 5), (n + 9, 5)] {
                let got = v.read(off as u64, size).unwrap();
                let from = off.min(n);
                let to = (off + size).min(n);
                assert_eq!(got.expose(), &plain[from..to.max(from)], "n={n} off={off}");
            }
        }
    }

    #[test]
    fn truncated_reordered_and_swapped_chunks_fail() {
        let key = Key::random();
        let plain = pattern(3 * CHUNK_SIZE);
        let blob = seal(&key, &vid(1, 1), &plain);
        let step = CHUNK_SIZE + CHUNK_OVERHEAD;
        // Truncated by one chunk, with the length claiming less: the count is bound.
        let short = blob[..1 + 2 * step].to_vec();
        let v = SealedValue::new(
            key.clone(),
            vid(1, 1),
            "e".into(),
            2 * CHUNK_SIZE as u64,
            short,
        )
        .unwrap();
        assert!(v.read(0, 10).unwrap_err().is_tamper());
        // Two chunks swapped.
        let mut swapped = blob.clone();
        swapped[1..1 + step].copy_from_slice(&blob[1 + step..1 + 2 * step]);
        swapped[1 + step..1 + 2 * step].copy_from_slice(&blob[1..1 + step]);
        let v = SealedValue::new(
            key.clone(),
            vid(1, 1),
            "e".into(),
            plain.len() as u64,
            swapped,
        )
        .unwrap();
        assert!(v.read(0, 10).unwrap_err().is_tamper());
        assert!(v.read(CHUNK_SIZE as u64, 10).unwrap_err().is_tamper());
        assert_eq!(
            v.read(2 * CHUNK_SIZE as u64, 10).unwrap().expose(),
            &plain[2 * CHUNK_SIZE..][..10]
        );
        // A chunk from another entry or another version.
        for other in [vid(2, 1), vid(1, 2)] {
            let foreign = seal(&key, &other, &plain);
            let mut mixed = blob.clone();
            mixed[1 + step..1 + 2 * step].copy_from_slice(&foreign[1 + step..1 + 2 * step]);
            let v = SealedValue::new(
                key.clone(),
                vid(1, 1),
                "e".into(),
                plain.len() as u64,
                mixed,
            )
            .unwrap();
            assert!(v.read(0, 10).is_ok());
            assert!(v.read(CHUNK_SIZE as u64, 10).unwrap_err().is_tamper());
        }
        // A length that does not match the blob, and an unknown layout version.
        assert!(
            SealedValue::new(key.clone(), vid(1, 1), "e".into(), 5, blob.clone())
                .unwrap_err()
                .is_tamper()
        );
        let mut future = blob.clone();
        future[0] = 9;
        assert!(matches!(
            SealedValue::new(key, vid(1, 1), "e".into(), plain.len() as u64, future),
            Err(StoreError::UnsupportedRecord { found: 9, .. })
        ));
    }

    #[test]
    fn debug_shows_no_bytes() {
        let key = Key::random();
        let v = sealed(&key, vid(1, 1), b"canary-value").unwrap();
        let shown = format!("{v:?}");
        assert!(
            !shown.contains("canary") && !shown.contains("blob"),
            "{shown}"
        );
        fn send_sync<T: Send + Sync>() {}
        send_sync::<SealedValue>();
    }
}
