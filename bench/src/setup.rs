//! Setup shared by the steady-state workloads: the plain files on a tmpfs, a gocryptfs copy,
//! and the vaultfs stores, filled and mounted. Whatever fails on the vaultfs side leaves it out
//! with a note, so the baselines are still measured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::sys::{self, check_stop};
use crate::targets::{self, Gocryptfs, Vaultfs};
use crate::{progress, Config, Stack, Target, BIG, SMALL};

/// Everything the workloads share. Mounts are undone when it is dropped (`stack`).
pub struct Env<'a> {
    pub cfg: &'a Config,
    pub fs: PathBuf,
    pub mnt: PathBuf,
    pub plain: PathBuf,
    pub gc: Gocryptfs,
    pub gc_mnt: PathBuf,
    pub gc_ready: Duration,
    pub small_db: PathBuf,
    pub big_db: PathBuf,
    pub v_big: PathBuf,
    pub vfs: Option<Vaultfs>,
    pub vfs_stores: bool,
    pub vfs_mounted: bool,
    /// The kernel-checked mounts' stores (the same files, a store of their own so their
    /// writers wait only for their own mounts) and big directory, when mounted.
    pub small_k_db: PathBuf,
    pub big_k_db: PathBuf,
    pub v_big_k: Option<PathBuf>,
    pub v_small_k: Option<PathBuf>,
    pub v_small: PathBuf,
    pub tgts: Vec<Target>,
    pub fills: Vec<serde_json::Value>,
    pub notes: Vec<String>,
    pub stack: Stack,
}

impl Env<'_> {
    /// Unmounts everything but the scratch tmpfs, noting failures.
    pub fn unmount_all_but_tmpfs(&mut self) {
        while let Some(mut g) = self.stack.0.pop() {
            if g.label == "tmpfs" {
                self.stack.0.push(g);
                break;
            }
            if let Err(e) = g.unmount() {
                self.notes.push(format!("unmount: {e:#}"));
            }
        }
    }
}

/// Mounts the scratch tmpfs, writes the files, and mounts gocryptfs and vaultfs.
pub fn setup(cfg: &Config) -> Result<Env<'_>> {
    let w = &cfg.work;
    sys::set_log_dir(&w.join("logs"))?;
    let fs = w.join("fs");
    let mnt = w.join("mnt");
    let mut stack = Stack::default();
    stack.0.push(sys::mount_tmpfs(&fs, "4g")?);
    let mut notes: Vec<String> = Vec::new();

    progress(&format!(
        "setting up in {} (tmpfs; stores and gocryptfs ciphertext live there too)",
        w.display()
    ));
    let plain = fs.join("plain");
    targets::write_files(&plain.join("small"), "f", SMALL, 4)?;
    targets::write_files(&plain.join("big"), "e", BIG, 5)?;
    check_stop()?;
    let gc = Gocryptfs::init(&fs.join("gocryptfs-cipher"), &fs.join("gocryptfs-pass"))?;
    let gc_mnt = mnt.join("gocryptfs");
    let (g, gc_ready) = gc.mount(&gc_mnt)?;
    stack.0.push(g);
    targets::copy_tree(&plain, &gc_mnt)?;
    check_stop()?;

    let stores = fs.join("stores");
    std::fs::create_dir_all(&stores)?;
    let small_db = stores.join("small.db");
    let big_db = stores.join("big.db");
    let small_k_db = stores.join("small-k.db");
    let big_k_db = stores.join("big-k.db");
    let mut fills: Vec<serde_json::Value> = Vec::new();
    let mut vfs: Option<Vaultfs> = None;
    if !cfg.bin.exists() {
        notes.push(format!(
            "vaultfs left out: {} does not exist (build it, or set VAULTFS_BIN)",
            cfg.bin.display()
        ));
    } else {
        match Vaultfs::new(&cfg.bin, &fs.join("key")) {
            Ok(v) => vfs = Some(v),
            Err(e) => notes.push(format!("vaultfs left out: {e:#}")),
        }
    }
    let mut vfs_stores = false;
    if let Some(v) = &vfs {
        progress(&format!(
            "vaultfs {} ({}): mount {}, import {}",
            v.caps.version,
            v.bin.display(),
            if v.caps.mount { "yes" } else { "NO" },
            if v.caps.import { "yes" } else { "no" }
        ));
        let mut fill = |db: &Path, vault: &str, src: &Path, n: usize| -> Result<()> {
            let (took, how) = v.create_store(db, vault, src, cfg.populate)?;
            progress(&format!(
                "filled {vault} ({n} secrets) in {:.2} s via {how}",
                took.as_secs_f64()
            ));
            fills.push(
                json!({"vault": vault, "secrets": n, "secs": took.as_secs_f64(), "how": how}),
            );
            Ok(())
        };
        match fill(&small_db, "small", &plain.join("small"), SMALL)
            .and_then(|()| fill(&big_db, "big", &plain.join("big"), BIG))
        {
            Ok(()) => vfs_stores = true,
            Err(e) => notes.push(format!(
                "vaultfs left out: filling its stores failed: {e:#}"
            )),
        }
    }
    check_stop()?;

    let mut tgts = vec![
        Target::new("tmpfs", &plain.join("small"), &plain.join("big"))?,
        Target::new("gocryptfs", &gc_mnt.join("small"), &gc_mnt.join("big"))?,
    ];
    let v_small = mnt.join("vaultfs-small");
    let v_big = mnt.join("vaultfs-big");
    let mut vfs_mounted = false;
    if let (Some(v), true) = (&vfs, vfs_stores) {
        let mounted = v.mount(&small_db, "small", &v_small).and_then(|(g1, _)| {
            stack.0.push(g1);
            let (g2, _) = v.mount(&big_db, "big", &v_big)?;
            stack.0.push(g2);
            Target::new("vaultfs", &v_small, &v_big)
        });
        match mounted {
            Ok(t) => {
                tgts.push(t);
                vfs_mounted = true;
            }
            Err(e) => {
                let msg = format!(
                    "vaultfs mount is not available, so the mount workloads show only the baselines: {e:#}"
                );
                progress(&msg);
                notes.push(msg);
            }
        }
    }
    check_stop()?;
    // The kernel-checked mode: the same files in stores of their own, mounted with
    // --kernel-checks, read by the same reader as the others.
    let (mut v_small_k, mut v_big_k) = (None, None);
    if let (Some(v), true) = (&vfs, vfs_mounted) {
        let small_k = mnt.join("vaultfs-kc-small");
        let big_k = mnt.join("vaultfs-kc-big");
        let made = (|| -> Result<Target> {
            anyhow::ensure!(
                v.caps.kernel_checks,
                "the binary has no `mount --kernel-checks`"
            );
            v.create_store(&small_k_db, "small", &plain.join("small"), cfg.populate)?;
            v.create_store(&big_k_db, "big", &plain.join("big"), cfg.populate)?;
            let (g1, _) = v.mount_kernel(&small_k_db, "small", &small_k)?;
            stack.0.push(g1);
            let (g2, _) = v.mount_kernel(&big_k_db, "big", &big_k)?;
            stack.0.push(g2);
            Target::new(crate::KC, &small_k, &big_k)
        })();
        match made {
            Ok(t) => {
                tgts.push(t);
                v_small_k = Some(small_k);
                v_big_k = Some(big_k);
            }
            Err(e) => {
                check_stop()?;
                notes.push(format!("kernel-checked vaultfs left out: {e:#}"));
            }
        }
    }
    check_stop()?;
    Ok(Env {
        cfg,
        fs,
        mnt,
        plain,
        gc,
        gc_mnt,
        gc_ready,
        small_db,
        big_db,
        v_big,
        vfs,
        vfs_stores,
        vfs_mounted,
        small_k_db,
        big_k_db,
        v_big_k,
        v_small_k,
        v_small,
        tgts,
        fills,
        notes,
        stack,
    })
}
