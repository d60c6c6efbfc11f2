//! Named network namespaces, as `ip netns` makes them (/run/netns/NAME).
//!
//! setns(2) moves only the calling thread, so work inside a namespace runs on a short-lived
//! thread of its own ([`run_in`]); sockets and BPF links created there stay bound to that
//! namespace after the thread ends. Child processes enter it between fork and exec ([`command`]).
use std::{
    fs::File,
    os::{fd::AsFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use nix::sched::{setns, CloneFlags};

pub const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

fn open(name: &str) -> Result<File> {
    File::open(path(name)).with_context(|| {
        format!("network namespace `{name}` does not exist (no {NETNS_DIR}/{name})")
    })
}

/// Creates the namespace with `ip netns add` (which also makes /run/netns a shared mount).
pub fn add(name: &str) -> Result<()> {
    run_ip(&["netns", "add", name]).with_context(|| format!("creating network namespace `{name}`"))
}

/// Deletes the namespace; its interfaces go with it. Absent is not an error.
pub fn delete(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    run_ip(&["netns", "delete", name])
        .with_context(|| format!("deleting network namespace `{name}`"))
}

fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (iproute2); `cargo xtask setup` installs it")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `ns` (or here, for `None`) and returns its result.
pub fn run_in<T: Send>(ns: Option<&str>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(ns) = ns else {
        return f();
    };
    let file = open(ns)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering network namespace `{ns}` (needs root)"))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("a task inside network namespace `{ns}` panicked"))
    })
}

/// A command that runs inside namespace `ns` (or here, for `None`).
pub fn command(ns: Option<&str>, program: &str) -> Result<Command> {
    let mut cmd = Command::new(program);
    if let Some(ns) = ns {
        let file = open(ns)?;
        // SAFETY: setns is async-signal-safe; the closure only makes that one syscall.
        unsafe {
            cmd.pre_exec(move || {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
    }
    Ok(cmd)
}

/// Runs a command to completion inside `ns`; on failure the error carries its stderr.
pub fn run(ns: Option<&str>, program: &str, args: &[&str]) -> Result<String> {
    let out = command(ns, program)?
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{program}`"))?;
    let where_ = ns
        .map(|n| format!(" in namespace `{n}`"))
        .unwrap_or_default();
    if !out.status.success() {
        bail!(
            "`{program} {}`{where_} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A multi-threaded tokio runtime whose threads (workers and blocking pool) enter namespace
/// `ns` as they start, so that the sockets its tasks create belong there. A thread that
/// cannot enter it logs an error and stays where it is: callers bind their sockets to an
/// address of `ns`, which fails anywhere else.
pub fn runtime_in(ns: &str, workers: usize) -> Result<tokio::runtime::Runtime> {
    let file = std::sync::Arc::new(open(ns)?);
    let name = ns.to_string();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = setns(file.as_fd(), CloneFlags::CLONE_NEWNET) {
                log::error!("a thread could not enter network namespace `{name}`: {e}");
            }
        })
        .build()
        .context("starting a runtime")
}
