//! tcpfrag6: a Packet Too Big below IPv6's minimum MTU must not produce atomic fragments
//! (RFC 8021) nor a path MTU below 1280 (RFC 8200 5).
//!
//! Answer a full-size TCP data segment with Packet Too Big, MTU 1272. Acknowledge the data
//! before it and report it lost (SACK); REMOTE resends the quoted segment at once: no fragment
//! header with offset 0 and M=0 may appear, and (Linux: TCP ignores such a PTB) the retransmit
//! is still 1500 long.
use anyhow::{bail, Result};
use futures::FutureExt as _;

use super::{chargen, check_no_atomic_fragments};
use crate::{
    broken,
    suite::{tcp::FakeTcp, Blame as _, Ctx, Record, Scenario},
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "tcpfrag6",
    about: "TCP over IPv6: Packet Too Big 1272 -> no atomic fragment, retransmit still 1500",
    run: |ctx, rec| run(ctx, rec).boxed(),
    alone: false,
};

/// Below the IPv6 minimum link MTU of 1280.
pub const MTU: u32 = 1272;
pub const IPV6_MIN_MTU: u16 = 1280;

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let fake = ctx.fake(true);
    let remote = chargen(ctx, true);
    log::info!("The router answers the first full-size segment with Packet Too Big {MTU}, once.");
    ctx.set_rule(fake.ip(), RuleSpec::answer(MTU).with_budget(1))?;

    log::info!("Send SYN packet, receive SYN+ACK, send ACK.");
    let mut tcp = FakeTcp::connect(ctx, fake, remote).await?;
    let quoted = tcp.wait_data_over(MTU as u16).await?;
    rec.measured("quoted_ip_len", quoted.ip_len);
    if !quoted.answered() {
        bail!(
            "the responder did not answer the quoted segment (action {:?})",
            quoted.action
        );
    }

    log::info!(
        "Acknowledge the data before the quoted segment and report it lost (SACK): REMOTE \
         resends it now instead of at its retransmission timeout."
    );
    tcp.report_lost(&quoted).await?;
    let retx = tcp
        .wait_seq(quoted.seq, "retransmission of the quoted segment")
        .await
        .silence_fails()?;
    check_no_atomic_fragments(
        rec,
        &tcp,
        "RFC 8021: a PTB below 1280 must not make a host send atomic fragments",
    )?;
    if retx.ip_len < IPV6_MIN_MTU {
        broken!(
            "retransmit_ip_len was {}, below IPv6's minimum MTU of {IPV6_MIN_MTU}: REMOTE adopted the invalid MTU {MTU}",
            retx.ip_len
        );
    }
    rec.check_eq(
        "retransmit_ip_len",
        retx.ip_len,
        ctx.profile.tcpfrag6_retransmit,
        "this OS's TCP should keep its segment size after a PTB below 1280",
    )?;
    tcp.reset()?;
    Ok(())
}
