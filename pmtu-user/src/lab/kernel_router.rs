//! A kernel router to compare the XDP responder with (`pmtu bench responder`): three network
//! namespaces in a row, SENDER -- ROUTER -- NEXT HOP, the router's link onward 1300 bytes, so
//! that the router's own kernel answers SENDER's oversized DF packets with ICMP "fragmentation
//! needed" / "Packet Too Big". The router's ICMP rate limits are off (in its namespace only).
//!
//! The namespaces are named after the lab (`LAB-krsnd`, `LAB-krrtr`, `LAB-krhop`); dropping the
//! [`KernelRouterLab`] deletes them, and [`KernelRouterLab::up`] first deletes any left by a run
//! that was killed.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};

use crate::{
    config::Mac,
    net::{netns, sysctl},
};

/// The next hop's MTU.
pub const NEXT_HOP_MTU: u32 = 1300;
pub const SENDER_IF: &str = "kr0";
pub const SENDER_MAC: Mac = [0x02, 0, 0, 0, 0x10, 0x01];
pub const ROUTER_MAC: Mac = [0x02, 0, 0, 0, 0x10, 0x02];
/// The router's veth toward SENDER.
pub const ROUTER_IN_IF: &str = "kr1";
const ROUTER_OUT_IF: &str = "kr2";
const HOP_IF: &str = "kr3";
pub const SENDER_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ROUTER_IN_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const ROUTER_OUT_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
/// NEXT HOP's address: SENDER's packets to it cross the 1300-byte link.
pub const TARGET_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 6);
pub const SENDER_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x7e, 1, 0, 0, 0, 1);
const ROUTER_IN_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x7e, 1, 0, 0, 0, 2);
const ROUTER_OUT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x7e, 2, 0, 0, 0, 1);
pub const TARGET_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x7e, 2, 0, 0, 0, 2);

/// The three namespaces, up; deleted on drop.
pub struct KernelRouterLab {
    /// SENDER's namespace: send from `SENDER_IF` (its MAC `SENDER_MAC`) to `ROUTER_MAC`.
    pub sender_ns: String,
    pub router_ns: String,
    pub hop_ns: String,
}

impl KernelRouterLab {
    /// The namespaces' names for lab `lab`.
    pub fn names(lab: &str) -> [String; 3] {
        ["krsnd", "krrtr", "krhop"].map(|s| format!("{lab}-{s}"))
    }

    /// Builds the three namespaces (replacing any left by a killed run).
    pub fn up(lab: &str) -> Result<Self> {
        let [sender_ns, router_ns, hop_ns] = Self::names(lab);
        for ns in [&sender_ns, &router_ns, &hop_ns] {
            netns::delete(ns)?;
        }
        // From here on, dropping `this` deletes whatever exists of it.
        let this = KernelRouterLab {
            sender_ns,
            router_ns,
            hop_ns,
        };
        this.build()
            .context("building the kernel router's namespaces")?;
        Ok(this)
    }

    fn build(&self) -> Result<()> {
        let (snd, rtr, hop) = (
            self.sender_ns.as_str(),
            self.router_ns.as_str(),
            self.hop_ns.as_str(),
        );
        for ns in [snd, rtr, hop] {
            netns::add(ns)?;
        }
        let ip = |ns: &str, args: &[&str]| netns::run(Some(ns), "ip", args).map(drop);
        let mac = |m: Mac| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        // The veths are made inside the namespaces, never in this one.
        ip(
            snd,
            &[
                "link",
                "add",
                SENDER_IF,
                "address",
                &mac(SENDER_MAC),
                "type",
                "veth",
                "peer",
                "name",
                ROUTER_IN_IF,
                "address",
                &mac(ROUTER_MAC),
                "netns",
                rtr,
            ],
        )?;
        let mtu = NEXT_HOP_MTU.to_string();
        ip(
            rtr,
            &[
                "link",
                "add",
                ROUTER_OUT_IF,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                HOP_IF,
                "mtu",
                &mtu,
                "netns",
                hop,
            ],
        )?;
        // No duplicate address detection: the addresses are usable at once.
        for ns in [snd, rtr, hop] {
            sysctl::write_sysctls(
                ns,
                &[
                    ("net/ipv6/conf/all/accept_dad", "0"),
                    ("net/ipv6/conf/default/accept_dad", "0"),
                ],
            )?;
        }
        let addrs: [(&str, &str, String, String); 4] = [
            (
                snd,
                SENDER_IF,
                format!("{SENDER_ADDR}/30"),
                format!("{SENDER_ADDR6}/64"),
            ),
            (
                rtr,
                ROUTER_IN_IF,
                format!("{ROUTER_IN_ADDR}/30"),
                format!("{ROUTER_IN_ADDR6}/64"),
            ),
            (
                rtr,
                ROUTER_OUT_IF,
                format!("{ROUTER_OUT_ADDR}/30"),
                format!("{ROUTER_OUT_ADDR6}/64"),
            ),
            (
                hop,
                HOP_IF,
                format!("{TARGET_ADDR}/30"),
                format!("{TARGET_ADDR6}/64"),
            ),
        ];
        for (ns, dev, v4, v6) in &addrs {
            ip(ns, &["addr", "add", v4, "dev", dev])?;
            ip(ns, &["-6", "addr", "add", v6, "dev", dev, "nodad"])?;
            ip(ns, &["link", "set", dev, "up"])?;
        }
        ip(
            snd,
            &[
                "route",
                "add",
                "default",
                "via",
                &ROUTER_IN_ADDR.to_string(),
            ],
        )?;
        ip(
            snd,
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &ROUTER_IN_ADDR6.to_string(),
            ],
        )?;
        ip(
            hop,
            &[
                "route",
                "add",
                "default",
                "via",
                &ROUTER_OUT_ADDR.to_string(),
            ],
        )?;
        ip(
            hop,
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &ROUTER_OUT_ADDR6.to_string(),
            ],
        )?;
        // The router knows SENDER's MAC: under a flood that fills its veth's queue, SENDER's
        // neighbour answers could be lost, and with them every ICMP error.
        for addr in [SENDER_ADDR.to_string(), SENDER_ADDR6.to_string()] {
            ip(
                rtr,
                &[
                    "neigh",
                    "replace",
                    &addr,
                    "lladdr",
                    &mac(SENDER_MAC),
                    "dev",
                    ROUTER_IN_IF,
                    "nud",
                    "permanent",
                ],
            )?;
        }
        // The router forwards and answers every packet it cannot forward: no per-destination
        // rate limit, and a global ICMP allowance far above any flood.
        sysctl::write_sysctls(
            rtr,
            &[
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv6/conf/all/forwarding", "1"),
                ("net/ipv4/icmp_ratelimit", "0"),
                ("net/ipv6/icmp/ratelimit", "0"),
                ("net/ipv4/icmp_msgs_per_sec", "1000000000"),
                ("net/ipv4/icmp_msgs_burst", "1000000000"),
            ],
        )?;
        Ok(())
    }
}

impl Drop for KernelRouterLab {
    fn drop(&mut self) {
        for ns in [&self.sender_ns, &self.router_ns, &self.hop_ns] {
            if let Err(e) = netns::delete(ns) {
                eprintln!("pmtu: {e:#}");
            }
        }
    }
}
