//! The steady-state workloads: small-file reads with 1 and N readers, `stat` of every file
//! and full listings, on every target in turn (the order rotates per repetition).

use std::time::Duration;

use anyhow::Result;

use crate::reader::{self, Sample};
use crate::report::{Metric, Section};
use crate::setup::Env;
use crate::stats::fmt_num;
use crate::sys::check_stop;
use crate::{progress, rotated, thousands, BIG, KC, SMALL, VALUE_LEN};

/// The reader's ceiling (1 thread on tmpfs) and the steady-state section.
pub fn steady(env: &mut Env) -> Result<(Section, Sample)> {
    let cfg = env.cfg;
    let dur = cfg.dur;
    let tgts = &env.tgts;
    let notes = &mut env.notes;
    // ----- the reader's ceiling -----
    let ceiling = reader::read_files(
        &tgts[0].small,
        1,
        dur.max(Duration::from_millis(500)),
        Some(VALUE_LEN),
    )?;
    progress(&format!(
        "reader ceiling on tmpfs (1 thread): {} ops/s",
        fmt_num(ceiling.per_sec())
    ));

    // ----- steady state: small-file reads, stat, readdir -----
    let mut cols: Vec<&str> = vec!["tmpfs", "gocryptfs", "vaultfs"];
    let mut ratio_cols = vec![
        ("vaultfs ÷ gocryptfs", "vaultfs", "gocryptfs"),
        ("vaultfs ÷ tmpfs", "vaultfs", "tmpfs"),
    ];
    if tgts.iter().any(|t| t.name == KC) {
        cols.push(KC);
        ratio_cols.push(("vaultfs-kc ÷ tmpfs", KC, "tmpfs"));
        ratio_cols.push(("vaultfs-kc ÷ vaultfs", KC, "vaultfs"));
    }
    let mut steady = Section::new(
        "steady",
        &format!(
            "Steady state: {} secrets of {VALUE_LEN} B, a {}-entry directory (warm; {} repetitions of {:.1} s, median [min–max])",
            thousands(SMALL),
            thousands(BIG),
            cfg.reps,
            dur.as_secs_f64()
        ),
        &cols,
        &ratio_cols,
    );
    let mut m_read1 = Metric::new("read_1", "small-file read, 1 reader", "ops/s", true);
    let mut m_readn = Metric::new(
        "read_n",
        &format!("small-file read, {} readers (total)", cfg.threads),
        "ops/s",
        true,
    );
    let mut m_stat = Metric::new(
        "stat",
        &format!("stat of every file ({})", thousands(BIG)),
        "ops/s",
        true,
    );
    let mut m_readdir = Metric::new(
        "readdir",
        &format!("readdir of {} entries", thousands(BIG)),
        "ms",
        false,
    );
    let mut failed: std::collections::BTreeMap<&str, String> = Default::default();
    for rep in 0..cfg.reps {
        for t in rotated(tgts, rep) {
            if failed.contains_key(t.name) {
                continue;
            }
            let r = (|| -> Result<()> {
                check_stop()?;
                reader::read_pass(&t.small, Some(VALUE_LEN))?;
                let s = reader::read_files(&t.small, 1, dur, Some(VALUE_LEN))?;
                m_read1.push(t.name, s.per_sec());
                let s = reader::read_files(&t.small, cfg.threads, dur, Some(VALUE_LEN))?;
                m_readn.push(t.name, s.per_sec());
                Ok(())
            })();
            if let Err(e) = r {
                check_stop()?;
                failed.insert(t.name, format!("{e:#}"));
            }
        }
        for t in rotated(tgts, rep) {
            if failed.contains_key(t.name) {
                continue;
            }
            let r = (|| -> Result<()> {
                check_stop()?;
                reader::stat_pass(&t.big)?;
                let s = reader::stat_files(&t.big, dur)?;
                m_stat.push(t.name, s.per_sec());
                reader::list_once(&t.big_dir)?;
                let s = reader::readdir(&t.big_dir, dur, BIG)?;
                m_readdir.push(t.name, s.ms_per_op());
                Ok(())
            })();
            if let Err(e) = r {
                check_stop()?;
                failed.insert(t.name, format!("{e:#}"));
            }
        }
        for m in [&mut m_read1, &mut m_readn, &mut m_stat, &mut m_readdir] {
            for c in &cols {
                m.pad(c, rep + 1);
            }
        }
        progress(&format!(
            "steady state: repetition {}/{} done",
            rep + 1,
            cfg.reps
        ));
    }
    for (t, e) in &failed {
        notes.push(format!("{t} failed during the steady-state workloads: {e}"));
    }
    let mut m_scaling = Metric::new(
        "scaling",
        &format!("{} readers ÷ 1 reader", cfg.threads),
        "×",
        true,
    );
    for c in &cols {
        if let (Some(n), Some(one)) = (m_readn.values.get(*c), m_read1.values.get(*c)) {
            for (a, b) in n.iter().zip(one) {
                m_scaling.push(c, a / b);
            }
        }
    }
    steady
        .metrics
        .extend([m_read1, m_readn, m_scaling, m_stat, m_readdir]);
    if let Some(v) = steady.metric("read_1").and_then(|m| m.summary("vaultfs")) {
        steady.notes.push(format!(
            "Reader ceiling: the same reader does {} ops/s on tmpfs (1 thread), {:.1}× the vaultfs figure, so the reader is not what limits vaultfs.",
            fmt_num(ceiling.per_sec()),
            ceiling.per_sec() / v.median
        ));
    } else {
        steady.notes.push(format!(
            "Reader ceiling: the same reader does {} ops/s on tmpfs (1 thread).",
            fmt_num(ceiling.per_sec())
        ));
    }
    if cols.contains(&KC) {
        steady.notes.push(
            "vaultfs-kc: the same files in a store of their own, mounted with `vaultfs mount --kernel-checks` (the kernel checks access; opens never reach the daemon, unchanged secrets are read from the page cache).".into(),
        );
    }
    steady.notes.push(format!(
        "{} cores; {} readers share them with the filesystem daemon.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cfg.threads
    ));

    Ok((steady, ceiling))
}
