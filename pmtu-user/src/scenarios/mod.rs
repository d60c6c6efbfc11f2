//! Every scenario, one file each: the original Makefile's nine in its order, then the RFC
//! behaviours beyond it.
pub mod bigger;
pub mod bigger6;
pub mod blackhole;
pub mod blackhole6;
pub mod check_setup;
pub mod expire;
pub mod expire6;
pub mod gateway6;
pub mod neighbor6;
pub mod persist;
pub mod persist6;
pub mod ping;
pub mod pmtu;
pub mod pmtu6;
pub mod reset_route;
pub mod tcpfrag6;
pub mod tiny;
pub mod tiny6;
pub mod udp;
pub mod udp6;
pub mod udpfrag6;
pub mod window;
pub mod window6;

use std::net::SocketAddr;

use anyhow::Result;

use crate::suite::{tcp::FakeTcp, Ctx, Record, Scenario};

/// The suite, as `pmtu run` runs it.
pub const ALL: [Scenario; 19] = [
    check_setup::SCENARIO,
    ping::PING,
    ping::PING6,
    pmtu::SCENARIO,
    pmtu6::SCENARIO,
    udp6::SCENARIO,
    gateway6::SCENARIO,
    tcpfrag6::SCENARIO,
    udpfrag6::SCENARIO,
    window::SCENARIO,
    window6::SCENARIO,
    bigger::SCENARIO,
    bigger6::SCENARIO,
    tiny::SCENARIO,
    tiny6::SCENARIO,
    persist::SCENARIO,
    persist6::SCENARIO,
    udp::SCENARIO,
    neighbor6::SCENARIO,
];

/// The long scenarios (seconds each, waiting on REMOTE's timers): `pmtu run --all` adds them.
pub const LONG: [Scenario; 4] = [
    expire::SCENARIO,
    expire6::SCENARIO,
    blackhole::SCENARIO,
    blackhole6::SCENARIO,
];

/// Scenarios that can be named but are not part of a plain `pmtu run`.
pub const EXTRA: [Scenario; 1] = [reset_route::SCENARIO];

/// Every scenario that can be named: the quick ones, the long ones, the extras.
pub fn every() -> impl Iterator<Item = &'static Scenario> {
    ALL.iter().chain(LONG.iter()).chain(EXTRA.iter())
}

pub fn find(name: &str) -> Option<&'static Scenario> {
    every().find(|s| s.name == name)
}

pub fn names() -> Vec<&'static str> {
    every().map(|s| s.name).collect()
}

/// The ICMP error that announces a smaller MTU, by its name in the family's RFC.
pub fn too_big_name(v6: bool) -> &'static str {
    if v6 {
        "Packet Too Big"
    } else {
        "fragmentation needed"
    }
}

/// REMOTE's chargen (RFC 864) in the family.
pub fn chargen(ctx: &Ctx, v6: bool) -> SocketAddr {
    SocketAddr::new(ctx.remote_addr(v6), pmtu::CHARGEN_PORT)
}

/// RFC 8021: no packet of the flow went out as an atomic fragment.
pub fn check_no_atomic_fragments(rec: &mut Record, tcp: &FakeTcp<'_>, why: &str) -> Result<()> {
    let atomic = tcp
        .flow
        .seen
        .iter()
        .filter(|e| e.fragment.is_some_and(|f| f.is_atomic()))
        .count() as u64;
    rec.check_eq("atomic_fragments", atomic, 0, why)
}
