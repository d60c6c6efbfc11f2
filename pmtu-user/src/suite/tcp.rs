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

const ACK: TcpFlags = TcpFlags {
    ack: true,
    syn: false,
    fin: false,
    rst: false,
    psh: false,
};

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
    /// REMOTE agreed to selective acknowledgements.
    sack_ok: bool,
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
            sack_permitted: true,
            sack: None,
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
            sack_ok: answer.tcp_sack_permitted(),
            synack: answer,
            reset_sent: false,
        };
        tcp.ack(tcp.data_start)?;
        Ok(tcp)
    }

    fn send(&self, flags: TcpFlags, ack: u32, sack: Option<(u32, u32)>) -> Result<()> {
        let seg = TcpSegment {
            src: self.fake.ip(),
            dst: self.remote.ip(),
            sport: self.fake.port(),
            dport: self.remote.port(),
            seq: self.snd_nxt,
            ack,
            flags,
            window: WINDOW,
            mss: None,
            sack_permitted: false,
            sack,
            payload: Vec::new(),
        };
        self.ctx.send(&tcp_frame(&self.ctx.l2, &seg)?)
    }

    /// Acknowledges REMOTE's data up to (not including) `ack`.
    pub fn ack(&self, ack: u32) -> Result<()> {
        self.send(ACK, ack, None)
    }

    /// "Tell REMOTE that `lost` went missing", so that it resends it now rather than at its
    /// retransmission timeout: acknowledge the data before it and, when REMOTE agreed to SACK,
    /// report everything after it seen so far as received, in the same ACK (RFC 6675 then
    /// declares it lost at once); else send that ACK three times more (fast retransmit on
    /// duplicate ACKs, RFC 5681 3.2; a busy receiver may merge them, so SACK comes first).
    pub async fn report_lost(&mut self, lost: &PacketEvent) -> Result<()> {
        if self.sack_ok {
            // RFC 6675 counts a segment lost once DupThresh segments after it arrived.
            let end = lost.seq_end();
            let mut after = 0;
            let _ = self
                .flow
                .wait_for("data after the lost segment", REPLY_TIMEOUT, |e| {
                    if e.is_tcp() && e.payload_len() > 0 && e.seq.wrapping_sub(end) as i32 >= 0 {
                        after += 1;
                    }
                    after >= DUP_ACKS
                })
                .await;
            let high = self.highest_seen();
            if high.wrapping_sub(end) as i32 > 0 {
                return self.send(ACK, lost.seq, Some((end, high)));
            }
        }
        for _ in 0..=DUP_ACKS {
            self.ack(lost.seq)?;
        }
        Ok(())
    }

    /// The end of the highest data REMOTE has sent so far.
    fn highest_seen(&self) -> u32 {
        let mut high = self.data_start;
        for e in self.flow.seen.iter().filter(|e| e.is_tcp()) {
            let end = e.seq_end();
            if end.wrapping_sub(high) as i32 > 0 {
                high = end;
            }
        }
        high
    }

    /// Acknowledges everything REMOTE has sent so far (lost on the way or not), so that what
    /// comes next is new data at REMOTE's current segment size. Returns the acknowledged
    /// sequence number: the first byte of that new data.
    pub fn ack_everything_seen(&self) -> Result<u32> {
        let high = self.highest_seen();
        self.ack(high)?;
        Ok(high)
    }

    /// Ends the connection the way the original suite does: RST.
    pub fn reset(&mut self) -> Result<()> {
        self.reset_sent = true;
        let rst = TcpFlags {
            rst: true,
            ..Default::default()
        };
        self.send(rst, 0, None)
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
