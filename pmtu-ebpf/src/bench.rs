//! The programs of `pmtu bench responder`: a sender and a counter of answers.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

use crate::parse::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6};

/// ICMP errors counted by `pmtu_count`: at 0 those over IPv4, at 1 those over IPv6.
#[map]
static BENCH_ANSWERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// The flood's Ethernet header (14 bytes, then 2 of padding), written by `pmtu_flood` into
/// every frame it sends.
#[map]
static FLOOD_L2: Array<[u8; 16]> = Array::with_max_entries(1, 0);

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// The flood's sender: run through BPF_PROG_TEST_RUN in live-frames mode, it sends every frame
/// out of the interface it is run on. The kernel recycles the frames' pages without restoring
/// their bytes, and an XDP responder builds its answer over the frame it answers, overwriting
/// the frame's Ethernet header (and nothing after it): the header is written again each time.
#[xdp]
pub fn pmtu_flood(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + ETH_HLEN > ctx.data_end() {
        return XDP_DROP;
    }
    let Some(l2) = FLOOD_L2.get(0) else {
        return XDP_DROP;
    };
    // SAFETY: ETH_HLEN bytes of the frame, checked above.
    unsafe { core::ptr::copy_nonoverlapping(l2.as_ptr(), data as *mut u8, ETH_HLEN) };
    XDP_TX
}

/// Counts the ICMP errors that reach the flood's sender and drops them, so that its own stack
/// costs nothing; everything else (ARP, neighbour discovery) passes.
#[xdp]
pub fn pmtu_count(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    // The longest header read: Ethernet, IPv6, the ICMPv6 type.
    if data + ETH_HLEN + 41 > end {
        return XDP_PASS;
    }
    let p = data as *const u8;
    // SAFETY: every offset read is below ETH_HLEN + 41, checked above.
    let (ethertype, b14, proto_v4, next_v6) = unsafe {
        (
            u16::from_be_bytes([*p.add(12), *p.add(13)]),
            *p.add(ETH_HLEN),
            *p.add(ETH_HLEN + 9),
            *p.add(ETH_HLEN + 6),
        )
    };
    let slot = match ethertype {
        // Options-free IPv4 headers only: the answers of both routers have none.
        ETH_P_IP if b14 == 0x45 && proto_v4 == IPPROTO_ICMP => {
            // SAFETY: ETH_HLEN + 20 < ETH_HLEN + 41.
            let icmp_type = unsafe { *p.add(ETH_HLEN + 20) };
            // Destination unreachable, time exceeded, parameter problem.
            if !matches!(icmp_type, 3 | 11 | 12) {
                return XDP_PASS;
            }
            0
        }
        ETH_P_IPV6 if next_v6 == IPPROTO_ICMPV6 => {
            // SAFETY: ETH_HLEN + 40 < ETH_HLEN + 41.
            let icmp_type = unsafe { *p.add(ETH_HLEN + 40) };
            // ICMPv6 errors are the types below 128.
            if icmp_type >= 128 {
                return XDP_PASS;
            }
            1
        }
        _ => return XDP_PASS,
    };
    if let Some(n) = BENCH_ANSWERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe { *n += 1 };
    }
    XDP_DROP
}
