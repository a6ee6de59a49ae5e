//! Read limits at open: each successful open of a secret with a limit is counted in the
//! store's local counts ([`OpenCounts`]) before its handle is handed out. The count is a write,
//! made on a store worker within the open's deadline; an open that cannot be counted in time
//! fails (EIO) rather than be served uncounted. Opens of secrets without a limit never write.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fuser::Errno;
use parking_lot::Mutex;
use vaultfs_store::{OpenCounts, VaultReader};

use crate::workers::Workers;

/// How long a count may wait on another process's count before the open fails.
const COUNT_BUSY: Duration = Duration::from_secs(2);

/// Open counts by (store file, vault name).
type CountsByVault = HashMap<(PathBuf, String), Arc<OpenCounts>>;

/// The counts of each store this process serves, opened at the first counted open.
fn counts_of(reader: &VaultReader) -> Result<Arc<OpenCounts>, String> {
    static OPEN: OnceLock<Mutex<CountsByVault>> = OnceLock::new();
    let key = (reader.store_path().clone(), reader.vault_name().to_owned());
    let mut open = OPEN.get_or_init(Default::default).lock();
    if let Some(c) = open.get(&key) {
        return Ok(c.clone());
    }
    let dir = vaultfs_store::default_state_dir()
        .ok_or("no state directory (set VAULTFS_STATE_DIR)".to_owned())?;
    let counts = Arc::new(
        reader
            .open_counts(&dir, COUNT_BUSY)
            .map_err(|e| e.to_string())?,
    );
    open.insert(key, counts.clone());
    Ok(counts)
}

/// The outcome of counting an open.
pub(crate) enum Counted {
    /// Counted: this was open number `n` of `max`.
    Yes {
        /// This open's number.
        #[allow(dead_code)] // for the audit's rule text, when it says which open this was
        n: u64,
    },
    /// The limit was spent already: the open is refused, and the secret hidden.
    Spent,
}

/// Counts one open of `(id, version)` against `max`, on a store worker until `deadline`.
pub(crate) fn count(
    reader: &Arc<VaultReader>,
    workers: &Workers,
    id: i64,
    version: i64,
    max: u64,
    deadline: Instant,
) -> Result<Counted, Errno> {
    let reader = reader.clone();
    let job = move || -> Result<Option<u64>, String> {
        let counts = counts_of(&reader)?;
        counts.take(id, version, max).map_err(|e| e.to_string())
    };
    match workers.run(deadline, job) {
        Ok(Ok(Some(n))) => Ok(Counted::Yes { n }),
        Ok(Ok(None)) => Ok(Counted::Spent),
        Ok(Err(e)) => {
            tracing::warn!("cannot count an open of a read-limited secret: {e}; refused");
            Err(Errno::EIO)
        }
        Err(_) => {
            tracing::debug!("an open of a read-limited secret could not be counted in time");
            Err(Errno::EIO)
        }
    }
}
