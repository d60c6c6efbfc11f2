//! REMOTE's own ceiling: the same exchange as a stress flow, done by LOCAL's kernel sockets as
//! fast as they can, with no path MTU involved. TCP: connect to the bulk-sending service, read
//! as much as a stress flow's window lets through, close with RST (SO_LINGER 0). UDP: two
//! full-size echoes. The sockets are bound to LOCAL_ADDR / LOCAL_ADDR6, so they can only
//! exist in LOCAL's namespace (the caller's runtime runs there) and reach only REMOTE.
use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use anyhow::Result;
use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpSocket, UdpSocket};

use super::{
    stats::{Failure, Reason},
    FlowSpec, Outcome, FULL_SIZE,
};
use crate::suite::{tcp::mss_for, REPLY_TIMEOUT};

/// One exchange from `local` (LOCAL_ADDR or LOCAL_ADDR6, by the flow's family).
pub async fn run(spec: FlowSpec, local: IpAddr) -> Result<Outcome> {
    let started = Instant::now();
    let result = tokio::time::timeout(REPLY_TIMEOUT, async {
        if spec.kind.tcp() {
            tcp(&spec, local).await
        } else {
            udp(&spec, local).await
        }
    })
    .await;
    Ok(match result {
        Ok(Ok(())) => Outcome::Verified {
            latency_ns: started.elapsed().as_nanos() as u64,
            answered_again: false,
        },
        Ok(Err(e)) => Failure::new(&spec, Reason::KernelClient).detail(e).boxed(),
        Err(_) => Failure::new(&spec, Reason::KernelClient)
            .detail(format!("no answer within {} ms", REPLY_TIMEOUT.as_millis()))
            .boxed(),
    })
}

async fn tcp(spec: &FlowSpec, local: IpAddr) -> std::io::Result<()> {
    let socket = if local.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    // As much as a stress flow's window lets through (two segments and a line), in a window
    // a few times larger: smaller ones stall on the receiver's silly-window avoidance, larger
    // ones make REMOTE send far more than the exchange needs before the RST.
    let want = 2 * mss_for(spec.remote) as usize + 74;
    socket.set_recv_buffer_size(4 * want as u32)?;
    // Closing sends RST (SO_LINGER with a zero timeout), as a stress flow ends.
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(&socket, sockopt::Linger, &linger).map_err(std::io::Error::from)?;
    let stream = socket.connect(spec.remote).await?;
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        stream.readable().await?;
        let n = match stream.try_read(&mut buf[got..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(std::io::Error::other("REMOTE closed the connection"));
        }
        got += n;
    }
    Ok(())
}

async fn udp(spec: &FlowSpec, local: IpAddr) -> std::io::Result<()> {
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    socket.connect(spec.remote).await?;
    let headers = if local.is_ipv6() { 48 } else { 28 };
    let payload = vec![b'k'; (FULL_SIZE - headers) as usize];
    let mut buf = vec![0u8; 2048];
    for _ in 0..2 {
        socket.send(&payload).await?;
        let n = socket.recv(&mut buf).await?;
        if n != payload.len() {
            return Err(std::io::Error::other(format!(
                "echo answered {n} bytes, sent {}",
                payload.len()
            )));
        }
    }
    Ok(())
}
