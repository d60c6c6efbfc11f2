//! window6: the window story over IPv6 (RFC 8201 4, RFC 5927 4.1): Packet Too Big 1300 quoting
//! a TCP sequence number outside the send window is ignored; the segment is resent at 1500.
use futures::FutureExt as _;

use super::window::story;
use crate::suite::Scenario;

pub const SCENARIO: Scenario = Scenario {
    name: "window6",
    about: "TCP over IPv6: Packet Too Big quoting a sequence outside the window -> ignored",
    run: |ctx, rec| story(ctx, rec, true).boxed(),
    // It counts REMOTE's out-of-window ICMPs, as window does.
    alone: true,
};
