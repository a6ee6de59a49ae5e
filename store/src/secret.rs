//! Types that hold plaintext or key material: zeroized on drop, redacted in Debug.

use zeroize::{Zeroize, Zeroizing};

/// Plaintext bytes of a secret, a passphrase or a key file.
///
/// The buffer is wiped when dropped, and `Debug` never shows the content, so a secret cannot leak
/// through a log line, an error or a panic message by accident.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are wiped when this value drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The plaintext. Callers must not copy it into buffers that are not wiped.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Mutable access, for reading into the buffer in place.
    pub fn expose_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// Length in bytes (not secret: the store reveals sizes to anyone allowed to `stat`).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SecretBytes::new(bytes)
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

/// A key's own memory page. The alignment makes the allocation exactly one page, so the page
/// can be excluded from core dumps (`MADV_DONTDUMP`) without excluding anything else.
#[repr(C, align(4096))]
struct KeyPage([u8; 32]);

/// A 256-bit symmetric key (master key, vault key, or a key-encryption key): on a page of its
/// own that core dumps leave out, and wiped when dropped.
pub struct Key(Box<KeyPage>);

impl Key {
    fn new(bytes: [u8; 32]) -> Key {
        let page = Box::new(KeyPage(bytes));
        crate::dump::exclude_from_core_dumps(
            std::ptr::from_ref::<KeyPage>(&page).cast(),
            std::mem::size_of::<KeyPage>(),
        );
        Key(page)
    }

    /// A fresh key from the OS's CSPRNG.
    pub fn random() -> Key {
        let mut k = Key::new([0; 32]);
        crate::crypto::fill_random(&mut k.0 .0);
        k
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key::new(bytes)
    }

    /// Reads a key from a slice of exactly 32 bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Key> {
        (bytes.len() == 32).then(|| {
            let mut k = Key::new([0; 32]);
            k.0 .0.copy_from_slice(bytes);
            k
        })
    }

    /// The raw key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0 .0
    }

    /// A subkey for `context`, so one key never serves two purposes.
    pub(crate) fn derive(&self, context: &str) -> Key {
        let mut k = Key::new([0; 32]);
        k.0 .0 = blake3::derive_key(context, &self.0 .0);
        k
    }
}

impl Clone for Key {
    fn clone(&self) -> Key {
        let mut k = Key::new([0; 32]);
        k.0 .0 = self.0 .0;
        k
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0 .0.zeroize();
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_on_pages_left_out_of_core_dumps() {
        let k = Key::random();
        let addr = std::ptr::from_ref::<[u8; 32]>(k.expose()) as usize;
        assert_eq!(addr % 4096, 0);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
                    return;
                }
            }
        }
        panic!("the key's mapping is not in /proc/self/smaps");
    }

    #[test]
    fn debug_output_is_redacted() {
        let s = SecretBytes::new(b"hunter2-canary".to_vec());
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"));
        let k = Key::from_bytes([0x41; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.contains("65") && !shown.contains("AAAA"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }
}
