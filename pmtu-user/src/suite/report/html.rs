//! `--report FILE.html`: one self-contained page (inline CSS and SVG, no script, nothing
//! fetched) with the run's summary and, per scenario, its verdict, measured and expected
//! values, the reason, and its packet ladder.
use std::{
    collections::BTreeSet,
    io::{self, Write},
    time::Duration,
};

use super::{
    ladder::{self, escape},
    value_text, Outcome, Summary, Verdict,
};
use crate::suite::capture::Frame;

/// What the page says about the run as a whole.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// REMOTE's `uname -sr`: the kernel under test.
    pub kernel: String,
    /// Which REMOTE: the built-in lab (kept up or temporary), a namespace, or ssh.
    pub lab: String,
    pub profile: String,
    /// Wall-clock start, since the Unix epoch.
    pub started: Duration,
    /// The command line.
    pub command: String,
    /// Column titles: the fake host, the router, REMOTE (with their addresses).
    pub columns: [String; 3],
}

/// The page's style sheet (the stress page shares it).
pub const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1060px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { text-align: left; padding: .2em .8em .2em 0; vertical-align: top; }
table.values td, table.values th { font-family: monospace; border-bottom: 1px solid #ddd; }
tr.mismatch td { color: #b00020; font-weight: bold; }
.verdict { display: inline-block; min-width: 4.2em; text-align: center; border-radius: 3px;
  color: #fff; font-family: monospace; padding: 0 .3em; margin-right: .4em; }
.verdict.pass { background: #2e7d32; } .verdict.fail { background: #c62828; }
.verdict.skip { background: #757575; } .verdict.error { background: #ef6c00; }
section.scenario { border-top: 2px solid #ccc; margin-top: 1.6em; padding-top: .4em; }
section.scenario h2 { font-size: 1.2em; margin: .3em 0; }
section.scenario h2 small { color: #666; font-weight: normal; }
p.about { color: #555; margin: .2em 0; }
p.reason { font-family: monospace; background: #fff3f3; padding: .4em; border-left: 3px solid #c62828; }
p.reason.error { background: #fff6e5; border-left-color: #ef6c00; }
.legend span { margin-right: 1.2em; font-family: monospace; }
svg.ladder { display: block; margin: .6em 0; background: #fcfcfc; border: 1px solid #eee; }
svg.ladder text { font-family: monospace; font-size: 11px; fill: #222; }
svg.ladder text.column { font-size: 13px; font-weight: bold; }
svg.ladder text.time { fill: #777; }
svg.ladder text.addrs { fill: #555; }
svg.ladder text.empty { fill: #777; font-style: italic; }
svg.ladder text.cross { fill: #777; font-size: 14px; }
svg.ladder line.lifeline { stroke: #999; stroke-dasharray: 4 3; }
svg.ladder line { stroke-width: 1.6; }
line.fake { stroke: #1565c0; } .head.fake { fill: #1565c0; } .legend .fake { color: #1565c0; }
line.remote { stroke: #2e7d32; } .head.remote { fill: #2e7d32; } .legend .remote { color: #2e7d32; }
line.quoted { stroke: #6a1b9a; stroke-width: 3.2; } .head.quoted { fill: #6a1b9a; }
.legend .quoted { color: #6a1b9a; }
line.icmp { stroke: #d84315; stroke-width: 2.4; } .head.icmp { fill: #d84315; }
.legend .icmp { color: #d84315; }
g.icmp text.label { fill: #d84315; font-weight: bold; }
g.quoted text.label { fill: #6a1b9a; font-weight: bold; }
line.dropped { stroke: #9e9e9e; stroke-dasharray: 6 3; } .head.dropped { fill: #9e9e9e; }
.legend .dropped { color: #757575; }
line.stray { stroke: #bdbdbd; stroke-dasharray: 2 3; } .head.stray { fill: #bdbdbd; }
g.stray text.label { fill: #9e9e9e; }
"#;

/// `2025-11-24 23:41:07 UTC` (civil date from the Unix day count, proleptic Gregorian).
pub fn utc_text(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn verdict_word(v: Verdict) -> (&'static str, &'static str) {
    match v {
        Verdict::Pass => ("PASS", "pass"),
        Verdict::Fail => ("FAIL", "fail"),
        Verdict::Skip => ("SKIP", "skip"),
        Verdict::Error => ("ERROR", "error"),
    }
}

/// Writes the page.
pub fn write(
    out: &mut dyn Write,
    info: &RunInfo,
    summary: &Summary,
    outcomes: &[Outcome],
    frames: &[Frame],
) -> io::Result<()> {
    writeln!(out, "<!DOCTYPE html>")?;
    writeln!(out, r#"<html lang="en"><head><meta charset="utf-8">"#)?;
    writeln!(
        out,
        "<title>pmtu report: {} on {}</title>",
        escape(&summary.counts()),
        escape(&info.kernel)
    )?;
    writeln!(out, "<style>{STYLE}</style></head><body>")?;
    writeln!(out, "<h1>pmtu: Path MTU Discovery regression suite</h1>")?;
    writeln!(out, r#"<table class="summary">"#)?;
    for (k, v) in [
        ("kernel under test", info.kernel.as_str()),
        ("REMOTE", info.lab.as_str()),
        ("profile", info.profile.as_str()),
        ("started", &utc_text(info.started)),
        ("duration", &format!("{} ms", summary.duration_ms)),
        ("result", &summary.counts()),
        ("command", info.command.as_str()),
        ("pmtu", env!("CARGO_PKG_VERSION")),
    ] {
        writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v))?;
    }
    writeln!(out, "</table>")?;
    writeln!(
        out,
        r#"<p class="legend">Packet ladders: <span class="fake">&#9472;&#9654; the fake host's packet</span><span class="remote">&#9472;&#9654; REMOTE's packet</span><span class="quoted">&#9473;&#9654; &#10033; the packet the router quotes</span><span class="icmp">&#9473;&#9654; the router's ICMP error</span><span class="dropped">- -&#9654; dropped by the router</span></p>"#
    )?;
    let columns = [
        info.columns[0].as_str(),
        info.columns[1].as_str(),
        info.columns[2].as_str(),
    ];
    for (i, o) in outcomes.iter().enumerate() {
        let (word, class) = verdict_word(o.verdict);
        let id = format!("{}-{i}", slug(o.name));
        writeln!(out, r#"<section class="scenario {class}" id="{id}">"#)?;
        writeln!(
            out,
            r#"<h2><span class="verdict {class}">{word}</span>{} <small>{} ms</small></h2>"#,
            escape(o.name),
            o.duration_ms
        )?;
        if !o.about.is_empty() {
            writeln!(out, r#"<p class="about">{}</p>"#, escape(o.about))?;
        }
        values(out, o)?;
        if let Some(reason) = &o.reason {
            let (label, extra) = match o.verdict {
                Verdict::Fail => ("why", ""),
                Verdict::Error => ("could not test", " error"),
                Verdict::Pass | Verdict::Skip => ("note", ""),
            };
            writeln!(
                out,
                r#"<p class="reason{extra}">{label}: {}</p>"#,
                escape(reason)
            )?;
        }
        let mine: Vec<&Frame> = frames
            .iter()
            .filter(|f| f.scenario == Some(o.name))
            .collect();
        let arrows = ladder::arrows(&mine);
        writeln!(out, "{}", ladder::svg(&id, columns, &arrows))?;
        writeln!(out, "</section>")?;
    }
    writeln!(out, "</body></html>")
}

/// A measured/expected table; rows whose values differ are marked.
fn values(out: &mut dyn Write, o: &Outcome) -> io::Result<()> {
    let keys: BTreeSet<&String> = o.measured.keys().chain(o.expected.keys()).collect();
    if keys.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        r#"<table class="values"><tr><th>value</th><th>measured</th><th>expected</th></tr>"#
    )?;
    for k in keys {
        let m = o.measured.get(k);
        let e = o.expected.get(k);
        let mismatch = matches!((m, e), (Some(m), Some(e)) if m != e)
            || matches!(m, Some(serde_json::Value::String(s)) if s == "FAIL");
        let text = |v: Option<&serde_json::Value>| v.map(value_text).unwrap_or_default();
        writeln!(
            out,
            r#"<tr{}><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            if mismatch { r#" class="mismatch""# } else { "" },
            escape(k),
            escape(&text(m)),
            escape(&text(e))
        )?;
    }
    writeln!(out, "</table>")
}

/// A scenario name as an HTML id.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
