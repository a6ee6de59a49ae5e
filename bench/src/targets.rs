//! The filesystems under test: plain file trees (tmpfs), gocryptfs and vaultfs, each set up
//! and mounted through its own command-line tools, as a user would.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys::{self, MountGuard};

/// The 64-byte value of the secret called `name`: the same bytes on every target.
pub fn content(name: &str) -> Vec<u8> {
    // FNV-1a of the name, stretched into hex: distinct, deterministic values.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut s = format!("{name}=");
    while s.len() < 63 {
        h ^= h >> 29;
        h = h.wrapping_mul(0xbf58476d1ce4e5b9);
        s.push_str(&format!("{h:016x}"));
    }
    s.truncate(63);
    s.push('\n');
    s.into_bytes()
}

/// Writes `count` files named `{prefix}{i:0width$}` into `dir` (created), each [`content`].
pub fn write_files(dir: &Path, prefix: &str, count: usize, width: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for i in 0..count {
        let name = format!("{prefix}{i:0width$}");
        std::fs::write(dir.join(&name), content(&name))
            .with_context(|| format!("cannot write {}", dir.join(&name).display()))?;
    }
    Ok(())
}

/// Copies the regular files of a tree (directories recursively); returns the files copied.
pub fn copy_tree(from: &Path, to: &Path) -> Result<usize> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut n = 0;
    for e in std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            n += copy_tree(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), &dst)
                .with_context(|| format!("cannot copy to {}", dst.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// A gocryptfs cipher directory and its password file.
pub struct Gocryptfs {
    pub cipher: PathBuf,
    pub passfile: PathBuf,
}

impl Gocryptfs {
    pub fn version() -> Option<String> {
        let out = Command::new("gocryptfs").arg("-version").output().ok()?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()?
                .to_string(),
        )
    }

    /// `gocryptfs -init` with default settings (scrypt N=2^16, AES-GCM).
    pub fn init(cipher: &Path, passfile: &Path) -> Result<Gocryptfs> {
        std::fs::create_dir_all(cipher)?;
        std::fs::write(passfile, "vaultfs-bench gocryptfs password\n")?;
        sys::run_ok(
            Command::new("gocryptfs")
                .args(["-init", "-q", "-passfile"])
                .arg(passfile)
                .arg(cipher),
            "gocryptfs-init",
        )?;
        Ok(Gocryptfs {
            cipher: cipher.to_owned(),
            passfile: passfile.to_owned(),
        })
    }

    /// Mounts (gocryptfs forks into the background once the mount is ready); the time the
    /// command took.
    pub fn mount(&self, mountpoint: &Path) -> Result<(MountGuard, Duration)> {
        std::fs::create_dir_all(mountpoint)?;
        // -nosyslog: the daemon's messages go to the log file instead.
        let ran = sys::run_logged(
            Command::new("gocryptfs")
                .args(["-q", "-nosyslog", "-passfile"])
                .arg(&self.passfile)
                .arg(&self.cipher)
                .arg(mountpoint),
            "gocryptfs-mount",
            Duration::from_secs(60),
        )?;
        let daemon = sys::find_pids(Path::new("/usr/bin/gocryptfs"), mountpoint.as_os_str())
            .first()
            .copied()
            .or_else(|| {
                which("gocryptfs")
                    .and_then(|g| sys::find_pids(&g, mountpoint.as_os_str()).first().copied())
            });
        let guard = MountGuard::new(
            mountpoint,
            "gocryptfs",
            daemon,
            vec![
                "fusermount3".into(),
                "-u".into(),
                mountpoint.as_os_str().to_owned(),
            ],
        );
        if !ran.ok || !sys::is_mounted(mountpoint) {
            drop(guard);
            bail!("gocryptfs mount failed:\n{}", sys::log_tail(&ran.log, 5));
        }
        Ok((guard, ran.took))
    }
}

pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// What the vaultfs binary under test offers.
#[derive(Clone, Debug)]
pub struct Capabilities {
    pub version: String,
    pub mount: bool,
    pub import: bool,
    pub template: bool,
    /// `vaultfs mount --kernel-checks` (the kernel-checked, no-open mode).
    pub kernel_checks: bool,
}

/// The vaultfs binary under test and the key file that unlocks every bench store.
pub struct Vaultfs {
    pub bin: PathBuf,
    pub key: PathBuf,
    pub caps: Capabilities,
}

/// How a vaultfs store is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Populate {
    /// `vaultfs import` if the binary has it, else the store crate.
    Auto,
    /// `vaultfs import` (one transaction).
    Cli,
    /// The linked `vaultfs-store` crate, one `Store::write` (one transaction) per secret.
    Store,
}

impl Vaultfs {
    pub fn probe(bin: &Path) -> Result<Capabilities> {
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let has = |sub: &str| {
            Command::new(bin)
                .args([sub, "--help"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let mount_help = Command::new(bin)
            .args(["mount", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        Ok(Capabilities {
            version,
            mount: has("mount") && has("umount"),
            import: has("import"),
            template: has("template"),
            kernel_checks: mount_help.contains("--kernel-checks"),
        })
    }

    /// Makes the key file with `vaultfs keygen`.
    pub fn new(bin: &Path, key: &Path) -> Result<Vaultfs> {
        let caps = Vaultfs::probe(bin)?;
        sys::run_ok(Command::new(bin).arg("keygen").arg(key), "vaultfs-keygen")?;
        Ok(Vaultfs {
            bin: bin.to_owned(),
            key: key.to_owned(),
            caps,
        })
    }

    fn cmd(&self, store: &Path) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("VAULTFS_STORE", store)
            .env("VAULTFS_KEY_FILE", &self.key)
            .env_remove("RUST_LOG");
        c
    }

    fn owner() -> (String, String) {
        // SAFETY: getpwuid/getgrgid return static storage or NULL; read at once, single-threaded.
        unsafe {
            let pw = libc::getpwuid(libc::geteuid());
            let gr = libc::getgrgid(libc::getegid());
            let name =
                |p: *const libc::c_char| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
            (
                if pw.is_null() {
                    "root".into()
                } else {
                    name((*pw).pw_name)
                },
                if gr.is_null() {
                    "root".into()
                } else {
                    name((*gr).gr_name)
                },
            )
        }
    }

    /// A new store at `store` holding vault `vault` with every file under `src` (paths kept);
    /// returns how long filling it took and how it was done.
    pub fn create_store(
        &self,
        store: &Path,
        vault: &str,
        src: &Path,
        how: Populate,
    ) -> Result<(Duration, &'static str)> {
        let use_cli = match how {
            Populate::Auto => self.caps.import,
            Populate::Cli => {
                anyhow::ensure!(
                    self.caps.import,
                    "{} has no `import` command",
                    self.bin.display()
                );
                true
            }
            Populate::Store => false,
        };
        let (owner, group) = Vaultfs::owner();
        if use_cli {
            sys::run_ok(self.cmd(store).arg("init"), "vaultfs-init")?;
            sys::run_ok(
                self.cmd(store)
                    .args([
                        "vault", "create", vault, "--owner", &owner, "--group", &group,
                    ])
                    .args(["--mode", "0400"]),
                "vaultfs-vault-create",
            )?;
            let start = Instant::now();
            sys::run_ok(
                self.cmd(store).arg("import").arg(src).arg(vault),
                "vaultfs-import",
            )?;
            return Ok((start.elapsed(), "vaultfs import (one transaction)"));
        }
        use vaultfs_store::{Address, Credential, KdfParams, SecretBytes, Store, VaultAcl};
        let key = std::fs::read(&self.key)?;
        let cred = Credential::KeyFile(SecretBytes::new(key));
        let mut s = Store::create(store, &cred, KdfParams::default())?;
        s.create_vault(
            vault,
            VaultAcl {
                owner,
                group,
                mode: 0o400,
            },
        )?;
        let mut files = Vec::new();
        collect(src, "", &mut files)?;
        let start = Instant::now();
        for (rel, path) in files {
            let addr = Address::parse_entry(&format!("{vault}:/{rel}"))?;
            s.write(&addr, &std::fs::read(&path)?)?;
            sys::check_stop()?;
        }
        Ok((
            start.elapsed(),
            "vaultfs-store crate, Store::write per secret",
        ))
    }

    /// `vaultfs mount VAULT MOUNTPOINT`, which returns once the mount is ready; the guard
    /// runs `vaultfs umount`.
    pub fn mount(&self, store: &Path, vault: &str, mp: &Path) -> Result<(MountGuard, Duration)> {
        self.mount_with(store, vault, mp, &[])
    }

    /// `vaultfs mount --kernel-checks VAULT MOUNTPOINT`.
    pub fn mount_kernel(
        &self,
        store: &Path,
        vault: &str,
        mp: &Path,
    ) -> Result<(MountGuard, Duration)> {
        if !self.caps.kernel_checks {
            bail!(
                "{} has no `mount --kernel-checks` (vaultfs {})",
                self.bin.display(),
                self.caps.version
            );
        }
        self.mount_with(store, vault, mp, &["--kernel-checks"])
    }

    /// `vaultfs mount EXTRA... VAULT MOUNTPOINT`.
    fn mount_with(
        &self,
        store: &Path,
        vault: &str,
        mp: &Path,
        extra: &[&str],
    ) -> Result<(MountGuard, Duration)> {
        if !self.caps.mount {
            bail!(
                "{} has no `mount` command (vaultfs {}): vaultfs is left out",
                self.bin.display(),
                self.caps.version
            );
        }
        std::fs::create_dir_all(mp)?;
        let ran = sys::run_logged(
            self.cmd(store).arg("mount").args(extra).arg(vault).arg(mp),
            "vaultfs-mount",
            Duration::from_secs(120),
        )?;
        let daemon = sys::find_pids(&self.bin, mp.as_os_str()).first().copied();
        let guard = MountGuard::new(
            mp,
            "vaultfs",
            daemon,
            vec![
                self.bin.clone().into_os_string(),
                OsString::from("umount"),
                mp.as_os_str().to_owned(),
            ],
        );
        if !ran.ok || !sys::is_mounted(mp) {
            drop(guard);
            bail!(
                "`vaultfs mount {vault} {}` failed: {}",
                mp.display(),
                sys::log_tail(&ran.log, 3)
            );
        }
        Ok((guard, ran.took))
    }

    /// `vaultfs write ADDR` with `value` on stdin; how long the command took.
    pub fn write(&self, store: &Path, addr: &str, value: &[u8]) -> Result<Duration> {
        let start = Instant::now();
        let mut child = self
            .cmd(store)
            .args(["write", addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run vaultfs write")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(value)
            .context("vaultfs write: stdin")?;
        let out = child.wait_with_output()?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "vaultfs write {addr} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }

    /// `vaultfs ARGS` (no stdin); how long the command took.
    pub fn run(&self, store: &Path, args: &[&str]) -> Result<Duration> {
        let start = Instant::now();
        let out = self
            .cmd(store)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run vaultfs {}", args.join(" ")))?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "vaultfs {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }

    /// `vaultfs template set ADDR` with `text` on stdin.
    pub fn template_set(&self, store: &Path, addr: &str, text: &str) -> Result<()> {
        let mut child = self
            .cmd(store)
            .args(["template", "set", addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run vaultfs template set")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .context("vaultfs template set: stdin")?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "vaultfs template set {addr} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `vaultfs cat ADDR`: the value and how long the command took.
    pub fn cat(&self, store: &Path, addr: &str) -> Result<(Vec<u8>, Duration)> {
        let start = Instant::now();
        let out = self
            .cmd(store)
            .args(["cat", addr])
            .stdin(Stdio::null())
            .output()
            .context("cannot run vaultfs cat")?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "vaultfs cat {addr} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((out.stdout, took))
    }
}

/// Every regular file under `dir` as (path relative to `dir` with `/`, full path).
fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if e.file_type()?.is_dir() {
            collect(&e.path(), &rel, out)?;
        } else {
            out.push((rel, e.path()));
        }
    }
    Ok(())
}

/// `cat FILE` as a separate process (the baseline for `vaultfs cat`).
pub fn cat_file(path: &Path) -> Result<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let out = Command::new("cat")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run cat")?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("cat {} failed", path.display());
    }
    Ok((out.stdout, took))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_64_bytes_and_distinct() {
        let a = content("f0001");
        let b = content("f0002");
        assert_eq!(a.len(), 64);
        assert_eq!(b.len(), 64);
        assert_ne!(a, b);
        assert_eq!(a, content("f0001"));
        assert!(a.starts_with(b"f0001="));
    }
}
