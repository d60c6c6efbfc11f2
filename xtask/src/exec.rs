//! Running other programs: clear errors, root through sudo, and the signal policy.
//!
//! Signal policy: xtask catches SIGINT and SIGTERM with a handler that only records them (a
//! handler, not SIG_IGN, so that the programs it starts get the default disposition back on
//! exec). A Ctrl-C in a terminal reaches the running child too, which stops and cleans up by
//! itself; xtask then sees the recorded signal, stops starting new work, and its guards (lab,
//! fault) clean up on the way out. A signal sent to xtask alone is passed on to the child, by
//! its PID, when the child is still running a second later.
use std::{
    ffi::OsString,
    fmt,
    io::{BufRead, BufReader},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicI32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

/// The repository root (xtask lives in `<root>/xtask`).
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `target/release/pmtu`, honouring CARGO_TARGET_DIR.
pub fn pmtu_binary() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    };
    target.join("release/pmtu")
}

/// The cargo that runs xtask (`$CARGO`), else the one on PATH.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// The last SIGINT or SIGTERM received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn record_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs the recording handler for SIGINT and SIGTERM (see the module doc).
pub fn catch_signals() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores into an atomic, which is
        // async-signal-safe.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            bail!(
                "cannot install a handler for signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The signal received so far, if any.
pub fn signal_received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The error returned when the user stopped xtask (exit status 128 + signal).
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            _ => "a signal",
        };
        write!(f, "interrupted by {name}")
    }
}

impl std::error::Error for Interrupted {}

/// Fails with [`Interrupted`] when a signal has been received.
pub fn check_interrupted() -> Result<()> {
    match signal_received() {
        Some(sig) => Err(Interrupted(sig).into()),
        None => Ok(()),
    }
}

/// The command line as a user would type it, for messages: `` `cargo build --release` ``.
pub fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let name = if program.is_absolute() && program.starts_with(root()) {
        program.strip_prefix(root()).unwrap_or(program)
    } else if program.is_absolute() {
        program.file_name().map(Path::new).unwrap_or(program)
    } else {
        program
    };
    let mut line = name.to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    format!("`{line}`")
}

/// "exit code 101" / "signal 9".
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// The exit status xtask passes on for a child's status: its code, or 128 + signal.
pub fn exit_code_of(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        _ => 1,
    }
}

fn spawn_error(cmd: &Command, e: std::io::Error) -> anyhow::Error {
    let program = cmd.get_program().to_string_lossy();
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow!(
            "cannot run {}: {program} not found (is it installed and on PATH?)",
            describe(cmd)
        )
    } else {
        anyhow!("cannot run {}: {e}", describe(cmd))
    }
}

/// Runs `cmd` with inherited stdio; an error names the command and how it ended.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("{} failed with {}", describe(cmd), describe_status(status));
    }
    Ok(())
}

/// Runs `cmd` with inherited stdio and returns its exit status (see the module doc for signals).
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    let mut child = cmd.spawn().map_err(|e| spawn_error(cmd, e))?;
    wait_forwarding(&mut child)
}

/// Runs `cmd` and returns its stdout (stderr inherited); fails unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| spawn_error(cmd, e))?;
    if !out.status.success() {
        bail!(
            "{} failed with {}",
            describe(cmd),
            describe_status(out.status)
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{} printed non-UTF-8", describe(cmd)))
}

/// Waits for `child`; a signal that reached xtask but apparently not the child (it is still
/// running a second later) is passed on to it, once.
fn wait_forwarding(child: &mut std::process::Child) -> Result<ExitStatus> {
    let mut seen_at: Option<Instant> = None;
    let mut forwarded = false;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(status);
        }
        if let Some(sig) = signal_received() {
            let first = *seen_at.get_or_insert_with(Instant::now);
            if !forwarded && first.elapsed() >= Duration::from_secs(1) {
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) on the PID of our own child, which we have not reaped.
                    unsafe { libc::kill(pid, sig) };
                }
                forwarded = true;
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// What a child printed on stdout, line by line, with its status and wall time.
pub struct Captured {
    pub status: ExitStatus,
    pub lines: Vec<String>,
    pub wall: Duration,
}

/// Runs `cmd` with stdout captured as lines (stderr inherited), timing it from spawn to exit.
/// Does not fail on a non-zero exit: the caller reads the status.
pub fn capture_lines(cmd: &mut Command) -> Result<Captured> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(cmd, e))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let status = wait_forwarding(&mut child)?;
    let wall = start.elapsed();
    // The pipe closes when the child exits, unless a process it started still holds it: then
    // take what came and do not wait for the rest.
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "xtask: warning: {} exited but its stdout is still open (held by a process \
                     it started?); ignoring the rest",
                    describe(cmd)
                );
                break;
            }
        }
    }
    Ok(Captured {
        status,
        lines,
        wall,
    })
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks `name` up on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

const SUDO_MARK: &str = "PMTU_XTASK_SUDO";

/// Returns when running as root; otherwise replaces this process with the same xtask command
/// run through `sudo -E`, keeping PATH and the rustup/cargo homes so the same toolchains are
/// used. Fails with a clear message when sudo is missing.
pub fn ensure_root(what: &str) -> Result<()> {
    if is_root() {
        return Ok(());
    }
    if std::env::var_os(SUDO_MARK).is_some() {
        bail!("`cargo xtask {what}` still not root after sudo: run it as root");
    }
    let Some(sudo) = which("sudo") else {
        bail!(
            "`cargo xtask {what}` needs root (network namespaces, XDP, packages) and sudo is not \
             installed: run it as root, or install sudo"
        );
    };
    let exe = std::env::current_exe().context("finding the xtask executable")?;
    let home = std::env::var_os("HOME").unwrap_or_default();
    let home_join = |dir: &str| -> OsString {
        let mut p = PathBuf::from(&home);
        p.push(dir);
        p.into_os_string()
    };
    let mut assignments: Vec<OsString> = Vec::new();
    let mut keep = |key: &str, value: OsString| {
        let mut kv = OsString::from(format!("{key}="));
        kv.push(value);
        assignments.push(kv);
    };
    keep("PATH", std::env::var_os("PATH").unwrap_or_default());
    keep("HOME", home.clone());
    keep(
        "RUSTUP_HOME",
        std::env::var_os("RUSTUP_HOME").unwrap_or_else(|| home_join(".rustup")),
    );
    keep(
        "CARGO_HOME",
        std::env::var_os("CARGO_HOME").unwrap_or_else(|| home_join(".cargo")),
    );
    keep(SUDO_MARK, "1".into());
    eprintln!("xtask: `cargo xtask {what}` needs root: running it again through sudo");
    let err = Command::new(sudo)
        .arg("-E")
        .arg("env")
        .args(assignments)
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(anyhow!("cannot run sudo: {err}"))
}
