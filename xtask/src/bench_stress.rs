//! `cargo xtask bench stress`: `pmtu stress` on one namespace lab, measured in one go.
//!
//! Prints `verified_flows_per_s tcp4=.. tcp6=.. udp4=.. udp6=..` (one kind per run),
//! `kernel_limit_flows_per_s tcp=.. udp=..` (the same exchange by LOCAL's kernel sockets: REMOTE's
//! own ceiling), `ratio_to_kernel_limit=..` (the worse of TCP and UDP), then a run of 100,000
//! flows of every kind: `peak_rss_mb_at_100k_flows=..`, and `events_lost=..` over all runs.
//! Last, `pmtu bench responder` on the same lab: `responder_answers_per_s xdp=..
//! kernel_router=.. ratio=..` (REMOTE flooded with oversized DF datagrams, answered by the XDP
//! responder, then by a kernel router; the same for IPv6).
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    exec::{self, describe},
    suite_run::Lab,
};

/// Options of `cargo xtask bench stress`.
#[derive(clap::Args)]
pub struct StressBench {
    /// The lab to bring up (and down) for the benchmark.
    #[arg(long, env = "PMTU_LAB", default_value = "pmtu-stress")]
    lab: String,
    /// Flows per kind for the rates.
    #[arg(long, default_value_t = 20_000)]
    flows: u64,
    /// Flows at once.
    #[arg(long, default_value_t = 128)]
    concurrency: u32,
    /// Flows of the memory run.
    #[arg(long, default_value_t = 100_000)]
    big: u64,
    /// Seconds of each flood of `pmtu bench responder`.
    #[arg(long, default_value_t = 2.0)]
    flood_seconds: f64,
}

/// `pmtu --lab LAB bench responder`: its `responder_answers_per_s` lines.
fn responder_answers(pmtu: &Path, lab: &str, seconds: f64) -> Result<Vec<String>> {
    let mut cmd = Command::new(pmtu);
    cmd.args(["--lab", lab, "bench", "responder", "--seconds"])
        .arg(seconds.to_string());
    let captured = exec::capture_lines(&mut cmd)?;
    exec::check_interrupted()?;
    let lines: Vec<String> = captured
        .lines
        .iter()
        .filter(|l| l.starts_with("responder_answers_per_s"))
        .cloned()
        .collect();
    if !captured.status.success() || lines.is_empty() {
        bail!(
            "{} failed ({}): {}",
            describe(&cmd),
            exec::describe_status(captured.status),
            captured.lines.join(" / ")
        );
    }
    Ok(lines)
}

/// One `pmtu stress ... --format json`: its summary object.
fn stress(pmtu: &Path, lab: &str, args: &[String]) -> Result<Value> {
    let mut cmd = Command::new(pmtu);
    cmd.args(["--lab", lab, "stress", "--format", "json"])
        .args(args);
    let captured = exec::capture_lines(&mut cmd)?;
    exec::check_interrupted()?;
    let line = captured
        .lines
        .iter()
        .find(|l| l.starts_with('{'))
        .with_context(|| {
            format!(
                "{} printed no summary ({})",
                describe(&cmd),
                exec::describe_status(captured.status)
            )
        })?;
    serde_json::from_str(line).with_context(|| format!("{} printed `{line}`", describe(&cmd)))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

/// What went wrong in a run, if anything: failures, lost events, dropped frames.
fn trouble(v: &Value) -> Option<String> {
    let failed = num(v, "failed") as u64;
    let groups = v["failures"].as_array().map_or(0, Vec::len);
    if failed == 0 && groups == 0 && v["valid"] == true {
        return None;
    }
    Some(format!(
        "{failed} failed ({}), events lost {}, frames dropped {}, ICMP errors dropped {}",
        v["failures"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|g| format!("{} x{}", g["reason"], g["count"]))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        v["events_lost"],
        v["frames_dropped"],
        v["icmp_errors_lost"]
    ))
}

pub fn run(pmtu: &Path, opts: &StressBench) -> Result<()> {
    let lab = Lab::up(pmtu, &opts.lab)?;
    let base = |mix: &str, flows: u64, sample: u32| -> Vec<String> {
        [
            "--mix",
            mix,
            "--flows",
            &flows.to_string(),
            "--concurrency",
            &opts.concurrency.to_string(),
            "--sample",
            &sample.to_string(),
        ]
        .map(String::from)
        .to_vec()
    };
    let mut problems = Vec::new();
    let mut events_lost = 0u64;
    let mut note = |what: &str, v: &Value, problems: &mut Vec<String>| {
        events_lost += num(v, "events_lost") as u64;
        if let Some(t) = trouble(v) {
            problems.push(format!("{what}: {t}"));
        }
    };
    let mut rates = Vec::new();
    for kind in ["tcp4", "tcp6", "udp4", "udp6"] {
        let v = stress(pmtu, lab.name(), &base(kind, opts.flows, 0))?;
        note(kind, &v, &mut problems);
        rates.push((kind, num(&v, "verified_flows_per_s")));
    }
    let mut kernel = Vec::new();
    for (proto, mix) in [("tcp", "tcp4,tcp6"), ("udp", "udp4,udp6")] {
        let mut args = base(mix, opts.flows, 0);
        args.extend(["--client", "kernel"].map(String::from));
        let v = stress(pmtu, lab.name(), &args)?;
        if num(&v, "failed") > 0.0 {
            problems.push(format!("kernel client {proto}: {} failed", v["failed"]));
        }
        kernel.push((proto, num(&v, "verified_flows_per_s")));
    }
    let big = stress(
        pmtu,
        lab.name(),
        &base("tcp4,tcp6,udp4,udp6", opts.big, 100),
    )?;
    note("100k run", &big, &mut problems);
    let answers = responder_answers(pmtu, lab.name(), opts.flood_seconds);
    drop(lab);

    let show = |pairs: &[(&str, f64)]| {
        pairs
            .iter()
            .map(|(k, r)| format!("{k}={r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("verified_flows_per_s {}", show(&rates));
    println!("kernel_limit_flows_per_s {}", show(&kernel));
    let worst = |proto: &str| {
        let ours = rates
            .iter()
            .filter(|(k, _)| k.starts_with(proto))
            .map(|(_, r)| *r)
            .fold(f64::INFINITY, f64::min);
        let limit = kernel
            .iter()
            .find(|(p, _)| *p == proto)
            .map_or(0.0, |(_, r)| *r);
        if limit > 0.0 {
            ours / limit
        } else {
            0.0
        }
    };
    let (tcp, udp) = (worst("tcp"), worst("udp"));
    println!(
        "ratio_to_kernel_limit={:.2} (tcp {tcp:.2}, udp {udp:.2})",
        tcp.min(udp)
    );
    println!(
        "peak_rss_mb_at_100k_flows={:.1} ({} flows verified at {} flows/s)",
        num(&big, "peak_rss_mb"),
        big["verified"],
        big["verified_flows_per_s"]
    );
    for (kind, c) in big["capacity"].as_object().into_iter().flatten() {
        println!(
            "capacity_at_100k_flows {kind}: remembered {} of {}, re-adopted {} of {} forgotten",
            c["remembered"], c["probed"], c["readopted"], c["forgotten"]
        );
    }
    println!("events_lost={events_lost}");
    match answers {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(e) => problems.push(format!("bench responder: {e:#}")),
    }
    if !problems.is_empty() {
        bail!("runs with problems:\n  {}", problems.join("\n  "));
    }
    Ok(())
}
