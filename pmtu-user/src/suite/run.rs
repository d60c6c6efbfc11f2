//! Running scenarios: each from a clean PMTU state, its result turned into an outcome, the
//! run stopped between scenarios when asked.
//!
//! When FAKE_NET has room and REMOTE is Linux (whose PMTU state is flushed in one go) in a
//! namespace of this machine, the scenarios that share nothing on REMOTE run at once, each flow from a fake host of its own,
//! after one reset; those marked `alone` follow one by one, each after a reset. Outcomes are
//! reported in the order asked for, each as soon as those before it are. A run that captures
//! packets (a pcap file, an HTML report) runs one scenario at a time, so that every packet is
//! filed under the scenario that caused it.
use std::{collections::BTreeMap, future::Future, io::Write, time::Instant};

use futures::{stream::FuturesUnordered, StreamExt as _};

use super::{report::Reporter, verdict_of, Ctx, Outcome, ProfileName, Record, Scenario, Verdict};

/// Runs `selected`, reporting each outcome in order; stops early (returning
/// `interrupted = true`) when `stop` completes.
pub async fn run_all<W: Write>(
    ctx: &Ctx,
    selected: &[&'static Scenario],
    reporter: &mut Reporter<W>,
    stop: impl Future<Output = ()>,
) -> (Vec<Outcome>, bool) {
    // A REMOTE that is slower than a namespace (a guest under emulation, a machine over ssh)
    // runs them one at a time: with many flows at once an emulated guest sends segments it
    // queued before it read the router's ICMP long after it, and bigger, bigger6 and tiny6
    // judged those as "ignored the ICMP" in 2 of 3 runs against Debian's 6.1 under TCG.
    let together = ctx.profile.name == ProfileName::Linux
        && ctx.capture.is_none()
        && ctx.topo.remote_netns.is_some()
        && ctx.fakes.can_spread();
    ctx.fakes.set_spread(together);
    if together {
        if let Err(e) = ctx.clear_host_rules() {
            log::warn!("clearing the scenarios' rules of an earlier run: {e:#}");
        }
    }
    reporter.start(selected.len());
    let mut printer = Printer {
        reporter,
        next: 0,
        done: BTreeMap::new(),
        outcomes: Vec::new(),
    };
    tokio::pin!(stop);
    let interrupted = 'run: {
        if together {
            // One reset for the whole batch; a failure shows in every scenario of it.
            let reset = ctx.reset_routes().map_err(|e| format!("{e:#}"));
            let mut batch: FuturesUnordered<_> = selected
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.alone)
                .map(|(i, s)| {
                    let reset = reset.clone();
                    async move { (i, run_one(ctx, s, Reset::Done(reset)).await) }
                })
                .collect();
            loop {
                tokio::select! {
                    next = batch.next() => match next {
                        Some((i, outcome)) => printer.done(i, outcome),
                        None => break,
                    },
                    _ = &mut stop => break 'run true,
                }
            }
        }
        for (i, scenario) in selected.iter().enumerate() {
            if together && !scenario.alone {
                continue;
            }
            tokio::select! {
                outcome = run_one(ctx, scenario, Reset::Now) => printer.done(i, outcome),
                _ = &mut stop => break 'run true,
            }
        }
        false
    };
    if together {
        if let Err(e) = ctx.clear_host_rules() {
            log::warn!("clearing the scenarios' rules: {e:#}");
        }
    }
    (printer.outcomes, interrupted)
}

/// Reports outcomes in the order the scenarios were asked for.
struct Printer<'r, W: Write> {
    reporter: &'r mut Reporter<W>,
    next: usize,
    done: BTreeMap<usize, Outcome>,
    outcomes: Vec<Outcome>,
}

impl<W: Write> Printer<'_, W> {
    fn done(&mut self, index: usize, outcome: Outcome) {
        self.done.insert(index, outcome);
        while let Some(outcome) = self.done.remove(&self.next) {
            self.reporter.outcome(&outcome);
            self.outcomes.push(outcome);
            self.next += 1;
        }
    }
}

/// How a scenario gets its clean PMTU state.
enum Reset {
    /// Reset REMOTE and LOCAL now, before it.
    Now,
    /// Already done for a batch, with this result.
    Done(Result<(), String>),
}

/// Runs one scenario from a clean PMTU state and turns its result into an outcome: PASS, SKIP,
/// FAIL for a check on REMOTE that failed, ERROR for anything else.
async fn run_one(ctx: &Ctx, scenario: &'static Scenario, reset: Reset) -> Outcome {
    let started = Instant::now();
    let mut rec = Record::default();
    log::info!("== {}: {}", scenario.name, scenario.about);
    if let Some(c) = &ctx.capture {
        c.begin(scenario.name);
    }
    let mut result = match reset {
        Reset::Now => ctx.reset_routes(),
        Reset::Done(r) => r.map_err(|e| anyhow::anyhow!("{e}")),
    };
    if result.is_ok() {
        result = (scenario.run)(ctx, &mut rec).await;
    }
    // The lab's default for FAKE_NET_ADDR(6) again, whatever the scenario set (the other
    // hosts' rules go at the end of the run).
    if !ctx.fakes.spreading() {
        for addr in [
            ctx.topo.fake_net_addr.into(),
            ctx.topo.fake_net_addr6.into(),
        ] {
            if let Err(e) = ctx.clear_rule(addr) {
                log::warn!("clearing the rule for {addr}: {e:#}");
            }
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
