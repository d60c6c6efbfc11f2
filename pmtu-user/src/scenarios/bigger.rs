//! bigger: a frag-needed announcing an MTU larger than the current path MTU must never raise it
//! (RFC 1191 3: a host MUST NOT increase its estimate from a Datagram Too Big message; RFC 8201
//! 4 the same for IPv6).
//!
//! Fake a TCP connection to chargen. (a) The router answers the first full-size segment with
//! frag-needed announcing 1600, more than the 1500 it quotes: REMOTE must ignore it and resend
//! that segment at 1500 (at once, when reported lost), keeping no path MTU. (b) A
//! frag-needed 1300 about the resend brings the path MTU down to 1300; then one announcing
//! 1400, quoting a 1300-byte segment: the path MTU stays 1300, and new data comes at 1300.

use anyhow::Result;
use futures::FutureExt as _;
use tokio::time::Instant;

use super::pmtu::{why_not_adopted, MTU};
use super::{chargen, too_big_name};
use crate::{
    suite::{
        remote_state::route_to,
        router::{expect_answered, send_too_big, Quote},
        tcp::FakeTcp,
        Blame as _, Ctx, Record, Scenario,
    },
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "bigger",
    about: "TCP over IPv4: frag-needed announcing more than the path MTU -> never raised",
    run: |ctx, rec| story(ctx, rec, false).boxed(),
    alone: false,
};

/// More than the 1500-byte segment it quotes.
const LARGER_THAN_LINK: u32 = 1600;
/// The rule treats packets over this as too big while announcing LARGER_THAN_LINK.
const TOO_BIG_ABOVE: u16 = 1400;
/// More than the path MTU of 1300 learned before.
const LARGER_THAN_PMTU: u32 = 1400;

/// The bigger story, for IPv4 (`bigger`) and IPv6 (`bigger6`).
pub async fn story(ctx: &Ctx, rec: &mut Record, v6: bool) -> Result<()> {
    let icmp = too_big_name(v6);
    let fake = ctx.fake(v6);
    let remote = chargen(ctx, v6);
    log::info!(
        "The router answers the first packet over {TOO_BIG_ABOVE} with ICMP {icmp}, \
         MTU {LARGER_THAN_LINK}, once."
    );
    ctx.set_rule(
        fake.ip(),
        RuleSpec::answer(LARGER_THAN_LINK)
            .with_limit(TOO_BIG_ABOVE)
            .with_budget(1),
    )?;

    log::info!("Send SYN packet, receive SYN+ACK, send ACK.");
    let mut tcp = FakeTcp::connect(ctx, fake, remote).await?;
    let quoted = tcp.wait_data_over(TOO_BIG_ABOVE).await?;
    rec.measured("quoted_ip_len", quoted.ip_len);
    expect_answered(&quoted)?;

    log::info!("Acknowledge the data before it and report it lost (SACK): REMOTE resends it now.");
    tcp.report_lost(&quoted).await?;
    let resent = tcp
        .wait_seq(quoted.seq, "resend of the quoted segment")
        .await
        .silence_fails()?;
    rec.check_eq(
        "resend_ip_len",
        resent.ip_len,
        quoted.ip_len,
        &format!(
            "REMOTE changed its segment size for an ICMP {icmp} announcing \
             {LARGER_THAN_LINK}, more than the packet it quotes"
        ),
    )?;
    rec.check_eq(
        "remote_pmtu_after_larger",
        route_to(ctx, fake.ip())?.mtu.unwrap_or(0),
        0,
        &format!("REMOTE keeps a path MTU (0: none) from an ICMP announcing {LARGER_THAN_LINK}"),
    )?;

    // REMOTE's retransmission timer may have sent the segment again while REMOTE's route was
    // read (a round trip to REMOTE, longer than its timeout on a slow REMOTE): quote the last
    // copy sent so far, and judge only what REMOTE sends after that ICMP.
    let resent = tcp
        .flow
        .collect_until(Instant::now())
        .await
        .into_iter()
        .rev()
        .find(|e| e.is_tcp() && e.payload_len() > 0 && e.seq == quoted.seq)
        .unwrap_or(resent);
    log::info!("The router sends ICMP {icmp} with MTU {MTU} about the resend.");
    send_too_big(ctx, &resent, MTU as u32, Quote::AsSent)?;
    let smaller = tcp
        .wait_seq(quoted.seq, "retransmission after the ICMP with MTU 1300")
        .await
        .silence_fails()?;
    rec.check_eq(
        "retransmit_ip_len",
        smaller.ip_len,
        MTU,
        &why_not_adopted(v6, resent.ip_len, smaller.ip_len, MTU),
    )?;

    log::info!(
        "Then ICMP {icmp} with MTU {LARGER_THAN_PMTU} quoting that {MTU}-byte segment; \
         acknowledge everything: new data must still come at {MTU}."
    );
    send_too_big(ctx, &smaller, LARGER_THAN_PMTU, Quote::AsSent)?;
    tcp.ack_everything_seen()?;
    // A short segment (the tail of what the window allowed) says nothing about the path MTU:
    // judge the first new segment that is larger than IPv4's minimum datagram.
    let new_data = tcp.wait_data_over(576).await.silence_fails()?;
    rec.check_eq(
        "new_data_ip_len",
        new_data.ip_len,
        MTU,
        &format!(
            "REMOTE raised its path MTU for an ICMP {icmp} announcing {LARGER_THAN_PMTU} \
             (RFC 1191 3 / RFC 8201 4: a host MUST NOT increase it from such a message)"
        ),
    )?;
    rec.check_eq(
        "remote_pmtu",
        route_to(ctx, fake.ip())?.mtu.unwrap_or(0),
        MTU as u32,
        "REMOTE's path MTU toward the fake host is no longer the 1300 it learned",
    )?;
    tcp.reset()?;
    Ok(())
}
