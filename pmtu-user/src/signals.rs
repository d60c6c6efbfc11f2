//! SIGINT, SIGTERM and SIGHUP (a closed terminal) as a future: commands select on it and then unwind normally, so that
//! every guard (lab, XDP attachment) cleans up as on any other exit.
//!
//! [`install`] runs first thing in `main`: from then on the signals never kill the process
//! outright, and one that arrives while a command is still setting up (a lab half made) is
//! remembered, so the next [`stop`] returns at once.
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Once, OnceLock,
};

use tokio::{
    signal::unix::{signal, SignalKind},
    sync::Notify,
};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

fn notify() -> &'static Notify {
    static NOTIFY: OnceLock<Notify> = OnceLock::new();
    NOTIFY.get_or_init(Notify::new)
}

/// Catches SIGINT, SIGTERM and SIGHUP from now on. Call inside the tokio runtime.
pub fn install() {
    INSTALL.call_once(|| {
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            log::warn!("cannot catch SIGINT/SIGTERM/SIGHUP: Ctrl-C may leave a lab behind");
            return;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                REQUESTED.store(true, Ordering::SeqCst);
                notify().notify_waiters();
            }
        });
    });
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Completes at the first SIGINT, SIGTERM or SIGHUP, or at once if one came already.
pub async fn stop() {
    install();
    loop {
        let notified = notify().notified();
        if requested() {
            return;
        }
        notified.await;
    }
}
