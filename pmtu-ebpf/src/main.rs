//! The XDP program: a router whose next hop has a smaller MTU.
//!
//! For every frame: parse L2/L3, look the destination up in the rule tries; no rule -> XDP_PASS
//! untouched. A packet toward a rule is reported on the ring buffer, and when it is larger than
//! the rule's MTU it is answered in place with ICMP "fragmentation needed" (IPv4) or ICMPv6
//! "Packet Too Big", dropped (black hole) or only observed, as the rule says.
//!
//! Frames that cannot be parsed (truncated headers, bad IP version or header length) are counted
//! as parse errors and passed untouched: the kernel's own stack deals with them.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core's Atomic* types offer no fetch_add; the
// intrinsic compiles to BPF's own atomic fetch-add.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::size_of,
    ptr::null_mut,
};

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{
        bpf_csum_diff, bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
        bpf_xdp_load_bytes,
    },
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::warn;
use pmtu_common::{
    Config, Counter, Event, EventAction, Rule, RuleAction, COUNTER_COUNT, EVENTS_RING_BYTES,
    EVENT_HEAD_BYTES, FRAG_DF, FRAG_IS_FRAGMENT, FRAG_MORE, ICMP4_HEADERS, ICMP4_MAX_ERROR_LEN,
    ICMP6_HEADERS, ICMP6_MAX_ERROR_LEN, RULE_F_PASS,
};

#[map]
static RULES_V4: LpmTrie<[u8; 4], Rule> = LpmTrie::with_max_entries(4096, 0);
#[map]
static RULES_V6: LpmTrie<[u8; 16], Rule> = LpmTrie::with_max_entries(4096, 0);
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
/// Ethernet plus at most two VLAN tags.
const MAX_L2_LEN: usize = ETH_HLEN + 2 * VLAN_HLEN;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers walked before giving up on finding the upper layer.
const MAX_EXT_HEADERS: usize = 4;

/// Everything the decision and the event need, read once from the packet.
struct Packet {
    family: u8,
    l2_len: usize,
    /// IP length: IPv4 total length, IPv6 40 + payload length.
    ip_len: usize,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    frag: u8,
    frag_off: u16,
    frag_id: u32,
    has_l4: u8,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    tcp_flags: u8,
    l4_len: u16,
    /// An ICMP error message itself: never answered with another (RFC 1812 4.3.2.7, RFC 4443 2.4).
    icmp_error: bool,
}

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
    swap_macs(data as *mut u8);
    XDP_TX
}

#[inline(always)]
fn swap_macs(eth: *mut u8) {
    // SAFETY: the caller checked that 14 bytes are in the frame.
    unsafe {
        let dst = (eth as *const [u8; 6]).read_unaligned();
        let src = (eth.add(6) as *const [u8; 6]).read_unaligned();
        (eth as *mut [u8; 6]).write_unaligned(src);
        (eth.add(6) as *mut [u8; 6]).write_unaligned(dst);
    }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe { *p += 1 };
    }
}

/// A bounds-checked pointer to `N` bytes at `off`.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, off: usize) -> Result<&[u8; N], ()> {
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return Err(());
    }
    // SAFETY: the range was checked against data_end just above.
    Ok(unsafe { &*((start + off) as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline(always)]
fn handle(ctx: &XdpContext) -> Result<u32, ()> {
    let (l2_len, ethertype) = parse_l2(ctx)?;
    match ethertype {
        ETH_P_IP => handle_v4(ctx, l2_len),
        ETH_P_IPV6 => handle_v6(ctx, l2_len),
        _ => {
            count(Counter::Passed);
            Ok(XDP_PASS)
        }
    }
}

/// Ethernet with up to two VLAN tags (802.1Q, 802.1ad): returns the L2 length and the ethertype.
#[inline(always)]
fn parse_l2(ctx: &XdpContext) -> Result<(usize, u16), ()> {
    let eth = bytes_at::<ETH_HLEN>(ctx, 0)?;
    let mut ethertype = be16(eth, 12);
    let mut l2_len = ETH_HLEN;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag = bytes_at::<VLAN_HLEN>(ctx, l2_len)?;
        ethertype = be16(tag, 2);
        l2_len += VLAN_HLEN;
    }
    Ok((l2_len, ethertype))
}

#[inline(always)]
fn handle_v4(ctx: &XdpContext, l2_len: usize) -> Result<u32, ()> {
    let ip = bytes_at::<20>(ctx, l2_len)?;
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&ip[16..20]);
    let key = Key::new(32, [ip[16], ip[17], ip[18], ip[19]]);
    let Some(rule) = RULES_V4.get(&key) else {
        count(Counter::Passed);
        return Ok(XDP_PASS);
    };
    if ip[0] >> 4 != 4 {
        return Err(());
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let ip_len = be16(ip, 2) as usize;
    if ihl < 20 || ip_len < ihl {
        return Err(());
    }
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&ip[12..16]);
    let flags_off = be16(ip, 6);
    let frag_off = (flags_off & 0x1fff) * 8;
    let mut frag = 0;
    if flags_off & 0x4000 != 0 {
        frag |= FRAG_DF;
    }
    if flags_off & 0x2000 != 0 {
        frag |= FRAG_MORE | FRAG_IS_FRAGMENT;
    }
    if frag_off != 0 {
        frag |= FRAG_IS_FRAGMENT;
    }
    let mut pkt = Packet {
        family: 4,
        l2_len,
        ip_len,
        src,
        dst,
        proto: ip[9],
        frag,
        frag_off,
        frag_id: be16(ip, 4) as u32,
        has_l4: 0,
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        tcp_flags: 0,
        l4_len: 0,
        icmp_error: false,
    };
    if frag_off == 0 {
        parse_l4(ctx, &mut pkt, l2_len + ihl, ip_len.saturating_sub(ihl));
    }
    Ok(decide(ctx, &pkt, rule))
}

#[inline(always)]
fn handle_v6(ctx: &XdpContext, l2_len: usize) -> Result<u32, ()> {
    let ip = bytes_at::<40>(ctx, l2_len)?;
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&ip[24..40]);
    let Some(rule) = RULES_V6.get(&Key::new(128, dst)) else {
        count(Counter::Passed);
        return Ok(XDP_PASS);
    };
    if ip[0] >> 4 != 6 {
        return Err(());
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    let ip_len = 40 + be16(ip, 4) as usize;
    let mut pkt = Packet {
        family: 6,
        l2_len,
        ip_len,
        src,
        dst,
        proto: ip[6],
        frag: 0,
        frag_off: 0,
        frag_id: 0,
        has_l4: 0,
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        tcp_flags: 0,
        l4_len: 0,
        icmp_error: false,
    };
    // Walk the extension headers to the upper layer.
    let mut off = l2_len + 40;
    for _ in 0..MAX_EXT_HEADERS {
        match pkt.proto {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let h = bytes_at::<2>(ctx, off)?;
                pkt.proto = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            IPV6_AH => {
                let h = bytes_at::<2>(ctx, off)?;
                pkt.proto = h[0];
                off += (h[1] as usize + 2) * 4;
            }
            IPV6_FRAGMENT => {
                let h = bytes_at::<8>(ctx, off)?;
                pkt.proto = h[0];
                let offlg = be16(h, 2);
                pkt.frag_off = offlg & 0xfff8;
                pkt.frag = FRAG_IS_FRAGMENT;
                if offlg & 1 != 0 {
                    pkt.frag |= FRAG_MORE;
                }
                pkt.frag_id = be32(h, 4);
                off += 8;
            }
            _ => break,
        }
    }
    if pkt.frag_off == 0 {
        let consumed = off - l2_len;
        parse_l4(ctx, &mut pkt, off, ip_len.saturating_sub(consumed));
    }
    Ok(decide(ctx, &pkt, rule))
}

/// Reads the TCP, UDP or ICMP header at `off`; `l4_bytes` is what the IP header says follows.
/// A truncated upper-layer header leaves `has_l4` at 0: the packet is still judged by its IP length.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, pkt: &mut Packet, off: usize, l4_bytes: usize) {
    match pkt.proto {
        IPPROTO_TCP => {
            if let Ok(h) = bytes_at::<20>(ctx, off) {
                pkt.sport = be16(h, 0);
                pkt.dport = be16(h, 2);
                pkt.seq = be32(h, 4);
                pkt.ack = be32(h, 8);
                pkt.tcp_flags = h[13];
                let doff = ((h[12] >> 4) as usize) * 4;
                pkt.l4_len = l4_bytes.saturating_sub(doff) as u16;
                pkt.has_l4 = 1;
            }
        }
        IPPROTO_UDP => {
            if let Ok(h) = bytes_at::<8>(ctx, off) {
                pkt.sport = be16(h, 0);
                pkt.dport = be16(h, 2);
                pkt.l4_len = be16(h, 4);
                pkt.has_l4 = 1;
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if let Ok(h) = bytes_at::<4>(ctx, off) {
                // ICMP type and code are reported in the port fields.
                pkt.sport = h[0] as u16;
                pkt.dport = h[1] as u16;
                pkt.l4_len = l4_bytes as u16;
                pkt.has_l4 = 1;
                pkt.icmp_error = if pkt.proto == IPPROTO_ICMP {
                    matches!(h[0], 3 | 4 | 5 | 11 | 12)
                } else {
                    h[0] < 128
                };
            }
        }
        _ => {}
    }
}

/// The router's decision for a packet toward a rule's prefix.
#[inline(always)]
fn decide(ctx: &XdpContext, pkt: &Packet, rule: &Rule) -> u32 {
    count(Counter::Seen);
    let unanswered = if rule.flags & RULE_F_PASS != 0 {
        XDP_PASS
    } else {
        XDP_DROP
    };
    if pkt.ip_len <= rule.too_big_above() as usize {
        count(Counter::Fit);
        emit(ctx, pkt, rule, EventAction::Observed);
        return unanswered;
    }
    match RuleAction::from_u8(rule.action) {
        Some(RuleAction::Answer) => {}
        Some(RuleAction::Blackhole) => {
            count(Counter::Blackholed);
            emit(ctx, pkt, rule, EventAction::Blackholed);
            return XDP_DROP;
        }
        _ => {
            emit(ctx, pkt, rule, EventAction::TooBigObserved);
            return unanswered;
        }
    }
    if pkt.family == 4 && pkt.frag & FRAG_DF == 0 {
        // A router fragments it; with the pass flag the kernel does.
        count(Counter::NotDf);
        emit(ctx, pkt, rule, EventAction::NotDf);
        return unanswered;
    }
    if pkt.icmp_error || pkt.frag_off != 0 {
        count(Counter::NotAnswerable);
        emit(ctx, pkt, rule, EventAction::NotAnswerable);
        return unanswered;
    }
    // The budget check reads `sent`, then adds to it atomically. Cpu v1 has no fetch-and-add
    // (and v3's 32-bit moves break packet pointers read from xdp_md), so two CPUs answering the
    // same rule at the same instant may overshoot the budget by one each. A veth or a
    // single-queue tap runs one rule's packets on one CPU at a time: there the budget is exact.
    let sent_ptr = &rule.sent as *const u64 as *mut u64;
    // SAFETY: `rule` points into the map value, alive for this run; `sent` is only written
    // atomically.
    let sent = unsafe { core::ptr::read_volatile(sent_ptr) };
    if rule.budget != 0 && sent >= rule.budget as u64 {
        count(Counter::BudgetExhausted);
        emit(ctx, pkt, rule, EventAction::BudgetExhausted);
        return XDP_DROP;
    }
    // SAFETY: as above.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(sent_ptr, 1) };
    if rule.budget != 0 && sent + 1 == rule.budget as u64 {
        warn!(
            ctx,
            "ICMP budget of {} spent for a rule with MTU {}", rule.budget, rule.mtu
        );
    }
    emit(ctx, pkt, rule, EventAction::Answered);
    let Some(config) = CONFIG.get(0) else {
        count(Counter::AnswerFailed);
        return XDP_DROP;
    };
    let built = if pkt.family == 4 {
        answer_v4(ctx, pkt, rule.mtu, config)
    } else {
        answer_v6(ctx, pkt, rule.mtu, config)
    };
    match built {
        Ok(()) => {
            count(Counter::Answered);
            XDP_TX
        }
        Err(()) => {
            count(Counter::AnswerFailed);
            XDP_DROP
        }
    }
}

/// One ring-buffer event; a full ring counts as `events_lost`.
#[inline(always)]
fn emit(ctx: &XdpContext, pkt: &Packet, rule: &Rule, action: EventAction) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(Counter::EventsLost);
        return;
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
        (*ev).action = action as u8;
        (*ev).frag = pkt.frag;
        (*ev).has_l4 = pkt.has_l4;
        (*ev)._pad = [0; 2];
        // Written so that the verifier sees 1 <= len <= EVENT_HEAD_BYTES (frames here are at
        // least an Ethernet and an IP header long).
        let len = ((head_len as u32).wrapping_sub(1) & (EVENT_HEAD_BYTES as u32 - 1)) + 1;
        let copied = bpf_xdp_load_bytes(ctx.ctx, 0, (*ev).head.as_mut_ptr() as *mut _, len);
        (*ev).head_len = if copied == 0 { len as u16 } else { 0 };
    }
    entry.submit(0);
}

/// Ones' complement sum of `[data + off, data_end)`, read in native byte order (the result is
/// stored back natively, so the byte order cancels out).
#[inline(always)]
fn csum_to_end(ctx: &XdpContext, mut off: usize, mut sum: u64) -> u64 {
    const BLOCK: usize = 256;
    let data = ctx.data();
    let end = ctx.data_end();
    // Whole blocks through the kernel's csum_partial; 5 blocks cover the largest quote.
    for _ in 0..5 {
        let p = data + off;
        if p + BLOCK > end {
            break;
        }
        // SAFETY: [p, p + BLOCK) is inside the frame; the helper only reads it.
        let part = unsafe { bpf_csum_diff(null_mut(), 0, p as *mut u32, BLOCK as u32, 0) };
        sum += part as u32 as u64;
        off += BLOCK;
    }
    for _ in 0..(BLOCK / 4) {
        let p = data + off;
        if p + 4 > end {
            break;
        }
        // SAFETY: bounds checked just above.
        sum += unsafe { (p as *const u32).read_unaligned() } as u64;
        off += 4;
    }
    let p = data + off;
    if p + 2 <= end {
        // SAFETY: bounds checked.
        sum += unsafe { (p as *const u16).read_unaligned() } as u64;
        off += 2;
    }
    let p = data + off;
    if p < end {
        // The odd last byte is the high-order byte of a zero-padded word; in native (little
        // endian) order that is the byte's own value.
        // SAFETY: bounds checked.
        sum += unsafe { *(p as *const u8) } as u64;
    }
    sum
}

#[inline(always)]
fn csum_fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Moves the L2 header to the new frame start (after bpf_xdp_adjust_head grew it by `grown`
/// bytes) with the MACs swapped and VLAN tags and ethertype kept.
#[inline(always)]
fn rebuild_l2(data: usize, grown: usize, l2_len: usize) {
    let new = data as *mut u8;
    // SAFETY: the caller checked data + grown + MAX_L2_LEN <= data_end; the regions do not
    // overlap because grown >= MAX_L2_LEN.
    unsafe {
        let old = (data + grown) as *const u8;
        for i in 0..6 {
            *new.add(i) = *old.add(6 + i);
            *new.add(6 + i) = *old.add(i);
        }
        for i in 12..MAX_L2_LEN {
            if i < l2_len {
                *new.add(i) = *old.add(i);
            }
        }
    }
}

/// Frame length after trimming to `wanted`; fails when the helper refuses.
#[inline(always)]
fn trim_to(ctx: &XdpContext, wanted: usize) -> Result<(), ()> {
    let have = ctx.data_end() - ctx.data();
    if wanted < have {
        // SAFETY: shrinking the frame we own.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, wanted as i32 - have as i32) } != 0 {
            return Err(());
        }
    }
    Ok(())
}

/// Turns the frame into ICMP type 3 code 4 (RFC 1191) from the router, quoting as much of the
/// original as fits in 576 bytes (RFC 1812 4.3.2.3).
#[inline(always)]
fn answer_v4(ctx: &XdpContext, pkt: &Packet, mtu: u32, config: &Config) -> Result<(), ()> {
    let avail = ctx.data_end() - ctx.data() - pkt.l2_len;
    let mut quote = if pkt.ip_len < avail {
        pkt.ip_len
    } else {
        avail
    };
    if quote > ICMP4_MAX_ERROR_LEN - ICMP4_HEADERS {
        quote = ICMP4_MAX_ERROR_LEN - ICMP4_HEADERS;
    }
    // SAFETY: growing the head of the frame we own.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ICMP4_HEADERS as i32)) } != 0 {
        return Err(());
    }
    let data = ctx.data();
    // The original (at least an IPv4 header) now starts after the room we made.
    if data + ICMP4_HEADERS + MAX_L2_LEN + 20 > ctx.data_end() {
        return Err(());
    }
    rebuild_l2(data, ICMP4_HEADERS, pkt.l2_len);
    trim_to(ctx, pkt.l2_len + ICMP4_HEADERS + quote)?;

    let data = ctx.data();
    let end = ctx.data_end();
    let ip = data + pkt.l2_len;
    if ip + ICMP4_HEADERS > end {
        return Err(());
    }
    let total = (ICMP4_HEADERS + quote) as u16;
    let mtu = mtu as u16;
    let src = config.router_v4;
    let dst = [pkt.src[0], pkt.src[1], pkt.src[2], pkt.src[3]];
    let t = total.to_be_bytes();
    let hdr: [u8; 20] = [
        0x45,
        0,
        t[0],
        t[1],
        0,
        0,
        0,
        0,
        config.hop_limit,
        IPPROTO_ICMP,
        0,
        0,
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
    ];
    let m = mtu.to_be_bytes();
    let icmp: [u8; 8] = [3, 4, 0, 0, 0, 0, m[0], m[1]];
    // SAFETY: [ip, ip + 28) was checked against data_end.
    unsafe {
        (ip as *mut [u8; 20]).write_unaligned(hdr);
        ((ip + 20) as *mut [u8; 8]).write_unaligned(icmp);
        let mut sum = 0u64;
        for i in 0..10 {
            sum += ((ip + 2 * i) as *const u16).read_unaligned() as u64;
        }
        ((ip + 10) as *mut u16).write_unaligned(csum_fold(sum));
    }
    let sum = csum_to_end(ctx, pkt.l2_len + 20, 0);
    let ip = ctx.data() + pkt.l2_len;
    if ip + ICMP4_HEADERS > ctx.data_end() {
        return Err(());
    }
    // SAFETY: checked just above.
    unsafe { ((ip + 22) as *mut u16).write_unaligned(csum_fold(sum)) };
    Ok(())
}

/// Turns the frame into ICMPv6 Packet Too Big (RFC 4443 3.2, RFC 8201) from the router, quoting
/// as much of the original as fits in 1280 bytes (RFC 4443 2.4(c)).
#[inline(always)]
fn answer_v6(ctx: &XdpContext, pkt: &Packet, mtu: u32, config: &Config) -> Result<(), ()> {
    let avail = ctx.data_end() - ctx.data() - pkt.l2_len;
    let mut quote = if pkt.ip_len < avail {
        pkt.ip_len
    } else {
        avail
    };
    if quote > ICMP6_MAX_ERROR_LEN - ICMP6_HEADERS {
        quote = ICMP6_MAX_ERROR_LEN - ICMP6_HEADERS;
    }
    // SAFETY: growing the head of the frame we own.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ICMP6_HEADERS as i32)) } != 0 {
        return Err(());
    }
    let data = ctx.data();
    if data + ICMP6_HEADERS + MAX_L2_LEN + 40 > ctx.data_end() {
        return Err(());
    }
    rebuild_l2(data, ICMP6_HEADERS, pkt.l2_len);
    trim_to(ctx, pkt.l2_len + ICMP6_HEADERS + quote)?;

    let data = ctx.data();
    let end = ctx.data_end();
    let ip = data + pkt.l2_len;
    if ip + ICMP6_HEADERS > end {
        return Err(());
    }
    let plen = (8 + quote) as u16;
    let p = plen.to_be_bytes();
    let head: [u8; 8] = [0x60, 0, 0, 0, p[0], p[1], IPPROTO_ICMPV6, config.hop_limit];
    let m = mtu.to_be_bytes();
    let icmp: [u8; 8] = [2, 0, 0, 0, m[0], m[1], m[2], m[3]];
    let mut sum = (plen as u32).to_be() as u64 + (IPPROTO_ICMPV6 as u32).to_be() as u64;
    // SAFETY: [ip, ip + 48) was checked against data_end.
    unsafe {
        (ip as *mut [u8; 8]).write_unaligned(head);
        ((ip + 8) as *mut [u8; 16]).write_unaligned(config.router_v6);
        ((ip + 24) as *mut [u8; 16]).write_unaligned(pkt.src);
        ((ip + 40) as *mut [u8; 8]).write_unaligned(icmp);
        // Pseudo-header addresses.
        for i in 0..8 {
            sum += ((ip + 8 + 4 * i) as *const u32).read_unaligned() as u64;
        }
    }
    let sum = csum_to_end(ctx, pkt.l2_len + 40, sum);
    let ip = ctx.data() + pkt.l2_len;
    if ip + ICMP6_HEADERS > ctx.data_end() {
        return Err(());
    }
    // SAFETY: checked just above.
    unsafe { ((ip + 42) as *mut u16).write_unaligned(csum_fold(sum)) };
    Ok(())
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
