//! gateway6: the path MTU must survive (OpenBSD) or be rebuilt correctly (Linux) when the
//! route state that carries it is removed.
//!
//! After udp6's steps REMOTE's routing table must show the path MTU of 1300 toward the fake
//! host. Then remove the route state that carries it on REMOTE. OpenBSD, as the original: delete
//! the host route to LOCAL_ADDR6 (`route -n delete -inet6 -host`); the dynamic PMTU route must
//! stay, with gateway LOCAL_ADDR6 and flags UP,GATEWAY,HOST,DYNAMIC,DONE (`route -n get -inet6
//! -host`). Linux: delete and re-add the route to FAKE_NET6; the PMTU exception hanging off it
//! must be gone (`ip -6 route get`). Then the first echo reply is 1448 and unfragmented, and a
//! single Packet Too Big makes the next one fragmented, first fragment 1296.
use anyhow::{Context as _, Result};
use futures::FutureExt as _;

use super::udp6::{fragmented_after_ptb, unfragmented_then_ptb, MTU};
use crate::{
    suite::{remote_state::route_to, Ctx, Gateway6Reset, Record, Scenario},
    xdp::rules::RuleSpec,
};

/// OpenBSD's flags on the host route a Packet Too Big creates (the original checks them).
const DYNAMIC_HOST_ROUTE: &str = "UP,GATEWAY,HOST,DYNAMIC,DONE";

pub const SCENARIO: Scenario = Scenario {
    name: "gateway6",
    about: "UDP over IPv6 after REMOTE's route state is removed: one PTB still takes effect",
    run: |ctx, rec| run(ctx, rec).boxed(),
    // It deletes and re-adds the route every IPv6 fake host uses.
    alone: true,
};

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let mut flow = ctx.hub.flow(ctx.fake(true));
    let fake = flow.fake.ip();
    log::info!("Give REMOTE a path MTU of {MTU} toward the fake host, as udp6 does.");
    ctx.set_rule(fake, RuleSpec::answer(MTU).with_budget(1))?;
    unfragmented_then_ptb(ctx, rec, &mut flow, "setup_reply").await?;
    fragmented_after_ptb(ctx, rec, &mut flow, "setup_next_reply").await?;

    log::info!("REMOTE's routing table must show the path MTU toward the fake host.");
    let before = route_to(ctx, fake)?;
    rec.check_eq(
        "route_mtu_before",
        before.mtu.unwrap_or(0),
        MTU,
        "REMOTE's route to FAKE_NET_ADDR6 carries no path MTU of 1300 after the Packet Too Big",
    )?;

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
            let after = route_to(ctx, fake)?;
            rec.check_eq(
                "route_mtu_after_readd",
                after.mtu.unwrap_or(0),
                0,
                "the path MTU (0: none) outlived the route to FAKE_NET6 that carried it",
            )?;
        }
        Gateway6Reset::DeleteGatewayHostRoute => {
            log::info!(
                "Delete REMOTE's host route to LOCAL_ADDR6; the dynamic PMTU route must stay."
            );
            ctx.remote("route", &["-n", "delete", "-inet6", "-host", &gw])
                .context("deleting REMOTE's host route to LOCAL_ADDR6")?;
            let after = route_to(ctx, fake)?;
            rec.check_eq(
                "route_gateway",
                after.gateway.as_deref().unwrap_or("none"),
                gw.as_str(),
                "the dynamic PMTU route to FAKE_NET_ADDR6 lost its gateway LOCAL_ADDR6",
            )?;
            let flags = after.flags.join(",");
            rec.check_eq(
                "route_flags",
                flags.as_str(),
                DYNAMIC_HOST_ROUTE,
                "the dynamic PMTU route to FAKE_NET_ADDR6 did not survive",
            )?;
        }
    }

    log::info!("A single Packet Too Big again.");
    ctx.set_rule(fake, RuleSpec::answer(MTU).with_budget(1))?;
    unfragmented_then_ptb(ctx, rec, &mut flow, "first_reply").await?;
    fragmented_after_ptb(ctx, rec, &mut flow, "next_reply").await?;
    Ok(())
}
