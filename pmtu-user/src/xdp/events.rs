//! The XDP program's ring-buffer records, decoded for the controller and for people.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use etherparse::TcpOptionElement;
use pmtu_common::{Event, EventAction, FRAG_DF, FRAG_IS_FRAGMENT, FRAG_MORE};

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// TCP flag bits as in the header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// An IPv6 fragment header or IPv4 fragmentation fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Offset in bytes.
    pub offset: u16,
    pub more: bool,
    pub id: u32,
}

impl Fragment {
    /// RFC 8021: a fragment header on a packet that is not fragmented (offset 0, M=0).
    pub fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more
    }
}

/// One packet toward a rule's prefix, as the XDP program saw it.
#[derive(Clone, Debug)]
pub struct PacketEvent {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Ports for TCP/UDP; ICMP type and code for ICMP.
    pub sport: u16,
    pub dport: u16,
    /// IPv4 total length, IPv6 40 + payload length.
    pub ip_len: u16,
    pub seq: u32,
    pub ack: u32,
    pub tcp_flags: u8,
    /// TCP payload length, or the UDP length field.
    pub l4_len: u16,
    pub has_l4: bool,
    pub df: bool,
    /// The IPv6 fragment header, or IPv4 fragmentation (MF or offset != 0).
    pub fragment: Option<Fragment>,
    pub action: Option<EventAction>,
    pub rule_mtu: u32,
    pub ifindex: u32,
    /// The frame's first bytes as received.
    pub head: Vec<u8>,
}

impl From<&Event> for PacketEvent {
    fn from(e: &Event) -> Self {
        let (src, dst) = if e.family == 4 {
            (
                IpAddr::V4(Ipv4Addr::new(e.src[0], e.src[1], e.src[2], e.src[3])),
                IpAddr::V4(Ipv4Addr::new(e.dst[0], e.dst[1], e.dst[2], e.dst[3])),
            )
        } else {
            (
                IpAddr::V6(Ipv6Addr::from(e.src)),
                IpAddr::V6(Ipv6Addr::from(e.dst)),
            )
        };
        let fragment = (e.frag & FRAG_IS_FRAGMENT != 0).then_some(Fragment {
            offset: e.frag_off,
            more: e.frag & FRAG_MORE != 0,
            id: e.frag_id,
        });
        let head_len = (e.head_len as usize).min(e.head.len());
        PacketEvent {
            ts_ns: e.ts_ns,
            src,
            dst,
            proto: e.proto,
            sport: e.sport,
            dport: e.dport,
            ip_len: e.ip_len,
            seq: e.seq,
            ack: e.ack,
            tcp_flags: e.tcp_flags,
            l4_len: e.l4_len,
            has_l4: e.has_l4 != 0,
            df: e.frag & FRAG_DF != 0,
            fragment,
            action: EventAction::from_u8(e.action),
            rule_mtu: e.rule_mtu,
            ifindex: e.ifindex,
            head: e.head[..head_len].to_vec(),
        }
    }
}

impl PacketEvent {
    pub fn is_tcp(&self) -> bool {
        self.proto == IPPROTO_TCP && self.has_l4
    }

    pub fn is_udp(&self) -> bool {
        self.proto == IPPROTO_UDP && self.has_l4
    }

    pub fn has_flag(&self, flag: u8) -> bool {
        self.tcp_flags & flag == flag
    }

    /// TCP payload bytes in this segment.
    pub fn payload_len(&self) -> u32 {
        self.l4_len as u32
    }

    /// The TCP sequence range this segment carries, [seq, seq + payload).
    pub fn seq_end(&self) -> u32 {
        self.seq.wrapping_add(self.payload_len())
    }

    pub fn answered(&self) -> bool {
        self.action == Some(EventAction::Answered)
    }

    /// ICMP "port unreachable" (type 3 code 3) or ICMPv6 (type 1 code 4).
    pub fn is_port_unreachable(&self) -> bool {
        self.has_l4
            && match self.proto {
                IPPROTO_ICMP => (self.sport, self.dport) == (3, 3),
                IPPROTO_ICMPV6 => (self.sport, self.dport) == (1, 4),
                _ => false,
            }
    }

    /// The packet from its IP header on, as far as the event's bytes go: what a router quotes.
    pub fn ip_head(&self) -> Option<&[u8]> {
        self.head.get(l2_len(&self.head)?..)
    }

    /// The options of a TCP segment, read from the frame's first bytes (empty when they do
    /// not fit the event).
    pub fn tcp_options(&self) -> Vec<TcpOptionElement> {
        let Ok(p) = etherparse::LaxSlicedPacket::from_ethernet(&self.head) else {
            return Vec::new();
        };
        let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
            return Vec::new();
        };
        tcp.options_iterator().filter_map(Result::ok).collect()
    }

    /// The MSS option of a TCP segment (a SYN+ACK's).
    pub fn tcp_mss(&self) -> Option<u16> {
        self.tcp_options().into_iter().find_map(|o| match o {
            TcpOptionElement::MaximumSegmentSize(mss) => Some(mss),
            _ => None,
        })
    }

    /// Whether a SYN+ACK agrees to selective acknowledgements (RFC 2018).
    pub fn tcp_sack_permitted(&self) -> bool {
        self.tcp_options()
            .contains(&TcpOptionElement::SelectiveAcknowledgementPermitted)
    }

    /// For an ICMP error, the source port of the packet it quotes (the fake endpoint's port,
    /// when the error answers one of its packets), read from the frame's first bytes.
    pub fn quoted_source_port(&self) -> Option<u16> {
        let is_error = match self.proto {
            IPPROTO_ICMP => matches!(self.sport, 3 | 4 | 5 | 11 | 12),
            IPPROTO_ICMPV6 => self.sport < 128,
            _ => false,
        };
        if !is_error || !self.has_l4 {
            return None;
        }
        let h = &self.head;
        let l2 = l2_len(h)?;
        let ip_len = |at: usize| -> Option<usize> {
            match h.get(at)? >> 4 {
                4 => Some((h.get(at)? & 0x0f) as usize * 4),
                6 => Some(40),
                _ => None,
            }
        };
        let quoted = l2 + ip_len(l2)? + 8;
        let port_at = quoted + ip_len(quoted)?;
        Some(u16::from_be_bytes([*h.get(port_at)?, *h.get(port_at + 1)?]))
    }
}

/// Length of the Ethernet header, VLAN tags included.
fn l2_len(frame: &[u8]) -> Option<usize> {
    let mut l2 = 14;
    while matches!(frame.get(l2 - 2..l2)?, [0x81, 0x00] | [0x88, 0xa8]) {
        l2 += 4;
    }
    Some(l2)
}

fn flags_text(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (tcp_flags::SYN, 'S'),
        (tcp_flags::FIN, 'F'),
        (tcp_flags::RST, 'R'),
        (tcp_flags::PSH, 'P'),
        (tcp_flags::ACK, '.'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

fn action_text(a: Option<EventAction>) -> &'static str {
    match a {
        Some(EventAction::Observed) => "fits",
        Some(EventAction::Answered) => "ANSWERED",
        Some(EventAction::Blackholed) => "blackholed",
        Some(EventAction::BudgetExhausted) => "budget spent, dropped",
        Some(EventAction::NotDf) => "too big, no DF",
        Some(EventAction::NotAnswerable) => "too big, not answerable",
        Some(EventAction::TooBigObserved) => "too big, observed",
        Some(EventAction::AnswerFailed) => "too big, ANSWER FAILED",
        None => "?",
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}.{port}"),
        IpAddr::V6(a) => format!("{a}.{port}"),
    }
}

/// tcpdump-like: `tcp 192.0.2.2.19 > 198.51.100.22.40000: [.] seq 1:1449 ack 1 len 1448, ip 1500 -> ANSWERED (mtu 1300)`
impl fmt::Display for PacketEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frag = match self.fragment {
            Some(fr) => format!(
                " frag(off {} {} id {:#x}{})",
                fr.offset,
                if fr.more { "M" } else { "last" },
                fr.id,
                if fr.is_atomic() { ", ATOMIC" } else { "" }
            ),
            None => String::new(),
        };
        let df = if self.df { " DF" } else { "" };
        match (self.proto, self.has_l4) {
            (IPPROTO_TCP, true) => write!(
                f,
                "tcp {} > {}: [{}] seq {} ack {} len {}",
                endpoint(self.src, self.sport),
                endpoint(self.dst, self.dport),
                flags_text(self.tcp_flags),
                self.seq,
                self.ack,
                self.l4_len
            )?,
            (IPPROTO_UDP, true) => write!(
                f,
                "udp {} > {}: len {}",
                endpoint(self.src, self.sport),
                endpoint(self.dst, self.dport),
                self.l4_len
            )?,
            _ => write!(f, "proto {} {} > {}", self.proto, self.src, self.dst)?,
        }
        write!(
            f,
            ", ip {}{df}{frag} -> {} (mtu {})",
            self.ip_len,
            action_text(self.action),
            self.rule_mtu
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pmtu_common::EVENT_HEAD_BYTES;

    /// A record as the XDP program writes it: nothing parsed yet, only the addresses.
    pub(crate) fn raw(src: &str, dst: &str) -> Event {
        let bytes = |a: &str| match a.parse::<IpAddr>().unwrap() {
            // The bytes after an IPv4 address are not the program's to fill; make them noise.
            IpAddr::V4(a) => {
                let mut b = [0xee; 16];
                b[..4].copy_from_slice(&a.octets());
                b
            }
            IpAddr::V6(a) => a.octets(),
        };
        Event {
            ts_ns: 7,
            src: bytes(src),
            dst: bytes(dst),
            seq: 0,
            ack: 0,
            frag_id: 0,
            rule_mtu: 1300,
            ifindex: 3,
            ip_len: 0,
            sport: 0,
            dport: 0,
            l4_len: 0,
            frag_off: 0,
            head_len: 0,
            family: if src.contains(':') { 6 } else { 4 },
            proto: 0,
            tcp_flags: 0,
            action: EventAction::Observed as u8,
            frag: 0,
            has_l4: 0,
            _pad: [0; 2],
            head: [0; EVENT_HEAD_BYTES],
        }
    }

    /// The first bytes of an ICMP error frame: Ethernet with `tags` (VLAN TPIDs), an IP header,
    /// 8 bytes of ICMP, the quoted IP header with `quoted_options` bytes of IPv4 options, and the
    /// quoted packet's source port.
    pub(crate) fn icmp_error_head(
        v6: bool,
        tags: &[u16],
        quoted_options: u8,
        port: u16,
    ) -> Vec<u8> {
        let mut h = vec![0u8; 12];
        for tpid in tags {
            h.extend(tpid.to_be_bytes());
            h.extend([0, 1]);
        }
        h.extend(if v6 { [0x86, 0xdd] } else { [0x08, 0x00] });
        let ip = |h: &mut Vec<u8>, options: u8| {
            let len = if v6 { 40 } else { 20 + options as usize };
            h.push(if v6 { 0x60 } else { 0x45 + options / 4 });
            h.resize(h.len() + len - 1, 0);
        };
        ip(&mut h, 0);
        h.extend([0u8; 8]);
        ip(&mut h, quoted_options);
        h.extend(port.to_be_bytes());
        h.extend(7u16.to_be_bytes());
        h
    }

    /// `raw` with `head` as the frame's first bytes.
    pub(crate) fn with_head(mut e: Event, head: &[u8]) -> Event {
        e.head[..head.len()].copy_from_slice(head);
        e.head_len = head.len() as u16;
        e
    }

    #[test]
    fn ipv4_tcp_decodes_and_prints_like_tcpdump() {
        let mut e = raw("192.0.2.2", "198.51.100.22");
        e.proto = IPPROTO_TCP;
        e.has_l4 = 1;
        (e.sport, e.dport) = (19, 40000);
        (e.seq, e.ack, e.l4_len, e.ip_len) = (1, 1, 1448, 1500);
        e.tcp_flags = tcp_flags::ACK;
        e.frag = FRAG_DF;
        e.action = EventAction::Answered as u8;
        let p = PacketEvent::from(&e);
        assert_eq!(p.src, "192.0.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "198.51.100.22".parse::<IpAddr>().unwrap());
        assert!(p.is_tcp() && !p.is_udp() && p.df && p.answered());
        assert!(p.has_flag(tcp_flags::ACK) && !p.has_flag(tcp_flags::SYN));
        assert_eq!((p.ts_ns, p.ifindex, p.rule_mtu), (7, 3, 1300));
        assert_eq!((p.payload_len(), p.seq_end()), (1448, 1449));
        assert_eq!(p.fragment, None);
        assert_eq!(
            p.to_string(),
            "tcp 192.0.2.2.19 > 198.51.100.22.40000: [.] seq 1 ack 1 len 1448, \
             ip 1500 DF -> ANSWERED (mtu 1300)"
        );
    }

    #[test]
    fn ipv6_udp_decodes_all_sixteen_address_bytes() {
        let mut e = raw("2001:db8::2", "2001:db8:1::22");
        e.proto = IPPROTO_UDP;
        e.has_l4 = 1;
        (e.sport, e.dport, e.l4_len, e.ip_len) = (7, 40000, 1408, 1448);
        let p = PacketEvent::from(&e);
        assert_eq!(p.src, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "2001:db8:1::22".parse::<IpAddr>().unwrap());
        assert!(p.is_udp() && !p.is_tcp() && !p.df && !p.answered());
        assert_eq!(
            p.to_string(),
            "udp 2001:db8::2.7 > 2001:db8:1::22.40000: len 1408, ip 1448 -> fits (mtu 1300)"
        );
    }

    #[test]
    fn tcp_flags_read_in_tcpdump_order() {
        use tcp_flags::*;
        for (bits, text) in [
            (0, ""),
            (SYN, "S"),
            (SYN | ACK, "S."),
            (FIN | PSH | ACK, "FP."),
            (RST, "R"),
            (RST | ACK, "R."),
            (FIN | SYN | RST | PSH | ACK, "SFRP."),
        ] {
            assert_eq!(flags_text(bits), text, "flags {bits:#04x}");
        }
        let mut e = raw("192.0.2.2", "198.51.100.22");
        (e.proto, e.has_l4, e.tcp_flags) = (IPPROTO_TCP, 1, SYN | ACK);
        assert!(PacketEvent::from(&e).to_string().contains(": [S.] seq 0"));
    }

    #[test]
    fn fragments_of_both_families() {
        // IPv6: the first fragment has the UDP header, the last one only the fragment id.
        let mut first = raw("2001:db8::2", "2001:db8:1::22");
        (first.proto, first.has_l4, first.ip_len) = (IPPROTO_UDP, 1, 1296);
        (first.frag, first.frag_off, first.frag_id) = (FRAG_IS_FRAGMENT | FRAG_MORE, 0, 0x1234);
        let p = PacketEvent::from(&first);
        let fr = p.fragment.expect("a fragment");
        assert_eq!((fr.offset, fr.more, fr.id), (0, true, 0x1234));
        assert!(!fr.is_atomic() && p.is_udp());
        assert!(p
            .to_string()
            .contains(", ip 1296 frag(off 0 M id 0x1234) -> fits"));

        let mut last = first;
        (last.has_l4, last.frag, last.frag_off, last.ip_len) = (0, FRAG_IS_FRAGMENT, 1248, 200);
        let p = PacketEvent::from(&last);
        assert!(!p.is_udp() && !p.fragment.unwrap().is_atomic());
        assert_eq!(
            p.to_string(),
            "proto 17 2001:db8::2 > 2001:db8:1::22, ip 200 frag(off 1248 last id 0x1234) \
             -> fits (mtu 1300)"
        );

        // RFC 8021: offset 0 and no more fragments is an atomic fragment.
        let mut atomic = first;
        atomic.frag = FRAG_IS_FRAGMENT;
        let p = PacketEvent::from(&atomic);
        assert!(p.fragment.unwrap().is_atomic());
        assert!(p.to_string().contains("frag(off 0 last id 0x1234, ATOMIC)"));

        // IPv4: MF makes a fragment; DF alone does not.
        let mut v4 = raw("192.0.2.2", "198.51.100.22");
        (v4.proto, v4.has_l4, v4.frag_id) = (IPPROTO_UDP, 1, 0x55);
        v4.frag = FRAG_IS_FRAGMENT | FRAG_MORE;
        let p = PacketEvent::from(&v4);
        assert_eq!(
            p.fragment,
            Some(Fragment {
                offset: 0,
                more: true,
                id: 0x55
            })
        );
        assert!(!p.df);
        v4.frag = FRAG_DF;
        let p = PacketEvent::from(&v4);
        assert!(p.fragment.is_none() && p.df);
        assert!(p.to_string().contains(", ip 0 DF -> fits"));
    }

    #[test]
    fn head_is_cut_to_its_length_and_unknown_actions_show() {
        let mut e = with_head(raw("192.0.2.2", "198.51.100.22"), &[1, 2, 3]);
        e.head[3] = 4;
        assert_eq!(PacketEvent::from(&e).head, [1, 2, 3]);
        e.head_len = 1000;
        assert_eq!(PacketEvent::from(&e).head.len(), EVENT_HEAD_BYTES);

        e.action = 200;
        let p = PacketEvent::from(&e);
        assert_eq!(p.action, None);
        assert_eq!(
            p.to_string(),
            "proto 0 192.0.2.2 > 198.51.100.22, ip 0 -> ? (mtu 1300)"
        );
    }

    #[test]
    fn icmp_errors_give_the_quoted_source_port() {
        let error = |v6: bool, tags: &[u16], options: u8| {
            let (src, dst, proto, kind) = if v6 {
                ("2001:db8::2", "2001:db8:1::22", IPPROTO_ICMPV6, (1, 4))
            } else {
                ("192.0.2.2", "198.51.100.22", IPPROTO_ICMP, (3, 3))
            };
            let mut e = with_head(raw(src, dst), &icmp_error_head(v6, tags, options, 40000));
            (e.proto, e.has_l4, e.sport, e.dport) = (proto, 1, kind.0, kind.1);
            PacketEvent::from(&e)
        };
        for v6 in [false, true] {
            for tags in [&[][..], &[0x8100], &[0x88a8, 0x8100]] {
                let p = error(v6, tags, 0);
                assert!(p.is_port_unreachable(), "{p}");
                assert_eq!(p.quoted_source_port(), Some(40000), "v6 {v6} tags {tags:?}");
            }
        }
        // The quoted IPv4 header's length comes from its IHL.
        assert_eq!(error(false, &[], 8).quoted_source_port(), Some(40000));

        // Not an error: an echo reply (ICMP 0, ICMPv6 129); no L4 header; a head cut short.
        let mut p = error(false, &[], 0);
        p.sport = 0;
        assert_eq!(p.quoted_source_port(), None);
        let mut p = error(true, &[], 0);
        p.sport = 129;
        assert_eq!(p.quoted_source_port(), None);
        assert!(!p.is_port_unreachable());
        let mut p = error(true, &[], 0);
        p.has_l4 = false;
        assert_eq!(p.quoted_source_port(), None);
        let mut p = error(true, &[0x8100], 0);
        p.head.truncate(p.head.len() - 3);
        assert_eq!(p.quoted_source_port(), None);
    }
}
