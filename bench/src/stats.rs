//! Repetitions summarized as a median with its spread (min–max and interquartile range).

use serde_json::{json, Value};

/// A summary of repeated samples.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub q1: f64,
    pub q3: f64,
}

/// The `p`-quantile (0..=1) of sorted samples, linearly interpolated.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        Some(Summary {
            n: s.len(),
            median: quantile(&s, 0.5),
            min: s[0],
            max: s[s.len() - 1],
            q1: quantile(&s, 0.25),
            q3: quantile(&s, 0.75),
        })
    }

    pub fn to_json(self) -> Value {
        json!({
            "n": self.n,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "q1": self.q1,
            "q3": self.q3,
        })
    }
}

/// Ratios of paired samples (same repetition, measured back to back): `a[i] / b[i]`.
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite() && **y != 0.0)
        .map(|(x, y)| x / y)
        .collect()
}

/// A number in at most 3–4 significant digits, with k/M suffixes for large values.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// `median [min–max]`.
pub fn fmt_summary(s: Option<Summary>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 => fmt_num(s.median),
        Some(s) => format!(
            "{} [{}–{}]",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        ),
    }
}

/// A ratio as `1.23× [1.10–1.31]`.
pub fn fmt_ratio(s: Option<Summary>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 => format!("{:.2}×", s.median),
        Some(s) => format!("{:.2}× [{:.2}–{:.2}]", s.median, s.min, s.max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quartiles() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(s.median, 3.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.q1, 2.0);
        assert_eq!(s.q3, 4.0);
        let even = Summary::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratios_pair_by_repetition() {
        assert_eq!(paired_ratios(&[2.0, 9.0], &[1.0, 3.0]), vec![2.0, 3.0]);
        assert_eq!(paired_ratios(&[2.0], &[0.0]), Vec::<f64>::new());
    }

    #[test]
    fn numbers_format_compactly() {
        assert_eq!(fmt_num(123456.0), "123k");
        assert_eq!(fmt_num(1234.0), "1.2k");
        assert_eq!(fmt_num(2.5e6), "2.50M");
        assert_eq!(fmt_num(0.1234), "0.123");
    }
}
