//! `pmtu respond`: the responder alone on an interface, printing what it sees until Ctrl-C.
//! Useful by itself to emulate a small-MTU hop in front of any host.
use std::{
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{bail, Context as _, Result};
use ipnet::IpNet;
use pmtu_common::{Counter, RuleAction};

use pmtu::{
    net::netns,
    signals,
    xdp::{
        events::PacketEvent,
        responder::{AttachMode, Responder},
        rules::{parse_rule, RuleSpec},
    },
};

use super::require_root;

#[derive(clap::Args, Debug)]
pub struct RespondArgs {
    /// Interface to attach to (LOCAL_IF).
    #[arg(long, short)]
    pub iface: String,
    /// Network namespace the interface is in (default: this process's).
    #[arg(long)]
    pub netns: Option<String>,
    /// PREFIX=MTU[,action=answer|blackhole|observe][,rate=N|budget=N][,limit=N][,drop];
    /// repeatable. By default packets that fit pass (a real hop) and at most 100 ICMP errors a
    /// second are sent per rule. `rate=N`: N a second; `budget=N`: N in all, `budget=0`: no
    /// limit. `limit` answers packets longer than N (default: MTU) while announcing MTU.
    /// `drop` drops the packets that are not answered (`pass`, the default, delivers them).
    #[arg(long = "rule", short, required = true)]
    pub rules: Vec<String>,
    /// Source of the ICMP errors for IPv4 (default: the interface's first IPv4 address).
    #[arg(long)]
    pub router4: Option<Ipv4Addr>,
    /// Source of the ICMPv6 errors (default: the interface's first global IPv6 address).
    #[arg(long)]
    pub router6: Option<Ipv6Addr>,
    /// Accept MTUs below 68 (IPv4) / 1280 (IPv6), to see how a host handles them.
    #[arg(long)]
    pub allow_below_minimum: bool,
    /// The other end of a veth: gets the pass-through XDP program, without which native XDP_TX
    /// frames sent on a veth are dropped.
    #[arg(long)]
    pub peer: Option<String>,
    /// Network namespace of --peer (default: --netns).
    #[arg(long, requires = "peer")]
    pub peer_netns: Option<String>,
    /// Print only the counters at the end, not every packet.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The first IPv4 and global IPv6 address of `iface` inside `ns`.
fn iface_addrs(ns: Option<&str>, iface: &str) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    netns::run_in(ns, || {
        let mut v4 = None;
        let mut v6 = None;
        let mut found = false;
        for ifa in nix::ifaddrs::getifaddrs().context("listing interface addresses")? {
            if ifa.interface_name != iface {
                continue;
            }
            found = true;
            let Some(addr) = ifa.address else { continue };
            if let Some(a) = addr.as_sockaddr_in() {
                v4.get_or_insert(a.ip());
            } else if let Some(a) = addr.as_sockaddr_in6() {
                let ip = a.ip();
                if !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                    v6.get_or_insert(ip);
                }
            }
        }
        if !found {
            let where_ = ns
                .map(|n| format!(" in namespace `{n}`"))
                .unwrap_or_default();
            bail!("no interface `{iface}`{where_}: check the name with `ip link`");
        }
        Ok((v4, v6))
    })
}

/// Whether `iface` is a veth (by its driver, as `ethtool -i` reports it).
fn is_veth(ns: Option<&str>, iface: &str) -> bool {
    netns::run(ns, "ethtool", &["-i", iface]).is_ok_and(|out| out.contains("driver: veth"))
}

/// ICMP errors a rule may send per second unless told otherwise.
pub const DEFAULT_RATE: u32 = 100;

/// A rule as `pmtu respond` applies it: the responder's rule, and the ICMP errors it may send
/// per second (its budget, refreshed every second), if limited that way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespondRule {
    pub prefix: IpNet,
    pub spec: RuleSpec,
    pub rate: Option<u32>,
}

/// Parses a `--rule` with `pmtu respond`'s defaults: packets that fit pass, and at most
/// [`DEFAULT_RATE`] ICMP errors a second, unless `drop`, `rate=N` or `budget=N` say otherwise.
pub fn parse_respond_rule(text: &str, allow_below_minimum: bool) -> Result<RespondRule> {
    let (head, options) = text.split_once(',').unwrap_or((text, ""));
    let mut kept = vec![head.to_string()];
    let (mut pass, mut rate, mut budget_given) = (true, None, false);
    for part in options.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            None if part == "drop" => pass = false,
            None if part == "pass" => pass = true,
            Some(("rate", n)) => {
                rate = Some(n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    anyhow::anyhow!("rule `{text}`: rate `{n}` is not a number of ICMP errors a second (1 or more; budget=0 means no limit)")
                })?)
            }
            Some(("budget", _)) => {
                budget_given = true;
                kept.push(part.to_string());
            }
            _ => kept.push(part.to_string()),
        }
    }
    if rate.is_some() && budget_given {
        bail!("rule `{text}`: give rate=N (a second) or budget=N (in all), not both");
    }
    let (prefix, mut spec) = parse_rule(&kept.join(","), allow_below_minimum)?;
    spec.pass = pass;
    if !budget_given {
        let per_second = rate.unwrap_or(DEFAULT_RATE);
        spec.budget = per_second;
        rate = Some(per_second);
    }
    Ok(RespondRule { prefix, spec, rate })
}

/// How a rule reads in the banner.
fn describe(rule: &RespondRule) -> String {
    let spec = &rule.spec;
    let action = match spec.action {
        RuleAction::Answer => "answer",
        RuleAction::Blackhole => "blackhole",
        RuleAction::Observe => "observe",
    };
    let limit = match (rule.rate, spec.budget) {
        (Some(n), _) => format!("at most {n} ICMP a second"),
        (None, 0) => "ICMP without limit".to_string(),
        (None, n) => format!("at most {n} ICMP in all"),
    };
    let fits = if spec.pass {
        "packets that are not answered pass"
    } else {
        "packets that are not answered are dropped"
    };
    format!(
        "{}: mtu {}, {action}, {limit}, {fits}",
        rule.prefix, spec.mtu
    )
}

pub async fn cli(args: RespondArgs, mode: AttachMode) -> Result<()> {
    let rules: Vec<RespondRule> = args
        .rules
        .iter()
        .map(|r| parse_respond_rule(r, args.allow_below_minimum))
        .collect::<Result<_>>()?;
    require_root("pmtu respond")?;
    let ns = args.netns.as_deref();
    for n in [ns, args.peer_netns.as_deref()].into_iter().flatten() {
        if !netns::exists(n) {
            bail!("network namespace `{n}` does not exist (see `ip netns list`)");
        }
    }
    let (own4, own6) = iface_addrs(ns, &args.iface)?;
    let needs4 = rules.iter().any(|r| matches!(r.prefix, IpNet::V4(_)));
    let needs6 = rules.iter().any(|r| matches!(r.prefix, IpNet::V6(_)));
    let router4 = match (args.router4, own4) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) if needs4 => bail!(
            "`{}` has no IPv4 address to send ICMP from; give one with --router4",
            args.iface
        ),
        (None, None) => Ipv4Addr::UNSPECIFIED,
    };
    let router6 = match (args.router6, own6) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) if needs6 => bail!(
            "`{}` has no global IPv6 address to send ICMPv6 from; give one with --router6",
            args.iface
        ),
        (None, None) => Ipv6Addr::UNSPECIFIED,
    };

    let mut responder = Responder::load(None)?;
    responder.set_routers(router4, router6)?;
    for r in &rules {
        responder.set_rule(r.prefix, r.spec)?;
    }
    let mut events = responder.take_events()?;
    responder.attach(ns, &args.iface, mode)?;
    if let Some(peer) = &args.peer {
        responder.attach_pass(args.peer_netns.as_deref().or(ns), peer)?;
    } else if mode == AttachMode::Native && is_veth(ns, &args.iface) {
        eprintln!(
            "pmtu respond: warning: `{}` is a veth; its peer drops native XDP_TX frames (the ICMP \
             answers) unless it has an XDP program too: give --peer (and --peer-netns)",
            args.iface
        );
    }
    eprintln!(
        "pmtu respond: XDP ({mode:?}) on {}{}, ICMP from {router4} / {router6}; rules in force:",
        args.iface,
        ns.map(|n| format!(" in {n}")).unwrap_or_default(),
    );
    for r in &rules {
        eprintln!("  {}", describe(r));
    }
    eprintln!("pmtu respond: running; Ctrl-C to stop");

    let mut batch = Vec::new();
    let stop = signals::stop();
    tokio::pin!(stop);
    // A rate is a budget given anew every second.
    let mut refill = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = refill.tick() => {
                for r in rules.iter().filter(|r| r.rate.is_some()) {
                    let spent = responder
                        .rules()
                        .into_iter()
                        .any(|(prefix, rule)| prefix == r.prefix && rule.sent > 0);
                    if spent {
                        responder.set_rule(r.prefix, r.spec)?;
                    }
                }
            }
            r = events.next_batch(&mut batch) => {
                r?;
                if !args.quiet {
                    // A closed pipe must not panic past the detach below.
                    let mut out = std::io::stdout().lock();
                    for ev in batch.drain(..) {
                        let _ = writeln!(out, "{}", PacketEvent::from(&ev));
                    }
                    let _ = out.flush();
                }
                batch.clear();
            }
            _ = &mut stop => break,
        }
    }
    let counters = responder.counters()?;
    let text: Vec<String> = Counter::ALL
        .iter()
        .map(|c| format!("{}={}", c.name(), counters[*c as usize]))
        .collect();
    eprintln!("pmtu respond: detaching; counters: {}", text.join(" "));
    drop(responder);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_packets_that_fit_pass_and_icmp_is_rate_limited() {
        let r = parse_respond_rule("198.51.100.0/24=1300", false).unwrap();
        assert!(r.spec.pass);
        assert_eq!((r.rate, r.spec.budget), (Some(DEFAULT_RATE), DEFAULT_RATE));
        assert_eq!(
            describe(&r),
            "198.51.100.0/24: mtu 1300, answer, at most 100 ICMP a second, packets that are not \
             answered pass"
        );
        let r = parse_respond_rule("198.51.100.0/24=1300,budget=0,drop", false).unwrap();
        assert!(!r.spec.pass);
        assert_eq!((r.rate, r.spec.budget), (None, 0));
        assert!(describe(&r).contains("ICMP without limit"));
        let r = parse_respond_rule("2001:db8:1::/64=1400,budget=3,pass", false).unwrap();
        assert_eq!((r.rate, r.spec.budget, r.spec.pass), (None, 3, true));
        let r = parse_respond_rule("198.51.100.7=576,rate=5,action=blackhole", false).unwrap();
        assert_eq!((r.rate, r.spec.budget), (Some(5), 5));
        assert_eq!(r.spec.action, RuleAction::Blackhole);
    }

    #[test]
    fn bad_rates_are_refused() {
        for (bad, says) in [
            ("198.51.100.0/24=1300,rate=0", "rate `0`"),
            ("198.51.100.0/24=1300,rate=x", "rate `x`"),
            ("198.51.100.0/24=1300,rate=5,budget=3", "not both"),
            ("198.51.100.0/24=1300,color=red", "unknown option"),
        ] {
            let err = parse_respond_rule(bad, false).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
