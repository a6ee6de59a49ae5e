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

fn show(cmd: &mut Command) -> Result<()> {
    let printable: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!("$ {}", printable.join(" "));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", printable[0]))?;
    anyhow::ensure!(
        status.success(),
        "{} failed ({status})",
        printable.join(" ")
    );
    Ok(())
}

/// Runs the demo in `dir` (a new temp dir by default).
pub fn demo(dir: Option<&Path>, keep: bool) -> Result<()> {
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            std::path::absolute(d)?
        }
        None => new_demo_dir()?,
    };
    let key_path = dir.join("key");
    let store_path = dir.join("store.db");
    let mountpoint = dir.join("mnt");
    anyhow::ensure!(
        !store_path.exists(),
        "{} already holds a demo store; pick another --dir",
        dir.display()
    );
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
    println!("demo store {} with vault `demo`", store_path.display());

    let exe = std::env::current_exe().context("cannot find the vaultfs binary")?;
    let vaultfs = || {
        let mut c = Command::new(&exe);
        c.arg("--store")
            .arg(&store_path)
            .arg("--key-file")
            .arg(&key_path);
        c
    };
    show(vaultfs().arg("mount").arg("demo").arg(&mountpoint))?;
    let explore = (|| -> Result<()> {
        show(Command::new("ls").arg("-lR").arg(&mountpoint))?;
        show(Command::new("cat").arg(mountpoint.join("nix-tokens")))?;
        show(vaultfs().arg("acl").arg("show").arg("demo:/db/password"))?;
        println!("$ printf 'rotated\\n' | vaultfs write demo:/db/password");
        let mut write = vaultfs()
            .arg("write")
            .arg("demo:/db/password")
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        use std::io::Write;
        write
            .stdin
            .take()
            .context("no stdin")?
            .write_all(b"rotated\n")?;
        anyhow::ensure!(write.wait()?.success(), "vaultfs write failed");
        show(Command::new("cat").arg(mountpoint.join("db/password")))?;
        Ok(())
    })();
    if keep && explore.is_ok() {
        println!(
            "\nThe demo stays mounted at {m}. Try:\n  ls -l {m}\n  vaultfs --store {s} --key-file {k} ls -l demo\n  printf new | vaultfs --store {s} --key-file {k} write demo:/nix-tokens; cat {m}/nix-tokens\nUnmount with:\n  vaultfs umount {m}",
            m = mountpoint.display(),
            s = store_path.display(),
            k = key_path.display()
        );
        return Ok(());
    }
    let unmounted = show(vaultfs().arg("umount").arg(&mountpoint));
    explore?;
    unmounted?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    println!("unmounted and removed {}", dir.display());
    Ok(())
}
