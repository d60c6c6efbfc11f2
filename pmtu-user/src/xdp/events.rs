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
