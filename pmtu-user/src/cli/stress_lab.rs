//! The lab's side of `pmtu stress`: what it reads of the link between LOCAL and REMOTE (the
//! responder's lost events, the frames dropped on the way: a run with either is invalid), the
//! queue a lab's veth gets for the run, and REMOTE's `pmtu serve` for the run.
use std::{
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use pmtu_common::Counter;

use pmtu::{
    config::Topology,
    lab::plan::REMOTE_IF,
    net::{netns, probe::probe_chargen, qdisc, rawsock, rtnl},
    suite::Ctx,
};

pub fn events_lost(ctx: &Ctx) -> Result<u64> {
    let responder = match ctx.responder.lock() {
        Ok(r) => r,
        Err(p) => p.into_inner(),
    };
    Ok(responder.counters()?[Counter::EventsLost as usize])
}

/// What the link between LOCAL and REMOTE dropped so far: the responder's ICMP errors, and
/// every other frame. Only differences between two readings mean anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkLosses {
    pub icmp_errors: i128,
    pub others: i128,
}

impl std::ops::Sub for LinkLosses {
    type Output = (u64, u64);

    /// The losses between two readings: (ICMP errors, other frames).
    fn sub(self, before: Self) -> (u64, u64) {
        let d = |a: i128, b: i128| (a - b).max(0) as u64;
        (
            d(self.icmp_errors, before.icmp_errors),
            d(self.others, before.others),
        )
    }
}

/// Frames dropped so far by LOCAL_IF and, in a lab, by REMOTE's end of the veth and the
/// queue [`LinkQueue`] put there. A tap (a qemu guest's link) counts the responder's
/// own XDP_DROP verdicts (the fake hosts' traffic it does not answer) among its received frames
/// dropped: those are taken out. The responder's ICMP errors that found REMOTE's end of a
/// veth full (its `xdp_tx_errors`) are counted apart: a veth counts each as LOCAL_IF's
/// transmit drop and as the peer's receive drop.
pub fn link_losses(ctx: &Ctx, t: &Topology, real_remote: bool) -> Result<LinkLosses> {
    let local_ns = t.local_netns.as_deref();
    let local = rtnl::dropped_frames(local_ns, &t.local_if)?;
    let icmp_errors = xdp_tx_errors(local_ns, &t.local_if)? as i128;
    // Frames LOCAL_IF refused to the fake hosts' socket were sent again: not lost.
    let mut n =
        local.rx as i128 + local.tx as i128 - rawsock::frames_sent_again() as i128 - icmp_errors;
    if local.tun {
        n -= responder_drops(ctx)? as i128;
    }
    if let (false, Some(ns)) = (real_remote, t.remote_netns.as_deref()) {
        let remote = rtnl::dropped_frames(Some(ns), REMOTE_IF)?;
        n += (remote.rx + remote.tx) as i128 - icmp_errors;
        n += qdisc::drops(ns, REMOTE_IF)? as i128;
    }
    Ok(LinkLosses {
        icmp_errors,
        others: n,
    })
}

/// The XDP_TX frames `iface` could not send so far (a veth's per-queue `xdp_tx_errors`, as
/// `ethtool -S` shows them); 0 for a driver without statistics. Reading 0 is the safe side:
/// the drops then count among the other frames dropped, which make a run invalid.
fn xdp_tx_errors(ns: Option<&str>, iface: &str) -> Result<u64> {
    Ok(netns::run(ns, "ethtool", &["-S", iface])
        .map(|stats| sum_xdp_tx_errors(&stats))
        .unwrap_or(0))
}

/// The sum of `ethtool -S`'s `*_xdp_tx_errors` lines.
fn sum_xdp_tx_errors(stats: &str) -> u64 {
    stats
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(name, _)| name.ends_with("_xdp_tx_errors"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
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

/// Ports of the `pmtu serve` a stress run starts inside the lab's REMOTE (its inetd forks a
/// process per connection: far too slow for thousands of flows a second).
pub const LAB_TCP_PORT: u16 = 10019;
pub const LAB_UDP_PORT: u16 = 10007;
/// REMOTE's `pmtu serve` for the run, on ports of its own; stopped (by its PID) when dropped.
/// It also dies with this process (PR_SET_PDEATHSIG), so a killed run leaves none behind.
pub struct StressService {
    child: Child,
}

impl StressService {
    pub fn start(t: &Topology) -> Result<Self> {
        let ns = t
            .remote_netns
            .as_deref()
            .ok_or_else(|| anyhow!("the lab has no REMOTE namespace"))?;
        let exe = std::env::current_exe().context("finding the pmtu executable")?;
        let mut cmd = netns::command(Some(ns), &exe.to_string_lossy())?;
        cmd.args([
            "serve",
            "--chargen-port",
            &LAB_TCP_PORT.to_string(),
            "--echo-port",
            &LAB_UDP_PORT.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `pmtu serve` in `{ns}`"))?;
        let mut service = StressService { child };
        service.wait_ready(t)?;
        Ok(service)
    }

    fn wait_ready(&mut self, t: &Topology) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let addrs = [
            SocketAddr::new(t.remote_addr.into(), LAB_TCP_PORT),
            SocketAddr::new(t.remote_addr6.into(), LAB_TCP_PORT),
        ];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("REMOTE's `pmtu serve` for stress exited at once ({status}): is port {LAB_TCP_PORT} or {LAB_UDP_PORT} taken in REMOTE?");
            }
            let ready = netns::run_in(t.local_netns.as_deref(), || {
                Ok(addrs.iter().all(|a| probe_chargen(*a).is_ok()))
            })?;
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("REMOTE's `pmtu serve` for stress did not answer on tcp/{LAB_TCP_PORT} within 3 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for StressService {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_tx_errors_are_summed_over_queues() {
        let stats = "NIC statistics:\n     peer_ifindex: 2\n     rx_queue_0_xdp_tx: 90235\n     rx_queue_0_xdp_tx_errors: 62\n     rx_queue_1_xdp_tx_errors: 3\n     tx_queue_0_xdp_xmit_errors: 7\n";
        assert_eq!(sum_xdp_tx_errors(stats), 65);
        assert_eq!(sum_xdp_tx_errors("no stats available"), 0);
    }

    #[test]
    fn losses_are_differences_and_never_negative() {
        let before = LinkLosses {
            icmp_errors: 5,
            others: 10,
        };
        let after = LinkLosses {
            icmp_errors: 9,
            others: 8,
        };
        assert_eq!(after - before, (4, 0));
    }
}
