//! `demo`: the quick start. A throwaway store with sample secrets, mounted by the real daemon,
//! listed and read, so a new user sees the whole path work in one command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use vaultfs_store::{AclOverride, Address, Credential, KdfParams, SecretBytes, Store, VaultAcl};

/// Fake values only: the demo prints them.
const SAMPLES: &[(&str, &str)] = &[
    (
        "/nix-tokens",
        "extra-access-tokens = github.com=ghp_DEMO0000000000000000000000000000000000\n",
    ),
    (
        "/netrc",
        "machine api.example.com login demo password demo-password-123\n",
    ),
    (
        "/aws/credentials",
        "[default]\naws_access_key_id = AKIADEMO000000000000\naws_secret_access_key = demo/secret/key\n",
    ),
    ("/db/password", "correct horse battery staple\n"),
];

fn new_demo_dir() -> Result<PathBuf> {
    let mut suffix = [0u8; 4];
    getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("vaultfs-demo-{name}"));
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Quotes `word` for a POSIX shell when it needs it, so printed lines paste as they are.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+-,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn q(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// How the transcript spells this binary: `vaultfs` when that is what PATH finds, else its
/// full path (e.g. under `cargo run`), so every printed line runs as it is.
fn vaultfs_word(exe: &Path) -> String {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("vaultfs"))
            .find(|p| p.is_file())
    });
    match on_path.and_then(|p| p.canonicalize().ok()) {
        Some(found) if exe.canonicalize().is_ok_and(|e| e == found) => "vaultfs".to_owned(),
        _ => q(exe),
    }
}

/// Prints `line`, runs it with `sh -c` (so what is printed is exactly what runs), and prints
/// its output indented under it.
fn run_line(line: &str, env: &[(&str, &Path)]) -> Result<()> {
    println!("{line}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run sh")?;
    for text in String::from_utf8_lossy(&out.stdout).lines() {
        println!("{}", format!("    {text}").trim_end());
    }
    anyhow::ensure!(out.status.success(), "`{line}` failed ({})", out.status);
    Ok(())
}

/// What to remove when the demo ends without `--keep`, even when it fails half-way.
struct Cleanup {
    dir: PathBuf,
    /// Whether the demo made `dir` (then all of it goes), or only the files in it.
    made_dir: bool,
    mountpoint: PathBuf,
    /// Names of [`DEMO_FILES`] that were there before: never the demo's to remove.
    existed: Vec<&'static str>,
    armed: bool,
}

/// What the demo creates in its directory.
const DEMO_FILES: [&str; 6] = [
    "key",
    "store.db",
    "store.db-wal",
    "store.db-shm",
    "store.db.signal",
    "mnt",
];

impl Cleanup {
    fn run(&mut self) -> Result<()> {
        self.armed = false;
        let mounted = vaultfs_fs::mountinfo::mounted_at(&self.mountpoint)
            .ok()
            .flatten()
            .is_some_and(|e| e.is_vaultfs());
        if mounted {
            crate::commands::mount::umount(&self.mountpoint)?;
        }
        if self.made_dir {
            std::fs::remove_dir_all(&self.dir)
        } else {
            for name in DEMO_FILES {
                let path = self.dir.join(name);
                if self.existed.contains(&name) {
                    continue;
                }
                let _ = if path.is_dir() {
                    std::fs::remove_dir(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
            Ok(())
        }
        .with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.run() {
                eprintln!("vaultfs: demo: {e:#}");
            }
        }
    }
}

/// Runs the demo in `dir` (a new temp dir by default).
pub fn demo(dir: Option<&Path>, keep: bool) -> Result<()> {
    let (dir, made_dir) = match dir {
        Some(d) => {
            let existed = d.exists();
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            (std::path::absolute(d)?, !existed)
        }
        None => (new_demo_dir()?, true),
    };
    let key_path = dir.join("key");
    let store_path = dir.join("store.db");
    let mountpoint = dir.join("mnt");
    anyhow::ensure!(
        !store_path.exists(),
        "{} already holds a demo store; pick another --dir",
        dir.display()
    );
    let mut cleanup = Cleanup {
        dir: dir.clone(),
        made_dir,
        mountpoint: mountpoint.clone(),
        existed: DEMO_FILES
            .into_iter()
            .filter(|name| dir.join(name).symlink_metadata().is_ok())
            .collect(),
        armed: !keep,
    };
    crate::commands::keys::keygen(&key_path)?;
    let key = std::fs::read(&key_path).context("cannot read the demo key")?;
    let cred = Credential::KeyFile(SecretBytes::new(key));
    let mut store = Store::create(&store_path, &cred, KdfParams::default())?;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let owner = vaultfs_fs::nss::user_name(uid).unwrap_or_else(|| uid.to_string());
    let group = vaultfs_fs::nss::group_name(gid).unwrap_or_else(|| gid.to_string());
    store.create_vault(
        "demo",
        VaultAcl {
            owner,
            group,
            mode: 0o400,
        },
    )?;
    for (path, value) in SAMPLES {
        let addr = Address::parse_entry(&format!("demo:{path}"))?;
        store.write(&addr, value.as_bytes())?;
    }
    let db = Address::parse_entry("demo:/db")?;
    store.set_acl(
        &db,
        &AclOverride {
            mode: Some(0o440),
            ..AclOverride::default()
        },
    )?;
    drop(store);

    let exe = std::env::current_exe().context("cannot find the vaultfs binary")?;
    let vaultfs = vaultfs_word(&exe);
    let (m, s, k) = (q(&mountpoint), q(&store_path), q(&key_path));
    let env = [
        ("VAULTFS_STORE", store_path.as_path()),
        ("VAULTFS_KEY_FILE", key_path.as_path()),
    ];
    println!(
        "# a throwaway store with sample secrets in vault `demo`; every line below runs as printed"
    );
    println!("export VAULTFS_STORE={s} VAULTFS_KEY_FILE={k}");
    run_line(&format!("{vaultfs} mount demo {m}"), &env)?;
    run_line(&format!("ls -lR {m}"), &env)?;
    run_line(&format!("cat {m}/nix-tokens"), &env)?;
    run_line(&format!("{vaultfs} acl show demo:/db/password"), &env)?;
    run_line(
        &format!("printf 'rotated\\n' | {vaultfs} write demo:/db/password"),
        &env,
    )?;
    run_line(&format!("cat {m}/db/password"), &env)?;
    if keep {
        println!("# the demo stays mounted at {m}; explore it:");
        println!("ls -l {m}; {vaultfs} ls -l demo");
        println!("# clean up:");
        println!("{vaultfs} umount {m}");
        if made_dir {
            println!("rm -r {}", q(&dir));
        } else {
            println!("rm -r {m} {k} {s}");
        }
        return Ok(());
    }
    println!("{vaultfs} umount {m}");
    cleanup.run()?;
    println!("# unmounted and removed {}", q(&dir));
    Ok(())
}
