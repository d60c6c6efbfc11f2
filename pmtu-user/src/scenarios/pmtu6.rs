//! pmtu6: TCP path MTU discovery over IPv6 (RFC 8201): the pmtu story with ICMPv6
//! Packet Too Big 1300; REMOTE must resend the quoted data at IPv6 length 1300.
use futures::FutureExt as _;

use super::pmtu::story;
use crate::suite::Scenario;

pub const SCENARIO: Scenario = Scenario {
    name: "pmtu6",
    about: "TCP over IPv6: Packet Too Big 1300 -> retransmit at IPv6 length 1300",
    run: |ctx, rec| story(ctx, rec, true).boxed(),
    alone: false,
};
