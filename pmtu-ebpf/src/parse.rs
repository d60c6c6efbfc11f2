//! From the frame to a [`Packet`]: Ethernet with up to two VLAN tags, IPv4 or IPv6 with its
//! extension headers, then the TCP, UDP or ICMP header. Every read is bounds-checked against
//! the frame's end; a header cut short is an `Err` (a parse error), except the upper-layer
//! header, whose absence only leaves `has_l4` at 0.
use aya_ebpf::programs::XdpContext;
use network_types::{
    icmp::{Icmpv4Hdr, Icmpv6Hdr},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use pmtu_common::{FRAG_DF, FRAG_IS_FRAGMENT, FRAG_MORE};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
/// Ethernet plus at most two VLAN tags.
pub const MAX_L2_LEN: usize = ETH_HLEN + 2 * VLAN_HLEN;
const IPV4_HLEN: usize = Ipv4Hdr::LEN;
const IPV6_HLEN: usize = Ipv6Hdr::LEN;
const TCP_HLEN: usize = 20;

const IPPROTO_ICMP: u8 = IpProto::Icmp as u8;
const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
const IPPROTO_UDP: u8 = IpProto::Udp as u8;
const IPPROTO_ICMPV6: u8 = IpProto::Ipv6Icmp as u8;
const IPV6_HOPOPTS: u8 = IpProto::HopOpt as u8;
const IPV6_ROUTING: u8 = IpProto::Ipv6Route as u8;
const IPV6_FRAGMENT: u8 = IpProto::Ipv6Frag as u8;
const IPV6_AH: u8 = IpProto::Ah as u8;
const IPV6_DSTOPTS: u8 = IpProto::Ipv6Opts as u8;
const IPV6_MOBILITY: u8 = IpProto::MobilityHeader as u8;
const IPV6_HIP: u8 = IpProto::Hip as u8;
const IPV6_SHIM6: u8 = IpProto::Shim6 as u8;
const IPV6_TEST1: u8 = IpProto::Test1 as u8;
const IPV6_TEST2: u8 = IpProto::Test2 as u8;
/// Extension headers walked to find the upper layer. A chain still going after this many is
/// not walked to its end: such a packet is reported, never answered (RFC 4443 2.4(e) forbids
/// answering an ICMPv6 error or a later fragment, and a longer chain may hide either).
const MAX_EXT_HEADERS: usize = 8;

/// The link layer: its length, the ethertype it leads to, and whether either MAC address is a
/// group (multicast or broadcast) address.
pub struct L2 {
    pub len: usize,
    pub ethertype: u16,
    pub group_mac: bool,
}

/// Everything the judgement and the event need, read once from the packet.
pub struct Packet {
    pub family: u8,
    pub l2_len: usize,
    /// IP length: IPv4 total length, IPv6 40 + payload length.
    pub ip_len: usize,
    /// IP header length: IPv4's IHL in bytes, 40 for IPv6.
    pub ihl: usize,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    pub frag: u8,
    pub frag_off: u16,
    pub frag_id: u32,
    pub has_l4: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub tcp_flags: u8,
    pub l4_len: u16,
    /// An ICMP error message itself, or an ICMP message whose type cannot be read: never
    /// answered with another (RFC 1812 4.3.2.7, RFC 4443 2.4(e.1)).
    pub icmp_error: bool,
    /// The extension headers were walked to the upper layer (always true for IPv4).
    pub walked: bool,
    /// The frame came to or from a group (multicast, broadcast) MAC address.
    pub group_mac: bool,
}

/// A bounds-checked view of a `T` at `off` bytes into the frame. `T` must be plain bytes
/// (alignment 1): the frame gives no alignment.
#[inline(always)]
pub fn view<T>(ctx: &XdpContext, off: usize) -> Result<&T, ()> {
    const { assert!(core::mem::align_of::<T>() == 1) };
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return Err(());
    }
    // SAFETY: the range was checked against data_end just above; T has alignment 1 and is
    // valid for every bit pattern (headers made of bytes).
    Ok(unsafe { &*((start + off) as *const T) })
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Ethernet with up to two VLAN tags (802.1Q, 802.1ad).
#[inline(always)]
pub fn l2(ctx: &XdpContext) -> Result<L2, ()> {
    let eth = view::<[u8; ETH_HLEN]>(ctx, 0)?;
    // The I/G bit, the lowest bit of the first byte, marks a group address.
    let group_mac = (eth[0] | eth[6]) & 1 != 0;
    let mut ethertype = be16(eth, 12);
    let mut len = ETH_HLEN;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag = view::<[u8; VLAN_HLEN]>(ctx, len)?;
        ethertype = be16(tag, 2);
        len += VLAN_HLEN;
    }
    Ok(L2 {
        len,
        ethertype,
        group_mac,
    })
}

/// The fixed IPv4 header, enough to look the destination up.
#[inline(always)]
pub fn ipv4_header<'a>(ctx: &'a XdpContext, l2: &L2) -> Result<&'a Ipv4Hdr, ()> {
    view::<Ipv4Hdr>(ctx, l2.len)
}

/// The fixed IPv6 header, enough to look the destination up.
#[inline(always)]
pub fn ipv6_header<'a>(ctx: &'a XdpContext, l2: &L2) -> Result<&'a Ipv6Hdr, ()> {
    view::<Ipv6Hdr>(ctx, l2.len)
}

#[inline(always)]
fn packet(family: u8, l2: &L2, ip_len: usize, ihl: usize, proto: u8) -> Packet {
    Packet {
        family,
        l2_len: l2.len,
        ip_len,
        ihl,
        src: [0; 16],
        dst: [0; 16],
        proto,
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
        walked: true,
        group_mac: l2.group_mac,
    }
}

#[inline(always)]
pub fn ipv4(ctx: &XdpContext, l2: &L2, ip: &Ipv4Hdr) -> Result<Packet, ()> {
    if ip.version() != 4 {
        return Err(());
    }
    let ihl = ip.ihl() as usize;
    let ip_len = ip.tot_len() as usize;
    if ihl < IPV4_HLEN || ip_len < ihl {
        return Err(());
    }
    let mut pkt = packet(4, l2, ip_len, ihl, ip.proto);
    pkt.src[..4].copy_from_slice(&ip.src_addr);
    pkt.dst[..4].copy_from_slice(&ip.dst_addr);
    pkt.frag_id = ip.id() as u32;
    // Flags: reserved, DF, MF.
    let flags = ip.frag_flags();
    pkt.frag_off = ip.frag_offset() * 8;
    if flags & 0b010 != 0 {
        pkt.frag |= FRAG_DF;
    }
    if flags & 0b001 != 0 {
        pkt.frag |= FRAG_MORE | FRAG_IS_FRAGMENT;
    }
    if pkt.frag_off != 0 {
        pkt.frag |= FRAG_IS_FRAGMENT;
    } else {
        l4(ctx, &mut pkt, l2.len + ihl, ip_len - ihl);
    }
    Ok(pkt)
}

#[inline(always)]
pub fn ipv6(ctx: &XdpContext, l2: &L2, ip: &Ipv6Hdr) -> Result<Packet, ()> {
    if ip.version() != 6 {
        return Err(());
    }
    let ip_len = IPV6_HLEN + ip.payload_len() as usize;
    let mut pkt = packet(6, l2, ip_len, IPV6_HLEN, ip.next_hdr);
    pkt.src = ip.src_addr;
    pkt.dst = ip.dst_addr;
    // Walk the extension headers to the upper layer.
    let mut off = l2.len + IPV6_HLEN;
    for _ in 0..MAX_EXT_HEADERS {
        match pkt.proto {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_MOBILITY | IPV6_HIP | IPV6_SHIM6
            | IPV6_TEST1 | IPV6_TEST2 => {
                let h = view::<[u8; 2]>(ctx, off)?;
                pkt.proto = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            IPV6_AH => {
                let h = view::<[u8; 2]>(ctx, off)?;
                pkt.proto = h[0];
                off += (h[1] as usize + 2) * 4;
            }
            IPV6_FRAGMENT => {
                let h = view::<[u8; 8]>(ctx, off)?;
                pkt.proto = h[0];
                let offlg = be16(h, 2);
                pkt.frag_off = offlg & 0xfff8;
                pkt.frag = FRAG_IS_FRAGMENT;
                if offlg & 1 != 0 {
                    pkt.frag |= FRAG_MORE;
                }
                pkt.frag_id = be32(h, 4);
                off += 8;
                if pkt.frag_off != 0 {
                    // What follows is the middle of the payload, not a header.
                    break;
                }
            }
            _ => break,
        }
    }
    let consumed = off - l2.len;
    pkt.walked = !is_extension_header(pkt.proto) && consumed <= ip_len;
    if pkt.frag_off == 0 && pkt.walked {
        l4(ctx, &mut pkt, off, ip_len - consumed);
    }
    Ok(pkt)
}

#[inline(always)]
fn is_extension_header(proto: u8) -> bool {
    matches!(
        proto,
        IPV6_HOPOPTS
            | IPV6_ROUTING
            | IPV6_FRAGMENT
            | IPV6_AH
            | IPV6_DSTOPTS
            | IPV6_MOBILITY
            | IPV6_HIP
            | IPV6_SHIM6
            | IPV6_TEST1
            | IPV6_TEST2
    )
}

/// Reads the TCP, UDP or ICMP header at `off`; `l4_bytes` is what the IP header says follows.
/// A header that is not there in full (frame or IP length too short) leaves `has_l4` at 0: the
/// packet is still judged by its IP length, except an ICMP message, which might be an error.
#[inline(always)]
fn l4(ctx: &XdpContext, pkt: &mut Packet, off: usize, l4_bytes: usize) {
    match pkt.proto {
        IPPROTO_TCP => {
            if l4_bytes < TCP_HLEN {
                return;
            }
            if let Ok(h) = view::<[u8; TCP_HLEN]>(ctx, off) {
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
            if l4_bytes < UdpHdr::LEN {
                return;
            }
            if let Ok(h) = view::<UdpHdr>(ctx, off) {
                pkt.sport = h.src_port();
                pkt.dport = h.dst_port();
                pkt.l4_len = h.len();
                pkt.has_l4 = 1;
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            // Only type and code are needed; both ICMP headers start the same way.
            let icmp_type = if l4_bytes < 4 {
                None
            } else if pkt.proto == IPPROTO_ICMP {
                view::<Icmpv4Hdr>(ctx, off).ok().map(|h| (h.type_, h.code))
            } else {
                view::<Icmpv6Hdr>(ctx, off).ok().map(|h| (h.type_, h.code))
            };
            let Some((icmp_type, code)) = icmp_type else {
                pkt.icmp_error = true;
                return;
            };
            // ICMP type and code are reported in the port fields.
            pkt.sport = icmp_type as u16;
            pkt.dport = code as u16;
            pkt.l4_len = l4_bytes as u16;
            pkt.has_l4 = 1;
            pkt.icmp_error = if pkt.proto == IPPROTO_ICMP {
                // Destination unreachable, source quench, redirect, time exceeded, parameter
                // problem.
                matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
            } else {
                // RFC 4443 2.1: types 0..127 are errors.
                icmp_type < 128
            };
        }
        _ => {}
    }
}

/// Whether `addr` (IPv4 in the first 4 bytes) can be the source of a packet a router answers:
/// not 0/8, 127/8, 224/4 (multicast) or 240/4 (with 255.255.255.255) for IPv4 (RFC 1812
/// 4.3.2.7); not ::, ::1 or ff00::/8 for IPv6 (RFC 4443 2.4(e)).
#[inline(always)]
pub fn names_one_host(family: u8, addr: &[u8; 16]) -> bool {
    if family == 4 {
        return !matches!(addr[0], 0 | 127 | 224..=255);
    }
    const LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    // Whole-address compares: the address stays one value, not sixteen bytes.
    let whole = u128::from_ne_bytes(*addr);
    addr[0] != 0xff && whole != 0 && whole != u128::from_ne_bytes(LOOPBACK)
}
