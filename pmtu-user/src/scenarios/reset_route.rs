//! reset-route: forget the path MTUs REMOTE and LOCAL learned, so that each scenario starts
//! from a clean state. The runner does this before every scenario.
use anyhow::Result;
use futures::FutureExt as _;

use crate::suite::{Ctx, ProfileName, Record, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "reset-route",
    about: "clear PMTU state on LOCAL and REMOTE",
    run: |ctx, rec| run(ctx, rec).boxed(),
    // It forgets every path MTU.
    alone: true,
};

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    log::info!("Flush the route caches (PMTU exceptions) of REMOTE and LOCAL.");
    ctx.reset_routes()?;
    if ctx.profile.name != ProfileName::Linux {
        return Ok(());
    }
    let fake = ctx.topo.fake_net_addr.to_string();
    let route = ctx.remote("ip", &["route", "get", &fake])?;
    rec.check_eq(
        "remote_route_has_pmtu",
        route.contains(" mtu "),
        false,
        "REMOTE still has a path MTU toward FAKE_NET_ADDR after the flush",
    )
}
