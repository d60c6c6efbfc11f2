//! bigger6: the bigger story over IPv6 (RFC 8201 4): a Packet Too Big announcing more than the
//! path MTU (1600 for a 1500-byte packet; 1400 after 1300 was learned) never raises it.
use futures::FutureExt as _;

use super::bigger::story;
use crate::suite::Scenario;

pub const SCENARIO: Scenario = Scenario {
    name: "bigger6",
    about: "TCP over IPv6: Packet Too Big announcing more than the path MTU -> never raised",
    run: |ctx, rec| story(ctx, rec, true).boxed(),
    alone: false,
};
