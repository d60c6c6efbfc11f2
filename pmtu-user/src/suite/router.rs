//! The controller playing the router itself: ICMP errors built from a packet REMOTE sent,
//! for the messages the XDP program would not send on its own (a quote that lies about the
//! TCP sequence number, a second Packet Too Big about a retransmission).
use std::net::IpAddr;

use anyhow::{bail, Context as _, Result};
use pmtu_common::EventAction;

use super::Ctx;
use crate::broken;
use crate::{
    wire::{set_tcp_seq, too_big_frame},
    xdp::events::PacketEvent,
};

/// What the quote says about the packet it quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quote {
    /// The packet as REMOTE sent it (its first bytes, as a router may truncate).
    AsSent,
    /// The packet with its TCP sequence number replaced: a forged or stale ICMP.
    TcpSeq(u32),
}

/// Sends REMOTE the ICMP "fragmentation needed" / Packet Too Big a router with a next hop of
/// `mtu` would send about `about`, from LOCAL_ADDR(6), quoting its first bytes.
pub fn send_too_big(ctx: &Ctx, about: &PacketEvent, mtu: u32, quote: Quote) -> Result<()> {
    let mut quoted = about
        .ip_head()
        .context("the event carries no IP header to quote")?
        .to_vec();
    if let Quote::TcpSeq(seq) = quote {
        set_tcp_seq(&mut quoted, seq)?;
    }
    let (router, to): (IpAddr, IpAddr) = match about.src {
        IpAddr::V4(to) => (ctx.topo.local_addr.into(), to.into()),
        IpAddr::V6(to) => (ctx.topo.local_addr6.into(), to.into()),
    };
    ctx.send(&too_big_frame(&ctx.l2, router, to, mtu, &quoted)?)
}

/// The XDP router answered `ev` with its ICMP error; when it did not, says why in REMOTE's
/// terms (a packet without DF means REMOTE does no path MTU discovery on that path: a FAIL;
/// any other action is the responder's problem: an error).
pub fn expect_answered(ev: &PacketEvent) -> Result<()> {
    match ev.action {
        Some(EventAction::Answered) => Ok(()),
        Some(EventAction::NotDf) => broken!(
            "REMOTE sent a {}-byte packet without DF: path MTU discovery is off on REMOTE \
             (net.ipv4.ip_no_pmtu_disc, or a locked route MTU)",
            ev.ip_len
        ),
        other => bail!(
            "the responder did not answer the {}-byte packet (action {other:?})",
            ev.ip_len
        ),
    }
}
