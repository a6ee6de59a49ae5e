//! Results: per-repetition samples per target, summarized as median [min–max], with paired
//! ratios against the baselines; printed as Markdown tables and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::stats::{fmt_ratio, fmt_summary, paired_ratios, Summary};

/// One measured quantity, with a sample per repetition for each column (target).
#[derive(Debug)]
pub struct Metric {
    pub id: String,
    pub title: String,
    pub unit: String,
    pub higher_is_better: bool,
    /// Column -> samples; sample `i` of every column comes from repetition `i`, so samples of
    /// two columns pair up for ratios (NaN where a repetition produced nothing).
    pub values: BTreeMap<String, Vec<f64>>,
    pub note: Option<String>,
}

impl Metric {
    pub fn new(id: &str, title: &str, unit: &str, higher_is_better: bool) -> Metric {
        Metric {
            id: id.into(),
            title: title.into(),
            unit: unit.into(),
            higher_is_better,
            values: BTreeMap::new(),
            note: None,
        }
    }

    pub fn push(&mut self, column: &str, value: f64) {
        self.values.entry(column.into()).or_default().push(value);
    }

    /// Pads every column to `n` samples with NaN (a repetition that produced nothing).
    pub fn pad(&mut self, column: &str, n: usize) {
        let v = self.values.entry(column.into()).or_default();
        while v.len() < n {
            v.push(f64::NAN);
        }
    }

    pub fn summary(&self, column: &str) -> Option<Summary> {
        Summary::of(self.values.get(column)?)
    }

    pub fn ratio(&self, num: &str, den: &str) -> Option<Summary> {
        Summary::of(&paired_ratios(self.values.get(num)?, self.values.get(den)?))
    }
}

/// A table: columns in order, ratio columns (label, numerator, denominator), rows.
#[derive(Debug)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub columns: Vec<String>,
    pub ratios: Vec<(String, String, String)>,
    pub metrics: Vec<Metric>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(id: &str, title: &str, columns: &[&str], ratios: &[(&str, &str, &str)]) -> Self {
        Section {
            id: id.into(),
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            ratios: ratios
                .iter()
                .map(|(l, n, d)| (l.to_string(), n.to_string(), d.to_string()))
                .collect(),
            metrics: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn metric(&self, id: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.id == id)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### {}\n", self.title);
        let mut head = vec!["workload".to_string(), "unit".to_string()];
        head.extend(self.columns.iter().cloned());
        head.extend(self.ratios.iter().map(|(l, _, _)| l.clone()));
        let _ = writeln!(s, "| {} |", head.join(" | "));
        let _ = writeln!(
            s,
            "|{}",
            head.iter()
                .enumerate()
                .map(|(i, _)| if i < 2 { "---|" } else { "---:|" })
                .collect::<String>()
        );
        for m in &self.metrics {
            let arrow = if m.higher_is_better { "↑" } else { "↓" };
            let mut row = vec![m.title.clone(), format!("{} {arrow}", m.unit)];
            row.extend(self.columns.iter().map(|c| fmt_summary(m.summary(c))));
            row.extend(self.ratios.iter().map(|(_, n, d)| fmt_ratio(m.ratio(n, d))));
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        for n in &self.notes {
            let _ = writeln!(s, "\n{n}");
        }
        for m in &self.metrics {
            if let Some(n) = &m.note {
                let _ = writeln!(s, "\n{}: {n}", m.title);
            }
        }
        s
    }

    pub fn to_json(&self) -> Value {
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|m| {
                let targets: BTreeMap<&String, Value> = m
                    .values
                    .iter()
                    .map(|(c, v)| {
                        let samples: Vec<Value> = v
                            .iter()
                            .map(|x| if x.is_finite() { json!(x) } else { Value::Null })
                            .collect();
                        (
                            c,
                            json!({
                                "samples": samples,
                                "summary": Summary::of(v).map(Summary::to_json),
                            }),
                        )
                    })
                    .collect();
                let ratios: BTreeMap<String, Value> = self
                    .ratios
                    .iter()
                    .filter_map(|(_, n, d)| {
                        let r = m.ratio(n, d)?;
                        Some((format!("{n}/{d}"), r.to_json()))
                    })
                    .collect();
                json!({
                    "id": m.id,
                    "title": m.title,
                    "unit": m.unit,
                    "higher_is_better": m.higher_is_better,
                    "targets": targets,
                    "ratios": ratios,
                    "note": m.note,
                })
            })
            .collect();
        json!({
            "id": self.id,
            "title": self.title,
            "metrics": metrics,
            "notes": self.notes,
        })
    }
}

/// A goal from the issue, checked against a measured median.
#[derive(Debug)]
pub struct Goal {
    pub text: String,
    pub measured: Option<Summary>,
    pub unit: String,
    pub met: Option<bool>,
}

impl Goal {
    pub fn at_least(text: &str, measured: Option<Summary>, unit: &str, min: f64) -> Goal {
        Goal {
            text: text.into(),
            measured,
            unit: unit.into(),
            met: measured.map(|m| m.median >= min),
        }
    }
    pub fn below(text: &str, measured: Option<Summary>, unit: &str, max: f64) -> Goal {
        Goal {
            text: text.into(),
            measured,
            unit: unit.into(),
            met: measured.map(|m| m.median < max),
        }
    }

    pub fn markdown_row(&self) -> String {
        let value = match self.measured {
            None => "not measured".to_string(),
            Some(m) if self.unit == "×" => fmt_ratio(Some(m)),
            Some(m) => format!("{} {}", fmt_summary(Some(m)), self.unit),
        };
        let verdict = match self.met {
            None => "-",
            Some(true) => "met",
            Some(false) => "NOT met",
        };
        format!("| {} | {value} | {verdict} |", self.text)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "goal": self.text,
            "unit": self.unit,
            "measured": self.measured.map(Summary::to_json),
            "met": self.met,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_ratio_columns() {
        let mut s = Section::new("t", "T", &["a", "b"], &[("a ÷ b", "a", "b")]);
        let mut m = Metric::new("m", "M", "ops/s", true);
        for (a, b) in [(2.0, 1.0), (4.0, 2.0), (3.0, 1.0)] {
            m.push("a", a);
            m.push("b", b);
        }
        s.metrics.push(m);
        let md = s.markdown();
        assert!(
            md.contains(
                "| M | ops/s ↑ | 3.00 [2.00–4.00] | 1.00 [1.00–2.00] | 2.00× [2.00–3.00] |"
            ),
            "{md}"
        );
        let j = s.to_json();
        assert_eq!(j["metrics"][0]["ratios"]["a/b"]["median"], 2.0);
    }
}
