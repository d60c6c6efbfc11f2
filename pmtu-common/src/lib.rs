//! Types shared by the XDP program (`pmtu-ebpf`) and its controller (`pmtu-user`).
//!
//! Everything here is `#[repr(C)]` plain data: the layout is the contract across the kernel
//! boundary. Field order keeps every field naturally aligned without hidden padding.
#![no_std]

/// Declares a fieldless enum of small values once, with what both sides need from it:
/// `from_u8`, `ALL` (every variant, in declaration order), `COUNT`, `name()` (the text used in
/// status, events and rule parsing) and `from_name()`. Values must be 0, 1, 2, ... in order, so
/// that a variant is also an index (the counters are a BPF array).
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident : $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $name:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $ty {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $ty {
            /// Every variant, in value order.
            pub const ALL: [Self; Self::COUNT] = [$(Self::$variant),+];
            /// How many variants there are.
            pub const COUNT: usize = [$($value),+].len();

            pub const fn from_u8(v: u8) -> Option<Self> {
                match v {
                    $( $value => Some(Self::$variant), )+
                    _ => None,
                }
            }

            /// The variant's name in text (status, events, rules).
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $name, )+
                }
            }

            /// The variant called `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.name() == name)
            }
        }

        // Values are 0..COUNT in declaration order: a value is its index in ALL.
        const _: () = {
            let mut i = 0;
            while i < $ty::COUNT {
                assert!($ty::ALL[i] as usize == i);
                i += 1;
            }
        };
    };
}

/// Name of the XDP program that plays the router (attached to LOCAL_IF).
pub const PROG_RESPONDER: &str = "pmtu";
/// Name of the pass-through XDP program put on the peer veth so that XDP_TX frames are delivered.
pub const PROG_PASS: &str = "pmtu_pass";
/// Name of the benchmark floor: swap MACs and XDP_TX, nothing else.
pub const PROG_FLOOR: &str = "pmtu_floor";
/// Name of the benchmark's sender: run in live-frames mode, sends every frame out (XDP_TX).
pub const PROG_FLOOD: &str = "pmtu_flood";
/// Name of the benchmark's answer counter: counts ICMP errors in [`MAP_BENCH_ANSWERS`] and
/// drops them; passes everything else.
pub const PROG_COUNT: &str = "pmtu_count";

/// Map names, as they appear in the object file.
pub const MAP_RULES_V4: &str = "RULES_V4";
pub const MAP_RULES_V6: &str = "RULES_V6";
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_RULE_SENT: &str = "RULE_SENT";
/// Per CPU: ICMP errors counted by [`PROG_COUNT`], at 0 (IPv4) and 1 (ICMPv6).
pub const MAP_BENCH_ANSWERS: &str = "BENCH_ANSWERS";
/// The Ethernet header [`PROG_FLOOD`] writes into every frame (14 bytes, 2 of padding).
pub const MAP_FLOOD_L2: &str = "FLOOD_L2";

/// Rules each rule trie holds.
pub const RULES_PER_FAMILY: u32 = 4096;
/// Slots of the `RULE_SENT` array: one per rule of either family.
pub const RULE_SLOTS: u32 = 2 * RULES_PER_FAMILY;

/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 8 << 20;

named_enum! {
    /// What a rule does with a packet that is larger than its MTU.
    pub enum RuleAction: u8 {
        /// Answer with ICMP "fragmentation needed" / ICMPv6 "Packet Too Big", as a router does.
        Answer = 0 => "answer",
        /// Drop silently: a router behind an ICMP black hole.
        Blackhole = 1 => "blackhole",
        /// Report only; never answer.
        Observe = 2 => "observe",
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
    /// This rule's index in `RULE_SENT`, where the program counts the ICMP errors it sent for
    /// it. User space gives every installed rule (of both families) its own slot, below
    /// [`RULE_SLOTS`], and zeroes the slot's count when it installs the rule.
    pub slot: u32,
    /// A [`RuleAction`] as u8.
    pub action: u8,
    /// `RULE_F_*` bits.
    pub flags: u8,
    /// Packets longer than this are too big; 0 = `mtu`. Lets a test announce an MTU that does
    /// not match the packet it quotes (a PTB of 1272 for a 1248-byte reply, say).
    pub limit: u16,
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

named_enum! {
    /// What the program did with a packet toward a rule's prefix: the action actually taken.
    pub enum EventAction: u8 {
        /// Fits the MTU: reported, then dropped or passed.
        Observed = 0 => "observed",
        /// Too big: answered with ICMP frag-needed / Packet Too Big (XDP_TX).
        Answered = 1 => "answered",
        /// Too big: dropped silently (ICMP black hole rule).
        Blackholed = 2 => "blackholed",
        /// Too big, but the rule's ICMP budget is spent: dropped without ICMP.
        BudgetExhausted = 3 => "budget_exhausted",
        /// IPv4 too big without DF: a router would fragment it; not answered.
        NotDf = 4 => "not_df",
        /// Too big, but an ICMP error must not or cannot be sent for it: an ICMP error itself,
        /// a non-initial fragment, an extension header chain too long to walk, a source that is
        /// not one host, a group or broadcast MAC, a frame shorter than its IP length, a bad
        /// IPv4 header checksum. Not answered.
        NotAnswerable = 5 => "not_answerable",
        /// Too big, observe-only rule.
        TooBigObserved = 6 => "too_big_observed",
        /// Too big and to be answered, but the answer could not be built (no router address
        /// for the family, a helper refused): dropped; the budget is not spent.
        AnswerFailed = 7 => "answer_failed",
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

named_enum! {
    /// Per-CPU counters, indexes into the `COUNTERS` array.
    pub enum Counter: u8 {
        /// Packets toward a rule's prefix.
        Seen = 0 => "seen",
        /// Packets that matched no rule and were passed untouched.
        Passed = 1 => "passed",
        /// ICMP errors sent.
        Answered = 2 => "answered",
        /// Too-big packets dropped by a black-hole rule.
        Blackholed = 3 => "blackholed",
        /// Too-big packets not answered because the budget was spent.
        BudgetExhausted = 4 => "budget_exhausted",
        /// Events that did not fit in the ring buffer.
        EventsLost = 5 => "events_lost",
        /// Frames that could not be parsed (truncated, malformed): passed untouched.
        ParseErrors = 6 => "parse_errors",
        /// Packets toward a rule's prefix that fit its MTU.
        Fit = 7 => "fit",
        /// Too-big IPv4 packets without DF.
        NotDf = 8 => "not_df",
        /// Too-big packets for which no ICMP error may be sent (see
        /// [`EventAction::NotAnswerable`]).
        NotAnswerable = 9 => "not_answerable",
        /// ICMP errors that could not be built: the packet was dropped.
        AnswerFailed = 10 => "answer_failed",
    }
}

/// Size of the `COUNTERS` array.
pub const COUNTER_COUNT: u32 = Counter::COUNT as u32;

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
    // SAFETY: #[repr(C)] plain data of integers only, with no padding (the layout test below
    // checks the sizes), valid for every bit pattern.
    unsafe impl aya::Pod for super::Rule {}
    // SAFETY: as for Rule: #[repr(C)], integers and byte arrays only, no padding.
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<Rule>(), 16);
        assert_eq!(size_of::<Config>(), 24);
        assert_eq!(size_of::<Event>(), 8 + 32 + 20 + 12 + 8 + EVENT_HEAD_BYTES);
    }

    /// For every variant of a `named_enum!`: its value and its name lead back to it, no two
    /// variants share a value or a name, and nothing outside the list is accepted.
    macro_rules! check_round_trips {
        ($ty:ident) => {{
            assert_eq!($ty::ALL.len(), $ty::COUNT);
            for (i, v) in $ty::ALL.into_iter().enumerate() {
                assert_eq!(v as usize, i, "{v:?}: value is not its index");
                assert_eq!($ty::from_u8(v as u8), Some(v));
                assert_eq!($ty::from_name(v.name()), Some(v), "{}", v.name());
                assert!(!v.name().is_empty());
                assert!(
                    v.name()
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{}: names are lower-case words joined by _",
                    v.name()
                );
                for w in &$ty::ALL[i + 1..] {
                    assert_ne!(v.name(), w.name(), "two variants share a name");
                }
            }
            for v in $ty::COUNT..=255 {
                assert_eq!($ty::from_u8(v as u8), None, "{v}");
            }
            for bad in ["", "Answer", " answer", "answer ", "nonsense"] {
                assert_eq!($ty::from_name(bad), None, "{bad:?}");
            }
        }};
    }

    #[test]
    fn rule_actions_round_trip() {
        check_round_trips!(RuleAction);
        assert_eq!(
            RuleAction::from_name("blackhole"),
            Some(RuleAction::Blackhole)
        );
        assert_eq!(RuleAction::Observe.name(), "observe");
    }

    #[test]
    fn event_actions_round_trip() {
        check_round_trips!(EventAction);
        assert_eq!(EventAction::AnswerFailed.name(), "answer_failed");
    }

    #[test]
    fn counters_round_trip_and_size_the_map() {
        check_round_trips!(Counter);
        assert_eq!(COUNTER_COUNT as usize, Counter::ALL.len());
        assert_eq!(
            Counter::ALL[COUNTER_COUNT as usize - 1],
            Counter::AnswerFailed
        );
        assert_eq!(
            Counter::from_name("not_answerable"),
            Some(Counter::NotAnswerable)
        );
    }
}
