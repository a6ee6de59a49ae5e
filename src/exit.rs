//! Exit codes, stable and documented in the README: 0 success, then the constants below.

use std::process::ExitCode;

use vaultfs_store::StoreError;

/// A runtime failure: not found, I/O, a failed mount.
pub const FAILURE: u8 = 1;
/// Bad usage or failed authentication: a malformed address, a wrong key or passphrase.
pub const USAGE_OR_AUTH: u8 = 2;
/// A row of the store failed authentication: tampering or corruption.
pub const INTEGRITY: u8 = 3;

/// An error in what the user asked for, as opposed to what happened while doing it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error chain: the first store or usage error in it decides.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            if e.is_auth() || e.is_usage() {
                return ExitCode::from(USAGE_OR_AUTH);
            }
            if e.is_tamper() {
                return ExitCode::from(INTEGRITY);
            }
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return ExitCode::from(USAGE_OR_AUTH);
        }
    }
    ExitCode::from(FAILURE)
}

/// Shorthand for returning a usage error.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::exit::UsageError(format!($($arg)*))))
    };
}
pub(crate) use usage;
