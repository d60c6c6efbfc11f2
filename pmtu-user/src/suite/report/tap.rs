//! KTAP version 1, as the kernel's Documentation/dev-tools/ktap.rst describes it (and so TAP
//! that `prove` reads): the version line, the plan, then per scenario its diagnostic lines
//! (measured and expected values, the reason) directly before its result line.
//!
//! ```text
//! KTAP version 1
//! 1..2
//! # ping: measured: rtt_us=48
//! ok 1 ping
//! # pmtu: measured: icmp_mtu=1300 quoted_ip_len=1500 retransmit_ip_len=1500
//! # pmtu: expected: retransmit_ip_len=1300
//! # pmtu: why: retransmit_ip_len was 1500, expected 1300: REMOTE ignored the ICMP ...
//! not ok 2 pmtu
//! # 1 passed, 1 failed
//! # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:0 error:0
//! ```
//!
//! A scenario that could not test REMOTE is `not ok N name # ERROR reason` (KTAP's ERROR
//! directive; TAP parsers read it as a plain `not ok`) after a `# name: error: reason` line; a
//! skipped one is `ok N name # SKIP reason`. An interrupted run ends with `Bail out!`.
use std::io::{self, Write};

use super::{pairs, Interrupted, Outcome, Summary, Verdict};

pub fn header(out: &mut impl Write, planned: usize) -> io::Result<()> {
    writeln!(out, "KTAP version 1")?;
    writeln!(out, "1..{planned}")
}

/// One line of free text: KTAP's lines end at a newline, and a description has no `#`.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

pub fn outcome(out: &mut impl Write, number: usize, o: &Outcome) -> io::Result<()> {
    let name = one_line(o.name).replace('#', "_");
    if !o.measured.is_empty() {
        writeln!(out, "# {name}: measured: {}", one_line(&pairs(&o.measured)))?;
    }
    if !o.expected.is_empty() {
        writeln!(out, "# {name}: expected: {}", one_line(&pairs(&o.expected)))?;
    }
    let reason = o.reason.as_deref().map(one_line);
    match (o.verdict, reason) {
        (Verdict::Pass, _) => writeln!(out, "ok {number} {name}"),
        (Verdict::Skip, why) => {
            writeln!(out, "ok {number} {name} # SKIP {}", why.unwrap_or_default())
        }
        (Verdict::Fail, why) => {
            if let Some(why) = why {
                writeln!(out, "# {name}: why: {why}")?;
            }
            writeln!(out, "not ok {number} {name}")
        }
        (Verdict::Error, why) => {
            let why = why.unwrap_or_else(|| "could not test REMOTE".into());
            writeln!(out, "# {name}: error: {why}")?;
            writeln!(out, "not ok {number} {name} # ERROR {why}")
        }
    }
}

pub fn summary(out: &mut impl Write, s: &Summary, interrupted: Interrupted) -> io::Result<()> {
    writeln!(out, "# {} in {} ms", s.counts(), s.duration_ms)?;
    writeln!(
        out,
        "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{}",
        s.passed, s.failed, s.skipped, s.errors
    )?;
    if let Some(signal) = interrupted {
        writeln!(out, "Bail out! interrupted by {signal}")?;
    }
    Ok(())
}
