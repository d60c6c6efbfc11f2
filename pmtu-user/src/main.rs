//! `pmtu`: Path MTU Discovery regression suite. See README.md.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pmtu::{respond, responder::AttachMode};

#[derive(Parser, Debug)]
#[command(
    name = "pmtu",
    version,
    about = "Path MTU Discovery regression suite around an XDP responder"
)]
struct Cli {
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
    /// Run the XDP responder alone on an interface and print what it sees (Ctrl-C stops).
    Respond(respond::RespondArgs),
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
    let result = runtime.block_on(async move {
        match cli.cmd {
            Command::Respond(args) => respond::cli(args, mode).await.map(|()| ExitCode::SUCCESS),
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
