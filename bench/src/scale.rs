//! The scale workload: a vault of many secrets against the small one and gocryptfs, each
//! mounted afresh per repetition.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use crate::reader;
use crate::report::{Metric, Section};
use crate::sys::{self, check_stop};
use crate::targets::{self, Gocryptfs, Vaultfs};
use crate::{fmt_count, mib, ms, progress, rotated, thousands, Config, BIG, SMALL, VALUE_LEN};

/// The scale workload: a vault of `cfg.scale` secrets against the 1,000-secret vault and
/// gocryptfs, each mounted afresh in every repetition.
#[allow(clippy::too_many_arguments)]
pub fn scale(
    cfg: &Config,
    v: &Vaultfs,
    gc: &Gocryptfs,
    fs: &Path,
    mnt: &Path,
    small_db: &Path,
    fills: &mut Vec<serde_json::Value>,
    notes: &mut Vec<String>,
) -> Result<Section> {
    progress(&format!("scale: writing {} files", cfg.scale));
    let src = fs.join("scale");
    // The same 1,000 small files at the root, and the rest in directories of 1,000.
    targets::write_files(&src, "f", SMALL, 4)?;
    let mut left = cfg.scale - SMALL;
    let mut d = 0;
    while left > 0 {
        let n = left.min(1000);
        targets::write_files(&src.join(format!("d{d:03}")), "g", n, 3)?;
        left -= n;
        d += 1;
        check_stop()?;
    }
    let scale_db = fs.join("stores").join("scale.db");
    let (took, how) = v.create_store(&scale_db, "scale", &src, cfg.populate)?;
    progress(&format!(
        "filled scale ({} secrets) in {:.2} s via {how}",
        cfg.scale,
        took.as_secs_f64()
    ));
    fills.push(
        json!({"vault": "scale", "secrets": cfg.scale, "secs": took.as_secs_f64(), "how": how}),
    );

    let big_label = format!("vaultfs {}k", cfg.scale / 1000);
    let tmpfs_label = format!("tmpfs {}k", cfg.scale / 1000);
    let cols = [
        "vaultfs 1k",
        big_label.as_str(),
        "gocryptfs",
        tmpfs_label.as_str(),
    ];
    let mut sec = Section::new(
        "scale",
        &format!(
            "Scale: a vault of {} secrets against the {}-secret vault (each mounted afresh per repetition; reads of the same {} files)",
            thousands(cfg.scale),
            thousands(SMALL),
            thousands(SMALL)
        ),
        &cols,
        &[
            (&format!("{} ÷ 1k", fmt_count(cfg.scale)), big_label.as_str(), "vaultfs 1k"),
            (&format!("{} ÷ gocryptfs", fmt_count(cfg.scale)), big_label.as_str(), "gocryptfs"),
        ],
    );
    let mut m_ready = Metric::new("ready", "mount → ready (key file)", "s", false);
    let mut m_first = Metric::new("first_read", "first read after ready", "ms", false);
    let mut m_rss = Metric::new("rss", "daemon RSS after mount", "MiB", false);
    let mut m_hwm = Metric::new("rss_peak", "daemon peak RSS after the reads", "MiB", false);
    let mut m_read = Metric::new("read", "small-file read, 1 reader", "ops/s", true);
    let which = ["vaultfs 1k", "scale", "gocryptfs"];
    let tmpfs_files = reader::list_files(&src)?;
    for rep in 0..cfg.reps {
        for t in rotated(&which, rep) {
            check_stop()?;
            let (label, mp) = match *t {
                "vaultfs 1k" => ("vaultfs 1k", mnt.join("scale-v1k")),
                "scale" => (big_label.as_str(), mnt.join("scale-vbig")),
                _ => ("gocryptfs", mnt.join("scale-gocryptfs")),
            };
            let (mut guard, took) = match *t {
                "vaultfs 1k" => v.mount(small_db, "small", &mp)?,
                "scale" => v.mount(&scale_db, "scale", &mp)?,
                _ => gc.mount(&mp)?,
            };
            m_ready.push(label, took.as_secs_f64());
            let daemon = guard.daemon;
            if let Some((rss, _)) = daemon.and_then(sys::rss_kib) {
                m_rss.push(label, mib(rss));
            }
            let dir = if *t == "gocryptfs" {
                mp.join("small")
            } else {
                mp.clone()
            };
            let first = reader::c_path(&dir.join("f0000"))?;
            let t0 = Instant::now();
            reader::read_whole(&first, &mut [0u8; 4096])?;
            m_first.push(label, ms(t0.elapsed()));
            let files = reader::list_files(&dir)?;
            anyhow::ensure!(
                files.len() == SMALL,
                "{label}: {} files at {}",
                files.len(),
                dir.display()
            );
            reader::read_pass(&files, Some(VALUE_LEN))?;
            let s = reader::read_files(&files, 1, cfg.dur, Some(VALUE_LEN))?;
            m_read.push(label, s.per_sec());
            if let Some((_, hwm)) = daemon.and_then(sys::rss_kib) {
                m_hwm.push(label, mib(hwm));
            }
            if let Err(e) = guard.unmount() {
                notes.push(format!("scale: unmount: {e:#}"));
            }
        }
        check_stop()?;
        let s = reader::read_files(&tmpfs_files, 1, cfg.dur, Some(VALUE_LEN))?;
        m_read.push(&tmpfs_label, s.per_sec());
        for m in [
            &mut m_ready,
            &mut m_first,
            &mut m_rss,
            &mut m_hwm,
            &mut m_read,
        ] {
            for c in &cols {
                m.pad(c, rep + 1);
            }
        }
        progress(&format!("scale: repetition {}/{} done", rep + 1, cfg.reps));
    }
    sec.metrics.extend([m_ready, m_first, m_rss, m_hwm, m_read]);
    sec.notes.push(format!(
        "gocryptfs: the same {} files in its {}-file tree. Its mount time includes scrypt (N=2^16) on the password, and its RSS up to 64 MiB of scrypt scratch memory, which Go returns to the system lazily (hence RSS after mount is either ~11 or ~74 MiB). The {}-secret store was filled via {how} in {:.1} s.",
        thousands(SMALL),
        thousands(SMALL + BIG),
        thousands(cfg.scale),
        took.as_secs_f64()
    ));
    Ok(sec)
}
