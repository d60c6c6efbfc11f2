//! Running scenarios: each from a clean PMTU state, its result turned into an outcome, the
//! run stopped between scenarios when asked.
use std::{future::Future, io::Write, time::Instant};

use super::{report::Reporter, verdict_of, Ctx, Outcome, Record, Scenario, Verdict};

/// Runs `selected` in order, reporting each outcome as it comes; stops early (returning
/// `interrupted = true`) when `stop` completes.
pub async fn run_all<W: Write>(
    ctx: &Ctx,
    selected: &[&'static Scenario],
    reporter: &mut Reporter<W>,
    stop: impl Future<Output = ()>,
) -> (Vec<Outcome>, bool) {
    let mut outcomes = Vec::new();
    tokio::pin!(stop);
    reporter.start(selected.len());
    for scenario in selected {
        tokio::select! {
            outcome = run_one(ctx, scenario) => {
                reporter.outcome(&outcome);
                outcomes.push(outcome);
            }
            _ = &mut stop => return (outcomes, true),
        }
    }
    (outcomes, false)
}

/// Runs one scenario from a clean PMTU state and turns its result into an outcome: PASS, SKIP,
/// FAIL for a check on REMOTE that failed, ERROR for anything else.
pub async fn run_one(ctx: &Ctx, scenario: &'static Scenario) -> Outcome {
    let started = Instant::now();
    let mut rec = Record::default();
    log::info!("== {}: {}", scenario.name, scenario.about);
    if let Some(c) = &ctx.capture {
        c.begin(scenario.name);
    }
    let mut result = ctx.reset_routes();
    if result.is_ok() {
        result = (scenario.run)(ctx, &mut rec).await;
    }
    // The lab's default for the fake hosts again, whatever the scenario set.
    for addr in [
        ctx.topo.fake_net_addr.into(),
        ctx.topo.fake_net_addr6.into(),
    ] {
        if let Err(e) = ctx.clear_rule(addr) {
            log::warn!("clearing the rule for {addr}: {e:#}");
        }
    }
    let (verdict, reason) = match (result, rec.skipped.take()) {
        (Ok(()), Some(why)) => (Verdict::Skip, Some(why)),
        (Ok(()), None) => (Verdict::Pass, None),
        (Err(e), _) => (verdict_of(&e), Some(format!("{e:#}"))),
    };
    Outcome {
        kind: "scenario",
        name: scenario.name,
        about: scenario.about,
        verdict,
        measured: rec.measured,
        expected: rec.expected,
        reason,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}
