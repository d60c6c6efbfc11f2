//! The fake host's side of a TCP connection, written as raw frames and judged from events.
use std::net::SocketAddr;

use anyhow::{bail, Context as _, Result};
use tokio::time::Instant;

use super::{hub::Flow, random_u32, Ctx, REPLY_TIMEOUT};
use crate::{
    wire::{tcp_frame, TcpFlags, TcpSegment},
    xdp::events::{tcp_flags, PacketEvent},
};

/// Our receive window: large enough that REMOTE fills its congestion window with full-size
/// segments, no window scaling.
pub const WINDOW: u16 = 65535;

/// MSS to announce: Linux assumes 536 without the option.
pub fn mss_for(remote: SocketAddr) -> u16 {
    if remote.is_ipv4() {
        1460
    } else {
        1440
    }
}

pub struct FakeTcp<'a> {
    ctx: &'a Ctx,
    pub flow: Flow,
    pub fake: SocketAddr,
    pub remote: SocketAddr,
    /// Our next sequence number.
    snd_nxt: u32,
    /// REMOTE's initial sequence number + 1: the first data byte.
    pub data_start: u32,
    /// The receive window we announce.
    window: u16,
    reset_sent: bool,
}

impl<'a> FakeTcp<'a> {
    /// "Send SYN packet, receive SYN+ACK, send ACK."
    pub async fn connect(ctx: &'a Ctx, fake: SocketAddr, remote: SocketAddr) -> Result<Self> {
        Self::connect_with_window(ctx, fake, remote, WINDOW).await
    }

    /// [`FakeTcp::connect`] announcing receive window `window`: a small one makes REMOTE
    /// send only a few segments (stress: fewer events per flow). Linux bounds its segments to
    /// half the largest window the peer announced, so full-size segments need at least
    /// twice the MSS.
    pub async fn connect_with_window(
        ctx: &'a Ctx,
        fake: SocketAddr,
        remote: SocketAddr,
        window: u16,
    ) -> Result<Self> {
        let flow = ctx.hub.flow(fake);
        let iss = random_u32();
        let mut tcp = FakeTcp {
            ctx,
            flow,
            fake,
            remote,
            snd_nxt: iss,
            data_start: 0,
            window,
            reset_sent: false,
        };
        tcp.send(
            TcpFlags {
                syn: true,
                ..Default::default()
            },
            0,
            Some(mss_for(remote)),
        )?;
        tcp.snd_nxt = iss.wrapping_add(1);
        let want = iss.wrapping_add(1);
        let answer = tcp
            .flow
            .wait_for("SYN+ACK from REMOTE's chargen", REPLY_TIMEOUT, |e| {
                e.is_tcp()
                    && e.sport == remote.port()
                    && e.ack == want
                    && (e.has_flag(tcp_flags::SYN | tcp_flags::ACK) || e.has_flag(tcp_flags::RST))
            })
            .await
            .with_context(|| {
                format!("is chargen listening on {remote}? (`pmtu check-setup` checks)")
            })?;
        if answer.has_flag(tcp_flags::RST) {
            bail!(
                "REMOTE refused the connection with RST: nothing listens on tcp {remote} (chargen)"
            );
        }
        let synack = answer;
        tcp.data_start = synack.seq.wrapping_add(1);
        tcp.ack(tcp.data_start)?;
        Ok(tcp)
    }

    fn send(&self, flags: TcpFlags, ack: u32, mss: Option<u16>) -> Result<()> {
        self.ctx.send(&self.frame(flags, ack, mss)?)
    }

    fn frame(&self, flags: TcpFlags, ack: u32, mss: Option<u16>) -> Result<Vec<u8>> {
        let seg = TcpSegment {
            src: self.fake.ip(),
            dst: self.remote.ip(),
            sport: self.fake.port(),
            dport: self.remote.port(),
            seq: self.snd_nxt,
            ack,
            flags,
            window: self.window,
            mss,
            payload: Vec::new(),
        };
        tcp_frame(&self.ctx.l2, &seg)
    }

    /// Acknowledges REMOTE's data up to (not including) `ack`.
    pub fn ack(&self, ack: u32) -> Result<()> {
        self.send(
            TcpFlags {
                ack: true,
                ..Default::default()
            },
            ack,
            None,
        )
    }

    /// Ends the connection the way the original suite does: RST.
    pub fn reset(&mut self) -> Result<()> {
        self.reset_sent = true;
        self.send(
            TcpFlags {
                rst: true,
                ..Default::default()
            },
            0,
            None,
        )
    }

    /// The first data segment of REMOTE larger than `len` (IP length).
    pub async fn wait_data_over(&mut self, len: u16) -> Result<PacketEvent> {
        let what = format!("data segment of IP length over {len} from chargen");
        self.flow
            .wait_for(&what, REPLY_TIMEOUT, |e| {
                e.is_tcp() && e.payload_len() > 0 && e.ip_len > len
            })
            .await
    }

    /// [`FakeTcp::wait_data_over`], acknowledging the smaller in-order segments before it as
    /// a receiver does (chargen's first line): when REMOTE is slow to write the rest, its
    /// retransmission timer must not fire on that line and shrink its congestion window to
    /// one segment that is never acknowledged.
    pub async fn wait_data_over_acking(&mut self, len: u16) -> Result<PacketEvent> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut next = self.data_start;
        let mut others = 0;
        while let Some(e) = self.flow.next_until(deadline).await {
            if e.is_tcp() && e.payload_len() > 0 {
                if e.ip_len > len {
                    return Ok(e);
                }
                if e.seq == next {
                    next = e.seq_end();
                    self.ack(next)?;
                }
            }
            others += 1;
        }
        bail!(
            "no data segment of IP length over {len} from chargen within {} ms ({others} other packet(s){})",
            REPLY_TIMEOUT.as_millis(),
            self.flow
                .seen
                .last()
                .map(|e| format!(", the last {e}"))
                .unwrap_or_default()
        )
    }

    /// The next segment that carries sequence number `seq`.
    pub async fn wait_seq(&mut self, seq: u32, what: &str) -> Result<PacketEvent> {
        self.flow
            .wait_for(what, REPLY_TIMEOUT, |e| {
                e.is_tcp() && e.payload_len() > 0 && e.seq == seq
            })
            .await
    }
}

impl Drop for FakeTcp<'_> {
    fn drop(&mut self) {
        if !self.reset_sent {
            let _ = self.reset();
        }
    }
}
