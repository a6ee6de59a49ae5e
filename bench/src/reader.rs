//! The reader: tight loops of raw syscalls (open/read/close, stat, readdir) over pre-built
//! C paths, so that the client costs as little as possible and the filesystem is what is
//! measured. Each loop runs for a fixed wall-clock duration and counts completed operations.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys::stopped;

/// Completed operations over a measured time.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub ops: u64,
    pub secs: f64,
}

impl Sample {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    /// Milliseconds per operation.
    pub fn ms_per_op(&self) -> f64 {
        self.secs * 1e3 / self.ops as f64
    }
}

/// How often (in operations) the loops look at the clock and the stop flag.
const CHECK_EVERY: u64 = 32;

pub fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{}: NUL byte", p.display()))
}

/// The regular files directly in `dir`, sorted by name, as C paths.
pub fn list_files(dir: &Path) -> Result<Vec<CString>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    names.sort();
    names.iter().map(|p| c_path(p)).collect()
}

fn os_err(what: &str, path: &CStr) -> anyhow::Error {
    let e = std::io::Error::last_os_error();
    anyhow::anyhow!("{what} {}: {e}", path.to_string_lossy())
}

/// open + read to EOF + close; returns the bytes read.
pub fn read_whole(path: &CStr, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: path is NUL-terminated; buf is valid for buf.len() bytes.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(os_err("open", path));
        }
        let mut total = 0usize;
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n < 0 {
                let e = os_err("read", path);
                libc::close(fd);
                return Err(e);
            }
            if n == 0 {
                break;
            }
            total += n as usize;
        }
        if libc::close(fd) != 0 {
            return Err(os_err("close", path));
        }
        Ok(total)
    }
}

/// One untimed whole-file read of every file (to warm caches before a measurement).
pub fn read_pass(files: &[CString], expect_len: Option<usize>) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    for f in files {
        let got = read_whole(f, &mut buf)?;
        if let Some(want) = expect_len {
            anyhow::ensure!(
                got == want,
                "{}: read {got} bytes, expected {want}",
                f.to_string_lossy()
            );
        }
    }
    Ok(())
}

/// One untimed stat of every file.
pub fn stat_pass(files: &[CString]) -> Result<()> {
    for f in files {
        // SAFETY: the path is NUL-terminated and st is a valid out-pointer.
        let rc = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::stat(f.as_ptr(), &mut st)
        };
        if rc != 0 {
            return Err(os_err("stat", f));
        }
    }
    Ok(())
}

/// One reader thread: whole-file reads over `files`, starting at `offset`, until `deadline`.
fn read_loop(
    files: &[CString],
    offset: usize,
    expect_len: Option<usize>,
    deadline: Instant,
) -> Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = files.len();
    let mut ops = 0u64;
    let mut i = offset % n;
    loop {
        let got = read_whole(&files[i], &mut buf)?;
        if let Some(want) = expect_len {
            if got != want {
                bail!(
                    "{}: read {got} bytes, expected {want}",
                    files[i].to_string_lossy()
                );
            }
        }
        ops += 1;
        i += 1;
        if i == n {
            i = 0;
        }
        if ops % CHECK_EVERY == 0 && (Instant::now() >= deadline || stopped()) {
            return Ok(ops);
        }
    }
}

/// Whole-file reads by `threads` concurrent readers for `dur`: total operations and the
/// wall time from the common start to the last reader's end.
pub fn read_files(
    files: &[CString],
    threads: usize,
    dur: Duration,
    expect_len: Option<usize>,
) -> Result<Sample> {
    anyhow::ensure!(!files.is_empty(), "no files to read");
    if threads <= 1 {
        let start = Instant::now();
        let ops = read_loop(files, 0, expect_len, start + dur)?;
        return Ok(Sample {
            ops,
            secs: start.elapsed().as_secs_f64(),
        });
    }
    let barrier = Barrier::new(threads + 1);
    let start_cell = std::sync::OnceLock::<Instant>::new();
    let results: Vec<Result<(u64, Instant)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                let start_cell = &start_cell;
                s.spawn(move || {
                    barrier.wait();
                    barrier.wait();
                    let start = *start_cell.get().expect("start is set before the release");
                    let ops = read_loop(files, t * files.len() / threads, expect_len, start + dur)?;
                    Ok((ops, Instant::now()))
                })
            })
            .collect();
        // Every thread is spawned and parked; fix the start, then release them together.
        barrier.wait();
        let _ = start_cell.set(Instant::now());
        barrier.wait();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("reader panicked")))
            })
            .collect()
    });
    let start = *start_cell.get().expect("set above");
    let mut ops = 0;
    let mut end = start;
    for r in results {
        let (o, e) = r?;
        ops += o;
        end = end.max(e);
    }
    Ok(Sample {
        ops,
        secs: (end - start).as_secs_f64(),
    })
}

/// Sequential whole-file reads of one (large) file for `dur`, with a 128 KiB buffer (as `cat`
/// uses). `cold`: before each read the file's cached pages are dropped (`posix_fadvise`
/// DONTNEED), so a FUSE filesystem decrypts again; on tmpfs the pages are the file, so the
/// call changes nothing there. Returns the bytes read and the time taken.
pub fn read_big(path: &CStr, expect: usize, dur: Duration, cold: bool) -> Result<(u64, f64)> {
    let mut buf = vec![0u8; 128 * 1024];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut reads = 0u32;
    // At least two reads, so that one slow first read does not stand alone.
    while reads < 2 || (start.elapsed() < dur && !stopped()) {
        if cold {
            drop_cache(path)?;
        }
        let got = read_whole(path, &mut buf)?;
        anyhow::ensure!(
            got == expect,
            "{}: read {got} bytes, expected {expect}",
            path.to_string_lossy()
        );
        bytes += got as u64;
        reads += 1;
    }
    Ok((bytes, start.elapsed().as_secs_f64()))
}

/// Drops the clean cached pages of `path`.
fn drop_cache(path: &CStr) -> Result<()> {
    // SAFETY: path is NUL-terminated; the fd is closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(os_err("open", path));
        }
        libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED);
        libc::close(fd);
    }
    Ok(())
}

/// stat(2) of every file in turn for `dur`.
pub fn stat_files(files: &[CString], dur: Duration) -> Result<Sample> {
    anyhow::ensure!(!files.is_empty(), "no files to stat");
    let start = Instant::now();
    let deadline = start + dur;
    let mut ops = 0u64;
    let mut i = 0;
    loop {
        // SAFETY: the path is NUL-terminated and st is a valid out-pointer.
        let rc = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::stat(files[i].as_ptr(), &mut st)
        };
        if rc != 0 {
            return Err(os_err("stat", &files[i]));
        }
        ops += 1;
        i = (i + 1) % files.len();
        if ops % CHECK_EVERY == 0 && (Instant::now() >= deadline || stopped()) {
            break;
        }
    }
    Ok(Sample {
        ops,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// One full listing (opendir, readdir to the end, closedir); returns the entries other than
/// `.` and `..`.
pub fn list_once(dir: &CStr) -> Result<usize> {
    // SAFETY: dir is NUL-terminated; the DIR handle is used only between opendir and closedir,
    // and each dirent only before the next readdir.
    unsafe {
        let d = libc::opendir(dir.as_ptr());
        if d.is_null() {
            return Err(os_err("opendir", dir));
        }
        let mut n = 0usize;
        loop {
            *libc::__errno_location() = 0;
            let ent = libc::readdir64(d);
            if ent.is_null() {
                let errno = *libc::__errno_location();
                libc::closedir(d);
                if errno != 0 {
                    bail!(
                        "readdir {}: {}",
                        dir.to_string_lossy(),
                        std::io::Error::from_raw_os_error(errno)
                    );
                }
                return Ok(n);
            }
            let name = CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes();
            if name != b"." && name != b".." {
                n += 1;
            }
        }
    }
}

/// Full listings of `dir`, back to back, for `dur` (at least one).
pub fn readdir(dir: &CStr, dur: Duration, expect: usize) -> Result<Sample> {
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        let n = list_once(dir)?;
        if n != expect {
            bail!(
                "{}: listed {n} entries, expected {expect}",
                dir.to_string_lossy()
            );
        }
        ops += 1;
        if start.elapsed() >= dur || stopped() {
            break;
        }
    }
    Ok(Sample {
        ops,
        secs: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_count_and_check() {
        let dir = std::env::temp_dir().join(format!("vaultfs-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..10 {
            std::fs::write(dir.join(format!("f{i}")), [b'x'; 64]).unwrap();
        }
        let files = list_files(&dir).unwrap();
        assert_eq!(files.len(), 10);
        let d = Duration::from_millis(20);
        assert!(read_files(&files, 1, d, Some(64)).unwrap().ops > 0);
        assert!(read_files(&files, 4, d, Some(64)).unwrap().ops > 0);
        assert!(read_files(&files, 1, d, Some(63)).is_err());
        read_pass(&files, Some(64)).unwrap();
        assert!(read_pass(&files, Some(65)).is_err());
        stat_pass(&files).unwrap();
        assert!(stat_files(&files, d).unwrap().ops > 0);
        let c = c_path(&dir).unwrap();
        assert!(readdir(&c, d, 10).unwrap().ops > 0);
        assert!(readdir(&c, d, 11).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
