//! udpfrag6: a Packet Too Big below 1280 must not make UDP send atomic fragments (RFC 8021).
//!
//! Echo 1200 bytes from the fake host (reply 1248); the router answers the reply with Packet
//! Too Big, MTU 1272. After an echo from LOCAL_ADDR6, the next reply to the fake host must be
//! 1248 long, unfragmented, with no fragment header.
use anyhow::{bail, Result};
use futures::FutureExt as _;

use crate::{
    broken,
    suite::{
        udp::{echo_from_fake, echo_from_local},
        Blame as _, Ctx, Record, Scenario,
    },
    xdp::responder::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "udpfrag6",
    about: "UDP over IPv6: Packet Too Big 1272 -> reply 1248 unfragmented, no atomic fragment",
    run: |ctx, rec| run(ctx, rec).boxed(),
};

pub const MTU: u32 = 1272;
pub const PAYLOAD: usize = 1200;
/// 40 + 8 + 1200.
pub const REPLY_LEN: u16 = 1248;

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
    Ok(())
}
