//! ping, ping6: REMOTE_ADDR and REMOTE_ADDR6 answer an echo request from LOCAL.
use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, Result};
use futures::FutureExt as _;

use crate::{
    net::rawsock,
    suite::{Ctx, Record, Scenario},
};

pub const PING: Scenario = Scenario {
    name: "ping",
    about: "REMOTE_ADDR answers ICMP echo",
    run: |ctx, rec| run(ctx, rec, false).boxed(),
    alone: false,
};

pub const PING6: Scenario = Scenario {
    name: "ping6",
    about: "REMOTE_ADDR6 answers ICMPv6 echo",
    run: |ctx, rec| run(ctx, rec, true).boxed(),
    alone: false,
};

async fn run(ctx: &Ctx, rec: &mut Record, v6: bool) -> Result<()> {
    let dst: IpAddr = ctx.remote_addr(v6);
    let ns = ctx.topo.local_netns.clone();
    log::info!("Ping {dst} from LOCAL.");
    let rtt = tokio::task::spawn_blocking(move || {
        rawsock::ping(ns.as_deref(), dst, Duration::from_secs(1))
    })
    .await
    .context("ping")?
    .with_context(|| {
        format!("REMOTE {dst} does not answer ping: is it up and on LOCAL_IF's link?")
    })?;
    rec.measured("rtt_us", rtt.as_micros() as u64);
    Ok(())
}
