//! Running scenarios: each from a clean PMTU state, its result turned into an outcome, the
//! run stopped between scenarios when asked.
use std::{future::Future, time::Instant};

use super::{
    report::{print_outcome, Format},
    Ctx, Outcome, Record, Scenario, Verdict,
};

/// Runs `selected` in order, printing each outcome as it comes; stops early (returning
/// `interrupted = true`) when `stop` completes.
pub async fn run_all(
    ctx: &Ctx,
    selected: &[&'static Scenario],
    format: Format,
    stop: impl Future<Output = ()>,
) -> (Vec<Outcome>, bool) {
    let mut outcomes = Vec::new();
    tokio::pin!(stop);
    for scenario in selected {
        tokio::select! {
            outcome = run_one(ctx, scenario) => {
                print_outcome(format, &outcome);
                outcomes.push(outcome);
            }
            _ = &mut stop => return (outcomes, true),
        }
    }
    (outcomes, false)
}

/// Runs one scenario from a clean PMTU state and turns its result into an outcome.
pub async fn run_one(ctx: &Ctx, scenario: &'static Scenario) -> Outcome {
    let started = Instant::now();
    let mut rec = Record::default();
    log::info!("== {}: {}", scenario.name, scenario.about);
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
        (Err(e), _) => (Verdict::Fail, Some(format!("{e:#}"))),
    };
    Outcome {
        kind: "scenario",
        name: scenario.name,
        verdict,
        measured: rec.measured,
        expected: rec.expected,
        reason,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}
