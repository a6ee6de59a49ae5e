//! `mount`, `umount`.
use std::path::Path;

use anyhow::Result;

use crate::cli::Cli;

/// Mounts `source` at `mountpoint`.
pub fn mount(_cli: &Cli, _source: &str, _mountpoint: &Path, _foreground: bool) -> Result<()> {
    anyhow::bail!("mount is not built yet")
}

/// Unmounts.
pub fn umount(_mountpoint: &Path) -> Result<()> {
    anyhow::bail!("umount is not built yet")
}
