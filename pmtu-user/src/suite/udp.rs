//! UDP echo from the fake host (raw frames, replies judged from events) and from LOCAL itself
//! (a real socket).
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::{hub::Flow, Ctx, REPLY_TIMEOUT};
use crate::{net::netns, wire::udp_frame, xdp::events::PacketEvent};

/// The echo service's port (RFC 862).
pub const ECHO_PORT: u16 = 7;

/// One echo reply as REMOTE sent it: its first packet and, when fragmented, every fragment.
#[derive(Debug)]
pub struct Reply {
    pub first: PacketEvent,
    pub fragments: Vec<PacketEvent>,
}

impl Reply {
    /// IP length of the first packet (the fragment at offset 0 when fragmented).
    pub fn first_len(&self) -> u16 {
        self.first.ip_len
    }

    pub fn is_fragmented(&self) -> bool {
        self.first.fragment.is_some()
    }

    /// Any fragment header with offset 0 and M=0 (RFC 8021's atomic fragment).
    pub fn atomic_fragment(&self) -> Option<&PacketEvent> {
        std::iter::once(&self.first)
            .chain(self.fragments.iter())
            .find(|e| e.fragment.is_some_and(|f| f.is_atomic()))
    }
}

/// Sends `payload_len` bytes from the fake endpoint of `flow` to REMOTE's echo service and
/// waits for the whole reply (all fragments when fragmented).
pub async fn echo_from_fake(ctx: &Ctx, flow: &mut Flow, payload_len: usize) -> Result<Reply> {
    let remote = SocketAddr::new(ctx.remote_addr(flow.fake.is_ipv6()), ECHO_PORT);
    echo_from_fake_to(ctx, flow, remote, payload_len).await
}

/// [`echo_from_fake`] toward an echo service at `remote` (stress: a service on its own port).
pub async fn echo_from_fake_to(
    ctx: &Ctx,
    flow: &mut Flow,
    remote: SocketAddr,
    payload_len: usize,
) -> Result<Reply> {
    let payload = vec![b'e'; payload_len];
    ctx.send(&udp_frame(&ctx.l2, flow.fake, remote, &payload)?)?;
    let first = flow
        .wait_for("echo reply from REMOTE", REPLY_TIMEOUT, |e| {
            (e.is_udp() && e.sport == remote.port()) || e.is_port_unreachable()
        })
        .await
        .with_context(|| {
            format!("is echo listening on udp {remote}? (`pmtu check-setup` checks)")
        })?;
    if first.is_port_unreachable() {
        bail!("REMOTE answered ICMP port unreachable: nothing listens on udp {remote} (echo)");
    }
    let mut fragments = Vec::new();
    if let Some(fr) = first.fragment {
        // Collect the rest of this datagram: until a fragment without M arrives.
        let mut done = !fr.more;
        while !done {
            let next = flow
                .wait_for("the rest of a fragmented echo reply", REPLY_TIMEOUT, |e| {
                    e.fragment.is_some_and(|f| f.id == fr.id)
                })
                .await?;
            done = next.fragment.is_some_and(|f| !f.more);
            fragments.push(next);
        }
    }
    Ok(Reply { first, fragments })
}

/// "Send the same datagram once from LOCAL_ADDR(6)": a real socket on LOCAL, waiting for the
/// echo so that REMOTE has surely handled it.
pub async fn echo_from_local(ctx: &Ctx, v6: bool, payload_len: usize) -> Result<()> {
    let remote = SocketAddr::new(ctx.remote_addr(v6), ECHO_PORT);
    let local: IpAddr = if v6 {
        ctx.topo.local_addr6.into()
    } else {
        ctx.topo.local_addr.into()
    };
    let ns = ctx.topo.local_netns.clone();
    tokio::task::spawn_blocking(move || {
        let sock = netns::run_in(ns.as_deref(), || {
            UdpSocket::bind(SocketAddr::new(local, 0))
                .with_context(|| format!("binding a UDP socket to LOCAL's {local}"))
        })?;
        sock.set_read_timeout(Some(REPLY_TIMEOUT))?;
        sock.send_to(&vec![b'l'; payload_len], remote)
            .with_context(|| format!("sending an echo request to {remote}"))?;
        let mut buf = vec![0u8; 65536];
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n == payload_len => Ok(()),
            Ok((n, _)) => {
                bail!("echo reply from {remote} to LOCAL had {n} bytes, sent {payload_len}")
            }
            Err(e) => bail!(
                "no echo reply from {remote} to LOCAL within {} ms: {e}",
                Duration::as_millis(&REPLY_TIMEOUT)
            ),
        }
    })
    .await
    .context("echo from LOCAL")?
}
