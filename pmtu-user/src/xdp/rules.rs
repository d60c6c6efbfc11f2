//! Rules in user-space terms: what a rule does (RuleSpec), a rule as installed, and the
//! `PREFIX=MTU[,option...]` text `pmtu respond` takes.
use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use pmtu_common::{Rule, RuleAction, RULE_F_PASS};

/// What a rule does, in user-space terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// Largest IP packet that fits the emulated next hop.
    pub mtu: u32,
    pub action: RuleAction,
    /// ICMP errors this rule may send; 0 = no limit.
    pub budget: u32,
    /// Deliver unanswered packets to the stack instead of dropping them.
    pub pass: bool,
    /// Too big above this IP length instead of above `mtu` (0: `mtu`).
    pub limit: u16,
}

impl RuleSpec {
    pub fn answer(mtu: u32) -> Self {
        Self {
            mtu,
            action: RuleAction::Answer,
            budget: 0,
            pass: false,
            limit: 0,
        }
    }

    pub fn observe() -> Self {
        Self {
            mtu: u16::MAX as u32,
            action: RuleAction::Observe,
            budget: 0,
            pass: false,
            limit: 0,
        }
    }

    pub fn with_budget(mut self, budget: u32) -> Self {
        self.budget = budget;
        self
    }

    /// Treat packets above `limit` as too big while announcing `mtu`.
    pub fn with_limit(mut self, limit: u16) -> Self {
        self.limit = limit;
        self
    }

    pub(super) fn to_rule(self, slot: u32) -> Rule {
        Rule {
            mtu: self.mtu,
            budget: self.budget,
            slot,
            action: self.action as u8,
            flags: if self.pass { RULE_F_PASS } else { 0 },
            limit: self.limit,
        }
    }
}

/// A rule as installed: its value in the rule map and the ICMP errors sent for it so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledRule {
    pub mtu: u32,
    pub budget: u32,
    /// ICMP errors sent for this rule since it was installed.
    pub sent: u64,
    /// A [`RuleAction`] as u8.
    pub action: u8,
    /// `RULE_F_*` bits.
    pub flags: u8,
    pub limit: u16,
    /// Its index in the program's per-rule counts.
    pub slot: u32,
}

/// Parses `PREFIX=MTU[,action=answer|blackhole|observe][,budget=N][,limit=N][,pass]`.
pub fn parse_rule(text: &str, allow_below_minimum: bool) -> Result<(IpNet, RuleSpec)> {
    let (prefix, rest) = text
        .split_once('=')
        .ok_or_else(|| anyhow!("rule `{text}`: expected PREFIX=MTU, e.g. 198.51.100.0/24=1300"))?;
    let prefix: IpNet = prefix
        .parse()
        .or_else(|_| prefix.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            anyhow!("rule `{text}`: `{prefix}` is not an IPv4 or IPv6 prefix (e.g. 198.51.100.0/24, 2001:db8:1::/64)")
        })?;
    let mut parts = rest.split(',');
    let mtu_text = parts.next().unwrap_or_default();
    let mtu: u32 = mtu_text
        .parse()
        .map_err(|_| anyhow!("rule `{text}`: MTU `{mtu_text}` is not a number"))?;
    let (floor, family) = match prefix {
        IpNet::V4(_) => (68, "IPv4 (RFC 791)"),
        IpNet::V6(_) => (1280, "IPv6 (RFC 8200)"),
    };
    if mtu > 65535 {
        bail!("rule `{text}`: MTU {mtu} is larger than an IP packet can be (65535)");
    }
    if mtu < floor && !allow_below_minimum {
        bail!(
            "rule `{text}`: MTU {mtu} is below the minimum of {family}, {floor}; \
             --allow-below-minimum sends it anyway (to test how a host handles it)"
        );
    }
    let mut spec = RuleSpec::answer(mtu);
    for part in parts {
        match part.split_once('=') {
            Some(("action", name)) => {
                spec.action = RuleAction::from_name(name).ok_or_else(|| {
                    anyhow!("rule `{text}`: unknown action `{name}` (known: {})", action_names())
                })?
            }
            Some(("limit", n)) => {
                spec.limit = n
                    .parse()
                    .map_err(|_| anyhow!("rule `{text}`: limit `{n}` is not a number up to 65535"))?
            }
            Some(("budget", n)) => {
                spec.budget = n
                    .parse()
                    .map_err(|_| anyhow!("rule `{text}`: budget `{n}` is not a number"))?
            }
            None if part == "pass" => spec.pass = true,
            _ => bail!(
                "rule `{text}`: unknown option `{part}` (known: action={}, budget=N, limit=N, pass)",
                action_names()
            ),
        }
    }
    Ok((prefix, spec))
}

/// `answer|blackhole|observe`.
fn action_names() -> String {
    RuleAction::ALL.map(RuleAction::name).join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        let (p, s) = parse_rule("198.51.100.0/24=1300", false).unwrap();
        assert_eq!(p.to_string(), "198.51.100.0/24");
        assert_eq!(s, RuleSpec::answer(1300));
        let (_, s) =
            parse_rule("2001:db8:1::/64=1400,action=blackhole,budget=3,pass", false).unwrap();
        assert_eq!(s.action, RuleAction::Blackhole);
        assert_eq!(s.budget, 3);
        assert!(s.pass);
        let (p, _) = parse_rule("198.51.100.7=576", false).unwrap();
        assert_eq!(p.to_string(), "198.51.100.7/32");
    }

    #[test]
    fn refuses_bad_rules() {
        for (bad, says) in [
            ("198.51.100.0/24", "expected PREFIX=MTU"),
            ("198.51.100.0/33=1300", "not an IPv4 or IPv6 prefix"),
            ("nonsense=1300", "not an IPv4 or IPv6 prefix"),
            ("198.51.100.0/24=abc", "is not a number"),
            ("198.51.100.0/24=67", "below the minimum"),
            ("2001:db8::/32=1279", "below the minimum"),
            ("198.51.100.0/24=70000", "larger than"),
            ("198.51.100.0/24=1300,color=red", "unknown option"),
            (
                "198.51.100.0/24=1300,action=reflect",
                "unknown action `reflect` (known: answer|blackhole|observe)",
            ),
        ] {
            let err = parse_rule(bad, false).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(parse_rule("2001:db8::/32=1272", true).is_ok());
    }
}
