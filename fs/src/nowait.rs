//! The crate's one `unsafe` call: `preadv2(RWF_NOWAIT)`, which nix does not wrap. A request
//! thread reads the store's change signal with it, so the read is answered from the page cache
//! or not at all: it never waits for the store's disk (a frozen filesystem would hold the
//! thread, and with it every request queued behind it).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Reads up to `buf.len()` bytes at `offset` if they are in the page cache; `Err` (EAGAIN,
/// or EOPNOTSUPP where the filesystem cannot say) when reading them would wait for I/O.
pub fn read_cached(file: &File, buf: &mut [u8], offset: i64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which is valid for writes of `buf.len()` bytes and
    // outlives the call; the fd is open for the call's duration (borrowed from `file`).
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_cached_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345678").unwrap();
        let f = File::open(&path).unwrap();
        let mut buf = [0u8; 8];
        // Just written, so cached; a filesystem without RWF_NOWAIT support says so instead.
        match read_cached(&f, &mut buf, 0) {
            Ok(n) => assert_eq!(&buf[..n], b"12345678"),
            Err(e) => assert!(matches!(
                e.raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP)
            )),
        }
    }
}
