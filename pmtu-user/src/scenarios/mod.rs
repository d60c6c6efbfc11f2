//! Every scenario, one file each, in the original Makefile's order.
pub mod bigger;
pub mod bigger6;
pub mod check_setup;
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

use crate::suite::Scenario;

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

/// Scenarios that can be named but are not part of a plain `pmtu run`.
pub const EXTRA: [Scenario; 1] = [reset_route::SCENARIO];

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().chain(EXTRA.iter()).find(|s| s.name == name)
}

pub fn names() -> Vec<&'static str> {
    ALL.iter().chain(EXTRA.iter()).map(|s| s.name).collect()
}
