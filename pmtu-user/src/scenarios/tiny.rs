//! tiny: frag-needed announcing an MTU below what IPv4 allows, or none at all, must never take
//! the path MTU below 68 (RFC 1191 3; RFC 791: every host must handle 68 octets), and a
//! message without a next-hop MTU (0, as routers before RFC 1191 send) must still be handled.
//!
//! Three times, each with a fresh connection from a fake host REMOTE knows nothing about: the router answers the
//! first full-size segment with frag-needed announcing 500, 67, then 0. REMOTE resends the
//! quoted data at once; Linux clamps the path MTU to net.ipv4.route.min_pmtu (552) and locks
//! it, so the resend is 552 long with DF cleared (a profile value; the floor of 68 is checked
//! for every system).

use anyhow::Result;
use futures::FutureExt as _;

use super::chargen;
use crate::{
    broken,
    suite::{
        remote_state::route_to, router::expect_answered, tcp::FakeTcp, Blame as _, Ctx, Record,
        Scenario,
    },
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "tiny",
    about: "TCP over IPv4: frag-needed with MTU 500, 67 or 0 -> never below 68 (Linux: 552)",
    run: |ctx, rec| run(ctx, rec).boxed(),
    alone: false,
};

/// Below Linux's min_pmtu; below IPv4's minimum of 68; "no next-hop MTU".
const MTUS: [u32; 3] = [500, 67, 0];
/// The rule treats full-size segments as too big, whatever MTU it announces.
const TOO_BIG_ABOVE: u16 = 1400;
/// RFC 791: every internet module must be able to forward a datagram of 68 octets.
const IPV4_MIN_MTU: u16 = 68;

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let remote = chargen(ctx, false);
    for mtu in MTUS {
        log::info!("A fake host REMOTE keeps no path MTU for.");
        let fake = ctx.fresh_fake(false)?;
        log::info!(
            "The router answers the first packet over {TOO_BIG_ABOVE} with ICMP fragmentation \
             needed, MTU {mtu}, once."
        );
        ctx.set_rule(
            fake.ip(),
            RuleSpec::answer(mtu)
                .with_limit(TOO_BIG_ABOVE)
                .with_budget(1),
        )?;
        log::info!("Send SYN packet, receive SYN+ACK, send ACK.");
        let mut tcp = FakeTcp::connect(ctx, fake, remote).await?;
        let quoted = tcp.wait_data_over(TOO_BIG_ABOVE).await?;
        expect_answered(&quoted)?;
        log::info!("Acknowledge the data before it: REMOTE resends it at its new size.");
        tcp.ack(quoted.seq)?;
        let resent = tcp
            .wait_seq(quoted.seq, "resend after the frag-needed")
            .await
            .silence_fails()?;
        rec.measured(&format!("mtu{mtu}_resend_ip_len"), resent.ip_len);
        rec.measured(&format!("mtu{mtu}_resend_df"), resent.df);
        if let Some(kept) = route_to(ctx, fake.ip())?.mtu {
            rec.measured(&format!("mtu{mtu}_remote_pmtu"), kept);
        }
        if resent.ip_len < IPV4_MIN_MTU {
            broken!(
                "mtu{mtu}_resend_ip_len was {}, below IPv4's minimum of {IPV4_MIN_MTU} \
                 (RFC 1191 3: never below 68)",
                resent.ip_len
            );
        }
        if resent.ip_len == quoted.ip_len {
            broken!(
                "REMOTE ignored the ICMP fragmentation needed with MTU {mtu}: the resend is \
                 {} long again (a host must handle MTUs it cannot adopt, RFC 1191 3 and 5)",
                resent.ip_len
            );
        }
        if let Some(want) = ctx.profile.tiny_resend {
            rec.check_eq(
                &format!("mtu{mtu}_resend_ip_len"),
                resent.ip_len,
                want.ip_len,
                "this OS should clamp such an MTU to its minimum path MTU",
            )?;
            rec.check_eq(
                &format!("mtu{mtu}_resend_df"),
                resent.df,
                want.df,
                "this OS locks the clamped path MTU and then lets routers fragment (DF clear)",
            )?;
        }
        tcp.reset()?;
    }
    Ok(())
}
