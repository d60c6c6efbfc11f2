//! One line per scenario, a `why:` line for a FAIL, a `could not test:` line for an ERROR.
use std::io::{self, Write};

use super::{details, Outcome, Summary, Target, Verdict};

pub fn outcome(out: &mut impl Write, o: &Outcome) -> io::Result<()> {
    let verdict = match o.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "SKIP",
        Verdict::Error => "ERROR",
    };
    let mut line = format!("{verdict} {:<11} {:>6} ms", o.name, o.duration_ms);
    let d = details(&o.measured, &o.expected);
    if !d.is_empty() {
        line.push_str("  ");
        line.push_str(&d);
    }
    if let Some(reason) = &o.reason {
        line.push_str(match o.verdict {
            Verdict::Fail => "\n     why: ",
            Verdict::Error => "\n     could not test: ",
            Verdict::Pass | Verdict::Skip => "  ",
        });
        line.push_str(reason);
    }
    writeln!(out, "{line}")
}

pub fn summary(out: &mut impl Write, s: &Summary) -> io::Result<()> {
    writeln!(out, "{}", s.counts())
}

pub fn target(out: &mut impl Write, kernel: &str, t: &Target) -> io::Result<()> {
    writeln!(out, "REMOTE: kernel {kernel} ({})", t.description)
}
