//! `vaultfs import`: a directory tree into a vault, all or nothing.

use crate::common::TestStore;

#[test]
fn imports_a_tree_and_follows_file_symlinks() {
    let ts = TestStore::new();
    ts.vault("app", &[]);
    let src = ts.dir.path().join("src");
    std::fs::create_dir_all(src.join("db")).unwrap();
    std::fs::write(src.join("token"), b"t0k").unwrap();
    std::fs::write(src.join("db/password"), b"\x00binary\xff").unwrap();
    // sops-nix and agenix expose secrets as symlinks into a generation directory.
    std::fs::write(src.join(".real"), b"linked").unwrap();
    std::os::unix::fs::symlink(src.join(".real"), src.join("link")).unwrap();
    let out = ts.run(&["import", src.to_str().unwrap(), "app:/imported"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("imported 4 secret(s)"));
    assert_eq!(ts.cat("app:/imported/token"), b"t0k");
    assert_eq!(ts.cat("app:/imported/db/password"), b"\x00binary\xff");
    assert_eq!(ts.cat("app:/imported/link"), b"linked");
}

#[test]
fn a_bad_file_imports_nothing() {
    let ts = TestStore::new();
    ts.vault("app", &[]);
    let src = ts.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    // A file vaultfs cannot import, found after a good one: nothing may be written.
    let fifo = src.join("z-fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = ts.run(&["import", src.to_str().unwrap(), "app"], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("z-fifo"), "{err}");
    assert!(ts.ok(&["ls", "app"]).is_empty(), "nothing imported");
}
