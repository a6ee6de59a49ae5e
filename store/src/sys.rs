//! The few OS calls std does not wrap, through nix's safe wrappers.

use std::path::Path;

/// The effective user id.
pub(crate) fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether the filesystem holding `dir` is mounted read-only (`ST_RDONLY`), asked of the
/// directory so that no file of SQLite's is opened outside SQLite: closing any descriptor of a
/// file drops every POSIX lock this process holds on it, SQLite's included.
pub(crate) fn read_only_filesystem(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir)
        .is_ok_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}
