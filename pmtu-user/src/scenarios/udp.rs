//! udp: path MTU discovery for UDP over IPv4 (RFC 1191 6.5: the path MTU applies to every
//! protocol toward the destination; the host then fragments what does not fit).
//!
//! Echo 1400 bytes from FAKE_NET_ADDR: REMOTE's 1428-byte reply carries DF, and the router
//! answers it with frag-needed, MTU 1300. Echo again: the reply must now come fragmented, the
//! first fragment 1300 long with MF (20 + 1280: fragments carry multiples of 8 octets), the
//! last 148 (20 + 128), DF cleared on both.
use anyhow::{bail, Result};
use futures::FutureExt as _;

use super::udp6;
use crate::{
    broken,
    suite::{udp::echo_from_fake, Blame as _, Ctx, Record, Scenario},
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "udp",
    about: "UDP over IPv4: frag-needed 1300 -> echo reply fragmented 1300 (MF) + 148, DF clear",
    run: |ctx, rec| run(ctx, rec).boxed(),
    alone: false,
};

pub const MTU: u32 = 1300;
pub const PAYLOAD: usize = 1400;
/// 20 (IPv4) + 8 (UDP) + 1400.
pub const REPLY_LEN: u16 = 1428;
/// 20 + 1280 (the most a 1300-byte packet carries in multiples of 8 octets).
pub const FIRST_FRAGMENT_LEN: u16 = 1300;
/// 20 + the remaining 1408 - 1280 = 128.
pub const LAST_FRAGMENT_LEN: u16 = 148;
/// IPv6: 40 + 8 (fragment header) + the remaining 1408 - 1248 = 160.
pub const LAST_FRAGMENT_LEN6: u16 = 208;

/// The first fragment of a 1400-byte echo reply over a path MTU of 1300.
pub fn first_fragment_len(v6: bool) -> u16 {
    if v6 {
        udp6::FIRST_FRAGMENT_LEN
    } else {
        FIRST_FRAGMENT_LEN
    }
}

/// The last fragment of that reply.
pub fn last_fragment_len(v6: bool) -> u16 {
    if v6 {
        LAST_FRAGMENT_LEN6
    } else {
        LAST_FRAGMENT_LEN
    }
}

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let mut flow = ctx.hub.flow(ctx.fake(false));
    log::info!("The router answers the first packet over {MTU} with ICMP fragmentation needed, MTU {MTU}, once.");
    ctx.set_rule(flow.fake.ip(), RuleSpec::answer(MTU).with_budget(1))?;

    log::info!("Send UDP echo request with {PAYLOAD} bytes of payload from FAKE_NET_ADDR.");
    let first = echo_from_fake(ctx, &mut flow, PAYLOAD).await?;
    rec.check_eq(
        "first_reply_fragmented",
        first.is_fragmented(),
        false,
        "REMOTE fragmented before any ICMP (stale path MTU state?)",
    )?;
    rec.check_eq(
        "first_reply_ip_len",
        first.first_len(),
        REPLY_LEN,
        "the echo reply does not carry the request's payload",
    )?;
    rec.measured("first_reply_df", first.first.df);
    match (first.first.df, ctx.profile.udp_df) {
        (true, _) => {}
        (false, Some(true)) => broken!(
            "first_reply_df was false, expected true: REMOTE sends UDP without DF, so it \
             does no path MTU discovery for UDP (net.ipv4.ip_no_pmtu_disc, or a locked route MTU?)"
        ),
        (false, _) => {
            rec.skip("REMOTE sends UDP without DF: it leaves fragmentation to the routers");
            return Ok(());
        }
    }
    if !first.first.answered() {
        bail!(
            "the responder did not answer the {}-byte reply (action {:?})",
            first.first_len(),
            first.first.action
        );
    }

    log::info!("Send it again: the reply must come in fragments of at most {MTU}.");
    let next = echo_from_fake(ctx, &mut flow, PAYLOAD)
        .await
        .silence_fails()?;
    rec.check_eq(
        "next_reply_fragmented",
        next.is_fragmented(),
        true,
        "REMOTE's UDP ignored the ICMP fragmentation needed",
    )?;
    rec.check_eq(
        "next_reply_first_fragment_len",
        next.first_len(),
        FIRST_FRAGMENT_LEN,
        "fragments must fill the path MTU in multiples of 8 octets",
    )?;
    rec.check_eq(
        "next_reply_more_fragments",
        next.first.fragment.is_some_and(|f| f.more),
        true,
        "the first fragment must carry MF",
    )?;
    let last = next.fragments.last().map(|f| f.ip_len).unwrap_or(0);
    rec.check_eq(
        "next_reply_last_fragment_len",
        last,
        LAST_FRAGMENT_LEN,
        "the rest of the 1408 bytes of UDP after the first fragment's 1280",
    )?;
    let df = next.first.df || next.fragments.iter().any(|f| f.df);
    rec.check_eq("next_reply_df", df, false, "fragments must not carry DF")?;
    Ok(())
}
