//! Sending the fake host's frames on LOCAL_IF, and pinging from LOCAL.
//!
//! Sockets are created inside LOCAL's network namespace (see `netns::run_in`) and stay bound
//! to it, so they can be used from any thread or task afterwards.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::{
    errno::Errno,
    ifaddrs::getifaddrs,
    net::if_::if_nametoindex,
    sys::socket::{
        sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
    },
};

use super::netns;

/// Frames the interface dropped and said so (ENOBUFS: a veth whose peer's ring was full), so
/// that they were sent again: the interface counts them among its dropped frames, though
/// nothing was lost.
static SENT_AGAIN: AtomicU64 = AtomicU64::new(0);

/// Frames sent again after the interface dropped them, since the process started.
pub fn frames_sent_again() -> u64 {
    SENT_AGAIN.load(Ordering::Relaxed)
}

/// An AF_PACKET socket that sends complete Ethernet frames out of one interface.
pub struct RawSocket {
    fd: OwnedFd,
    /// The interface's link-layer address, as the kernel lists it: the socket address every
    /// frame is sent to. A raw packet socket only reads its interface index; the frame carries
    /// its own Ethernet header.
    link: LinkAddr,
}

/// The link-layer address of the interface with index `ifindex` (in the calling thread's
/// network namespace).
fn link_addr(iface: &str, ifindex: u32) -> Result<LinkAddr> {
    let addrs = getifaddrs().map_err(|e| {
        anyhow!(
            "reading the MAC of `{iface}`: listing interfaces: {}",
            io::Error::from(e)
        )
    })?;
    addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| a.address.as_ref()?.as_link_addr().copied())
        .find(|link| link.ifindex() == ifindex as usize)
        .ok_or_else(|| anyhow!("reading the MAC of `{iface}`: the kernel lists no link address"))
}

impl RawSocket {
    /// Opens a packet socket on `iface` inside namespace `ns`.
    pub fn open(ns: Option<&str>, iface: &str) -> Result<RawSocket> {
        let where_ = ns
            .map(|n| format!(" in network namespace `{n}`"))
            .unwrap_or_default();
        netns::run_in(ns, || {
            if iface.is_empty() || iface.len() > 15 || iface.contains('\0') {
                bail!("`{iface}` is not a valid interface name (1 to 15 characters)");
            }
            // Protocol 0: this socket only sends.
            let fd = socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(|e| match e {
                Errno::EPERM | Errno::EACCES => {
                    anyhow!("opening a packet socket needs root (CAP_NET_RAW)")
                }
                e => anyhow!("opening a packet socket: {}", io::Error::from(e)),
            })?;
            let Ok(ifindex) = if_nametoindex(iface) else {
                bail!("no interface `{iface}`{where_}: check LOCAL_IF with `ip link`");
            };
            let link = link_addr(iface, ifindex)?;
            Ok(RawSocket { fd, link })
        })
    }

    /// Sends one complete Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        if frame.len() < 14 {
            bail!(
                "a frame of {} bytes is shorter than an Ethernet header",
                frame.len()
            );
        }
        for attempt in 0..100 {
            match sendto(
                self.fd.as_raw_fd(),
                frame,
                &self.link,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(_) => return Ok(()),
                Err(e @ (Errno::EAGAIN | Errno::ENOBUFS)) if attempt < 99 => {
                    if e == Errno::ENOBUFS {
                        SENT_AGAIN.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_micros(100))
                }
                Err(e) => return Err(io::Error::from(e)).context("sending a frame on LOCAL_IF"),
            }
        }
        Ok(())
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.link.addr().unwrap_or_default()
    }

    pub fn ifindex(&self) -> u32 {
        self.link.ifindex() as u32
    }
}

/// One echo request from namespace `ns` to `dst`; the round-trip time of its reply.
pub fn ping(ns: Option<&str>, dst: IpAddr, timeout: Duration) -> Result<Duration> {
    netns::run_in(ns, || {
        let (domain, proto, request, reply) = match dst {
            IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp, 8u8, 0u8),
            IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6, 128, 129),
        };
        let fd = socket(domain, SockType::Raw, SockFlag::SOCK_CLOEXEC, proto).map_err(|e| {
            anyhow!(
                "opening an ICMP socket (needs root): {}",
                io::Error::from(e)
            )
        })?;
        let sock = std::net::UdpSocket::from(fd);
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let id = (std::process::id() as u16) ^ 0x5a5a;
        static SEQ: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut msg = vec![request, 0, 0, 0];
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(b"pmtu ping");
        // The kernel computes ICMPv6 checksums on raw sockets; ICMPv4 is ours to fill in.
        if dst.is_ipv4() {
            let c = crate::wire::internet_checksum(0, &msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
        }
        let start = Instant::now();
        sock.send_to(&msg, SocketAddr::new(dst, 0))
            .with_context(|| format!("sending an echo request to {dst}"))?;
        let mut buf = [0u8; 2048];
        while start.elapsed() < timeout {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if from.ip() != dst {
                continue;
            }
            // IPv4 raw sockets deliver the IP header too.
            let icmp = if dst.is_ipv4() {
                let ihl = (buf[0] & 0x0f) as usize * 4;
                &buf[ihl.min(n)..n]
            } else {
                &buf[..n]
            };
            if icmp.len() >= 8
                && icmp[0] == reply
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                return Ok(start.elapsed());
            }
        }
        bail!("no echo reply from {dst} within {} ms", timeout.as_millis())
    })
}
