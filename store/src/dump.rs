//! Keeping key pages out of core dumps. Processes also set `PR_SET_DUMPABLE=0`, so no dump is
//! written at all; this holds even if something (a debugger attached by root, a future change)
//! turns dumps back on.
#![allow(unsafe_code)]

/// Marks `len` bytes at `ptr` (page-aligned, owned by the caller) `MADV_DONTDUMP`. Best effort:
/// a kernel that refuses changes nothing else.
pub(crate) fn exclude_from_core_dumps(ptr: *const u8, len: usize) {
    // SAFETY: madvise(MADV_DONTDUMP) changes no memory content and no mapping's access; the
    // range is a live allocation of the caller's.
    unsafe {
        libc::madvise(ptr.cast_mut().cast(), len, libc::MADV_DONTDUMP);
    }
}
