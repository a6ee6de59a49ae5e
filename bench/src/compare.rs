//! `vaultfs-bench compare OLD.json NEW.json`: two runs side by side. The ratios to the
//! baselines are what carry over between runs on a noisy machine; the absolute vaultfs
//! figures are shown too, for what they are worth.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::stats::fmt_num;

fn load(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// (section id, metric id, measure, higher is better, median) for every ratio and every
/// vaultfs figure in a result file.
fn rows(j: &Value) -> Vec<(String, String, String, bool, f64)> {
    let mut out = Vec::new();
    let empty = Vec::new();
    for s in j["sections"].as_array().unwrap_or(&empty) {
        let sid = s["id"].as_str().unwrap_or("?");
        for m in s["metrics"].as_array().unwrap_or(&empty) {
            let mid = m["title"].as_str().unwrap_or("?");
            let unit = m["unit"].as_str().unwrap_or("");
            let hib = m["higher_is_better"].as_bool().unwrap_or(true);
            if let Some(t) = m["targets"].as_object() {
                for (name, v) in t {
                    if name.starts_with("vaultfs") {
                        if let Some(x) = v["summary"]["median"].as_f64() {
                            out.push((sid.into(), mid.into(), format!("{name} ({unit})"), hib, x));
                        }
                    }
                }
            }
            if let Some(r) = m["ratios"].as_object() {
                for (name, v) in r {
                    if let Some(x) = v["median"].as_f64() {
                        out.push((sid.into(), mid.into(), format!("{name} (×)"), hib, x));
                    }
                }
            }
        }
    }
    out
}

pub fn compare(old: &Path, new: &Path) -> Result<()> {
    let (a, b) = (load(old)?, load(new)?);
    let (ra, rb) = (rows(&a), rows(&b));
    println!(
        "old: {} ({}, {})\nnew: {} ({}, {})\n",
        old.display(),
        a["meta"]["date"].as_str().unwrap_or("?"),
        a["meta"]["repo_commit"].as_str().unwrap_or("?"),
        new.display(),
        b["meta"]["date"].as_str().unwrap_or("?"),
        b["meta"]["repo_commit"].as_str().unwrap_or("?"),
    );
    println!("| section | workload | measure | old | new | change |");
    println!("|---|---|---|---:|---:|---:|");
    for (sid, mid, measure, hib, x) in &rb {
        let Some((_, _, _, _, o)) = ra
            .iter()
            .find(|(s, m, me, _, _)| s == sid && m == mid && me == measure)
        else {
            continue;
        };
        let change = x / o - 1.0;
        let better = if (change > 0.0) == *hib {
            "better"
        } else {
            "worse"
        };
        let verdict = if change.abs() < 0.05 {
            String::new()
        } else {
            format!(" ({better})")
        };
        println!(
            "| {sid} | {mid} | {measure} | {} | {} | {:+.1}%{verdict} |",
            fmt_num(*o),
            fmt_num(*x),
            change * 100.0
        );
    }
    Ok(())
}
