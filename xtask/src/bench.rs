//! `cargo xtask bench xdp | suite | vm`.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::Path,
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{bail, Result};

use crate::{
    exec,
    suite_run::{Lab, SuiteRun},
};

/// `pmtu bench xdp ARGS`, its output passed through; its exit status is ours.
pub fn xdp(pmtu: &Path, args: &[OsString]) -> Result<ExitCode> {
    let mut cmd = Command::new(pmtu);
    cmd.args(["bench", "xdp"]).args(args);
    let status = exec::status(&mut cmd)?;
    exec::check_interrupted()?;
    if !status.success() {
        eprintln!(
            "xtask: {} failed with {}",
            exec::describe(&cmd),
            exec::describe_status(status)
        );
    }
    Ok(ExitCode::from(exec::exit_code_of(status)))
}

/// The lab `bench suite` uses (PMTU_LAB overrides it, as for `pmtu`).
const LAB: &str = "pmtu-bench";

/// The original suite's scenarios (OpenBSD's Makefile), timed apart from the quick suite.
const ORIGINAL_NINE: [&str; 9] = [
    "check-setup",
    "ping",
    "ping6",
    "pmtu",
    "pmtu6",
    "udp6",
    "gateway6",
    "tcpfrag6",
    "udpfrag6",
];

/// The quick suite `runs` times on one lab, and the original's nine alone as many times:
/// per-scenario and whole-run medians.
pub fn suite(pmtu: &Path, runs: u32) -> Result<ExitCode> {
    let name = std::env::var("PMTU_LAB").unwrap_or_else(|_| LAB.to_string());
    let lab = Lab::up(pmtu, &name)?;
    let mut results: Vec<SuiteRun> = Vec::new();
    let mut nine: Vec<SuiteRun> = Vec::new();
    let mut failed_runs = 0;
    for i in 1..=runs {
        for (what, names, into) in [
            ("quick suite", &[][..], &mut results),
            ("original nine", &ORIGINAL_NINE[..], &mut nine),
        ] {
            let run = lab.run_scenarios(names)?;
            println!(
                "run {i}/{runs} ({what}): {}, {:.2} s",
                run.counts(),
                run.wall.as_secs_f64()
            );
            if !run.passed() {
                failed_runs += 1;
                for s in run.failures() {
                    println!("  FAIL {}: {}", s.name, s.reason());
                }
            }
            into.push(run);
        }
    }
    drop(lab);
    print_medians(&results, &nine);
    if failed_runs > 0 {
        bail!(
            "{failed_runs} of {} runs had failures: the timings above include them",
            runs * 2
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_medians(results: &[SuiteRun], nine: &[SuiteRun]) {
    // Scenarios in the order of the first run, then any that only appeared later.
    let mut order: Vec<&str> = Vec::new();
    let mut durations: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in results {
        for s in &run.scenarios {
            if !order.contains(&s.name.as_str()) {
                order.push(&s.name);
            }
            durations.entry(&s.name).or_default().push(s.duration_ms);
        }
    }
    let width = order.iter().map(|n| n.len()).max().unwrap_or(0).max(13);
    println!(
        "median over {} runs (scenarios of the quick suite overlap):",
        results.len()
    );
    for name in &order {
        let values = durations.remove(name).unwrap_or_default();
        println!(
            "  {name:<width$} {:>8.1} ms  ({} runs)",
            median(values.clone()),
            values.len()
        );
    }
    let total = |runs: &[SuiteRun]| median(runs.iter().map(|r| r.summary.duration_ms).collect());
    let wall =
        |runs: &[SuiteRun]| median(runs.iter().map(|r| r.wall.as_secs_f64() * 1000.0).collect());
    println!(
        "  {:<width$} {:>8.1} ms  (pmtu's summary, goal <= 200 ms; wall {:.1} ms)",
        "original nine",
        total(nine),
        wall(nine)
    );
    println!(
        "  {:<width$} {:>8.1} ms  (pmtu's summary, goal <= 500 ms; wall {:.1} ms)",
        "quick suite",
        total(results),
        wall(results)
    );
}

/// The lab `bench vm` uses: a temporary one per run, as a user's `pmtu run --kernel debian`.
const VM_LAB: &str = "pmtu-bench-vm";

/// `pmtu run --kernel debian` `runs` times, each booting its own guest: the boot to READY,
/// the suite (the run after its set-up) and the whole run (namespace, boot, suite, clean-up),
/// each run's and the medians. `all`: the whole quick suite; else the original's nine, the
/// suite the goal was set for.
pub fn vm(pmtu: &Path, runs: u32, all: bool) -> Result<ExitCode> {
    let down = || {
        let _ = Command::new(pmtu)
            .args(["lab", "down", "--lab", VM_LAB])
            .stdout(std::process::Stdio::null())
            .status();
    };
    let (mut boot, mut suite, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut failed_runs = 0;
    for i in 1..=runs {
        // A lab of that name left up would be used as it is, without a boot to measure.
        down();
        let mut cmd = Command::new(pmtu);
        cmd.args([
            "run", "--lab", VM_LAB, "--kernel", "debian", "--format", "json",
        ]);
        if !all {
            cmd.args(ORIGINAL_NINE);
        }
        let captured = exec::capture_lines(&mut cmd)?;
        exec::check_interrupted()?;
        let run = SuiteRun::parse(
            &exec::describe(&cmd),
            captured.status,
            &captured.lines,
            captured.wall,
        )?;
        let b = run.summary.boot_to_ready_ms.unwrap_or(f64::NAN) / 1000.0;
        // The scenarios run concurrently: the run's own time after its set-up, not their sum.
        let s = (run.summary.duration_ms - run.summary.setup_ms.unwrap_or(0.0)) / 1000.0;
        let t = run.wall.as_secs_f64();
        println!(
            "run {i}/{runs}: {} (kernel {}): boot_to_ready_s={b:.2} suite_s={s:.2} total_s={t:.2}",
            run.counts(),
            run.summary.remote_kernel.as_deref().unwrap_or("?")
        );
        if !run.passed() {
            failed_runs += 1;
            for f in run.failures() {
                println!("  FAIL {}: {}", f.name, f.reason());
            }
        }
        boot.push(b);
        suite.push(s);
        total.push(t);
    }
    down();
    println!(
        "median of {runs} ({}): boot_to_ready_s={:.2} suite_s={:.2} total_s={:.2} (goal for the \
         original nine: total_s <= 8 under TCG)",
        if all { "quick suite" } else { "original nine" },
        median(boot),
        median(suite),
        median(total)
    );
    if failed_runs > 0 {
        bail!("{failed_runs} of {runs} runs had failures: the timings above include them");
    }
    Ok(ExitCode::SUCCESS)
}

/// The median; the mean of the two middle values for an even count; 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Seconds with one decimal, for progress lines.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
