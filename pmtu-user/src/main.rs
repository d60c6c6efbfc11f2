//! `pmtu`: Path MTU Discovery regression suite. See README.md.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pmtu::{
    bench, lab, respond,
    responder::AttachMode,
    serve,
    suite::run::{self, RunArgs},
};

#[derive(Parser, Debug)]
#[command(
    name = "pmtu",
    version,
    about = "Path MTU Discovery regression suite around an XDP responder"
)]
struct Cli {
    /// The lab to use: namespaces NAME-local and NAME-remote.
    #[arg(long, global = true, env = "PMTU_LAB", default_value = "pmtu")]
    lab: String,
    /// XDP attach mode for the responder.
    #[arg(long, global = true, value_enum, default_value_t = AttachMode::Native)]
    xdp_mode: AttachMode,
    /// More log output (-v: debug, -vv: trace); RUST_LOG works too.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenarios: all of them in the original's order when none is named.
    Run {
        /// Scenario names (see `pmtu --help`).
        names: Vec<String>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// The original's set-up checks: interfaces, addresses, routes, services, XDP.
    #[command(name = "check-setup")]
    CheckSetup(RunArgs),
    /// REMOTE_ADDR answers ping.
    Ping(RunArgs),
    /// REMOTE_ADDR6 answers ping.
    Ping6(RunArgs),
    /// TCP over IPv4: frag-needed 1300 -> retransmit at IP length 1300.
    Pmtu(RunArgs),
    /// TCP over IPv6: Packet Too Big 1300 -> retransmit at IPv6 length 1300.
    Pmtu6(RunArgs),
    /// UDP over IPv6: PTB 1300 -> echo reply fragmented, first fragment 1296.
    Udp6(RunArgs),
    /// udp6 after REMOTE's route state is removed: one PTB still takes effect.
    Gateway6(RunArgs),
    /// TCP over IPv6: PTB 1272 -> no atomic fragment, retransmit still 1500.
    Tcpfrag6(RunArgs),
    /// UDP over IPv6: PTB 1272 -> reply 1248 unfragmented, no atomic fragment.
    Udpfrag6(RunArgs),
    /// Clear PMTU state on LOCAL and REMOTE.
    #[command(name = "reset-route")]
    ResetRoute(RunArgs),
    /// The built-in lab: two network namespaces, a veth, REMOTE's services, the responder.
    Lab(lab::LabArgs),
    /// Run the XDP responder alone on an interface and print what it sees (Ctrl-C stops).
    Respond(respond::RespondArgs),
    /// REMOTE's built-in chargen and echo (used by the lab when inetd is missing).
    Serve(serve::ServeArgs),
    /// Benchmarks.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pmtu: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mode = cli.xdp_mode;
    let lab = cli.lab;
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = runtime.block_on(async move {
        // Before anything is set up: Ctrl-C must unwind through the clean-up, never kill.
        pmtu::signals::install();
        let one = |name: &str| vec![name.to_string()];
        match cli.cmd {
            Command::Run { names, args } => run::cli(&names, args, &lab, mode).await,
            Command::CheckSetup(a) => run::cli(&one("check-setup"), a, &lab, mode).await,
            Command::Ping(a) => run::cli(&one("ping"), a, &lab, mode).await,
            Command::Ping6(a) => run::cli(&one("ping6"), a, &lab, mode).await,
            Command::Pmtu(a) => run::cli(&one("pmtu"), a, &lab, mode).await,
            Command::Pmtu6(a) => run::cli(&one("pmtu6"), a, &lab, mode).await,
            Command::Udp6(a) => run::cli(&one("udp6"), a, &lab, mode).await,
            Command::Gateway6(a) => run::cli(&one("gateway6"), a, &lab, mode).await,
            Command::Tcpfrag6(a) => run::cli(&one("tcpfrag6"), a, &lab, mode).await,
            Command::Udpfrag6(a) => run::cli(&one("udpfrag6"), a, &lab, mode).await,
            Command::ResetRoute(a) => run::cli(&one("reset-route"), a, &lab, mode).await,
            Command::Lab(args) => ok(lab::cli(args, &lab, mode).await),
            Command::Respond(args) => ok(respond::cli(args, mode).await),
            Command::Serve(args) => ok(serve::cli(args).await),
            Command::Bench(args) => ok(bench::cli(args).await),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pmtu: {e:#}");
            ExitCode::FAILURE
        }
    }
}
