//! Verdict output: one line per scenario for people, or one JSON object per line.
use std::{collections::BTreeMap, io::Write as _};

use serde::Serialize;
use serde_json::Value;

use super::{Outcome, Verdict};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Human,
    Json,
}

#[derive(Serialize)]
struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    passed: usize,
    failed: usize,
    skipped: usize,
    duration_ms: u64,
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `key=measured (expected E)` for every measured value, expectations where there are some.
fn details(measured: &BTreeMap<String, Value>, expected: &BTreeMap<String, Value>) -> String {
    measured
        .iter()
        .filter(|(_, v)| !matches!(v, Value::String(s) if s == "ok"))
        .map(|(k, v)| match expected.get(k) {
            Some(e) if e != v => format!("{k}={} (expected {})", value_text(v), value_text(e)),
            Some(_) => format!("{k}={}", value_text(v)),
            None => format!("{k}={}", value_text(v)),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn print_outcome(format: Format, o: &Outcome) {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let line =
                serde_json::to_string(o).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            let _ = writeln!(out, "{line}");
        }
        Format::Human => {
            let verdict = match o.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "SKIP",
            };
            let mut line = format!("{verdict} {:<11} {:>6} ms", o.name, o.duration_ms);
            let d = details(&o.measured, &o.expected);
            if !d.is_empty() {
                line.push_str("  ");
                line.push_str(&d);
            }
            if let Some(reason) = &o.reason {
                line.push_str(if o.verdict == Verdict::Fail {
                    "\n     why: "
                } else {
                    "  "
                });
                line.push_str(reason);
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = out.flush();
}

pub fn print_summary(format: Format, outcomes: &[Outcome], duration_ms: u64) {
    let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count();
    let summary = Summary {
        kind: "summary",
        passed: count(Verdict::Pass),
        failed: count(Verdict::Fail),
        skipped: count(Verdict::Skip),
        duration_ms,
    };
    match format {
        Format::Json => say(&serde_json::to_string(&summary).unwrap_or_default()),
        Format::Human => {
            let mut line = format!("{} passed, {} failed", summary.passed, summary.failed);
            if summary.skipped > 0 {
                line.push_str(&format!(", {} skipped", summary.skipped));
            }
            say(&line);
        }
    }
}

/// One line on stdout; a closed pipe (`pmtu run | head`) is not worth a panic that would skip
/// the clean-up.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
