//! persist: a path MTU is kept per destination, for later connections and for other protocols
//! (RFC 1191 6.2 and 6.3; RFC 8201 5.2), not only by the connection that learned it.
//!
//! One TCP connection to chargen learns 1300 from the router's frag-needed, as in pmtu. After a
//! pause of 100 ms (longer than a jiffy on any kernel, so a path MTU that expires at once is
//! gone by then), a new TCP connection from the same fake host must send 1300 at once, with no
//! new ICMP, and announce the MSS that fits (a profile value: 1260 on Linux 6.18); then a UDP
//! echo from the same host must come back fragmented to fit 1300.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::Result;
use futures::FutureExt as _;

use super::too_big_name;
use super::{
    pmtu::{why_not_adopted, CHARGEN_PORT, MTU},
    udp::first_fragment_len,
};
use crate::{
    suite::{
        random_port, remote_state::route_to, router::expect_answered, tcp::FakeTcp,
        udp::echo_from_fake, Blame as _, Ctx, PacketEvent, Record, Scenario,
    },
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "persist",
    about: "IPv4: after frag-needed 1300 on one flow, a new connection and UDP use 1300 at once",
    run: |ctx, rec| story(ctx, rec, false).boxed(),
    alone: false,
};

/// Longer than one jiffy on any kernel (1 to 10 ms).
const PAUSE: Duration = Duration::from_millis(100);
/// The echo request of the UDP step.
const PAYLOAD: usize = 1400;
/// Larger than chargen's first line (74 bytes), smaller than any path MTU.
const FULL_SIZE_ABOVE: u16 = 200;

/// The persist story, for IPv4 (`persist`) and IPv6 (`persist6`).
pub async fn story(ctx: &Ctx, rec: &mut Record, v6: bool) -> Result<()> {
    let fake = ctx.fake(v6).ip();
    let icmp = too_big_name(v6);
    log::info!("The router answers the first packet over {MTU} with ICMP {icmp}, MTU {MTU}, once.");
    ctx.set_rule(fake, RuleSpec::answer(MTU as u32).with_budget(1))?;
    learn_mtu(ctx, rec, fake).await?;

    log::info!(
        "Wait {} ms: a path MTU that expires at once would be gone.",
        PAUSE.as_millis()
    );
    tokio::time::sleep(PAUSE).await;

    let (synack, first) = new_connection(ctx, fake).await?;
    if let Some(mss) = synack.tcp_mss() {
        rec.measured("synack_mss", mss);
    }
    rec.check_eq(
        "new_connection_ip_len",
        first.ip_len,
        MTU,
        "REMOTE did not use the path MTU it learned for this host on a new connection \
         (RFC 1191 6.2: the path MTU belongs to the destination, not the connection)",
    )?;
    if let (Some(want), Some(mss)) = (ctx.profile.persist_synack_mss, synack.tcp_mss()) {
        rec.check_eq(
            "synack_mss",
            mss,
            want[v6 as usize],
            "this OS announces the MSS that fits the path MTU it knows",
        )?;
    }

    log::info!("Send a UDP echo request with {PAYLOAD} bytes from the same fake host.");
    let mut flow = ctx.hub.flow(SocketAddr::new(fake, random_port()));
    let reply = echo_from_fake(ctx, &mut flow, PAYLOAD)
        .await
        .silence_fails()?;
    rec.check_eq(
        "udp_reply_fragmented",
        reply.is_fragmented(),
        true,
        "REMOTE's UDP did not use the path MTU its TCP learned for this host",
    )?;
    rec.check_eq(
        "udp_first_fragment_len",
        reply.first_len(),
        first_fragment_len(v6),
        "fragments must fill the path MTU in multiples of 8 octets",
    )?;
    if let Some(kept) = route_to(ctx, fake)?.mtu {
        rec.measured("remote_pmtu", kept);
    }
    Ok(())
}

/// "Fake a TCP connection; the router's ICMP makes REMOTE resend at 1300": one connection
/// from `fake` that teaches REMOTE the path MTU (the rule must already answer). Returns the
/// segment the router answered (its time is when the ICMP left).
pub async fn learn_mtu(ctx: &Ctx, rec: &mut Record, fake: IpAddr) -> Result<PacketEvent> {
    let remote = SocketAddr::new(ctx.remote_addr(fake.is_ipv6()), CHARGEN_PORT);
    log::info!("Send SYN packet, receive SYN+ACK, send ACK; the router quotes the first full-size segment.");
    let mut tcp = FakeTcp::connect(ctx, SocketAddr::new(fake, random_port()), remote).await?;
    let quoted = tcp.wait_data_over(MTU).await?;
    expect_answered(&quoted)?;
    tcp.ack(quoted.seq)?;
    let retx = tcp
        .wait_seq(quoted.seq, "retransmission of the quoted segment")
        .await
        .silence_fails()?;
    rec.check_eq(
        "retransmit_ip_len",
        retx.ip_len,
        MTU,
        &why_not_adopted(fake.is_ipv6(), quoted.ip_len, retx.ip_len, MTU),
    )?;
    tcp.reset()?;
    Ok(quoted)
}

/// A new TCP connection from `fake` (another port): REMOTE's SYN+ACK and its first full-size
/// data segment.
pub async fn new_connection(ctx: &Ctx, fake: IpAddr) -> Result<(PacketEvent, PacketEvent)> {
    let remote = SocketAddr::new(ctx.remote_addr(fake.is_ipv6()), CHARGEN_PORT);
    log::info!("A new connection from the same fake host: its first full-size segment.");
    let mut tcp = FakeTcp::connect(ctx, SocketAddr::new(fake, random_port()), remote).await?;
    let first = tcp.wait_data_over(FULL_SIZE_ABOVE).await?;
    tcp.reset()?;
    Ok((tcp.synack.clone(), first))
}
