//! A stress run's summary: built from the streamed [`Stats`], printed for people or as one
//! JSON object.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    stats::{FailureGroup, Latency, Reason, Stats},
    Kind, Plan,
};

/// Probes of the earliest destinations of one kind, after the flows.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CapacityKind {
    pub probed: u64,
    /// REMOTE still used the destination's path MTU.
    pub remembered: u64,
    /// REMOTE had forgotten it...
    pub forgotten: u64,
    /// ...and adopted it again on one new ICMP error.
    pub readopted: u64,
    /// The probe found something wrong (counted among the failures too).
    pub failed: u64,
}

#[derive(Debug, Serialize)]
pub struct KindReport {
    pub started: u64,
    pub verified: u64,
    pub failed: u64,
    pub verified_flows_per_s: f64,
    pub latency_us: Latency,
}

/// Who drove the flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// Fake hosts behind the XDP responder, each flow verified.
    Fake,
    /// Plain kernel sockets in LOCAL's namespace doing the same exchange, no PMTU: REMOTE's
    /// own ceiling.
    Kernel,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub client: Client,
    pub net: String,
    pub net6: String,
    /// Distinct fake hosts each network allows.
    pub hosts: u64,
    pub hosts6: u64,
    pub mix: Vec<Kind>,
    pub mtu_min: u16,
    pub mtu_max: u16,
    pub flows: u64,
    pub started: u64,
    pub verified: u64,
    pub failed: u64,
    pub interrupted: bool,
    pub duration_s: f64,
    pub verified_flows_per_s: f64,
    pub kinds: BTreeMap<Kind, KindReport>,
    /// PTB to resend (TCP) or to the fragmented reply (UDP); the whole exchange for the
    /// kernel client.
    pub latency_us: Latency,
    pub failures: Vec<FailureGroup>,
    /// The responder's events_lost counter over the run (None for the kernel client): a run
    /// that lost events is invalid.
    pub events_lost: Option<u64>,
    /// Frames the link between LOCAL and REMOTE dropped over the run (LOCAL_IF's counters,
    /// and in a lab REMOTE's end too): lost ICMP errors or segments make verdicts
    /// meaningless, so such a run is invalid as well.
    pub frames_dropped: Option<u64>,
    /// The responder's ICMP errors the link dropped (XDP_TX finding REMOTE's receive ring
    /// full), not counted in `frames_dropped`: a flow whose error was lost sees REMOTE resend
    /// at the quoted size and has the error sent again (`answered_again`). Such a run stays
    /// valid unless a flow failed as if REMOTE ignored the error: that one may have lost both.
    pub icmp_errors_lost: Option<u64>,
    /// Verified flows whose ICMP error was sent twice.
    pub answered_again: u64,
    /// No events lost, no other frames dropped, and no failure a lost ICMP error explains.
    pub valid: bool,
    pub cpu_s: f64,
    pub peak_rss_mb: f64,
    pub capacity: BTreeMap<Kind, CapacityKind>,
    pub verified_per_second: Vec<u64>,
}

impl Report {
    pub fn new(plan: &Plan, client: Client, stats: &Stats) -> Self {
        let duration_s = stats.duration_s();
        let rate = |n: u64| {
            if duration_s > 0.0 {
                (n as f64 / duration_s * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        let kinds = stats
            .kinds
            .iter()
            .map(|(k, s)| {
                (
                    *k,
                    KindReport {
                        started: s.started,
                        verified: s.verified,
                        failed: s.failed,
                        verified_flows_per_s: rate(s.verified),
                        latency_us: Latency::of(&s.latency_us),
                    },
                )
            })
            .collect();
        let mut mix = plan.mix.clone();
        mix.sort();
        mix.dedup();
        let capped = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
        Report {
            kind: "stress",
            client,
            net: plan.hosts.v4.to_string(),
            net6: plan.hosts.v6.to_string(),
            hosts: capped(plan.hosts.count(false)),
            hosts6: capped(plan.hosts.count(true)),
            mix,
            mtu_min: *plan.mtu.start(),
            mtu_max: *plan.mtu.end(),
            flows: plan.flows,
            started: stats.started_total(),
            verified: stats.verified(),
            failed: stats.failed(),
            interrupted: stats.interrupted,
            duration_s: (duration_s * 1000.0).round() / 1000.0,
            verified_flows_per_s: rate(stats.verified()),
            kinds,
            latency_us: Latency::of(&stats.latency_us),
            failures: stats.failures.values().cloned().collect(),
            events_lost: None,
            frames_dropped: None,
            icmp_errors_lost: None,
            answered_again: stats.answered_again,
            valid: true,
            cpu_s: 0.0,
            peak_rss_mb: 0.0,
            capacity: BTreeMap::new(),
            verified_per_second: stats.per_second.clone(),
        }
    }

    /// The process's CPU time (user + system) and peak RSS so far.
    pub fn add_usage(&mut self) {
        if let Ok(u) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            self.cpu_s = ((secs(u.user_time()) + secs(u.system_time())) * 100.0).round() / 100.0;
            // Linux reports ru_maxrss in kilobytes.
            self.peak_rss_mb = (u.max_rss() as f64 / 1024.0 * 10.0).round() / 10.0;
        }
    }

    pub fn set_events_lost(&mut self, lost: u64) {
        self.events_lost = Some(lost);
        self.valid &= lost == 0;
    }

    /// The link's losses over the run: ICMP errors the responder sent that were dropped, and
    /// every other frame dropped.
    pub fn set_frames_dropped(&mut self, icmp_errors: u64, others: u64) {
        self.frames_dropped = Some(others);
        self.icmp_errors_lost = Some(icmp_errors);
        self.valid &= others == 0 && !self.failure_a_lost_icmp_explains();
    }

    /// The flows verified only after a second ICMP error, and why the first did not count.
    pub fn second_errors_text(&self) -> String {
        let lost = self.icmp_errors_lost.unwrap_or(0);
        let ignored = self.answered_again.saturating_sub(lost);
        let mut text = format!(
            "{} flows verified only after a second ICMP error; {lost} errors dropped on the link",
            self.answered_again
        );
        if ignored > 0 {
            text += &format!(", so for at least {ignored} REMOTE dropped or ignored the first one");
        }
        text
    }

    /// A failure that a lost ICMP error explains: REMOTE resent or replied at the quoted size
    /// although the error was sent twice, when errors were lost on the link.
    pub fn failure_a_lost_icmp_explains(&self) -> bool {
        self.icmp_errors_lost.is_some_and(|n| n > 0)
            && self
                .failures
                .iter()
                .any(|g| g.reason == Reason::IgnoredIcmp)
    }

    /// Every flow and probe verified, and nothing lost.
    pub fn passed(&self) -> bool {
        self.failed == 0 && self.failures.is_empty() && self.valid
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The summary for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let mix: Vec<&str> = self.mix.iter().map(|k| k.name()).collect();
        let what = match self.client {
            Client::Fake => format!(
                "from fake hosts in {} ({} hosts) and {}",
                self.net, self.hosts, self.net6
            ),
            Client::Kernel => "from LOCAL's kernel sockets (no PMTU: REMOTE's ceiling)".into(),
        };
        let latency_name = match self.client {
            Client::Fake => "PTB to resend",
            Client::Kernel => "exchange",
        };
        out += &format!(
            "stress: {} of {} flows ({}, MTU {}-{}) {what}\n",
            self.started,
            self.flows,
            mix.join(" "),
            self.mtu_min,
            self.mtu_max
        );
        out += &format!(
            "  {} verified, {} failed in {:.2} s: {} verified flows/s{}\n",
            self.verified,
            self.failed,
            self.duration_s,
            self.verified_flows_per_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        for (k, r) in &self.kinds {
            out += &format!(
                "  {:<5} {:>7} verified {:>5} failed {:>9} flows/s  {latency_name} p50 {} us, p99 {} us, max {} us\n",
                k.name(),
                r.verified,
                r.failed,
                r.verified_flows_per_s,
                r.latency_us.p50,
                r.latency_us.p99,
                r.latency_us.max
            );
        }
        let l = &self.latency_us;
        out += &format!(
            "  {latency_name}: p50 {} us, p99 {} us, max {} us\n",
            l.p50, l.p99, l.max
        );
        for (k, c) in &self.capacity {
            out += &format!(
                "  {}: REMOTE remembered PMTU for {} of {} destinations; {} forgotten, {} of them adopted it again on one new PTB\n",
                k.name(),
                c.remembered,
                c.probed,
                c.forgotten,
                c.readopted
            );
        }
        if let Some(lost) = self.events_lost {
            out += &format!("  events lost: {lost}\n");
        }
        if let Some(dropped) = self.frames_dropped {
            out += &format!("  frames dropped on the link: {dropped}\n");
        }
        if self.answered_again > 0 || self.icmp_errors_lost.is_some_and(|n| n > 0) {
            out += &format!("  {}\n", self.second_errors_text());
        }
        out += &format!(
            "  pmtu: CPU {:.2} s, peak RSS {:.1} MB\n",
            self.cpu_s, self.peak_rss_mb
        );
        for g in &self.failures {
            let e = &g.example;
            out += &format!(
                "FAIL {} flows ({}): {} ({:?})\n",
                g.count,
                g.kinds_text(),
                g.why,
                g.reason
            );
            let numbers = e.numbers_text();
            out += &format!(
                "     e.g. {} {} -> {} mtu {}{numbers}\n",
                e.kind.name(),
                e.fake,
                e.remote,
                e.mtu
            );
            if !e.detail.is_empty() {
                out += &format!("     saw: {}\n", e.detail);
            }
        }
        if !self.valid && self.events_lost.is_some_and(|n| n > 0) {
            out += &format!(
                "INVALID: the responder lost {} events (its ring buffer was full): lower --rate or --concurrency\n",
                self.events_lost.unwrap_or(0)
            );
        }
        if self.failure_a_lost_icmp_explains() {
            out += &format!(
                "INVALID: the link dropped {} of the responder's ICMP errors and some flows saw REMOTE ignore two errors: both may have been lost; lower --rate or --concurrency\n",
                self.icmp_errors_lost.unwrap_or(0)
            );
        }
        if !self.valid && self.frames_dropped.is_some_and(|n| n > 0) {
            out += &format!(
                "INVALID: the link dropped {} frames (its queues were full, so ICMP errors or segments may never have arrived): lower --rate or --concurrency\n",
                self.frames_dropped.unwrap_or(0)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::stress::{stats::Failure, Live, Outcome};

    fn plan() -> Plan {
        Plan {
            flows: 3,
            concurrency: 1,
            mtu: 1300..=1300,
            sample: 0,
            seed: 1,
            ..Plan::for_tests(vec![Kind::Tcp4])
        }
    }

    /// A run of three flows: two verified (`again` of them after a second ICMP error) and,
    /// with `failure`, one failed for that reason.
    fn report(again: u64, failure: Option<Reason>) -> Report {
        let plan = plan();
        let live = Live::default();
        let mut stats = Stats::new(&plan);
        for n in 0..3 {
            let spec = plan.flow(n).unwrap();
            let outcome = match (n, failure) {
                (2, Some(reason)) => Failure::new(&spec, reason).boxed(),
                _ => Outcome::Verified {
                    latency_ns: 30_000,
                    answered_again: n < again,
                },
            };
            stats.record(&spec, outcome, &live);
        }
        Report::new(&plan, Client::Fake, &stats)
    }

    #[test]
    fn lost_icmp_errors_leave_a_run_valid_unless_a_flow_failed_as_ignoring_them() {
        let mut r = report(2, None);
        r.set_frames_dropped(2, 0);
        assert!(r.valid && r.passed());
        assert_eq!(r.answered_again, 2);
        assert_eq!(
            r.second_errors_text(),
            "2 flows verified only after a second ICMP error; 2 errors dropped on the link"
        );

        let mut r = report(1, Some(Reason::IgnoredIcmp));
        r.set_frames_dropped(1, 0);
        assert!(
            !r.valid,
            "both errors of the failed flow may have been lost"
        );

        let mut r = report(0, Some(Reason::IgnoredIcmp));
        r.set_frames_dropped(0, 0);
        assert!(r.valid && !r.passed(), "nothing lost: REMOTE ignored them");

        let mut r = report(0, Some(Reason::AboveMtu));
        r.set_frames_dropped(3, 0);
        assert!(
            r.valid,
            "a lost error does not make REMOTE use a larger MTU"
        );

        let mut r = report(0, None);
        r.set_frames_dropped(0, 1);
        assert!(!r.valid, "another frame dropped");
    }

    #[test]
    fn second_errors_beyond_the_lost_ones_are_remotes() {
        let mut r = report(2, None);
        r.set_frames_dropped(0, 0);
        assert_eq!(
            r.second_errors_text(),
            "2 flows verified only after a second ICMP error; 0 errors dropped on the link, so for at least 2 REMOTE dropped or ignored the first one"
        );
    }
}
