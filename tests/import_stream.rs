//! `vaultfs import` streams: memory stays flat whatever the number of files, and a failure
//! late in the walk still writes nothing.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use crate::common::TestStore;

/// Runs `vaultfs ARGS` and returns its exit status, stderr and peak RSS in KiB (the kernel's
/// `ru_maxrss` of the child, from `wait4`).
// The child is reaped by wait4, which std does not know about.
#[allow(clippy::zombie_processes)]
fn run_measured(ts: &TestStore, args: &[&str]) -> (ExitStatus, String, i64) {
    let mut child = ts
        .cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vaultfs");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our unwaited child; both out-parameters are valid.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    (
        ExitStatus::from_raw(status),
        reader.join().unwrap(),
        usage.ru_maxrss,
    )
}

/// `dirs` × `per_dir` files of about 40 bytes under `root`.
fn make_tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let value = format!("value-of-{d:03}-{f:04}-padded-to-about-40-bytes");
            std::fs::write(dir.join(format!("s{f:04}")), value).unwrap();
        }
    }
}

/// A temp dir on tmpfs, where 200,000 files are quick to make and to read.
fn tmpfs_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vaultfs-import-")
        .tempdir_in("/dev/shm")
        .expect("a temp dir in /dev/shm")
}

#[test]
fn importing_200k_files_keeps_memory_flat() {
    let ts = TestStore::new();
    ts.vault("bulk", &[]);
    let src = tmpfs_dir();
    make_tree(src.path(), 200, 1000);
    let (status, stderr, rss_kib) =
        run_measured(&ts, &["import", src.path().to_str().unwrap(), "bulk"]);
    eprintln!("import of 200,000 files: peak RSS {} MiB", rss_kib / 1024);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("imported 200000 secret(s)"), "{stderr}");
    // Not a terminal: no progress lines, only the result.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        rss_kib < 100 * 1024,
        "peak RSS {} MiB (limit 100 MiB)",
        rss_kib / 1024
    );
    assert_eq!(
        ts.cat("bulk:/d199/s0999"),
        b"value-of-199-0999-padded-to-about-40-bytes"
    );
}

#[test]
fn a_failure_at_the_last_file_leaves_the_vault_unchanged() {
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/d000/s0000", b"before");
    let src = tmpfs_dir();
    make_tree(src.path(), 2, 1000);
    let before = ts.ok(&["ls", "app:/d000"]);
    // Found last (names sort after every other), after 2,000 files went into the transaction.
    // Root reads any mode, so the failures are a dangling symlink (fails at the walk) and a
    // file whose read fails (/proc/self/mem at offset 0 answers EIO).
    for (name, target) in [
        ("zz-dangling", src.path().join("nowhere")),
        ("zz-unreadable", "/proc/self/mem".into()),
    ] {
        let bad = src.path().join(name);
        std::os::unix::fs::symlink(&target, &bad).unwrap();
        let out = ts.run(&["import", src.path().to_str().unwrap(), "app"], b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(name), "{err}");
        assert!(err.contains("nothing was written"), "{err}");
        assert_eq!(ts.cat("app:/d000/s0000"), b"before", "{name}");
        assert_eq!(ts.ok(&["ls", "app:/d000"]), before, "{name}");
        assert!(ts.run(&["cat", "app:/d001/s0000"], b"").status.code() != Some(0));
        std::fs::remove_file(&bad).unwrap();
    }
}
