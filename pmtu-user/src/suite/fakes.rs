//! The fake hosts the scenarios speak as. REMOTE keeps path MTUs per destination, so
//! scenarios that run at once must never share a fake host: when the runner spreads them over
//! FAKE_NET, every flow that asks gets a host of its own (FAKE_NET_ADDR first, then the hosts
//! after it). Otherwise every flow is FAKE_NET_ADDR, as in the original, and REMOTE's state is
//! reset between scenarios.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::Topology;

/// Hosts a fake net must have for spreading: more than any run asks for.
const ENOUGH_HOSTS: u32 = 254;

pub struct FakeHosts {
    net4: Ipv4Net,
    net6: Ipv6Net,
    first4: Ipv4Addr,
    first6: Ipv6Addr,
    spread: AtomicBool,
    next4: AtomicU32,
    next6: AtomicU32,
}

impl FakeHosts {
    pub fn new(topo: &Topology) -> Self {
        Self {
            net4: topo.fake_net,
            net6: topo.fake_net6,
            first4: topo.fake_net_addr,
            first6: topo.fake_net_addr6,
            spread: AtomicBool::new(false),
            next4: AtomicU32::new(0),
            next6: AtomicU32::new(0),
        }
    }

    /// Whether both fake nets have room for a host per flow.
    pub fn can_spread(&self) -> bool {
        self.net4.prefix_len() <= 24 && self.net6.prefix_len() <= 120
    }

    /// From now on, a host of its own for each flow (`true`), or FAKE_NET_ADDR(6) for all.
    pub fn set_spread(&self, on: bool) {
        self.spread
            .store(on && self.can_spread(), Ordering::Relaxed);
    }

    pub fn spreading(&self) -> bool {
        self.spread.load(Ordering::Relaxed)
    }

    /// The host for the next flow.
    pub fn next(&self, v6: bool) -> IpAddr {
        if !self.spreading() {
            return if v6 {
                self.first6.into()
            } else {
                self.first4.into()
            };
        }
        if v6 {
            let n = self.next6.fetch_add(1, Ordering::Relaxed) % ENOUGH_HOSTS;
            nth_host6(self.net6, self.first6, n).into()
        } else {
            let n = self.next4.fetch_add(1, Ordering::Relaxed) % ENOUGH_HOSTS;
            nth_host4(self.net4, self.first4, n).into()
        }
    }
}

/// The `n`th host of `net` after `first` (`first` itself for 0), wrapping inside the net and
/// skipping its network and broadcast addresses.
fn nth_host4(net: Ipv4Net, first: Ipv4Addr, n: u32) -> Ipv4Addr {
    let base = u32::from(net.network());
    let size = 1u64 << (32 - net.prefix_len());
    let hosts = size.saturating_sub(2).max(1);
    let offset = (u32::from(first).wrapping_sub(base) as u64).clamp(1, hosts) - 1;
    Ipv4Addr::from(base + 1 + ((offset + n as u64) % hosts) as u32)
}

/// The `n`th host of `net` after `first`, wrapping inside the net.
fn nth_host6(net: Ipv6Net, first: Ipv6Addr, n: u32) -> Ipv6Addr {
    let base = u128::from(net.network());
    let bits = 128 - net.prefix_len() as u32;
    let size = if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    };
    let offset = u128::from(first).wrapping_sub(base);
    Ipv6Addr::from(base + (offset + n as u128) % size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_follow_the_first_and_stay_in_the_net() {
        let net: Ipv4Net = "198.51.100.0/24".parse().unwrap();
        let first: Ipv4Addr = "198.51.100.22".parse().unwrap();
        assert_eq!(nth_host4(net, first, 0), first);
        assert_eq!(nth_host4(net, first, 1).to_string(), "198.51.100.23");
        // .254 is the last host; then .1, never .255 or .0.
        assert_eq!(nth_host4(net, first, 232).to_string(), "198.51.100.254");
        assert_eq!(nth_host4(net, first, 233).to_string(), "198.51.100.1");
        for n in 0..600 {
            let h = nth_host4(net, first, n);
            assert!(net.contains(&h) && h != net.network() && h != net.broadcast());
        }
        let net6: Ipv6Net = "2001:db8:1::/64".parse().unwrap();
        let first6: Ipv6Addr = "2001:db8:1::22".parse().unwrap();
        assert_eq!(nth_host6(net6, first6, 0), first6);
        assert_eq!(nth_host6(net6, first6, 1).to_string(), "2001:db8:1::23");
        let small6: Ipv6Net = "2001:db8:1::/126".parse().unwrap();
        assert!(small6.contains(&nth_host6(small6, "2001:db8:1::3".parse().unwrap(), 5)));
    }
}
