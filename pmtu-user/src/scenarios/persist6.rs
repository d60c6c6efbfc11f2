//! persist6: the persist story over IPv6 (RFC 8201 5.2): after Packet Too Big 1300 on one flow
//! and a pause, a new TCP connection from the same fake host sends 1300 at once, and a UDP echo
//! comes back fragmented (1296 + 208). Catches a path MTU that expires at once
//! (net.ipv6.route.mtu_expires=0), which the original's scenarios are too quick to notice.
use futures::FutureExt as _;

use super::persist::story;
use crate::suite::Scenario;

pub const SCENARIO: Scenario = Scenario {
    name: "persist6",
    about: "IPv6: after Packet Too Big 1300 on one flow, a new connection and UDP use 1300 at once",
    run: |ctx, rec| story(ctx, rec, true).boxed(),
    alone: false,
};
