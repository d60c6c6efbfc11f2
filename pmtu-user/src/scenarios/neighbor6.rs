//! neighbor6: the path MTU belongs to the destination, not to the neighbour entry of the
//! gateway toward it: deleting that entry must not lose it (RFC 8201 5.2).
//!
//! As in udp6: echo 1400 bytes from FAKE_NET_ADDR6, Packet Too Big 1300 for the reply, echo
//! from LOCAL_ADDR6, echo again: the reply is fragmented, 1296 + 208. Then delete REMOTE's
//! neighbour entry for LOCAL_ADDR6, its gateway to the fake net, and echo again: REMOTE
//! resolves the gateway anew and the reply is still 1296 + 208, with no new Packet Too Big.
use anyhow::Result;
use futures::FutureExt as _;

use super::{
    udp::LAST_FRAGMENT_LEN6,
    udp6::{fragmented_after_ptb, unfragmented_then_ptb, FIRST_FRAGMENT_LEN, MTU, PAYLOAD},
};
use crate::{
    suite::{
        remote_state::forget_neighbour,
        udp::{echo_from_fake, echo_from_local},
        Ctx, Record, Scenario,
    },
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "neighbor6",
    about: "UDP over IPv6: the path MTU survives deleting the gateway's neighbour entry",
    run: |ctx, rec| run(ctx, rec).boxed(),
    // It deletes the neighbour entry every IPv6 fake host's traffic goes through.
    alone: true,
};

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let mut flow = ctx.hub.flow(ctx.fake(true));
    log::info!("The router answers the first packet over {MTU} with Packet Too Big {MTU}, once.");
    ctx.set_rule(flow.fake.ip(), RuleSpec::answer(MTU).with_budget(1))?;
    unfragmented_then_ptb(ctx, rec, &mut flow, "first_reply").await?;
    log::info!("Send the same datagram once from LOCAL_ADDR6.");
    echo_from_local(ctx, true, PAYLOAD).await?;
    fragmented_after_ptb(ctx, rec, &mut flow, "next_reply").await?;

    let gateway = ctx.topo.local_addr6;
    log::info!("Delete REMOTE's neighbour entry for LOCAL_ADDR6 ({gateway}), its gateway.");
    forget_neighbour(ctx, gateway.into())?;
    let seen_before = flow.seen.len();

    log::info!("Echo again: still fragmented {FIRST_FRAGMENT_LEN} + {LAST_FRAGMENT_LEN6}, no new Packet Too Big.");
    let reply = echo_from_fake(ctx, &mut flow, PAYLOAD).await?;
    let lost = "REMOTE lost the path MTU when its neighbour entry for the gateway went away";
    rec.check_eq("after_reply_fragmented", reply.is_fragmented(), true, lost)?;
    rec.check_eq(
        "after_reply_first_fragment_len",
        reply.first_len(),
        FIRST_FRAGMENT_LEN,
        lost,
    )?;
    rec.check_eq(
        "after_reply_last_fragment_len",
        reply.fragments.last().map(|f| f.ip_len).unwrap_or(0),
        LAST_FRAGMENT_LEN6,
        "the rest of the 1408 bytes of UDP after the first fragment's 1248",
    )?;
    let too_big = flow.seen[seen_before..]
        .iter()
        .filter(|e| e.ip_len > MTU as u16)
        .count() as u64;
    rec.check_eq(
        "too_big_after_delete",
        too_big,
        0,
        "REMOTE sent packets over the path MTU after resolving its gateway again",
    )?;
    Ok(())
}
