//! The answer, built in place: the frame becomes ICMP "fragmentation needed" (IPv4, RFC 1191)
//! or ICMPv6 "Packet Too Big" (RFC 4443 3.2, RFC 8201) from the router to the packet's source,
//! quoting the start of the packet. Both families share one prelude (room for the headers, L2
//! moved and turned around, the frame cut after the quote); then each writes its typed headers
//! and checksums.
use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use network_types::{
    icmp::{Icmpv4Hdr, Icmpv6Hdr},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
};
use pmtu_common::{Config, ICMP4_HEADERS, ICMP4_MAX_ERROR_LEN, ICMP6_HEADERS, ICMP6_MAX_ERROR_LEN};

use crate::{csum, parse::Packet, parse::MAX_L2_LEN, CONFIG};

/// ICMP destination unreachable, code fragmentation needed and DF set (RFC 792, RFC 1191).
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 Packet Too Big (RFC 4443 3.2).
const ICMPV6_PKT_TOOBIG: u8 = 2;

/// Turns the frame into the ICMP error for `pkt`, announcing `mtu`. Fails, leaving the frame
/// untouched, when the router has no address of the packet's family; fails after changing it
/// when a helper refuses.
#[inline(always)]
pub fn build(ctx: &XdpContext, pkt: &Packet, mtu: u32) -> Result<(), ()> {
    let config = CONFIG.get(0).ok_or(())?;
    if pkt.family == 4 {
        if config.router_v4 == [0; 4] {
            return Err(());
        }
        let quote = prelude::<ICMP4_HEADERS, ICMP4_MAX_ERROR_LEN, { Ipv4Hdr::LEN }>(ctx, pkt)?;
        write_v4(ctx, pkt, quote, mtu, config)
    } else {
        if config.router_v6 == [0; 16] {
            return Err(());
        }
        let quote = prelude::<ICMP6_HEADERS, ICMP6_MAX_ERROR_LEN, { Ipv6Hdr::LEN }>(ctx, pkt)?;
        write_v6(ctx, pkt, quote, mtu, config)
    }
}

/// Makes room for `HEADERS` bytes (IP + ICMP) in front of the packet, moves the L2 header
/// there turned around, and cuts the frame after the quote: as much of the packet as fits in
/// `MAX_LEN` bytes in all (RFC 1812 4.3.2.3, RFC 4443 2.4(c)), and never more than the packet
/// itself. Returns the quote's length.
#[inline(always)]
fn prelude<const HEADERS: usize, const MAX_LEN: usize, const IP_HLEN: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
) -> Result<usize, ()> {
    let in_frame = ctx.data_end() - ctx.data() - pkt.l2_len;
    let mut quote = if pkt.ip_len < in_frame {
        pkt.ip_len
    } else {
        in_frame
    };
    if quote > MAX_LEN - HEADERS {
        quote = MAX_LEN - HEADERS;
    }
    // SAFETY: growing the head of the frame we own.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(HEADERS as i32)) } != 0 {
        return Err(());
    }
    let data = ctx.data();
    // The packet (at least its IP header) now starts after the room we made.
    if data + HEADERS + MAX_L2_LEN + IP_HLEN > ctx.data_end() {
        return Err(());
    }
    rebuild_l2(data, HEADERS, pkt.l2_len);
    trim_to(ctx, pkt.l2_len + HEADERS + quote)?;
    Ok(quote)
}

/// Swaps the Ethernet source and destination addresses at `eth`.
#[inline(always)]
pub fn swap_macs(eth: *mut u8) {
    // SAFETY: the caller checked that 14 bytes are in the frame.
    unsafe {
        let dst = (eth as *const [u8; 6]).read_unaligned();
        let src = (eth.add(6) as *const [u8; 6]).read_unaligned();
        (eth as *mut [u8; 6]).write_unaligned(src);
        (eth.add(6) as *mut [u8; 6]).write_unaligned(dst);
    }
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

/// Cuts the frame to `wanted` bytes; fails when the helper refuses.
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

/// The ICMP error's IP header and ICMP header at `ip`, checked against the frame's end.
#[inline(always)]
fn headers_at<IP, ICMP>(ctx: &XdpContext, pkt: &Packet) -> Result<(*mut IP, *mut ICMP), ()> {
    let ip = ctx.data() + pkt.l2_len;
    let icmp = ip + core::mem::size_of::<IP>();
    if icmp + core::mem::size_of::<ICMP>() > ctx.data_end() {
        return Err(());
    }
    Ok((ip as *mut IP, icmp as *mut ICMP))
}

/// The bytes of a header made of bytes.
#[inline(always)]
fn bytes_of<T, const N: usize>(header: &T) -> &[u8; N] {
    const { assert!(core::mem::size_of::<T>() == N && core::mem::align_of::<T>() == 1) };
    // SAFETY: T is N bytes of plain data with alignment 1.
    unsafe { &*(header as *const T as *const [u8; N]) }
}

#[inline(always)]
fn write_v4(
    ctx: &XdpContext,
    pkt: &Packet,
    quote: usize,
    mtu: u32,
    config: &Config,
) -> Result<(), ()> {
    let mut ip = Ipv4Hdr {
        vihl: 0,
        tos: 0,
        tot_len: [0; 2],
        id: [0; 2],
        frags: [0; 2],
        ttl: config.hop_limit,
        proto: IpProto::Icmp as u8,
        check: [0; 2],
        src_addr: config.router_v4,
        dst_addr: [pkt.src[0], pkt.src[1], pkt.src[2], pkt.src[3]],
    };
    ip.set_vihl(4, Ipv4Hdr::LEN as u8);
    ip.set_tot_len((ICMP4_HEADERS + quote) as u16);
    ip.check = csum::fold(csum::sum_bytes::<{ Ipv4Hdr::LEN }>(bytes_of(&ip))).to_ne_bytes();
    let mut icmp = Icmpv4Hdr {
        type_: ICMP_DEST_UNREACH,
        code: ICMP_FRAG_NEEDED,
        check: [0; 2],
        data: [0; 4],
    };
    // SAFETY: the header is a destination unreachable message.
    unsafe { icmp.destination_unreachable_mut_unchecked() }.set_mtu(mtu as u16);

    let (ip_at, icmp_at) = headers_at::<Ipv4Hdr, Icmpv4Hdr>(ctx, pkt)?;
    // SAFETY: both headers are inside the frame (checked by headers_at).
    unsafe {
        ip_at.write_unaligned(ip);
        icmp_at.write_unaligned(icmp);
    }
    // The ICMP checksum covers the ICMP header and the quote.
    const FULL4: usize = ICMP4_MAX_ERROR_LEN - Ipv4Hdr::LEN;
    let sum = csum::to_end::<FULL4>(ctx, pkt.l2_len + Ipv4Hdr::LEN, 0);
    let (_, icmp_at) = headers_at::<Ipv4Hdr, Icmpv4Hdr>(ctx, pkt)?;
    // SAFETY: inside the frame (checked by headers_at).
    unsafe { (*icmp_at).check = csum::fold(sum).to_ne_bytes() };
    Ok(())
}

#[inline(always)]
fn write_v6(
    ctx: &XdpContext,
    pkt: &Packet,
    quote: usize,
    mtu: u32,
    config: &Config,
) -> Result<(), ()> {
    let payload_len = (Icmpv6Hdr::LEN + quote) as u16;
    let mut ip = Ipv6Hdr {
        vcf: [0; 4],
        payload_len: [0; 2],
        next_hdr: IpProto::Ipv6Icmp as u8,
        hop_limit: config.hop_limit,
        src_addr: config.router_v6,
        dst_addr: pkt.src,
    };
    ip.set_version(6);
    ip.set_payload_len(payload_len);
    let mut icmp = Icmpv6Hdr {
        type_: ICMPV6_PKT_TOOBIG,
        code: 0,
        check: [0; 2],
        data: [0; 4],
    };
    // SAFETY: the header is a Packet Too Big message.
    unsafe { icmp.packet_too_big_mut_unchecked() }.set_mtu(mtu);

    let (ip_at, icmp_at) = headers_at::<Ipv6Hdr, Icmpv6Hdr>(ctx, pkt)?;
    // SAFETY: both headers are inside the frame (checked by headers_at).
    unsafe {
        ip_at.write_unaligned(ip);
        icmp_at.write_unaligned(icmp);
    }
    // The pseudo-header (RFC 8200 8.1): addresses, upper-layer length, next header; then the
    // ICMPv6 header and the quote.
    let mut sum = csum::sum_bytes(&ip.src_addr) + csum::sum_bytes(&ip.dst_addr);
    sum += csum::sum_bytes(&(payload_len as u32).to_be_bytes());
    sum += csum::sum_bytes(&(ip.next_hdr as u32).to_be_bytes());
    const FULL6: usize = ICMP6_MAX_ERROR_LEN - Ipv6Hdr::LEN;
    let sum = csum::to_end::<FULL6>(ctx, pkt.l2_len + Ipv6Hdr::LEN, sum);
    let (_, icmp_at) = headers_at::<Ipv6Hdr, Icmpv6Hdr>(ctx, pkt)?;
    // SAFETY: inside the frame (checked by headers_at).
    unsafe { (*icmp_at).check = csum::fold(sum).to_ne_bytes() };
    Ok(())
}
