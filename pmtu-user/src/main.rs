//! `pmtu`: Path MTU Discovery regression suite. See README.md.
mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (globals, request) = cli::parse();
    let level = match globals.verbose {
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
    let result = runtime.block_on(async move {
        // Before anything is set up: Ctrl-C must unwind through the clean-up, never kill.
        pmtu::signals::install();
        cli::dispatch(globals, request).await
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pmtu: {e:#}");
            cli::error_exit_code(&e, cli::exit::FAILED)
        }
    }
}
