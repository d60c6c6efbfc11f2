//! An interface's root queueing discipline, by rtnetlink: put one in place, remove it, read
//! how many packets it dropped.
//!
//! Why a veth needs one under load: with an XDP program on the receiving end, a veth hands
//! frames over through a 256-entry ring. Without a qdisc (a veth's default, `noqueue`) a full
//! ring drops the frame; with one, Linux 6.16 and later stop the queue and hold the frame back
//! until the receiver has drained the ring (backpressure), so nothing is lost.
use anyhow::{bail, Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use netlink_packet_route::{
    tc::{TcAttribute, TcHandle, TcMessage, TcStats2},
    RouteNetlinkMessage,
};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
};

use super::rtnl::{link_index, netlink_in};

/// Makes `kind` (a qdisc without options, such as `pfifo`, whose limit is then the
/// interface's txqueuelen) the root qdisc of `iface` in namespace `ns`.
pub fn set_root(ns: &str, iface: &str, kind: &str) -> Result<()> {
    let kind = kind.to_string();
    netlink_in(ns, |mut h| async move {
        let index = link_index(&h, iface).await?;
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::ROOT;
        msg.attributes.push(TcAttribute::Kind(kind.clone()));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut answers = h
            .request(req)
            .with_context(|| format!("giving {iface} a {kind} qdisc"))?;
        while let Some(answer) = answers.next().await {
            if let NetlinkPayload::Error(e) = answer.payload {
                if e.code.is_some() {
                    bail!("giving {iface} a {kind} qdisc: {}", e.to_io());
                }
            }
        }
        Ok(())
    })
}

/// Removes `iface`'s root qdisc: the interface falls back to its default (`noqueue` for a
/// veth).
pub fn remove_root(ns: &str, iface: &str) -> Result<()> {
    netlink_in(ns, |h| async move {
        let index = link_index(&h, iface).await?;
        let mut del = h.qdisc().del(index as i32);
        del.message_mut().header.parent = TcHandle::ROOT;
        del.execute()
            .await
            .with_context(|| format!("removing {iface}'s qdisc"))
    })
}

/// Packets the qdiscs of `iface` dropped so far (0 with none: `noqueue` drops nothing itself).
pub fn drops(ns: &str, iface: &str) -> Result<u64> {
    netlink_in(ns, |h| async move {
        let index = link_index(&h, iface).await?;
        let qdiscs: Vec<TcMessage> = h
            .qdisc()
            .get()
            .index(index as i32)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("reading {iface}'s qdiscs"))?;
        Ok(qdiscs
            .iter()
            .filter(|q| q.header.index == index as i32)
            .map(|q| {
                let queue = q.attributes.iter().find_map(|a| match a {
                    TcAttribute::Stats2(s) => s.iter().find_map(|s| match s {
                        TcStats2::Queue(q) => Some(q.drops as u64),
                        _ => None,
                    }),
                    _ => None,
                });
                let compat = q.attributes.iter().find_map(|a| match a {
                    TcAttribute::Stats(s) => Some(s.drops as u64),
                    _ => None,
                });
                queue.or(compat).unwrap_or(0)
            })
            .sum())
    })
}
