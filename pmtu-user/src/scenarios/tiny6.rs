//! tiny6: a Packet Too Big below IPv6's minimum link MTU of 1280 is discarded, one at exactly
//! 1280 is adopted (RFC 8201 4: never below 1280; RFC 8021: no atomic fragments instead).
//!
//! Fake a TCP connection to chargen. The router answers the first full-size segment with
//! Packet Too Big, MTU 1279: REMOTE must ignore it, so the segment, resent at once when reported
//! lost, is still 1500 long. Then a Packet Too Big with MTU 1280 about that resend:
//! REMOTE resends at 1280.

use anyhow::Result;
use futures::FutureExt as _;

use super::{chargen, check_no_atomic_fragments};
use super::{pmtu::why_not_adopted, tcpfrag6::IPV6_MIN_MTU};
use crate::{
    broken,
    suite::{
        remote_state::route_to,
        router::{expect_answered, send_too_big, Quote},
        tcp::FakeTcp,
        Blame as _, Ctx, Record, Scenario,
    },
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "tiny6",
    about: "TCP over IPv6: Packet Too Big 1279 -> ignored (1500); 1280 -> adopted (1280)",
    run: |ctx, rec| run(ctx, rec).boxed(),
    alone: false,
};

/// One below the minimum.
const BELOW_MIN: u32 = IPV6_MIN_MTU as u32 - 1;

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let fake = ctx.fake(true);
    let remote = chargen(ctx, true);
    log::info!(
        "The router answers the first full-size segment with Packet Too Big {BELOW_MIN}, once."
    );
    ctx.set_rule(fake.ip(), RuleSpec::answer(BELOW_MIN).with_budget(1))?;
    log::info!("Send SYN packet, receive SYN+ACK, send ACK.");
    let mut tcp = FakeTcp::connect(ctx, fake, remote).await?;
    let quoted = tcp.wait_data_over(IPV6_MIN_MTU).await?;
    rec.measured("quoted_ip_len", quoted.ip_len);
    expect_answered(&quoted)?;

    log::info!("Acknowledge the data before it and report it lost (SACK): REMOTE resends it now.");
    tcp.report_lost(&quoted).await?;
    let resent = tcp
        .wait_seq(quoted.seq, "resend after the Packet Too Big below 1280")
        .await
        .silence_fails()?;
    if resent.ip_len < IPV6_MIN_MTU {
        broken!(
            "below_min_resend_ip_len was {}: REMOTE went below IPv6's minimum MTU of \
             {IPV6_MIN_MTU} (RFC 8201 4)",
            resent.ip_len
        );
    }
    rec.check_eq(
        "below_min_resend_ip_len",
        resent.ip_len,
        quoted.ip_len,
        "a Packet Too Big below 1280 must be discarded (RFC 8201 4), not clamped to 1280",
    )?;

    log::info!("The router sends Packet Too Big {IPV6_MIN_MTU} about the resend.");
    send_too_big(ctx, &resent, IPV6_MIN_MTU as u32, Quote::AsSent)?;
    let at_min = tcp
        .wait_seq(quoted.seq, "retransmission after Packet Too Big 1280")
        .await
        .silence_fails()?;
    rec.check_eq(
        "min_retransmit_ip_len",
        at_min.ip_len,
        IPV6_MIN_MTU,
        &why_not_adopted(true, resent.ip_len, at_min.ip_len, IPV6_MIN_MTU),
    )?;
    rec.check_eq(
        "remote_pmtu",
        route_to(ctx, fake.ip())?.mtu.unwrap_or(0),
        IPV6_MIN_MTU as u32,
        "REMOTE keeps no path MTU of 1280 toward the fake host",
    )?;
    check_no_atomic_fragments(rec, &tcp, "RFC 8021: a host must not send atomic fragments")?;
    tcp.reset()?;
    Ok(())
}
