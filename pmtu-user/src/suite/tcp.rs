//! The fake host's side of a TCP connection, written as raw frames and judged from events.
use std::net::SocketAddr;

use anyhow::{bail, Context as _, Result};

use super::{hub::Flow, random_u32, Ctx, REPLY_TIMEOUT};
use crate::{
    wire::{tcp_frame, TcpFlags, TcpSegment},
    xdp::events::{tcp_flags, PacketEvent},
};

/// Our receive window: large enough that REMOTE fills its congestion window with full-size
/// segments, no window scaling.
pub const WINDOW: u16 = 65535;

/// Duplicate ACKs that make a sender retransmit (RFC 5681's threshold).
pub const DUP_ACKS: usize = 3;

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
    /// REMOTE's SYN+ACK (its MSS option tells the MSS REMOTE announced).
    pub synack: PacketEvent,
    reset_sent: bool,
}

impl<'a> FakeTcp<'a> {
    /// "Send SYN packet, receive SYN+ACK, send ACK."
    pub async fn connect(ctx: &'a Ctx, fake: SocketAddr, remote: SocketAddr) -> Result<Self> {
        let mut flow = ctx.hub.flow(fake);
        let iss = random_u32();
        let syn = TcpSegment {
            src: fake.ip(),
            dst: remote.ip(),
            sport: fake.port(),
            dport: remote.port(),
            seq: iss,
            ack: 0,
            flags: TcpFlags {
                syn: true,
                ..Default::default()
            },
            window: WINDOW,
            mss: Some(mss_for(remote)),
            payload: Vec::new(),
        };
        ctx.send(&tcp_frame(&ctx.l2, &syn)?)?;
        let want = iss.wrapping_add(1);
        let answer = flow
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
        let tcp = FakeTcp {
            ctx,
            flow,
            fake,
            remote,
            snd_nxt: want,
            data_start: answer.seq.wrapping_add(1),
            synack: answer,
            reset_sent: false,
        };
        tcp.ack(tcp.data_start)?;
        Ok(tcp)
    }

    fn send(&self, flags: TcpFlags, ack: u32, mss: Option<u16>) -> Result<()> {
        let seg = TcpSegment {
            src: self.fake.ip(),
            dst: self.remote.ip(),
            sport: self.fake.port(),
            dport: self.remote.port(),
            seq: self.snd_nxt,
            ack,
            flags,
            window: WINDOW,
            mss,
            payload: Vec::new(),
        };
        self.ctx.send(&tcp_frame(&self.ctx.l2, &seg)?)
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

    /// "Acknowledge the data before `seq`, then the same again three times": REMOTE takes the
    /// duplicate ACKs as the sign that `seq` was lost and resends it at once (fast
    /// retransmit, RFC 5681 3.2), instead of at its retransmission timeout.
    pub fn ack_and_dup_ack(&self, seq: u32) -> Result<()> {
        for _ in 0..=DUP_ACKS {
            self.ack(seq)?;
        }
        Ok(())
    }

    /// Acknowledges everything REMOTE has sent so far (lost on the way or not), so that what
    /// comes next is new data at REMOTE's current segment size. Returns the acknowledged
    /// sequence number: the first byte of that new data.
    pub fn ack_everything_seen(&self) -> Result<u32> {
        let mut high = self.data_start;
        for e in self.flow.seen.iter().filter(|e| e.is_tcp()) {
            let end = e.seq_end();
            if end.wrapping_sub(high) as i32 > 0 {
                high = end;
            }
        }
        self.ack(high)?;
        Ok(high)
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
