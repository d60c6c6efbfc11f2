//! `pmtu bench xdp`: the cost of each path through the XDP program, via BPF_PROG_TEST_RUN.
//!
//! Method: every path is run the same way, one program run per BPF_PROG_TEST_RUN call, many
//! calls, and the kernel's own per-run time is averaged. (With `repeat > 1` the kernel runs the
//! program again on the same buffer without restoring it, so an ICMP path would turn the frame
//! into an ICMP error on the first run and measure the pass-through path afterwards.) The
//! per-call fixed cost of the harness is measured with the empty program (`pmtu_pass`) and shown.
//! The paths that leave their frame unchanged are also run with `repeat`, which takes the
//! harness out and shows the program's own cost per packet.
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Result};
use ipnet::IpNet;
use pmtu_common::{PROG_FLOOR, PROG_PASS, PROG_RESPONDER};

use pmtu::{
    lab::plan::{
        data_segment, FAKE_NET_ADDR as FAKE4, FAKE_NET_ADDR6 as FAKE6, LOCAL_ADDR as ROUTER4,
        LOCAL_ADDR6 as ROUTER6, REMOTE_ADDR as REMOTE4, REMOTE_ADDR6 as REMOTE6,
    },
    xdp::{
        responder::{AttachMode, Responder, XDP_DROP, XDP_PASS, XDP_TX},
        rules::RuleSpec,
    },
};

use super::require_root;

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
        /// Only these paths (and the floor and the empty program the ratio needs), e.g. to
        /// profile one.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// ICMP errors a second that reach REMOTE from the XDP responder and from a kernel router,
    /// under a flood of oversized DF datagrams, and their ratio.
    Responder(super::bench_responder::ResponderArgs),
}

const OTHER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

struct Path {
    name: &'static str,
    prog: &'static str,
    frame: Vec<u8>,
    expect: u32,
}

pub async fn cli(args: BenchArgs, lab_name: &str, mode: AttachMode) -> Result<()> {
    require_root("pmtu bench")?;
    match args.what {
        BenchWhat::Xdp { runs, only } => xdp(runs, &only),
        BenchWhat::Responder(args) => super::bench_responder::cli(args, lab_name, mode).await,
    }
}

fn xdp(runs: u32, only: &[String]) -> Result<()> {
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
    if let Some(unknown) = only
        .iter()
        .find(|n| !paths.iter().any(|p| p.name == n.as_str()))
    {
        bail!(
            "no path `{unknown}`; the paths are {}",
            paths.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        );
    }
    let paths: Vec<Path> = paths
        .into_iter()
        .filter(|p| {
            only.is_empty()
                || matches!(p.name, "empty-program" | "floor")
                || only.iter().any(|n| n == p.name)
        })
        .collect();
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
