//! What `pmtu stress` reads of the link between LOCAL and REMOTE: the responder's lost
//! events, the frames dropped on the way (a run with either is invalid), and the queue a lab's
//! veth gets for the run.
use anyhow::Result;
use pmtu_common::Counter;

use pmtu::{
    config::Topology,
    lab::plan::REMOTE_IF,
    net::{qdisc, rawsock, rtnl},
    suite::Ctx,
};

pub fn events_lost(ctx: &Ctx) -> Result<u64> {
    let responder = match ctx.responder.lock() {
        Ok(r) => r,
        Err(p) => p.into_inner(),
    };
    Ok(responder.counters()?[Counter::EventsLost as usize])
}

/// Frames dropped so far by LOCAL_IF and, in a lab, by REMOTE's end of the veth and the
/// queue [`LinkQueue`] put there. A tap (a qemu guest's link) counts the responder's
/// own XDP_DROP verdicts (the fake hosts' traffic it does not answer) among its received frames
/// dropped: those are taken out. Only differences between two readings mean anything.
pub fn dropped_frames(ctx: &Ctx, t: &Topology, real_remote: bool) -> Result<i128> {
    let local = rtnl::dropped_frames(t.local_netns.as_deref(), &t.local_if)?;
    // Frames LOCAL_IF refused to the fake hosts' socket were sent again: not lost.
    let mut n = local.rx as i128 + local.tx as i128 - rawsock::frames_sent_again() as i128;
    if local.tun {
        n -= responder_drops(ctx)? as i128;
    }
    if let (false, Some(ns)) = (real_remote, t.remote_netns.as_deref()) {
        let remote = rtnl::dropped_frames(Some(ns), REMOTE_IF)?;
        n += (remote.rx + remote.tx) as i128;
        n += qdisc::drops(ns, REMOTE_IF)? as i128;
    }
    Ok(n)
}

/// Frames the responder dropped on purpose so far (XDP_DROP): a stress flow's rule answers
/// the first too-big packet and drops everything else toward its fake host, as the host's
/// black hole.
fn responder_drops(ctx: &Ctx) -> Result<u64> {
    let responder = match ctx.responder.lock() {
        Ok(r) => r,
        Err(p) => p.into_inner(),
    };
    let c = responder.counters()?;
    Ok([
        Counter::Fit,
        Counter::NotDf,
        Counter::NotAnswerable,
        Counter::BudgetExhausted,
        Counter::AnswerFailed,
        Counter::Blackholed,
    ]
    .iter()
    .map(|k| c[*k as usize])
    .sum())
}

/// A queue on REMOTE's end of a lab's veth for the run. Without one (a veth's default) a
/// frame that finds LOCAL's receiving ring full is dropped: REMOTE's echo replies, which
/// nobody sends again. With one, Linux 6.16 and later hold the frame back until the ring
/// drains. LOCAL's end keeps none: the fake hosts' socket learns of a drop (ENOBUFS) and sends
/// the frame again, and a queue there would keep REMOTE's ring full, leaving no room for the
/// responder's ICMP errors (XDP_TX, which no queue holds back). Removed when dropped (the
/// veth goes back to `noqueue`).
pub struct LinkQueue {
    ns: String,
}

impl LinkQueue {
    pub fn set(t: &Topology) -> Result<Option<Self>> {
        let (Some(_), Some(remote)) = (t.local_netns.as_deref(), t.remote_netns.as_deref()) else {
            return Ok(None);
        };
        qdisc::set_root(remote, REMOTE_IF, "pfifo")?;
        Ok(Some(LinkQueue {
            ns: remote.to_string(),
        }))
    }
}

impl Drop for LinkQueue {
    fn drop(&mut self) {
        if let Err(e) = qdisc::remove_root(&self.ns, REMOTE_IF) {
            log::warn!("{e:#}");
        }
    }
}
