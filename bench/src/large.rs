//! Large secrets and templates, on a store of their own (so the small-file directories keep
//! exactly their 1,000 files):
//!
//! - sequential reads of 1, 4 and 16 MiB values, MB/s, warm (pages cached) and cold (the
//!   file's cached pages dropped before every read, so a FUSE filesystem decrypts again),
//!   through the same reader on tmpfs, gocryptfs and vaultfs, interleaved per repetition;
//! - template opens/s: a template with two placeholders against a plain 64-byte secret of the
//!   same mount, read by the same loop (open, read to EOF, close), interleaved.

use std::path::Path;

use anyhow::{Context, Result};

use crate::reader;
use crate::report::{Metric, Section};
use crate::setup::Env;
use crate::sys::check_stop;
use crate::targets;
use crate::{progress, rotated, KC};

/// Sizes of the large values, MiB.
pub const SIZES_MIB: [usize; 3] = [1, 4, 16];

/// The template: two placeholders, one line.
const TEMPLATE: &str = "user={{ large:/a | trim }} password={{ large:/b | trim }}\n";

/// `n` bytes that do not compress, the same on every target.
fn bulk(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ n as u64;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn name(mib: usize) -> String {
    format!("l{mib:02}m")
}

/// The large-value and template sections; `None` parts when vaultfs is not there.
pub fn large(env: &mut Env) -> Result<(Section, Option<Section>)> {
    let cfg = env.cfg;
    progress("large secrets: writing 1, 4 and 16 MiB files");
    let plain = env.plain.join("large");
    std::fs::create_dir_all(&plain)?;
    for mib in SIZES_MIB {
        std::fs::write(plain.join(name(mib)), bulk(mib << 20))?;
    }
    for n in ["a", "b", "p"] {
        std::fs::write(plain.join(n), targets::content(n))?;
    }
    let gc_dir = env.gc_mnt.join("large");
    targets::copy_tree(&plain, &gc_dir)?;
    check_stop()?;

    let mut dirs: Vec<(&str, std::path::PathBuf)> =
        vec![("tmpfs", plain.clone()), ("gocryptfs", gc_dir)];
    let mut vfs_dir = None;
    if env.vfs_mounted {
        let v = env.vfs.as_ref().expect("mounted");
        let db = env.fs.join("stores").join("large.db");
        let mp = env.mnt.join("vaultfs-large");
        let r = (|| -> Result<crate::sys::MountGuard> {
            let (took, how) = v.create_store(&db, "large", &plain, env.cfg.populate)?;
            progress(&format!(
                "filled large (1+4+16 MiB) in {:.2} s via {how}",
                took.as_secs_f64()
            ));
            if v.caps.template {
                v.template_set(&db, "large:/tpl", TEMPLATE)?;
            }
            v.mount(&db, "large", &mp).map(|(g, _)| g)
        })();
        match r {
            Ok(g) => {
                env.stack.0.push(g);
                dirs.push(("vaultfs", mp.clone()));
                vfs_dir = Some(mp);
            }
            Err(e) => {
                check_stop()?;
                env.notes
                    .push(format!("large secrets: vaultfs left out: {e:#}"));
            }
        }
    }
    // The kernel-checked mode: a store of its own without the template (which it refuses).
    if env.vfs_mounted && env.v_big_k.is_some() {
        let v = env.vfs.as_ref().expect("mounted");
        let db = env.fs.join("stores").join("large-k.db");
        let mp = env.mnt.join("vaultfs-kc-large");
        let r = v
            .create_store(&db, "large", &plain, env.cfg.populate)
            .and_then(|_| v.mount_kernel(&db, "large", &mp));
        match r {
            Ok((g, _)) => {
                env.stack.0.push(g);
                dirs.push((KC, mp));
            }
            Err(e) => {
                check_stop()?;
                env.notes
                    .push(format!("large secrets: vaultfs-kc left out: {e:#}"));
            }
        }
    }
    // Every target must serve the same bytes before anything is timed.
    for (t, dir) in &dirs {
        for mib in SIZES_MIB {
            let got = std::fs::read(dir.join(name(mib)))
                .with_context(|| format!("{t}: read {}", name(mib)))?;
            anyhow::ensure!(got == bulk(mib << 20), "{t}: {} differs", name(mib));
        }
    }

    // Six measurements per target and repetition: half a second each is plenty for MB/s.
    let dur = cfg.dur.min(std::time::Duration::from_millis(500));
    let mut cols = vec!["tmpfs", "gocryptfs", "vaultfs"];
    let mut ratios = vec![
        ("vaultfs ÷ gocryptfs", "vaultfs", "gocryptfs"),
        ("vaultfs ÷ tmpfs", "vaultfs", "tmpfs"),
    ];
    if dirs.iter().any(|(t, _)| *t == KC) {
        cols.push(KC);
        ratios.push(("vaultfs-kc ÷ tmpfs", KC, "tmpfs"));
        ratios.push(("vaultfs-kc ÷ vaultfs", KC, "vaultfs"));
    }
    let mut sec = Section::new(
        "large",
        &format!(
            "Large secrets: sequential read of one value, 128 KiB reads ({} repetitions of {:.1} s per size, median [min–max])",
            cfg.reps,
            dur.as_secs_f64()
        ),
        &cols,
        &ratios,
    );
    let mut metrics: Vec<(usize, bool, Metric)> = Vec::new();
    for cold in [true, false] {
        for mib in SIZES_MIB {
            let title = format!(
                "{mib} MiB, {}",
                if cold {
                    "cold (cache dropped before each read)"
                } else {
                    "warm (cached pages)"
                }
            );
            let id = format!("large_{mib}m_{}", if cold { "cold" } else { "warm" });
            metrics.push((mib, cold, Metric::new(&id, &title, "MB/s", true)));
        }
    }
    for rep in 0..cfg.reps {
        for (t, dir) in rotated(&dirs, rep) {
            for (mib, cold, m) in metrics.iter_mut() {
                check_stop()?;
                let path = reader::c_path(&dir.join(name(*mib)))?;
                let (bytes, secs) = reader::read_big(&path, *mib << 20, dur, *cold)?;
                m.push(t, bytes as f64 / secs / 1e6);
            }
        }
        for (_, _, m) in metrics.iter_mut() {
            for c in &cols {
                m.pad(c, rep + 1);
            }
        }
        progress(&format!(
            "large secrets: repetition {}/{} done",
            rep + 1,
            cfg.reps
        ));
    }
    sec.metrics.extend(metrics.into_iter().map(|(_, _, m)| m));
    sec.notes.push(
        "cold: `posix_fadvise(DONTNEED)` on the file before each read, so FUSE filesystems read and decrypt again; tmpfs pages are the file itself, so tmpfs stays the page-cache ceiling.".into(),
    );

    let tpl = match (vfs_dir, env.vfs.as_ref().is_some_and(|v| v.caps.template)) {
        (Some(dir), true) => Some(templates(env, &dir)?),
        (Some(_), false) => {
            env.notes
                .push("templates: the vaultfs binary has no `template` command".into());
            None
        }
        _ => None,
    };
    Ok((sec, tpl))
}

/// Template opens/s against a plain secret's, on the same mount, interleaved.
fn templates(env: &mut Env, dir: &Path) -> Result<Section> {
    let cfg = env.cfg;
    progress("templates: opens of a template against a plain secret");
    let cols = ["plain secret", "template"];
    let mut sec = Section::new(
        "template",
        &format!(
            "Templates: open + read + close of one file, 1 reader, on one vaultfs mount ({} repetitions of {:.1} s)",
            cfg.reps,
            cfg.dur.as_secs_f64()
        ),
        &cols,
        &[("template ÷ plain", "template", "plain secret")],
    );
    let mut m = Metric::new(
        "template_opens",
        "opens/s (template: 2 placeholders)",
        "ops/s",
        true,
    );
    let files = [
        ("plain secret", reader::c_path(&dir.join("p"))?),
        ("template", reader::c_path(&dir.join("tpl"))?),
    ];
    let trim = |n: &str| {
        String::from_utf8_lossy(&targets::content(n))
            .trim()
            .to_string()
    };
    let want = format!("user={} password={}\n", trim("a"), trim("b"));
    let got = std::fs::read(dir.join("tpl")).context("vaultfs: read the template")?;
    anyhow::ensure!(
        got == want.as_bytes(),
        "vaultfs: the template rendered wrong"
    );
    for rep in 0..cfg.reps {
        for (label, f) in rotated(&files, rep) {
            check_stop()?;
            let one = std::slice::from_ref(f);
            reader::read_pass(one, None)?;
            let s = reader::read_files(one, 1, cfg.dur, None)?;
            m.push(label, s.per_sec());
        }
        for c in cols {
            m.pad(c, rep + 1);
        }
    }
    sec.metrics.push(m);
    sec.notes.push(format!(
        "the template is `{}` (each input a 64-byte secret of the same vault); every open renders it on a store worker.",
        TEMPLATE.trim_end()
    ));
    Ok(sec)
}
