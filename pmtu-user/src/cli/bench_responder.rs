//! `pmtu bench responder`: how many ICMP errors a second reach REMOTE from the XDP responder,
//! against a kernel router doing the same job.
//!
//! Method: REMOTE floods oversized (1400-byte) DF UDP datagrams, built once and sent whole on
//! a packet socket (so the sender's own stack costs the same in both cases), for `--seconds`:
//! once in the lab toward FAKE_NET_ADDR(6), answered by the lab's XDP responder (an answer
//! rule, MTU 1300, no budget, events drained as in a run), once in a kernel router lab
//! (`lab::kernel_router`: the router's link onward 1300 bytes, its ICMP rate limits off).
//! The answers are what arrived at the sender: its namespace's ICMP counters before and after
//! (`Icmp InDestUnreachs`, `Icmp6InPktTooBigs`), read once they stop moving.
use std::{
    fs,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use ipnet::IpNet;

use pmtu::{
    lab::{
        kernel_router::{self, KernelRouterLab},
        plan::REMOTE_IF,
    },
    net::{netns, rawsock::RawSocket},
    signals,
    suite::ProfileName,
    wire::{udp_frame, L2},
    xdp::responder::{AttachMode, RuleSpec},
};

use super::run;

/// The IP length of the flood's datagrams: above the 1300-byte next hop of both routers.
const FLOOD_IP_LEN: usize = 1400;
const MTU: u32 = kernel_router::NEXT_HOP_MTU;

#[derive(clap::Args, Debug)]
pub struct ResponderArgs {
    /// Seconds each flood lasts.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Threads sending the flood, each on its own packet socket.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub senders: u32,
}

/// One flood's result.
struct Flood {
    sent: u64,
    answers: u64,
    seconds: f64,
}

impl Flood {
    fn per_s(&self) -> f64 {
        self.answers as f64 / self.seconds
    }
}

/// Where a flood goes from and to, and where its answers are counted.
struct Target<'a> {
    ns: &'a str,
    iface: &'a str,
    l2: L2,
    src: IpAddr,
    dst: IpAddr,
}

pub async fn cli(args: ResponderArgs, lab_name: &str, mode: AttachMode) -> Result<()> {
    if !(args.seconds.is_finite() && (0.1..=60.0).contains(&args.seconds)) {
        bail!("--seconds {} is out of range (0.1 to 60)", args.seconds);
    }
    let seconds = Duration::from_secs_f64(args.seconds);
    let xdp = xdp_floods(lab_name, mode, seconds, args.senders)?;
    let kernel = kernel_floods(lab_name, seconds, args.senders)?;
    for (i, family) in ["", "_ipv6"].iter().enumerate() {
        let (x, k) = (&xdp[i], &kernel[i]);
        let ratio = if k.per_s() > 0.0 {
            x.per_s() / k.per_s()
        } else {
            f64::INFINITY
        };
        println!(
            "responder_answers_per_s{family} xdp={:.0} kernel_router={:.0} ratio={ratio:.2} \
             (sent_per_s xdp={:.0} kernel_router={:.0}; goal ratio >= 5)",
            x.per_s(),
            k.per_s(),
            x.sent as f64 / x.seconds,
            k.sent as f64 / k.seconds,
        );
    }
    Ok(())
}

/// The floods answered by the lab's XDP responder: IPv4, then IPv6.
fn xdp_floods(lab: &str, mode: AttachMode, seconds: Duration, senders: u32) -> Result<Vec<Flood>> {
    let setup = run::setup(lab, mode, ProfileName::Linux, None)?;
    let (ctx, kept) = setup.context(None, ProfileName::Linux)?;
    let t = ctx.topo.clone();
    let Some(remote_ns) = t.remote_netns.clone() else {
        bail!("pmtu bench responder needs the built-in namespace lab (REMOTE a namespace of this machine), not a real REMOTE or a VM");
    };
    let l2 = L2 {
        src: t.remote_mac,
        dst: t.local_mac,
    };
    let rules = [
        IpNet::from(IpAddr::V4(t.fake_net_addr)),
        IpNet::from(IpAddr::V6(t.fake_net_addr6)),
    ];
    let result = (|| {
        let mut responder = ctx
            .responder
            .lock()
            .map_err(|_| anyhow!("the responder's lock is poisoned"))?;
        for r in rules {
            responder.set_rule(r, RuleSpec::answer(MTU))?;
        }
        drop(responder);
        let mut floods = Vec::new();
        for (src, dst) in [
            (IpAddr::V4(t.remote_addr), IpAddr::V4(t.fake_net_addr)),
            (IpAddr::V6(t.remote_addr6), IpAddr::V6(t.fake_net_addr6)),
        ] {
            let target = Target {
                ns: &remote_ns,
                iface: REMOTE_IF,
                l2,
                src,
                dst,
            };
            floods.push(flood(&target, seconds, senders).context("the XDP responder's flood")?);
        }
        Ok(floods)
    })();
    if let Ok(mut responder) = ctx.responder.lock() {
        for r in rules {
            let _ = responder.remove_rule(r);
        }
    }
    drop(ctx);
    drop(kept);
    result
}

/// The floods answered by a kernel router: IPv4, then IPv6.
fn kernel_floods(lab: &str, seconds: Duration, senders: u32) -> Result<Vec<Flood>> {
    let rl = KernelRouterLab::up(lab)?;
    let l2 = L2 {
        src: kernel_router::SENDER_MAC,
        dst: kernel_router::ROUTER_MAC,
    };
    let mut floods = Vec::new();
    for (src, dst) in [
        (
            IpAddr::V4(kernel_router::SENDER_ADDR),
            IpAddr::V4(kernel_router::TARGET_ADDR),
        ),
        (
            IpAddr::V6(kernel_router::SENDER_ADDR6),
            IpAddr::V6(kernel_router::TARGET_ADDR6),
        ),
    ] {
        let target = Target {
            ns: &rl.sender_ns,
            iface: kernel_router::SENDER_IF,
            l2,
            src,
            dst,
        };
        floods.push(flood(&target, seconds, senders).context("the kernel router's flood")?);
    }
    Ok(floods)
}

/// Sends the flood from `target.ns` for `seconds` and counts the answers that arrived there.
fn flood(target: &Target, seconds: Duration, senders: u32) -> Result<Flood> {
    let v4 = target.src.is_ipv4();
    let header = if v4 { 20 + 8 } else { 40 + 8 };
    let frame = udp_frame(
        &target.l2,
        SocketAddr::new(target.src, 40000),
        SocketAddr::new(target.dst, 9),
        &vec![0x5a; FLOOD_IP_LEN - header],
    )?;
    let socks = (0..senders)
        .map(|_| RawSocket::open(Some(target.ns), target.iface))
        .collect::<Result<Vec<_>>>()?;
    let before = answers(target.ns, v4)?;
    let sent = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for sock in &socks {
            let (frame, sent, failed) = (&frame, &sent, &failed);
            s.spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < seconds && !signals::requested() {
                    for _ in 0..64 {
                        if sock.send(frame).is_err() {
                            failed.store(true, Ordering::Relaxed);
                            break;
                        }
                        n += 1;
                    }
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                }
                sent.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    let took = start.elapsed().as_secs_f64();
    if signals::requested() {
        bail!("stopped by a signal");
    }
    if failed.load(Ordering::Relaxed) {
        bail!("sending the flood on {} failed", target.iface);
    }
    // Answers still on their way: read until the count stops moving (at most a second).
    let mut last = answers(target.ns, v4)?;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
        let now = answers(target.ns, v4)?;
        if now == last {
            break;
        }
        last = now;
    }
    let answers = last.saturating_sub(before);
    if answers == 0 {
        bail!(
            "no ICMP {} came back to {} in {took:.1} s of flood",
            if v4 {
                "fragmentation needed"
            } else {
                "Packet Too Big"
            },
            target.src
        );
    }
    Ok(Flood {
        sent: sent.into_inner(),
        answers,
        seconds: took,
    })
}

/// ICMP "destination unreachable" (IPv4) or "Packet Too Big" (IPv6) messages namespace `ns`
/// has received.
fn answers(ns: &str, v4: bool) -> Result<u64> {
    netns::run_in(Some(ns), || {
        // thread-self: /proc/self/net would show the main thread's namespace.
        if v4 {
            let text = fs::read_to_string("/proc/thread-self/net/snmp")
                .context("reading /proc/net/snmp")?;
            snmp_value(&text, "Icmp", "InDestUnreachs")
        } else {
            let text = fs::read_to_string("/proc/thread-self/net/snmp6")
                .context("reading /proc/net/snmp6")?;
            text.lines()
                .find_map(|l| l.strip_prefix("Icmp6InPktTooBigs"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| anyhow!("/proc/net/snmp6 has no Icmp6InPktTooBigs"))
        }
    })
}

/// A value of /proc/net/snmp: a `Group:` line of names, then one of values.
fn snmp_value(text: &str, group: &str, name: &str) -> Result<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("/proc/net/snmp has no {group} lines");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| anyhow!("/proc/net/snmp has no {group} {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_values_are_found_by_name() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Icmp: InMsgs InErrors InCsumErrors InDestUnreachs\nIcmp: 7 0 0 5\n";
        assert_eq!(snmp_value(text, "Icmp", "InDestUnreachs").unwrap(), 5);
        assert_eq!(snmp_value(text, "Ip", "DefaultTTL").unwrap(), 64);
        assert!(snmp_value(text, "Icmp", "OutMsgs").is_err());
        assert!(snmp_value(text, "Udp", "InDatagrams").is_err());
    }
}
