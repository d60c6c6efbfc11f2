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
    lab::{self, Found, LabLock, UpOptions},
    net::rawsock::RawSocket,
    remote::Remote,
    scenarios, signals,
    suite::{
        capture::{self, Capture},
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
}

/// What keeps the run's set-up alive: a temporary lab, or the responder we attached ourselves,
/// and the lab's lock for as long as the run uses a lab.
struct Setup {
    topo: Topology,
    responder: Responder,
    /// A lab made for this run; dropping it removes the lab (and releases its lock).
    _temp: Option<lab::TempLab>,
    /// The lock of a kept lab this run uses.
    _lock: Option<LabLock>,
}

fn setup(lab_name: &str, mode: AttachMode, profile: ProfileName) -> Result<Setup> {
    let wait = lab::lock::wait_from_env()?;
    let stop = || signals::requested();
    if let Some(topo) = Topology::from_env_if_set()? {
        if topo.remote_netns.is_none() && topo.remote_ssh.is_none() {
            bail!("REMOTE_SSH is not set: a real REMOTE needs it to reset its routes (or give REMOTE_NETNS for a REMOTE in a local namespace)");
        }
        // A bad REMOTE_SSH is a set-up error now, not a failed scenario later.
        Remote::new(
            topo.remote_netns.as_deref(),
            topo.remote_ssh.as_deref(),
            topo.local_netns.as_deref(),
        )?;
        log::info!("REMOTE from the environment, LOCAL_IF {}", topo.local_if);
        // Variables that describe a lab (`pmtu lab status --env`) use its responder.
        let lab_of_ns = topo
            .local_netns
            .as_deref()
            .and_then(|ns| ns.strip_suffix("-local"))
            .filter(|name| lab::exists(name));
        if let Some(name) = lab_of_ns {
            let lock = LabLock::acquire(name, wait, &stop)?;
            let lab = lab::open(name)?;
            lab::clear_traces(&lab)?;
            return Ok(Setup {
                topo,
                responder: lab.responder()?,
                _temp: None,
                _lock: Some(lock),
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
            _lock: None,
        });
    }
    if profile != ProfileName::Linux {
        bail!("the built-in lab's REMOTE is this machine's Linux kernel: use --profile linux, or describe a real REMOTE with LOCAL_IF ... FAKE_NET_ADDR6");
    }
    // From here on this run is the lab's only user, until it ends or dies.
    let lock = LabLock::acquire(lab_name, wait, &stop)?;
    let temp = match lab::find(&lock)? {
        Found::Ready(lab) => {
            lab::clear_traces(&lab)?;
            return Ok(Setup {
                responder: lab.responder()?,
                topo: lab.topology,
                _temp: None,
                _lock: Some(lock),
            });
        }
        Found::Stale {
            reason,
            temporary: false,
        } => {
            eprintln!("pmtu: rebuilding lab `{lab_name}` ({reason}); it stays up");
            let lab = lab::up_locked(&lock, mode, &UpOptions::from_env()?, false)?;
            return Ok(Setup {
                responder: lab.responder()?,
                topo: lab.topology,
                _temp: None,
                _lock: Some(lock),
            });
        }
        Found::Stale {
            reason,
            temporary: true,
        } => {
            eprintln!("pmtu: replacing lab `{lab_name}`: {reason}");
            lab::TempLab::up_locked(lock, mode, &UpOptions::from_env()?)?
        }
        Found::Nothing => {
            eprintln!(
                "pmtu: no lab `{lab_name}`; making a temporary one (`pmtu lab up` keeps one up)"
            );
            lab::TempLab::up_locked(lock, mode, &UpOptions::from_env()?)?
        }
    };
    Ok(Setup {
        responder: temp.responder()?,
        topo: temp.topology.clone(),
        _temp: Some(temp),
        _lock: None,
    })
}

/// Resolves scenario names (all of them for an empty list), refusing unknown ones.
pub fn select(names: &[String]) -> Result<Vec<&'static Scenario>> {
    if names.is_empty() {
        return Ok(scenarios::ALL.iter().collect());
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
    let selected = select(names)?;
    require_root("pmtu run")?;
    super::lab::require_capabilities("pmtu run")?;
    if let Some(path) = &args.pcap {
        // Fail now, not after the run (an existing file stays as it is until the run's end).
        capture::check_writable(path)?;
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
    };

    // LOCAL set-ups that would make scenarios blame REMOTE are an error, never a FAIL; check-setup
    // alone reports them as its own failures.
    let only_check_setup = selected
        .iter()
        .all(|s| s.name == scenarios::check_setup::SCENARIO.name);
    if !only_check_setup {
        let problems = scenarios::check_setup::local_setup_problems(&ctx).await;
        if !problems.is_empty() {
            bail!(
                "LOCAL's set-up would make scenarios fail for LOCAL's doing, not REMOTE's: {}",
                problems.join("; ")
            );
        }
    }
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
