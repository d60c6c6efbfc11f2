//! Types shared by the XDP program (`pmtu-ebpf`) and its controller (`pmtu-user`).
//!
//! Everything here is `#[repr(C)]` plain data: the layout is the contract across the kernel
//! boundary. Field order keeps every field naturally aligned without hidden padding.
#![no_std]

/// Name of the XDP program that plays the router (attached to LOCAL_IF).
pub const PROG_RESPONDER: &str = "pmtu";
/// Name of the pass-through XDP program put on the peer veth so that XDP_TX frames are delivered.
pub const PROG_PASS: &str = "pmtu_pass";
/// Name of the benchmark floor: swap MACs and XDP_TX, nothing else.
pub const PROG_FLOOR: &str = "pmtu_floor";

/// Map names, as they appear in the object file.
pub const MAP_RULES_V4: &str = "RULES_V4";
pub const MAP_RULES_V6: &str = "RULES_V6";
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_EVENTS: &str = "EVENTS";

/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 8 << 20;

/// What a rule does with a packet that is larger than its MTU.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Answer with ICMP "fragmentation needed" / ICMPv6 "Packet Too Big", as a router does.
    Answer = 0,
    /// Drop silently: a router behind an ICMP black hole.
    Blackhole = 1,
    /// Report only; never answer.
    Observe = 2,
}

impl RuleAction {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Answer),
            1 => Some(Self::Blackhole),
            2 => Some(Self::Observe),
            _ => None,
        }
    }
}

/// Rule flag: deliver the packets that are not answered (XDP_PASS) instead of dropping them.
/// The lab's fake host does not exist, so its rules drop; `pmtu respond` on a real hop passes.
pub const RULE_F_PASS: u8 = 1;

/// Value of the LPM-trie rule maps (key: prefix length + address bytes in network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// The MTU announced in the ICMP error; also the largest IP packet (total length) that
    /// fits, unless `limit` says otherwise.
    pub mtu: u32,
    /// How many ICMP errors this rule may send; 0 = no limit.
    pub budget: u32,
    /// ICMP errors sent (or refused for lack of budget) so far; updated atomically by the program.
    pub sent: u64,
    /// A [`RuleAction`] as u8.
    pub action: u8,
    /// `RULE_F_*` bits.
    pub flags: u8,
    /// Packets longer than this are too big; 0 = `mtu`. Lets a test announce an MTU that does
    /// not match the packet it quotes (a PTB of 1272 for a 1248-byte reply, say).
    pub limit: u16,
    pub _pad: [u8; 4],
}

impl Rule {
    /// The IP length above which a packet is too big.
    #[inline(always)]
    pub fn too_big_above(&self) -> u32 {
        if self.limit != 0 {
            self.limit as u32
        } else {
            self.mtu
        }
    }
}

/// Single-entry array: the router's own addresses, used as the ICMP source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub router_v4: [u8; 4],
    pub router_v6: [u8; 16],
    /// Hop limit / TTL of the ICMP errors sent.
    pub hop_limit: u8,
    pub _pad: [u8; 3],
}

/// What the program did with a packet toward a rule's prefix.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventAction {
    /// Fits the MTU (or the rule only observes): reported, then dropped or passed.
    Observed = 0,
    /// Too big: answered with ICMP frag-needed / Packet Too Big (XDP_TX).
    Answered = 1,
    /// Too big: dropped silently (ICMP black hole rule).
    Blackholed = 2,
    /// Too big, but the rule's ICMP budget is spent: dropped without ICMP.
    BudgetExhausted = 3,
    /// IPv4 too big without DF: a router would fragment it; not answered.
    NotDf = 4,
    /// Too big, but an ICMP error must not be sent for it (an ICMP error itself, or a
    /// non-initial fragment): not answered.
    NotAnswerable = 5,
    /// Too big, observe-only rule.
    TooBigObserved = 6,
}

impl EventAction {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Observed),
            1 => Some(Self::Answered),
            2 => Some(Self::Blackholed),
            3 => Some(Self::BudgetExhausted),
            4 => Some(Self::NotDf),
            5 => Some(Self::NotAnswerable),
            6 => Some(Self::TooBigObserved),
            _ => None,
        }
    }
}

/// `Event::frag` bits.
pub const FRAG_IS_FRAGMENT: u8 = 1; // IPv6 fragment header present / IPv4 MF or offset != 0
pub const FRAG_MORE: u8 = 2; // M / MF flag
pub const FRAG_DF: u8 = 4; // IPv4 don't-fragment flag

/// How many bytes of the frame's start an event carries (enough for Ethernet, two VLAN tags,
/// IPv6, a fragment header and a TCP header with options).
pub const EVENT_HEAD_BYTES: usize = 128;

/// One ring-buffer record per packet toward a rule's prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Source and destination address; IPv4 uses the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// TCP sequence and acknowledgement numbers (host order).
    pub seq: u32,
    pub ack: u32,
    /// IPv6 fragment identification / IPv4 identification.
    pub frag_id: u32,
    /// The matching rule's MTU.
    pub rule_mtu: u32,
    /// The interface the frame arrived on.
    pub ifindex: u32,
    /// IP length: IPv4 total length, IPv6 40 + payload length.
    pub ip_len: u16,
    pub sport: u16,
    pub dport: u16,
    /// TCP payload length, or the UDP header's length field.
    pub l4_len: u16,
    /// Fragment offset in bytes.
    pub frag_off: u16,
    /// Bytes of the frame copied into `head`.
    pub head_len: u16,
    /// 4 or 6.
    pub family: u8,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN).
    pub tcp_flags: u8,
    /// An [`EventAction`] as u8.
    pub action: u8,
    /// `FRAG_*` bits.
    pub frag: u8,
    /// 1 when the L4 header was parsed (initial fragment or unfragmented).
    pub has_l4: u8,
    pub _pad: [u8; 2],
    /// The first bytes of the frame as received.
    pub head: [u8; EVENT_HEAD_BYTES],
}

/// Per-CPU counters, indexes into the `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets toward a rule's prefix.
    Seen = 0,
    /// Packets that matched no rule and were passed untouched.
    Passed = 1,
    /// ICMP errors sent.
    Answered = 2,
    /// Too-big packets dropped by a black-hole rule.
    Blackholed = 3,
    /// Too-big packets not answered because the budget was spent.
    BudgetExhausted = 4,
    /// Events that did not fit in the ring buffer.
    EventsLost = 5,
    /// Frames that could not be parsed (truncated, malformed): passed untouched.
    ParseErrors = 6,
    /// Packets toward a rule's prefix that fit its MTU.
    Fit = 7,
    /// Too-big IPv4 packets without DF.
    NotDf = 8,
    /// Too-big packets for which no ICMP error may be sent.
    NotAnswerable = 9,
    /// ICMP errors that could not be built (helper failure): the packet was dropped.
    AnswerFailed = 10,
}

pub const COUNTER_COUNT: u32 = 11;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::Seen,
        Counter::Passed,
        Counter::Answered,
        Counter::Blackholed,
        Counter::BudgetExhausted,
        Counter::EventsLost,
        Counter::ParseErrors,
        Counter::Fit,
        Counter::NotDf,
        Counter::NotAnswerable,
        Counter::AnswerFailed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::Seen => "seen",
            Counter::Passed => "passed",
            Counter::Answered => "answered",
            Counter::Blackholed => "blackholed",
            Counter::BudgetExhausted => "budget_exhausted",
            Counter::EventsLost => "events_lost",
            Counter::ParseErrors => "parse_errors",
            Counter::Fit => "fit",
            Counter::NotDf => "not_df",
            Counter::NotAnswerable => "not_answerable",
            Counter::AnswerFailed => "answer_failed",
        }
    }
}

/// RFC 1812 4.3.2.3: an ICMP error carries as much of the original as fits in 576 bytes.
pub const ICMP4_MAX_ERROR_LEN: usize = 576;
/// RFC 4443 2.4(c): an ICMPv6 error must not exceed the minimum IPv6 MTU, 1280 bytes.
pub const ICMP6_MAX_ERROR_LEN: usize = 1280;
/// IPv4 + ICMP headers in front of the quote.
pub const ICMP4_HEADERS: usize = 20 + 8;
/// IPv6 + ICMPv6 headers in front of the quote.
pub const ICMP6_HEADERS: usize = 40 + 8;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are #[repr(C)] plain data without padding holes that matter and
    // are valid for every bit pattern.
    unsafe impl aya::Pod for super::Rule {}
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<Rule>(), 24);
        assert_eq!(size_of::<Config>(), 24);
        assert_eq!(size_of::<Event>(), 8 + 32 + 20 + 12 + 8 + EVENT_HEAD_BYTES);
    }
}
