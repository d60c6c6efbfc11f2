//! blackhole6: the blackhole story over IPv6 (RFC 4821, RFC 8201 5.4 on black holes): every
//! packet over 1300 dropped without Packet Too Big; REMOTE must fall back (Linux: 1084) and
//! probe larger sizes, at most 1300, within 10 s.
use futures::FutureExt as _;

use super::blackhole::story;
use crate::suite::Scenario;

pub const SCENARIO: Scenario = Scenario {
    name: "blackhole6",
    about:
        "TCP over IPv6: everything over 1300 dropped without ICMP -> REMOTE falls back, probes up",
    run: |ctx, rec| story(ctx, rec, true).boxed(),
    // It changes a sysctl of REMOTE.
    alone: true,
};
