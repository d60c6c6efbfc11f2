//! `pmtu bench xdp`: the cost of each path through the XDP program, via BPF_PROG_TEST_RUN.
//!
//! Method: every path is run the same way, one program run per BPF_PROG_TEST_RUN call, many
//! calls, and the kernel's own per-run time is averaged. (With `repeat > 1` the kernel runs the
//! program again on the same buffer without restoring it, so an ICMP path would turn the frame
//! into an ICMP error on the first run and measure the pass-through path afterwards.) The
//! per-call fixed cost of the harness is measured with the empty program (`pmtu_pass`) and shown.
//! The paths that leave their frame unchanged are also run with `repeat`, which takes the
//! harness out and shows the program's own cost per packet.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};
use ipnet::IpNet;
use pmtu_common::{PROG_FLOOR, PROG_PASS, PROG_RESPONDER};

use crate::{
    lab::{LOCAL_MAC, REMOTE_MAC},
    responder::{Responder, RuleSpec, XDP_DROP, XDP_PASS, XDP_TX},
    wire::{tcp_frame, TcpFlags, TcpSegment, L2},
};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchWhat {
    /// Nanoseconds per packet for each path of the XDP program, and the ratio to the floor.
    Xdp {
        /// Program runs per path.
        #[arg(long, default_value_t = 200_000)]
        runs: u32,
    },
}

// The lab's addresses (see topology.rs); the benchmark and the XDP tests share them.
pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const REMOTE4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const FAKE4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 22);
pub const FAKE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x22);
const OTHER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// REMOTE's chargen data toward `dst` as LOCAL_IF receives it: TCP 19 -> 40000, seq 1000,
/// ack 1, a counting payload, IP length `ip_len`, from REMOTE_MAC to LOCAL_MAC.
pub fn data_segment(src: IpAddr, dst: IpAddr, ip_len: usize) -> Result<Vec<u8>> {
    let headers = if dst.is_ipv4() { 20 + 20 } else { 40 + 20 };
    let seg = TcpSegment {
        src,
        dst,
        sport: 19,
        dport: 40000,
        seq: 1000,
        ack: 1,
        flags: TcpFlags {
            ack: true,
            ..Default::default()
        },
        window: 512,
        mss: None,
        payload: (0..ip_len.saturating_sub(headers))
            .map(|i| i as u8)
            .collect(),
    };
    tcp_frame(
        &L2 {
            src: REMOTE_MAC,
            dst: LOCAL_MAC,
        },
        &seg,
    )
}

struct Path {
    name: &'static str,
    prog: &'static str,
    frame: Vec<u8>,
    expect: u32,
}

pub async fn cli(args: BenchArgs) -> Result<()> {
    crate::respond::require_root("pmtu bench")?;
    match args.what {
        BenchWhat::Xdp { runs } => xdp(runs),
    }
}

fn xdp(runs: u32) -> Result<()> {
    let mut responder = Responder::load(None)?;
    responder.set_routers(ROUTER4, ROUTER6)?;
    responder.set_rule(IpNet::from(IpAddr::V4(FAKE4)), RuleSpec::answer(1300))?;
    responder.set_rule(IpNet::from(IpAddr::V6(FAKE6)), RuleSpec::answer(1300))?;
    let mut events = responder.take_events()?;
    let big4 = data_segment(REMOTE4.into(), FAKE4.into(), 1500)?;
    let big6 = data_segment(REMOTE6.into(), FAKE6.into(), 1500)?;
    let paths = [
        Path {
            name: "empty-program",
            prog: PROG_PASS,
            frame: big4.clone(),
            expect: XDP_PASS,
        },
        Path {
            name: "floor",
            prog: PROG_FLOOR,
            frame: big4.clone(),
            expect: XDP_TX,
        },
        Path {
            name: "pass-through",
            prog: PROG_RESPONDER,
            frame: data_segment(REMOTE4.into(), OTHER4.into(), 1500)?,
            expect: XDP_PASS,
        },
        Path {
            name: "observe",
            prog: PROG_RESPONDER,
            frame: data_segment(REMOTE4.into(), FAKE4.into(), 1200)?,
            expect: XDP_DROP,
        },
        Path {
            name: "icmp-ipv4",
            prog: PROG_RESPONDER,
            frame: big4,
            expect: XDP_TX,
        },
        Path {
            name: "icmp-ipv6",
            prog: PROG_RESPONDER,
            frame: big6,
            expect: XDP_TX,
        },
    ];
    let mut results = Vec::new();
    let mut drained = Vec::new();
    for path in &paths {
        let mut total_ns: u128 = 0;
        for i in 0..runs {
            let out = responder.test_run(path.prog, &path.frame, 1)?;
            if out.action != path.expect {
                bail!(
                    "path {} returned XDP action {} instead of {}",
                    path.name,
                    out.action,
                    path.expect
                );
            }
            total_ns += out.duration.as_nanos();
            if i % 8192 == 0 {
                events.drain(&mut drained);
                drained.clear();
            }
        }
        let ns = total_ns as f64 / runs as f64;
        results.push((path.name, ns));
        println!("{} ns_per_packet={:.1}", path.name, ns);
    }
    events.drain(&mut drained);
    let get = |n: &str| {
        results
            .iter()
            .find(|(name, _)| *name == n)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    };
    let (harness, floor) = (get("empty-program"), get("floor"));
    let measured = ["pass-through", "observe", "icmp-ipv4", "icmp-ipv6"];
    let worst = measured.iter().map(|n| get(n) / floor).fold(0.0, f64::max);
    println!(
        "harness fixed cost per run: {harness:.1} ns (the empty program); {runs} runs per path"
    );
    // Paths that leave the frame as they found it can also run `repeat` times per call, which
    // takes the harness out: the program's own cost.
    for path in paths
        .iter()
        .filter(|p| p.expect != XDP_TX || p.prog == PROG_FLOOR)
    {
        let repeat = 4096;
        let calls = (runs / repeat).max(4);
        let mut total_ns: u128 = 0;
        for _ in 0..calls {
            total_ns += responder
                .test_run(path.prog, &path.frame, repeat)?
                .duration
                .as_nanos();
            events.drain(&mut drained);
            drained.clear();
        }
        println!(
            "repeat-mode {} program_ns_per_packet={:.1}",
            path.name,
            total_ns as f64 / calls as f64
        );
    }
    println!("worst ratio to floor: {worst:.2}");
    Ok(())
}
