//! Verdict output, as the scenarios finish: one line per scenario for people (`human`), one
//! JSON object per line (`json`), or KTAP version 1 for kselftest-style CI (`tap`). At the end
//! of a run, `--report FILE.html` writes one page with a packet ladder per scenario (`html`).
pub mod html;
mod human;
mod json;
pub mod ladder;
mod tap;

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use serde::Serialize;
use serde_json::Value;

use super::{Outcome, Verdict};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per scenario.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
    /// KTAP version 1 (the kernel's Documentation/dev-tools/ktap.rst), which TAP parsers read.
    Tap,
}

/// What the run was against: the kind of lab and the kernel under test.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Target {
    /// `netns` (the built-in lab: this machine's kernel), `vm` (a qemu guest) or `remote`
    /// (a real REMOTE from the environment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lab: Option<String>,
    /// REMOTE's `uname -r`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_kernel: Option<String>,
    /// Time spent making a lab for this run before the first scenario (none for a lab that
    /// was up already).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_ms: Option<u64>,
    /// A guest booted for this run: qemu's start to READY on its console, then the ssh login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_to_ready_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_login_ms: Option<u64>,
    /// For people: where REMOTE is (not in the JSON).
    #[serde(skip)]
    pub description: String,
}

/// The counts of a run, and what it was against (in the JSON object only).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Scenarios that could not test REMOTE (verdict `error`).
    pub errors: usize,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub target: Target,
}

impl Summary {
    pub fn of(outcomes: &[Outcome], duration_ms: u64) -> Self {
        let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count();
        Summary {
            kind: "summary",
            passed: count(Verdict::Pass),
            failed: count(Verdict::Fail),
            skipped: count(Verdict::Skip),
            errors: count(Verdict::Error),
            duration_ms,
            target: Target::default(),
        }
    }

    /// The summary naming what the run was against.
    pub fn with_target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// `7 passed, 1 failed` and `, N skipped`, `, N error(s)` when there are any.
    pub fn counts(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        match self.errors {
            0 => {}
            1 => line.push_str(", 1 error"),
            n => line.push_str(&format!(", {n} errors")),
        }
        line
    }
}

/// How a run ended early: the signal's name.
pub type Interrupted<'a> = Option<&'a str>;

/// Writes a run's verdicts in one format as they come. Write errors (a closed pipe, `pmtu run
/// | head`) are ignored: they are not worth skipping the clean-up for.
pub struct Reporter<W: Write> {
    format: Format,
    out: W,
    /// Scenarios reported so far (KTAP numbers its results from 1).
    reported: usize,
}

impl Reporter<io::Stdout> {
    pub fn stdout(format: Format) -> Self {
        Reporter::new(format, io::stdout())
    }
}

impl<W: Write> Reporter<W> {
    pub fn new(format: Format, out: W) -> Self {
        Reporter {
            format,
            out,
            reported: 0,
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Before the first scenario: `planned` scenarios will run.
    pub fn start(&mut self, planned: usize) {
        let r = match self.format {
            Format::Tap => tap::header(&mut self.out, planned),
            Format::Human | Format::Json => Ok(()),
        };
        self.done(r);
    }

    /// Before the first scenario, for people: `REMOTE: kernel 6.1.0-56-amd64 (...)` (JSON
    /// carries the same in the summary, KTAP nothing).
    pub fn target(&mut self, target: &Target) {
        let r = match (self.format, &target.remote_kernel) {
            (Format::Human, Some(kernel)) => human::target(&mut self.out, kernel, target),
            _ => Ok(()),
        };
        self.done(r);
    }

    pub fn outcome(&mut self, o: &Outcome) {
        self.reported += 1;
        let r = match self.format {
            Format::Human => human::outcome(&mut self.out, o),
            Format::Json => json::outcome(&mut self.out, o),
            Format::Tap => tap::outcome(&mut self.out, self.reported, o),
        };
        self.done(r);
    }

    pub fn finish(&mut self, summary: &Summary, interrupted: Interrupted) {
        let r = match self.format {
            Format::Human => human::summary(&mut self.out, summary),
            Format::Json => json::summary(&mut self.out, summary),
            Format::Tap => tap::summary(&mut self.out, summary, interrupted),
        };
        self.done(r);
    }

    fn done(&mut self, r: io::Result<()>) {
        let _ = r.and_then(|()| self.out.flush());
    }
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

/// `k=v k=v` of a map of values.
fn pairs(values: &BTreeMap<String, Value>) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
