//! `cargo xtask`: the build, test and lab steps cargo cannot express on its own.
//!
//! setup, build, test and run are what a newcomer and CI use (README); bench, soak and faults
//! measure the suite and prove it catches broken kernels.
use std::{
    ffi::OsString,
    process::{Command, ExitCode},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod bench_stress;
mod exec;
mod setup;
mod soak;
mod suite_run;

use exec::{cargo, ensure_root, Interrupted};
use setup::Packages;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test and run the pmtu suite"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build, the suite and its tests need: rust-src, bpf-linker, Debian
    /// packages (the tests' own: perl's prove, chromium), and Debian's kernel for `--kernel
    /// debian` (downloaded and unpacked, never installed).
    Setup,
    /// Setup, then build target/release/pmtu (the XDP program is built first and embedded).
    Build,
    /// As root: setup, build, cargo fmt --check, clippy -D warnings, cargo test [ARGS].
    Test {
        /// Passed to `cargo test --release` (after `--`: `cargo xtask test -- -p pmtu-user`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// As root: setup, build, then `pmtu ARGS` (default: `run`, the whole suite on a lab).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Benchmarks: `xdp` (cost per packet of each XDP path), `suite` (wall time of a run),
    /// `stress` (verified flows/s) or `vm` (a run against a qemu guest of Debian's kernel, boot
    /// included).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// As root: N consecutive runs of the suite on one lab (pmtu-soak); all must pass.
    Soak {
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
    /// As root: the fault catalogue (pmtu-user/tests/faults.rs): break REMOTE on purpose in
    /// each way and check the right scenario fails with the right reason.
    Faults,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// As root: `pmtu bench xdp [ARGS]`: ns per packet of each XDP path, ratio to the floor.
    Xdp {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// As root: the quick suite N times on one lab (pmtu-bench, or PMTU_LAB); median times.
    Suite {
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
    /// As root: `pmtu stress` on one lab: verified flows/s per kind, the kernel's own limit,
    /// peak RSS at 100k flows, events lost.
    Stress(bench_stress::StressBench),
    /// As root: `pmtu run --kernel debian` N times, each booting its own guest:
    /// boot_to_ready_s, suite_s, total_s and their medians.
    Vm {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
        /// The whole quick suite instead of the original's nine scenarios.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = exec::catch_signals().and_then(|()| dispatch(cli.cmd));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            match e.downcast_ref::<Interrupted>() {
                Some(Interrupted(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Setup => {
            setup::setup(Packages::Required)?;
            setup::test_packages()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Build => {
            build(Packages::Optional)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test { args } => {
            ensure_root("test")?;
            test(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { args } => {
            ensure_root("run")?;
            run(args)
        }
        Cmd::Bench {
            what: BenchWhat::Xdp { args },
        } => {
            ensure_root("bench xdp")?;
            build(Packages::Required)?;
            bench::xdp(&exec::pmtu_binary(), &args)
        }
        Cmd::Bench {
            what: BenchWhat::Suite { runs },
        } => {
            ensure_root("bench suite")?;
            build(Packages::Required)?;
            bench::suite(&exec::pmtu_binary(), runs)
        }
        Cmd::Bench {
            what: BenchWhat::Stress(opts),
        } => {
            ensure_root("bench stress")?;
            build(Packages::Required)?;
            bench_stress::run(&exec::pmtu_binary(), &opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench {
            what: BenchWhat::Vm { runs, all },
        } => {
            ensure_root("bench vm")?;
            build(Packages::Required)?;
            bench::vm(&exec::pmtu_binary(), runs, all)
        }
        Cmd::Soak { runs } => {
            ensure_root("soak")?;
            build(Packages::Required)?;
            soak::soak(&exec::pmtu_binary(), runs)
        }
        Cmd::Faults => {
            ensure_root("faults")?;
            build(Packages::Required)?;
            exec::run(cargo().args([
                "test",
                "--release",
                "-p",
                "pmtu-user",
                "--test",
                "faults",
                "--",
                "--nocapture",
            ]))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Setup, then `cargo build --release -p pmtu-user` (its build script builds the XDP program).
fn build(packages: Packages) -> Result<()> {
    setup::setup(packages)?;
    build_only()
}

/// The README's test command, and CI's: every step in turn, stopping at the first failure.
fn test(args: &[OsString]) -> Result<()> {
    step("setup", || {
        setup::setup(Packages::Required)?;
        setup::test_packages()
    })?;
    step("build", build_only)?;
    step("fmt", || {
        exec::run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy", || {
        exec::run(cargo().args([
            "clippy",
            "--release",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    // The default members (pmtu-common, pmtu-user, xtask): pmtu-ebpf only builds for the BPF
    // target, and pmtu-user's tests load it.
    step("test", || {
        exec::run(cargo().args(["test", "--release"]).args(args))
    })?;
    println!("xtask test: setup, build, fmt, clippy and tests passed");
    Ok(())
}

fn build_only() -> Result<()> {
    exec::run(cargo().args(["build", "--release", "-p", "pmtu-user"]))?;
    exec::check_interrupted()?;
    println!("build: {}", exec::pmtu_binary().display());
    Ok(())
}

/// Runs one step of `test`, naming it in the error.
fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("xtask test: step {name}");
    let result = f();
    // A Ctrl-C that stopped the step is reported as such (exit 130), not as its failure.
    exec::check_interrupted()?;
    result.with_context(|| format!("step {name} failed"))
}

/// `pmtu ARGS` as root; its exit status is ours. SIGINT/SIGTERM reach the child, which cleans
/// up by itself; xtask only records them, and reports how the child ended.
fn run(args: Vec<OsString>) -> Result<ExitCode> {
    build(Packages::Required)?;
    let args = if args.is_empty() {
        vec![OsString::from("run")]
    } else {
        args
    };
    let pmtu = exec::pmtu_binary();
    let mut cmd = Command::new(&pmtu);
    cmd.args(&args);
    let status = exec::status(&mut cmd)?;
    if !status.success() {
        eprintln!(
            "xtask: {} ended with {}",
            exec::describe(&cmd),
            exec::describe_status(status)
        );
    }
    Ok(ExitCode::from(exec::exit_code_of(status)))
}
