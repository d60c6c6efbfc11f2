//! A lab brought up for a task and always brought down, and one run of the suite on it read
//! from `pmtu run --format json`.
//!
//! The JSON lines contract (one object per line on stdout):
//! `{"type":"scenario","name":"pmtu","verdict":"pass"|"fail"|"skip"|"error","measured":{..},
//! "expected":{..},"reason":"..","duration_ms":123}` and a last line
//! `{"type":"summary","passed":N,"failed":N,"skipped":N,"errors":N,"duration_ms":N}`.
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::exec::{self, describe, describe_status};

/// A lab named `name`: `pmtu lab up` on creation, `pmtu lab down` on drop, whatever happened in
/// between (error, Ctrl-C, panic).
pub struct Lab {
    pmtu: PathBuf,
    name: String,
}

impl Lab {
    pub fn up(pmtu: &Path, name: &str) -> Result<Lab> {
        // The guard exists before `lab up` runs, so a lab left half up is removed too.
        let lab = Lab {
            pmtu: pmtu.to_path_buf(),
            name: name.to_owned(),
        };
        exec::run(Command::new(pmtu).args(["lab", "up", "--lab", name]))
            .with_context(|| format!("lab {name} could not be brought up"))?;
        exec::check_interrupted()?;
        println!("lab {name}: up");
        Ok(lab)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One `pmtu run --lab NAME --format json`.
    pub fn run_suite(&self) -> Result<SuiteRun> {
        self.run_scenarios(&[])
    }

    /// One `pmtu run --lab NAME --format json NAMES...` (no names: the quick suite).
    pub fn run_scenarios(&self, names: &[&str]) -> Result<SuiteRun> {
        let mut cmd = Command::new(&self.pmtu);
        cmd.args(["run", "--lab", &self.name, "--format", "json"])
            .args(names);
        let captured = exec::capture_lines(&mut cmd)?;
        exec::check_interrupted()?;
        SuiteRun::parse(
            &describe(&cmd),
            captured.status,
            &captured.lines,
            captured.wall,
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // In its own process group, so that a Ctrl-C typed now does not cut the teardown short.
        let mut cmd = Command::new(&self.pmtu);
        cmd.args(["lab", "down", "--lab", &self.name])
            .process_group(0);
        match cmd.status() {
            Ok(status) if status.success() => println!("lab {}: down", self.name),
            Ok(status) => eprintln!(
                "xtask: warning: {} failed with {}: remove the lab by hand with `{} lab down \
                 --lab {}`",
                describe(&cmd),
                describe_status(status),
                self.pmtu.display(),
                self.name
            ),
            Err(e) => eprintln!(
                "xtask: warning: cannot run {}: {e}; lab {} may still be up",
                describe(&cmd),
                self.name
            ),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub verdict: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub duration_ms: f64,
}

impl Scenario {
    /// A FAIL (REMOTE is broken) or an ERROR (the scenario could not test REMOTE).
    pub fn failed(&self) -> bool {
        self.verdict == "fail" || self.verdict == "error"
    }

    pub fn reason(&self) -> &str {
        match self.reason.as_deref() {
            Some(r) if !r.is_empty() => r,
            _ => "no reason given",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Scenarios that could not test REMOTE.
    #[serde(default)]
    pub errors: u32,
    #[serde(default)]
    pub duration_ms: f64,
    /// A guest booted for the run: qemu's start to READY.
    #[serde(default)]
    pub boot_to_ready_ms: Option<f64>,
    /// Making the lab for the run, before the first scenario.
    #[serde(default)]
    pub setup_ms: Option<f64>,
    /// The kernel under test.
    #[serde(default)]
    pub remote_kernel: Option<String>,
}

/// One run of the suite: its scenarios and summary, and the wall time xtask measured.
#[derive(Debug)]
pub struct SuiteRun {
    pub scenarios: Vec<Scenario>,
    pub summary: Summary,
    pub wall: Duration,
}

impl SuiteRun {
    /// Reads the JSON lines; lines that are not JSON objects are shown on stderr and skipped.
    /// Without a summary line the run is an error (pmtu stopped before the end).
    pub fn parse(
        what: &str,
        status: ExitStatus,
        lines: &[String],
        wall: Duration,
    ) -> Result<SuiteRun> {
        let mut scenarios = Vec::new();
        let mut summary = None;
        for line in lines {
            let value: serde_json::Value = match serde_json::from_str(line) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                _ => {
                    eprintln!("{line}");
                    continue;
                }
            };
            match value.get("type").and_then(|t| t.as_str()) {
                Some("scenario") => scenarios.push(
                    serde_json::from_value(value)
                        .with_context(|| format!("{what}: malformed scenario line: {line}"))?,
                ),
                Some("summary") => {
                    summary = Some(
                        serde_json::from_value(value)
                            .with_context(|| format!("{what}: malformed summary line: {line}"))?,
                    )
                }
                _ => {}
            }
        }
        let Some(summary) = summary else {
            bail!(
                "{what} ended with {} without a summary line: see its messages above",
                describe_status(status)
            );
        };
        Ok(SuiteRun {
            scenarios,
            summary,
            wall,
        })
    }

    pub fn passed(&self) -> bool {
        self.summary.failed == 0
            && self.summary.errors == 0
            && self.scenarios.iter().all(|s| !s.failed())
    }

    pub fn failures(&self) -> impl Iterator<Item = &Scenario> {
        self.scenarios.iter().filter(|s| s.failed())
    }

    /// `9 passed, 0 failed` (`, 1 skipped` when any).
    pub fn counts(&self) -> String {
        let s = &self.summary;
        let mut text = format!("{} passed, {} failed", s.passed, s.failed);
        if s.skipped > 0 {
            text.push_str(&format!(", {} skipped", s.skipped));
        }
        if s.errors > 0 {
            text.push_str(&format!(", {} could not test", s.errors));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn reads_the_json_lines_contract() {
        let lines: Vec<String> = [
            r#"{"type":"scenario","name":"ping","verdict":"pass","measured":{},"expected":{},"reason":"","duration_ms":3}"#,
            r#"{"type":"scenario","name":"pmtu","verdict":"fail","measured":{"retransmit":1500},"expected":{"retransmit":1300},"reason":"retransmit was 1500, expected 1300","duration_ms":120.5}"#,
            "not json",
            r#"{"type":"summary","passed":1,"failed":1,"skipped":0,"duration_ms":130}"#,
        ]
        .map(String::from)
        .to_vec();
        let run = SuiteRun::parse(
            "pmtu run",
            ExitStatus::from_raw(1 << 8),
            &lines,
            Duration::from_millis(140),
        )
        .expect("parsed");
        assert_eq!(run.scenarios.len(), 2);
        assert!(!run.passed());
        let failed: Vec<_> = run.failures().map(|s| s.name.as_str()).collect();
        assert_eq!(failed, ["pmtu"]);
        assert_eq!(
            run.failures().map(Scenario::reason).collect::<Vec<_>>(),
            ["retransmit was 1500, expected 1300"]
        );
        assert_eq!(run.counts(), "1 passed, 1 failed");
    }

    #[test]
    fn a_run_without_summary_is_an_error() {
        let lines = vec![r#"{"type":"scenario","name":"ping","verdict":"pass"}"#.to_owned()];
        let err = SuiteRun::parse(
            "`pmtu run`",
            ExitStatus::from_raw(2 << 8),
            &lines,
            Duration::ZERO,
        )
        .expect_err("no summary");
        assert!(err.to_string().contains("without a summary line"), "{err}");
    }
}
