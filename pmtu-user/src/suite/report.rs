//! Verdict output: one line per scenario for people, or one JSON object per line.
use std::{
    collections::BTreeMap,
    io::{self, Write},
};

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
struct Summary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    passed: usize,
    failed: usize,
    skipped: usize,
    duration_ms: u64,
    #[serde(flatten)]
    target: &'a Target,
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

/// `REMOTE: kernel 6.1.0-56-amd64 (...)` before the scenarios, for people (JSON carries the
/// same in the summary).
pub fn write_target(out: &mut impl Write, format: Format, target: &Target) -> io::Result<()> {
    match (format, &target.remote_kernel) {
        (Format::Human, Some(kernel)) => {
            writeln!(out, "REMOTE: kernel {kernel} ({})", target.description)
        }
        _ => Ok(()),
    }
}

/// Prints the target line on stdout, like `print_outcome`.
pub fn print_target(format: Format, target: &Target) {
    let mut out = io::stdout().lock();
    let _ = write_target(&mut out, format, target).and_then(|()| out.flush());
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

/// One outcome: a line for people (and a `why:` line for a failure), or a JSON object.
pub fn write_outcome(out: &mut impl Write, format: Format, o: &Outcome) -> io::Result<()> {
    match format {
        Format::Json => {
            let line =
                serde_json::to_string(o).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            writeln!(out, "{line}")
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
            writeln!(out, "{line}")
        }
    }
}

/// `N passed, N failed[, N skipped]`, or the same counts as a JSON object.
pub fn write_summary(
    out: &mut impl Write,
    format: Format,
    outcomes: &[Outcome],
    duration_ms: u64,
) -> io::Result<()> {
    write_summary_for(out, format, outcomes, duration_ms, &Target::default())
}

/// [`write_summary`] with what the run was against (in the JSON object only).
pub fn write_summary_for(
    out: &mut impl Write,
    format: Format,
    outcomes: &[Outcome],
    duration_ms: u64,
    target: &Target,
) -> io::Result<()> {
    let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count();
    let summary = Summary {
        kind: "summary",
        passed: count(Verdict::Pass),
        failed: count(Verdict::Fail),
        skipped: count(Verdict::Skip),
        duration_ms,
        target,
    };
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string(&summary).unwrap_or_default()
        ),
        Format::Human => {
            let mut line = format!("{} passed, {} failed", summary.passed, summary.failed);
            if summary.skipped > 0 {
                line.push_str(&format!(", {} skipped", summary.skipped));
            }
            writeln!(out, "{line}")
        }
    }
}

/// Prints one outcome on stdout; a closed pipe (`pmtu run | head`) is not worth a panic that
/// would skip the clean-up.
pub fn print_outcome(format: Format, o: &Outcome) {
    let mut out = io::stdout().lock();
    let _ = write_outcome(&mut out, format, o).and_then(|()| out.flush());
}

/// Prints the summary line on stdout, like `print_outcome`.
pub fn print_summary(format: Format, outcomes: &[Outcome], duration_ms: u64, target: &Target) {
    let mut out = io::stdout().lock();
    let _ = write_summary_for(&mut out, format, outcomes, duration_ms, target)
        .and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn outcome(
        name: &'static str,
        verdict: Verdict,
        measured: Value,
        expected: Value,
        reason: Option<&str>,
    ) -> Outcome {
        let map = |v: Value| serde_json::from_value(v).unwrap();
        Outcome {
            kind: "scenario",
            name,
            verdict,
            measured: map(measured),
            expected: map(expected),
            reason: reason.map(str::to_string),
            duration_ms: 219,
        }
    }

    fn pmtu(verdict: Verdict, retransmit: u64, reason: Option<&str>) -> Outcome {
        outcome(
            "pmtu",
            verdict,
            json!({"icmp_mtu": 1300, "quoted_ip_len": 1500, "retransmit_ip_len": retransmit}),
            json!({"retransmit_ip_len": 1300}),
            reason,
        )
    }

    const WHY: &str =
        "retransmit_ip_len was 1500, expected 1300: REMOTE ignored the ICMP fragmentation needed";

    fn text(write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn human(o: &Outcome) -> String {
        text(|out| write_outcome(out, Format::Human, o))
    }

    #[test]
    fn human_lines_show_measured_and_expected() {
        assert_eq!(
            human(&pmtu(Verdict::Pass, 1300, None)),
            "PASS pmtu           219 ms  icmp_mtu=1300 quoted_ip_len=1500 retransmit_ip_len=1300\n"
        );
        assert_eq!(
            human(&pmtu(Verdict::Fail, 1500, Some(WHY))),
            "FAIL pmtu           219 ms  icmp_mtu=1300 quoted_ip_len=1500 retransmit_ip_len=1500 \
             (expected 1300)\n     why: retransmit_ip_len was 1500, expected 1300: REMOTE ignored \
             the ICMP fragmentation needed\n"
        );
        // "ok" checks are not repeated; strings print bare; a skip says why on its own line.
        let skip = outcome(
            "gateway6",
            Verdict::Skip,
            json!({"lo": "ok", "route": "fe80::1", "fragmented": false}),
            json!({"fragmented": true}),
            Some("REMOTE_SSH is not set"),
        );
        assert_eq!(
            human(&skip),
            "SKIP gateway6       219 ms  fragmented=false (expected true) route=fe80::1  \
             REMOTE_SSH is not set\n"
        );
        let bare = outcome("ping", Verdict::Pass, json!({}), json!({}), None);
        assert_eq!(human(&bare), "PASS ping           219 ms\n");
    }

    #[test]
    fn summary_counts_and_mentions_skips_only_when_there_are_some() {
        let summary =
            |outcomes: &[Outcome]| text(|out| write_summary(out, Format::Human, outcomes, 500));
        let pass = || pmtu(Verdict::Pass, 1300, None);
        assert_eq!(summary(&[pass(), pass()]), "2 passed, 0 failed\n");
        assert_eq!(summary(&[]), "0 passed, 0 failed\n");
        let mixed = [
            pass(),
            pmtu(Verdict::Fail, 1500, Some(WHY)),
            pmtu(Verdict::Skip, 1300, Some("no IPv6")),
            pmtu(Verdict::Fail, 1500, Some(WHY)),
        ];
        assert_eq!(summary(&mixed), "1 passed, 2 failed, 1 skipped\n");
    }

    #[test]
    fn json_is_one_object_per_line() {
        let fail = pmtu(Verdict::Fail, 1500, Some(WHY));
        let line = text(|out| write_outcome(out, Format::Json, &fail));
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({
                "type": "scenario",
                "name": "pmtu",
                "verdict": "fail",
                "measured": {"icmp_mtu": 1300, "quoted_ip_len": 1500, "retransmit_ip_len": 1500},
                "expected": {"retransmit_ip_len": 1300},
                "reason": WHY,
                "duration_ms": 219,
            })
        );
        let pass = text(|out| write_outcome(out, Format::Json, &pmtu(Verdict::Pass, 1300, None)));
        let v: Value = serde_json::from_str(&pass).unwrap();
        assert_eq!(v["verdict"], "pass");
        assert!(v.get("reason").is_none(), "{pass}");

        let outcomes = [fail, pmtu(Verdict::Skip, 1300, Some("no IPv6"))];
        let line = text(|out| write_summary(out, Format::Json, &outcomes, 1234));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({"type": "summary", "passed": 0, "failed": 1, "skipped": 1, "duration_ms": 1234})
        );
    }

    #[test]
    fn the_target_names_the_kernel_under_test() {
        let target = Target {
            lab: Some("vm".into()),
            remote_kernel: Some("6.1.0-56-amd64".into()),
            boot_to_ready_ms: Some(4321),
            description: "a qemu guest booted from debian, lab `pmtu`".into(),
            ..Target::default()
        };
        let line = text(|out| write_summary_for(out, Format::Json, &[], 10, &target));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["remote_kernel"], "6.1.0-56-amd64");
        assert_eq!(v["lab"], "vm");
        assert_eq!(v["boot_to_ready_ms"], 4321);
        assert!(v.get("description").is_none(), "{line}");
        assert!(v.get("ssh_login_ms").is_none(), "{line}");
        assert_eq!(
            text(|out| write_target(out, Format::Human, &target)),
            "REMOTE: kernel 6.1.0-56-amd64 (a qemu guest booted from debian, lab `pmtu`)\n"
        );
        assert_eq!(text(|out| write_target(out, Format::Json, &target)), "");
        // Human summaries stay as they were.
        assert_eq!(
            text(|out| write_summary_for(out, Format::Human, &[], 10, &target)),
            "0 passed, 0 failed\n"
        );
    }
}
