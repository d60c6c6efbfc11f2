//! `cargo xtask soak --runs N`: N consecutive runs of the suite on one lab; all must pass.
use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::{bail, Result};

use crate::{
    bench::{median, secs},
    exec::{self, Interrupted},
    suite_run::Lab,
};

const LAB: &str = "pmtu-soak";

pub fn soak(pmtu: &Path, runs: u32) -> Result<ExitCode> {
    let lab = Lab::up(pmtu, LAB)?;
    let mut failed_runs = 0u32;
    let mut walls = Vec::new();
    for i in 1..=runs {
        match lab.run_suite() {
            Ok(run) => {
                walls.push(run.wall.as_secs_f64());
                println!("run {i}/{runs}: {}, {}", run.counts(), secs(run.wall));
                if !run.passed() {
                    failed_runs += 1;
                    for s in run.failures() {
                        println!("  FAIL {}: {}", s.name, s.reason());
                    }
                }
            }
            Err(e) if e.is::<Interrupted>() => return Err(e),
            Err(e) => {
                // A crash or an error of pmtu is a failed run too; the soak goes on.
                failed_runs += 1;
                println!("run {i}/{runs}: ERROR: {e:#}");
            }
        }
        exec::check_interrupted()?;
    }
    drop(lab);
    let mut line = format!(
        "soak: {}/{runs} runs passed on lab {LAB}",
        runs - failed_runs
    );
    if !walls.is_empty() {
        let max = walls.iter().copied().fold(0.0, f64::max);
        line.push_str(&format!(
            "; wall time median {}, max {}",
            secs(Duration::from_secs_f64(median(walls))),
            secs(Duration::from_secs_f64(max)),
        ));
    }
    println!("{line}");
    if failed_runs > 0 {
        bail!("{failed_runs} of {runs} runs failed: see the lines above");
    }
    Ok(ExitCode::SUCCESS)
}
