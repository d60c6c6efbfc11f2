//! `--pcap FILE`: every frame the controller sent, every packet the responder reported, and
//! the ICMP errors it answered with, in a pcap file that Wireshark opens. The same records,
//! tagged with the scenario that was running, draw `--report`'s packet ladders.
//!
//! Reported packets are stored as the XDP program saw their first bytes (a truncated capture
//! with the original length). The ICMP answer is rebuilt from those bytes the way the program
//! builds it, so the quote is truncated in the file but its lengths are the real ones.
use std::{
    fs::{self, File, OpenOptions},
    io::{BufWriter, Write},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::wire::{internet_checksum, sum16};
use anyhow::{anyhow, Context as _, Result};
use nix::{
    sys::time::TimeSpec,
    time::{clock_gettime, ClockId},
};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    DataLink,
};
use pmtu_common::{
    Event, EventAction, ICMP4_HEADERS, ICMP4_MAX_ERROR_LEN, ICMP6_HEADERS, ICMP6_MAX_ERROR_LEN,
};

/// Converts CLOCK_MONOTONIC nanoseconds (the XDP program's clock) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct MonoClock {
    /// Wall-clock time minus monotonic time, in nanoseconds.
    offset_ns: i128,
}

fn clock_ns(id: ClockId) -> i128 {
    // Both clocks always exist on Linux; a zero offset would only shift pcap timestamps.
    let ts = clock_gettime(id).unwrap_or(TimeSpec::new(0, 0));
    ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128
}

impl MonoClock {
    pub fn now() -> Self {
        MonoClock {
            offset_ns: clock_ns(ClockId::CLOCK_REALTIME) - clock_ns(ClockId::CLOCK_MONOTONIC),
        }
    }

    /// Time since the Unix epoch of a monotonic timestamp.
    pub fn to_unix(&self, mono_ns: u64) -> Duration {
        let ns = (mono_ns as i128 + self.offset_ns).max(0);
        Duration::from_nanos(ns as u64)
    }
}

/// Who put a frame on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The fake host's frame, sent by the controller toward REMOTE.
    Sent,
    /// REMOTE's packet toward the fake host, as the responder saw it, and what it did.
    Reported(Option<EventAction>),
    /// The router's ICMP error, answering the `Reported` frame just before it.
    Answer,
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub when: Duration,
    /// The frame's length on the wire (`data` may be truncated).
    pub orig_len: u32,
    pub data: Vec<u8>,
    pub kind: FrameKind,
    /// The scenario that was running when the frame was recorded.
    pub scenario: Option<&'static str>,
}

/// Records collected during a run, written at its end.
pub struct Capture {
    records: Mutex<Vec<Frame>>,
    routers: Mutex<(Ipv4Addr, Ipv6Addr)>,
    scenario: Mutex<Option<&'static str>>,
}

impl Default for Capture {
    fn default() -> Self {
        Self::new()
    }
}

impl Capture {
    pub fn new() -> Self {
        Capture {
            records: Mutex::new(Vec::new()),
            routers: Mutex::new((Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)),
            scenario: Mutex::new(None),
        }
    }

    /// Tags the records from now on with `scenario`.
    pub fn begin(&self, scenario: &'static str) {
        *lock(&self.scenario) = Some(scenario);
    }

    /// The source addresses of the ICMP errors (LOCAL_ADDR, LOCAL_ADDR6).
    pub fn set_routers(&self, v4: Ipv4Addr, v6: Ipv6Addr) {
        *lock(&self.routers) = (v4, v6);
    }

    fn push(&self, when: Duration, orig_len: usize, data: Vec<u8>, kind: FrameKind) {
        let scenario = *lock(&self.scenario);
        lock(&self.records).push(Frame {
            when,
            orig_len: orig_len as u32,
            data,
            kind,
            scenario,
        });
    }

    /// A frame the controller sent, now.
    pub fn sent(&self, frame: &[u8]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.push(now, frame.len(), frame.to_vec(), FrameKind::Sent);
    }

    /// A packet the responder reported, and the ICMP error when it answered one.
    pub fn event(&self, ev: &Event, clock: &MonoClock) {
        let head = &ev.head[..(ev.head_len as usize).min(ev.head.len())];
        let Some(l2_len) = l2_len(head) else { return };
        let when = clock.to_unix(ev.ts_ns);
        let action = EventAction::from_u8(ev.action);
        self.push(
            when,
            l2_len + ev.ip_len as usize,
            head.to_vec(),
            FrameKind::Reported(action),
        );
        if action == Some(EventAction::Answered) {
            let routers = *lock(&self.routers);
            if let Some((frame, orig_len)) = icmp_answer(head, l2_len, ev, routers) {
                self.push(
                    when + Duration::from_nanos(1),
                    orig_len,
                    frame,
                    FrameKind::Answer,
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.records).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record so far, in time order.
    pub fn frames(&self) -> Vec<Frame> {
        let mut frames = lock(&self.records).clone();
        frames.sort_by_key(|r| r.when);
        frames
    }

    /// Writes every record, in time order, to `path`; returns how many. Every write and the
    /// final flush are checked. A regular file (or a new one) is written under a temporary name
    /// beside it and renamed over it at the end, so it is either whole or untouched; anything
    /// else (a pipe, /dev/stdout) is written directly.
    pub fn write(&self, path: &Path) -> Result<usize> {
        let mut records = lock(&self.records);
        records.sort_by_key(|r| r.when);
        if is_special(path) {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("opening the pcap file {}", path.display()))?;
            write_records(file, &records)
                .with_context(|| format!("writing the pcap file {}", path.display()))?;
            return Ok(records.len());
        }
        let tmp = temp_beside(path)?;
        let result = File::create(&tmp)
            .map_err(anyhow::Error::from)
            .and_then(|file| {
                let file = write_records(file, &records)?;
                file.sync_all()?;
                Ok(())
            })
            .and_then(|()| Ok(fs::rename(&tmp, path)?));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e.context(format!("writing the pcap file {}", path.display())));
        }
        Ok(records.len())
    }
}

/// Checks, before a run, that its pcap file can be written: a file can be made beside it (the
/// target itself is not touched), or it is a special file that opens for writing.
pub fn check_writable(path: &Path) -> Result<()> {
    let why = || format!("cannot write the pcap file {}", path.display());
    if is_special(path) {
        return fs::metadata(path).map(drop).with_context(why);
    }
    if path.is_dir() {
        return Err(anyhow!("{} is a directory", path.display())).with_context(why);
    }
    let tmp = temp_beside(path).with_context(why)?;
    File::create(&tmp).with_context(why)?;
    fs::remove_file(&tmp).with_context(why)
}

/// An existing file that is not a regular one (a device, a pipe): written in place.
fn is_special(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// `.NAME.pmtu-PID.tmp` in the directory of `path`.
fn temp_beside(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", path.display()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".pmtu-{}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// The pcap header and every record, then the flush; each step checked.
fn write_records<W: Write>(out: W, records: &[Frame]) -> Result<W> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut writer = PcapWriter::with_header(BufWriter::new(out), header)?;
    for r in records {
        writer.write_packet(&PcapPacket::new(r.when, r.orig_len, &r.data))?;
    }
    writer
        .into_writer()
        .into_inner()
        .map_err(|e| anyhow::Error::from(e.into_error()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Length of the Ethernet header with up to two VLAN tags.
fn l2_len(frame: &[u8]) -> Option<usize> {
    let mut len = 14;
    for _ in 0..2 {
        let ethertype = u16::from_be_bytes([*frame.get(len - 2)?, *frame.get(len - 1)?]);
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        len += 4;
    }
    (frame.len() >= len).then_some(len)
}

/// The ICMP error the XDP program sent for this packet: MACs swapped, VLAN tags kept, the
/// router as source, the quote as far as the event's bytes go. Returns (frame, original length).
fn icmp_answer(
    head: &[u8],
    l2_len: usize,
    ev: &Event,
    (router4, router6): (Ipv4Addr, Ipv6Addr),
) -> Option<(Vec<u8>, usize)> {
    let mut frame = Vec::with_capacity(head.len() + ICMP6_HEADERS);
    frame.extend_from_slice(head.get(6..12)?);
    frame.extend_from_slice(head.get(0..6)?);
    frame.extend_from_slice(head.get(12..l2_len)?);
    let quote = head.get(l2_len..)?;
    let ip_len = ev.ip_len as usize;
    if ev.family == 4 {
        let quoted = ip_len.min(ICMP4_MAX_ERROR_LEN - ICMP4_HEADERS);
        let total = (ICMP4_HEADERS + quoted) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&router4.octets());
        ip.extend_from_slice(&ev.src[..4]);
        let c = internet_checksum(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut icmp = vec![3, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&(ev.rule_mtu as u16).to_be_bytes());
        icmp.extend_from_slice(quote);
        let c = internet_checksum(0, &icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&icmp);
        Some((frame, l2_len + total as usize))
    } else {
        let quoted = ip_len.min(ICMP6_MAX_ERROR_LEN - ICMP6_HEADERS);
        let plen = (8 + quoted) as u16;
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&plen.to_be_bytes());
        ip.extend_from_slice(&[58, 64]);
        ip.extend_from_slice(&router6.octets());
        ip.extend_from_slice(&ev.src);
        let mut icmp = vec![2, 0, 0, 0];
        icmp.extend_from_slice(&ev.rule_mtu.to_be_bytes());
        icmp.extend_from_slice(quote);
        // The checksum covers the whole message; only part of the quote is in the file, so
        // Wireshark may flag it: the lengths are what the program sent.
        let pseudo = sum16(&ip[8..40]) + plen as u32 + 58;
        let c = internet_checksum(pseudo, &icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&icmp);
        Some((frame, l2_len + 40 + plen as usize))
    }
}
