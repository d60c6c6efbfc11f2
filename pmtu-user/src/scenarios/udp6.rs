//! udp6: IPv6 fragmentation of UDP after Packet Too Big (RFC 8201, RFC 8200 4.5).
//!
//! Echo 1400 bytes from FAKE_NET_ADDR6; the 1448-byte reply gets Packet Too Big 1300. Send the
//! same datagram once from LOCAL_ADDR6 (that clears a per-socket route cache on BSD), then
//! again from the fake host: now the reply must come fragmented, the first fragment 1296 long.
use anyhow::{bail, Result};
use futures::FutureExt as _;

use crate::{
    broken,
    suite::{
        hub::Flow,
        udp::{echo_from_fake, echo_from_local, Reply},
        Blame as _, Ctx, Record, Scenario,
    },
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "udp6",
    about: "UDP over IPv6: Packet Too Big 1300 -> echo reply fragmented, first fragment 1296",
    run: |ctx, rec| run(ctx, rec).boxed(),
    alone: false,
};

pub const MTU: u32 = 1300;
pub const PAYLOAD: usize = 1400;
/// 40 (IPv6) + 8 (UDP) + 1400.
pub const REPLY_LEN: u16 = 1448;
/// Fragments carry multiples of 8 octets: 40 + 8 (fragment header) + 1248.
pub const FIRST_FRAGMENT_LEN: u16 = 1296;

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let mut flow = ctx.hub.flow(ctx.fake(true));
    log::info!("The router answers the first packet over {MTU} with Packet Too Big {MTU}, once.");
    ctx.set_rule(flow.fake.ip(), RuleSpec::answer(MTU).with_budget(1))?;
    unfragmented_then_ptb(ctx, rec, &mut flow, "first_reply").await?;
    log::info!("Send the same datagram once from LOCAL_ADDR6.");
    echo_from_local(ctx, true, PAYLOAD).await?;
    fragmented_after_ptb(ctx, rec, &mut flow, "next_reply").await?;
    Ok(())
}

/// "Send echo request with 1400 bytes; the 1448-byte reply is not fragmented and is answered
/// with Packet Too Big."
pub async fn unfragmented_then_ptb(
    ctx: &Ctx,
    rec: &mut Record,
    flow: &mut Flow,
    key: &str,
) -> Result<Reply> {
    log::info!("Send UDP echo request with {PAYLOAD} bytes of payload from FAKE_NET_ADDR6.");
    let reply = echo_from_fake(ctx, flow, PAYLOAD).await?;
    rec.check_eq(
        &format!("{key}_fragmented"),
        reply.is_fragmented(),
        false,
        "REMOTE fragmented before any Packet Too Big (stale path MTU state?)",
    )?;
    rec.check_eq(
        &format!("{key}_ip_len"),
        reply.first_len(),
        REPLY_LEN,
        "the echo reply does not carry the request's payload",
    )?;
    if !reply.first.answered() {
        bail!(
            "the responder did not answer the {}-byte reply (action {:?})",
            reply.first_len(),
            reply.first.action
        );
    }
    Ok(reply)
}

/// "Send it again: the reply is fragmented, the first fragment 1296 long, no atomic fragment."
pub async fn fragmented_after_ptb(
    ctx: &Ctx,
    rec: &mut Record,
    flow: &mut Flow,
    key: &str,
) -> Result<Reply> {
    log::info!("Send it again from FAKE_NET_ADDR6: the reply must be fragmented, first fragment {FIRST_FRAGMENT_LEN}.");
    let reply = echo_from_fake(ctx, flow, PAYLOAD).await.silence_fails()?;
    if let Some(atomic) = reply.atomic_fragment() {
        broken!("REMOTE sent an atomic fragment (RFC 8021): {atomic}");
    }
    rec.check_eq(
        &format!("{key}_fragmented"),
        reply.is_fragmented(),
        true,
        "REMOTE ignored the Packet Too Big",
    )?;
    rec.check_eq(
        &format!("{key}_first_fragment_len"),
        reply.first_len(),
        FIRST_FRAGMENT_LEN,
        "fragments must fill the path MTU in multiples of 8 octets",
    )?;
    Ok(reply)
}
