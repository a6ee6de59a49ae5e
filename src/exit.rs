//! Exit codes, stable and documented in the README. One enum: the number a process exits with
//! and the number a forked daemon reports to its parent are the same value, never mapped back.

use std::process::ExitCode;

use vaultfs_store::StoreError;

/// Why vaultfs exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done.
    Success = 0,
    /// A runtime failure: not found, I/O, a failed mount.
    Failure = 1,
    /// Bad usage or failed authentication: a malformed address, a wrong key or passphrase.
    UsageOrAuth = 2,
    /// A row of the store failed authentication: tampering or corruption.
    Integrity = 3,
}

impl Exit {
    /// The number, as the daemon's readiness pipe carries it.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code for an error chain: the first store or usage error in it decides.
    pub fn of(err: &anyhow::Error) -> Exit {
        for cause in err.chain() {
            if let Some(e) = cause.downcast_ref::<StoreError>() {
                if e.is_auth() || e.is_usage() {
                    return Exit::UsageOrAuth;
                }
                if e.is_tamper() {
                    return Exit::Integrity;
                }
            }
            if cause.downcast_ref::<UsageError>().is_some() {
                return Exit::UsageOrAuth;
            }
        }
        Exit::Failure
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// An error in what the user asked for, as opposed to what happened while doing it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand for returning a usage error.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::exit::UsageError(format!($($arg)*))))
    };
}
pub(crate) use usage;
