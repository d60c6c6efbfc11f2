//! pmtu: TCP path MTU discovery over IPv4 (RFC 1191).
//!
//! Fake a TCP handshake from FAKE_NET_ADDR to REMOTE's chargen. REMOTE sends full-size data;
//! the router answers the first full-size segment with ICMP "fragmentation needed", next-hop
//! MTU 1300, quoting it. REMOTE must resend the quoted data in segments of IP length exactly
//! 1300, at once (before its retransmission timeout: a resend at the timeout would mean the
//! data went again for another reason), and send nothing larger afterwards.

use anyhow::{bail, Result};
use futures::FutureExt as _;
use pmtu_common::EventAction;

use super::{chargen, too_big_name};
use crate::{
    broken,
    suite::{tcp::FakeTcp, Blame as _, Ctx, Record, Scenario, REPLY_TIMEOUT},
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "pmtu",
    about: "TCP over IPv4: ICMP frag-needed 1300 -> retransmit at IP length 1300",
    run: |ctx, rec| story(ctx, rec, false).boxed(),
    alone: false,
};

/// The announced next-hop MTU.
pub const MTU: u16 = 1300;
/// Linux's default net.ipv4.route.min_pmtu.
const LINUX_MIN_PMTU: u16 = 552;
/// The chargen service (RFC 864).
pub const CHARGEN_PORT: u16 = 19;

/// The pmtu story, for IPv4 (`pmtu`) and IPv6 (`pmtu6`).
pub async fn story(ctx: &Ctx, rec: &mut Record, v6: bool) -> Result<()> {
    let icmp = too_big_name(v6);
    let fake = ctx.fake(v6);
    let remote = chargen(ctx, v6);

    log::info!("The router answers the first packet over {MTU} with ICMP {icmp}, MTU {MTU}, once.");
    ctx.set_rule(fake.ip(), RuleSpec::answer(MTU as u32).with_budget(1))?;

    log::info!("Send SYN packet, receive SYN+ACK, send ACK.");
    let mut tcp = FakeTcp::connect(ctx, fake, remote).await?;

    log::info!(
        "Chargen fills our window with full-size segments; the router quotes the first one."
    );
    let quoted = tcp.wait_data_over(MTU).await?;
    rec.measured("quoted_ip_len", quoted.ip_len);
    match quoted.action {
        Some(EventAction::Answered) => {}
        Some(EventAction::NotDf) => broken!(
            "REMOTE sent a {}-byte segment without DF: path MTU discovery is off on REMOTE \
             (net.ipv4.ip_no_pmtu_disc, or a locked route MTU)",
            quoted.ip_len
        ),
        other => bail!("the responder did not answer the quoted segment (action {other:?})"),
    }
    rec.measured("icmp_mtu", MTU);

    log::info!(
        "Acknowledge the data before the quoted segment, so that only the quoted data is missing."
    );
    tcp.ack(quoted.seq)?;

    log::info!("Path MTU discovery will resend the quoted data with length {MTU}.");
    let retx = tcp
        .wait_seq(quoted.seq, "retransmission of the quoted segment")
        .await
        .silence_fails()?;
    let why = why_not_adopted(v6, quoted.ip_len, retx.ip_len, MTU);
    rec.check_eq("retransmit_ip_len", retx.ip_len, MTU, &why)?;

    log::info!("The resend must come at once, well before REMOTE's retransmission timeout.");
    let after_ms = retx.ts_ns.saturating_sub(quoted.ts_ns) as f64 / 1e6;
    rec.measured("resend_after_ms", (after_ms * 1000.0).round() / 1000.0);
    if let Some(rto) = ctx.profile.min_rto_ms {
        rec.measured("min_rto_ms", rto);
        rec.check_eq(
            "resent_before_rto",
            after_ms < rto as f64,
            true,
            &format!(
                "the resend came {after_ms:.1} ms after the ICMP, not before REMOTE's \
                 retransmission timeout (at least {rto} ms): it was resent because the timer \
                 ran out, not because of the ICMP (RFC 1191 3 and RFC 8201 4: retransmit promptly)"
            ),
        )?;
    }

    log::info!("The rest of the quoted range follows, no segment larger than {MTU}.");
    let quoted_end = quoted.seq_end();
    let mut largest = retx.ip_len;
    let mut covered = retx.seq_end();
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while covered.wrapping_sub(quoted.seq) < quoted_end.wrapping_sub(quoted.seq) {
        let Some(ev) = tcp.flow.next_until(deadline).await else {
            broken!(
                "REMOTE resent only {} of the {} quoted bytes",
                covered.wrapping_sub(quoted.seq),
                quoted.payload_len()
            );
        };
        if ev.is_tcp() && ev.payload_len() > 0 {
            largest = largest.max(ev.ip_len);
            if ev.seq == covered {
                covered = ev.seq_end();
            }
        }
    }
    rec.check_eq(
        "largest_after_adopting",
        largest,
        MTU,
        "REMOTE sent a segment larger than the path MTU it had adopted",
    )?;
    tcp.reset()?;
    Ok(())
}

/// Why REMOTE resent a `quoted`-byte packet at `got` bytes instead of the announced `mtu`.
pub fn why_not_adopted(v6: bool, quoted: u16, got: u16, mtu: u16) -> String {
    let icmp = too_big_name(v6);
    if got == quoted {
        format!("REMOTE ignored the ICMP {icmp}")
    } else if got > mtu {
        "REMOTE adopted a larger path MTU than announced (a clamp such as net.ipv4.route.min_pmtu?)"
            .to_string()
    } else if got == LINUX_MIN_PMTU && !v6 {
        format!(
            "REMOTE fell back to {LINUX_MIN_PMTU}, Linux's min_pmtu: with net.ipv4.ip_no_pmtu_disc=1 \
             Linux answers frag-needed that way instead of adopting the MTU"
        )
    } else {
        "REMOTE went below the announced MTU".to_string()
    }
}
