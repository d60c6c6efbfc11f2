//! `pmtu run [NAME...]` and `pmtu NAME`: set up the context, run scenarios, report.
//!
//! Where the configuration comes from, in order: the original's environment variables
//! (LOCAL_IF ... FAKE_NET_ADDR6) for a real REMOTE; else an existing lab (`--lab`, left up);
//! else a temporary lab made for this run and removed at its end, also on Ctrl-C or error.
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use ipnet::IpNet;

use pmtu::{
    config::Topology,
    lab,
    net::rawsock::RawSocket,
    scenarios, signals,
    suite::{
        capture::Capture,
        fakes::FakeHosts,
        hub::Hub,
        report::{print_summary, Format},
        run, Ctx, Profile, ProfileName, Scenario, Verdict,
    },
    wire::L2,
    xdp::responder::{AttachMode, Responder, RuleSpec},
};

use super::require_root;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Expected behaviour of REMOTE's OS (the lab's REMOTE is this Linux kernel).
    #[arg(long, value_enum, default_value_t = ProfileName::Linux)]
    pub profile: ProfileName,
    /// Output: one line per scenario, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Write every frame sent and every packet reported or answered to this pcap file.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// With no names: also the long scenarios (expire*, blackhole*: seconds each).
    #[arg(long)]
    pub all: bool,
}

/// What keeps the run's set-up alive: a temporary lab, or the responder we attached ourselves.
struct Setup {
    topo: Topology,
    responder: Responder,
    /// A lab made for this run; dropping it removes the lab.
    _temp: Option<lab::TempLab>,
}

fn setup(lab_name: &str, mode: AttachMode, profile: ProfileName) -> Result<Setup> {
    if let Some(topo) = Topology::from_env_if_set()? {
        if topo.remote_netns.is_none() && topo.remote_ssh.is_none() {
            bail!("REMOTE_SSH is not set: a real REMOTE needs it to reset its routes (or give REMOTE_NETNS for a REMOTE in a local namespace)");
        }
        log::info!("REMOTE from the environment, LOCAL_IF {}", topo.local_if);
        // Variables that describe a lab (`pmtu lab status --env`) use its responder.
        let lab_of_ns = topo
            .local_netns
            .as_deref()
            .and_then(|ns| ns.strip_suffix("-local"))
            .filter(|name| lab::exists(name));
        if let Some(name) = lab_of_ns {
            let responder = lab::open(name)?.responder()?;
            return Ok(Setup {
                topo,
                responder,
                _temp: None,
            });
        }
        let mut responder = Responder::load(None)?;
        responder.set_routers(topo.local_addr, topo.local_addr6)?;
        responder.set_rule(IpNet::V4(topo.fake_net), RuleSpec::observe())?;
        responder.set_rule(IpNet::V6(topo.fake_net6), RuleSpec::observe())?;
        responder.attach(topo.local_netns.as_deref(), &topo.local_if, mode)?;
        return Ok(Setup {
            topo,
            responder,
            _temp: None,
        });
    }
    if profile != ProfileName::Linux {
        bail!("the built-in lab's REMOTE is this machine's Linux kernel: use --profile linux, or describe a real REMOTE with LOCAL_IF ... FAKE_NET_ADDR6");
    }
    if lab::exists(lab_name) {
        match stale_reason(lab_name) {
            None => {
                let lab = lab::open(lab_name)?;
                return Ok(Setup {
                    responder: lab.responder()?,
                    topo: lab.topology,
                    _temp: None,
                });
            }
            Some(why) => eprintln!("pmtu: replacing lab `{lab_name}`: {why}"),
        }
    } else {
        eprintln!("pmtu: no lab `{lab_name}`; making a temporary one (`pmtu lab up` keeps one up)");
    }
    let temp = lab::TempLab::up(lab_name, mode)?;
    let marker = lab::state_dir(lab_name).join(TEMP_MARKER);
    std::fs::write(&marker, std::process::id().to_string())
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(Setup {
        responder: temp.responder()?,
        topo: temp.topology.clone(),
        _temp: Some(temp),
    })
}

/// In a temporary lab's state directory: the PID of the run that owns it.
const TEMP_MARKER: &str = "temporary-for-pid";

/// Why an existing lab must be rebuilt: a temporary lab whose run was killed, or a lab that is
/// incomplete. None for a lab that is fine to use.
fn stale_reason(name: &str) -> Option<String> {
    if let Ok(pid) = std::fs::read_to_string(lab::state_dir(name).join(TEMP_MARKER)) {
        let pid = pid.trim();
        let alive = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("pmtu"));
        if !alive {
            return Some(format!("a temporary lab left by a killed run (pid {pid})"));
        }
    }
    lab::open(name).err().map(|e| format!("{e:#}"))
}

/// Resolves scenario names (the quick suite for an empty list, with the long scenarios too
/// for `all`), refusing unknown ones.
pub fn select(names: &[String], all: bool) -> Result<Vec<&'static Scenario>> {
    if names.is_empty() {
        let long = scenarios::LONG.iter().filter(|_| all);
        return Ok(scenarios::ALL.iter().chain(long).collect());
    }
    if all {
        bail!("--all runs the whole suite: give either --all or scenario names, not both");
    }
    names
        .iter()
        .map(|n| {
            scenarios::find(n).with_context(|| {
                format!(
                    "unknown scenario `{n}`; known: {}",
                    scenarios::names().join(", ")
                )
            })
        })
        .collect()
}

pub async fn cli(
    names: &[String],
    args: RunArgs,
    lab_name: &str,
    mode: AttachMode,
) -> Result<ExitCode> {
    let selected = select(names, args.all)?;
    require_root("pmtu run")?;
    if let Some(path) = &args.pcap {
        // Fail now, not after the run.
        std::fs::File::create(path)
            .with_context(|| format!("cannot write the pcap file {}", path.display()))?;
    }
    let started = Instant::now();
    let mut setup = setup(lab_name, mode, args.profile)?;
    let capture = args.pcap.as_ref().map(|_| Arc::new(Capture::new()));
    if let Some(c) = &capture {
        c.set_routers(setup.topo.local_addr, setup.topo.local_addr6);
    }
    let topo = setup.topo.clone();
    let sock = RawSocket::open(topo.local_netns.as_deref(), &topo.local_if)?;
    let events = setup.responder.take_events()?;
    let hub = Hub::start(events, capture.clone());
    let ctx = Ctx {
        l2: L2 {
            src: topo.local_mac,
            dst: topo.remote_mac,
        },
        topo,
        sock,
        responder: Mutex::new(setup.responder),
        hub,
        capture: capture.clone(),
        profile: Profile::get(args.profile),
        // A lab's REMOTE is a namespace of this machine, ours to reconfigure.
        remote_is_ours: setup.topo.remote_netns.is_some(),
        fakes: FakeHosts::new(&setup.topo),
    };

    let (outcomes, interrupted) = run::run_all(&ctx, &selected, args.format, signals::stop()).await;
    print_summary(args.format, &outcomes, started.elapsed().as_millis() as u64);
    if let (Some(path), Some(c)) = (&args.pcap, &capture) {
        let n = c.write(path)?;
        eprintln!("pmtu: wrote {n} packets to {}", path.display());
    }
    drop(ctx);
    drop(setup._temp.take());
    if interrupted {
        eprintln!("pmtu: interrupted; cleaned up");
        return Ok(ExitCode::from(130));
    }
    let failed = outcomes.iter().any(|o| o.verdict == Verdict::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
