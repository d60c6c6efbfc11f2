//! gateway6: the path MTU must survive (OpenBSD) or be rebuilt correctly (Linux) when the
//! route state that carries it is removed.
//!
//! After udp6's steps, remove that route state on REMOTE (OpenBSD: delete the host route to
//! LOCAL_ADDR6, the dynamic PMTU route must stay; Linux: delete and re-add the route to
//! FAKE_NET6). Then the first echo reply is 1448 and unfragmented, and a single Packet Too Big
//! makes the next one fragmented, first fragment 1296.
use anyhow::{Context as _, Result};
use futures::FutureExt as _;

use super::udp6::{fragmented_after_ptb, unfragmented_then_ptb, MTU};
use crate::{
    suite::{Ctx, Gateway6Reset, Record, Scenario},
    xdp::responder::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "gateway6",
    about: "UDP over IPv6 after REMOTE's route state is removed: one PTB still takes effect",
    run: |ctx, rec| run(ctx, rec).boxed(),
};

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let mut flow = ctx.hub.flow(ctx.fake(true));
    let fake = flow.fake.ip();
    log::info!("Give REMOTE a path MTU of {MTU} toward the fake host, as udp6 does.");
    ctx.set_rule(fake, RuleSpec::answer(MTU).with_budget(1))?;
    unfragmented_then_ptb(ctx, rec, &mut flow, "setup_reply").await?;
    fragmented_after_ptb(ctx, rec, &mut flow, "setup_next_reply").await?;

    let net = ctx.topo.fake_net6.to_string();
    let gw = ctx.topo.local_addr6.to_string();
    match ctx.profile.gateway6_reset {
        Gateway6Reset::ReaddFakeRoute => {
            log::info!(
                "Delete and re-add REMOTE's route to FAKE_NET6: its PMTU state goes with it."
            );
            ctx.remote("ip", &["-6", "route", "del", &net])
                .context("deleting REMOTE's route to FAKE_NET6")?;
            ctx.remote("ip", &["-6", "route", "add", &net, "via", &gw])
                .context("re-adding REMOTE's route to FAKE_NET6")?;
        }
        Gateway6Reset::DeleteGatewayHostRoute => {
            log::info!(
                "Delete REMOTE's host route to LOCAL_ADDR6; the dynamic PMTU route must stay."
            );
            ctx.remote("route", &["delete", "-inet6", &gw])
                .context("deleting REMOTE's host route to LOCAL_ADDR6")?;
        }
    }

    log::info!("A single Packet Too Big again.");
    ctx.set_rule(fake, RuleSpec::answer(MTU).with_budget(1))?;
    unfragmented_then_ptb(ctx, rec, &mut flow, "first_reply").await?;
    fragmented_after_ptb(ctx, rec, &mut flow, "next_reply").await?;
    Ok(())
}
