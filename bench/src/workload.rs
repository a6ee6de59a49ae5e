//! The readers: tight loops over libc calls, so the harness measures the filesystem and not
//! itself (checked by running them on tmpfs, where they reach hundreds of thousands of ops/s).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Paths as C strings, made once so the loop does no allocation.
pub fn c_paths(paths: &[PathBuf]) -> Vec<CString> {
    paths
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).expect("no NUL in paths"))
        .collect()
}

/// open + read everything + close, `rounds` times over `files`; returns ops/s.
pub fn read_files(files: &[CString], rounds: usize) -> Result<f64> {
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    for _ in 0..rounds {
        for f in files {
            read_one(f, &mut buf)?;
        }
    }
    Ok((rounds * files.len()) as f64 / start.elapsed().as_secs_f64())
}

fn read_one(path: &CString, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: path is NUL-terminated; buf is valid for its length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            bail!("open {path:?}: {}", std::io::Error::last_os_error());
        }
        let mut total = 0;
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n < 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                bail!("read {path:?}: {e}");
            }
            if n == 0 {
                break;
            }
            total += n as usize;
        }
        libc::close(fd);
        Ok(total)
    }
}

/// The same with `threads` readers, each over its own slice of `files`; total ops/s.
pub fn read_files_parallel(files: &[CString], rounds: usize, threads: usize) -> Result<f64> {
    let files = Arc::new(files.to_vec());
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (files, barrier) = (files.clone(), barrier.clone());
            std::thread::spawn(move || -> Result<usize> {
                let mine: Vec<&CString> = files.iter().skip(t).step_by(threads).collect();
                let mut buf = vec![0u8; 4096];
                barrier.wait();
                for _ in 0..rounds {
                    for f in &mine {
                        read_one(f, &mut buf)?;
                    }
                }
                Ok(rounds * mine.len())
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut ops = 0;
    for h in handles {
        ops += h
            .join()
            .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

/// stat of every file, `rounds` times (warm); ops/s.
pub fn stat_files(files: &[CString], rounds: usize) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..rounds {
        for f in files {
            // SAFETY: f is NUL-terminated; st is a valid out-parameter.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::stat(f.as_ptr(), &mut st) } != 0 {
                bail!("stat {f:?}: {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok((rounds * files.len()) as f64 / start.elapsed().as_secs_f64())
}

/// Time to list `dir` completely, in ms; checks the count.
pub fn readdir_ms(dir: &Path, expected: usize) -> Result<f64> {
    let start = Instant::now();
    let n = std::fs::read_dir(dir)
        .with_context(|| format!("readdir {}", dir.display()))?
        .count();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        n == expected,
        "{}: {n} entries, expected {expected}",
        dir.display()
    );
    Ok(ms)
}

/// Reads one file whole.
pub fn read_whole(path: &CString) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = read_one(path, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
