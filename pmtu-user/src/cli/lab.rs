//! `pmtu lab up | down | status`.
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use pmtu::{
    lab::{self, status, ServiceKind, UpOptions, DEFAULT_NAME},
    signals,
    xdp::responder::AttachMode,
};

use super::{require_root, run::VmArgs};

/// `pmtu lab up | down | status`.
#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub cmd: LabCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum LabCmd {
    /// Build the lab (replacing any lab of the same name): LOCAL and REMOTE namespaces, the
    /// veth pair, addresses, routes, the XDP responder and REMOTE's chargen and echo.
    /// PMTU_SERVICES=builtin uses `pmtu serve` even when openbsd-inetd is installed.
    /// With --kernel, REMOTE is a qemu guest of that kernel on a tap in LOCAL's namespace.
    Up {
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Remove the lab: services, XDP programs, namespaces and state. Safe to repeat.
    Down,
    /// Show namespaces, interfaces, routes (with cached PMTUs), services, XDP programs, rules
    /// and counters.
    /// Run a command on the lab's REMOTE (inside its namespace), e.g. to break it on purpose:
    /// `pmtu lab exec -- sysctl -w net.ipv4.ip_no_pmtu_disc=1`.
    Exec {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    Status {
        /// Print the lab's configuration as NAME=value lines (LOCAL_IF ... REMOTE_NETNS)
        #[arg(long, conflicts_with = "json")]
        env: bool,
        /// Print everything as one JSON object
        #[arg(long)]
        json: bool,
    },
}

/// Runs `pmtu lab ...` for lab `lab`, attaching XDP in `mode`.
pub async fn cli(args: LabArgs, lab_name: &str, mode: AttachMode) -> Result<()> {
    let name = lab_name.to_string();
    lab::validate_name(&name)?;
    let what = match &args.cmd {
        LabCmd::Up { .. } => "pmtu lab up",
        LabCmd::Down => "pmtu lab down",
        LabCmd::Status { .. } => "pmtu lab status",
        LabCmd::Exec { .. } => "pmtu lab exec",
    };
    require_root(what)?;
    match args.cmd {
        LabCmd::Up { vm } => {
            let started = Instant::now();
            let replaced = lab::exists(&name);
            let options = UpOptions::from_env()?;
            let vm = vm.options();
            let task = tokio::task::spawn_blocking({
                let name = name.clone();
                move || match &vm {
                    Some(vm) => lab::up_vm(&name, mode, vm),
                    None => lab::up_with(&name, mode, &options),
                }
            });
            tokio::pin!(task);
            let lab = tokio::select! {
                result = &mut task => result.context("the lab task failed")??,
                () = signals::stop() => {
                    eprintln!("interrupted: removing the half-built lab `{name}`");
                    let _ = task.await;
                    tokio::task::spawn_blocking(move || lab::down(&name)).await??;
                    bail!("interrupted");
                }
            };
            if replaced {
                println!("replaced the lab `{name}` that was there");
            }
            let flag = if lab.name == DEFAULT_NAME {
                String::new()
            } else {
                format!(" --lab {}", lab.name)
            };
            if let Some(vm) = &lab.vm {
                let t = &lab.topology;
                println!(
                    "lab `{}` up in {:.2} s: LOCAL {}/{} {} {}, REMOTE a qemu guest ({}, pid {}) \
                     running kernel {} from {}, {} {}, fake nets {} {}",
                    lab.name,
                    started.elapsed().as_secs_f64(),
                    lab.local_ns(),
                    t.local_if,
                    t.local_addr,
                    t.local_addr6,
                    vm.accel,
                    vm.qemu_pid,
                    vm.release,
                    vm.image,
                    t.remote_addr,
                    t.remote_addr6,
                    t.fake_net,
                    t.fake_net6,
                );
                println!(
                    "console: {}; log in: ip netns exec {} ssh {}",
                    vm.console.display(),
                    lab.local_ns(),
                    vm.remote_ssh
                );
                println!("`pmtu{flag} lab status` shows it, `pmtu{flag} lab down` removes it");
                return Ok(());
            }
            let t = &lab.topology;
            let service = match &lab.service {
                Some(s) if s.kind == ServiceKind::Inetd => format!("openbsd-inetd (pid {})", s.pid),
                Some(s) => format!("pmtu serve (pid {})", s.pid),
                None => "none".to_string(),
            };
            println!(
                "lab `{}` up in {:.2} s: LOCAL {}/{} {} {}, REMOTE {}/{} {} {}, fake nets {} {}, \
                 services {service}, XDP {}",
                lab.name,
                started.elapsed().as_secs_f64(),
                lab.local_ns(),
                t.local_if,
                t.local_addr,
                t.local_addr6,
                lab.remote_ns(),
                lab.remote_if,
                t.remote_addr,
                t.remote_addr6,
                t.fake_net,
                t.fake_net6,
                match mode {
                    AttachMode::Native => "native",
                    AttachMode::Skb => "skb",
                },
            );
            println!("`pmtu{flag} lab status` shows it, `pmtu{flag} lab down` removes it");
        }
        LabCmd::Down => {
            let existed = lab::exists(&name);
            let started = Instant::now();
            let n = name.clone();
            tokio::task::spawn_blocking(move || lab::down(&n))
                .await
                .context("the lab task failed")??;
            if existed {
                println!(
                    "lab `{name}` removed in {:.2} s",
                    started.elapsed().as_secs_f64()
                );
            } else {
                println!("no lab `{name}`: nothing to remove");
            }
        }
        LabCmd::Exec { command } => {
            let lab = lab::open(&name)?;
            let (program, args) = command.split_first().context("no command given")?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            print!("{}", lab.remote()?.run(program, &args)?);
        }
        LabCmd::Status { env: true, .. } => {
            let lab = lab::open(&name)?;
            for line in lab.topology.to_env_lines() {
                println!("{line}");
            }
        }
        LabCmd::Status { json: true, .. } => {
            let n = name.clone();
            let report = tokio::task::spawn_blocking(move || status::status_report(&n)).await??;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        LabCmd::Status { .. } => {
            let n = name.clone();
            print!(
                "{}",
                tokio::task::spawn_blocking(move || status::status(&n)).await??
            );
        }
    }
    Ok(())
}
