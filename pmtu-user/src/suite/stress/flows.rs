//! One stress flow, verified as the scenarios verify one, and the capacity probe.
//!
//! TCP (as `pmtu`/`pmtu6`): handshake announcing a receive window of two full segments and
//! the first line, so chargen sends only a few segments; the router answers the first one
//! larger than the flow's MTU; REMOTE must resend the quoted data at exactly that IP length
//! and nothing larger. UDP (as `udp6`): an echo whose reply is a full-size 1500-byte packet,
//! answered by the router; the next echo's reply must come fragmented, the first fragment
//! filling the MTU in multiples of 8 octets (IPv6: 40 + 8 + floor((MTU - 48) / 8) * 8;
//! IPv4 with DF cleared: 20 + floor((MTU - 20) / 8) * 8).
use std::net::{IpAddr, SocketAddr};

use anyhow::Result;
use pmtu_common::EventAction;

use super::{
    stats::{Failure, Reason},
    FlowSpec, Outcome, FULL_SIZE,
};
use crate::{
    suite::{
        hub::Flow,
        random_port,
        tcp::{mss_for, FakeTcp},
        udp::{echo_from_fake_to, Reply},
        Ctx, REPLY_TIMEOUT,
    },
    xdp::{events::PacketEvent, rules::RuleSpec},
};

/// The flow's own rule: answer the first packet over its MTU, once; removed when dropped
/// (also when the flow is aborted).
struct RuleGuard<'a> {
    ctx: &'a Ctx,
    addr: IpAddr,
    mtu: u16,
}

impl<'a> RuleGuard<'a> {
    fn set(ctx: &'a Ctx, addr: IpAddr, mtu: u16) -> Result<Self> {
        let guard = RuleGuard { ctx, addr, mtu };
        guard.rearm()?;
        Ok(guard)
    }

    /// Sets the rule again: its one ICMP error is there to send once more.
    fn rearm(&self) -> Result<()> {
        self.ctx
            .set_rule(self.addr, RuleSpec::answer(self.mtu as u32).with_budget(1))
    }
}

impl Drop for RuleGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.ctx.clear_rule(self.addr) {
            log::warn!("removing the rule for {}: {e:#}", self.addr);
        }
    }
}

/// IP and transport headers in front of a TCP or UDP payload.
fn headers(v6: bool, tcp: bool) -> u16 {
    (if v6 { 40 } else { 20 }) + if tcp { 20 } else { 8 }
}

/// The first fragment of a datagram fragmented for path MTU `mtu`: fragments carry multiples
/// of 8 octets (IPv6 adds its 8-byte fragment header).
pub fn first_fragment_len(v6: bool, mtu: u16) -> u16 {
    if v6 {
        48 + (mtu - 48) / 8 * 8
    } else {
        20 + (mtu - 20) / 8 * 8
    }
}

/// Our receive window: the first 74-byte chargen line and two full segments (Linux sends
/// segments of at most half the largest window announced).
fn window(remote: SocketAddr) -> u16 {
    2 * mss_for(remote) + 74
}

/// One flow, by its kind.
pub async fn run(ctx: &Ctx, spec: FlowSpec) -> Result<Outcome> {
    let rule = RuleGuard::set(ctx, spec.fake.ip(), spec.mtu)?;
    if spec.kind.tcp() {
        tcp(ctx, &spec, &rule).await
    } else {
        udp(ctx, &spec, &rule).await
    }
}

/// Said of a failure that came after the rule answered a second time.
const AFTER_SECOND_ICMP: &str = "after a second ICMP error (the first may have been lost)";

/// REMOTE's answer to the ICMP error, and whether the error had to be sent twice.
struct Answer<T> {
    reply: T,
    /// When the ICMP error REMOTE answered was sent (the responder's event).
    icmp_ns: u64,
    again: bool,
}

impl<T> Answer<T> {
    /// REMOTE's answer to the flow's first ICMP error, sent at `icmp_ns`.
    fn after_first(reply: T, icmp_ns: u64) -> Self {
        Answer {
            reply,
            icmp_ns,
            again: false,
        }
    }

    /// A failure's detail, saying when the error was sent twice.
    fn detail(&self, what: impl std::fmt::Display) -> String {
        if self.again {
            format!("{what}; {AFTER_SECOND_ICMP}")
        } else {
            what.to_string()
        }
    }
}

/// REMOTE's resend of the quoted segment. A resend at the quoted size may only mean that the
/// ICMP error never reached REMOTE: the responder's XDP_TX is dropped when REMOTE's receive
/// ring is full, which happens at high rates. So the rule is set again once: the next resend at
/// the quoted size is answered, and the resend after it is judged. A REMOTE that ignores ICMP
/// errors ignores the second one too. The outer error is LOCAL's (the rule could not be set),
/// the inner one REMOTE's (no resend).
async fn tcp_resend(
    conn: &mut FakeTcp<'_>,
    rule: &RuleGuard<'_>,
    quoted: &PacketEvent,
) -> Result<Result<Answer<PacketEvent>, String>> {
    async fn wait(conn: &mut FakeTcp<'_>, seq: u32) -> Result<PacketEvent, String> {
        conn.wait_seq(seq, "resend of the quoted data")
            .await
            .map_err(|e| format!("{e:#}"))
    }
    let retx = match wait(conn, quoted.seq).await {
        Ok(ev) => ev,
        Err(e) => return Ok(Err(e)),
    };
    if retx.ip_len != quoted.ip_len || retx.answered() {
        return Ok(Ok(Answer::after_first(retx, quoted.ts_ns)));
    }
    rule.rearm()?;
    let answered = match wait(conn, quoted.seq).await {
        Ok(ev) => ev,
        Err(e) => return Ok(Err(e)),
    };
    if !answered.answered() {
        return Ok(Ok(Answer::after_first(answered, quoted.ts_ns)));
    }
    Ok(wait(conn, quoted.seq)
        .await
        .map(|retx| Answer {
            reply: retx,
            icmp_ns: answered.ts_ns,
            again: true,
        })
        .map_err(|e| format!("{e}; {AFTER_SECOND_ICMP}")))
}

/// The echo reply after the one the router answered. A reply as large as before is asked for
/// again with the rule set again, for two reasons. The request may overtake the ICMP error:
/// the responder's event comes out of the XDP program, its ICMP error (XDP_TX) leaves only at
/// the end of that NAPI poll, and the request, sent at once on the event, can reach REMOTE
/// first. And the ICMP error may never have reached REMOTE (XDP_TX is dropped when REMOTE's
/// receive ring is full): then the rule answers the large reply again and the reply after
/// that one is judged. A REMOTE that ignores ICMP errors ignores the second one too. The outer
/// error is LOCAL's (the rule could not be set), the inner one REMOTE's failure.
async fn udp_next(
    ctx: &Ctx,
    spec: &FlowSpec,
    flow: &mut Flow,
    rule: &RuleGuard<'_>,
    first: &Reply,
) -> Result<Result<Answer<Reply>, Outcome>> {
    let unchanged = |r: &Reply| !r.is_fragmented() && r.first_len() == FULL_SIZE;
    let next = match echo(ctx, spec, flow).await {
        Ok(r) => r,
        Err(failed) => return Ok(Err(failed)),
    };
    if !unchanged(&next) {
        return Ok(Ok(Answer::after_first(next, first.first.ts_ns)));
    }
    rule.rearm()?;
    let next = match echo(ctx, spec, flow).await {
        Ok(r) => r,
        Err(failed) => return Ok(Err(failed)),
    };
    if !(unchanged(&next) && next.first.answered()) {
        return Ok(Ok(Answer::after_first(next, first.first.ts_ns)));
    }
    let icmp_ns = next.first.ts_ns;
    Ok(echo(ctx, spec, flow).await.map(|reply| Answer {
        reply,
        icmp_ns,
        again: true,
    }))
}

/// How a resend compares with the announced MTU.
fn resend_reason(quoted_len: u16, resent: u16, expected: u16) -> Option<Reason> {
    if resent == expected {
        None
    } else if resent == quoted_len {
        Some(Reason::IgnoredIcmp)
    } else if resent > expected {
        Some(Reason::AboveMtu)
    } else {
        Some(Reason::BelowMtu)
    }
}

/// The router's answer to a too-big packet, or why there was none.
fn answered(spec: &FlowSpec, ev: &PacketEvent) -> Option<Outcome> {
    match ev.action {
        Some(EventAction::Answered) => None,
        Some(EventAction::NotDf) => Some(Failure::new(spec, Reason::NoDf).detail(ev).boxed()),
        _ => Some(Failure::new(spec, Reason::NotAnswered).detail(ev).boxed()),
    }
}

async fn tcp(ctx: &Ctx, spec: &FlowSpec, rule: &RuleGuard<'_>) -> Result<Outcome> {
    let mtu = spec.mtu;
    let mut conn = match FakeTcp::connect_with_window(
        ctx,
        spec.fake,
        spec.remote,
        window(spec.remote),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            return Ok(Failure::new(spec, Reason::NoHandshake)
                .detail(format!("{e:#}"))
                .boxed())
        }
    };
    let quoted = match conn.wait_data_over_acking(mtu).await {
        Ok(ev) => ev,
        Err(e) => {
            return Ok(Failure::new(spec, Reason::NoData)
                .detail(format!("{e:#}"))
                .boxed())
        }
    };
    if let Some(failed) = answered(spec, &quoted) {
        return Ok(failed);
    }
    // Acknowledge the data before the quoted segment: only the quoted data is missing.
    conn.ack(quoted.seq)?;
    let answer = match tcp_resend(&mut conn, rule, &quoted).await? {
        Ok(answer) => answer,
        Err(e) => return Ok(Failure::new(spec, Reason::NoResend).detail(e).boxed()),
    };
    let retx = &answer.reply;
    if let Some(reason) = resend_reason(quoted.ip_len, retx.ip_len, mtu) {
        return Ok(Failure::new(spec, reason)
            .measured("retransmit_ip_len", retx.ip_len, mtu)
            .detail(answer.detail(retx))
            .boxed());
    }
    let latency_ns = retx.ts_ns.saturating_sub(answer.icmp_ns);
    // The rest of the quoted range follows, nothing larger than the MTU. Each piece is
    // acknowledged as a receiver would, so that REMOTE goes on even after a timeout.
    let quoted_len = quoted.payload_len();
    let mut covered = retx.seq_end();
    let mut largest = retx.ip_len;
    conn.ack(covered)?;
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while covered.wrapping_sub(quoted.seq) < quoted_len {
        let Some(ev) = conn.flow.next_until(deadline).await else {
            return Ok(Failure::new(spec, Reason::PartialResend)
                .measured("resent_bytes", covered.wrapping_sub(quoted.seq), quoted_len)
                .detail(format!("quoted {quoted}; resent first {retx}"))
                .boxed());
        };
        if ev.is_tcp() && ev.payload_len() > 0 {
            largest = largest.max(ev.ip_len);
            if ev.seq == covered {
                covered = ev.seq_end();
                conn.ack(covered)?;
            }
        }
    }
    if largest > mtu {
        return Ok(Failure::new(spec, Reason::LargerAfterAdopting)
            .measured("largest_after_adopting", largest, mtu)
            .boxed());
    }
    conn.reset()?;
    Ok(Outcome::Verified {
        latency_ns,
        answered_again: answer.again,
    })
}

/// The echo request whose reply is a full-size packet.
fn udp_payload(v6: bool) -> usize {
    (FULL_SIZE - headers(v6, false)) as usize
}

async fn echo(ctx: &Ctx, spec: &FlowSpec, flow: &mut Flow) -> Result<Reply, Outcome> {
    echo_from_fake_to(ctx, flow, spec.remote, udp_payload(spec.kind.v6()))
        .await
        .map_err(|e| {
            Failure::new(spec, Reason::NoEchoReply)
                .detail(format!("{e:#}"))
                .boxed()
        })
}

/// Checks a reply that must come fragmented for path MTU `mtu`.
fn check_fragmented(spec: &FlowSpec, answer: &Answer<Reply>, mtu: u16) -> Option<Outcome> {
    let v6 = spec.kind.v6();
    let reply = &answer.reply;
    if let Some(atomic) = reply.atomic_fragment() {
        return Some(
            Failure::new(spec, Reason::AtomicFragment)
                .detail(answer.detail(atomic))
                .boxed(),
        );
    }
    if !reply.is_fragmented() {
        let reason = if reply.first_len() == FULL_SIZE {
            Reason::IgnoredIcmp
        } else {
            Reason::NotFragmented
        };
        return Some(
            Failure::new(spec, reason)
                .measured("next_reply_fragmented", false, true)
                .detail(answer.detail(&reply.first))
                .boxed(),
        );
    }
    let expected = first_fragment_len(v6, mtu);
    let got = reply.first_len();
    if got != expected {
        let reason = if got > mtu {
            Reason::AboveMtu
        } else if got < expected {
            Reason::BelowMtu
        } else {
            Reason::FragmentLength
        };
        return Some(
            Failure::new(spec, reason)
                .measured("next_reply_first_fragment_len", got, expected)
                .detail(answer.detail(&reply.first))
                .boxed(),
        );
    }
    if !v6 && reply.first.df {
        return Some(
            Failure::new(spec, Reason::DfOnFragment)
                .detail(answer.detail(&reply.first))
                .boxed(),
        );
    }
    None
}

async fn udp(ctx: &Ctx, spec: &FlowSpec, rule: &RuleGuard<'_>) -> Result<Outcome> {
    let mut flow = ctx.hub.flow(spec.fake);
    let first = match echo(ctx, spec, &mut flow).await {
        Ok(r) => r,
        Err(failed) => return Ok(failed),
    };
    if first.is_fragmented() {
        return Ok(Failure::new(spec, Reason::FragmentedEarly)
            .measured("first_reply_fragmented", true, false)
            .detail(&first.first)
            .boxed());
    }
    if first.first_len() != FULL_SIZE {
        return Ok(Failure::new(spec, Reason::ReplyLength)
            .measured("first_reply_ip_len", first.first_len(), FULL_SIZE)
            .boxed());
    }
    if let Some(failed) = answered(spec, &first.first) {
        return Ok(failed);
    }
    let answer = match udp_next(ctx, spec, &mut flow, rule, &first).await? {
        Ok(answer) => answer,
        Err(failed) => return Ok(failed),
    };
    if let Some(failed) = check_fragmented(spec, &answer, spec.mtu) {
        return Ok(failed);
    }
    Ok(Outcome::Verified {
        latency_ns: answer.reply.first.ts_ns.saturating_sub(answer.icmp_ns),
        answered_again: answer.again,
    })
}

/// What a probe of an earlier destination found.
#[derive(Debug)]
pub enum Probe {
    /// REMOTE still used the destination's path MTU.
    Remembered,
    /// REMOTE had forgotten it, and adopted it again on one new ICMP error.
    Readopted,
    /// Something was wrong; `forgotten`: REMOTE had forgotten the path MTU before that.
    Failed {
        failure: Box<Failure>,
        forgotten: bool,
    },
}

/// Probes an earlier destination again with a new connection or datagram: does REMOTE still
/// use its path MTU? If not, one new ICMP error must bring it back.
pub async fn probe(ctx: &Ctx, spec: FlowSpec) -> Result<Probe> {
    let spec = FlowSpec {
        fake: SocketAddr::new(spec.fake.ip(), random_port()),
        ..spec
    };
    let rule = RuleGuard::set(ctx, spec.fake.ip(), spec.mtu)?;
    let outcome = if spec.kind.tcp() {
        probe_tcp(ctx, &spec, &rule).await?
    } else {
        probe_udp(ctx, &spec, &rule).await?
    };
    Ok(outcome)
}

fn probe_failed(outcome: Outcome, forgotten: bool) -> Probe {
    match outcome {
        Outcome::Failed(failure) => Probe::Failed { failure, forgotten },
        Outcome::Verified { .. } => Probe::Readopted,
    }
}

async fn probe_tcp(ctx: &Ctx, spec: &FlowSpec, rule: &RuleGuard<'_>) -> Result<Probe> {
    let mtu = spec.mtu;
    let window = window(spec.remote);
    let mut conn = match FakeTcp::connect_with_window(ctx, spec.fake, spec.remote, window).await {
        Ok(c) => c,
        Err(e) => {
            let failed = Failure::new(spec, Reason::NoHandshake).detail(format!("{e:#}"));
            return Ok(probe_failed(failed.boxed(), false));
        }
    };
    // The first segment of at least the MTU: exactly the MTU if REMOTE remembers it (smaller
    // ones, chargen's first line or lines Nagle gathered, say nothing and are acknowledged).
    let first = match conn.wait_data_over_acking(mtu - 1).await {
        Ok(ev) => ev,
        Err(e) => {
            let failed = Failure::new(spec, Reason::NoData).detail(format!("{e:#}"));
            return Ok(probe_failed(failed.boxed(), false));
        }
    };
    if first.ip_len == mtu {
        conn.reset()?;
        return Ok(Probe::Remembered);
    }
    if let Some(failed) = answered(spec, &first) {
        return Ok(probe_failed(failed, true));
    }
    conn.ack(first.seq)?;
    let answer = match tcp_resend(&mut conn, rule, &first).await? {
        Ok(answer) => answer,
        Err(e) => {
            let failed = Failure::new(spec, Reason::NoResend).detail(e);
            return Ok(probe_failed(failed.boxed(), true));
        }
    };
    conn.reset()?;
    let retx = &answer.reply;
    Ok(match resend_reason(first.ip_len, retx.ip_len, mtu) {
        None => Probe::Readopted,
        Some(reason) => {
            let failed = Failure::new(spec, reason)
                .measured("retransmit_ip_len", retx.ip_len, mtu)
                .detail(answer.detail(retx));
            probe_failed(failed.boxed(), true)
        }
    })
}

async fn probe_udp(ctx: &Ctx, spec: &FlowSpec, rule: &RuleGuard<'_>) -> Result<Probe> {
    let mut flow = ctx.hub.flow(spec.fake);
    let first = match echo(ctx, spec, &mut flow).await {
        Ok(r) => r,
        Err(failed) => return Ok(probe_failed(failed, false)),
    };
    if first.is_fragmented() {
        let icmp_ns = first.first.ts_ns;
        let remembered = Answer::after_first(first, icmp_ns);
        return Ok(match check_fragmented(spec, &remembered, spec.mtu) {
            None => Probe::Remembered,
            Some(failed) => probe_failed(failed, false),
        });
    }
    if let Some(failed) = answered(spec, &first.first) {
        return Ok(probe_failed(failed, true));
    }
    let next = match udp_next(ctx, spec, &mut flow, rule, &first).await? {
        Ok(answer) => answer,
        Err(failed) => return Ok(probe_failed(failed, true)),
    };
    Ok(match check_fragmented(spec, &next, spec.mtu) {
        None => Probe::Readopted,
        Some(failed) => probe_failed(failed, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fragments_fill_the_mtu_in_multiples_of_8() {
        // udp6's numbers: PTB 1300 -> 1296.
        assert_eq!(first_fragment_len(true, 1300), 1296);
        assert_eq!(first_fragment_len(true, 1280), 1280);
        assert_eq!(first_fragment_len(true, 1287), 1280);
        // IPv4 (RFC 1191 measurements): frag-needed 1300 -> 1300.
        assert_eq!(first_fragment_len(false, 1300), 1300);
        assert_eq!(first_fragment_len(false, 1299), 1292);
        assert_eq!(udp_payload(true), 1452);
        assert_eq!(udp_payload(false), 1472);
    }

    #[test]
    fn resends_are_judged_against_the_announced_mtu() {
        assert_eq!(resend_reason(1500, 1300, 1300), None);
        assert_eq!(resend_reason(1500, 1500, 1300), Some(Reason::IgnoredIcmp));
        assert_eq!(resend_reason(1500, 1400, 1300), Some(Reason::AboveMtu));
        assert_eq!(resend_reason(1500, 552, 1300), Some(Reason::BelowMtu));
    }
}
