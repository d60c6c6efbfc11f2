//! `pmtu bench responder`: how many ICMP errors a second the XDP responder sends, against a
//! kernel router doing the same job, with the router the bottleneck.
//!
//! Method: REMOTE floods oversized (1400-byte) DF UDP datagrams for `--seconds`: once in the lab
//! toward FAKE_NET_ADDR(6), answered by the lab's XDP responder (an answer rule, MTU 1300, no
//! budget, events drained as in a run), once in a kernel router lab (`lab::kernel_router`: the
//! router's link onward 1300 bytes, its ICMP rate limits off). The frames are sent by an XDP
//! program run in live-frames mode from REMOTE's namespace (BPF_PROG_TEST_RUN, Linux 5.18 and
//! later), out of REMOTE's veth faster than either router can answer; where that is
//! unavailable, from a packet socket (then the sender may be the bottleneck: said on stderr).
//! The answers are counted at REMOTE's veth by an XDP program that drops them, in place of the
//! pass-through program for the time of the floods, so REMOTE's stack costs nothing.
use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use ipnet::IpNet;

use pmtu::{
    lab::{
        self,
        kernel_router::{self, KernelRouterLab},
        plan::REMOTE_IF,
    },
    net::rawsock::RawSocket,
    signals,
    suite::ProfileName,
    wire::{udp_frame, L2},
    xdp::{
        flood::{Answers, BenchPrograms},
        responder::{link_pin, AttachMode},
        rules::RuleSpec,
    },
};
use pmtu_common::{PROG_COUNT, PROG_PASS};

use super::run;

/// The IP length of the flood's datagrams: above the 1300-byte next hop of both routers.
const FLOOD_IP_LEN: usize = 1400;
const MTU: u32 = kernel_router::NEXT_HOP_MTU;

#[derive(clap::Args, Debug)]
pub struct ResponderArgs {
    /// Seconds each flood lasts.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Threads sending the flood (two keep both routers busy on a two-CPU machine).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
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

/// Where a flood goes from and to.
struct Target<'a> {
    ns: &'a str,
    iface: &'a str,
    l2: L2,
    src: IpAddr,
    dst: IpAddr,
}

/// How the floods are sent and counted.
struct Bench {
    progs: BenchPrograms,
    seconds: Duration,
    senders: u32,
    /// Whether live-frames sending works (until it fails once).
    live: bool,
}

pub async fn cli(args: ResponderArgs, lab_name: &str, mode: AttachMode) -> Result<()> {
    if !(args.seconds.is_finite() && (0.1..=60.0).contains(&args.seconds)) {
        bail!("--seconds {} is out of range (0.1 to 60)", args.seconds);
    }
    let mut bench = Bench {
        progs: BenchPrograms::load().context("loading the benchmark's XDP programs")?,
        seconds: Duration::from_secs_f64(args.seconds),
        senders: args.senders,
        live: true,
    };
    let xdp = xdp_floods(&mut bench, lab_name, mode)?;
    let kernel = kernel_floods(&mut bench, lab_name)?;
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
fn xdp_floods(bench: &mut Bench, lab: &str, mode: AttachMode) -> Result<Vec<Flood>> {
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
    // REMOTE's veth runs the lab's pass-through program on a pinned link: the counter takes its
    // place for the floods.
    let pin = link_pin(&lab::pin_dir(lab), PROG_PASS, REMOTE_IF);
    let result = (|| -> Result<Vec<Flood>> {
        let mut responder = ctx
            .responder
            .lock()
            .map_err(|_| anyhow!("the responder's lock is poisoned"))?;
        for r in rules {
            responder.set_rule(r, RuleSpec::answer(MTU))?;
        }
        drop(responder);
        bench.progs.swap_link(&pin, PROG_COUNT)?;
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
            floods.push(bench.flood(&target).context("the XDP responder's flood")?);
        }
        Ok(floods)
    })();
    let restored = bench.progs.swap_link(&pin, PROG_PASS);
    if let Ok(mut responder) = ctx.responder.lock() {
        for r in rules {
            let _ = responder.remove_rule(r);
        }
    }
    drop(ctx);
    drop(kept);
    let floods = result?;
    restored.context("putting REMOTE's pass-through program back")?;
    Ok(floods)
}

/// The floods answered by a kernel router: IPv4, then IPv6.
fn kernel_floods(bench: &mut Bench, lab: &str) -> Result<Vec<Flood>> {
    let rl = KernelRouterLab::up(lab)?;
    // The counter on the sender's veth; the router's veth takes the sender's XDP frames only
    // with a program of its own.
    bench
        .progs
        .attach(PROG_COUNT, &rl.sender_ns, kernel_router::SENDER_IF)?;
    bench
        .progs
        .attach(PROG_PASS, &rl.router_ns, kernel_router::ROUTER_IN_IF)?;
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
        floods.push(bench.flood(&target).context("the kernel router's flood")?);
    }
    Ok(floods)
}

impl Bench {
    /// Sends the flood from `target.ns` for the bench's time and counts the answers that
    /// arrived there.
    fn flood(&mut self, target: &Target) -> Result<Flood> {
        let v4 = target.src.is_ipv4();
        let header = if v4 { 20 + 8 } else { 40 + 8 };
        let frame = udp_frame(
            &target.l2,
            SocketAddr::new(target.src, 40000),
            SocketAddr::new(target.dst, 9),
            &vec![0x5a; FLOOD_IP_LEN - header],
        )?;
        let answered = |a: Answers| if v4 { a.v4 } else { a.v6 };
        let before = answered(self.progs.answers()?);
        let start = Instant::now();
        let mut sent = None;
        if self.live {
            match self
                .progs
                .set_flood_frame(&frame)
                .and_then(|()| self.live_flood(target, &frame))
            {
                Ok(n) => sent = Some(n),
                Err(_) if signals::requested() => bail!("stopped by a signal"),
                Err(e) => {
                    eprintln!(
                        "pmtu: sending from XDP in live-frames mode failed ({e:#}; it needs Linux 5.18): the floods are sent from a packet socket, which may be slower than the routers"
                    );
                    self.live = false;
                }
            }
        }
        let start = if sent.is_some() {
            start
        } else {
            Instant::now()
        };
        let sent = match sent {
            Some(n) => n,
            None => socket_flood(target, &frame, self.seconds, self.senders)?,
        };
        let took = start.elapsed().as_secs_f64();
        if signals::requested() {
            bail!("stopped by a signal");
        }
        // Answers still on their way: read until the count stops moving (at most a second).
        let mut last = answered(self.progs.answers()?);
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(20));
            let now = answered(self.progs.answers()?);
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
            sent,
            answers,
            seconds: took,
        })
    }

    /// The flood sent by XDP programs in live-frames mode, one per sender thread.
    fn live_flood(&self, target: &Target, frame: &[u8]) -> Result<u64> {
        let stop = || signals::requested();
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..self.senders)
                .map(|_| {
                    s.spawn(|| {
                        self.progs
                            .flood(target.ns, target.iface, frame, self.seconds, &stop)
                    })
                })
                .collect();
            let mut sent = 0;
            for t in threads {
                sent += t
                    .join()
                    .map_err(|_| anyhow!("a sender thread panicked"))??;
            }
            Ok(sent)
        })
    }
}

/// The flood sent whole on packet sockets, one per sender thread.
fn socket_flood(target: &Target, frame: &[u8], seconds: Duration, senders: u32) -> Result<u64> {
    let socks = (0..senders)
        .map(|_| RawSocket::open(Some(target.ns), target.iface))
        .collect::<Result<Vec<_>>>()?;
    let sent = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for sock in &socks {
            let (sent, failed) = (&sent, &failed);
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
    if failed.load(Ordering::Relaxed) {
        bail!("sending the flood on {} failed", target.iface);
    }
    Ok(sent.into_inner())
}
