//! High-rate stress: thousands of flows at once, each from its own fake host with its own MTU,
//! each verified as the scenarios verify one (TCP resends the quoted data at exactly the
//! announced size; UDP replies come fragmented at it), then a sample of the earliest
//! destinations probed again to see how much PMTU state REMOTE keeps.
//!
//! The rooms: `flows` (one TCP or UDP flow, and the capacity probe), `stats` (streamed
//! results: counters, histograms, failures grouped by reason; no per-flow history), `kernel`
//! (the same exchange by plain kernel sockets: REMOTE's own ceiling), `plot` (the SVG).
pub mod flows;
pub mod kernel;
pub mod page;
pub mod plot;
pub mod report;
pub mod stats;

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::RangeInclusive,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;
use tokio::{task::JoinSet, time::Instant};

use super::Ctx;
use flows::Probe;
use report::CapacityKind;
use stats::{Failure, Stats};

/// The most flows at once: every flow holds one /32 or /128 rule in the responder's LPM
/// trie, which has 4096 entries per family, a few of them the lab's own prefixes.
pub const MAX_CONCURRENCY: usize = 4000;
/// A flow that has not finished by then is a failure (every wait inside it is shorter).
pub const FLOW_LIMIT: Duration = Duration::from_secs(10);
/// IP length of the packets that are too big: a full-size frame on a 1500-byte link.
pub const FULL_SIZE: u16 = 1500;

/// What one flow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Tcp4,
    Tcp6,
    Udp4,
    Udp6,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Tcp4, Kind::Tcp6, Kind::Udp4, Kind::Udp6];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp4 => "tcp4",
            Kind::Tcp6 => "tcp6",
            Kind::Udp4 => "udp4",
            Kind::Udp6 => "udp6",
        }
    }

    pub fn v6(self) -> bool {
        matches!(self, Kind::Tcp6 | Kind::Udp6)
    }

    pub fn tcp(self) -> bool {
        matches!(self, Kind::Tcp4 | Kind::Tcp6)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The smallest MTU the family allows: IPv6's 1280 (RFC 8200); for IPv4 the 576 every
    /// host must accept (RFC 791), above Linux's min_pmtu of 552.
    pub fn min_mtu(self) -> u16 {
        if self.v6() {
            1280
        } else {
            576
        }
    }
}

/// The fake hosts: the n-th usable address of a family's network, skipping the network and
/// broadcast addresses (IPv4), the subnet-router anycast address (IPv6) and any address
/// already in use (FAKE_NET_ADDR on a real REMOTE).
#[derive(Clone, Debug)]
pub struct Hosts {
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
    /// Offsets into the networks never handed out, ascending.
    skip_v4: Vec<u128>,
    skip_v6: Vec<u128>,
}

impl Hosts {
    pub fn new(v4: Ipv4Net, v6: Ipv6Net, in_use: &[IpAddr]) -> Self {
        let mut skip_v4: Vec<u128> = in_use
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(a) if v4.contains(a) => {
                    Some((u32::from(*a) - u32::from(v4.network())) as u128)
                }
                _ => None,
            })
            .collect();
        let mut skip_v6: Vec<u128> = in_use
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(a) if v6.contains(a) => Some(u128::from(*a) - u128::from(v6.network())),
                _ => None,
            })
            .collect();
        skip_v4.sort_unstable();
        skip_v4.dedup();
        skip_v6.sort_unstable();
        skip_v6.dedup();
        Self {
            v4,
            v6,
            skip_v4,
            skip_v6,
        }
    }

    /// How many distinct fake hosts a family's network allows.
    pub fn count(&self, v6: bool) -> u128 {
        if v6 {
            let size = 1u128.checked_shl(128 - self.v6.prefix_len() as u32);
            size.unwrap_or(u128::MAX)
                .saturating_sub(1 + self.skip_v6.len() as u128)
        } else {
            (1u128 << (32 - self.v4.prefix_len() as u32))
                .saturating_sub(2 + self.skip_v4.len() as u128)
        }
    }

    /// The n-th fake host of a family (from 0), if the network is large enough.
    pub fn host(&self, v6: bool, n: u64) -> Option<IpAddr> {
        if n as u128 >= self.count(v6) {
            return None;
        }
        let skip = if v6 { &self.skip_v6 } else { &self.skip_v4 };
        let mut offset = 1 + n as u128;
        for s in skip {
            if *s <= offset {
                offset += 1;
            }
        }
        Some(if v6 {
            IpAddr::V6(Ipv6Addr::from(u128::from(self.v6.network()) + offset))
        } else {
            IpAddr::V4(Ipv4Addr::from(u32::from(self.v4.network()) + offset as u32))
        })
    }
}

/// What a stress run does.
#[derive(Clone, Debug)]
pub struct Plan {
    pub flows: u64,
    pub concurrency: usize,
    /// Flows started per second at most; None: as fast as the concurrency allows.
    pub rate: Option<f64>,
    /// Flows take the kinds in turn.
    pub mix: Vec<Kind>,
    pub mtu: RangeInclusive<u16>,
    pub hosts: Hosts,
    pub remote4: Ipv4Addr,
    pub remote6: Ipv6Addr,
    /// REMOTE's bulk-sending TCP service (chargen) and its UDP echo.
    pub tcp_port: u16,
    pub udp_port: u16,
    /// Earliest destinations per kind probed again after the flows.
    pub sample: usize,
    /// Makes the MTUs drawn from the range reproducible.
    pub seed: u64,
}

impl Plan {
    /// Flow `n`: its kind, fake host (the next of its family), REMOTE's service and MTU.
    pub fn flow(&self, n: u64) -> Result<FlowSpec> {
        let len = self.mix.len() as u64;
        let kind = *self
            .mix
            .get((n % len.max(1)) as usize)
            .ok_or_else(|| anyhow!("the mix of flow kinds is empty"))?;
        // Flows of the same family before this one: whole rounds of the mix, then this round.
        let family_per_round = self.mix.iter().filter(|k| k.v6() == kind.v6()).count() as u64;
        let in_round = self.mix[..(n % len) as usize]
            .iter()
            .filter(|k| k.v6() == kind.v6())
            .count() as u64;
        let host_n = (n / len) * family_per_round + in_round;
        let fake = self.hosts.host(kind.v6(), host_n).ok_or_else(|| {
            anyhow!(
                "flow {n} needs fake host number {host_n} of {}, which allows {}",
                if kind.v6() {
                    self.hosts.v6.to_string()
                } else {
                    self.hosts.v4.to_string()
                },
                self.hosts.count(kind.v6())
            )
        })?;
        let (ip, port): (IpAddr, u16) = match (kind.v6(), kind.tcp()) {
            (false, true) => (self.remote4.into(), self.tcp_port),
            (false, false) => (self.remote4.into(), self.udp_port),
            (true, true) => (self.remote6.into(), self.tcp_port),
            (true, false) => (self.remote6.into(), self.udp_port),
        };
        let span = (*self.mtu.end() - *self.mtu.start()) as u64 + 1;
        let mtu = *self.mtu.start() + (splitmix64(self.seed ^ n) % span) as u16;
        Ok(FlowSpec {
            n,
            ordinal: (n / len) * self.mix.iter().filter(|k| **k == kind).count() as u64
                + self.mix[..(n % len) as usize]
                    .iter()
                    .filter(|k| **k == kind)
                    .count() as u64,
            kind,
            fake: SocketAddr::new(fake, super::random_port()),
            remote: SocketAddr::new(ip, port),
            mtu,
        })
    }

    /// How many flows of `kind` the plan has.
    pub fn flows_of(&self, kind: Kind) -> u64 {
        (0..self.mix.len() as u64)
            .filter(|i| self.mix[*i as usize] == kind)
            .map(|i| {
                let len = self.mix.len() as u64;
                self.flows / len + u64::from(i < self.flows % len)
            })
            .sum()
    }
}

/// SplitMix64: a well-spread hash of the flow number, for its MTU.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One flow.
#[derive(Clone, Copy, Debug)]
pub struct FlowSpec {
    /// Its number in the run, from 0.
    pub n: u64,
    /// Its number among the flows of its kind, from 0 (the earliest are probed again).
    pub ordinal: u64,
    pub kind: Kind,
    pub fake: SocketAddr,
    pub remote: SocketAddr,
    pub mtu: u16,
}

/// How a flow ended. A LOCAL problem is no outcome but an error that ends the run.
#[derive(Debug)]
pub enum Outcome {
    /// Verified; the latency from the ICMP error to the resend (TCP) or to the fragmented
    /// reply (UDP), or of the whole exchange for the kernel client.
    Verified {
        latency_ns: u64,
        /// The flow's ICMP error was sent a second time (the first may have been lost).
        answered_again: bool,
    },
    Failed(Box<Failure>),
}

/// What a run shows while it goes: read by the progress display.
#[derive(Default, Debug)]
pub struct Live {
    pub started: AtomicU64,
    pub verified: AtomicU64,
    pub failed: AtomicU64,
}

impl Live {
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.verified.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Runs `plan`'s flows through `flow`, at most `concurrency` at once and `rate` started per
/// second, until all have ended or `stop` completes (then the flows under way are dropped,
/// which resets their connections and removes their rules). Results are streamed into the
/// returned [`Stats`]; `interrupted` is set when `stop` ended the run.
pub async fn drive<F, Fut>(
    plan: &Plan,
    live: &Live,
    stop: impl Future<Output = ()>,
    flow: F,
) -> Result<Stats>
where
    F: Fn(FlowSpec) -> Fut,
    Fut: Future<Output = Result<Outcome>> + Send + 'static,
{
    let mut stats = Stats::new(plan);
    let mut set: JoinSet<(FlowSpec, Result<Outcome>)> = JoinSet::new();
    let start = Instant::now();
    stats.started_at(start);
    tokio::pin!(stop);
    let mut n = 0u64;
    let result = loop {
        if n >= plan.flows && set.is_empty() {
            break Ok(());
        }
        let can_start = n < plan.flows && set.len() < plan.concurrency;
        let due = match plan.rate {
            Some(r) => start + Duration::from_secs_f64(n as f64 / r),
            None => start,
        };
        tokio::select! {
            biased;
            _ = &mut stop => {
                stats.interrupted = true;
                break Ok(());
            }
            joined = set.join_next(), if !set.is_empty() => {
                let Some(joined) = joined else { continue };
                let (spec, outcome) = match joined {
                    Ok(done) => done,
                    Err(e) => break Err(anyhow!("a stress flow panicked: {e}")),
                };
                match outcome {
                    Ok(outcome) => stats.record(&spec, outcome, live),
                    Err(e) => break Err(e.context(format!(
                        "flow {} ({} {} -> {})", spec.n, spec.kind.name(), spec.fake, spec.remote
                    ))),
                }
            }
            _ = tokio::time::sleep_until(due), if can_start => {
                let spec = match plan.flow(n) {
                    Ok(s) => s,
                    Err(e) => break Err(e),
                };
                n += 1;
                live.started.fetch_add(1, Ordering::Relaxed);
                stats.started(&spec);
                let fut = flow(spec);
                set.spawn(async move {
                    let outcome = match tokio::time::timeout(FLOW_LIMIT, fut).await {
                        Ok(outcome) => outcome,
                        Err(_) => Ok(Outcome::Failed(Box::new(Failure::timed_out(&spec)))),
                    };
                    (spec, outcome)
                });
            }
        }
    };
    // Flows still under way (Ctrl-C, or a LOCAL error) are dropped here: their guards reset
    // the connections and remove the rules.
    set.shutdown().await;
    stats.ended_at(Instant::now());
    result.map(|()| stats)
}

/// Probes at once in the capacity check, at most (and no more than the run's flows at once).
const PROBE_CONCURRENCY: usize = 64;

/// State capacity: probes the earliest verified destinations of each kind again (a new
/// connection or datagram) and counts those whose path MTU REMOTE still used, and those it
/// had forgotten and adopted again on one new ICMP error. A probe that finds something wrong
/// is a failure too.
pub async fn probe_earliest(
    ctx: Arc<Ctx>,
    concurrency: usize,
    stats: &mut Stats,
    stop: impl Future<Output = ()>,
) -> Result<BTreeMap<Kind, CapacityKind>> {
    let mut out: BTreeMap<Kind, CapacityKind> = BTreeMap::new();
    let mut todo: Vec<FlowSpec> = stats.earliest.values().flatten().copied().collect();
    todo.sort_by_key(|s| s.n);
    for spec in &todo {
        out.entry(spec.kind).or_default().probed += 1;
    }
    let mut todo = todo.into_iter();
    let mut set: JoinSet<(FlowSpec, Result<Probe>)> = JoinSet::new();
    tokio::pin!(stop);
    loop {
        while set.len() < PROBE_CONCURRENCY.min(concurrency.max(1)) {
            let Some(spec) = todo.next() else { break };
            let ctx = ctx.clone();
            set.spawn(async move {
                let probe = tokio::time::timeout(FLOW_LIMIT, flows::probe(&ctx, spec)).await;
                let probe = probe.unwrap_or_else(|_| {
                    Ok(Probe::Failed {
                        failure: Box::new(Failure::timed_out(&spec)),
                        forgotten: false,
                    })
                });
                (spec, probe)
            });
        }
        let joined = tokio::select! {
            _ = &mut stop => {
                stats.interrupted = true;
                break;
            }
            joined = set.join_next() => joined,
        };
        let Some(joined) = joined else { break };
        let (spec, probe) = joined.map_err(|e| anyhow!("a capacity probe panicked: {e}"))?;
        let c = out.entry(spec.kind).or_default();
        match probe? {
            Probe::Remembered => c.remembered += 1,
            Probe::Readopted => {
                c.forgotten += 1;
                c.readopted += 1;
            }
            Probe::Failed { failure, forgotten } => {
                c.forgotten += u64::from(forgotten);
                c.failed += 1;
                stats.add_failure(*failure);
            }
        }
    }
    set.shutdown().await;
    Ok(out)
}

#[cfg(test)]
impl Plan {
    /// A plan for unit tests: ten flows of `mix` toward the lab's addresses.
    pub(crate) fn for_tests(mix: Vec<Kind>) -> Plan {
        Plan {
            flows: 10,
            concurrency: 4,
            rate: None,
            mix,
            mtu: 1280..=1400,
            hosts: Hosts::new(
                "198.18.0.0/15".parse().unwrap(),
                "2001:db8:5000::/48".parse().unwrap(),
                &[],
            ),
            remote4: Ipv4Addr::new(192, 0, 2, 2),
            remote6: "2001:db8::2".parse().unwrap(),
            tcp_port: 19,
            udp_port: 7,
            sample: 2,
            seed: 7,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_skip_the_network_broadcast_and_addresses_in_use() {
        let hosts = Hosts::new(
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8:1::/64".parse().unwrap(),
            &[
                "198.51.100.22".parse().unwrap(),
                "2001:db8:1::2".parse().unwrap(),
            ],
        );
        assert_eq!(hosts.count(false), 253);
        assert_eq!(hosts.host(false, 0), Some("198.51.100.1".parse().unwrap()));
        assert_eq!(
            hosts.host(false, 20),
            Some("198.51.100.21".parse().unwrap())
        );
        assert_eq!(
            hosts.host(false, 21),
            Some("198.51.100.23".parse().unwrap())
        );
        assert_eq!(
            hosts.host(false, 252),
            Some("198.51.100.254".parse().unwrap())
        );
        assert_eq!(hosts.host(false, 253), None);
        assert_eq!(hosts.host(true, 0), Some("2001:db8:1::1".parse().unwrap()));
        assert_eq!(hosts.host(true, 1), Some("2001:db8:1::3".parse().unwrap()));
        let stress = Plan::for_tests(vec![]).hosts;
        assert_eq!(stress.count(false), 131_070);
        assert_eq!(stress.host(false, 255), Some("198.18.1.0".parse().unwrap()));
    }

    #[test]
    fn flows_take_the_kinds_in_turn_each_from_its_own_host() {
        let p = Plan::for_tests(vec![Kind::Tcp4, Kind::Udp4, Kind::Tcp6]);
        let specs: Vec<FlowSpec> = (0..6).map(|n| p.flow(n).unwrap()).collect();
        let kinds: Vec<Kind> = specs.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Tcp4,
                Kind::Udp4,
                Kind::Tcp6,
                Kind::Tcp4,
                Kind::Udp4,
                Kind::Tcp6
            ]
        );
        let hosts: Vec<String> = specs.iter().map(|s| s.fake.ip().to_string()).collect();
        assert_eq!(
            hosts,
            [
                "198.18.0.1",
                "198.18.0.2",
                "2001:db8:5000::1",
                "198.18.0.3",
                "198.18.0.4",
                "2001:db8:5000::2"
            ]
        );
        let ordinals: Vec<u64> = specs.iter().map(|s| s.ordinal).collect();
        assert_eq!(ordinals, [0, 0, 0, 1, 1, 1]);
        assert_eq!(specs[1].remote.port(), 7);
        assert_eq!(specs[2].remote.to_string(), "[2001:db8::2]:19");
        assert!(specs.iter().all(|s| (1280..=1400).contains(&s.mtu)));
        assert_eq!(p.flows_of(Kind::Tcp4), 4);
        assert_eq!(p.flows_of(Kind::Udp4), 3);
        assert_eq!(p.flows_of(Kind::Udp6), 0);
    }

    #[test]
    fn mtus_spread_over_the_whole_range() {
        let mut p = Plan::for_tests(vec![Kind::Udp6]);
        p.mtu = 1280..=1283;
        let mut seen = [0u32; 4];
        for n in 0..400 {
            seen[(p.flow(n).unwrap().mtu - 1280) as usize] += 1;
        }
        assert!(seen.iter().all(|c| *c > 50), "{seen:?}");
    }
}
