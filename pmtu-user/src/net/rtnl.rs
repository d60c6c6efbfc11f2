//! rtnetlink helpers: a handle opened inside a namespace, links, addresses, routes and
//! neighbours.
use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{anyhow, Context as _, Result};
use futures::TryStreamExt as _;
use ipnet::IpNet;
use netlink_packet_route::{
    address::AddressHeaderFlags,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    neighbour::NeighbourFlags,
    route::RouteType,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::netns;

/// Runs `f` with an rtnetlink handle whose socket was opened inside `ns`.
pub fn netlink_in<T, F, Fut>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    netlink_at(Some(ns), f)
}

/// [`netlink_in`] for `ns`, or this process's own namespace when `None`.
fn netlink_at<T, F, Fut>(ns: Option<&str>, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    netns::run_in(ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting a runtime for netlink")?;
        runtime.block_on(async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().context("opening a netlink socket")?;
            let task = tokio::spawn(connection);
            let out = f(handle).await;
            task.abort();
            out
        })
    })
}

/// Interface `name`'s link message.
async fn link_by_name(h: &Handle, name: &str) -> Result<LinkMessage> {
    h.link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("looking up interface {name}"))?
        .ok_or_else(|| anyhow!("no interface {name}"))
}

pub async fn link_index(h: &Handle, name: &str) -> Result<u32> {
    Ok(link_by_name(h, name).await?.header.index)
}

/// Whether interface `name` is administratively up (IFF_UP).
pub async fn link_is_up(h: &Handle, name: &str) -> Result<bool> {
    Ok(link_by_name(h, name)
        .await?
        .header
        .flags
        .contains(netlink_packet_route::link::LinkFlags::Up))
}

pub async fn set_up(h: &Handle, name: &str) -> Result<()> {
    let index = link_index(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))
}

pub async fn add_address(h: &Handle, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
    let mut req = h.address().add(index, addr, prefix);
    if addr.is_ipv6() {
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
    }
    req.execute()
        .await
        .with_context(|| format!("adding address {addr}/{prefix}"))
}

pub async fn add_route(
    h: &Handle,
    dest: IpNet,
    via: Option<IpAddr>,
    blackhole: bool,
) -> Result<()> {
    let message = match (dest, via) {
        (IpNet::V4(net), via) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net.network(), net.prefix_len());
            if let Some(IpAddr::V4(gw)) = via {
                b = b.gateway(gw);
            }
            if blackhole {
                b = b.kind(RouteType::BlackHole);
            }
            b.build()
        }
        (IpNet::V6(net), via) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(net.network(), net.prefix_len());
            if let Some(IpAddr::V6(gw)) = via {
                b = b.gateway(gw);
            }
            if blackhole {
                b = b.kind(RouteType::BlackHole);
            }
            b.build()
        }
    };
    let what = match (via, blackhole) {
        (_, true) => format!("blackhole {dest}"),
        (Some(gw), _) => format!("{dest} via {gw}"),
        (None, _) => dest.to_string(),
    };
    h.route()
        .add(message)
        .execute()
        .await
        .with_context(|| format!("adding route {what}"))
}

/// A permanent neighbour entry flagged as a router (`ip neigh replace ADDR lladdr MAC dev IF
/// nud permanent router`), as a router advertisement leaves it.
pub async fn add_router_neighbour(h: &Handle, index: u32, addr: IpAddr, mac: &[u8]) -> Result<()> {
    h.neighbours()
        .add(index, addr)
        .link_layer_address(mac)
        .flags(NeighbourFlags::Router)
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding router neighbour {addr}"))
}

/// What an interface dropped so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkDrops {
    /// Received frames it had no room for (rx_dropped, rx_missed_errors). A tun/tap device
    /// counts its XDP program's XDP_DROP verdicts here too.
    pub rx: u64,
    /// Frames to send it had no room for (tx_dropped; a veth adds its failed XDP_TX).
    pub tx: u64,
    /// The interface is a tun/tap device.
    pub tun: bool,
}

/// Frames interface `iface` (in namespace `ns`, or here) dropped so far.
pub fn dropped_frames(ns: Option<&str>, iface: &str) -> Result<LinkDrops> {
    netlink_at(ns, |h| async move {
        let link = link_by_name(&h, iface)
            .await
            .with_context(|| format!("reading the counters of {iface}"))?;
        let tun = link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Tun))))
        });
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Stats64(s) => Some(LinkDrops {
                    rx: s.rx_dropped + s.rx_missed_errors,
                    tx: s.tx_dropped,
                    tun,
                }),
                _ => None,
            })
            .ok_or_else(|| anyhow!("{iface} reports no counters"))
    })
}
