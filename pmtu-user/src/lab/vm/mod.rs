//! REMOTE as a qemu guest: any kernel image booted on a tap inside LOCAL's namespace, so that
//! the XDP responder on the tap plays the router in front of that kernel.
//!
//! The pieces: [`image`] (what IMAGE names, the file qemu boots, the modules), [`initramfs`]
//! (the guest's userland, in Rust), [`qemu`] (the command line, the process, stale guests),
//! [`ssh`] (REMOTE's commands over ssh with a master connection). [`Guest::boot`] puts them
//! together; the caller owns the namespace, the tap's addresses and routes, and the responder.
//!
//! Files in the state dir: `console.log` (the guest's serial console), `qemu.log` (qemu's
//! own messages), `qemu.pid`, `initrd.cpio`, `vm.json` (what was booted), `ssh/` (pmtu's key,
//! the guest's host key, known_hosts, the control socket, `master.pid`, `config` for a person:
//! `ssh -F DIR/ssh/config pmtu-remote` from inside LOCAL's namespace).
pub mod cpio;
pub mod debian;
pub mod elf;
mod files;
pub mod image;
pub mod initramfs;
pub mod qemu;
pub mod ssh;

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

pub use image::Kernel;
pub use qemu::{Accel, AccelChoice, GuestNet};
pub use ssh::GuestSsh;

/// How long a TCG boot may take until READY (measured here: 4-6 s; the margin is for a
/// loaded machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a KVM boot may take before TCG is tried instead.
pub const KVM_TRY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the ssh login may take.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(30);
/// The guest's memory.
pub const MEMORY_MB: u32 = 160;

/// What the user asked for: `--kernel IMAGE [--modules DIR]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmOptions {
    /// IMAGE as given (a path or `debian`).
    pub image: String,
    /// `--modules DIR`.
    pub modules: Option<PathBuf>,
}

impl VmOptions {
    /// Whether a lab booted with `record` is what these options ask for.
    pub fn matches(&self, record: &VmRecord) -> bool {
        record.image == self.image && record.modules_given == self.modules
    }
}

/// Checks what can be checked before anything is made (qemu installed, the image and modules
/// usable) and resolves the kernel; fetches and unpacks on first use, with progress lines.
pub fn resolve_kernel(options: &VmOptions, progress: &mut dyn FnMut(&str)) -> Result<Kernel> {
    if !qemu::on_path(qemu::QEMU) {
        return Err(qemu::not_installed());
    }
    image::resolve(
        &options.image,
        options.modules.as_deref(),
        &image::cache_root(),
        progress,
    )
}

/// Everything a boot needs.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    pub options: VmOptions,
    /// From [`resolve_kernel`].
    pub kernel: Kernel,
    /// LOCAL's namespace, which holds the tap; `None`: this process's.
    pub netns: Option<String>,
    /// The tap (made by [`add_tap`]).
    pub tap: String,
    pub net: GuestNet,
    /// The lab's state dir (exists).
    pub state_dir: PathBuf,
    /// pmtu's cache ([`image::cache_root`]).
    pub cache: PathBuf,
    pub accel: AccelChoice,
    pub ready_timeout: Duration,
}

/// Paths in the state dir.
#[derive(Clone, Debug)]
pub struct Files {
    pub console: PathBuf,
    pub qemu_log: PathBuf,
    pub pidfile: PathBuf,
    pub initrd: PathBuf,
    pub record: PathBuf,
    pub ssh_dir: PathBuf,
    pub master_log: PathBuf,
    pub master_pid: PathBuf,
}

impl Files {
    pub fn new(state_dir: &Path) -> Files {
        let ssh_dir = state_dir.join("ssh");
        Files {
            console: state_dir.join("console.log"),
            qemu_log: state_dir.join("qemu.log"),
            pidfile: state_dir.join("qemu.pid"),
            initrd: state_dir.join("initrd.cpio"),
            record: state_dir.join("vm.json"),
            master_log: ssh_dir.join("master.log"),
            master_pid: ssh_dir.join("master.pid"),
            ssh_dir,
        }
    }
}

/// What was booted, kept in `vm.json` for `pmtu lab status` and later runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// IMAGE and `--modules` as given.
    pub image: String,
    pub modules_given: Option<PathBuf>,
    /// What qemu booted, and the modules directory used.
    pub boot_image: PathBuf,
    pub modules: Option<PathBuf>,
    /// REMOTE's `uname -r`, as its init printed it.
    pub release: String,
    pub accel: String,
    pub qemu_pid: i32,
    pub tap: String,
    pub console: PathBuf,
    /// REMOTE_SSH for the guest (`pmtu-remote -F <state>/ssh/config`).
    pub remote_ssh: String,
}

impl VmRecord {
    pub fn read(state_dir: &Path) -> Result<Option<VmRecord>> {
        let path = Files::new(state_dir).record;
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// How long each step of a boot took.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootTimes {
    /// Resolving the image, keys, initramfs: before qemu starts.
    pub prepare: Duration,
    /// qemu start to READY on the console.
    pub boot_to_ready: Duration,
    /// READY to the ssh master taking commands.
    pub ssh_login: Duration,
}

/// A running guest. Dropping it closes the ssh master and kills qemu.
pub struct Guest {
    // Field order is drop order: the master before qemu.
    master: Option<ssh::Master>,
    qemu: qemu::Qemu,
    pub ssh: GuestSsh,
    pub kernel: Kernel,
    pub record: VmRecord,
    pub times: BootTimes,
    files: Files,
    detached: bool,
}

impl Guest {
    /// Boots the guest: builds the initramfs, starts qemu on the tap, waits for READY on the
    /// console and for the ssh master. A stale guest in the same state dir is killed first.
    /// A SIGINT or SIGTERM ends the wait (the guest is killed).
    pub fn boot(spec: &GuestSpec) -> Result<Guest> {
        let started = Instant::now();
        let kernel = spec.kernel.clone();
        let files = Files::new(&spec.state_dir);
        stop_stale(&spec.state_dir)?;
        let keys = ssh::GuestKeys::generate(&files.ssh_dir)?;
        let (base, built) = initramfs::base(&spec.cache)?;
        if built {
            log::info!("built the guest's userland {}", base.display());
        }
        let boot_part = initramfs::boot_part(&initramfs::BootPart {
            modules: kernel.modules.as_deref(),
            release: &kernel.release,
            host_key: &keys.host_key,
            authorized_keys: &keys.authorized_keys,
        })?;
        fs::copy(&base, &files.initrd)
            .with_context(|| format!("copying {} to {}", base.display(), files.initrd.display()))?;
        fs::OpenOptions::new()
            .append(true)
            .open(&files.initrd)
            .and_then(|mut f| f.write_all(&boot_part))
            .with_context(|| format!("writing {}", files.initrd.display()))?;
        let mut times = BootTimes {
            prepare: started.elapsed(),
            ..BootTimes::default()
        };

        let candidates = spec.accel.candidates();
        let mut booted = None;
        for (i, accel) in candidates.iter().copied().enumerate() {
            let last = i + 1 == candidates.len();
            let timeout = match (accel, last) {
                (Accel::Kvm, false) => KVM_TRY_TIMEOUT.min(spec.ready_timeout),
                _ => spec.ready_timeout,
            };
            let qspec = qemu::QemuSpec {
                kernel: kernel.boot_image.clone(),
                initrd: files.initrd.clone(),
                append: qemu::kernel_command_line(&spec.net),
                tap: spec.tap.clone(),
                mac: spec.net.remote_mac,
                console: files.console.clone(),
                pidfile: files.pidfile.clone(),
                accel,
                memory_mb: MEMORY_MB,
            };
            let t0 = Instant::now();
            let mut q = qemu::Qemu::spawn(&qspec, spec.netns.as_deref(), &files.qemu_log)?;
            match wait_ready(&mut q, &files, &kernel, timeout) {
                Ok(release) => {
                    times.boot_to_ready = t0.elapsed();
                    booted = Some((q, release, accel));
                    break;
                }
                Err(e) if !last => {
                    q.kill();
                    log::warn!(
                        "no boot under {}: {e:#}; trying {}",
                        accel.name(),
                        candidates[i + 1].name()
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let (qemu, release, accel) =
            booted.ok_or_else(|| anyhow!("no accelerator to boot with"))?;

        let ssh = GuestSsh::new(&keys, spec.net.remote_addr.into(), spec.netns.as_deref());
        ssh.write_config()?;
        let record = VmRecord {
            image: spec.options.image.clone(),
            modules_given: spec.options.modules.clone(),
            boot_image: kernel.boot_image.clone(),
            modules: kernel.modules.clone(),
            release,
            accel: accel.name().to_string(),
            qemu_pid: qemu.pid,
            tap: spec.tap.clone(),
            console: files.console.clone(),
            remote_ssh: ssh.remote_ssh(),
        };
        fs::write(&files.record, serde_json::to_string_pretty(&record)?)
            .with_context(|| format!("writing {}", files.record.display()))?;
        let mut guest = Guest {
            master: None,
            qemu,
            ssh,
            kernel,
            record,
            times,
            files,
            detached: false,
        };
        let t0 = Instant::now();
        let master = guest
            .ssh
            .start_master(&guest.files.master_log, SSH_TIMEOUT)
            .context("logging in on the guest")?;
        if let Some(pid) = master.pid() {
            fs::write(&guest.files.master_pid, pid.to_string())?;
        }
        guest.master = Some(master);
        guest.times.ssh_login = t0.elapsed();
        Ok(guest)
    }

    pub fn files(&self) -> &Files {
        &self.files
    }

    pub fn qemu_pid(&self) -> i32 {
        self.qemu.pid
    }

    /// Leaves qemu and the ssh master running after this process exits (`pmtu lab up`):
    /// [`stop_stale`] on the state dir ends them later.
    pub fn detach(mut self) -> VmRecord {
        if let Some(master) = &mut self.master {
            master.detach();
        }
        self.qemu.detach();
        self.detached = true;
        self.record.clone()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        drop(self.master.take());
        self.qemu.kill();
        let _ = fs::remove_file(&self.files.master_pid);
    }
}

/// Ends a guest and ssh master that a killed run left in `state_dir` (each only if its PID is
/// still the process that was recorded). Nothing recorded is fine.
pub fn stop_stale(state_dir: &Path) -> Result<()> {
    let files = Files::new(state_dir);
    if let Some(pid) = qemu::kill_recorded(
        &files.master_pid,
        &["ssh", &files.ssh_dir.join("config").display().to_string()],
    )? {
        log::info!("ended a stale ssh master (pid {pid})");
    }
    if let Some(pid) = qemu::kill_stale(&files.pidfile)? {
        log::info!("killed a stale guest (qemu pid {pid})");
    }
    Ok(())
}

/// Makes the tap `name` inside namespace `ns` with LOCAL's MAC, up. (qemu attaches to it by
/// name; it goes with the namespace.)
pub fn add_tap(ns: Option<&str>, name: &str, mac: &[u8; 6]) -> Result<()> {
    crate::net::netns::run(ns, "ip", &["tuntap", "add", "dev", name, "mode", "tap"])
        .with_context(|| format!("creating tap {name}"))?;
    crate::net::netns::run(
        ns,
        "ip",
        &[
            "link",
            "set",
            "dev",
            name,
            "address",
            &qemu::format_mac(mac),
            "up",
        ],
    )
    .with_context(|| format!("setting tap {name} up"))?;
    Ok(())
}

/// Waits for `pmtu-init: READY <release>` on the console; fails early on a FAILED line, a
/// kernel panic, or qemu's exit, with the console's last lines.
fn wait_ready(
    q: &mut qemu::Qemu,
    files: &Files,
    kernel: &Kernel,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let console = fs::read(&files.console).unwrap_or_default();
        let text = String::from_utf8_lossy(&console);
        match boot_state(&text) {
            BootState::Ready(release) => return Ok(release),
            BootState::Failed(why) => {
                q.kill();
                return Err(boot_error(&why, kernel, files));
            }
            BootState::Booting => {}
        }
        if let Some(status) = q.exited() {
            // The console may have got its last words after the read above.
            let text =
                String::from_utf8_lossy(&fs::read(&files.console).unwrap_or_default()).into_owned();
            let why = match boot_state(&text) {
                BootState::Failed(why) => why,
                BootState::Ready(_) | BootState::Booting => {
                    format!("qemu exited ({status}) before the guest was ready")
                }
            };
            return Err(boot_error(&why, kernel, files));
        }
        if crate::signals::requested() {
            q.kill();
            bail!("interrupted while REMOTE's kernel was booting");
        }
        if Instant::now() >= deadline {
            q.kill();
            return Err(boot_error(
                &format!("no READY from the guest within {} s", timeout.as_secs()),
                kernel,
                files,
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the console says so far.
#[derive(Debug, PartialEq, Eq)]
pub enum BootState {
    Booting,
    Ready(String),
    Failed(String),
}

pub fn boot_state(console: &str) -> BootState {
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.split("pmtu-init: READY ").nth(1) {
            return BootState::Ready(rest.trim().to_string());
        }
        if let Some(rest) = line.split("pmtu-init: FAILED: ").nth(1) {
            return BootState::Failed(rest.trim().to_string());
        }
        if let Some(rest) = line.split("Kernel panic - ").nth(1) {
            return BootState::Failed(format!("kernel panic: {}", rest.trim()));
        }
    }
    BootState::Booting
}

fn boot_error(why: &str, kernel: &Kernel, files: &Files) -> anyhow::Error {
    let mut msg = format!(
        "REMOTE's kernel {} ({}) did not come up: {why}",
        kernel.release,
        kernel.boot_image.display()
    );
    for (name, path) in [("console", &files.console), ("qemu", &files.qemu_log)] {
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        msg.push_str(&format!("\nlast lines of the {name} ({}):", path.display()));
        for line in &lines[lines.len().saturating_sub(12)..] {
            msg.push_str("\n  ");
            msg.push_str(line.trim_end_matches('\r'));
        }
    }
    anyhow!(msg)
}

/// A boot error's first line: what a user reads first.
pub fn summary(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Fails unless `pmtu` runs as root: the tap, the namespace and qemu's tap need it.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("a VM REMOTE needs root (a tap inside a network namespace)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_states() {
        assert_eq!(boot_state(""), BootState::Booting);
        assert_eq!(
            boot_state("[  0.1] x\r\npmtu-init: READY 6.1.0-56-amd64\r\n"),
            BootState::Ready("6.1.0-56-amd64".into())
        );
        assert_eq!(
            boot_state("init\npmtu-init: FAILED: no virtio_net: no interface\n"),
            BootState::Failed("no virtio_net: no interface".into())
        );
        assert_eq!(
            boot_state("[ 1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\n"),
            BootState::Failed("kernel panic: not syncing: VFS: Unable to mount root fs".into())
        );
    }
}
