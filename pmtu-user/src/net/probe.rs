//! Probes of REMOTE's services, shared by the lab's readiness wait and check-setup.
use std::{
    io::{self, Read as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

/// Connects to a chargen service and reads one byte.
pub fn probe_chargen(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)
}

/// Sends one datagram to an echo service and checks the answer is the same.
pub fn probe_echo(addr: SocketAddr) -> io::Result<()> {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let probe = b"pmtu lab: echo check";
    socket.send(probe)?;
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf)?;
    if &buf[..n] != probe {
        return Err(io::Error::other("echo answered with different data"));
    }
    Ok(())
}
