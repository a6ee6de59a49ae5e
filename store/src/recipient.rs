//! Public-key key slots: an age X25519 recipient or an OpenSSH ed25519 public key (a host's SSH
//! host key) wraps either the master key or, for a slot scoped to vaults, only those vaults'
//! keys. Why public keys: an admin can add a host, or re-wrap its slot at `key rotate`, without
//! the host's secret, which is what lets one repository deploy many machines.
//!
//! ssh-rsa is refused: the `rsa` crate behind age's ssh support has an unfixed timing
//! side channel (RUSTSEC-2023-0071), and a host key decrypts on every boot.

use std::io::{Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{Result, StoreError};
use crate::secret::{Key, SecretBytes};

/// Why ssh-rsa keys are refused, in one line.
const RSA_REFUSED: &str = "ssh-rsa keys are not supported: the RSA code behind age's ssh support has an unfixed timing side channel (RUSTSEC-2023-0071); use an ssh-ed25519 host key or an age key";

/// The slot kinds a public key makes (`key_slots.kind`).
pub(crate) const KIND_AGE: &str = "age";
/// See [`KIND_AGE`].
pub(crate) const KIND_SSH: &str = "ssh-ed25519";

/// A public key a slot can be wrapped to: what `key add --recipient` takes.
#[derive(Clone)]
pub struct Recipient {
    text: String,
    kind: &'static str,
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipient({})", self.text)
    }
}

impl Recipient {
    /// Parses `age1...` or `ssh-ed25519 AAAA... [comment]` (the comment is dropped).
    pub fn parse(text: &str) -> Result<Recipient> {
        let text = text.trim();
        let bad = |reason: String| StoreError::BadRecipient {
            input: text.chars().take(40).collect(),
            reason,
        };
        if text.starts_with("ssh-rsa ") {
            return Err(bad(RSA_REFUSED.into()));
        }
        if text.starts_with("age1") {
            let r = age::x25519::Recipient::from_str(text)
                .map_err(|e| bad(format!("not an age recipient: {e}")))?;
            return Ok(Recipient {
                text: r.to_string(),
                kind: KIND_AGE,
            });
        }
        if text.starts_with("ssh-ed25519 ") {
            let mut fields = text.split_whitespace();
            let key = format!(
                "{} {}",
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default()
            );
            let r = age::ssh::Recipient::from_str(&key)
                .map_err(|_| bad("not a valid ssh-ed25519 public key".into()))?;
            return Ok(Recipient {
                text: r.to_string(),
                kind: KIND_SSH,
            });
        }
        Err(bad(
            "expected an age recipient (age1...) or an ssh-ed25519 public key".into(),
        ))
    }

    /// The canonical text (`age1...`, or `ssh-ed25519 BASE64` without a comment).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The slot kind: `age` or `ssh-ed25519`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What `key list` shows: `SHA256:...` as `ssh-keygen -l` prints it for an ssh key, the
    /// recipient itself for an age key (it is short, and what admins search for).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.text)
    }

    fn boxed(&self) -> Result<Box<dyn age::Recipient + Send>> {
        let bad = || StoreError::BadRecipient {
            input: self.text.chars().take(40).collect(),
            reason: "not a recipient".into(),
        };
        Ok(match self.kind {
            KIND_AGE => Box::new(age::x25519::Recipient::from_str(&self.text).map_err(|_| bad())?),
            _ => Box::new(age::ssh::Recipient::from_str(&self.text).map_err(|_| bad())?),
        })
    }
}

/// See [`Recipient::fingerprint`].
pub(crate) fn fingerprint(recipient: &str) -> String {
    use base64::Engine as _;
    if let Some(b64) = recipient.strip_prefix("ssh-ed25519 ") {
        if let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(&blob);
            return format!(
                "SHA256:{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
            );
        }
    }
    recipient.to_owned()
}

/// A host's private key: an age identity file (`AGE-SECRET-KEY-1...` lines) or an unencrypted
/// OpenSSH ed25519 private key such as `/etc/ssh/ssh_host_ed25519_key`.
pub struct Identity {
    inner: Vec<Box<dyn age::Identity>>,
    /// The public keys of `inner`, to find the key's own slot in a bundle.
    recipients: Vec<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity([REDACTED])")
    }
}

impl Identity {
    /// Parses the bytes of an identity file; `path` only names it in errors.
    pub fn parse(bytes: &SecretBytes, path: &std::path::Path) -> Result<Identity> {
        let bad = |reason: &str| StoreError::BadIdentity {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(bytes.expose()).map_err(|_| bad("not a text file"))?;
        if text.contains("BEGIN RSA PRIVATE KEY") {
            return Err(bad(RSA_REFUSED));
        }
        if text.contains("BEGIN OPENSSH PRIVATE KEY") {
            let id = age::ssh::Identity::from_buffer(bytes.expose(), None)
                .map_err(|_| bad("not a readable OpenSSH private key"))?;
            if matches!(id, age::ssh::Identity::Encrypted(_)) {
                return Err(bad(
                    "the ssh key is passphrase-protected; host keys are not, and vaultfs reads only unprotected ssh-ed25519 keys",
                ));
            }
            return match age::ssh::Recipient::try_from(id.clone()) {
                Ok(r @ age::ssh::Recipient::SshEd25519(..)) => Ok(Identity {
                    inner: vec![Box::new(id)],
                    recipients: vec![r.to_string()],
                }),
                Ok(age::ssh::Recipient::SshRsa(..)) => Err(bad(RSA_REFUSED)),
                Err(_) => Err(bad("unsupported ssh key type; use ssh-ed25519")),
            };
        }
        let mut inner: Vec<Box<dyn age::Identity>> = Vec::new();
        let mut recipients = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = age::x25519::Identity::from_str(line)
                .map_err(|_| bad("neither an age identity file nor an OpenSSH private key"))?;
            recipients.push(id.to_public().to_string());
            inner.push(Box::new(id));
        }
        if inner.is_empty() {
            return Err(bad("holds no identity"));
        }
        Ok(Identity { inner, recipients })
    }

    /// Decrypts an age file (binary or ASCII-armored) encrypted to this identity, such as an
    /// agenix secret.
    pub fn decrypt_file(&self, sealed: &[u8]) -> Result<SecretBytes> {
        let fail = |why: &str| StoreError::InvalidOperation(why.to_owned());
        let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(sealed))
            .map_err(|_| fail("not an age file"))?;
        let mut reader = decryptor
            .decrypt(self.inner.iter().map(|i| &**i as &dyn age::Identity))
            .map_err(|_| fail("not encrypted to this key"))?;
        let mut plain = zeroize::Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut plain)
            .map_err(|_| fail("the file is damaged (authentication failed)"))?;
        Ok(SecretBytes::new(std::mem::take(&mut *plain)))
    }

    /// The public keys of this identity (`age1...`, `ssh-ed25519 ...`).
    pub fn recipients(&self) -> Vec<String> {
        self.recipients.clone()
    }
}

/// What a public-key slot wraps.
pub(crate) enum Payload {
    /// The master key: the slot opens the whole store.
    Master(Key),
    /// Only these vaults' keys, by vault id.
    Vaults(Vec<(i64, Key)>),
}

/// A public-key slot's parameters, stored in clear. `mac` binds them to the store under a
/// master-derived key: age encryption to a public key authenticates nobody, so without it
/// someone who can write the store could swap the recipient and have the next `key rotate`
/// wrap the new keys to themselves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PublicParams {
    pub recipient: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vaults: Option<Vec<i64>>,
    pub mac: String,
}

const PAYLOAD_MAGIC: &[u8; 16] = b"vaultfs slot v1\0";
const MASTER_MARK: u32 = u32::MAX;

fn params_mac(
    slot_key: &Key,
    store_id: &[u8; 16],
    recipient: &str,
    vaults: Option<&[i64]>,
) -> String {
    let ids: Vec<u8> = vaults
        .map(|v| v.iter().flat_map(|id| id.to_le_bytes()).collect())
        .unwrap_or_default();
    let scoped = [u8::from(vaults.is_some())];
    crypto::to_hex(&crypto::mac(
        slot_key,
        &[
            b"vaultfs public slot params v1",
            store_id,
            recipient.as_bytes(),
            &scoped,
            &ids,
        ],
    ))
}

impl PublicParams {
    /// Whether the master-derived `slot_key` vouches for these parameters.
    pub(crate) fn verify(&self, slot_key: &Key, store_id: &[u8; 16]) -> bool {
        crypto::mac_eq(
            self.mac.as_bytes(),
            params_mac(slot_key, store_id, &self.recipient, self.vaults.as_deref()).as_bytes(),
        )
    }
}

/// Wraps `payload` to `recipient`; returns the params text and the age ciphertext.
pub(crate) fn wrap(
    store_id: &[u8; 16],
    slot_key: &Key,
    recipient: &Recipient,
    payload: &Payload,
) -> Result<(String, Vec<u8>)> {
    let mut plain = SecretBytes::new(Vec::with_capacity(64));
    let v = plain.expose_mut();
    v.extend_from_slice(PAYLOAD_MAGIC);
    v.extend_from_slice(store_id);
    let vaults = match payload {
        Payload::Master(key) => {
            v.extend_from_slice(&MASTER_MARK.to_le_bytes());
            v.extend_from_slice(key.expose());
            None
        }
        Payload::Vaults(keys) => {
            v.extend_from_slice(&(keys.len() as u32).to_le_bytes());
            for (id, key) in keys {
                v.extend_from_slice(&id.to_le_bytes());
                v.extend_from_slice(key.expose());
            }
            Some(keys.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        }
    };
    let params = PublicParams {
        recipient: recipient.text.clone(),
        mac: params_mac(slot_key, store_id, &recipient.text, vaults.as_deref()),
        vaults,
    };
    let boxed = recipient.boxed()?;
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&*boxed as _))
        .map_err(|e| StoreError::InvalidOperation(format!("cannot wrap to the recipient: {e}")))?;
    let mut out = Vec::new();
    let io = |e: std::io::Error| StoreError::InvalidOperation(format!("age: {e}"));
    let mut w = encryptor.wrap_output(&mut out).map_err(io)?;
    w.write_all(plain.expose()).map_err(io)?;
    w.finish().map_err(io)?;
    Ok((
        serde_json::to_string(&params).expect("slot params serialize"),
        out,
    ))
}

/// Tries `identity` on one public-key slot; `None` when it is not this slot's key. A payload
/// that decrypts but names another store or other vaults than the params is refused too.
pub(crate) fn unwrap(
    store_id: &[u8; 16],
    identity: &Identity,
    params_text: &str,
    wrapped: &[u8],
) -> Option<Payload> {
    let params: PublicParams = serde_json::from_str(params_text).ok()?;
    let decryptor = age::Decryptor::new(wrapped).ok()?;
    let mut reader = decryptor
        .decrypt(identity.inner.iter().map(|i| &**i as &dyn age::Identity))
        .ok()?;
    let mut plain = SecretBytes::new(Vec::with_capacity(64));
    let mut buf = zeroize::Zeroizing::new([0u8; 4096]);
    loop {
        let n = reader.read(buf.as_mut()).ok()?;
        if n == 0 {
            break;
        }
        if plain.len() + n > 1 << 20 {
            return None;
        }
        let v = plain.expose_mut();
        if v.len() + n > v.capacity() {
            let mut bigger = Vec::with_capacity((v.len() + n).next_power_of_two());
            bigger.extend_from_slice(v);
            plain = SecretBytes::new(bigger);
        }
        plain.expose_mut().extend_from_slice(&buf[..n]);
    }
    let p = plain.expose();
    if p.len() < 36 || &p[..16] != PAYLOAD_MAGIC || p[16..32] != store_id[..] {
        return None;
    }
    let count = u32::from_le_bytes(p[32..36].try_into().ok()?);
    let rest = &p[36..];
    if count == MASTER_MARK {
        if params.vaults.is_some() || rest.len() != 32 {
            return None;
        }
        return Key::from_slice(rest).map(Payload::Master);
    }
    if rest.len() != count as usize * 40 {
        return None;
    }
    let keys: Vec<(i64, Key)> = rest
        .chunks_exact(40)
        .map(|c| {
            Some((
                i64::from_le_bytes(c[..8].try_into().ok()?),
                Key::from_slice(&c[8..])?,
            ))
        })
        .collect::<Option<_>>()?;
    let ids: Vec<i64> = keys.iter().map(|(id, _)| *id).collect();
    if params.vaults.as_deref() != Some(&ids[..]) {
        return None;
    }
    Some(Payload::Vaults(keys))
}

/// The recipient and scope of a public-key slot, for display and rotation.
pub(crate) fn params(params_text: &str) -> Option<PublicParams> {
    serde_json::from_str(params_text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_is_refused_with_the_advisory() {
        let e = Recipient::parse("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ host").unwrap_err();
        assert!(e.to_string().contains("RUSTSEC-2023-0071"), "{e}");
    }

    #[test]
    fn wrap_round_trip_and_binding() {
        let id = age::x25519::Identity::generate();
        let r = Recipient::parse(&id.to_public().to_string()).unwrap();
        let text = format!(
            "# test\n{}\n",
            age::secrecy::ExposeSecret::expose_secret(&id.to_string())
        );
        let ident = Identity::parse(&SecretBytes::new(text.into_bytes()), "id".as_ref()).unwrap();
        let slot_key = Key::random();
        let sid = [7; 16];
        let k = Key::random();
        let (params_text, wrapped) =
            wrap(&sid, &slot_key, &r, &Payload::Vaults(vec![(3, k.clone())])).unwrap();
        match unwrap(&sid, &ident, &params_text, &wrapped) {
            Some(Payload::Vaults(v)) => assert_eq!(v[0].1.expose(), k.expose()),
            _ => panic!("did not unwrap"),
        }
        assert!(params(&params_text).unwrap().verify(&slot_key, &sid));
        assert!(!params(&params_text).unwrap().verify(&Key::random(), &sid));
        // Another store id, or widened params, do not unwrap.
        assert!(unwrap(&[8; 16], &ident, &params_text, &wrapped).is_none());
        let widened = params_text.replace("[3]", "[3,4]");
        assert!(unwrap(&sid, &ident, &widened, &wrapped).is_none());
    }
}
