//! window: an ICMP frag-needed quoting a TCP sequence number outside the send window must be
//! ignored (RFC 5927 4.1, the blind PMTU degradation attack; RFC 8201 4 for IPv6).
//!
//! Fake a TCP connection to chargen as pmtu does, but the router only watches. The controller
//! builds frag-needed, MTU 1300, itself from the first full-size segment, with the quoted
//! sequence number moved outside [SND.UNA, SND.NXT]: once far above, once below. REMOTE must
//! ignore both: no path MTU toward the fake host, the segment (resent at once when reported
//! lost) still full size, nothing ever sent at 1300.

use anyhow::Result;
use futures::FutureExt as _;

use super::pmtu::MTU;
use super::{chargen, too_big_name};
use crate::{
    broken,
    suite::{
        remote_state::{counter, route_to},
        router::{send_too_big, Quote},
        tcp::FakeTcp,
        Blame as _, Ctx, Record, Scenario,
    },
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "window",
    about: "TCP over IPv4: frag-needed quoting a sequence outside the window -> ignored",
    run: |ctx, rec| story(ctx, rec, false).boxed(),
    alone: false,
};

/// Far above SND.NXT: no window is this large without scaling.
const ABOVE: u32 = 1 << 30;
/// Below SND.UNA.
const BELOW: u32 = 100_000;

/// The window story, for IPv4 (`window`) and IPv6 (`window6`).
pub async fn story(ctx: &Ctx, rec: &mut Record, v6: bool) -> Result<()> {
    let icmp = too_big_name(v6);
    let fake = ctx.fake(v6);
    let remote = chargen(ctx, v6);
    log::info!("The router only watches: the controller sends the ICMP itself.");
    ctx.set_rule(fake.ip(), RuleSpec::observe())?;
    let counter_name = ctx.profile.out_of_window_counter;
    let before = counter_name.map(|c| counter(ctx, c)).transpose()?;

    log::info!("Send SYN packet, receive SYN+ACK, send ACK.");
    let mut tcp = FakeTcp::connect(ctx, fake, remote).await?;
    let quoted = tcp.wait_data_over(MTU).await?;
    rec.measured("quoted_ip_len", quoted.ip_len);
    if !v6 && !quoted.df {
        broken!(
            "REMOTE sent a {}-byte segment without DF: path MTU discovery is off on REMOTE",
            quoted.ip_len
        );
    }

    let above = quoted.seq.wrapping_add(ABOVE);
    let below = tcp.data_start.wrapping_sub(BELOW);
    log::info!(
        "Send ICMP {icmp} with MTU {MTU} quoting that segment, its sequence number {ABOVE} \
         above it, then {BELOW} below the first unacknowledged byte."
    );
    send_too_big(ctx, &quoted, MTU as u32, Quote::TcpSeq(above))?;
    send_too_big(ctx, &quoted, MTU as u32, Quote::TcpSeq(below))?;

    log::info!("Acknowledge the data before it and report it lost (SACK): REMOTE resends it now.");
    tcp.report_lost(&quoted).await?;
    let resent = tcp
        .wait_seq(quoted.seq, "resend of the segment the forged ICMP quoted")
        .await
        .silence_fails()?;
    rec.check_eq(
        "resend_ip_len",
        resent.ip_len,
        quoted.ip_len,
        &format!(
            "REMOTE lowered its segment size for an ICMP {icmp} whose quoted sequence number \
             lies outside its send window (RFC 5927 4.1: a blind attacker can send those)"
        ),
    )?;
    let at_mtu = tcp
        .flow
        .seen
        .iter()
        .filter(|e| e.is_tcp() && e.payload_len() > 0 && e.ip_len == MTU)
        .count() as u64;
    rec.check_eq(
        "segments_at_1300",
        at_mtu,
        0,
        "REMOTE sent segments at the forged ICMP's MTU",
    )?;
    let route = route_to(ctx, fake.ip())?;
    rec.check_eq(
        "remote_pmtu",
        route.mtu.unwrap_or(0),
        0,
        "REMOTE keeps a path MTU (0: none) learned from an ICMP quoting a sequence number \
         outside its send window",
    )?;
    if let (Some(name), Some(before)) = (counter_name, before) {
        let delta = counter(ctx, name)?.saturating_sub(before);
        let why = if delta == 0 {
            format!(
                "REMOTE's {name} did not count them: the forged ICMPs never reached its TCP to \
                 be judged by their sequence numbers (dropped before, e.g. by a filter), so \
                 this REMOTE's validation cannot be seen"
            )
        } else {
            format!("REMOTE's {name} should count both forged ICMPs")
        };
        rec.check_eq("out_of_window_icmps", delta, 2, &why)?;
    }
    tcp.reset()?;
    Ok(())
}
