//! The fake host's frames, built with etherparse, and the parser that checks the ICMP errors
//! the XDP program sends back.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{anyhow, bail, Context as _, Result};
use etherparse::{
    Icmpv4Type, Icmpv6Type, LinkSlice, NetSlice, PacketBuilder, SlicedPacket, TcpOptionElement,
    TransportSlice,
};

/// Ethernet addresses of the fake host's frames: LOCAL_MAC to REMOTE_MAC.
#[derive(Clone, Copy, Debug)]
pub struct L2 {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

#[derive(Clone, Debug)]
pub struct TcpSegment {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    /// Linux assumes 536 when a SYN carries no MSS option.
    pub mss: Option<u16>,
    /// A SYN's SACK-permitted option (RFC 2018).
    pub sack_permitted: bool,
    /// One SACK block: the data from the first to before the second sequence number arrived.
    pub sack: Option<(u32, u32)>,
    pub payload: Vec<u8>,
}

const TTL: u8 = 64;

/// Ethernet + IP (IPv4 with DF) for `src` -> `dst`.
fn ip_step(
    l2: &L2,
    src: IpAddr,
    dst: IpAddr,
) -> Result<etherparse::PacketBuilderStep<etherparse::IpHeaders>> {
    let eth = PacketBuilder::ethernet2(l2.src, l2.dst);
    Ok(match (src, dst) {
        // etherparse's IPv4 header sets DF by default: path MTU discovery needs it.
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), TTL),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), TTL),
        _ => bail!("source {src} and destination {dst} are of different IP families"),
    })
}

/// A TCP segment in an Ethernet frame, checksums computed.
pub fn tcp_frame(l2: &L2, seg: &TcpSegment) -> Result<Vec<u8>> {
    let mut tcp = ip_step(l2, seg.src, seg.dst)?.tcp(seg.sport, seg.dport, seg.seq, seg.window);
    let f = seg.flags;
    if f.syn {
        tcp = tcp.syn();
    }
    if f.ack {
        tcp = tcp.ack(seg.ack);
    }
    if f.fin {
        tcp = tcp.fin();
    }
    if f.rst {
        tcp = tcp.rst();
    }
    if f.psh {
        tcp = tcp.psh();
    }
    let mut options = Vec::new();
    if let Some(mss) = seg.mss {
        options.push(TcpOptionElement::MaximumSegmentSize(mss));
    }
    if seg.sack_permitted {
        options.push(TcpOptionElement::SelectiveAcknowledgementPermitted);
    }
    if let Some(block) = seg.sack {
        options.push(TcpOptionElement::Noop);
        options.push(TcpOptionElement::Noop);
        options.push(TcpOptionElement::SelectiveAcknowledgement(
            block,
            [None, None, None],
        ));
    }
    if !options.is_empty() {
        tcp = tcp
            .options(&options)
            .map_err(|e| anyhow!("TCP options: {e}"))?;
    }
    let mut frame = Vec::with_capacity(tcp.size(seg.payload.len()));
    tcp.write(&mut frame, &seg.payload)
        .context("building a TCP frame")?;
    Ok(frame)
}

/// A UDP datagram in an Ethernet frame, checksums computed.
pub fn udp_frame(l2: &L2, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Result<Vec<u8>> {
    let udp = ip_step(l2, src.ip(), dst.ip())?.udp(src.port(), dst.port());
    let mut frame = Vec::with_capacity(udp.size(payload.len()));
    udp.write(&mut frame, payload)
        .context("building a UDP frame")?;
    Ok(frame)
}

/// The ICMP error a router sends when `quote` (an IP packet from its header on, as much of it
/// as the router quotes) does not fit its next hop of `mtu`: IPv4 "fragmentation needed" (type
/// 3 code 4, next-hop MTU; 0 means "no MTU given", RFC 1191 section 4) or ICMPv6 "Packet Too
/// Big" (RFC 4443 3.2), from `router` to `to`, checksums computed.
pub fn too_big_frame(
    l2: &L2,
    router: IpAddr,
    to: IpAddr,
    mtu: u32,
    quote: &[u8],
) -> Result<Vec<u8>> {
    let step = ip_step(l2, router, to)?;
    let mut frame = Vec::new();
    if router.is_ipv4() {
        let next_hop_mtu = u16::try_from(mtu)
            .map_err(|_| anyhow!("next-hop MTU {mtu} does not fit frag-needed's 16 bits"))?;
        let icmp = step.icmpv4(Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
        ));
        icmp.write(&mut frame, quote)
            .context("building ICMP fragmentation needed")?;
    } else {
        step.icmpv6(Icmpv6Type::PacketTooBig { mtu })
            .write(&mut frame, quote)
            .context("building ICMPv6 Packet Too Big")?;
    }
    Ok(frame)
}

/// Rewrites the TCP sequence number of an IP packet (possibly truncated, as a quote is), to
/// quote a segment that was never sent.
pub fn set_tcp_seq(ip_packet: &mut [u8], seq: u32) -> Result<()> {
    let at = {
        let (ip, _) = etherparse::LaxIpSlice::from_slice(ip_packet)
            .map_err(|e| anyhow!("quoted IP header: {e}"))?;
        let payload = ip.payload();
        if payload.ip_number != etherparse::IpNumber::TCP {
            bail!(
                "the quoted packet is not TCP (protocol {:?})",
                payload.ip_number
            );
        }
        payload.payload.as_ptr() as usize - ip_packet.as_ptr() as usize
    };
    ip_packet
        .get_mut(at + 4..at + 8)
        .context("the quote ends before the TCP sequence number")?
        .copy_from_slice(&seq.to_be_bytes());
    Ok(())
}

/// An ICMP "fragmentation needed" or ICMPv6 "Packet Too Big" as received, checked field by field.
#[derive(Clone, Debug)]
pub struct IcmpError {
    pub family: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 total length / IPv6 40 + payload length.
    pub ip_total_len: usize,
    pub icmp_type: u8,
    pub code: u8,
    pub mtu: u32,
    /// The quoted original packet, from its IP header on.
    pub quote: Vec<u8>,
    /// The IPv4 header checksum (true for IPv6, which has none).
    pub ip_checksum_ok: bool,
    pub icmp_checksum_ok: bool,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan_ids: Vec<u16>,
}

/// Ones' complement sum of 16-bit big-endian words (an odd last byte is padded with zero),
/// not yet folded.
pub fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum()
}

/// Folds a sum to 16 bits, not complemented: over data with its checksum, 0xffff means valid.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum (RFC 1071) of `data` plus `seed` (a pseudo-header's sum): the value to
/// store in the header.
pub fn internet_checksum(seed: u32, data: &[u8]) -> u16 {
    !fold(seed + sum16(data))
}

/// Parses an ICMP error frame (Ethernet, up to two VLAN tags) and verifies its checksums over
/// the bytes as received.
pub fn parse_icmp_error(frame: &[u8]) -> Result<IcmpError> {
    let sliced = SlicedPacket::from_ethernet(frame).map_err(|e| anyhow!("frame: {e}"))?;
    let Some(LinkSlice::Ethernet2(eth)) = &sliced.link else {
        bail!("frame: not Ethernet II");
    };
    let vlan_ids = sliced
        .link_exts
        .iter()
        .filter_map(|x| match x {
            etherparse::LinkExtSlice::Vlan(v) => Some(v.vlan_identifier().value()),
            _ => None,
        })
        .collect();
    let (src_mac, dst_mac) = (eth.source(), eth.destination());
    match (&sliced.net, &sliced.transport) {
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Icmpv4(icmp))) => {
            let h = ip.header();
            let hdr = h.slice();
            let ip_checksum_ok = fold(sum16(hdr)) == 0xffff;
            let msg = ip.payload().payload;
            let icmp_checksum_ok = fold(sum16(msg)) == 0xffff;
            let (code, mtu) = match icmp.icmp_type() {
                Icmpv4Type::DestinationUnreachable(d) => (
                    d.code_u8(),
                    match d {
                        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                            next_hop_mtu,
                        } => next_hop_mtu as u32,
                        _ => 0,
                    },
                ),
                other => bail!("ICMP type: expected destination unreachable, got {other:?}"),
            };
            Ok(IcmpError {
                family: 4,
                src: IpAddr::V4(Ipv4Addr::from(h.source())),
                dst: IpAddr::V4(Ipv4Addr::from(h.destination())),
                ip_total_len: h.total_len() as usize,
                icmp_type: icmp.type_u8(),
                code,
                mtu,
                quote: icmp.payload().to_vec(),
                ip_checksum_ok,
                icmp_checksum_ok,
                src_mac,
                dst_mac,
                vlan_ids,
            })
        }
        (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(icmp))) => {
            let h = ip.header();
            let msg = ip.payload().payload;
            let pseudo = sum16(&h.source())
                + sum16(&h.destination())
                + sum16(&(msg.len() as u32).to_be_bytes())
                + 58;
            let icmp_checksum_ok = fold(pseudo + sum16(msg)) == 0xffff;
            let mtu = match icmp.icmp_type() {
                Icmpv6Type::PacketTooBig { mtu } => mtu,
                other => bail!("ICMPv6 type: expected Packet Too Big, got {other:?}"),
            };
            Ok(IcmpError {
                family: 6,
                src: IpAddr::V6(Ipv6Addr::from(h.source())),
                dst: IpAddr::V6(Ipv6Addr::from(h.destination())),
                ip_total_len: 40 + h.payload_length() as usize,
                icmp_type: icmp.type_u8(),
                code: icmp.code_u8(),
                mtu,
                quote: icmp.payload().to_vec(),
                ip_checksum_ok: true,
                icmp_checksum_ok,
                src_mac,
                dst_mac,
                vlan_ids,
            })
        }
        _ => bail!("frame: not an ICMP or ICMPv6 message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, TransportSlice};

    const L: L2 = L2 {
        src: [2, 0, 0, 0, 0, 1],
        dst: [2, 0, 0, 0, 0, 2],
    };

    fn syn(src: &str, dst: &str) -> TcpSegment {
        TcpSegment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40000,
            dport: 19,
            seq: 7,
            ack: 0,
            flags: TcpFlags {
                syn: true,
                ..Default::default()
            },
            window: 65535,
            mss: Some(1460),
            sack_permitted: false,
            sack: None,
            payload: Vec::new(),
        }
    }

    #[test]
    fn tcp_frames_carry_df_mss_and_valid_checksums() {
        for (s, d) in [
            ("198.51.100.22", "192.0.2.2"),
            ("2001:db8:1::22", "2001:db8::2"),
        ] {
            let frame = tcp_frame(&L, &syn(s, d)).unwrap();
            let p = SlicedPacket::from_ethernet(&frame).unwrap();
            if let Some(NetSlice::Ipv4(ip)) = &p.net {
                assert!(ip.header().dont_fragment());
                assert_eq!(fold(sum16(ip.header().slice())), 0xffff);
            }
            let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                panic!("no TCP")
            };
            assert!(tcp.syn() && !tcp.ack());
            let opts: Vec<_> = tcp.options_iterator().collect();
            assert!(matches!(
                opts[..],
                [Ok(TcpOptionElement::MaximumSegmentSize(1460))]
            ));
            let ok = match &p.net {
                Some(NetSlice::Ipv4(ip)) => tcp
                    .calc_checksum_ipv4(ip.header().source(), ip.header().destination())
                    .unwrap(),
                Some(NetSlice::Ipv6(ip)) => tcp
                    .calc_checksum_ipv6(ip.header().source(), ip.header().destination())
                    .unwrap(),
                _ => panic!(),
            };
            assert_eq!(ok, tcp.checksum());
        }
    }

    #[test]
    fn sack_options_are_written() {
        let mut seg = syn("198.51.100.22", "192.0.2.2");
        seg.sack_permitted = true;
        let frame = tcp_frame(&L, &seg).unwrap();
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("no TCP")
        };
        let opts: Vec<_> = tcp.options_iterator().filter_map(Result::ok).collect();
        assert!(opts.contains(&TcpOptionElement::SelectiveAcknowledgementPermitted));
        seg.flags = TcpFlags {
            ack: true,
            ..Default::default()
        };
        seg.mss = None;
        seg.sack_permitted = false;
        seg.sack = Some((100, 2000));
        let frame = tcp_frame(&L, &seg).unwrap();
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("no TCP")
        };
        let opts: Vec<_> = tcp.options_iterator().filter_map(Result::ok).collect();
        assert!(opts.contains(&TcpOptionElement::SelectiveAcknowledgement(
            (100, 2000),
            [None, None, None]
        )));
    }

    #[test]
    fn udp_frames_round_trip() {
        let frame = udp_frame(
            &L,
            "[2001:db8:1::22]:40000".parse().unwrap(),
            "[2001:db8::2]:7".parse().unwrap(),
            &[b'e'; 1400],
        )
        .unwrap();
        assert_eq!(frame.len(), 14 + 1448);
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            panic!()
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (40000, 7));
    }

    #[test]
    fn too_big_frames_quote_the_packet_with_the_sequence_moved() {
        for (s, d, router) in [
            ("198.51.100.22", "192.0.2.2", "192.0.2.1"),
            ("2001:db8:1::22", "2001:db8::2", "2001:db8::1"),
        ] {
            // REMOTE's segment toward the fake host, as the router saw it.
            let mut seg = syn(d, s);
            seg.payload = vec![b'c'; 100];
            let frame = tcp_frame(&L, &seg).unwrap();
            let mut quote = frame[14..].to_vec();
            set_tcp_seq(&mut quote, 0x4000_0007).unwrap();
            let icmp = too_big_frame(
                &L,
                router.parse().unwrap(),
                d.parse().unwrap(),
                1300,
                &quote[..quote.len() - 50],
            )
            .unwrap();
            let e = parse_icmp_error(&icmp).unwrap();
            assert_eq!(e.mtu, 1300);
            assert!(e.icmp_checksum_ok && e.ip_checksum_ok);
            assert_eq!(e.src, router.parse::<IpAddr>().unwrap());
            assert_eq!(e.quote.len(), quote.len() - 50, "quoted as given");
            let (ip, _) = etherparse::LaxIpSlice::from_slice(&e.quote).unwrap();
            let tcp = ip.payload().payload;
            assert_eq!(&tcp[4..8], &0x4000_0007u32.to_be_bytes());
        }
        assert!(too_big_frame(
            &L,
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            70000,
            &[]
        )
        .is_err());
        let udp = udp_frame(
            &L,
            "192.0.2.2:7".parse().unwrap(),
            "198.51.100.22:4000".parse().unwrap(),
            &[0; 20],
        )
        .unwrap();
        assert!(set_tcp_seq(&mut udp[14..].to_vec(), 1).is_err());
        assert!(set_tcp_seq(&mut [0x45, 0], 1).is_err());
    }

    #[test]
    fn mixed_families_are_refused() {
        let err = tcp_frame(&L, &syn("198.51.100.22", "2001:db8::2")).unwrap_err();
        assert!(err.to_string().contains("different IP families"));
    }

    #[test]
    fn non_icmp_frames_are_not_icmp_errors() {
        let frame = tcp_frame(&L, &syn("198.51.100.22", "192.0.2.2")).unwrap();
        let err = parse_icmp_error(&frame).unwrap_err().to_string();
        assert!(err.contains("not an ICMP"), "{err}");
        assert!(parse_icmp_error(&frame[..10]).is_err());
    }
}
