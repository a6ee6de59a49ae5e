//! `serve`.
use std::path::Path;

use anyhow::Result;

use crate::cli::Cli;

/// Serves a config.
pub fn serve(_cli: &Cli, _config: &Path, _check: bool) -> Result<()> {
    anyhow::bail!("serve is not built yet")
}
