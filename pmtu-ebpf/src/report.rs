//! One ring-buffer event per packet toward a rule's prefix, carrying the action actually
//! taken. The record is reserved and filled before the program acts (the frame's head is copied
//! as received, before an answer is built over it) and submitted once the action is known.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_xdp_load_bytes},
    maps::ring_buf::RingBufEntry,
    programs::XdpContext,
};
use pmtu_common::{Counter, Event, EventAction, Rule, EVENT_HEAD_BYTES};

use crate::{count, parse::Packet, EVENTS};

/// An event being written; `None` when the ring was full (counted as `events_lost`).
pub struct Report(Option<RingBufEntry<Event>>);

impl Report {
    /// Reserves the record and fills in everything but the action.
    #[inline(always)]
    pub fn start(ctx: &XdpContext, pkt: &Packet, rule: &Rule) -> Self {
        let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
            count(Counter::EventsLost);
            return Report(None);
        };
        let ev = entry.as_mut_ptr();
        let frame_len = ctx.data_end() - ctx.data();
        let head_len = if frame_len < EVENT_HEAD_BYTES {
            frame_len
        } else {
            EVENT_HEAD_BYTES
        };
        // SAFETY: `ev` points to a reserved, exclusively owned ring-buffer record of Event's size.
        unsafe {
            (*ev).ts_ns = bpf_ktime_get_ns();
            (*ev).src = pkt.src;
            (*ev).dst = pkt.dst;
            (*ev).seq = pkt.seq;
            (*ev).ack = pkt.ack;
            (*ev).frag_id = pkt.frag_id;
            (*ev).rule_mtu = rule.mtu;
            (*ev).ifindex = ctx.ingress_ifindex() as u32;
            (*ev).ip_len = pkt.ip_len as u16;
            (*ev).sport = pkt.sport;
            (*ev).dport = pkt.dport;
            (*ev).l4_len = pkt.l4_len;
            (*ev).frag_off = pkt.frag_off;
            (*ev).family = pkt.family;
            (*ev).proto = pkt.proto;
            (*ev).tcp_flags = pkt.tcp_flags;
            (*ev).action = EventAction::Observed as u8;
            (*ev).frag = pkt.frag;
            (*ev).has_l4 = pkt.has_l4;
            (*ev)._pad = [0; 2];
            let data = ctx.data();
            (*ev).head_len = if data + EVENT_HEAD_BYTES <= ctx.data_end() {
                // The common case, a frame of at least EVENT_HEAD_BYTES: copied in words here,
                // which costs a fraction of the helper call below.
                let from = data as *const u64;
                let to = (*ev).head.as_mut_ptr() as *mut u64;
                for i in 0..EVENT_HEAD_BYTES / 8 {
                    to.add(i).write_unaligned(from.add(i).read_unaligned());
                }
                EVENT_HEAD_BYTES as u16
            } else {
                // Written so that the verifier sees 1 <= len <= EVENT_HEAD_BYTES (frames here
                // are at least an Ethernet and an IP header long).
                let len = ((head_len as u32).wrapping_sub(1) & (EVENT_HEAD_BYTES as u32 - 1)) + 1;
                let to = (*ev).head.as_mut_ptr() as *mut _;
                if bpf_xdp_load_bytes(ctx.ctx, 0, to, len) == 0 {
                    len as u16
                } else {
                    0
                }
            };
        }
        Report(Some(entry))
    }

    /// Sets the action taken and submits the event.
    #[inline(always)]
    pub fn finish(self, action: EventAction) {
        if let Some(mut entry) = self.0 {
            // SAFETY: the record is still ours until submitted.
            unsafe { (*entry.as_mut_ptr()).action = action as u8 };
            entry.submit(0);
        }
    }
}
