//! `pmtu lab up | down | status`.
//!
//! `up` and `down` say what they did on standard output; a closed or full standard output loses
//! the message, never the lab (no panic, the lab's state as the command left it).
use std::{io::Write as _, time::Instant};

use anyhow::{bail, Context as _, Result};
use pmtu::{
    lab::{self, status, status_text, ServiceKind, UpOptions, DEFAULT_NAME},
    signals,
    xdp::responder::AttachMode,
};

use super::{require_capabilities, require_root, run::VmArgs};

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
    if matches!(args.cmd, LabCmd::Up { .. } | LabCmd::Down) {
        require_capabilities(what)?;
    }
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
                say(format_args!("replaced the lab `{name}` that was there"));
            }
            let flag = if lab.name == DEFAULT_NAME {
                String::new()
            } else {
                format!(" --lab {}", lab.name)
            };
            if let Some(vm) = &lab.vm {
                let t = &lab.topology;
                say(format_args!(
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
                ));
                say(format_args!(
                    "console: {}; log in: ip netns exec {} ssh {}",
                    vm.console.display(),
                    lab.local_ns(),
                    vm.remote_ssh
                ));
                say(format_args!(
                    "`pmtu{flag} lab status` shows it, `pmtu{flag} lab down` removes it"
                ));
                return Ok(());
            }
            let t = &lab.topology;
            let service = match &lab.service {
                Some(s) if s.kind == ServiceKind::Inetd => format!("openbsd-inetd (pid {})", s.pid),
                Some(s) => format!("pmtu serve (pid {})", s.pid),
                None => "none".to_string(),
            };
            say(format_args!(
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
            ));
            say(format_args!(
                "`pmtu{flag} lab status` shows it, `pmtu{flag} lab down` removes it"
            ));
        }
        LabCmd::Down => {
            let foreign = lab::foreign_namespaces(&name);
            let existed = lab::state_dir(&name).exists()
                || [lab::local_ns(&name), lab::remote_ns(&name)]
                    .iter()
                    .any(|ns| pmtu::net::netns::exists(ns) && !foreign.contains(ns));
            for ns in &foreign {
                eprintln!("pmtu: network namespace `{ns}` was not made by pmtu: left alone");
            }
            let started = Instant::now();
            let n = name.clone();
            tokio::task::spawn_blocking(move || lab::down(&n))
                .await
                .context("the lab task failed")??;
            if existed {
                say(format_args!(
                    "lab `{name}` removed in {:.2} s",
                    started.elapsed().as_secs_f64()
                ));
            } else {
                say(format_args!("no lab `{name}`: nothing to remove"));
            }
        }
        LabCmd::Exec { command } => {
            let lab = lab::open(&name)?;
            let (program, args) = command.split_first().context("no command given")?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            emit(&lab.remote()?.run(program, &args)?)?;
        }
        LabCmd::Status { env: true, .. } => {
            let lab = lab::open(&name)?;
            emit(&(lab.topology.to_env_lines().join("\n") + "\n"))?;
        }
        LabCmd::Status { json: true, .. } => {
            let n = name.clone();
            let report = tokio::task::spawn_blocking(move || status::status_report(&n)).await??;
            emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
        }
        LabCmd::Status { .. } => {
            let n = name.clone();
            emit(&tokio::task::spawn_blocking(move || status_text::status(&n)).await??)?;
        }
    }
    Ok(())
}

/// A line on standard output, for messages about what was done: a closed or full standard
/// output loses the line, nothing else.
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// What the command was asked for (a status, a command's output): failing to write it is an
/// error, not a panic.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to standard output")
}
