//! Rotation: `vaultfs write` of a new value, then reads through the mount until it shows;
//! the latency distribution, and how often the first read after the write was stale (it must
//! never be: the next open after a write returns sees the new value).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report::{Metric, Section};
use crate::setup::Env;
use crate::stats::quantile;
use crate::sys::check_stop;
use crate::{median, ms, progress, KC};

/// The rotation section.
pub fn rotation(env: &mut Env) -> Result<Section> {
    let cfg = env.cfg;
    let (plain, gc_mnt, big_db, v_big) = (&env.plain, &env.gc_mnt, &env.big_db, &env.v_big);
    let (vfs, vfs_mounted) = (&env.vfs, env.vfs_mounted);
    let (big_k_db, v_big_k) = (&env.big_k_db, env.v_big_k.clone());
    let notes = &mut env.notes;
    // ----- rotation: write, then read through the mount -----
    progress(&format!("rotation: {} writes", cfg.rotations));
    let mut rot = Section::new(
        "rotation",
        &format!(
            "Rotation: time from the write returning to the new value being read (N = {})",
            cfg.rotations
        ),
        &if v_big_k.is_some() {
            vec!["tmpfs", "gocryptfs", "vaultfs", KC]
        } else {
            vec!["tmpfs", "gocryptfs", "vaultfs"]
        },
        &[],
    );
    let rot_name = "e09999";
    let mut m_lat = Metric::new(
        "rotation_latency",
        "write → new value read: median [min–max]",
        "ms",
        false,
    );
    let mut m_p90 = Metric::new("rotation_p90", "write → new value read: p90", "ms", false);
    let mut m_p99 = Metric::new("rotation_p99", "write → new value read: p99", "ms", false);
    let mut m_worst = Metric::new(
        "rotation_worst",
        &format!("write → new value read: worst of {}", cfg.rotations),
        "ms",
        false,
    );
    let mut m_stale = Metric::new(
        "rotation_stale",
        "first read after the write was stale",
        "reads",
        false,
    );
    let mut m_write = Metric::new("rotation_write", "the write itself (median)", "ms", false);
    let mut rot_one =
        |name: &str, file: &Path, write: &mut dyn FnMut(&[u8]) -> Result<Duration>| -> Result<()> {
            let mut lat = Vec::with_capacity(cfg.rotations);
            let mut writes = Vec::with_capacity(cfg.rotations);
            let mut stale = 0u64;
            for i in 0..cfg.rotations {
                check_stop()?;
                let value = format!("rotated {i:06} {}\n", "x".repeat(i % 32)).into_bytes();
                writes.push(ms(write(&value)?));
                let t0 = Instant::now();
                let mut first = true;
                loop {
                    let got = std::fs::read(file)
                        .with_context(|| format!("{name}: read {}", file.display()))?;
                    if got == value {
                        break;
                    }
                    if first {
                        stale += 1;
                        first = false;
                    }
                    if t0.elapsed() > Duration::from_secs(10) {
                        bail!("{name}: rotation {i}: the new value was not visible after 10 s");
                    }
                    std::thread::yield_now();
                }
                lat.push(ms(t0.elapsed()));
            }
            let mut sorted = lat.clone();
            sorted.sort_by(f64::total_cmp);
            m_p90.push(name, quantile(&sorted, 0.90));
            m_p99.push(name, quantile(&sorted, 0.99));
            m_worst.push(name, *sorted.last().unwrap_or(&f64::NAN));
            m_stale.push(name, stale as f64);
            m_write.push(name, median(writes));
            for l in lat {
                m_lat.push(name, l);
            }
            Ok(())
        };
    let plain_write = |path: PathBuf| {
        move |value: &[u8]| -> Result<Duration> {
            let start = Instant::now();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, value)?;
            std::fs::rename(&tmp, &path)?;
            Ok(start.elapsed())
        }
    };
    let p = plain.join("big").join(rot_name);
    rot_one("tmpfs", &p, &mut plain_write(p.clone()))?;
    let p = gc_mnt.join("big").join(rot_name);
    rot_one("gocryptfs", &p, &mut plain_write(p.clone()))?;
    match (&vfs, vfs_mounted) {
        (Some(v), true) => {
            let addr = format!("big:/{rot_name}");
            let r = rot_one("vaultfs", &v_big.join(rot_name), &mut |value: &[u8]| {
                v.write(big_db, &addr, value)
            });
            if let Err(e) = r {
                check_stop()?;
                notes.push(format!("vaultfs rotation failed: {e:#}"));
            }
        }
        _ => notes.push("rotation: vaultfs left out (no vaultfs mount)".into()),
    }
    if let (Some(v), Some(dir)) = (&vfs, &v_big_k) {
        let addr = format!("big:/{rot_name}");
        let r = rot_one(KC, &dir.join(rot_name), &mut |value: &[u8]| {
            v.write(big_k_db, &addr, value)
        });
        if let Err(e) = r {
            check_stop()?;
            notes.push(format!("vaultfs-kc rotation failed: {e:#}"));
        }
        rot.notes.push(
            "vaultfs-kc: `vaultfs write` returns once the kernel-checked mount has applied the change and sent its invalidations (it acknowledges each change), so the write itself takes longer and the read after it needs no daemon round.".into(),
        );
    }
    rot.notes.push(
        "tmpfs and gocryptfs are written in-process (write a temporary file, rename it over the old one); vaultfs with `vaultfs write ADDR` (a new process), timed from its exit.".into(),
    );
    rot.metrics
        .extend([m_lat, m_p90, m_p99, m_worst, m_stale, m_write]);

    Ok(rot)
}
