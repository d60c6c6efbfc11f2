//! The fake host's side of a TCP connection, written as raw frames and judged from events.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

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

/// Duplicate ACKs that make a sender retransmit (RFC 5681's threshold).
pub const DUP_ACKS: usize = 3;
/// How long a receiver with delayed ACKs waits before acknowledging a small segment (Linux's
/// minimum, 40 ms).
pub const DELAYED_ACK: Duration = Duration::from_millis(40);

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
    /// The receive window we announce.
    window: u16,
    /// REMOTE's SYN+ACK (its MSS option tells the MSS REMOTE announced).
    pub synack: PacketEvent,
    /// REMOTE agreed to selective acknowledgements.
    sack_ok: bool,
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
            window,
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
            window,
            sack_ok: answer.tcp_sack_permitted(),
            synack: answer,
            reset_sent: false,
        };
        tcp.ack(tcp.data_start)?;
        Ok(tcp)
    }

    fn send(&self, flags: TcpFlags, ack: u32, sack: Option<(u32, u32)>) -> Result<()> {
        self.ctx.send(&self.frame(flags, ack, sack)?)
    }

    fn frame(&self, flags: TcpFlags, ack: u32, sack: Option<(u32, u32)>) -> Result<Vec<u8>> {
        let seg = TcpSegment {
            src: self.fake.ip(),
            dst: self.remote.ip(),
            sport: self.fake.port(),
            dport: self.remote.port(),
            seq: self.snd_nxt,
            ack,
            flags,
            window: self.window,
            mss: None,
            sack_permitted: false,
            sack,
            payload: Vec::new(),
        };
        tcp_frame(&self.ctx.l2, &seg)
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

    /// Acknowledges `ack`, reporting `block` as received beyond it (SACK, RFC 2018) when
    /// REMOTE agreed to it.
    pub fn ack_with_sack(&self, ack: u32, block: Option<(u32, u32)>) -> Result<()> {
        self.send(ACK, ack, block.filter(|_| self.sack_ok))
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

    /// [`FakeTcp::wait_data_over`], acknowledging the smaller in-order segments before it as
    /// a receiver does (chargen's first line): when REMOTE is slow to write the rest, its
    /// retransmission timer must not fire on that line and shrink its congestion window to
    /// one segment that is never acknowledged. The first segment is acknowledged at once, the
    /// later small ones after [`DELAYED_ACK`], as a receiver with delayed ACKs does (RFC 1122
    /// 4.2.3.2): meanwhile Nagle's algorithm makes a slow writer's lines into full segments
    /// (acknowledged at once, every line would leave in a segment of its own).
    pub async fn wait_data_over_acking(&mut self, len: u16) -> Result<PacketEvent> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut next = self.data_start;
        let mut acked = next;
        let mut ack_due: Option<Instant> = None;
        let mut others = 0;
        loop {
            let until = ack_due.map_or(deadline, |due| due.min(deadline));
            let Some(e) = self.flow.next_until(until).await else {
                if ack_due.is_some_and(|due| due < deadline && Instant::now() >= due) {
                    self.ack(next)?;
                    acked = next;
                    ack_due = None;
                    continue;
                }
                break;
            };
            if e.is_tcp() && e.payload_len() > 0 {
                if e.ip_len > len {
                    return Ok(e);
                }
                if e.seq == next {
                    next = e.seq_end();
                    if acked == self.data_start {
                        self.ack(next)?;
                        acked = next;
                    } else if ack_due.is_none() {
                        ack_due = Some(Instant::now() + DELAYED_ACK);
                    }
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

/// What a receiver holds of REMOTE's byte stream: the next byte it expects, and what arrived
/// beyond it out of order, so that the fake host acknowledges what arrived as a real receiver
/// would (REMOTE interleaves retransmissions with new data after a timeout).
pub struct Received {
    start: u32,
    /// Offset from `start` of the next byte expected.
    next: u64,
    /// Out-of-order ranges [from, to) beyond `next`, by offset.
    ahead: BTreeMap<u64, u64>,
}

impl Received {
    /// Nothing received yet; `start` is the first byte expected.
    pub fn new(start: u32) -> Self {
        Self {
            start,
            next: 0,
            ahead: BTreeMap::new(),
        }
    }

    /// Takes the segment [seq, seq + len); returns the cumulative acknowledgement.
    pub fn add(&mut self, seq: u32, len: u32) -> u32 {
        let from = seq.wrapping_sub(self.start) as u64;
        // Data before the start (a wrapped offset) is old: nothing to take.
        if from < 1 << 31 && len > 0 {
            let to = from + len as u64;
            if to > self.next {
                let entry = self.ahead.entry(from.max(self.next)).or_insert(to);
                *entry = (*entry).max(to);
            }
            while let Some((&f, &t)) = self.ahead.first_key_value() {
                if f > self.next {
                    break;
                }
                self.next = self.next.max(t);
                self.ahead.remove(&f);
            }
        }
        self.ack()
    }

    /// The next byte expected.
    pub fn ack(&self) -> u32 {
        self.start.wrapping_add(self.next as u32)
    }

    /// The first range held beyond the next byte expected, for a SACK block.
    pub fn first_block(&self) -> Option<(u32, u32)> {
        self.ahead.first_key_value().map(|(&f, &t)| {
            (
                self.start.wrapping_add(f as u32),
                self.start.wrapping_add(t as u32),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_data_is_held_until_the_gap_fills() {
        let start = u32::MAX - 100;
        let mut r = Received::new(start);
        assert_eq!(r.add(start, 50), start.wrapping_add(50));
        // A gap of 50, then 100 bytes beyond it.
        assert_eq!(r.add(start.wrapping_add(100), 100), start.wrapping_add(50));
        assert_eq!(
            r.first_block(),
            Some((start.wrapping_add(100), start.wrapping_add(200)))
        );
        // Old data and duplicates change nothing.
        assert_eq!(r.add(start.wrapping_sub(10), 5), start.wrapping_add(50));
        assert_eq!(r.add(start, 50), start.wrapping_add(50));
        // The gap fills, overlapping both sides: everything is in order now.
        assert_eq!(r.add(start.wrapping_add(40), 70), start.wrapping_add(200));
        assert_eq!(r.first_block(), None);
    }
}
