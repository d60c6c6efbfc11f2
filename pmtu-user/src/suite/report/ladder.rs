//! A scenario's packet ladder, drawn as inline SVG from the capture's frames (the records the
//! pcap file is written from): three columns (the fake host, the router, REMOTE) and one arrow
//! per packet in time order, labelled with its size, TCP flags and relative sequence range, or
//! its fragment offset. The router's ICMP errors have their own colour; the packet an ICMP
//! error quotes is marked with ✱.
use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use etherparse::{Icmpv4Type, Icmpv6Type, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pmtu_common::EventAction;

use crate::suite::capture::{Frame, FrameKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Fake,
    Router,
    Remote,
}

/// How an arrow is drawn (a CSS class of the page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// The fake host's packet.
    Fake,
    /// REMOTE's packet that went on to the fake host.
    Remote,
    /// REMOTE's packet the router answered with an ICMP error: the quoted one.
    Quoted,
    /// The router's ICMP error.
    Icmp,
    /// REMOTE's packet the router dropped.
    Dropped,
    /// REMOTE's packet toward a fake endpoint this scenario did not use (a late packet of an
    /// earlier connection).
    Stray,
}

impl Style {
    pub fn class(self) -> &'static str {
        match self {
            Style::Fake => "fake",
            Style::Remote => "remote",
            Style::Quoted => "quoted",
            Style::Icmp => "icmp",
            Style::Dropped => "dropped",
            Style::Stray => "stray",
        }
    }
}

/// One packet of the ladder.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrow {
    /// Microseconds since the scenario's first packet.
    pub at_us: u64,
    pub from: Column,
    pub to: Column,
    pub style: Style,
    /// Size, flags, sequence range or fragment offset.
    pub label: String,
    /// What the router did, when it did more than forward it.
    pub note: Option<&'static str>,
}

/// (source, destination, source port, destination port) of a TCP direction.
type Direction = (IpAddr, IpAddr, u16, u16);

/// Relative TCP sequence numbers, as Wireshark shows them: per direction, the SYN is 0.
#[derive(Default)]
struct SeqBase(HashMap<Direction, u32>);

impl SeqBase {
    fn base(&mut self, dir: Direction, seq: u32, syn: bool) -> u32 {
        *self
            .0
            .entry(dir)
            .or_insert(if syn { seq } else { seq.wrapping_sub(1) })
    }

    fn ack(&self, dir: Direction, ack: u32) -> u32 {
        let reverse = (dir.1, dir.0, dir.3, dir.2);
        self.0.get(&reverse).map_or(ack, |b| ack.wrapping_sub(*b))
    }
}

/// The ladder's arrows for `frames` (one scenario's, in time order).
pub fn arrows(frames: &[&Frame]) -> Vec<Arrow> {
    let Some(first) = frames.first() else {
        return Vec::new();
    };
    let start = first.when;
    let mut seqs = SeqBase::default();
    let packets: Vec<Packet> = frames.iter().map(|f| describe(f, &mut seqs)).collect();
    // The fake endpoints this scenario sent from, and the datagrams REMOTE fragmented to them.
    let ours: HashSet<SocketAddr> = frames
        .iter()
        .zip(&packets)
        .filter(|(f, _)| f.kind == FrameKind::Sent)
        .filter_map(|(_, p)| p.src)
        .collect();
    let our_fragments: HashSet<u32> = packets
        .iter()
        .filter(|p| p.dst.is_some_and(|d| ours.contains(&d)))
        .filter_map(|p| p.fragment.map(|(_, _, id)| id))
        .collect();
    frames
        .iter()
        .zip(packets)
        .map(|(f, p)| {
            let (from, mut to, mut style, mut note) = route(f.kind);
            let theirs = match (p.dst, p.fragment) {
                (Some(dst), _) => !ours.contains(&dst),
                (None, Some((_, _, id))) => !our_fragments.contains(&id),
                (None, None) => false,
            };
            if matches!(f.kind, FrameKind::Reported(_)) && theirs {
                (to, style) = (Column::Fake, Style::Stray);
                note = Some("late: toward no endpoint of this scenario");
            }
            let mut label = p.text;
            if style == Style::Quoted {
                label.insert_str(0, "✱ ");
            }
            Arrow {
                at_us: f.when.saturating_sub(start).as_micros() as u64,
                from,
                to,
                style,
                label,
                note,
            }
        })
        .collect()
}

/// What the ladder shows of one frame.
struct Packet {
    text: String,
    /// TCP or UDP endpoints.
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    /// (offset, more fragments, id).
    fragment: Option<(u16, bool, u32)>,
}

/// Where a frame goes, how it is drawn, and what the router did with it.
fn route(kind: FrameKind) -> (Column, Column, Style, Option<&'static str>) {
    use Column::*;
    match kind {
        FrameKind::Sent => (Fake, Remote, Style::Fake, None),
        FrameKind::Answer => (Router, Remote, Style::Icmp, None),
        FrameKind::Reported(action) => match action {
            Some(EventAction::Observed) => (Remote, Fake, Style::Remote, None),
            Some(EventAction::Answered) => (Remote, Router, Style::Quoted, Some("too big")),
            Some(EventAction::Blackholed) => {
                (Remote, Router, Style::Dropped, Some("dropped: black hole"))
            }
            Some(EventAction::BudgetExhausted) => (
                Remote,
                Router,
                Style::Dropped,
                Some("too big, ICMP budget spent: dropped"),
            ),
            Some(EventAction::NotDf) => (Remote, Fake, Style::Remote, Some("too big, no DF")),
            Some(EventAction::NotAnswerable) => {
                (Remote, Fake, Style::Remote, Some("too big, not answerable"))
            }
            Some(EventAction::TooBigObserved) => {
                (Remote, Fake, Style::Remote, Some("too big, observed"))
            }
            Some(EventAction::AnswerFailed) => (
                Remote,
                Router,
                Style::Dropped,
                Some("too big, the answer could not be built: dropped"),
            ),
            None => (Remote, Fake, Style::Remote, Some("unknown action")),
        },
    }
}

/// `TCP S. seq 0 ack 1 len 0 · ip 60 DF`, `UDP 1400 B · ip 1448`, `frag off 1248 M · ip 1296`,
/// `ICMPv6 Packet Too Big mtu 1300 · ip 1280`.
fn describe(frame: &Frame, seqs: &mut SeqBase) -> Packet {
    let Ok(p) = LaxSlicedPacket::from_ethernet(&frame.data) else {
        return Packet {
            text: format!("frame of {} bytes", frame.orig_len),
            src: None,
            dst: None,
            fragment: None,
        };
    };
    let mut text = String::new();
    let mut ports = None;
    let (ip_len, df, fragment, addrs) = match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let off = h.fragments_offset().byte_offset();
            let frag = (h.more_fragments() || off != 0)
                .then(|| (off, h.more_fragments(), h.identification() as u32));
            (
                h.total_len(),
                h.dont_fragment(),
                frag,
                Some((
                    IpAddr::from(h.source_addr()),
                    IpAddr::from(h.destination_addr()),
                )),
            )
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let frag = ip.extensions().clone().into_iter().find_map(|e| match e {
                etherparse::Ipv6ExtensionSlice::Fragment(f) => Some((
                    f.fragment_offset().byte_offset(),
                    f.more_fragments(),
                    f.identification(),
                )),
                _ => None,
            });
            (
                h.payload_length().saturating_add(40),
                false,
                frag,
                Some((
                    IpAddr::from(h.source_addr()),
                    IpAddr::from(h.destination_addr()),
                )),
            )
        }
        _ => (0, false, None, None),
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let (src, dst) = addrs.unwrap_or((IpAddr::from([0u8; 4]), IpAddr::from([0u8; 4])));
            let dir = (src, dst, t.source_port(), t.destination_port());
            ports = Some((t.source_port(), t.destination_port()));
            let base = seqs.base(dir, t.sequence_number(), t.syn());
            let seq = t.sequence_number().wrapping_sub(base);
            let hdr = t.data_offset() as u16 * 4;
            let ip_hdr = ip_len.saturating_sub(match &p.net {
                Some(LaxNetSlice::Ipv4(ip)) => ip.header().ihl() as u16 * 4,
                _ => 40,
            });
            let payload = ip_hdr.saturating_sub(hdr) as u32;
            let mut flags = String::new();
            for (on, c) in [
                (t.syn(), 'S'),
                (t.fin(), 'F'),
                (t.rst(), 'R'),
                (t.psh(), 'P'),
                (t.ack(), '.'),
            ] {
                if on {
                    flags.push(c);
                }
            }
            let _ = write!(text, "TCP {flags} ");
            if payload > 0 {
                let _ = write!(text, "seq {seq}:{}", seq.wrapping_add(payload));
            } else {
                let _ = write!(text, "seq {seq}");
            }
            if t.ack() {
                let _ = write!(text, " ack {}", seqs.ack(dir, t.acknowledgment_number()));
            }
            let _ = write!(text, " len {payload}");
        }
        Some(TransportSlice::Udp(u)) => {
            ports = Some((u.source_port(), u.destination_port()));
            let _ = write!(text, "UDP {} B", u.length().saturating_sub(8));
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let _ = match i.icmp_type() {
                Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
                ) => write!(text, "ICMP frag-needed mtu {next_hop_mtu}"),
                _ => write!(text, "ICMP type {} code {}", i.type_u8(), i.code_u8()),
            };
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let _ = match i.icmp_type() {
                Icmpv6Type::PacketTooBig { mtu } => write!(text, "ICMPv6 Packet Too Big mtu {mtu}"),
                _ => write!(text, "ICMPv6 type {} code {}", i.type_u8(), i.code_u8()),
            };
        }
        Some(_) | None => {
            let payload = match &p.net {
                Some(LaxNetSlice::Ipv4(ip)) => Some(ip.payload()),
                Some(LaxNetSlice::Ipv6(ip)) => Some(ip.payload()),
                _ => None,
            };
            let proto = payload.map_or(etherparse::IpNumber(255), |p| p.ip_number);
            let udp = payload
                .filter(|p| p.ip_number == etherparse::IpNumber::UDP)
                .filter(|_| fragment.is_some_and(|(off, _, _)| off == 0))
                .and_then(|p| etherparse::UdpHeaderSlice::from_slice(p.payload).ok());
            if let Some(u) = udp {
                // The first fragment of a datagram still carries the UDP header.
                ports = Some((u.source_port(), u.destination_port()));
                let _ = write!(text, "UDP {} B", u.length().saturating_sub(8));
            } else {
                let _ = write!(
                    text,
                    "{}",
                    proto.keyword_str().unwrap_or("IP").to_uppercase()
                );
            }
        }
    }
    if let Some((off, more, id)) = fragment {
        let _ = write!(
            text,
            " frag off {off}{} id {id:#x}",
            if more { " M" } else { "" }
        );
        if off == 0 && !more {
            text.push_str(" ATOMIC");
        }
    }
    let _ = write!(text, " · ip {ip_len}");
    if df {
        text.push_str(" DF");
    }
    if frame.kind == FrameKind::Answer {
        text.push_str(" (quotes ✱)");
    }
    let endpoints = addrs
        .zip(ports)
        .map(|((s, d), (sp, dp))| (SocketAddr::new(s, sp), SocketAddr::new(d, dp)));
    Packet {
        text,
        src: endpoints.map(|e| e.0),
        dst: endpoints.map(|e| e.1),
        fragment,
    }
}

const WIDTH: u32 = 1000;
const TOP: u32 = 58;
const ROW: u32 = 30;

fn x(c: Column) -> u32 {
    match c {
        Column::Fake => 150,
        Column::Router => 500,
        Column::Remote => 880,
    }
}

/// XML text: the five characters that must be escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The ladder as one `<svg class="ladder">` element; `id` makes its marker ids unique in the
/// page. `columns` names the three columns (e.g. with their addresses).
pub fn svg(id: &str, columns: [&str; 3], arrows: &[Arrow]) -> String {
    let rows = arrows.len().max(1) as u32;
    let height = TOP + rows * ROW + 12;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="ladder" id="ladder-{id}" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="packet ladder of {id}">"#
    );
    s.push_str("<defs>");
    for style in [
        Style::Fake,
        Style::Remote,
        Style::Quoted,
        Style::Icmp,
        Style::Dropped,
        Style::Stray,
    ] {
        let class = style.class();
        let _ = write!(
            s,
            r#"<marker id="{id}-{class}" class="head {class}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>"#
        );
    }
    s.push_str("</defs>");
    for (col, name) in [Column::Fake, Column::Router, Column::Remote]
        .into_iter()
        .zip(columns)
    {
        let cx = x(col);
        // "fake host\n198.51.100.22 / 2001:db8:1::22": the name, then the addresses.
        let (title, addrs) = name.split_once('\n').unwrap_or((name, ""));
        let _ = write!(
            s,
            r#"<text class="column" x="{cx}" y="16" text-anchor="middle">{}</text><text class="addrs" x="{cx}" y="31" text-anchor="middle">{}</text><line class="lifeline" x1="{cx}" y1="38" x2="{cx}" y2="{}"/>"#,
            escape(title),
            escape(addrs),
            height - 4
        );
    }
    if arrows.is_empty() {
        let _ = write!(
            s,
            r#"<text class="empty" x="{}" y="{}" text-anchor="middle">no packets between the fake host and REMOTE in this scenario</text>"#,
            WIDTH / 2,
            TOP + 10
        );
    }
    for (i, a) in arrows.iter().enumerate() {
        let y = TOP + i as u32 * ROW + 14;
        let (x1, x2) = (x(a.from), x(a.to));
        let class = a.style.class();
        let mid = (x1 + x2) / 2;
        let mut label = a.label.clone();
        if let Some(note) = a.note {
            label.push_str(" — ");
            label.push_str(note);
        }
        let _ = write!(
            s,
            r#"<g class="packet {class}"><title>{}</title><text class="time" x="8" y="{}">+{:.3} ms</text><line class="{class}" x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" marker-end="url(#{id}-{class})"/><text class="label" x="{mid}" y="{}" text-anchor="middle">{}</text>"#,
            escape(&label),
            y + 4,
            a.at_us as f64 / 1000.0,
            y - 5,
            escape(&label)
        );
        if a.style == Style::Dropped {
            let _ = write!(
                s,
                r#"<text class="cross" x="{}" y="{}" text-anchor="middle">✕</text>"#,
                x2 - 10,
                y + 5
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}
