//! The XDP program: a router whose next hop has a smaller MTU.
//!
//! For every frame: parse L2/L3 ([`parse`]), look the destination up in the rule tries; no rule ->
//! XDP_PASS untouched. A packet toward a rule is judged ([`judge`]): it fits, or it is too big
//! and the rule answers it, drops it (black hole) or only observes it; some too-big packets must
//! never be answered (RFC 1812 4.3.2.7, RFC 4443 2.4(e)). Then the program acts ([`act`]): an
//! answer is built in place ([`answer`]) and sent back with XDP_TX. Last, one event per packet
//! reports the action actually taken ([`report`]).
//!
//! Frames that cannot be parsed (truncated headers, bad IP version or header length) are counted
//! as parse errors and passed untouched: the kernel's own stack deals with them.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core's Atomic* types offer no fetch_add; the
// intrinsic compiles to BPF's own atomic add.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod answer;
mod bench;
mod csum;
mod parse;
mod report;

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::size_of,
};

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::warn;
use pmtu_common::{
    Config, Counter, Event, EventAction, Rule, RuleAction, COUNTER_COUNT, EVENTS_RING_BYTES,
    FRAG_DF, RULES_PER_FAMILY, RULE_F_PASS, RULE_SLOTS,
};

use crate::{
    parse::{Packet, ETH_HLEN, ETH_P_IP, ETH_P_IPV6},
    report::Report,
};

#[map]
static RULES_V4: LpmTrie<[u8; 4], Rule> = LpmTrie::with_max_entries(RULES_PER_FAMILY, 0);
#[map]
static RULES_V6: LpmTrie<[u8; 16], Rule> = LpmTrie::with_max_entries(RULES_PER_FAMILY, 0);
/// ICMP errors sent per rule, at the rule's `slot`.
#[map]
static RULE_SENT: Array<u64> = Array::with_max_entries(RULE_SLOTS, 0);
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[xdp]
pub fn pmtu(ctx: XdpContext) -> u32 {
    match handle(&ctx) {
        Ok(action) => action,
        Err(()) => {
            count(Counter::ParseErrors);
            XDP_PASS
        }
    }
}

/// The pass-through program for the peer veth: native XDP_TX on a veth is delivered only when
/// the receiving end has an XDP program too.
#[xdp]
pub fn pmtu_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// The benchmark floor: the least an XDP responder can do, swap the MACs and send back.
#[xdp]
pub fn pmtu_floor(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + ETH_HLEN > ctx.data_end() {
        return XDP_PASS;
    }
    answer::swap_macs(data as *mut u8);
    XDP_TX
}

#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe { *p += 1 };
    }
}

/// Parse, then match a rule; traffic toward no rule passes untouched.
#[inline(always)]
fn handle(ctx: &XdpContext) -> Result<u32, ()> {
    let l2 = parse::l2(ctx)?;
    match l2.ethertype {
        ETH_P_IP => {
            let ip = parse::ipv4_header(ctx, &l2)?;
            let Some(rule) = RULES_V4.get(Key::new(32, ip.dst_addr)) else {
                return Ok(pass_untouched());
            };
            let pkt = parse::ipv4(ctx, &l2, ip)?;
            Ok(decide(ctx, &pkt, rule))
        }
        ETH_P_IPV6 => {
            let ip = parse::ipv6_header(ctx, &l2)?;
            let Some(rule) = RULES_V6.get(Key::new(128, ip.dst_addr)) else {
                return Ok(pass_untouched());
            };
            let pkt = parse::ipv6(ctx, &l2, ip)?;
            Ok(decide(ctx, &pkt, rule))
        }
        _ => Ok(pass_untouched()),
    }
}

#[inline(always)]
fn pass_untouched() -> u32 {
    count(Counter::Passed);
    XDP_PASS
}

/// The router's decision for a packet toward a rule's prefix: judge, act, report.
#[inline(always)]
fn decide(ctx: &XdpContext, pkt: &Packet, rule: &Rule) -> u32 {
    count(Counter::Seen);
    // The event copies the frame's head now, before an answer is built over it.
    let report = Report::start(ctx, pkt, rule);
    let (action, verdict) = act(ctx, pkt, rule, judge(ctx, pkt, rule));
    report.finish(action);
    verdict
}

/// What the rule and the RFCs say to do with a packet.
enum Judgement {
    Fits,
    Blackhole,
    Observe,
    NotDf,
    NotAnswerable,
    BudgetSpent,
    /// Answer it; `sent` points at the rule's count of ICMP errors, which was `before`.
    Answer {
        sent: *mut u64,
        before: u64,
    },
    /// It should be answered, but the rule's count cannot be reached.
    NoCount,
}

#[inline(always)]
fn judge(ctx: &XdpContext, pkt: &Packet, rule: &Rule) -> Judgement {
    if pkt.ip_len <= rule.too_big_above() as usize {
        return Judgement::Fits;
    }
    match RuleAction::from_u8(rule.action) {
        Some(RuleAction::Answer) => {}
        Some(RuleAction::Blackhole) => return Judgement::Blackhole,
        _ => return Judgement::Observe,
    }
    if pkt.family == 4 && pkt.frag & FRAG_DF == 0 {
        // A router fragments it; with the pass flag the kernel does.
        return Judgement::NotDf;
    }
    if !answerable(ctx, pkt) {
        return Judgement::NotAnswerable;
    }
    let Some(sent) = RULE_SENT.get_ptr_mut(rule.slot) else {
        return Judgement::NoCount;
    };
    // The budget check reads the count, and only an answer that was built adds to it. Cpu v1
    // has no fetch-and-add (and v3's 32-bit moves break packet pointers read from xdp_md), so
    // two CPUs answering the same rule at the same instant may overshoot the budget by one
    // each. A veth or a single-queue tap runs one rule's packets on one CPU at a time: there
    // the budget is exact.
    // SAFETY: `sent` points into the map's value (8-byte aligned), alive for this run; it is
    // only written atomically. Cpu v1 has no atomic load instruction either: an aligned 64-bit
    // load is one access on every BPF JIT.
    let before = unsafe { core::ptr::read_volatile(sent) };
    if rule.budget != 0 && before >= rule.budget as u64 {
        return Judgement::BudgetSpent;
    }
    Judgement::Answer { sent, before }
}

/// Whether an ICMP error may and can be sent for this too-big packet.
#[inline(always)]
fn answerable(ctx: &XdpContext, pkt: &Packet) -> bool {
    // Never an error about an error, nor about a later fragment, nor when the extension
    // headers hide what the packet is (RFC 1812 4.3.2.7, RFC 4443 2.4(e)).
    if pkt.icmp_error || pkt.frag_off != 0 || !pkt.walked {
        return false;
    }
    // Not for a frame sent to a group or broadcast MAC (the answer's source MAC would be that
    // address), nor from a group MAC.
    if pkt.group_mac {
        return false;
    }
    // Only toward a source that names one host, and (IPv4) not for a packet to a group or
    // broadcast address. ICMPv6 Packet Too Big may answer multicast (RFC 4443 2.4(e.3)).
    if !parse::names_one_host(pkt.family, &pkt.src) {
        return false;
    }
    if pkt.family == 4 && pkt.dst[0] >= 224 {
        return false;
    }
    // Only what the frame really holds, with an intact IPv4 header: a short or lying frame
    // must neither be quoted beyond its end nor spend the budget.
    let frame_ip_bytes = ctx.data_end() - ctx.data() - pkt.l2_len;
    if frame_ip_bytes < pkt.ip_len {
        return false;
    }
    pkt.family == 6 || csum::ipv4_header_ok(ctx, pkt.l2_len, pkt.ihl)
}

/// Carries out the judgement: counts it and returns the event's action and the XDP verdict.
#[inline(always)]
fn act(ctx: &XdpContext, pkt: &Packet, rule: &Rule, judgement: Judgement) -> (EventAction, u32) {
    let unanswered = if rule.flags & RULE_F_PASS != 0 {
        XDP_PASS
    } else {
        XDP_DROP
    };
    let (counter, action, verdict) = match judgement {
        Judgement::Fits => (Counter::Fit, EventAction::Observed, unanswered),
        Judgement::Observe => return (EventAction::TooBigObserved, unanswered),
        Judgement::Blackhole => (Counter::Blackholed, EventAction::Blackholed, XDP_DROP),
        Judgement::NotDf => (Counter::NotDf, EventAction::NotDf, unanswered),
        Judgement::NotAnswerable => (
            Counter::NotAnswerable,
            EventAction::NotAnswerable,
            unanswered,
        ),
        Judgement::BudgetSpent => (
            Counter::BudgetExhausted,
            EventAction::BudgetExhausted,
            XDP_DROP,
        ),
        Judgement::NoCount => (Counter::AnswerFailed, EventAction::AnswerFailed, XDP_DROP),
        Judgement::Answer { sent, before } => match answer::build(ctx, pkt, rule.mtu) {
            Ok(()) => {
                spend(ctx, rule, sent, before);
                (Counter::Answered, EventAction::Answered, XDP_TX)
            }
            // Too big with DF, so not forwardable either: dropped, as a router would.
            Err(()) => (Counter::AnswerFailed, EventAction::AnswerFailed, XDP_DROP),
        },
    };
    count(counter);
    (action, verdict)
}

/// Adds a sent ICMP error to the rule's count.
#[inline(always)]
fn spend(ctx: &XdpContext, rule: &Rule, sent: *mut u64, before: u64) {
    // SAFETY: as in `judge`.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(sent, 1) };
    if rule.budget != 0 && before + 1 == rule.budget as u64 {
        warn!(
            ctx,
            "ICMP budget of {} spent for a rule with MTU {}", rule.budget, rule.mtu
        );
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

const _: () = assert!(size_of::<Event>() % 8 == 0);
