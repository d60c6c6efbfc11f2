//! `pmtu run [NAME...]` and `pmtu NAME`: set up the context, run scenarios, report.
//!
//! Where the configuration comes from, in order: the original's environment variables
//! (LOCAL_IF ... FAKE_NET_ADDR6) for a real REMOTE; else an existing lab (`--lab`, left up);
//! else a temporary lab made for this run and removed at its end, also on Ctrl-C or error.
//! `--kernel IMAGE` makes that lab's REMOTE a qemu guest booted from IMAGE.
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
    lab::{self, vm::VmOptions, UpOptions},
    net::rawsock::RawSocket,
    scenarios, signals,
    suite::{
        capture::Capture,
        hub::Hub,
        report::{print_summary, print_target, Format, Target},
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
    #[command(flatten)]
    pub vm: VmArgs,
}

/// REMOTE as a qemu guest.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct VmArgs {
    /// REMOTE is a qemu guest booted from IMAGE: a bzImage, an ELF vmlinux, a Debian
    /// linux-image .deb, or `debian` (Debian's current kernel, fetched once)
    #[arg(long, value_name = "IMAGE")]
    pub kernel: Option<String>,
    /// The guest kernel's modules: a `make modules_install INSTALL_MOD_PATH=DIR` tree or
    /// lib/modules/RELEASE (default: beside IMAGE, or in the package)
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub modules: Option<PathBuf>,
}

impl VmArgs {
    pub fn options(&self) -> Option<VmOptions> {
        self.kernel.as_ref().map(|image| VmOptions {
            image: image.clone(),
            modules: self.modules.clone(),
        })
    }
}

/// What keeps the run's set-up alive: a temporary lab, or the responder we attached ourselves.
struct Setup {
    topo: Topology,
    responder: Responder,
    /// What the run is against (the kernel is filled in once the context exists).
    target: Target,
    /// A lab made for this run; dropping it removes the lab.
    _temp: Option<lab::TempLab>,
}

/// What a lab is, for people.
fn describe(lab: &lab::Lab) -> Target {
    match &lab.vm {
        Some(vm) => Target {
            lab: Some("vm".into()),
            remote_kernel: Some(vm.release.clone()),
            boot_to_ready_ms: lab.vm_times.map(|t| t.boot_to_ready.as_millis() as u64),
            ssh_login_ms: lab.vm_times.map(|t| t.ssh_login.as_millis() as u64),
            description: format!(
                "a qemu guest ({}) booted from {}, lab `{}`",
                vm.accel, vm.image, lab.name
            ),
            ..Target::default()
        },
        None => Target {
            lab: Some("netns".into()),
            remote_kernel: nix::sys::utsname::uname()
                .ok()
                .map(|u| u.release().to_string_lossy().into_owned()),
            description: format!("this machine's kernel in namespace {}", lab.remote_ns()),
            ..Target::default()
        },
    }
}

fn setup(lab_name: &str, mode: AttachMode, args: &RunArgs) -> Result<Setup> {
    let profile = args.profile;
    let vm = args.vm.options();
    if let Some(topo) = Topology::from_env_if_set()? {
        if vm.is_some() {
            bail!("--kernel makes a lab, but LOCAL_IF ... FAKE_NET_ADDR6 in the environment describe a real REMOTE: unset them, or drop --kernel");
        }
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
        let target = Target {
            lab: Some("remote".into()),
            description: format!("REMOTE_ADDR {}", topo.remote_addr),
            ..Target::default()
        };
        if let Some(name) = lab_of_ns {
            let responder = lab::open(name)?.responder()?;
            return Ok(Setup {
                topo,
                responder,
                target,
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
            target,
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
                if let Some(vm) = &vm {
                    if !lab.vm.as_ref().is_some_and(|r| vm.matches(r)) {
                        bail!(
                            "lab `{lab_name}` is up with REMOTE = {}, not a guest of {}: `pmtu lab \
                             down --lab {lab_name}` first, or give another --lab",
                            describe(&lab).description,
                            vm.image
                        );
                    }
                }
                return Ok(Setup {
                    responder: lab.responder()?,
                    target: describe(&lab),
                    topo: lab.topology,
                    _temp: None,
                });
            }
            Some(why) => eprintln!("pmtu: replacing lab `{lab_name}`: {why}"),
        }
    } else if let Some(vm) = &vm {
        eprintln!(
            "pmtu: no lab `{lab_name}`; booting a temporary one with REMOTE = a qemu guest of {} \
             (`pmtu lab up --kernel {}` keeps one up)",
            vm.image, vm.image
        );
    } else {
        eprintln!("pmtu: no lab `{lab_name}`; making a temporary one (`pmtu lab up` keeps one up)");
    }
    let making = Instant::now();
    let temp = match &vm {
        Some(vm) => lab::TempLab::up_vm(lab_name, mode, vm)?,
        None => lab::TempLab::up_with(lab_name, mode, &UpOptions::from_env()?)?,
    };
    let setup_ms = making.elapsed().as_millis() as u64;
    let marker = lab::state_dir(lab_name).join(TEMP_MARKER);
    std::fs::write(&marker, std::process::id().to_string())
        .with_context(|| format!("writing {}", marker.display()))?;
    if let Some(t) = temp.vm_times {
        log::info!(
            "guest ready: prepare {:.2} s, boot to READY {:.2} s, ssh login {:.2} s",
            t.prepare.as_secs_f64(),
            t.boot_to_ready.as_secs_f64(),
            t.ssh_login.as_secs_f64()
        );
    }
    Ok(Setup {
        responder: temp.responder()?,
        target: Target {
            setup_ms: Some(setup_ms),
            ..describe(&temp)
        },
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
    if let Some(path) = &args.pcap {
        // Fail now, not after the run.
        std::fs::File::create(path)
            .with_context(|| format!("cannot write the pcap file {}", path.display()))?;
    }
    let started = Instant::now();
    let mut setup = match setup(lab_name, mode, &args) {
        Ok(setup) => setup,
        Err(e) if signals::requested() => {
            log::info!("{e:#}");
            eprintln!("pmtu: interrupted; cleaned up");
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(e),
    };
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
    let mut target = std::mem::take(&mut setup.target);
    if target.remote_kernel.is_none() {
        match ctx.remote("uname", &["-r"]) {
            Ok(release) => target.remote_kernel = Some(release.trim().to_string()),
            Err(e) => log::warn!("reading REMOTE's kernel release: {e:#}"),
        }
    }
    print_target(args.format, &target);

    let (outcomes, interrupted) = run::run_all(&ctx, &selected, args.format, signals::stop()).await;
    print_summary(
        args.format,
        &outcomes,
        started.elapsed().as_millis() as u64,
        &target,
    );
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
