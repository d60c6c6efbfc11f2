//! expire6: the expire story over IPv6 (RFC 8201 4): on a lab's REMOTE,
//! net.ipv6.route.mtu_expires set to 2 s; the path MTU of 1300 is used until then and 1500 is
//! tried again after; on a real REMOTE, 1300 is kept for at least 5 s.
use futures::FutureExt as _;

use super::expire::story;
use crate::suite::Scenario;

pub const SCENARIO: Scenario = Scenario {
    name: "expire6",
    about: "IPv6: a path MTU set to live 2 s is used until then, and 1500 is tried again after",
    run: |ctx, rec| story(ctx, rec, true).boxed(),
    // It changes a sysctl of REMOTE.
    alone: true,
};
