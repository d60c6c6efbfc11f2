//! The built-in services REMOTE runs when Debian's openbsd-inetd is not installed: chargen
//! (RFC 864) on TCP and echo (RFC 862) on UDP, each on IPv4 and IPv6 (separate sockets, the IPv6
//! ones IPV6_V6ONLY), behaving like inetd's internal ones.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, OwnedFd},
    sync::LazyLock,
};

use anyhow::{Context as _, Result};
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Characters per chargen line, before CR LF (RFC 864).
pub const LINE_LEN: usize = 72;
/// A chargen line on the wire: the characters and CR LF.
pub const LINE_BYTES: usize = LINE_LEN + 2;
/// The printable ASCII characters, space to `~`, that chargen rotates through.
pub const PATTERN_LEN: usize = 95;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// TCP port of chargen (RFC 864), on IPv4 and IPv6
    #[arg(long, default_value_t = 19)]
    pub chargen_port: u16,
    /// UDP port of echo (RFC 862), on IPv4 and IPv6
    #[arg(long, default_value_t = 7)]
    pub echo_port: u16,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            chargen_port: 19,
            echo_port: 7,
        }
    }
}

/// Line `n` (from 0) of chargen's output: 72 characters of the printable ASCII ring starting
/// `n` places on, then CR LF.
pub fn chargen_line(n: usize) -> [u8; LINE_BYTES] {
    let mut line = [0u8; LINE_BYTES];
    for (i, byte) in line[..LINE_LEN].iter_mut().enumerate() {
        *byte = b' ' + ((n + i) % PATTERN_LEN) as u8;
    }
    line[LINE_LEN] = b'\r';
    line[LINE_LEN + 1] = b'\n';
    line
}

/// One whole period of chargen's output: 95 lines, after which it repeats.
static CYCLE: LazyLock<Vec<u8>> =
    LazyLock::new(|| (0..PATTERN_LEN).flat_map(chargen_line).collect());

/// The four bound sockets. Call inside a tokio runtime.
pub struct Server {
    chargen4: TcpListener,
    chargen6: TcpListener,
    echo4: UdpSocket,
    echo6: UdpSocket,
}

impl Server {
    /// Binds every socket (port 0 picks free ports, one per socket).
    pub fn bind(args: &ServeArgs) -> Result<Self> {
        let v4 = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let v6 = |port| SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
        Ok(Self {
            chargen4: tcp_listener(v4(args.chargen_port))?,
            chargen6: tcp_listener(v6(args.chargen_port))?,
            echo4: udp_socket(v4(args.echo_port))?,
            echo6: udp_socket(v6(args.echo_port))?,
        })
    }

    /// Chargen's IPv4 and IPv6 addresses, then echo's.
    pub fn local_addrs(&self) -> Result<[SocketAddr; 4]> {
        Ok([
            self.chargen4.local_addr()?,
            self.chargen6.local_addr()?,
            self.echo4.local_addr()?,
            self.echo6.local_addr()?,
        ])
    }

    /// Serves until `stop` completes (or a socket fails).
    pub async fn run(self, stop: impl std::future::Future<Output = Result<()>>) -> Result<()> {
        tokio::select! {
            r = accept_loop(self.chargen4) => r,
            r = accept_loop(self.chargen6) => r,
            r = echo_loop(self.echo4) => r,
            r = echo_loop(self.echo6) => r,
            r = stop => r,
        }
    }
}

fn new_socket(addr: SocketAddr, kind: SockType) -> Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        kind,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .with_context(|| format!("creating a socket for {addr}"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).context("IPV6_V6ONLY")?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .with_context(|| format!("binding {addr} (is another chargen or echo running?)"))?;
    Ok(fd)
}

fn tcp_listener(addr: SocketAddr) -> Result<TcpListener> {
    let fd = new_socket(addr, SockType::Stream)?;
    // Room for the thousands of connections a second `pmtu stress` opens (capped by
    // net.core.somaxconn).
    listen(&fd, Backlog::new(4096)?).with_context(|| format!("listening on {addr}"))?;
    Ok(TcpListener::from_std(std::net::TcpListener::from(fd))?)
}

/// Receive buffer of the echo sockets: a burst of thousands of full-size requests.
const ECHO_RCVBUF: usize = 8 << 20;

fn udp_socket(addr: SocketAddr) -> Result<UdpSocket> {
    let fd = new_socket(addr, SockType::Datagram)?;
    // Above net.core.rmem_max needs root (REMOTE's services run as root); else the usual size.
    if setsockopt(&fd, sockopt::RcvBufForce, &ECHO_RCVBUF).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &ECHO_RCVBUF);
    }
    Ok(UdpSocket::from_std(std::net::UdpSocket::from(fd))?)
}

async fn accept_loop(listener: TcpListener) -> Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                log::debug!("chargen for {peer}");
                tokio::spawn(chargen(stream));
            }
            // A connection reset before accept, or a short fd shortage: keep serving.
            Err(e) => log::warn!("chargen accept: {e}"),
        }
    }
}

/// Writes the pattern as fast as the peer takes it, until it goes away. The first write is one
/// line, as inetd's chargen writes line by line: REMOTE's first segment is that 74-byte line and
/// the rest are full-size ones. The peer's data is not read (RFC 864: it is thrown away).
async fn chargen(stream: TcpStream) {
    let cycle: &[u8] = &CYCLE;
    if write_all(&stream, &cycle[..LINE_BYTES]).await.is_err()
        || write_all(&stream, &cycle[LINE_BYTES..]).await.is_err()
    {
        return;
    }
    while write_all(&stream, cycle).await.is_ok() {}
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn echo_loop(socket: UdpSocket) -> Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                if let Err(e) = socket.send_to(&buf[..n], peer).await {
                    log::debug!("echo to {peer}: {e}");
                }
            }
            Err(e) => log::debug!("echo receive: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, net::IpAddr, time::Duration};

    use super::*;

    #[test]
    fn chargen_pattern() {
        let first = chargen_line(0);
        assert_eq!(
            &first[..],
            b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n"
        );
        let second = chargen_line(1);
        assert_eq!(&second[..3], b"!\"#");
        assert_eq!(&second[70..], b"gh\r\n");
        // The ring wraps from `~` back to space.
        let wrap = chargen_line(90);
        assert_eq!(&wrap[..6], b"z{|}~ ");
        // After 95 lines the output repeats.
        assert_eq!(chargen_line(95), first);
        assert_eq!(CYCLE.len(), 95 * 74);
        assert_eq!(&CYCLE[..74], &first[..]);
        assert_eq!(&CYCLE[94 * 74..], &chargen_line(94)[..]);
        for line in CYCLE.chunks(74) {
            assert!(line[..72].iter().all(|b| (b' '..=b'~').contains(b)));
            assert_eq!(&line[72..], b"\r\n");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_chargen_and_echo_on_both_families() {
        let server = Server::bind(&ServeArgs {
            chargen_port: 0,
            echo_port: 0,
        })
        .unwrap();
        let [c4, c6, e4, e6] = server.local_addrs().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
            Ok(())
        }));
        let loopback4 = IpAddr::from(Ipv4Addr::LOCALHOST);
        let loopback6 = IpAddr::from(Ipv6Addr::LOCALHOST);
        tokio::task::spawn_blocking(move || {
            for addr in [
                SocketAddr::new(loopback4, c4.port()),
                SocketAddr::new(loopback6, c6.port()),
            ] {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut got = vec![0u8; 3 * 74];
                s.read_exact(&mut got).unwrap();
                assert_eq!(&got[..], &CYCLE[..3 * 74], "chargen over {addr}");
            }
            for addr in [
                SocketAddr::new(loopback4, e4.port()),
                SocketAddr::new(loopback6, e6.port()),
            ] {
                let bind = SocketAddr::new(addr.ip(), 0);
                let s = std::net::UdpSocket::bind(bind).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let payload = vec![0xa5u8; 1400];
                s.send_to(&payload, addr).unwrap();
                let mut buf = vec![0u8; 2000];
                let (n, _) = s.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], &payload[..], "echo over {addr}");
            }
        })
        .await
        .unwrap();
        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
