//! Where the store is and how it is unlocked: a key file, a passphrase file, or a prompt on the
//! terminal. Never argv, never an environment variable holding the secret itself.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vaultfs_store::{Credential, SecretBytes, Store, StoreError};

use crate::cli::Cli;
use crate::exit::usage;

/// The longest passphrase or key file read; a guard against pointing at a huge file by mistake.
const MAX_CREDENTIAL_LEN: u64 = 64 * 1024;

/// Set when the store lives in etcd: the commands then work on this local copy of it.
static STORE_OVERRIDE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes [`store_path`] answer `path` for the rest of the process (the etcd backend's local
/// copy of the store; set once, before any command runs).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub fn override_store_path(path: PathBuf) {
    let _ = STORE_OVERRIDE.set(path);
}

/// The store path: `--store`, `VAULTFS_STORE`, else the per-user or system default.
pub fn store_path(cli: &Cli) -> PathBuf {
    if let Some(p) = STORE_OVERRIDE.get() {
        return p.clone();
    }
    if let Some(p) = &cli.store {
        return p.clone();
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/vaultfs/store.db");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("vaultfs/store.db")
}

/// Reads up to [`MAX_CREDENTIAL_LEN`] bytes of `reader` into a buffer that is wiped on drop,
/// growing it without leaving stale copies behind (a plain `Vec` growth would free old
/// buffers still holding plaintext).
pub fn read_secret(mut reader: impl Read, limit: u64) -> std::io::Result<Option<SecretBytes>> {
    let mut buf = SecretBytes::new(Vec::with_capacity(4096));
    let mut chunk = zeroize::Zeroizing::new([0u8; 8192]);
    loop {
        let n = match reader.read(chunk.as_mut()) {
            Ok(0) => return Ok(Some(buf)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if (buf.len() + n) as u64 > limit {
            return Ok(None);
        }
        let v = buf.expose_mut();
        if v.len() + n > v.capacity() {
            let mut bigger = Vec::with_capacity((v.len() + n).next_power_of_two());
            bigger.extend_from_slice(v);
            buf = SecretBytes::new(bigger);
        }
        buf.expose_mut().extend_from_slice(&chunk[..n]);
    }
}

/// Every credential this process read, so the etcd backend can open the store copy again
/// after the command (to export what it changed) without asking twice. In memory only, wiped
/// on drop like any [`SecretBytes`].
#[cfg(feature = "etcd")]
static REMEMBERED: parking_lot::Mutex<Vec<(&'static str, SecretBytes, PathBuf)>> =
    parking_lot::Mutex::new(Vec::new());

fn remember(kind: &'static str, bytes: &SecretBytes, path: &Path) {
    #[cfg(feature = "etcd")]
    REMEMBERED
        .lock()
        .push((kind, bytes.clone(), path.to_owned()));
    #[cfg(not(feature = "etcd"))]
    let _ = (kind, bytes, path);
}

/// A credential as read, which (unlike a [`Credential`]) may move to another thread.
#[cfg(feature = "etcd")]
pub struct CredentialSource(&'static str, SecretBytes, PathBuf);

#[cfg(feature = "etcd")]
impl CredentialSource {
    /// Another copy (the bytes are wiped on drop in each).
    pub fn clone_of(&self) -> CredentialSource {
        CredentialSource(self.0, self.1.clone(), self.2.clone())
    }

    /// The credential again.
    pub fn credential(&self) -> Option<Credential> {
        let CredentialSource(kind, bytes, path) = self;
        match *kind {
            "key" => Some(Credential::KeyFile(bytes.clone())),
            "pass" => Some(Credential::Passphrase(bytes.clone())),
            _ => vaultfs_store::Identity::parse(bytes, path)
                .ok()
                .map(Credential::Identity),
        }
    }
}

/// The credentials read so far, newest first.
#[cfg(feature = "etcd")]
pub fn remembered_sources() -> Vec<CredentialSource> {
    REMEMBERED
        .lock()
        .iter()
        .rev()
        .map(|(kind, bytes, path)| CredentialSource(kind, bytes.clone(), path.clone()))
        .collect()
}

/// The credentials read so far, newest first.
#[cfg(feature = "etcd")]
pub fn remembered() -> Vec<Credential> {
    remembered_sources()
        .iter()
        .filter_map(CredentialSource::credential)
        .collect()
}

/// Reads a small private file (a key, a password) with the same checks as a key file: not
/// readable by others, owned by you or root.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub fn read_private_file(path: &Path, what: &str) -> Result<SecretBytes> {
    read_credential_file(path, what)
}

fn read_credential_file(path: &Path, what: &str) -> Result<SecretBytes> {
    let file = std::fs::File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    // Checked on the open file (fstat), so a swap of the path after the check changes nothing.
    let meta = file
        .metadata()
        .with_context(|| format!("{what} {}", path.display()))?;
    check_private(path, what, &meta)?;
    read_secret(file, MAX_CREDENTIAL_LEN)
        .with_context(|| format!("{what} {}", path.display()))?
        .ok_or_else(|| anyhow::anyhow!("{what} {}: larger than 64 KiB", path.display()))
}

/// The user running this command.
fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Refuses a credential file others can read or write, or one that belongs to another user,
/// the way ssh refuses such a private key: whoever can read it holds the store, and whoever can
/// write it (its owner, among others) can swap in their own key. Pipes and terminals (`<(...)`,
/// `/dev/stdin`) are private to the processes holding them and are not checked.
fn check_private(path: &Path, what: &str, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Ok(());
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        usage!(
            "{what} {} is accessible by group or others (mode {mode:04o}); fix it with `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    if meta.uid() != 0 && meta.uid() != euid() {
        usage!(
            "{what} {} belongs to uid {}, not to you (uid {}) or root; use a file of your own (`chown {} {}` as root)",
            path.display(),
            meta.uid(),
            euid(),
            euid(),
            path.display()
        );
    }
    Ok(())
}

/// Refuses a store whose directory anyone but its owner (you or root) can write, sticky bit or
/// not: another user could create `store.db-wal` or `store.db-shm` there before vaultfs does,
/// and SQLite would use them.
pub fn check_store_dir(store: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match store.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        // A missing directory is reported by whoever needs it (init creates it 0700).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot reach the store at {}", store.display()))
        }
    };
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        usage!(
            "store directory {} is writable by group or others (mode {mode:04o}), so another user could plant files next to the store; fix it with `chmod go-w {}` or move the store",
            dir.display(),
            dir.display()
        );
    }
    if meta.uid() != 0 && meta.uid() != euid() {
        usage!(
            "store directory {} belongs to uid {}, not to you (uid {}) or root, so that user could plant files next to the store; move the store",
            dir.display(),
            meta.uid(),
            euid()
        );
    }
    Ok(())
}

/// Reads a key file.
pub fn key_file(path: &Path) -> Result<Credential> {
    let bytes = read_credential_file(path, "key file")?;
    remember("key", &bytes, path);
    if bytes.len() < vaultfs_store::MIN_KEY_FILE_LEN {
        return Err(StoreError::BadKeyFile {
            path: path.to_owned(),
            reason: "shorter than 32 bytes; make one with `vaultfs keygen`",
        }
        .into());
    }
    Ok(Credential::KeyFile(bytes))
}

/// Reads a host key: an age identity file or an OpenSSH ed25519 private key.
pub fn identity(path: &Path) -> Result<Credential> {
    let bytes = read_credential_file(path, "identity")?;
    remember("id", &bytes, path);
    Ok(Credential::Identity(vaultfs_store::Identity::parse(
        &bytes, path,
    )?))
}

/// Reads a passphrase file: its first line, without the line ending.
pub fn passphrase_file(path: &Path) -> Result<Credential> {
    let mut bytes = read_credential_file(path, "passphrase file")?;
    let v = bytes.expose_mut();
    if let Some(end) = v.iter().position(|&b| b == b'\n') {
        v[end..].iter_mut().for_each(|b| *b = 0);
        v.truncate(end);
    }
    if v.last() == Some(&b'\r') {
        v.pop();
    }
    if v.is_empty() {
        usage!("passphrase file {}: empty passphrase", path.display());
    }
    remember("pass", &bytes, path);
    Ok(Credential::Passphrase(bytes))
}

fn prompt(text: &str) -> Result<SecretBytes> {
    crate::tty::prompt_hidden(text, "--key-file, --passphrase-file or --identity")
}

/// The credential that unlocks an existing store.
pub fn unlock_credential(cli: &Cli) -> Result<Credential> {
    if let Some(p) = &cli.key_file {
        return key_file(p);
    }
    if let Some(p) = &cli.passphrase_file {
        return passphrase_file(p);
    }
    if let Some(p) = &cli.identity {
        return identity(p);
    }
    let pass = prompt("vaultfs passphrase: ")?;
    if pass.is_empty() {
        usage!("empty passphrase");
    }
    remember("pass", &pass, Path::new("-"));
    Ok(Credential::Passphrase(pass))
}

/// A new passphrase, asked twice on the terminal.
pub fn new_passphrase() -> Result<Credential> {
    let first = prompt("new passphrase: ")?;
    if first.is_empty() {
        usage!("empty passphrase");
    }
    let second = prompt("repeat passphrase: ")?;
    if first.expose() != second.expose() {
        usage!("the passphrases differ");
    }
    remember("pass", &first, Path::new("-"));
    Ok(Credential::Passphrase(first))
}

/// Fails unless a file is at `path`, saying how to create one when nothing is there, and the
/// OS's reason (such as a directory the caller may not enter) otherwise; and unless its
/// directory passes [`check_store_dir`].
pub fn require_store(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(_) => check_store_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StoreError::Missing(path.to_owned()).into())
        }
        Err(e) => Err(e).with_context(|| format!("cannot reach the store at {}", path.display())),
    }
}

/// Opens and unlocks the store the command line names.
pub fn open_store(cli: &Cli) -> Result<Store> {
    let path = store_path(cli);
    // Check for the file before asking for a passphrase nobody can use.
    require_store(&path)?;
    let cred = unlock_credential(cli)?;
    let options = vaultfs_store::OpenOptions {
        allow_rollback: cli.allow_rollback,
        ..Default::default()
    };
    Ok(Store::open_with(&path, &cred, &options)?)
}
