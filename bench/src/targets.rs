//! The filesystems under test, each set up with the same files and torn down by `Drop`, so a
//! failing run leaves nothing mounted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs a command, failing with its stderr.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Writes `files` (relative name, content) under `dir`.
pub fn populate(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, value) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, value).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// A mount to undo on drop.
pub struct Mounted {
    /// Where the files are read.
    pub dir: PathBuf,
    unmount: Vec<String>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let (program, args) = self.unmount.split_first().expect("a command");
        let _ = Command::new(program)
            .args(args)
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}

/// A tmpfs holding `files`.
pub fn tmpfs(root: &Path, files: &[(String, Vec<u8>)]) -> Result<Mounted> {
    let dir = root.join("tmpfs");
    std::fs::create_dir_all(&dir)?;
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512m,mode=0755", "tmpfs"])
        .arg(&dir))?;
    let m = Mounted {
        dir,
        unmount: vec!["umount".into(), "-l".into()],
    };
    populate(&m.dir, files)?;
    Ok(m)
}

/// A gocryptfs mount (cipher dir on the run's disk directory) holding `files`.
pub fn gocryptfs(root: &Path, files: &[(String, Vec<u8>)]) -> Result<Mounted> {
    let cipher = root.join("gocryptfs.cipher");
    let dir = root.join("gocryptfs");
    std::fs::create_dir_all(&cipher)?;
    std::fs::create_dir_all(&dir)?;
    let pass = root.join("gocryptfs.pass");
    std::fs::write(&pass, "bench-passphrase\n")?;
    run(Command::new("gocryptfs")
        .args(["-init", "-q", "-passfile"])
        .arg(&pass)
        .arg(&cipher))?;
    run(Command::new("gocryptfs")
        .args(["-q", "-passfile"])
        .arg(&pass)
        .arg(&cipher)
        .arg(&dir))?;
    let m = Mounted {
        dir,
        unmount: vec!["fusermount3".into(), "-u".into(), "-z".into()],
    };
    populate(&m.dir, files)?;
    Ok(m)
}

/// A vaultfs store with a key file, driven through the real CLI.
pub struct Vaultfs {
    /// The binary.
    pub bin: PathBuf,
    /// The store file.
    pub store: PathBuf,
    /// The key file.
    pub key: PathBuf,
}

impl Vaultfs {
    /// A new store in `root/name` holding vault `v` with `files` (imported in one
    /// transaction).
    pub fn create(
        bin: &Path,
        root: &Path,
        name: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<Vaultfs> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let v = Vaultfs {
            bin: bin.to_owned(),
            store: dir.join("store.db"),
            key: dir.join("key"),
        };
        run(v.cmd().arg("keygen").arg(&v.key))?;
        run(v.cmd().arg("init"))?;
        run(v.cmd().args(["vault", "create", "v", "--mode", "0444"]))?;
        let src = dir.join("import");
        populate(&src, files)?;
        run(v.cmd().arg("import").arg(&src).arg("v"))?;
        std::fs::remove_dir_all(&src)?;
        Ok(v)
    }

    /// The CLI pointed at this store.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("VAULTFS_STORE", &self.store)
            .env("VAULTFS_KEY_FILE", &self.key)
            .env_remove("VAULTFS_LOG");
        c
    }

    /// Mounts vault `v` at `dir`; returns the mount and the time `vaultfs mount` took to
    /// return (it returns once the mount is ready).
    pub fn mount(&self, dir: &Path) -> Result<(Mounted, Duration)> {
        std::fs::create_dir_all(dir)?;
        let start = Instant::now();
        run(self.cmd().arg("mount").arg("v").arg(dir))?;
        let took = start.elapsed();
        Ok((
            Mounted {
                dir: dir.to_owned(),
                unmount: vec![self.bin.display().to_string(), "umount".into()],
            },
            took,
        ))
    }
}

/// The resident set of the daemon serving `mountpoint`, in KiB, found by its command line.
pub fn daemon_rss_kib(mountpoint: &Path) -> Result<u64> {
    let want = mountpoint.as_os_str().to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "mount") && args.last() == Some(&want) {
            let status = std::fs::read_to_string(path.join("status"))?;
            let line = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .context("no VmRSS")?;
            return Ok(line
                .split_whitespace()
                .nth(1)
                .context("bad VmRSS")?
                .parse()?);
        }
    }
    bail!("no daemon found for {}", mountpoint.display())
}
