//! The XDP program itself, through BPF_PROG_TEST_RUN: crafted frames in, action, frame and
//! events out. No interface involved. Needs root (loading BPF).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use pmtu::{
    lab::plan::{
        data_segment, FAKE_NET_ADDR as FAKE4, FAKE_NET_ADDR6 as FAKE6, LOCAL_ADDR as ROUTER4,
        LOCAL_ADDR6 as ROUTER6, LOCAL_MAC, REMOTE_ADDR as REMOTE4, REMOTE_ADDR6 as REMOTE6,
        REMOTE_MAC,
    },
    wire::{parse_icmp_error, udp_frame, IcmpError, L2},
    xdp::{
        events::PacketEvent,
        responder::{EventStream, Responder, TestOutcome, XDP_DROP, XDP_PASS, XDP_TX},
        rules::RuleSpec,
    },
};
use pmtu_common::{Counter, EventAction, RuleAction, PROG_RESPONDER};

const L2_HLEN: usize = 14;

/// A loaded responder with the routers set and an answer rule (MTU 1300) for each fake net.
fn responder() -> Responder {
    let mut r = Responder::load(None).expect("loading the XDP object (run as root)");
    r.set_routers(ROUTER4, ROUTER6).unwrap();
    r.set_rule("198.51.100.0/24".parse().unwrap(), RuleSpec::answer(1300))
        .unwrap();
    r.set_rule("2001:db8:1::/64".parse().unwrap(), RuleSpec::answer(1300))
        .unwrap();
    r
}

/// REMOTE's TCP data segment toward `dst`, IP length `ip_len`.
fn segment(dst: IpAddr, ip_len: usize) -> Vec<u8> {
    let src: IpAddr = if dst.is_ipv4() {
        REMOTE4.into()
    } else {
        REMOTE6.into()
    };
    data_segment(src, dst, ip_len).unwrap()
}

fn run(r: &Responder, frame: &[u8]) -> TestOutcome {
    r.test_run(PROG_RESPONDER, frame, 1).unwrap()
}

fn counter(r: &Responder, c: Counter) -> u64 {
    r.counters().unwrap()[c as usize]
}

/// Recomputes the IPv4 header checksum after a test edited the header.
fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    frame[l3 + 10] = 0;
    frame[l3 + 11] = 0;
    let ihl = (frame[l3] & 0x0f) as usize * 4;
    let mut sum: u32 = 0;
    for i in (0..ihl).step_by(2) {
        sum += u16::from_be_bytes([frame[l3 + i], frame[l3 + i + 1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn ipv4_df_over_mtu_becomes_frag_needed_quoting_576_bytes() {
    let r = responder();
    let frame = segment(FAKE4.into(), 1500);
    let out = run(&r, &frame);
    assert_eq!(out.action, XDP_TX);
    let icmp = parse_icmp_error(&out.frame).unwrap();
    assert_eq!((icmp.icmp_type, icmp.code, icmp.mtu), (3, 4, 1300));
    assert_eq!(icmp.src, IpAddr::V4(ROUTER4));
    assert_eq!(icmp.dst, IpAddr::V4(REMOTE4));
    assert_eq!((icmp.src_mac, icmp.dst_mac), (LOCAL_MAC, REMOTE_MAC));
    // RFC 1812: the whole error fits 576 bytes: 20 + 8 + 548 quoted.
    assert_eq!(icmp.ip_total_len, 576);
    assert_eq!(icmp.quote, frame[L2_HLEN..L2_HLEN + 548]);
    assert!(icmp.ip_checksum_ok && icmp.icmp_checksum_ok);
    assert_eq!(out.frame.len(), L2_HLEN + 576);
    assert_eq!(counter(&r, Counter::Answered), 1);
}

#[test]
fn ipv4_small_packet_is_quoted_whole() {
    let r = responder();
    let mut rules = r;
    rules
        .set_rule("198.51.100.0/24".parse().unwrap(), RuleSpec::answer(300))
        .unwrap();
    let frame = segment(FAKE4.into(), 400);
    let out = run(&rules, &frame);
    assert_eq!(out.action, XDP_TX);
    let icmp = parse_icmp_error(&out.frame).unwrap();
    assert_eq!(icmp.mtu, 300);
    assert_eq!(icmp.ip_total_len, 28 + 400);
    assert_eq!(icmp.quote, frame[L2_HLEN..]);
    assert!(icmp.ip_checksum_ok && icmp.icmp_checksum_ok);
}

#[test]
fn ipv4_without_df_is_not_answered() {
    let r = responder();
    let mut frame = segment(FAKE4.into(), 1500);
    frame[L2_HLEN + 6] &= !0x40;
    fix_ipv4_checksum(&mut frame, L2_HLEN);
    let out = run(&r, &frame);
    assert_eq!(
        out.action, XDP_DROP,
        "a router fragments it; the fake host's traffic is dropped"
    );
    assert_eq!(out.frame, frame, "frame must be untouched");
    assert_eq!(counter(&r, Counter::NotDf), 1);
    assert_eq!(counter(&r, Counter::Answered), 0);
}

#[test]
fn ipv6_over_mtu_becomes_packet_too_big_within_1280() {
    let r = responder();
    let frame = segment(FAKE6.into(), 1500);
    let out = run(&r, &frame);
    assert_eq!(out.action, XDP_TX);
    let icmp = parse_icmp_error(&out.frame).unwrap();
    assert_eq!((icmp.icmp_type, icmp.code, icmp.mtu), (2, 0, 1300));
    assert_eq!(icmp.src, IpAddr::V6(ROUTER6));
    assert_eq!(icmp.dst, IpAddr::V6(REMOTE6));
    // RFC 4443: the whole error fits the minimum MTU: 40 + 8 + 1232 quoted.
    assert_eq!(icmp.ip_total_len, 1280);
    assert_eq!(icmp.quote, frame[L2_HLEN..L2_HLEN + 1232]);
    assert!(icmp.icmp_checksum_ok);
}

#[test]
fn odd_lengths_get_correct_checksums() {
    let mut r = responder();
    for len in [1301, 1302, 1303, 1401, 1499] {
        let frame = segment(FAKE6.into(), len);
        let out = run(&r, &frame);
        assert_eq!(out.action, XDP_TX, "len {len}");
        let icmp = parse_icmp_error(&out.frame).unwrap();
        assert!(
            icmp.icmp_checksum_ok,
            "ICMPv6 checksum for a {len}-byte packet"
        );
    }
    // Every quote length up to the largest, so that every block size of the checksum (its
    // length's binary digits) and the odd 2 and 1 bytes at the end are covered.
    r.set_rule("2001:db8:1::/64".parse().unwrap(), RuleSpec::answer(1000))
        .unwrap();
    for len in 1001..=1300 {
        let frame = segment(FAKE6.into(), len);
        let out = run(&r, &frame);
        assert_eq!(out.action, XDP_TX, "len {len}");
        let icmp = parse_icmp_error(&out.frame).unwrap();
        assert!(icmp.icmp_checksum_ok, "ICMPv6 checksum for {len}");
    }
    r.set_rule("198.51.100.0/24".parse().unwrap(), RuleSpec::answer(68))
        .unwrap();
    for len in 69..=600 {
        let frame = segment(FAKE4.into(), len);
        let out = run(&r, &frame);
        assert_eq!(out.action, XDP_TX, "len {len}");
        let icmp = parse_icmp_error(&out.frame).unwrap();
        assert!(
            icmp.ip_checksum_ok && icmp.icmp_checksum_ok,
            "checksums for {len}"
        );
    }
}

#[tokio::test]
async fn under_mtu_is_reported_and_dropped_or_passed() {
    let mut r = responder();
    let mut events = r.take_events().unwrap();
    let frame = segment(FAKE4.into(), 1000);
    let out = run(&r, &frame);
    assert_eq!(out.action, XDP_DROP);
    assert_eq!(out.frame, frame);
    let mut got = Vec::new();
    events.drain(&mut got);
    assert_eq!(got.len(), 1);
    let ev = PacketEvent::from(&got[0]);
    assert_eq!(ev.action, Some(EventAction::Observed));
    assert_eq!((ev.src, ev.dst), (IpAddr::V4(REMOTE4), IpAddr::V4(FAKE4)));
    assert_eq!((ev.sport, ev.dport, ev.seq, ev.ack), (19, 40000, 1000, 1));
    assert_eq!((ev.ip_len, ev.l4_len, ev.rule_mtu), (1000, 960, 1300));
    assert!(ev.df && ev.is_tcp() && ev.fragment.is_none());
    assert_eq!(ev.head, frame[..128]);

    let mut spec = RuleSpec::answer(1300);
    spec.pass = true;
    r.set_rule("198.51.100.0/24".parse().unwrap(), spec)
        .unwrap();
    assert_eq!(run(&r, &frame).action, XDP_PASS);
}

#[test]
fn other_destinations_pass_untouched() {
    let r = responder();
    for dst in [
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 5)),
    ] {
        let frame = segment(dst, 1500);
        let out = run(&r, &frame);
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(out.frame, frame);
    }
    // ARP and other ethertypes.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&REMOTE_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    assert_eq!(run(&r, &arp).action, XDP_PASS);
    assert_eq!(counter(&r, Counter::Seen), 0);
    assert_eq!(counter(&r, Counter::Passed), 3);
}

#[tokio::test]
async fn blackhole_drops_without_icmp() {
    let mut r = responder();
    let mut events = r.take_events().unwrap();
    let spec = RuleSpec {
        action: RuleAction::Blackhole,
        ..RuleSpec::answer(1300)
    };
    r.set_rule("198.51.100.0/24".parse().unwrap(), spec)
        .unwrap();
    let frame = segment(FAKE4.into(), 1500);
    let out = run(&r, &frame);
    assert_eq!(out.action, XDP_DROP);
    assert_eq!(out.frame, frame);
    let mut got = Vec::new();
    events.drain(&mut got);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].action, EventAction::Blackholed as u8);
    assert_eq!(counter(&r, Counter::Blackholed), 1);
}

#[test]
fn observe_rule_never_answers() {
    let mut r = responder();
    r.set_rule("198.51.100.0/24".parse().unwrap(), RuleSpec::observe())
        .unwrap();
    let out = run(&r, &segment(FAKE4.into(), 1500));
    assert_eq!(out.action, XDP_DROP);
    assert_eq!(counter(&r, Counter::Answered), 0);
}

#[test]
fn budget_limits_the_icmp_errors() {
    let mut r = responder();
    let prefix: IpNet = "198.51.100.22/32".parse().unwrap();
    r.set_rule(prefix, RuleSpec::answer(1300).with_budget(2))
        .unwrap();
    let frame = segment(FAKE4.into(), 1500);
    let actions: Vec<u32> = (0..4).map(|_| run(&r, &frame).action).collect();
    assert_eq!(actions, [XDP_TX, XDP_TX, XDP_DROP, XDP_DROP]);
    assert_eq!(counter(&r, Counter::BudgetExhausted), 2);
    // The most specific rule wins; a rewrite restarts the count.
    r.set_rule(prefix, RuleSpec::answer(1300).with_budget(1))
        .unwrap();
    assert_eq!(run(&r, &frame).action, XDP_TX);
    assert_eq!(run(&r, &frame).action, XDP_DROP);
}

#[test]
fn limit_answers_smaller_packets_with_the_announced_mtu() {
    let mut r = responder();
    r.set_rule(
        "2001:db8:1::/64".parse().unwrap(),
        RuleSpec::answer(1272).with_limit(1200),
    )
    .unwrap();
    let frame = udp_frame(
        &L2 {
            src: REMOTE_MAC,
            dst: LOCAL_MAC,
        },
        SocketAddr::new(REMOTE6.into(), 7),
        SocketAddr::new(FAKE6.into(), 40000),
        &[b'e'; 1200],
    )
    .unwrap();
    let out = run(&r, &frame);
    assert_eq!(out.action, XDP_TX);
    let icmp = parse_icmp_error(&out.frame).unwrap();
    // The 1248-byte reply, quoted up to the 1280-byte limit of an ICMPv6 error.
    assert_eq!((icmp.mtu, icmp.ip_total_len), (1272, 1280));
}

#[test]
fn vlan_tags_are_kept_in_the_answer() {
    let r = responder();
    let plain = segment(FAKE4.into(), 1500);
    for tags in [vec![(0x8100u16, 10u16)], vec![(0x88a8, 20), (0x8100, 30)]] {
        let mut frame = plain[..12].to_vec();
        for (tpid, vid) in &tags {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&vid.to_be_bytes());
        }
        frame.extend_from_slice(&plain[12..]);
        let out = run(&r, &frame);
        assert_eq!(out.action, XDP_TX, "{tags:?}");
        let icmp = parse_icmp_error(&out.frame).unwrap();
        let vids: Vec<u16> = tags.iter().map(|t| t.1).collect();
        assert_eq!(icmp.vlan_ids, vids);
        assert_eq!(icmp.mtu, 1300);
        assert!(icmp.ip_checksum_ok && icmp.icmp_checksum_ok);
    }
}

/// Inserts an IPv6 extension header after the fixed header and fixes the chain and length.
fn with_ext_header(frame: &[u8], kind: u8, body: &[u8]) -> Vec<u8> {
    let l3 = L2_HLEN;
    let mut out = frame[..l3 + 40].to_vec();
    let next = out[l3 + 6];
    out[l3 + 6] = kind;
    let plen = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]) + 1 + body.len() as u16;
    out[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
    out.push(next);
    out.extend_from_slice(body);
    out.extend_from_slice(&frame[l3 + 40..]);
    out
}

#[tokio::test]
async fn ipv6_extension_headers_and_fragments_are_parsed() {
    let mut r = responder();
    let mut events = r.take_events().unwrap();
    let frame = segment(FAKE6.into(), 1000);
    // Hop-by-hop with PadN, then the TCP segment.
    let hbh = with_ext_header(&frame, 0, &[0, 1, 4, 0, 0, 0, 0]);
    assert_eq!(run(&r, &hbh).action, XDP_DROP);
    // An atomic fragment: offset 0, M=0, id 0x1234.
    let atomic = with_ext_header(&frame, 44, &[0, 0, 0, 0, 0, 0x12, 0x34]);
    assert_eq!(run(&r, &atomic).action, XDP_DROP);
    // A non-first fragment: offset 1448, M=1; no upper-layer header.
    let later = with_ext_header(&frame, 44, &[0, 0x05, 0xa9, 0, 0, 0, 7]);
    assert_eq!(run(&r, &later).action, XDP_DROP);
    let mut got = Vec::new();
    events.drain(&mut got);
    let evs: Vec<PacketEvent> = got.iter().map(PacketEvent::from).collect();
    assert_eq!(evs.len(), 3);
    assert!(
        evs[0].is_tcp() && evs[0].fragment.is_none() && evs[0].ip_len == 1008,
        "{:?}",
        evs[0]
    );
    let f = evs[1].fragment.unwrap();
    assert!(f.is_atomic() && f.id == 0x1234 && evs[1].is_tcp());
    let f = evs[2].fragment.unwrap();
    assert_eq!(
        (f.offset, f.more, f.id, evs[2].has_l4),
        (1448, true, 7, false)
    );
}

#[test]
fn icmp_errors_and_later_fragments_are_never_answered() {
    let r = responder();
    // A non-first IPv6 fragment over the MTU.
    let frame = segment(FAKE6.into(), 1500);
    let later = with_ext_header(&frame, 44, &[0, 0x05, 0xa9, 0, 0, 0, 7]);
    assert_eq!(run(&r, &later).action, XDP_DROP);
    // An ICMPv6 error (type 1) over the MTU toward the fake host.
    let mut icmp6 = frame.clone();
    icmp6[L2_HLEN + 6] = 58;
    icmp6[L2_HLEN + 40] = 1;
    assert_eq!(run(&r, &icmp6).action, XDP_DROP);
    assert_eq!(counter(&r, Counter::NotAnswerable), 2);
    assert_eq!(counter(&r, Counter::Answered), 0);
}

#[test]
fn truncated_and_malformed_frames_are_passed_and_counted() {
    let r = responder();
    let frame = segment(FAKE4.into(), 1500);
    // Every cut inside the IP header (the test harness needs 14 bytes at least).
    for cut in L2_HLEN..(L2_HLEN + 20) {
        let out = run(&r, &frame[..cut]);
        assert_eq!(out.action, XDP_PASS, "cut at {cut}");
    }
    // IPv4 header length below 5 words.
    let mut bad = frame.clone();
    bad[L2_HLEN] = 0x44;
    assert_eq!(run(&r, &bad).action, XDP_PASS);
    // A version field that lies.
    let mut bad = frame.clone();
    bad[L2_HLEN] = 0x65;
    assert_eq!(run(&r, &bad).action, XDP_PASS);
    // IPv6 cut inside an extension header chain.
    let v6 = with_ext_header(&segment(FAKE6.into(), 1500), 0, &[0, 1, 4, 0, 0, 0, 0]);
    assert_eq!(run(&r, &v6[..L2_HLEN + 41]).action, XDP_PASS);
    // 20 cuts, two bad IPv4 headers, one cut IPv6 chain.
    assert_eq!(counter(&r, Counter::ParseErrors), 23);
    assert_eq!(counter(&r, Counter::Seen), 0);
    assert_eq!(counter(&r, Counter::Answered), 0);
}

#[tokio::test]
async fn ipv4_options_are_skipped_and_quoted() {
    let mut r = responder();
    let mut events = r.take_events().unwrap();
    let plain = segment(FAKE4.into(), 1496);
    // Four NOP options: header length 6 words, total length + 4.
    let mut frame = plain[..L2_HLEN + 20].to_vec();
    frame.extend_from_slice(&[1, 1, 1, 1]);
    frame.extend_from_slice(&plain[L2_HLEN + 20..]);
    frame[L2_HLEN] = 0x46;
    let total = u16::from_be_bytes([frame[L2_HLEN + 2], frame[L2_HLEN + 3]]) + 4;
    frame[L2_HLEN + 2..L2_HLEN + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut frame, L2_HLEN);

    let out = run(&r, &frame);
    assert_eq!(out.action, XDP_TX);
    let icmp = parse_icmp_error(&out.frame).unwrap();
    assert_eq!((icmp.mtu, icmp.ip_total_len), (1300, 576));
    assert_eq!(icmp.quote, frame[L2_HLEN..L2_HLEN + 548]);
    assert!(icmp.ip_checksum_ok && icmp.icmp_checksum_ok);
    let mut got = Vec::new();
    events.drain(&mut got);
    let ev = PacketEvent::from(&got[0]);
    assert_eq!(
        (ev.ip_len, ev.sport, ev.dport, ev.seq),
        (1500, 19, 40000, 1000)
    );
    assert_eq!(ev.l4_len, 1500 - 24 - 20);
}

// ---- Hostile frames: what a router must never answer (RFC 1812 4.3.2.7, RFC 4443 2.4(e)) ----

/// Runs `frame` (too big for its rule, which drops) and checks that it was neither answered nor
/// changed, and that the one event it yields says why: not answerable.
fn assert_not_answered(r: &Responder, events: &mut EventStream, frame: &[u8], what: &str) {
    let out = run(r, frame);
    assert_eq!(out.action, XDP_DROP, "{what}: XDP action");
    assert!(out.frame == frame, "{what}: the frame was changed");
    let mut got = Vec::new();
    events.drain(&mut got);
    assert_eq!(got.len(), 1, "{what}: events");
    assert_eq!(
        EventAction::from_u8(got[0].action),
        Some(EventAction::NotAnswerable),
        "{what}: event action"
    );
}

/// Runs `frame` and checks that it was answered with a well-formed ICMP error and one event
/// that says so.
fn assert_answered(
    r: &Responder,
    events: &mut EventStream,
    frame: &[u8],
    what: &str,
) -> (IcmpError, PacketEvent) {
    let out = run(r, frame);
    assert_eq!(out.action, XDP_TX, "{what}: XDP action");
    let icmp = parse_icmp_error(&out.frame).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    assert!(icmp.icmp_checksum_ok, "{what}: ICMP checksum");
    assert!(
        icmp.family == 6 || icmp.ip_checksum_ok,
        "{what}: IPv4 checksum"
    );
    let mut got = Vec::new();
    events.drain(&mut got);
    assert_eq!(got.len(), 1, "{what}: events");
    let ev = PacketEvent::from(&got[0]);
    assert_eq!(
        ev.action,
        Some(EventAction::Answered),
        "{what}: event action"
    );
    // The event shows the packet as received, not the answer built over it.
    assert_eq!(ev.head, frame[..frame.len().min(128)], "{what}: event head");
    (icmp, ev)
}

/// The headers the extension chains are made of, in turn: kind and the bytes after the
/// next-header byte.
const EXT_HEADERS: [(u8, &[u8]); 4] = [
    // Destination options with a PadN.
    (60, &[0, 1, 4, 0, 0, 0, 0]),
    // Routing, segments left 0.
    (43, &[0, 0, 0, 0, 0, 0, 0]),
    // Authentication header, 16 bytes (length field 2: (2 + 2) * 4).
    (51, &[2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
    // Hop-by-hop (out of place after the first; a walk must not care).
    (0, &[0, 1, 4, 0, 0, 0, 0]),
];

/// `frame` with `count` extension headers between the IPv6 header and what followed it.
fn behind_ext_headers(frame: &[u8], count: usize) -> Vec<u8> {
    let mut out = frame.to_vec();
    for i in 0..count {
        let (kind, body) = EXT_HEADERS[i % EXT_HEADERS.len()];
        out = with_ext_header(&out, kind, body);
    }
    out
}

/// How many extension headers the program walks to find the upper layer.
const EXT_HEADERS_WALKED: usize = 8;

#[tokio::test]
async fn icmpv6_errors_and_later_fragments_behind_any_extension_chain_are_not_answered() {
    let mut r = responder();
    let mut events = r.take_events().unwrap();
    let tcp = segment(FAKE6.into(), 1500);
    let mut sent = 0;
    for count in 0..=EXT_HEADERS_WALKED + 2 {
        for icmp_type in [1u8, 2, 3, 4, 127] {
            let mut error = tcp.clone();
            error[L2_HLEN + 6] = 58;
            error[L2_HLEN + 40] = icmp_type;
            let frame = behind_ext_headers(&error, count);
            let what = format!("ICMPv6 type {icmp_type} behind {count} extension headers");
            assert_not_answered(&r, &mut events, &frame, &what);
            sent += 1;
        }
        // A non-first fragment (offset 1448, M=1) behind `count` more headers.
        let later = with_ext_header(&tcp, 44, &[0, 0x05, 0xa9, 0, 0, 0, 7]);
        let frame = behind_ext_headers(&later, count);
        let what = format!("a later fragment behind {count} extension headers");
        assert_not_answered(&r, &mut events, &frame, &what);
        sent += 1;
    }
    assert_eq!(counter(&r, Counter::NotAnswerable), sent);
    assert_eq!(counter(&r, Counter::Seen), sent);
    assert_eq!(counter(&r, Counter::Answered), 0);
}

#[tokio::test]
async fn tcp_behind_a_walkable_extension_chain_is_answered_and_behind_a_longer_one_is_not() {
    let mut r = responder();
    let mut events = r.take_events().unwrap();
    let tcp = segment(FAKE6.into(), 1500);
    for count in 0..=EXT_HEADERS_WALKED + 4 {
        let frame = behind_ext_headers(&tcp, count);
        let what = format!("TCP behind {count} extension headers");
        if count <= EXT_HEADERS_WALKED {
            let (icmp, ev) = assert_answered(&r, &mut events, &frame, &what);
            assert_eq!(icmp.quote, frame[L2_HLEN..L2_HLEN + 1232], "{what}");
            assert!(
                ev.is_tcp() && (ev.sport, ev.seq) == (19, 1000),
                "{what}: {ev:?}"
            );
        } else {
            assert_not_answered(&r, &mut events, &frame, &what);
        }
    }
    let walked = EXT_HEADERS_WALKED as u64 + 1;
    assert_eq!(counter(&r, Counter::Answered), walked);
    assert_eq!(counter(&r, Counter::NotAnswerable), 4);
}

/// Sources that do not name one host (RFC 1812 4.3.2.7, RFC 4443 2.4(e)): 0/8, 127/8,
/// 224/4 and 240/4 (with 255.255.255.255); ::, ::1 and ff00::/8.
fn forbidden_sources() -> Vec<IpAddr> {
    let mut out = Vec::new();
    for first in [0u8, 127].into_iter().chain(224..=255) {
        out.push(Ipv4Addr::new(first, 0, 0, 0).into());
        out.push(Ipv4Addr::new(first, 255, 255, 255).into());
        out.push(Ipv4Addr::new(first, 1, 2, 3).into());
    }
    out.push(Ipv6Addr::UNSPECIFIED.into());
    out.push(Ipv6Addr::LOCALHOST.into());
    for second in (0..=255u16).step_by(17) {
        out.push(Ipv6Addr::new(0xff00 | second, 0, 0, 0, 0, 0, 0, 1).into());
    }
    out.push("ff02::1".parse::<Ipv6Addr>().unwrap().into());
    out.push("ff05::1:3".parse::<Ipv6Addr>().unwrap().into());
    out
}

/// Their neighbours, which name one host and must be answered.
fn allowed_sources() -> Vec<IpAddr> {
    [
        "1.0.0.0",
        "1.2.3.4",
        "126.255.255.255",
        "128.0.0.0",
        "192.0.2.2",
        "223.255.255.255",
        "::2",
        "::ffff:192.0.2.2",
        "2001:db8::2",
        "fe80::1",
        "fd00::1",
        "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect()
}

/// Group (multicast) and broadcast Ethernet addresses: the lowest bit of the first byte is set.
const GROUP_MACS: [[u8; 6]; 5] = [
    [0xff; 6],
    [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
    [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00],
    [0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
];

#[tokio::test]
async fn no_icmp_toward_sources_or_frames_a_router_must_not_answer() {
    let mut r = responder();
    let mut events = r.take_events().unwrap();
    let mut refused = 0;
    for src in forbidden_sources() {
        let dst: IpAddr = if src.is_ipv4() {
            FAKE4.into()
        } else {
            FAKE6.into()
        };
        let frame = data_segment(src, dst, 1500).unwrap();
        assert_not_answered(&r, &mut events, &frame, &format!("source {src}"));
        refused += 1;
    }
    for src in allowed_sources() {
        let dst: IpAddr = if src.is_ipv4() {
            FAKE4.into()
        } else {
            FAKE6.into()
        };
        let frame = data_segment(src, dst, 1500).unwrap();
        let (icmp, _) = assert_answered(&r, &mut events, &frame, &format!("source {src}"));
        assert_eq!(icmp.dst, src);
    }
    // Frames sent to a group or broadcast MAC, or from a group MAC: the answer would go out
    // from that address.
    for dst in [IpAddr::from(FAKE4), IpAddr::from(FAKE6)] {
        let plain = segment(dst, 1500);
        for mac in GROUP_MACS {
            let mut to_group = plain.clone();
            to_group[..6].copy_from_slice(&mac);
            assert_not_answered(&r, &mut events, &to_group, &format!("to MAC {mac:02x?}"));
            let mut from_group = plain.clone();
            from_group[6..12].copy_from_slice(&mac);
            assert_not_answered(
                &r,
                &mut events,
                &from_group,
                &format!("from MAC {mac:02x?}"),
            );
            refused += 2;
        }
        // A locally administered unicast MAC is an ordinary neighbour.
        let mut local = plain.clone();
        local[6] = 0x02;
        assert_answered(&r, &mut events, &local, "from a locally administered MAC");
    }
    // IPv4 multicast and broadcast destinations (RFC 1812 4.3.2.7), should a rule cover them.
    r.set_rule("224.0.0.0/3".parse().unwrap(), RuleSpec::answer(1300))
        .unwrap();
    for dst in [
        "224.0.0.1",
        "239.255.255.255",
        "240.0.0.1",
        "255.255.255.255",
    ] {
        let dst: Ipv4Addr = dst.parse().unwrap();
        let frame = data_segment(REMOTE4.into(), dst.into(), 1500).unwrap();
        assert_not_answered(&r, &mut events, &frame, &format!("destination {dst}"));
        refused += 1;
    }
    let allowed = allowed_sources().len() as u64 + 2;
    assert_eq!(counter(&r, Counter::NotAnswerable), refused);
    assert_eq!(counter(&r, Counter::Answered), allowed);
    assert_eq!(counter(&r, Counter::Seen), refused + allowed);
}

/// A copy of `frame` with the IPv4 total length or the IPv6 payload length set to `claimed`.
fn claiming(frame: &[u8], claimed: u16) -> Vec<u8> {
    let mut out = frame.to_vec();
    if out[L2_HLEN] >> 4 == 4 {
        out[L2_HLEN + 2..L2_HLEN + 4].copy_from_slice(&claimed.to_be_bytes());
        fix_ipv4_checksum(&mut out, L2_HLEN);
    } else {
        out[L2_HLEN + 4..L2_HLEN + 6].copy_from_slice(&(claimed - 40).to_be_bytes());
    }
    out
}

#[tokio::test]
async fn short_frames_lying_lengths_and_bad_ipv4_checksums_are_not_answered() {
    let mut r = responder();
    let mut events = r.take_events().unwrap();
    for prefix in ["198.51.100.0/24", "2001:db8:1::/64"] {
        r.set_rule(
            prefix.parse().unwrap(),
            RuleSpec::answer(1300).with_budget(1),
        )
        .unwrap();
    }
    let mut refused = 0;
    for (dst, header) in [(IpAddr::from(FAKE4), 20), (IpAddr::from(FAKE6), 40)] {
        let frame = segment(dst, 1500);
        // Frames cut after the IP header: the IP length (1500) claims more than is there. The
        // first is the 54-byte frame of an IPv4 TCP header alone.
        for keep in [
            header + 20,
            header,
            header + 1,
            100,
            548,
            576,
            1000,
            1279,
            1280,
            1499,
        ] {
            let cut = &frame[..L2_HLEN + keep];
            assert_not_answered(
                &r,
                &mut events,
                cut,
                &format!("{dst}: {keep} of 1500 bytes"),
            );
            refused += 1;
        }
        // Whole frames whose IP length claims more than they hold.
        for claimed in [1501, 1502, 1600, 9000, 65535] {
            let lying = claiming(&frame, claimed);
            let what = format!("{dst}: 1500 bytes claiming {claimed}");
            assert_not_answered(&r, &mut events, &lying, &what);
            refused += 1;
        }
    }
    // IPv4 headers whose checksum does not match: the field itself or another field changed.
    let frame = segment(FAKE4.into(), 1500);
    let mut bad = Vec::new();
    for flip in [0x0001u16, 0x0100, 0x8000, 0xffff, 0x5555] {
        let mut f = frame.clone();
        let sum = u16::from_be_bytes([f[L2_HLEN + 10], f[L2_HLEN + 11]]) ^ flip;
        f[L2_HLEN + 10..L2_HLEN + 12].copy_from_slice(&sum.to_be_bytes());
        bad.push((format!("checksum xor {flip:#06x}"), f));
    }
    for (field, at) in [
        ("tos", 1),
        ("id", 5),
        ("ttl", 8),
        ("source", 15),
        ("destination", 19),
    ] {
        let mut f = frame.clone();
        f[L2_HLEN + at] ^= 0x01;
        bad.push((format!("{field} changed after the checksum"), f));
    }
    // With options: a header of 24 bytes whose option byte changed.
    let mut opts = frame[..L2_HLEN + 20].to_vec();
    opts.extend_from_slice(&[1, 1, 1, 1]);
    opts.extend_from_slice(&frame[L2_HLEN + 20..L2_HLEN + 1496]);
    opts[L2_HLEN] = 0x46;
    fix_ipv4_checksum(&mut opts, L2_HLEN);
    opts[L2_HLEN + 23] = 0;
    bad.push(("an option changed after the checksum".into(), opts));
    for (what, f) in &bad {
        assert_not_answered(&r, &mut events, f, what);
        refused += 1;
    }
    assert_eq!(counter(&r, Counter::NotAnswerable), refused);
    assert_eq!(counter(&r, Counter::Answered), 0);
    // None of them spent the budget: the genuine packets are answered, once each.
    for dst in [IpAddr::from(FAKE4), IpAddr::from(FAKE6)] {
        let frame = segment(dst, 1500);
        assert_answered(&r, &mut events, &frame, &format!("{dst} after the lies"));
        assert_eq!(run(&r, &frame).action, XDP_DROP, "{dst}: budget of 1");
        let mut got = Vec::new();
        events.drain(&mut got);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].action, EventAction::BudgetExhausted as u8);
    }
    assert_eq!(counter(&r, Counter::Answered), 2);
    assert_eq!(counter(&r, Counter::BudgetExhausted), 2);
}

#[test]
fn answers_quote_only_what_the_packet_holds() {
    let mut r = responder();
    r.set_rule("198.51.100.0/24".parse().unwrap(), RuleSpec::answer(68))
        .unwrap();
    // Frames longer than their IP packet (Ethernet padding, trailers): the extra bytes are not
    // the packet's and are never quoted.
    for (dst, lengths) in [
        (
            IpAddr::from(FAKE4),
            (69..=700).step_by(37).collect::<Vec<_>>(),
        ),
        (IpAddr::from(FAKE6), (1301..=1500).step_by(19).collect()),
    ] {
        let (headers, cap) = if dst.is_ipv4() { (28, 576) } else { (48, 1280) };
        for ip_len in lengths {
            for trailer in [0usize, 1, 6, 46] {
                let mut frame = segment(dst, ip_len);
                frame.extend(std::iter::repeat_n(0xee, trailer));
                let out = run(&r, &frame);
                let what = format!("{dst}: {ip_len} bytes + {trailer} trailer");
                assert_eq!(out.action, XDP_TX, "{what}");
                let icmp = parse_icmp_error(&out.frame).unwrap();
                let quoted = ip_len.min(cap - headers);
                assert_eq!(icmp.ip_total_len, headers + quoted, "{what}");
                assert_eq!(icmp.quote, frame[L2_HLEN..L2_HLEN + quoted], "{what}");
                assert_eq!(out.frame.len(), L2_HLEN + headers + quoted, "{what}");
                assert!(icmp.icmp_checksum_ok, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn an_answer_that_cannot_be_built_is_reported_as_failed_and_spends_no_budget() {
    // No router addresses: there is no source for the ICMP error.
    let mut r = Responder::load(None).unwrap();
    let mut events = r.take_events().unwrap();
    for prefix in ["198.51.100.0/24", "2001:db8:1::/64"] {
        r.set_rule(
            prefix.parse().unwrap(),
            RuleSpec::answer(1300).with_budget(1),
        )
        .unwrap();
    }
    let frames = [segment(FAKE4.into(), 1500), segment(FAKE6.into(), 1500)];
    for frame in &frames {
        let out = run(&r, frame);
        assert_eq!(out.action, XDP_DROP);
        assert!(out.frame == *frame, "the frame was changed");
        let mut got = Vec::new();
        events.drain(&mut got);
        assert_eq!(got.len(), 1);
        assert_eq!(
            EventAction::from_u8(got[0].action),
            Some(EventAction::AnswerFailed)
        );
    }
    assert_eq!(counter(&r, Counter::AnswerFailed), 2);
    assert_eq!(counter(&r, Counter::Answered), 0);
    assert!(r.rules().iter().all(|(_, rule)| rule.sent == 0));
    // With the routers set, the budget of 1 is still there to spend.
    r.set_routers(ROUTER4, ROUTER6).unwrap();
    for frame in &frames {
        assert_answered(&r, &mut events, frame, "after setting the routers");
    }
    assert!(r.rules().iter().all(|(_, rule)| rule.sent == 1));
}

#[test]
fn every_rule_counts_its_own_icmp_errors() {
    let mut r = responder();
    // Four hosts, each with its own rule and a budget of 2, plus the two /24 and /64 rules.
    let hosts: Vec<IpAddr> = (1..=4)
        .flat_map(|i| {
            [
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i as u16)),
            ]
        })
        .collect();
    for host in &hosts {
        r.set_rule(IpNet::from(*host), RuleSpec::answer(1300).with_budget(2))
            .unwrap();
    }
    let sent = |r: &Responder, prefix: IpNet| {
        r.rules()
            .into_iter()
            .find(|(p, _)| *p == prefix)
            .map(|(_, rule)| rule.sent)
            .unwrap()
    };
    let mut slots: Vec<u32> = r.rules().iter().map(|(_, rule)| rule.slot).collect();
    slots.sort();
    assert_eq!(slots, (0..10).collect::<Vec<u32>>(), "one slot per rule");
    // The hosts get 1, 1, 2, 2, 3, 3, 4 and 4 packets: each spends its own budget only.
    let packets = |i: usize| i / 2 + 1;
    for (i, host) in hosts.iter().enumerate() {
        let src: IpAddr = if host.is_ipv4() {
            REMOTE4.into()
        } else {
            REMOTE6.into()
        };
        let frame = data_segment(src, *host, 1500).unwrap();
        for n in 0..packets(i) {
            let want = if n < 2 { XDP_TX } else { XDP_DROP };
            assert_eq!(run(&r, &frame).action, want, "{host} packet {n}");
        }
    }
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(
            sent(&r, IpNet::from(*host)),
            packets(i).min(2) as u64,
            "{host}"
        );
    }
    let refused: usize = (0..hosts.len()).map(|i| packets(i).saturating_sub(2)).sum();
    assert_eq!(counter(&r, Counter::BudgetExhausted), refused as u64);
    assert_eq!(sent(&r, "198.51.100.0/24".parse().unwrap()), 0);
    // A rewritten rule keeps its slot and starts again at 0; a removed rule's slot is reused,
    // from 0.
    let first = IpNet::from(hosts[6]);
    r.set_rule(first, RuleSpec::answer(1300).with_budget(2))
        .unwrap();
    assert_eq!(sent(&r, first), 0);
    let gone = IpNet::from(hosts[7]);
    let slot = r.rules().iter().find(|(p, _)| *p == gone).unwrap().1.slot;
    r.remove_rule(gone).unwrap();
    let new: IpNet = "198.51.100.99/32".parse().unwrap();
    r.set_rule(new, RuleSpec::answer(1300)).unwrap();
    let (_, rule) = r.rules().into_iter().find(|(p, _)| *p == new).unwrap();
    assert_eq!((rule.slot, rule.sent), (slot, 0));
}

/// A bpffs mounted for one test, removed with everything pinned in it when dropped.
struct Bpffs(std::path::PathBuf);

impl Bpffs {
    fn mount(name: &str) -> Bpffs {
        use nix::mount::{mount, MsFlags};
        let dir = std::env::temp_dir().join(format!("pmtu-xdp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bpffs = Bpffs(dir);
        mount(
            Some("bpf"),
            &bpffs.0,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .expect("mounting a bpffs (run as root)");
        bpffs
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        use nix::mount::{umount2, MntFlags};
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn rules_added_through_pinned_maps_get_slots_of_their_own() {
    let pins = Bpffs::mount("slots");
    // The lab's way: one process loads and pins, installs the fake nets' rules...
    let mut lab = Responder::load(Some(&pins.0)).unwrap();
    lab.set_routers(ROUTER4, ROUTER6).unwrap();
    lab.set_rule("198.51.100.0/24".parse().unwrap(), RuleSpec::observe())
        .unwrap();
    lab.set_rule("2001:db8:1::/64".parse().unwrap(), RuleSpec::observe())
        .unwrap();
    // ...and another opens the pins and adds a host's rule, which must not share a slot.
    let mut second = Responder::open_pinned(&pins.0).unwrap();
    let host = IpNet::from(IpAddr::V4(FAKE4));
    second
        .set_rule(host, RuleSpec::answer(1300).with_budget(1))
        .unwrap();
    let frame = segment(FAKE4.into(), 1500);
    assert_eq!(run(&lab, &frame).action, XDP_TX);
    assert_eq!(run(&lab, &frame).action, XDP_DROP, "budget of 1");
    let rules = second.rules();
    let mut slots: Vec<u32> = rules.iter().map(|(_, rule)| rule.slot).collect();
    slots.sort();
    assert_eq!(slots, [0, 1, 2]);
    for (prefix, rule) in rules {
        let want = if prefix == host { 1 } else { 0 };
        assert_eq!(rule.sent, want, "{prefix}");
    }
}
