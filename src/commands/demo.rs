//! `demo`.
use std::path::Path;

use anyhow::Result;

/// The quick start.
pub fn demo(_dir: Option<&Path>, _keep: bool) -> Result<()> {
    anyhow::bail!("demo is not built yet")
}
