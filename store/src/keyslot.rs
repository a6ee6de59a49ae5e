//! Key slots, LUKS-style: the random master key wrapped once per credential. Adding or removing
//! a slot rewraps nothing else, and no secret is re-encrypted.

use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{Result, StoreError};
use crate::recipient::{self, Payload};
use crate::secret::{Key, SecretBytes};

/// The shortest key file accepted: a key file is used without a slow KDF, so it must carry a
/// full key's worth of entropy.
pub const MIN_KEY_FILE_LEN: usize = 32;

/// Argon2id cost of a passphrase slot; stored in the slot so it can be raised later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// About 0.5–1 s on a 2-core VM (see README, "Performance"): costly to guess, bearable to type.
    fn default() -> Self {
        KdfParams {
            memory_kib: 256 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// Something that unlocks a store.
pub enum Credential {
    /// The bytes of a key file.
    KeyFile(SecretBytes),
    /// A passphrase.
    Passphrase(SecretBytes),
    /// A host's private key (age identity or OpenSSH ed25519 key), for public-key slots.
    Identity(crate::recipient::Identity),
}

impl Credential {
    fn kind(&self) -> &'static str {
        match self {
            Credential::KeyFile(_) => "keyfile",
            Credential::Passphrase(_) => "passphrase",
            Credential::Identity(_) => "identity",
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential::{}([REDACTED])", self.kind())
    }
}

/// A slot's public parameters, stored in clear and bound into the wrapped key's associated data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SlotParams {
    pub salt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argon2id: Option<KdfParams>,
}

/// What `key list` shows about a slot.
#[derive(Clone, Debug)]
pub struct SlotInfo {
    /// The slot's id, as given to `key remove`.
    pub id: i64,
    /// `keyfile` or `passphrase`.
    pub kind: String,
    /// Argon2id cost, for passphrase slots.
    pub kdf: Option<KdfParams>,
    /// When the slot was added, ns since the epoch.
    pub created_ns: i64,
    /// The user's name for the slot, if one was given.
    pub label: Option<String>,
    /// For a public-key slot: the recipient (`age1...` or `ssh-ed25519 ...`).
    pub recipient: Option<String>,
    /// For a public-key slot: its fingerprint (`SHA256:...` for ssh keys).
    pub fingerprint: Option<String>,
    /// For a scoped public-key slot: the ids of the vaults it opens (`None`: the whole store).
    pub scope: Option<Vec<i64>>,
}

/// A freshly wrapped master key, ready to insert.
pub(crate) struct NewSlot {
    pub kind: &'static str,
    pub params: String,
    pub wrapped: Vec<u8>,
}

/// Derives the key-encryption key for `cred` under `params`.
fn derive_kek(cred: &Credential, params: &SlotParams) -> Result<Key> {
    let salt = crypto::from_hex(&params.salt).ok_or(StoreError::WrongKey)?;
    match cred {
        Credential::KeyFile(bytes) => {
            let mut hasher = blake3::Hasher::new_derive_key("vaultfs 2026 key-file slot v1");
            hasher.update(&salt);
            hasher.update(bytes.expose());
            Ok(Key::from_bytes(*hasher.finalize().as_bytes()))
        }
        Credential::Passphrase(pass) => {
            let kdf = params.argon2id.ok_or(StoreError::WrongKey)?;
            let argon_params =
                argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
                    .map_err(|_| StoreError::WrongKey)?;
            let argon = argon2::Argon2::new(
                argon2::Algorithm::Argon2id,
                argon2::Version::V0x13,
                argon_params,
            );
            let mut out = zeroize::Zeroizing::new([0u8; 32]);
            argon
                .hash_password_into(pass.expose(), &salt, out.as_mut())
                .map_err(|_| StoreError::WrongKey)?;
            Ok(Key::from_bytes(*out))
        }
        Credential::Identity(_) => Err(StoreError::WrongKey),
    }
}

fn slot_aad(store_id: &[u8; 16], kind: &str, params: &str) -> Vec<u8> {
    let mut aad = crypto::aad("vaultfs key-slot v1", store_id, &[]);
    aad.extend_from_slice(kind.as_bytes());
    aad.push(0);
    aad.extend_from_slice(params.as_bytes());
    aad
}

/// Wraps `master` for `cred`.
pub(crate) fn wrap(
    store_id: &[u8; 16],
    master: &Key,
    cred: &Credential,
    kdf: KdfParams,
) -> Result<NewSlot> {
    if let Credential::KeyFile(bytes) = cred {
        if bytes.len() < MIN_KEY_FILE_LEN {
            return Err(StoreError::BadKeyFile {
                path: "(new key file)".into(),
                reason: "shorter than 32 bytes; make one with `vaultfs keygen`",
            });
        }
    }
    let salt: [u8; 16] = crypto::random_array();
    let params = SlotParams {
        salt: crypto::to_hex(&salt),
        argon2id: matches!(cred, Credential::Passphrase(_)).then_some(kdf),
    };
    let kek = derive_kek(cred, &params)?;
    let params = serde_json::to_string(&params).expect("slot params serialize");
    let wrapped = crypto::seal(
        &kek,
        &slot_aad(store_id, cred.kind(), &params),
        master.expose(),
    );
    Ok(NewSlot {
        kind: cred.kind(),
        params,
        wrapped,
    })
}

/// Tries `cred` on one slot of any kind; `None` when it is not the slot's credential.
pub(crate) fn unwrap_any(
    store_id: &[u8; 16],
    cred: &Credential,
    kind: &str,
    params_text: &str,
    wrapped: &[u8],
) -> Option<Payload> {
    match cred {
        Credential::Identity(id) if kind == recipient::KIND_AGE || kind == recipient::KIND_SSH => {
            recipient::unwrap(store_id, id, params_text, wrapped)
        }
        Credential::Identity(_) => None,
        _ => unwrap(store_id, cred, kind, params_text, wrapped).map(Payload::Master),
    }
}

/// Tries `cred` on one slot; `None` when it is not the slot's credential.
pub(crate) fn unwrap(
    store_id: &[u8; 16],
    cred: &Credential,
    kind: &str,
    params_text: &str,
    wrapped: &[u8],
) -> Option<Key> {
    if kind != cred.kind() {
        return None;
    }
    let params: SlotParams = serde_json::from_str(params_text).ok()?;
    let kek = derive_kek(cred, &params).ok()?;
    let master = crypto::open(&kek, &slot_aad(store_id, kind, params_text), wrapped)?;
    Key::from_slice(master.expose())
}

/// Parses a slot's public parameters for display.
pub(crate) fn info(
    id: i64,
    kind: String,
    params_text: &str,
    created_ns: i64,
    label: Option<String>,
) -> SlotInfo {
    let kdf = serde_json::from_str::<SlotParams>(params_text)
        .ok()
        .and_then(|p| p.argon2id);
    let public = recipient::params(params_text);
    SlotInfo {
        id,
        kind,
        kdf,
        created_ns,
        label,
        fingerprint: public
            .as_ref()
            .map(|p| recipient::fingerprint(&p.recipient)),
        scope: public.as_ref().and_then(|p| p.vaults.clone()),
        recipient: public.map(|p| p.recipient),
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn credentials_print_no_secret() {
        for cred in [
            Credential::KeyFile(SecretBytes::new(b"keyfile-canary-0123".to_vec())),
            Credential::Passphrase(SecretBytes::new(b"passphrase-canary".to_vec())),
        ] {
            let shown = format!("{cred:?}");
            assert!(!shown.contains("canary"), "{shown}");
            assert!(shown.contains("REDACTED"), "{shown}");
        }
    }
}
