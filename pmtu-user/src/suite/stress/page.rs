//! `pmtu stress --report FILE.html`: one self-contained page (the suite report's style, inline
//! SVG, no script, nothing fetched): what was tested, the verdict, the figures per kind of
//! flow, REMOTE's PMTU state capacity, the failures by reason, and the two charts (verified
//! flows per second over the run, the latency distribution).
use std::{
    io::{self, Write},
    time::Duration,
};

use super::report::{Client, Report};
use crate::suite::report::{
    html::{utc_text, STYLE},
    ladder::escape,
};

/// What the page says about the run beyond the [`Report`].
#[derive(Clone, Debug)]
pub struct PageInfo {
    /// REMOTE's `uname -sr`: the kernel under test.
    pub kernel: String,
    /// Which REMOTE.
    pub remote: String,
    /// Wall-clock start, since the Unix epoch.
    pub started: Duration,
    /// The command line.
    pub command: String,
}

const STRESS_STYLE: &str = r#"
table.kinds td, table.kinds th { font-family: monospace; border-bottom: 1px solid #ddd; text-align: right; }
table.kinds td:first-child, table.kinds th:first-child { text-align: left; }
.charts svg { display: block; margin: .6em 0; border: 1px solid #eee; max-width: 100%; height: auto; }
"#;

/// The verdict in one word, its CSS class, and why.
fn verdict(report: &Report) -> (&'static str, &'static str, String) {
    if report.interrupted {
        return (
            "STOPPED",
            "skip",
            "interrupted: the figures cover what was measured".into(),
        );
    }
    if !report.valid {
        return (
            "INVALID",
            "error",
            format!(
                "could not test: events lost {}, frames dropped on the link {}, ICMP errors dropped {}{} (a lost ICMP error or segment would read as REMOTE's fault)",
                report.events_lost.unwrap_or(0),
                report.frames_dropped.unwrap_or(0),
                report.icmp_errors_lost.unwrap_or(0),
                if report.failure_a_lost_icmp_explains() {
                    " with flows that saw two errors ignored"
                } else {
                    ""
                }
            ),
        );
    }
    if report.failed > 0 || !report.failures.is_empty() {
        let n: u64 = report.failures.iter().map(|g| g.count).sum();
        return ("FAIL", "fail", format!("{n} flows or probes failed"));
    }
    ("PASS", "pass", "every flow and probe verified".into())
}

/// Writes the page; `charts` is the SVG of [`super::plot::svg_text`].
pub fn write(
    out: &mut dyn Write,
    info: &PageInfo,
    report: &Report,
    charts: &str,
) -> io::Result<()> {
    let (word, class, why) = verdict(report);
    writeln!(out, "<!DOCTYPE html>")?;
    writeln!(out, r#"<html lang="en"><head><meta charset="utf-8">"#)?;
    writeln!(
        out,
        "<title>pmtu stress: {word}, {} verified flows/s on {}</title>",
        report.verified_flows_per_s,
        escape(&info.kernel)
    )?;
    writeln!(out, "<style>{STYLE}{STRESS_STYLE}</style></head><body>")?;
    writeln!(
        out,
        r#"<h1><span class="verdict {class}">{word}</span>pmtu stress: many flows at once, each from its own fake host with its own MTU</h1>"#
    )?;
    let mix: Vec<&str> = report.mix.iter().map(|k| k.name()).collect();
    let client = match report.client {
        Client::Fake => format!(
            "fake hosts in {} and {}, each flow verified",
            report.net, report.net6
        ),
        Client::Kernel => "LOCAL's kernel sockets, no PMTU (REMOTE's own ceiling)".into(),
    };
    writeln!(out, r#"<table class="summary">"#)?;
    for (k, v) in [
        ("kernel under test", info.kernel.clone()),
        ("REMOTE", info.remote.clone()),
        ("started", utc_text(info.started)),
        ("duration", format!("{:.2} s", report.duration_s)),
        (
            "flows",
            format!(
                "{} of {} started ({}, MTU {}-{}) from {client}",
                report.started,
                report.flows,
                mix.join(" "),
                report.mtu_min,
                report.mtu_max
            ),
        ),
        (
            "result",
            format!(
                "{} verified, {} failed: {} verified flows/s",
                report.verified, report.failed, report.verified_flows_per_s
            ),
        ),
        ("verdict", why),
        (
            "events lost",
            report
                .events_lost
                .map_or("not counted".into(), |n| n.to_string()),
        ),
        (
            "frames dropped on the link",
            report
                .frames_dropped
                .map_or("not counted".into(), |n| n.to_string()),
        ),
        (
            "second ICMP errors",
            report
                .icmp_errors_lost
                .map_or("not counted".into(), |_| report.second_errors_text()),
        ),
        (
            "pmtu's own cost",
            format!(
                "CPU {:.2} s, peak RSS {:.1} MB",
                report.cpu_s, report.peak_rss_mb
            ),
        ),
        ("command", info.command.clone()),
        ("pmtu", env!("CARGO_PKG_VERSION").into()),
    ] {
        writeln!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        )?;
    }
    writeln!(out, "</table>")?;
    kinds(out, report)?;
    capacity(out, report)?;
    failures(out, report)?;
    writeln!(out, r#"<section class="charts"><h2>Over the run</h2>"#)?;
    writeln!(
        out,
        r#"<p class="about">TCP's latency is REMOTE's reaction, from the ICMP error to the resend; UDP's includes the next echo request, which waits in REMOTE's echo service's queue.</p>"#
    )?;
    // The SVG comes from our own plotting library; its XML declaration has no place in HTML.
    let svg = charts.find("<svg").map_or(charts, |i| &charts[i..]);
    writeln!(out, "{svg}")?;
    writeln!(out, "</section>")?;
    writeln!(out, "</body></html>")
}

fn kinds(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let latency = match report.client {
        Client::Fake => "PTB to resend",
        Client::Kernel => "exchange",
    };
    writeln!(
        out,
        r#"<table class="kinds"><tr><th>kind</th><th>started</th><th>verified</th><th>failed</th><th>verified flows/s</th><th>{latency} p50 us</th><th>p99 us</th><th>max us</th></tr>"#
    )?;
    for (k, r) in &report.kinds {
        writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            k.name(),
            r.started,
            r.verified,
            r.failed,
            r.verified_flows_per_s,
            r.latency_us.p50,
            r.latency_us.p99,
            r.latency_us.max
        )?;
    }
    let l = &report.latency_us;
    writeln!(
        out,
        "<tr><th>all</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        report.started, report.verified, report.failed, report.verified_flows_per_s, l.p50, l.p99, l.max
    )
}

fn capacity(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    if report.capacity.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        r#"<h2>REMOTE's PMTU state</h2><p class="about">The earliest destinations of each kind, probed again after the flows with a new connection or datagram: does REMOTE still use their path MTU, and does one new ICMP error bring back a forgotten one?</p>"#
    )?;
    writeln!(
        out,
        r#"<table class="kinds"><tr><th>kind</th><th>probed</th><th>remembered</th><th>forgotten</th><th>adopted again</th><th>failed</th></tr>"#
    )?;
    for (k, c) in &report.capacity {
        writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            k.name(),
            c.probed,
            c.remembered,
            c.forgotten,
            c.readopted,
            c.failed
        )?;
    }
    writeln!(out, "</table>")
}

fn failures(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    for g in &report.failures {
        let e = &g.example;
        writeln!(
            out,
            r#"<section class="scenario fail"><h2><span class="verdict fail">FAIL</span>{} flows ({}) <small>{:?}</small></h2>"#,
            g.count,
            escape(&g.kinds_text()),
            g.reason
        )?;
        writeln!(out, r#"<p class="reason">why: {}</p>"#, escape(g.why))?;
        let numbers = e.numbers_text();
        writeln!(
            out,
            r#"<p class="about">e.g. {} {} &#8594; {} mtu {}{}</p>"#,
            e.kind.name(),
            escape(&e.fake),
            escape(&e.remote),
            e.mtu,
            escape(&numbers)
        )?;
        if !e.detail.is_empty() {
            writeln!(out, r#"<p class="about">saw: {}</p>"#, escape(&e.detail))?;
        }
        writeln!(out, "</section>")?;
    }
    Ok(())
}
