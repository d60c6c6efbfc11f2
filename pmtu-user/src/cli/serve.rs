//! `pmtu serve`: REMOTE's built-in chargen and echo, until SIGTERM or SIGINT.
use anyhow::{Context as _, Result};
use pmtu::serve::{ServeArgs, Server};

/// Serves until SIGTERM or SIGINT.
pub async fn cli(args: ServeArgs) -> Result<()> {
    let server = Server::bind(&args)?;
    log::info!(
        "chargen on tcp/{} and echo on udp/{}, IPv4 and IPv6; SIGTERM stops",
        args.chargen_port,
        args.echo_port
    );
    server.run(shutdown_signal()).await
}

async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
