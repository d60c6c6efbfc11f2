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

use anyhow::{bail, Result};
use ipnet::IpNet;

use pmtu::{
    config::Topology,
    lab::{self, vm::VmOptions, Found, LabLock, UpOptions},
    net::rawsock::RawSocket,
    remote::{ssh_words, Remote},
    scenarios, signals,
    suite::{
        capture::{self, Capture},
        fakes::FakeHosts,
        hub::Hub,
        outfile::OutFile,
        report::{html, Format, Reporter, Summary, Target},
        run, Ctx, Outcome, Profile, ProfileName, Scenario, Verdict,
    },
    wire::L2,
    xdp::{
        responder::{AttachMode, Responder},
        rules::RuleSpec,
    },
};

use super::{exit, require_root, Usage};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Expected behaviour of REMOTE's OS (the lab's REMOTE is this Linux kernel).
    #[arg(long, value_enum, default_value_t = ProfileName::Linux)]
    pub profile: ProfileName,
    /// Output: one line per scenario, one JSON object per line, or KTAP (TAP) for CI.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Write every frame sent and every packet reported or answered to this pcap file.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Write a self-contained HTML page: the run's summary and, per scenario, its verdict,
    /// values, reason and packet ladder.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// With no names: also the long scenarios (expire*, blackhole*: seconds each).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub vm: VmArgs,
}

// REMOTE as a qemu guest. (A `///` comment here would become the `about` of every scenario
// subcommand this is flattened into.)
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

/// What keeps the run's set-up alive: a temporary lab, or the responder we attached ourselves,
/// and the lab's lock for as long as the run uses a lab.
pub struct Setup {
    pub topo: Topology,
    responder: Responder,
    /// What the run is against (REMOTE's kernel is filled in once the context exists).
    pub target: Target,
    /// A lab made for this run; dropping it removes the lab (and releases its lock).
    temp: Option<lab::TempLab>,
    /// The lock of a kept lab this run uses.
    lock: Option<LabLock>,
}

/// What must outlive the scenarios' context: a temporary lab (dropping it removes the lab) and
/// the lock of a kept lab. Drop it after the context.
pub struct Kept {
    _temp: Option<lab::TempLab>,
    _lock: Option<LabLock>,
}

impl Setup {
    /// The scenarios' context: the fake host's raw socket, the responder and its events.
    /// Call inside the runtime.
    pub fn context(
        self,
        capture: Option<Arc<Capture>>,
        profile: ProfileName,
    ) -> Result<(Ctx, Kept)> {
        let Setup {
            topo,
            mut responder,
            temp,
            lock,
            target,
        } = self;
        if let Some(c) = &capture {
            c.set_routers(topo.local_addr, topo.local_addr6);
        }
        let sock = RawSocket::open(topo.local_netns.as_deref(), &topo.local_if)?;
        // A lab's REMOTE, a namespace or a guest the lab booted, is ours to reconfigure; a
        // real REMOTE (the environment's variables, a guest's too) only has its settings read.
        let topo_remote_is_ours =
            topo.remote_netns.is_some() || target.lab.as_deref() == Some("vm");
        let fakes = FakeHosts::new(&topo);
        let events = responder.take_events()?;
        let hub = Hub::start(events, capture.clone());
        let ctx = Ctx {
            l2: L2 {
                src: topo.local_mac,
                dst: topo.remote_mac,
            },
            topo,
            sock,
            responder: Mutex::new(responder),
            hub,
            capture,
            profile: Profile::get(profile),
            remote_is_ours: topo_remote_is_ours,
            fakes,
        };
        Ok((
            ctx,
            Kept {
                _temp: temp,
                _lock: lock,
            },
        ))
    }

    /// A kept lab this run uses (its lock held).
    fn kept(lab: &lab::Lab, lock: LabLock) -> Result<Self> {
        Ok(Setup {
            responder: lab.responder()?,
            target: describe(lab),
            topo: lab.topology.clone(),
            temp: None,
            lock: Some(lock),
        })
    }
}

/// What a lab is, for people and the summary.
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

/// The configuration in order (environment, existing lab, temporary lab) with its responder.
/// `vm` (`--kernel`) makes the lab's REMOTE a qemu guest.
pub fn setup(
    lab_name: &str,
    mode: AttachMode,
    profile: ProfileName,
    vm: Option<&VmOptions>,
) -> Result<Setup> {
    let wait = lab::lock::wait_from_env()?;
    let stop = || signals::requested();
    if let Some(topo) = Topology::from_env_if_set()? {
        if vm.is_some() {
            bail!("--kernel makes a lab, but LOCAL_IF ... FAKE_NET_ADDR6 in the environment describe a real REMOTE: unset them, or drop --kernel");
        }
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
            .and_then(lab::plan::lab_of_local_ns)
            .filter(|name| lab::exists(name));
        let target = Target {
            lab: Some("remote".into()),
            description: format!("REMOTE_ADDR {}", topo.remote_addr),
            ..Target::default()
        };
        if let Some(name) = lab_of_ns {
            let lock = LabLock::acquire(name, wait, &stop)?;
            let lab = lab::open(name)?;
            lab::clear_traces(&lab)?;
            return Ok(Setup {
                topo,
                responder: lab.responder()?,
                target,
                temp: None,
                lock: Some(lock),
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
            temp: None,
            lock: None,
        });
    }
    if profile != ProfileName::Linux {
        bail!("the built-in lab's REMOTE is this machine's Linux kernel: use --profile linux, or describe a real REMOTE with LOCAL_IF ... FAKE_NET_ADDR6");
    }
    // From here on this run is the lab's only user, until it ends or dies.
    let lock = LabLock::acquire(lab_name, wait, &stop)?;
    let making = Instant::now();
    let temp = match lab::find(&lock)? {
        Found::Ready(lab) => {
            if let Some(vm) = vm {
                if !lab.vm.as_ref().is_some_and(|r| vm.matches(r)) {
                    bail!(
                        "lab `{lab_name}` is up with REMOTE = {}, not a guest of {}: `pmtu lab \
                         down --lab {lab_name}` first, or give another --lab",
                        describe(&lab).description,
                        vm.image
                    );
                }
            }
            lab::clear_traces(&lab)?;
            return Setup::kept(&lab, lock);
        }
        Found::Stale {
            reason,
            temporary: false,
        } => {
            eprintln!("pmtu: rebuilding lab `{lab_name}` ({reason}); it stays up");
            // A kept VM lab comes back as the guest it was, unless --kernel names another.
            let was = lab::vm_record(lab_name).map(|r| VmOptions {
                image: r.image,
                modules: r.modules_given,
            });
            let lab = match vm.cloned().or(was) {
                Some(vm) => lab::up_vm_locked(&lock, mode, &vm, false)?,
                None => lab::up_locked(&lock, mode, &UpOptions::from_env()?, false)?,
            };
            let mut setup = Setup::kept(&lab, lock)?;
            setup.target.setup_ms = Some(making.elapsed().as_millis() as u64);
            return Ok(setup);
        }
        Found::Stale {
            reason,
            temporary: true,
        } => {
            eprintln!("pmtu: replacing lab `{lab_name}`: {reason}");
            temp_lab(lock, mode, vm)?
        }
        Found::Nothing => {
            match vm {
                Some(vm) => eprintln!(
                    "pmtu: no lab `{lab_name}`; booting a temporary one with REMOTE = a qemu \
                     guest of {} (`pmtu lab up --kernel {}` keeps one up)",
                    vm.image, vm.image
                ),
                None => eprintln!(
                    "pmtu: no lab `{lab_name}`; making a temporary one (`pmtu lab up` keeps one \
                     up)"
                ),
            }
            temp_lab(lock, mode, vm)?
        }
    };
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
            setup_ms: Some(making.elapsed().as_millis() as u64),
            ..describe(&temp)
        },
        topo: temp.topology.clone(),
        temp: Some(temp),
        lock: None,
    })
}

/// A lab made for this run (a qemu guest's for `--kernel`), removed at its end.
fn temp_lab(lock: LabLock, mode: AttachMode, vm: Option<&VmOptions>) -> Result<lab::TempLab> {
    match vm {
        Some(vm) => lab::TempLab::up_vm_locked(lock, mode, vm),
        None => lab::TempLab::up_locked(lock, mode, &UpOptions::from_env()?),
    }
}

/// Resolves scenario names (the quick suite for an empty list, with the long scenarios too
/// for `all`), refusing unknown ones (a usage error).
pub fn select(names: &[String], all: bool) -> Result<Vec<&'static Scenario>> {
    if names.is_empty() {
        let long = scenarios::LONG.iter().filter(|_| all);
        return Ok(scenarios::ALL.iter().chain(long).collect());
    }
    if all {
        return Err(Usage(
            "--all runs the whole suite: give either --all or scenario names, not both".into(),
        )
        .into());
    }
    names
        .iter()
        .map(|n| {
            scenarios::find(n).ok_or_else(|| {
                Usage(format!(
                    "unknown scenario `{n}`; known: {}",
                    scenarios::names().join(", ")
                ))
                .into()
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
    // Malformed variables and lab names are usage errors (checked again in set-up).
    let from_env = Topology::from_env_if_set().map_err(|e| Usage(format!("{e:#}")))?;
    match from_env.as_ref().map(|t| t.remote_ssh.as_deref()) {
        None => lab::validate_name(lab_name).map_err(|e| Usage(format!("{e:#}")))?,
        Some(Some(login)) => {
            ssh_words(login).map_err(|e| Usage(format!("{e:#}")))?;
        }
        Some(None) => {}
    }
    require_root("pmtu run")?;
    super::require_capabilities("pmtu run")?;
    if let Some(path) = &args.pcap {
        // Fail now, not after the run (an existing file stays as it is until the run's end).
        capture::check_writable(path)?;
    }
    let report = args
        .report
        .as_deref()
        .map(|path| OutFile::create(path, "report"))
        .transpose()?;
    let started = Instant::now();
    let started_wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let setup = setup(lab_name, mode, args.profile, args.vm.options().as_ref())?;
    let lab_kind = lab_kind(&setup, lab_name);
    let mut target = setup.target.clone();
    let capture = (args.pcap.is_some() || report.is_some()).then(|| Arc::new(Capture::new()));
    let (ctx, temp) = setup.context(capture.clone(), args.profile)?;
    let kernel = remote_kernel(&ctx, &mut target);

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
    let mut reporter = Reporter::stdout(args.format);
    reporter.target(&target);
    let (outcomes, interrupted) =
        run::run_all(&ctx, &selected, &mut reporter, signals::stop()).await;
    let summary = Summary::of(&outcomes, started.elapsed().as_millis() as u64).with_target(target);
    let signal = interrupted.then(|| signals::received().map_or("a signal", |s| s.as_str()));
    reporter.finish(&summary, signal);
    if let (Some(path), Some(c)) = (&args.pcap, &capture) {
        let n = c.write(path)?;
        eprintln!("pmtu: wrote {n} packets to {}", path.display());
    }
    if let (Some(file), Some(c)) = (report, &capture) {
        let info = html::RunInfo {
            kernel,
            lab: lab_kind,
            profile: format!("{:?}", args.profile).to_lowercase(),
            started: started_wall,
            command: shell_words::join(std::env::args()),
            columns: columns(&ctx.topo),
        };
        let frames = c.frames();
        let path = file.target().to_path_buf();
        file.commit(|out| html::write(out, &info, &summary, &outcomes, &frames))?;
        eprintln!("pmtu: wrote the report to {}", path.display());
    }
    drop(ctx);
    drop(temp);
    if interrupted {
        eprintln!("pmtu: interrupted; cleaned up");
        return Ok(ExitCode::from(signals::exit_code().unwrap_or(130)));
    }
    Ok(ExitCode::from(run_exit_code(&outcomes)))
}

/// 1 when a scenario FAILed (REMOTE is broken, whatever else happened), else 125 when one
/// could not test REMOTE, else 0.
pub fn run_exit_code(outcomes: &[Outcome]) -> u8 {
    let any = |v: Verdict| outcomes.iter().any(|o| o.verdict == v);
    if any(Verdict::Fail) {
        exit::FAILED
    } else if any(Verdict::Error) {
        exit::COULD_NOT_TEST
    } else {
        exit::PASSED
    }
}

/// Which REMOTE the run tested, for the report.
pub fn lab_kind(setup: &Setup, lab_name: &str) -> String {
    let t = &setup.topo;
    if setup.target.lab.as_deref() == Some("vm") {
        return setup.target.description.clone();
    }
    match (&t.remote_ssh, &t.remote_netns, &setup.temp) {
        (Some(ssh), _, _) => format!("over ssh: REMOTE_SSH={ssh}, LOCAL_IF {}", t.local_if),
        (None, Some(_), Some(_)) => {
            format!("the built-in lab `{lab_name}`, made for this run (network namespaces, veth)")
        }
        (None, Some(ns), None)
            if t.local_netns.as_deref() == Some(&lab::plan::local_ns(lab_name)) =>
        {
            format!("the built-in lab `{lab_name}` (network namespace {ns}, veth)")
        }
        (None, Some(ns), None) => format!("network namespace {ns}, LOCAL_IF {}", t.local_if),
        (None, None, _) => format!("LOCAL_IF {}", t.local_if),
    }
}

/// REMOTE's `uname -sr`, the kernel under test, asked once: the report shows it and the
/// summary's `remote_kernel` is its release (what the lab knew is kept when REMOTE cannot say).
fn remote_kernel(ctx: &Ctx, target: &mut Target) -> String {
    match ctx.remote("uname", &["-sr"]) {
        Ok(k) => {
            let k = k.trim().to_string();
            if let Some(release) = k.split_whitespace().last() {
                target.remote_kernel = Some(release.to_string());
            }
            k
        }
        Err(e) => {
            log::warn!("reading REMOTE's kernel release: {e:#}");
            match &target.remote_kernel {
                Some(release) => release.clone(),
                None => format!("unknown (uname on REMOTE: {e:#})"),
            }
        }
    }
}

/// The ladder's column titles, with the addresses.
fn columns(t: &Topology) -> [String; 3] {
    [
        format!("fake host\n{} / {}", t.fake_net_addr, t.fake_net_addr6),
        format!("router (LOCAL)\n{} / {}", t.local_addr, t.local_addr6),
        format!("REMOTE\n{} / {}", t.remote_addr, t.remote_addr6),
    ]
}
