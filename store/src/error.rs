//! The store's typed errors. Messages name vaults, paths and entries, never a value.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No store at the given path.
    #[error("no store at {0} (create one with `vaultfs init`)")]
    Missing(PathBuf),
    /// A store already exists where one was to be created.
    #[error("a store already exists at {0}; refusing to overwrite it")]
    AlreadyInitialized(PathBuf),
    /// The file is not a vaultfs store (or is too damaged to tell).
    #[error("{0} is not a vaultfs store")]
    NotAStore(PathBuf),
    /// The store's format is newer than this build understands.
    #[error("{path} has store format {found}; this vaultfs understands {supported}")]
    UnsupportedFormat {
        /// The store file.
        path: PathBuf,
        /// The format found in the file.
        found: i64,
        /// The format this build writes.
        supported: i64,
    },
    /// The store was made by an older vaultfs and must be upgraded before use.
    #[error("{path} has store format {found}; run `vaultfs migrate` to upgrade it to format {supported}")]
    NeedsMigration {
        /// The store file.
        path: PathBuf,
        /// The format found in the file.
        found: i64,
        /// The format this build writes.
        supported: i64,
    },
    /// A sealed record (or value) carries a version this build does not know: it fails closed
    /// rather than half-understand a newer writer's record.
    #[error("{what} has record version {found}; this vaultfs understands version {supported} (written by a newer vaultfs?)")]
    UnsupportedRecord {
        /// Which record.
        what: String,
        /// The version found.
        found: u64,
        /// The version this build writes.
        supported: u64,
    },
    /// The store's authenticated head is older than one this process (or this host's state
    /// file) has already seen: an older copy of the store was put back.
    #[error("the store at {path} was rolled back: its head is {found}, but {seen} was seen before (restore the newest copy, or pass --allow-rollback to accept this one)")]
    Rollback {
        /// The store file.
        path: PathBuf,
        /// The head found in the store.
        found: i64,
        /// The highest head seen before.
        seen: i64,
    },
    /// The credential being added already unlocks a key slot.
    #[error("this key already unlocks key slot {0}; refusing to add it twice")]
    DuplicateKey(i64),
    /// No key slot accepted the credential.
    #[error("wrong key or passphrase")]
    WrongKey,
    /// A key file that cannot be a vaultfs key.
    #[error("key file {path}: {reason}")]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A sealed row failed authentication: it was modified, swapped or corrupted.
    #[error("{what} failed authentication: the store was tampered with or corrupted")]
    Tampered {
        /// Which row, by vault/path where known, else by id.
        what: String,
    },
    /// An address or name that vaultfs refuses.
    #[error("invalid address {input:?}: {reason}")]
    InvalidAddress {
        /// What the user typed (an address holds names, never values).
        input: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// No vault of that name.
    #[error("no vault named {0:?}")]
    NoSuchVault(String),
    /// A vault of that name exists.
    #[error("vault {0:?} already exists")]
    VaultExists(String),
    /// The vault still holds entries.
    #[error("vault {0:?} is not empty (use --force to remove it with everything in it)")]
    VaultNotEmpty(String),
    /// No entry at that path.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The path names a directory where a secret was expected.
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// A path component is a secret where a directory was expected.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// The target already exists.
    #[error("{0}: already exists")]
    Exists(String),
    /// The directory still holds entries.
    #[error("{0}: directory not empty (use -r)")]
    DirectoryNotEmpty(String),
    /// A rename that would put a directory inside itself, or the like.
    #[error("{0}")]
    InvalidOperation(String),
    /// A template that cannot be parsed or rendered (names the template and placeholder,
    /// never a value).
    #[error("template {path}: {source}")]
    Template {
        /// The template's address.
        path: String,
        /// What is wrong.
        source: crate::template::TemplateError,
    },
    /// A secret larger than the store accepts.
    #[error("{path}: secret is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// The secret's address.
        path: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The last key slot cannot be removed.
    #[error("refusing to remove the last key slot: the store would become unreadable")]
    LastKeySlot,
    /// No key slot with that id.
    #[error("no key slot {0}")]
    NoSuchKeySlot(i64),
    /// The store is busy (another writer holds it) for longer than the bounded wait.
    #[error("the store at {0} is busy (locked by another process); try again")]
    Busy(PathBuf),
    /// The disk or filesystem refused a write.
    #[error("cannot write to the store at {path}: {reason}")]
    WriteFailed {
        /// The store file.
        path: PathBuf,
        /// SQLite's or the OS's reason (never holds a value).
        reason: String,
    },
    /// The store file could not be opened or read.
    #[error("cannot open the store at {path}: {reason}")]
    OpenFailed {
        /// The store file.
        path: PathBuf,
        /// SQLite's or the OS's reason (never holds a value).
        reason: String,
    },
    /// A public key `key add --recipient` cannot use.
    #[error("recipient {input:?}: {reason}")]
    BadRecipient {
        /// The start of what was given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// An identity file (`--identity`) that cannot be used.
    #[error("identity {path}: {reason}")]
    BadIdentity {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The key given opens a scoped slot that does not include this vault.
    #[error("this key does not open vault {0:?}")]
    NotInScope(String),
    /// A write to a store this handle may only read: a scoped key, or a replica of a bundle.
    #[error("{path} is read-only here: {reason}")]
    ReadOnly {
        /// The store.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A bundle line that does not parse or verify; nothing was applied.
    #[error("bundle {file}, line {line}: {reason}; nothing was changed")]
    BadBundle {
        /// The bundle file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other SQLite failure.
    #[error("store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// File system failure around the store file.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Short for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Turns a SQLite error into the most telling store error for `path`.
    pub(crate) fn from_sqlite(path: &std::path::Path, err: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode;
        if let rusqlite::Error::SqliteFailure(code, _) = &err {
            match code.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    return StoreError::Busy(path.to_owned())
                }
                ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                    return StoreError::NotAStore(path.to_owned())
                }
                ErrorCode::DiskFull => {
                    return StoreError::WriteFailed {
                        path: path.to_owned(),
                        reason: "the disk is full".into(),
                    }
                }
                ErrorCode::ReadOnly => {
                    return StoreError::WriteFailed {
                        path: path.to_owned(),
                        reason: "the store file or its directory is read-only".into(),
                    }
                }
                ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::PermissionDenied => {
                    return StoreError::OpenFailed {
                        path: path.to_owned(),
                        reason: err.to_string(),
                    }
                }
                _ => {}
            }
        }
        StoreError::Sqlite(err)
    }

    /// Gives a SQLite error wrapped in a store error the same treatment as
    /// [`from_sqlite`](Self::from_sqlite); other errors pass through.
    pub(crate) fn from_sqlite_in(path: &std::path::Path, err: StoreError) -> StoreError {
        match err {
            StoreError::Sqlite(inner) => StoreError::from_sqlite(path, inner),
            other => other,
        }
    }

    /// Whether this error means the credential was wrong (exit code 2 in the CLI).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            StoreError::WrongKey
                | StoreError::BadKeyFile { .. }
                | StoreError::BadIdentity { .. }
                | StoreError::NotInScope(_)
        )
    }

    /// Whether this error means a sealed row failed authentication.
    pub fn is_tamper(&self) -> bool {
        matches!(
            self,
            StoreError::Tampered { .. }
                | StoreError::Rollback { .. }
                | StoreError::BadBundle { .. }
        )
    }

    /// Whether this error is the user's input being refused (exit code 2 in the CLI).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StoreError::InvalidAddress { .. }
                | StoreError::BadRecipient { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::Template {
                    source: crate::template::TemplateError::Syntax { .. },
                    ..
                }
        )
    }
}
