//! blackhole: a host gets out of an ICMP black hole by itself (RFC 2923 2.1 describes the hole;
//! RFC 4821, packetization layer path MTU discovery, the way out).
//!
//! The router drops everything over 1300 without a word. REMOTE's full-size segments never
//! arrive and no ICMP tells it why; the fake host acknowledges whatever does arrive. With
//! black-hole detection on (Linux: net.ipv4.tcp_mtu_probing=1, set on a lab's REMOTE and put
//! back afterwards), REMOTE's retransmissions time out, it falls back to a small segment size
//! (a profile value; Linux: tcp_base_mss 1024, IP length 1064 / 1084), then probes larger sizes,
//! which must get above the fallback and stay at most 1300, all within 10 s. A real REMOTE with
//! its detection off is skipped: "REMOTE has no black-hole detection".
use std::time::Duration;

use anyhow::{bail, Result};
use futures::FutureExt as _;
use pmtu_common::{EventAction, RuleAction};
use tokio::time::Instant;

use super::chargen;
use super::pmtu::MTU;
use crate::{
    broken,
    suite::{
        remote_state::{read_sysctl, SysctlChange},
        tcp::{FakeTcp, Received},
        Ctx, Record, Scenario,
    },
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "blackhole",
    about:
        "TCP over IPv4: everything over 1300 dropped without ICMP -> REMOTE falls back, probes up",
    run: |ctx, rec| story(ctx, rec, false).boxed(),
    // It changes a sysctl of REMOTE.
    alone: true,
};

/// How long REMOTE has, from the first segment lost in the hole, to fall back and probe up.
const WITHIN: Duration = Duration::from_secs(10);

/// The blackhole story, for IPv4 (`blackhole`) and IPv6 (`blackhole6`).
pub async fn story(ctx: &Ctx, rec: &mut Record, v6: bool) -> Result<()> {
    let detection = ctx.profile.blackhole;
    let _detection_on = match detection {
        Some(d) if ctx.remote_is_ours => {
            log::info!(
                "Turn REMOTE's black-hole detection on: {}={} (put back afterwards).",
                d.sysctl,
                d.on
            );
            Some(SysctlChange::set(ctx, d.sysctl, d.on)?)
        }
        Some(d) => {
            let value = read_sysctl(ctx, d.sysctl)?;
            rec.measured("detection", format!("{}={value}", d.sysctl));
            if value != d.on {
                rec.skip(format!(
                    "REMOTE has no black-hole detection ({}={value})",
                    d.sysctl
                ));
                return Ok(());
            }
            None
        }
        None => None,
    };

    let fake = ctx.fake(v6);
    let remote = chargen(ctx, v6);
    log::info!("The router silently drops every packet over {MTU}: an ICMP black hole.");
    let hole = RuleSpec {
        action: RuleAction::Blackhole,
        ..RuleSpec::answer(MTU as u32)
    };
    ctx.set_rule(fake.ip(), hole)?;
    log::info!("Send SYN packet, receive SYN+ACK, send ACK.");
    let mut tcp = FakeTcp::connect(ctx, fake, remote).await?;

    log::info!(
        "Acknowledge everything that arrives, as a receiver does, for up to {} s after the \
         first loss.",
        WITHIN.as_secs()
    );
    let mut received = Received::new(tcp.data_start);
    // The first segment lost in the hole: (its sequence number, when).
    let mut first_drop: Option<(u32, u64)> = None;
    let mut dropped = 0u64;
    let mut fallback: Option<(u16, u64)> = None;
    let mut probed: Option<(u16, u64)> = None;
    let mut deadline = Instant::now() + WITHIN;
    while probed.is_none() {
        let Some(ev) = tcp.flow.next_until(deadline).await else {
            break;
        };
        // Each event is needed once: keep memory flat during a long stream.
        tcp.flow.seen.clear();
        if !ev.is_tcp() || ev.payload_len() == 0 {
            continue;
        }
        if ev.action == Some(EventAction::Blackholed) {
            dropped += 1;
            if first_drop.is_none() {
                first_drop = Some((ev.seq, ev.ts_ns));
                deadline = Instant::now() + WITHIN;
            }
            continue;
        }
        if ev.ip_len > MTU {
            bail!(
                "a {}-byte segment passed a hole of {MTU} (responder action {:?})",
                ev.ip_len,
                ev.action
            );
        }
        if let Some((lost_seq, lost_at)) = first_drop {
            let after_ms = ev.ts_ns.saturating_sub(lost_at) / 1_000_000;
            match fallback {
                // REMOTE resends the first lost byte in a segment that fits.
                None if ev.seq == lost_seq => fallback = Some((ev.ip_len, after_ms)),
                Some((size, _)) if ev.ip_len > size => probed = Some((ev.ip_len, after_ms)),
                _ => {}
            }
        }
        let ack = received.add(ev.seq, ev.payload_len());
        tcp.ack_with_sack(ack, received.first_block())?;
    }
    tcp.reset()?;
    rec.measured("dropped_in_hole", dropped);
    if first_drop.is_none() {
        // Nothing to test: chargen sent no full-size segment (a LOCAL or service problem).
        bail!("REMOTE sent nothing over {MTU}: the black hole was never hit");
    }
    let Some((fallback_len, fallback_ms)) = fallback else {
        let lost = format!(
            "{dropped} segments over {MTU} lost in {} s and none resent smaller",
            WITHIN.as_secs()
        );
        // A known detection that is off was skipped above: here it is on.
        if let Some(d) = detection {
            broken!(
                "REMOTE stayed in the black hole with {}={}: {lost}",
                d.sysctl,
                d.on
            );
        }
        rec.skip(format!("REMOTE has no black-hole detection: {lost}"));
        return Ok(());
    };
    rec.measured("fallback_after_ms", fallback_ms);
    rec.measured("fallback_ip_len", fallback_len);
    if let Some(d) = detection {
        rec.check_eq(
            "fallback_ip_len",
            fallback_len,
            d.fallback_ip_len[v6 as usize],
            "REMOTE came out of the black hole at another size than this OS's base segment \
             size (Linux: net.ipv4.tcp_base_mss)",
        )?;
    }
    let Some((probed_len, probed_ms)) = probed else {
        broken!(
            "REMOTE fell back to {fallback_len} after {fallback_ms} ms but did not probe a \
             larger size through the hole within {} s (RFC 4821 searches upward)",
            WITHIN.as_secs()
        );
    };
    rec.measured("probed_ip_len", probed_len);
    rec.measured("probed_after_ms", probed_ms);
    Ok(())
}
