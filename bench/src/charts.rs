//! SVG charts of a run, written next to its JSON: throughput by system (medians with their
//! min–max spread, log scale: the systems differ by orders of magnitude) and the rotation
//! latency distribution (every sample, as a cumulative curve per system). Plain SVG, no
//! dependency, so the README can show them from the repository.

use std::fmt::Write as _;

use crate::report::Section;
use crate::stats::{fmt_num, Summary};

const SYSTEMS: [(&str, &str); 4] = [
    ("tmpfs", "#9e9e9e"),
    ("gocryptfs", "#e69f00"),
    ("vaultfs", "#0072b2"),
    (crate::KC, "#009e73"),
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Log-scale position of `v` in `[lo, hi]` over `width` pixels.
fn logx(v: f64, lo: f64, hi: f64, width: f64) -> f64 {
    ((v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln())).clamp(0.0, 1.0) * width
}

/// Powers of ten from `lo` to `hi`.
fn decades(lo: f64, hi: f64) -> Vec<f64> {
    let mut v = Vec::new();
    let mut x = 10f64.powf(lo.log10().floor());
    while x <= hi * 1.0001 {
        if x >= lo * 0.9999 {
            v.push(x);
        }
        x *= 10.0;
    }
    v
}

/// One workload's bars: (system, colour, summary).
type Bars<'a> = Vec<(&'a str, &'a str, Summary)>;

/// Throughput (ops/s) of the steady-state workloads, one group of bars per workload.
pub fn ops_chart(steady: &Section, title: &str) -> Option<String> {
    let rows: Vec<(&str, Bars)> = ["read_1", "read_n", "stat"]
        .iter()
        .filter_map(|id| {
            let m = steady.metric(id)?;
            let bars: Vec<_> = SYSTEMS
                .iter()
                .filter_map(|(s, c)| Some((*s, *c, m.summary(s)?)))
                .collect();
            (!bars.is_empty()).then_some((m.title.as_str(), bars))
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let (lo, hi) = (1e3, 1e6);
    let (left, width, bar, gap) = (230.0, 520.0, 16.0, 18.0);
    let bars_total: usize = rows.iter().map(|(_, b)| b.len()).sum();
    let height = 60.0 + bars_total as f64 * bar + rows.len() as f64 * gap + 40.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = left + width + 110.0
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let top = 40.0;
    let bottom = height - 30.0;
    for d in decades(lo, hi) {
        let x = left + logx(d, lo, hi, width);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            fmt_num(d),
            y = bottom + 15.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="#555">ops/s (log scale; bar: median, whisker: min–max)</text>"##,
        x = left + width / 2.0,
        y = bottom + 28.0
    );
    let mut y = top + 8.0;
    for (title, bars) in &rows {
        let _ = write!(
            s,
            r#"<text x="{x}" y="{ty:.1}" text-anchor="end">{}</text>"#,
            esc(title),
            x = left - 8.0,
            ty = y + 1.5 * bar + 4.0
        );
        for (name, color, sum) in bars {
            let w = logx(sum.median, lo, hi, width);
            let (x0, x1) = (
                left + logx(sum.min, lo, hi, width),
                left + logx(sum.max, lo, hi, width),
            );
            let cy = y + bar / 2.0;
            let _ = write!(
                s,
                r#"<rect x="{left}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{color}"><title>{name}: {}</title></rect><line x1="{x0:.1}" y1="{cy:.1}" x2="{x1:.1}" y2="{cy:.1}" stroke="black"/><text x="{tx:.1}" y="{ty:.1}">{name} {}</text>"#,
                fmt_num(sum.median),
                fmt_num(sum.median),
                h = bar - 2.0,
                tx = left + w.max(x1) + 4.0,
                ty = y + bar - 4.0
            );
            y += bar;
        }
        y += gap;
    }
    s.push_str("</svg>\n");
    Some(s)
}

/// The rotation latency distribution: for each system, the share of rotations whose new
/// value was read within x ms (every sample of the run).
pub fn rotation_chart(rot: &Section, title: &str) -> Option<String> {
    let m = rot.metric("rotation_latency")?;
    let series: Vec<(&str, &str, Vec<f64>)> = SYSTEMS
        .iter()
        .filter_map(|(name, color)| {
            let mut v: Vec<f64> = m
                .values
                .get(*name)?
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then_some((*name, *color, v))
        })
        .collect();
    if series.is_empty() {
        return None;
    }
    let (lo, hi) = (0.001, 100.0);
    let (left, top, width, height) = (60.0, 40.0, 560.0, 260.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        esc(title),
        w = left + width + 130.0,
        h = top + height + 50.0
    );
    for d in decades(lo, hi) {
        let x = left + logx(d, lo, hi, width);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{b}" stroke="#ddd"/><text x="{x:.1}" y="{ty}" text-anchor="middle" fill="#555">{d}</text>"##,
            b = top + height,
            ty = top + height + 15.0
        );
    }
    for p in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let y = top + height * (1.0 - p);
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#eee"/><text x="{tx}" y="{ty:.1}" text-anchor="end" fill="#555">{}%</text>"##,
            (p * 100.0) as u32,
            r = left + width,
            tx = left - 6.0,
            ty = y + 4.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="{x}" y="{y}" text-anchor="middle" fill="#555">ms from the write returning to the new value read (log scale); y: share of rotations</text>"##,
        x = left + width / 2.0,
        y = top + height + 32.0
    );
    for (i, (name, color, v)) in series.iter().enumerate() {
        let n = v.len() as f64;
        let mut pts = String::new();
        for (k, x) in v.iter().enumerate() {
            let px = left + logx(*x, lo, hi, width);
            let py = top + height * (1.0 - (k + 1) as f64 / n);
            let _ = write!(pts, "{px:.1},{py:.1} ");
        }
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>"#
        );
        let median = v[v.len() / 2];
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{color}"/><text x="{tx}" y="{ty}">{name}: median {} ms</text>"#,
            fmt_num(median),
            x = left + width + 10.0,
            y = top + 10.0 + i as f64 * 20.0,
            tx = left + width + 26.0,
            ty = top + 20.0 + i as f64 * 20.0
        );
    }
    s.push_str("</svg>\n");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Metric;

    #[test]
    fn charts_draw_every_system_present() {
        let mut steady = Section::new("steady", "t", &["tmpfs", "gocryptfs", "vaultfs"], &[]);
        let mut m = Metric::new("read_1", "small-file read, 1 reader", "ops/s", true);
        for (s, v) in [("tmpfs", 250e3), ("gocryptfs", 9e3), ("vaultfs", 30e3)] {
            m.push(s, v);
            m.push(s, v * 1.1);
        }
        steady.metrics.push(m);
        let svg = ops_chart(&steady, "a <title>").unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(
            svg.contains("vaultfs 30k") || svg.contains("vaultfs 32k"),
            "{svg}"
        );
        assert!(svg.contains("a &lt;title&gt;"));
        let mut rot = Section::new("rotation", "t", &["tmpfs", "vaultfs"], &[]);
        let mut lat = Metric::new("rotation_latency", "x", "ms", false);
        for i in 0..100 {
            lat.push("vaultfs", 0.2 + i as f64 * 0.01);
        }
        rot.metrics.push(lat);
        let svg = rotation_chart(&rot, "r").unwrap();
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("vaultfs: median"));
        assert!(rotation_chart(&steady, "none").is_none());
    }
}
