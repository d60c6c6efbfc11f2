//! A stress run's results, streamed: counters, latency histograms, verified flows per second,
//! failures grouped by reason with one example each, and the earliest verified destinations
//! (for the capacity probe). Nothing grows with the number of flows except the per-second
//! series (with the run's length) and the sample (bounded).
use std::{collections::BTreeMap, sync::atomic::Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::{FlowSpec, Kind, Live, Outcome, Plan, FLOW_LIMIT};

/// Why a flow failed: REMOTE's behaviour, in words. The grouping key of the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NoHandshake,
    NoData,
    NoDf,
    NotAnswered,
    IgnoredIcmp,
    AboveMtu,
    BelowMtu,
    NoResend,
    PartialResend,
    LargerAfterAdopting,
    NoEchoReply,
    ReplyLength,
    FragmentedEarly,
    NotFragmented,
    FragmentLength,
    AtomicFragment,
    DfOnFragment,
    TimedOut,
    KernelClient,
}

impl Reason {
    pub fn why(self) -> &'static str {
        match self {
            Reason::NoHandshake => "no SYN+ACK from REMOTE's TCP service (overloaded, or not listening)",
            Reason::NoData => "REMOTE sent no segment larger than the announced MTU",
            Reason::NoDf => "REMOTE sent a too-big packet without DF: path MTU discovery is off on REMOTE",
            Reason::NotAnswered => "the responder did not answer the too-big packet",
            Reason::IgnoredIcmp => "REMOTE ignored the ICMP error: it resent at the quoted size",
            Reason::AboveMtu => "REMOTE used a larger path MTU than announced (a clamp such as net.ipv4.route.min_pmtu?)",
            Reason::BelowMtu => "REMOTE went below the announced MTU (another destination's path MTU?)",
            Reason::NoResend => "REMOTE did not resend the quoted data",
            Reason::PartialResend => "REMOTE resent only part of the quoted data",
            Reason::LargerAfterAdopting => "REMOTE sent a segment larger than the path MTU it had adopted",
            Reason::NoEchoReply => "no echo reply from REMOTE",
            Reason::ReplyLength => "the echo reply does not carry the request's payload",
            Reason::FragmentedEarly => "REMOTE fragmented before any ICMP error (stale path MTU state?)",
            Reason::NotFragmented => "REMOTE ignored the ICMP error: the next reply is not fragmented",
            Reason::FragmentLength => "fragments must fill the path MTU in multiples of 8 octets",
            Reason::AtomicFragment => "REMOTE sent an atomic fragment (RFC 8021)",
            Reason::DfOnFragment => "REMOTE's IPv4 fragments carry DF",
            Reason::TimedOut => "the flow did not end in time",
            Reason::KernelClient => "the kernel client's exchange failed",
        }
    }
}

/// One failed flow, as the example of its reason.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub reason: Reason,
    pub kind: Kind,
    pub fake: String,
    pub remote: String,
    pub mtu: u16,
    /// What was measured and what was expected, as `name=value`.
    pub measured: String,
    pub expected: String,
    /// What was seen, for people (the packets, or the error).
    pub detail: String,
}

impl Failure {
    /// `: MEASURED (expected EXPECTED)`, or nothing when nothing was measured.
    pub fn numbers_text(&self) -> String {
        if self.measured.is_empty() {
            String::new()
        } else {
            format!(": {} (expected {})", self.measured, self.expected)
        }
    }

    pub fn new(spec: &FlowSpec, reason: Reason) -> Self {
        Failure {
            reason,
            kind: spec.kind,
            fake: spec.fake.to_string(),
            remote: spec.remote.to_string(),
            mtu: spec.mtu,
            measured: String::new(),
            expected: String::new(),
            detail: String::new(),
        }
    }

    pub fn measured(
        mut self,
        name: &str,
        measured: impl ToString,
        expected: impl ToString,
    ) -> Self {
        self.measured = format!("{name}={}", measured.to_string());
        self.expected = format!("{name}={}", expected.to_string());
        self
    }

    pub fn detail(mut self, detail: impl ToString) -> Self {
        self.detail = detail.to_string();
        self
    }

    pub fn timed_out(spec: &FlowSpec) -> Self {
        Failure::new(spec, Reason::TimedOut).detail(format!("over {} s", FLOW_LIMIT.as_secs()))
    }

    pub fn boxed(self) -> Outcome {
        Outcome::Failed(Box::new(self))
    }
}

/// Failures of one reason.
#[derive(Clone, Debug, Serialize)]
pub struct FailureGroup {
    pub reason: Reason,
    pub why: &'static str,
    pub count: u64,
    /// The count by kind of flow.
    pub kinds: BTreeMap<Kind, u64>,
    pub example: Failure,
}

impl FailureGroup {
    /// The count by kind, for people: `tcp4 3, udp6 1`.
    pub fn kinds_text(&self) -> String {
        self.kinds
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Microseconds from 1 to a minute, 3 significant digits.
fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 60_000_000, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds: {e}"),
    }
}

/// Per kind of flow.
#[derive(Debug)]
pub struct KindStats {
    pub started: u64,
    pub verified: u64,
    pub failed: u64,
    pub latency_us: Histogram<u64>,
}

pub struct Stats {
    pub kinds: BTreeMap<Kind, KindStats>,
    pub latency_us: Histogram<u64>,
    /// Verified flows in each second of the run.
    pub per_second: Vec<u64>,
    pub failures: BTreeMap<Reason, FailureGroup>,
    /// Verified flows whose ICMP error was sent twice (the first may have been lost).
    pub answered_again: u64,
    /// The earliest verified flows of each kind (ordinal below the sample size).
    pub earliest: BTreeMap<Kind, Vec<FlowSpec>>,
    pub interrupted: bool,
    sample: u64,
    start: Option<Instant>,
    end: Option<Instant>,
}

impl Stats {
    pub fn new(plan: &Plan) -> Self {
        let mut kinds = BTreeMap::new();
        for k in &plan.mix {
            kinds.entry(*k).or_insert_with(|| KindStats {
                started: 0,
                verified: 0,
                failed: 0,
                latency_us: histogram(),
            });
        }
        Stats {
            kinds,
            latency_us: histogram(),
            per_second: Vec::new(),
            failures: BTreeMap::new(),
            answered_again: 0,
            earliest: BTreeMap::new(),
            interrupted: false,
            sample: plan.sample as u64,
            start: None,
            end: None,
        }
    }

    pub fn started_at(&mut self, t: Instant) {
        self.start = Some(t);
    }

    pub fn ended_at(&mut self, t: Instant) {
        self.end = Some(t);
    }

    /// Seconds from the first flow's start to the last one's end.
    pub fn duration_s(&self) -> f64 {
        match (self.start, self.end) {
            (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
            (Some(s), None) => s.elapsed().as_secs_f64(),
            _ => 0.0,
        }
    }

    pub fn started(&mut self, spec: &FlowSpec) {
        if let Some(k) = self.kinds.get_mut(&spec.kind) {
            k.started += 1;
        }
    }

    pub fn record(&mut self, spec: &FlowSpec, outcome: Outcome, live: &Live) {
        let Some(k) = self.kinds.get_mut(&spec.kind) else {
            return;
        };
        match outcome {
            Outcome::Verified {
                latency_ns,
                answered_again,
            } => {
                k.verified += 1;
                self.answered_again += answered_again as u64;
                live.verified.fetch_add(1, Ordering::Relaxed);
                let us = (latency_ns / 1000).clamp(1, 60_000_000);
                k.latency_us.saturating_record(us);
                self.latency_us.saturating_record(us);
                let second = self.start.map(|s| s.elapsed().as_secs()).unwrap_or(0) as usize;
                if self.per_second.len() <= second {
                    self.per_second.resize(second + 1, 0);
                }
                self.per_second[second] += 1;
                if spec.ordinal < self.sample {
                    self.earliest.entry(spec.kind).or_default().push(*spec);
                }
            }
            Outcome::Failed(failure) => {
                k.failed += 1;
                live.failed.fetch_add(1, Ordering::Relaxed);
                self.add_failure(*failure);
            }
        }
    }

    pub fn add_failure(&mut self, failure: Failure) {
        let kind = failure.kind;
        let group = self
            .failures
            .entry(failure.reason)
            .or_insert_with(|| FailureGroup {
                reason: failure.reason,
                why: failure.reason.why(),
                count: 0,
                kinds: BTreeMap::new(),
                example: failure,
            });
        group.count += 1;
        *group.kinds.entry(kind).or_default() += 1;
    }

    pub fn verified(&self) -> u64 {
        self.kinds.values().map(|k| k.verified).sum()
    }

    pub fn failed(&self) -> u64 {
        self.kinds.values().map(|k| k.failed).sum()
    }

    pub fn started_total(&self) -> u64 {
        self.kinds.values().map(|k| k.started).sum()
    }
}

/// p50, p99 and the largest, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::stress::Plan;

    #[test]
    fn failures_group_by_reason_keeping_the_first_example() {
        let plan = Plan {
            flows: 4,
            concurrency: 1,
            mtu: 1300..=1300,
            sample: 1,
            seed: 1,
            ..Plan::for_tests(vec![Kind::Tcp4])
        };
        let live = Live::default();
        let mut stats = Stats::new(&plan);
        stats.started_at(Instant::now());
        for n in 0..4 {
            let spec = plan.flow(n).unwrap();
            stats.started(&spec);
            let outcome = match n {
                0 => Outcome::Verified {
                    latency_ns: 30_000,
                    answered_again: false,
                },
                1 | 2 => Failure::new(&spec, Reason::IgnoredIcmp)
                    .measured("retransmit_ip_len", 1500, 1300)
                    .boxed(),
                _ => Failure::new(&spec, Reason::AboveMtu).boxed(),
            };
            stats.record(&spec, outcome, &live);
        }
        assert_eq!(live.get(), (0, 1, 3));
        assert_eq!((stats.verified(), stats.failed()), (1, 3));
        let ignored = &stats.failures[&Reason::IgnoredIcmp];
        assert_eq!(ignored.count, 2);
        assert_eq!(ignored.kinds[&Kind::Tcp4], 2);
        // Flow 1 (the first of the two), from the second fake host.
        assert!(
            ignored.example.fake.starts_with("198.18.0.2:"),
            "{ignored:?}"
        );
        assert_eq!(ignored.example.measured, "retransmit_ip_len=1500");
        assert_eq!(ignored.example.expected, "retransmit_ip_len=1300");
        assert_eq!(stats.failures[&Reason::AboveMtu].count, 1);
        assert_eq!(stats.earliest[&Kind::Tcp4].len(), 1);
        assert_eq!(Latency::of(&stats.latency_us).p50, 30);
    }
}
