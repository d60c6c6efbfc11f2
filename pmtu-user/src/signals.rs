//! SIGINT, SIGTERM and SIGHUP as a future: commands select on it and then unwind normally, so
//! that every guard (lab, XDP attachment) cleans up as on any other exit. SIGHUP (a closed
//! terminal, a CI job cancelled) is handled like SIGTERM.
//!
//! [`install`] runs first thing in `main`: from then on the signals never kill the process
//! outright, and one that arrives while a command is still setting up (a lab half made) is
//! remembered, so the next [`stop`] returns at once. The first signal is remembered too:
//! [`exit_code`] is the shell's code for it (128 + its number).
use std::sync::{
    atomic::{AtomicI32, Ordering},
    Once, OnceLock,
};

use nix::sys::signal::Signal;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::Notify,
};

/// The first signal received (its number), 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
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
                let got = tokio::select! {
                    _ = int.recv() => Signal::SIGINT,
                    _ = term.recv() => Signal::SIGTERM,
                    _ = hup.recv() => Signal::SIGHUP,
                };
                let _ =
                    RECEIVED.compare_exchange(0, got as i32, Ordering::SeqCst, Ordering::SeqCst);
                notify().notify_waiters();
            }
        });
    });
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    received().is_some()
}

/// The first signal that asked for a stop.
pub fn received() -> Option<Signal> {
    Signal::try_from(RECEIVED.load(Ordering::SeqCst)).ok()
}

/// The exit code a shell gives a process killed by the first signal received: 130 (SIGINT),
/// 143 (SIGTERM), 129 (SIGHUP).
pub fn exit_code() -> Option<u8> {
    received().map(|s| 128 + s as u8)
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
