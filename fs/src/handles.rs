//! Open file handles: each bound to one entry, the version it opened and the caller it was
//! opened for, holding that version's ciphertext. A read decrypts only the chunks it returns,
//! from the handle alone: it never asks the store for "the newest value", so a handle can
//! never read a value its opener was not allowed to open, and a reader gets exactly one
//! complete value, the one current at its open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fuser::{FileAttr, FileHandle, INodeNo};
use parking_lot::RwLock;
use vaultfs_store::{SealedValue, SecretBytes, StoreError};

use crate::access::Caller;

/// One open file.
#[derive(Debug)]
pub struct OpenFile {
    /// The inode it was opened through.
    pub ino: INodeNo,
    /// The entry's row id.
    pub id: i64,
    /// The content opened: the secret's version, or the template's rendering number
    /// ([`Node::content`](crate::view::Node::content)).
    pub version: i64,
    /// Who opened it (for logs; the descriptor itself is the capability from then on, as on
    /// any filesystem).
    pub caller: Caller,
    /// The attributes at open, for `fstat` on this handle.
    pub attr: FileAttr,
    /// What reads return.
    pub value: Content,
}

/// The bytes behind a handle.
#[derive(Debug)]
pub enum Content {
    /// A secret's version, still sealed: reads decrypt only the chunks they return.
    Sealed(std::sync::Arc<SealedValue>),
    /// A template rendered at open, wiped when the handle closes.
    Rendered(SecretBytes),
}

impl Content {
    /// The bytes in `[offset, offset + size)`, clamped to the content.
    pub fn read(&self, offset: u64, size: usize) -> Result<SecretBytes, StoreError> {
        match self {
            Content::Sealed(v) => v.read(offset, size),
            Content::Rendered(bytes) => {
                let b = bytes.expose();
                let start = offset.min(b.len() as u64) as usize;
                let end = start.saturating_add(size).min(b.len());
                Ok(SecretBytes::new(b[start..end].to_vec()))
            }
        }
    }
}

/// The table of open handles.
#[derive(Debug, Default)]
pub struct Handles {
    next: AtomicU64,
    open: RwLock<HashMap<u64, Arc<OpenFile>>>,
}

impl Handles {
    /// Registers `file` and returns its handle number (never 0, never reused).
    pub fn insert(&self, file: OpenFile) -> FileHandle {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.write().insert(fh, Arc::new(file));
        FileHandle(fh)
    }

    /// The file behind `fh`.
    pub fn get(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        self.open.read().get(&fh.0).cloned()
    }

    /// Any open file of inode `ino`. The kernel asks for the attributes of an inode without
    /// naming a handle (fstat), and an outdated version's inode lives on only in its handles.
    pub fn any_of(&self, ino: INodeNo) -> Option<Arc<OpenFile>> {
        self.open.read().values().find(|f| f.ino == ino).cloned()
    }

    /// Forgets `fh`; its ciphertext is freed when the last in-flight read ends.
    pub fn remove(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        self.open.write().remove(&fh.0)
    }
}
