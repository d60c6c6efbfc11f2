//! Sending the fake host's frames on LOCAL_IF, and pinging from LOCAL.
//!
//! Sockets are created inside LOCAL's network namespace (see `netns::run_in`) and stay bound
//! to it, so they can be used from any thread or task afterwards.
use std::{
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::netns;

/// An AF_PACKET socket that sends complete Ethernet frames out of one interface.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
    mac: [u8; 6],
}

fn ifreq(name: &str) -> Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("`{name}` is not a valid interface name (1 to 15 characters)");
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

fn socket(domain: i32, kind: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl RawSocket {
    /// Opens a packet socket on `iface` inside namespace `ns`.
    pub fn open(ns: Option<&str>, iface: &str) -> Result<RawSocket> {
        let where_ = ns
            .map(|n| format!(" in network namespace `{n}`"))
            .unwrap_or_default();
        netns::run_in(ns, || {
            // Protocol 0: this socket only sends.
            let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(|e| {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    anyhow!("opening a packet socket needs root (CAP_NET_RAW)")
                } else {
                    anyhow!("opening a packet socket: {e}")
                }
            })?;
            let mut ifr = ifreq(iface)?;
            // SAFETY: ioctl with a valid ifreq for this request.
            if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut ifr) } < 0 {
                bail!("no interface `{iface}`{where_}: check LOCAL_IF with `ip link`");
            }
            // SAFETY: the kernel filled the ifindex member for SIOCGIFINDEX.
            let ifindex = unsafe { ifr.ifr_ifru.ifru_ifindex };
            // SAFETY: as above, for the hardware address.
            if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) } < 0 {
                bail!(
                    "reading the MAC of `{iface}`: {}",
                    io::Error::last_os_error()
                );
            }
            // SAFETY: the kernel filled the hwaddr member for SIOCGIFHWADDR.
            let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
            let mut mac = [0u8; 6];
            for (m, d) in mac.iter_mut().zip(data.iter()) {
                *m = *d as u8;
            }
            Ok(RawSocket { fd, ifindex, mac })
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
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        for attempt in 0..100 {
            // SAFETY: buffer and address are valid for the lengths given.
            let sent = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    libc::MSG_DONTWAIT,
                    &sll as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if sent >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) if attempt < 99 => {
                    std::thread::sleep(Duration::from_micros(100))
                }
                _ => return Err(e).context("sending a frame on LOCAL_IF"),
            }
        }
        Ok(())
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex as u32
    }
}

/// One echo request from namespace `ns` to `dst`; the round-trip time of its reply.
pub fn ping(ns: Option<&str>, dst: IpAddr, timeout: Duration) -> Result<Duration> {
    netns::run_in(ns, || {
        let (domain, proto, request, reply) = match dst {
            IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
            IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128, 129),
        };
        let fd = socket(domain, libc::SOCK_RAW, proto)
            .map_err(|e| anyhow!("opening an ICMP socket (needs root): {e}"))?;
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
