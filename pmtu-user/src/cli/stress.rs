//! `pmtu stress`: many flows at once, each from its own fake host with its own MTU, verified;
//! then how much PMTU state REMOTE kept. The engine is `pmtu::suite::stress`; this file wires
//! in the lab (as `pmtu run` does: [`super::run::setup`]), REMOTE's services for the run, the
//! progress display and the output.
use std::{
    io::IsTerminal as _,
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{anyhow, bail, Context as _, Result};
use ipnet::IpNet;

use pmtu::{
    config::Topology,
    lab::plan::{lab_of_local_ns, STRESS_NET, STRESS_NET6},
    net::{
        netns,
        probe::{probe_chargen, probe_echo},
    },
    signals,
    suite::{
        outfile::OutFile,
        random_u32,
        stress::{
            self, flows, kernel,
            page::{self, PageInfo},
            plot,
            report::{Client, Report},
            Hosts, Kind, Live, Plan, MAX_CONCURRENCY,
        },
        Ctx, ProfileName,
    },
    xdp::responder::AttachMode,
};

use super::{
    exit, require_root, run,
    stress_lab::{events_lost, link_losses, LinkQueue, StressService, LAB_TCP_PORT, LAB_UDP_PORT},
    Usage,
};

/// Flows at once by default: on 2 cores 128 verify more TCP flows a second than 256 (about
/// 11,000 against 6,000 to 10,000) and overflow REMOTE's veth ring less; against a lab's qemu
/// guest (emulated, one CPU, inetd forking a chargen per connection) fewer, or its services
/// fall behind and flows time out.
const DEFAULT_CONCURRENCY: usize = 128;
const GUEST_CONCURRENCY: usize = 8;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
In the built-in lab every flow comes from its own host in 198.18.0.0/15 and 2001:db8:5000::/48, \
and the run starts its own `pmtu serve` in REMOTE; on a real REMOTE (LOCAL_IF ... FAKE_NET_ADDR6 \
set) the hosts come from FAKE_NET and FAKE_NET6, whose size bounds the flows, and the services are \
REMOTE's own (--tcp-port, --udp-port).

Exit codes: 0 every flow verified; 1 a flow FAILed (REMOTE is broken); 2 usage error; 125 could \
not test: an invalid run (the responder lost events, or the link dropped frames: failures may \
come from them) or a set-up error; 130, 143, 129 stopped by SIGINT, SIGTERM, SIGHUP (after printing what was measured).")]
pub struct StressArgs {
    /// Flows in all (each from its own fake host).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub flows: u64,
    /// Flows at once, at most 4000: each holds one rule in the responder's LPM trie (4096
    /// entries per family, a few of them the lab's prefixes) [default: 128; 8 against a
    /// lab's qemu guest, whose inetd forks a process per connection]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Flows started per second at most (default: as fast as the concurrency allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Kinds of flows, taken in turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tcp4,tcp6,udp4,udp6"
    )]
    pub mix: Vec<Kind>,
    /// MTUs announced, each flow its own drawn from MIN-MAX (IPv6 at least 1280, IPv4 576;
    /// below the 1500 of the packets answered).
    #[arg(long, default_value = "1280-1400", value_parser = parse_mtu_range)]
    pub mtu: RangeInclusive<u16>,
    /// Earliest destinations of each kind probed again afterwards (state capacity); 0: none.
    #[arg(long, default_value_t = 100)]
    pub sample: usize,
    /// Who drives the flows: fake hosts (verified), or LOCAL's kernel sockets doing the same
    /// exchange without PMTU (REMOTE's own ceiling).
    #[arg(long, value_enum, default_value_t = Client::Fake)]
    pub client: Client,
    /// REMOTE's bulk-sending TCP service (default: chargen, 19; the lab's own `pmtu serve`).
    #[arg(long)]
    pub tcp_port: Option<u16>,
    /// REMOTE's UDP echo service (default: 7; the lab's own `pmtu serve`).
    #[arg(long)]
    pub udp_port: Option<u16>,
    /// Output: a summary for people, or one JSON object.
    #[arg(long, value_enum, default_value_t = StressFormat::Human)]
    pub format: StressFormat,
    /// Draw verified flows per second and the latency distribution to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write one self-contained HTML page: the summary, the figures per kind, REMOTE's state
    /// capacity, the failures, and the charts of --plot.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Expected behaviour of REMOTE's OS.
    #[arg(long, value_enum, default_value_t = ProfileName::Linux)]
    pub profile: ProfileName,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StressFormat {
    Human,
    Json,
}

fn parse_mtu_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let num = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| format!("`{s}` is not an MTU (MIN-MAX, e.g. 1280-1400)"))
    };
    let (lo, hi) = (num(lo)?, num(hi)?);
    if lo > hi {
        return Err(format!("{lo} is above {hi}: give MIN-MAX, e.g. 1280-1400"));
    }
    if hi >= stress::FULL_SIZE {
        return Err(format!(
            "{hi} is not below {}: the packets answered are full-size 1500-byte ones",
            stress::FULL_SIZE
        ));
    }
    Ok(lo..=hi)
}

/// Refuses what the run cannot do, before anything is set up.
fn check(args: &StressArgs) -> Result<(), Usage> {
    if let Some(c) = args.concurrency.filter(|c| *c == 0 || *c > MAX_CONCURRENCY) {
        return Err(Usage(format!(
            "--concurrency {c} is not within 1..={MAX_CONCURRENCY}: every flow holds a rule in the responder's 4096-entry LPM trie"
        )));
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(Usage(format!(
                "--rate {r} is not a positive number of flows per second"
            )));
        }
    }
    for k in &args.mix {
        if *args.mtu.start() < k.min_mtu() {
            let why = if k.v6() {
                "IPv6's minimum MTU, RFC 8200"
            } else {
                "every IPv4 host accepts 576, RFC 791"
            };
            return Err(Usage(format!(
                "--mtu {}-{}: {} flows need at least {} ({why})",
                args.mtu.start(),
                args.mtu.end(),
                k.name(),
                k.min_mtu()
            )));
        }
    }
    Ok(())
}

pub async fn cli(args: StressArgs, lab_name: &str, mode: AttachMode) -> Result<ExitCode> {
    check(&args)?;
    require_root("pmtu stress")?;
    if let Some(path) = &args.plot {
        std::fs::File::create(path)
            .with_context(|| format!("cannot write the plot {}", path.display()))?;
    }
    // Fail now, not after the run (an existing file stays as it is until the run's end).
    let page = args
        .report
        .as_deref()
        .map(|path| OutFile::create(path, "report"))
        .transpose()?;
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let real_remote = Topology::from_env_if_set()?.is_some();
    let setup = run::setup(lab_name, mode, args.profile, None)?;
    let remote = run::lab_kind(&setup, lab_name);
    let (ctx, temp) = setup.context(None, args.profile)?;
    let ctx = Arc::new(ctx);
    let page = page.map(|file| {
        let info = PageInfo {
            kernel: String::new(),
            remote,
            started,
            command: shell_words::join(std::env::args()),
        };
        (file, info)
    });
    let result = with_context(&args, ctx.clone(), real_remote, page).await;
    drop(ctx);
    drop(temp);
    result
}

async fn with_context(
    args: &StressArgs,
    ctx: Arc<Ctx>,
    real_remote: bool,
    page: Option<(OutFile, PageInfo)>,
) -> Result<ExitCode> {
    let t = ctx.topo.clone();
    let (hosts, service) = if real_remote {
        let hosts = Hosts::new(
            t.fake_net,
            t.fake_net6,
            &[t.fake_net_addr.into(), t.fake_net_addr6.into()],
        );
        (hosts, None)
    } else {
        check_lab_has_stress_nets(&ctx)?;
        // A qemu guest has no `pmtu` binary: its inetd's chargen and echo serve the run.
        let service = match (args.tcp_port, args.udp_port, &t.remote_netns) {
            (None, None, Some(_)) => Some(StressService::start(&t)?),
            _ => None,
        };
        (Hosts::new(STRESS_NET, STRESS_NET6, &[]), service)
    };
    let default_ports = match &service {
        Some(_) => (LAB_TCP_PORT, LAB_UDP_PORT),
        None => (19, 7),
    };
    let plan = Plan {
        flows: args.flows,
        concurrency: args
            .concurrency
            .unwrap_or(match (real_remote, &t.remote_netns) {
                (false, None) => GUEST_CONCURRENCY,
                _ => DEFAULT_CONCURRENCY,
            }),
        rate: args.rate,
        mix: args.mix.clone(),
        mtu: args.mtu.clone(),
        hosts,
        remote4: t.remote_addr,
        remote6: t.remote_addr6,
        tcp_port: args.tcp_port.unwrap_or(default_ports.0),
        udp_port: args.udp_port.unwrap_or(default_ports.1),
        sample: args.sample,
        seed: random_u32() as u64,
    };
    check_hosts(&plan, real_remote)?;
    check_services(&t, &plan)?;
    let _queues = if real_remote {
        None
    } else {
        LinkQueue::set(&t)?
    };
    ctx.reset_routes()
        .context("forgetting REMOTE's path MTUs before the run")?;

    let lost_before = events_lost(&ctx)?;
    let losses_before = link_losses(&ctx, &t, real_remote)?;
    let live = Arc::new(Live::default());
    let progress = Progress::start(live.clone(), plan.flows);
    let stats = match args.client {
        Client::Fake => {
            let flow_ctx = ctx.clone();
            stress::drive(&plan, &live, signals::stop(), move |spec| {
                let ctx = flow_ctx.clone();
                async move { flows::run(&ctx, spec).await }
            })
            .await
        }
        Client::Kernel => kernel_client(&plan, &t, live.clone()).await,
    };
    progress.finish();
    let mut stats = stats?;
    let capacity = if args.client == Client::Fake && !stats.interrupted && args.sample > 0 {
        eprintln!("stress: probing the earliest destinations again (state capacity)");
        stress::probe_earliest(ctx.clone(), plan.concurrency, &mut stats, signals::stop()).await?
    } else {
        Default::default()
    };
    let mut report = Report::new(&plan, args.client, &stats);
    report.capacity = capacity;
    if args.client == Client::Fake {
        report.set_events_lost(events_lost(&ctx)?.saturating_sub(lost_before));
    }
    let (icmp_errors, dropped) = link_losses(&ctx, &t, real_remote)? - losses_before;
    match args.client {
        Client::Fake => report.set_frames_dropped(icmp_errors, dropped),
        // Nothing is judged from the kernel client's frames: only reported.
        Client::Kernel => report.frames_dropped = Some(dropped),
    }
    report.add_usage();
    match args.format {
        StressFormat::Human => print!("{}", report.human()),
        StressFormat::Json => println!("{}", report.json()),
    }
    let latency_name = match args.client {
        Client::Fake => "PTB to resend",
        Client::Kernel => "exchange",
    };
    let title = format!(
        "pmtu stress: {} verified flows, {} flows/s",
        report.verified, report.verified_flows_per_s
    );
    if let Some((file, mut info)) = page {
        info.kernel = match ctx.remote("uname", &["-sr"]) {
            Ok(k) => k.trim().to_string(),
            Err(e) => format!("unknown (uname on REMOTE: {e:#})"),
        };
        let charts = plot::svg_text(
            &title,
            &report.verified_per_second,
            &stats.latency_us,
            latency_name,
        )?;
        let path = file.target().to_path_buf();
        file.commit(|out| page::write(out, &info, &report, &charts))?;
        eprintln!("stress: wrote the report to {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot::write_svg(
            path,
            &title,
            &report.verified_per_second,
            &stats.latency_us,
            latency_name,
        )?;
        eprintln!("stress: wrote {}", path.display());
    }
    if stats.interrupted {
        eprintln!("pmtu: interrupted; cleaned up");
        return Ok(ExitCode::from(signals::exit_code().unwrap_or(130)));
    }
    // Lost events or dropped frames may be what made flows fail: then REMOTE is not judged.
    Ok(ExitCode::from(if !report.valid {
        exit::COULD_NOT_TEST
    } else if report.failed > 0 || !report.failures.is_empty() {
        exit::FAILED
    } else {
        exit::PASSED
    }))
}

/// REMOTE routes the stress prefixes via LOCAL. A namespace lab has the routes from its
/// set-up (a lab from before they existed cannot run stress); a qemu guest's are added here,
/// over ssh, for as long as the guest lives.
fn check_lab_has_stress_nets(ctx: &Ctx) -> Result<()> {
    let t = &ctx.topo;
    let guest = t.remote_netns.is_none();
    if guest {
        let script = format!(
            "ip route replace {STRESS_NET} via {} && ip -6 route replace {STRESS_NET6} via {}",
            t.local_addr, t.local_addr6
        );
        ctx.remote_script(&script)
            .context("routing the stress prefixes via LOCAL in the guest")?;
    }
    // Without the route every flow would look like REMOTE ignoring its ICMP: a lab problem,
    // said before any flow starts.
    let lab = t
        .local_netns
        .as_deref()
        .and_then(lab_of_local_ns)
        .unwrap_or("pmtu");
    for (family, net) in [
        ("-4", STRESS_NET.to_string()),
        ("-6", STRESS_NET6.to_string()),
    ] {
        let routes = ctx.remote("ip", &[family, "route", "show", &net])?;
        if routes.trim().is_empty() {
            if guest {
                bail!("the guest of lab `{lab}` has no route to the stress prefix {net} although it was just added: `pmtu lab down --lab {lab}` and try again");
            }
            bail!(
                "lab `{lab}` has no route to the stress prefix {net} on REMOTE (made by an older pmtu?): `pmtu lab up --lab {lab}` rebuilds it"
            );
        }
    }
    Ok(())
}

/// Every flow needs a host of its own: a real REMOTE's FAKE_NET bounds the run.
fn check_hosts(plan: &Plan, real_remote: bool) -> Result<()> {
    for v6 in [false, true] {
        let needed: u64 = Kind::ALL
            .iter()
            .filter(|k| k.v6() == v6)
            .map(|k| plan.flows_of(*k))
            .sum();
        let have = plan.hosts.count(v6);
        if needed as u128 > have {
            let (net, var) = if v6 {
                (IpNet::V6(plan.hosts.v6), "FAKE_NET6")
            } else {
                (IpNet::V4(plan.hosts.v4), "FAKE_NET")
            };
            let hint = if real_remote {
                format!("{var} allows {have} distinct hosts: lower --flows or widen {var}")
            } else {
                format!("{net} allows {have}: lower --flows")
            };
            return Err(Usage(format!(
                "--flows {} needs {needed} IPv{} fake hosts, one per flow; {hint}",
                plan.flows,
                if v6 { 6 } else { 4 }
            ))
            .into());
        }
    }
    Ok(())
}

/// REMOTE's services answer LOCAL on every family the mix uses.
fn check_services(t: &Topology, plan: &Plan) -> Result<()> {
    let mut checks: Vec<(SocketAddr, bool)> = Vec::new();
    for k in &plan.mix {
        let ip: IpAddr = if k.v6() {
            t.remote_addr6.into()
        } else {
            t.remote_addr.into()
        };
        let port = if k.tcp() {
            plan.tcp_port
        } else {
            plan.udp_port
        };
        let c = (SocketAddr::new(ip, port), k.tcp());
        if !checks.contains(&c) {
            checks.push(c);
        }
    }
    netns::run_in(t.local_netns.as_deref(), || {
        for (addr, tcp) in &checks {
            let result = if *tcp {
                probe_chargen(*addr)
            } else {
                probe_echo(*addr)
            };
            result.map_err(|e| {
                let what = if *tcp { "TCP bulk-sending (chargen)" } else { "UDP echo" };
                anyhow!("REMOTE's {what} service at {addr} does not answer ({e}): check --tcp-port / --udp-port")
            })?;
        }
        Ok(())
    })
}

/// The kernel client runs on a runtime whose threads live in LOCAL's namespace.
async fn kernel_client(plan: &Plan, t: &Topology, live: Arc<Live>) -> Result<stress::stats::Stats> {
    let plan = plan.clone();
    let (local4, local6): (IpAddr, IpAddr) = (t.local_addr.into(), t.local_addr6.into());
    let ns = t.local_netns.clone();
    tokio::task::spawn_blocking(move || {
        let runtime = match &ns {
            Some(ns) => netns::runtime_in(ns, 2)?,
            None => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?,
        };
        runtime.block_on(stress::drive(&plan, &live, signals::stop(), move |spec| {
            let local = if spec.kind.v6() { local6 } else { local4 };
            kernel::run(spec, local)
        }))
    })
    .await
    .context("the kernel client")?
}

/// Flows started, verified and failed as the run goes: a bar on a terminal, else a line a
/// second, on stderr.
struct Progress {
    task: tokio::task::JoinHandle<()>,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn start(live: Arc<Live>, flows: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(flows);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} started, {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let period = if shown.is_some() {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(1)
            };
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            let (mut last_verified, mut last_at) = (0u64, Instant::now());
            loop {
                tick.tick().await;
                let (s, v, f) = live.get();
                let now = Instant::now();
                let dt = now.duration_since(last_at).as_secs_f64().max(1e-3);
                let rate = (v - last_verified.min(v)) as f64 / dt;
                (last_verified, last_at) = (v, now);
                let msg = format!("{v} verified, {f} failed, {rate:.0} flows/s");
                match &shown {
                    Some(bar) => {
                        bar.set_position(s);
                        bar.set_message(msg);
                    }
                    None => eprintln!(
                        "stress: {:.0} s: {s} started, {msg}",
                        started.elapsed().as_secs_f64()
                    ),
                }
            }
        });
        Progress { task, bar }
    }

    fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
