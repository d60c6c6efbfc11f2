//! The pcap writer: sent frames, reported packets and the answers rebuilt from them, read back
//! with a pcap reader. No root needed.
use std::fs::File;

use pcap_file::{pcap::PcapReader, DataLink};
use pmtu::{
    lab::plan::{
        self, data_segment, FAKE_NET_ADDR as FAKE4, FAKE_NET_ADDR6 as FAKE6,
        REMOTE_ADDR as REMOTE4, REMOTE_ADDR6 as REMOTE6,
    },
    suite::capture::{Capture, MonoClock},
    wire::parse_icmp_error,
};
use pmtu_common::{Event, EventAction};

fn event_for(frame: &[u8], ip_len: u16, family: u8, src: [u8; 16]) -> Event {
    let mut head = [0u8; pmtu_common::EVENT_HEAD_BYTES];
    let n = frame.len().min(head.len());
    head[..n].copy_from_slice(&frame[..n]);
    Event {
        ts_ns: 1_000_000,
        src,
        dst: [0; 16],
        seq: 0,
        ack: 0,
        frag_id: 0,
        rule_mtu: 1300,
        ifindex: 1,
        ip_len,
        sport: 19,
        dport: 40000,
        l4_len: 0,
        frag_off: 0,
        head_len: n as u16,
        family,
        proto: 6,
        tcp_flags: 0x10,
        action: EventAction::Answered as u8,
        frag: 0,
        has_l4: 1,
        _pad: [0; 2],
        head,
    }
}

#[test]
fn writes_a_readable_pcap_with_the_answers() {
    let f4 = data_segment(REMOTE4.into(), FAKE4.into(), 1500).unwrap();
    let f6 = data_segment(REMOTE6.into(), FAKE6.into(), 1520).unwrap();
    let cap = Capture::new();
    cap.set_routers(plan::LOCAL_ADDR, plan::LOCAL_ADDR6);
    cap.sent(&f4);
    let mut src4 = [0u8; 16];
    src4[..4].copy_from_slice(&REMOTE4.octets());
    let src6 = REMOTE6;
    let clock = MonoClock::now();
    cap.event(&event_for(&f4, 1500, 4, src4), &clock);
    cap.event(&event_for(&f6, 1520, 6, src6.octets()), &clock);
    assert_eq!(cap.len(), 5);

    let dir = std::env::temp_dir().join(format!("pmtu-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.pcap");
    assert_eq!(cap.write(&path).unwrap(), 5);
    let mut reader = PcapReader::new(File::open(&path).unwrap()).unwrap();
    assert_eq!(reader.header().datalink, DataLink::ETHERNET);
    let mut packets = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        packets.push((p.orig_len, p.data.to_vec()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(packets.len(), 5);
    // The answers: truncated quotes (the event holds 128 bytes), real original lengths.
    let (_, a4) = packets.iter().find(|(l, _)| *l == 14 + 576).unwrap();
    assert_eq!(
        (a4[14 + 9], a4[34], a4[35]),
        (1, 3, 4),
        "IPv4 ICMP type 3 code 4"
    );
    assert_eq!(u16::from_be_bytes([a4[40], a4[41]]), 1300);
    assert_eq!(a4[0..6], plan::REMOTE_MAC, "sent back to REMOTE's MAC");
    assert_eq!(a4[30..34], REMOTE4.octets());
    let ip_ok = {
        let s: u32 = a4[14..34]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        (s & 0xffff) + (s >> 16) == 0xffff
    };
    assert!(ip_ok, "IPv4 header checksum");
    let (_, a6) = packets.iter().find(|(l, _)| *l == 14 + 1280).unwrap();
    assert_eq!((a6[14 + 6], a6[54]), (58, 2), "ICMPv6 Packet Too Big");
    assert_eq!(u32::from_be_bytes([a6[58], a6[59], a6[60], a6[61]]), 1300);
    assert_eq!(a6[38..54], src6.octets());
    // The reported packets keep their original lengths.
    assert!(packets
        .iter()
        .any(|(l, d)| *l == 14 + 1500 && d.len() == 128));
    assert!(
        parse_icmp_error(&f4).is_err(),
        "a data segment is no ICMP error"
    );
}
