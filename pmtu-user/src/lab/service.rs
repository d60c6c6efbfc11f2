//! REMOTE's services in the lab: openbsd-inetd (the original's service lines) or `pmtu serve`,
//! started in REMOTE's namespace, recorded (PID, start time, command line), waited for and
//! stopped by that record.
use std::{
    fs, io,
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::{
    mount::{mount, MsFlags},
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitPidFlag},
    },
    unistd::Pid,
};
use serde::{Deserialize, Serialize};

use super::{
    plan::{CHARGEN_PORT, ECHO_PORT},
    Lab,
};
use crate::net::{
    netns,
    probe::{probe_chargen, probe_echo},
    procfs::{cmdline, proc_stat, ProcStat},
};

/// Debian's openbsd-inetd.
pub const INETD: &str = "/usr/sbin/inetd";
/// The original setup's inetd.conf lines.
pub const INETD_CONF: &str = "\
chargen stream tcp nowait root internal
chargen stream tcp6 nowait root internal
echo dgram udp wait root internal
echo dgram udp6 wait root internal
";
/// Upper bound on the wait for REMOTE's services after they start.
const SERVICE_WAIT: Duration = Duration::from_secs(2);
/// Upper bound on the wait for a stopped service to exit before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(2);

pub fn record_path(state: &Path) -> PathBuf {
    state.join("service.json")
}

pub fn log_path(state: &Path) -> PathBuf {
    state.join("services.log")
}

/// Which program serves chargen and echo inside REMOTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Debian's openbsd-inetd with its internal chargen and echo.
    Inetd,
    /// `pmtu serve`.
    Builtin,
}

/// What `up` starts: `PMTU_SERVICES=auto|inetd|builtin` (auto: inetd when installed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceChoice {
    #[default]
    Auto,
    Inetd,
    Builtin,
}

impl ServiceChoice {
    /// Reads PMTU_SERVICES (unset: auto).
    pub fn from_env() -> Result<Self> {
        match std::env::var("PMTU_SERVICES").ok().as_deref().map(str::trim) {
            None | Some("") | Some("auto") => Ok(Self::Auto),
            Some("inetd") => Ok(Self::Inetd),
            Some("builtin") => Ok(Self::Builtin),
            Some(other) => bail!(
                "PMTU_SERVICES='{other}': expected auto, inetd (openbsd-inetd) or builtin (`pmtu serve`)"
            ),
        }
    }

    pub fn resolve(self) -> Result<ServiceKind> {
        let have_inetd = Path::new(INETD).exists();
        match self {
            Self::Auto if have_inetd => Ok(ServiceKind::Inetd),
            Self::Auto | Self::Builtin => Ok(ServiceKind::Builtin),
            Self::Inetd if have_inetd => Ok(ServiceKind::Inetd),
            Self::Inetd => bail!(
                "PMTU_SERVICES=inetd, but {INETD} is not installed: `apt-get install openbsd-inetd`, \
                 or PMTU_SERVICES=builtin for `pmtu serve`"
            ),
        }
    }
}

/// How to build a lab beyond its name and XDP mode.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    pub services: ServiceChoice,
    /// The `pmtu` binary that runs `serve` for built-in services; default: this executable.
    pub serve_exe: Option<PathBuf>,
}

impl UpOptions {
    /// The defaults, with the service choice from PMTU_SERVICES.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            services: ServiceChoice::from_env()?,
            serve_exe: None,
        })
    }
}

/// REMOTE's service process, as `up` recorded it in the state dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub kind: ServiceKind,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: with the command line, tells our process from a later one
    /// that reuses the PID.
    pub start_time: u64,
    pub argv: Vec<String>,
}

pub fn read_record(state: &Path) -> Result<Option<ServiceRecord>> {
    let path = record_path(state);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Starts the services inside REMOTE's namespace, in a session of their own (so a Ctrl-C on a
/// later `pmtu run` does not reach them), and records the process.
pub fn start_service(
    lab: &Lab,
    kind: ServiceKind,
    serve_exe: &Path,
) -> Result<(ServiceRecord, Child)> {
    let state = &lab.state_dir;
    let log = fs::File::create(log_path(state))
        .with_context(|| format!("creating {}", log_path(state).display()))?;
    let (program, args): (String, Vec<String>) = match kind {
        ServiceKind::Inetd => {
            let run = state.join("inetd");
            fs::create_dir_all(&run)?;
            fs::write(run.join("inetd.conf"), INETD_CONF)?;
            // -d: stay in the foreground (our PID is inetd's) and log to services.log.
            // -R: the default limit of 256 connections a minute would stop chargen for ten
            // minutes during a soak run.
            (
                INETD.to_string(),
                ["-d", "-R", "1000000", "/run/inetd.conf"]
                    .map(String::from)
                    .to_vec(),
            )
        }
        ServiceKind::Builtin => (
            serve_exe.to_string_lossy().into_owned(),
            vec!["serve".to_string()],
        ),
    };
    let mut cmd = netns::command(Some(&lab.remote_ns()), &program)?;
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let private_run = match kind {
        ServiceKind::Inetd => Some(
            std::ffi::CString::new(state.join("inetd").as_os_str().as_encoded_bytes())
                .context("state dir path")?,
        ),
        ServiceKind::Builtin => None,
    };
    // SAFETY: between fork and exec only async-signal-safe syscalls run here (setsid, unshare,
    // mount), on strings prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if let Some(dir) = &private_run {
                // inetd always writes /run/inetd.pid: give it a private /run (this lab's
                // inetd/ dir, which also holds its configuration) in a mount namespace of
                // its own, so the system's /run/inetd.pid is never touched.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                mount(
                    None::<&std::ffi::CStr>,
                    c"/",
                    None::<&std::ffi::CStr>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&std::ffi::CStr>,
                )?;
                mount(
                    Some(dir.as_c_str()),
                    c"/run",
                    None::<&std::ffi::CStr>,
                    MsFlags::MS_BIND,
                    None::<&std::ffi::CStr>,
                )?;
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {program} in namespace `{}`", lab.remote_ns()))?;
    let pid = child.id() as i32;
    let start_time = proc_stat(pid).map(|s| s.start_time).ok_or_else(|| {
        anyhow!(
            "{program} (pid {pid}) exited at once; see {}",
            log_path(state).display()
        )
    })?;
    let mut argv = vec![program];
    argv.extend(args);
    let record = ServiceRecord {
        kind,
        pid,
        start_time,
        argv,
    };
    fs::write(record_path(state), serde_json::to_string_pretty(&record)?)
        .with_context(|| format!("writing {}", record_path(state).display()))?;
    Ok((record, child))
}

/// Waits until chargen accepts on both families and echo answers on both, from a socket inside
/// LOCAL's namespace (so through the veth and the XDP programs).
pub fn wait_for_services(lab: &Lab, record: &ServiceRecord, child: &mut Child) -> Result<()> {
    let t = &lab.topology;
    let deadline = Instant::now() + SERVICE_WAIT;
    let log = log_path(&lab.state_dir);
    let who = match record.kind {
        ServiceKind::Inetd => format!("inetd (pid {})", record.pid),
        ServiceKind::Builtin => format!("`pmtu serve` (pid {})", record.pid),
    };
    let checks: [(SocketAddr, bool); 4] = [
        ((t.remote_addr, CHARGEN_PORT).into(), true),
        ((t.remote_addr6, CHARGEN_PORT).into(), true),
        ((t.remote_addr, ECHO_PORT).into(), false),
        ((t.remote_addr6, ECHO_PORT).into(), false),
    ];
    netns::run_in(Some(&lab.local_ns()), || {
        for (addr, tcp) in checks {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "REMOTE's {who} exited ({status}) before its services came up:\n{}",
                        log_tail(&log)
                    );
                }
                let attempt = if tcp {
                    probe_chargen(addr)
                } else {
                    probe_echo(addr)
                };
                let last_error = match attempt {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    let service = if tcp {
                        format!("chargen (tcp/{CHARGEN_PORT}) on {}", addr.ip())
                    } else {
                        format!("echo (udp/{ECHO_PORT}) on {}", addr.ip())
                    };
                    bail!(
                        "REMOTE's {service} did not answer within {} s ({last_error}); served by \
                         {who}, log {}:\n{}",
                        SERVICE_WAIT.as_secs(),
                        log.display(),
                        log_tail(&log)
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    })
}

pub fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    if tail.is_empty() {
        "(the log is empty)".to_string()
    } else {
        tail
    }
}

/// Whether `pid` is still the process `record` describes: same start time and, unless it is a
/// zombie (whose command line is gone), same command line. A process that exec'd something else
/// since is not recognised, and is left alone.
pub fn is_ours(record: &ServiceRecord, stat: &ProcStat) -> bool {
    if stat.start_time != record.start_time {
        return false;
    }
    if stat.state == 'Z' {
        return true;
    }
    let Some(argv) = cmdline(record.pid) else {
        return false;
    };
    // A script started through its `#!` line shows its interpreter first.
    let via_interpreter = argv.len() > record.argv.len()
        && argv.ends_with(&record.argv[1.min(record.argv.len())..])
        && argv.contains(&record.argv.first().cloned().unwrap_or_default());
    argv == record.argv || via_interpreter
}

/// Gone, or a zombie: then reaped if it is our child.
fn has_exited(pid: i32, start_time: u64) -> bool {
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    match proc_stat(pid) {
        None => true,
        Some(s) => s.start_time != start_time || s.state == 'Z' || s.state == 'X',
    }
}

pub fn stop_service(state: &Path) -> Result<()> {
    let Some(record) = read_record(state)? else {
        return Ok(());
    };
    let pid = record.pid;
    match proc_stat(pid) {
        None => {}
        Some(stat) if !is_ours(&record, &stat) => {
            log::warn!(
                "pid {pid} is no longer the lab's {:?} service (its start time or command line \
                 differ); leaving it alone",
                record.kind
            );
        }
        Some(stat) => {
            // The service leads its own session and process group (setsid): signal the group,
            // so that any child it forked goes too.
            let target = if stat.pgrp == pid {
                Pid::from_raw(-pid)
            } else {
                Pid::from_raw(pid)
            };
            let _ = kill(target, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_WAIT;
            while !has_exited(pid, record.start_time) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !has_exited(pid, record.start_time) {
                log::warn!(
                    "{:?} service (pid {pid}) ignored SIGTERM; killing it",
                    record.kind
                );
                let _ = kill(target, Signal::SIGKILL);
                let deadline = Instant::now() + STOP_WAIT;
                while !has_exited(pid, record.start_time) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !has_exited(pid, record.start_time) {
                    bail!("the lab's service (pid {pid}) does not exit even after SIGKILL");
                }
            }
        }
    }
    match fs::remove_file(record_path(state)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_record_round_trips() {
        let r = ServiceRecord {
            kind: ServiceKind::Inetd,
            pid: 42,
            start_time: 7,
            argv: vec![INETD.into(), "-d".into()],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"inetd\""), "{text}");
        assert_eq!(serde_json::from_str::<ServiceRecord>(&text).unwrap(), r);
    }

    #[test]
    fn inetd_lines_are_the_originals() {
        assert_eq!(INETD_CONF.lines().count(), 4);
        assert!(INETD_CONF.contains("chargen stream tcp6 nowait root internal"));
        assert!(INETD_CONF.contains("echo dgram udp6 wait root internal"));
    }
}
