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
    wire::{parse_icmp_error, udp_frame, L2},
    xdp::{
        events::PacketEvent,
        responder::{Responder, RuleSpec, TestOutcome, XDP_DROP, XDP_PASS, XDP_TX},
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
    r.set_rule("198.51.100.0/24".parse().unwrap(), RuleSpec::answer(68))
        .unwrap();
    for len in [69, 70, 71, 101, 577, 600] {
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
    assert!(counter(&r, Counter::ParseErrors) >= 3);
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
