//! udpfrag6: a Packet Too Big below 1280 must not make UDP send atomic fragments (RFC 8021),
//! nor fragment at all: it is discarded (RFC 8201 4), not clamped to 1280.
//!
//! Echo 1200 bytes from the fake host (reply 1248); the router answers the reply with Packet
//! Too Big, MTU 1272. After an echo from LOCAL_ADDR6, the next reply to the fake host must be
//! 1248 long, unfragmented, with no fragment header. Then the same with 1400 bytes: the 1448-byte
//! reply gets Packet Too Big 1272, and the next reply is still 1448 and unfragmented (a host that
//! clamped the MTU to 1280 would fragment it).
use anyhow::{bail, Result};
use futures::FutureExt as _;

use crate::{
    broken,
    suite::{
        udp::{echo_from_fake, echo_from_local},
        Blame as _, Ctx, Record, Scenario,
    },
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "udpfrag6",
    about: "UDP over IPv6: Packet Too Big 1272 -> replies 1248 and 1448 unfragmented, no atomic fragment",
    run: |ctx, rec| run(ctx, rec).boxed(),
    alone: false,
};

pub const MTU: u32 = 1272;
pub const PAYLOAD: usize = 1200;
/// 40 + 8 + 1200.
pub const REPLY_LEN: u16 = 1248;
/// The second round: a reply larger than IPv6's minimum MTU.
pub const LARGE_PAYLOAD: usize = 1400;
/// 40 + 8 + 1400.
pub const LARGE_REPLY_LEN: u16 = 1448;

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let mut flow = ctx.hub.flow(ctx.fake(true));
    log::info!(
        "The router answers the {REPLY_LEN}-byte reply with Packet Too Big {MTU}, once \
         (the rule treats anything over {PAYLOAD} as too big)."
    );
    ctx.set_rule(
        flow.fake.ip(),
        RuleSpec::answer(MTU)
            .with_budget(1)
            .with_limit(PAYLOAD as u16),
    )?;
    log::info!("Send UDP echo request with {PAYLOAD} bytes from FAKE_NET_ADDR6.");
    let first = echo_from_fake(ctx, &mut flow, PAYLOAD).await?;
    rec.check_eq(
        "first_reply_ip_len",
        first.first_len(),
        REPLY_LEN,
        "unexpected echo reply size",
    )?;
    if !first.first.answered() {
        bail!(
            "the responder did not answer the reply (action {:?})",
            first.first.action
        );
    }
    log::info!("Send the same datagram once from LOCAL_ADDR6.");
    echo_from_local(ctx, true, PAYLOAD).await?;
    log::info!("Send it again from FAKE_NET_ADDR6: no atomic fragment, 1248 unfragmented.");
    let next = echo_from_fake(ctx, &mut flow, PAYLOAD)
        .await
        .silence_fails()?;
    if let Some(atomic) = next.atomic_fragment() {
        broken!("REMOTE sent an atomic fragment (RFC 8021): {atomic}");
    }
    rec.check_eq(
        "next_reply_fragmented",
        next.is_fragmented(),
        false,
        "a 1248-byte reply fits IPv6's minimum MTU and must not be fragmented",
    )?;
    rec.check_eq(
        "next_reply_ip_len",
        next.first_len(),
        REPLY_LEN,
        "unexpected echo reply size",
    )?;

    log::info!(
        "Now {LARGE_PAYLOAD} bytes: the router answers the {LARGE_REPLY_LEN}-byte reply with \
         Packet Too Big {MTU}, once."
    );
    ctx.set_rule(flow.fake.ip(), RuleSpec::answer(MTU).with_budget(1))?;
    let large = echo_from_fake(ctx, &mut flow, LARGE_PAYLOAD).await?;
    rec.check_eq(
        "large_first_reply_ip_len",
        large.first_len(),
        LARGE_REPLY_LEN,
        "unexpected echo reply size",
    )?;
    if !large.first.answered() {
        bail!(
            "the responder did not answer the {LARGE_REPLY_LEN}-byte reply (action {:?})",
            large.first.action
        );
    }
    log::info!("Send it once from LOCAL_ADDR6, then again from FAKE_NET_ADDR6.");
    echo_from_local(ctx, true, LARGE_PAYLOAD).await?;
    let large_next = echo_from_fake(ctx, &mut flow, LARGE_PAYLOAD)
        .await
        .silence_fails()?;
    if let Some(atomic) = large_next.atomic_fragment() {
        broken!("REMOTE sent an atomic fragment (RFC 8021): {atomic}");
    }
    rec.check_eq(
        "large_next_reply_fragmented",
        large_next.is_fragmented(),
        false,
        "a Packet Too Big below 1280 must be discarded (RFC 8201 4), not taken as 1280",
    )?;
    rec.check_eq(
        "large_next_reply_ip_len",
        large_next.first_len(),
        LARGE_REPLY_LEN,
        "unexpected echo reply size",
    )?;
    Ok(())
}
