//! The few OS calls std does not wrap. Kept apart so the rest of the crate stays free of unsafe.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The effective user id.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether the filesystem holding `dir` is mounted read-only (`ST_RDONLY`), asked of the
/// directory so that no file of SQLite's is opened outside SQLite: closing any descriptor of a
/// file drops every POSIX lock this process holds on it, SQLite's included.
pub(crate) fn read_only_filesystem(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statvfs is a valid out-parameter; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    rc == 0 && (st.f_flag & libc::ST_RDONLY) != 0
}
