//! TEMPORARY stand-in for the chunked `SealedValue` of the store track; replaced at merge.

use crate::error::Result;
use crate::reader::VaultReader;
use crate::secret::SecretBytes;

/// A secret's value at one version, as an open file handle holds it.
pub struct SealedValue(SecretBytes);

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedValue({} bytes)", self.0.len())
    }
}

impl SealedValue {
    /// Plaintext size.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }
    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The bytes in `[offset, offset + size)`, clamped to the value.
    pub fn read(&self, offset: u64, size: usize) -> Result<SecretBytes> {
        let b = self.0.expose();
        let start = (offset.min(b.len() as u64)) as usize;
        let end = start.saturating_add(size).min(b.len());
        Ok(SecretBytes::new(b[start..end].to_vec()))
    }
}

impl VaultReader {
    /// The sealed value of entry `id` at `version`; `None` when gone or changed.
    pub fn sealed_value(&self, id: i64, version: i64) -> Result<Option<SealedValue>> {
        Ok(self.read_value(id, version)?.map(SealedValue))
    }
}
