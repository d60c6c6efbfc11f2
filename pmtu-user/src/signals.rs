//! SIGINT and SIGTERM as a future: commands select on it and then unwind normally, so that
//! every guard (lab, XDP attachment) cleans up as on any other exit.
use tokio::signal::unix::{signal, SignalKind};

/// Completes at the first SIGINT or SIGTERM. Pending forever if the handlers cannot be set.
pub async fn stop() {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
