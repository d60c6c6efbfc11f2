//! qemu: the command line, the process, and a stale guest left by a killed run.
//!
//! The guest runs under TCG (KVM only when asked for or when this machine's CPU has VMX/SVM
//! and a boot under it succeeds: a /dev/kvm alone proves nothing), on machine q35, with its
//! console in a file of the lab's state dir and its NIC a virtio-net on a tap inside LOCAL's
//! namespace. `vnet_hdr=off` is essential: with it on, the guest hands TSO/GSO super-frames
//! to the tap, and the XDP responder would see 10 kB "packets" that no real link carries.
use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// The qemu binary (Debian's qemu-system-x86).
pub const QEMU: &str = "qemu-system-x86_64";

/// How qemu runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: works everywhere.
    Tcg,
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// What the user asked for (`PMTU_VM_ACCEL=auto|tcg|kvm`, default auto).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM when the CPU has VMX/SVM and /dev/kvm opens, falling back to TCG when a boot under
    /// it fails; else TCG.
    #[default]
    Auto,
    Tcg,
    Kvm,
}

impl AccelChoice {
    pub fn from_env() -> Result<Self> {
        match std::env::var("PMTU_VM_ACCEL")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("auto") => Ok(Self::Auto),
            Some("tcg") => Ok(Self::Tcg),
            Some("kvm") => Ok(Self::Kvm),
            Some(other) => bail!("PMTU_VM_ACCEL='{other}': expected auto, tcg or kvm"),
        }
    }

    /// The accelerators to try, in order.
    pub fn candidates(self) -> Vec<Accel> {
        match self {
            Self::Tcg => vec![Accel::Tcg],
            Self::Kvm => vec![Accel::Kvm],
            Self::Auto if kvm_may_work() => vec![Accel::Kvm, Accel::Tcg],
            Self::Auto => vec![Accel::Tcg],
        }
    }
}

/// /dev/kvm opens read-write and the CPU flags show hardware virtualisation. (A nested or
/// paravirtual /dev/kvm without them cannot run a stock kernel.)
pub fn kvm_may_work() -> bool {
    let dev_ok = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let cpu_ok = fs::read_to_string("/proc/cpuinfo").is_ok_and(|text| {
        text.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    });
    dev_ok && cpu_ok
}

/// The guest's side of the link and the fake nets it routes via LOCAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestNet {
    pub remote_mac: [u8; 6],
    /// LOCAL_MAC: REMOTE knows LOCAL as its IPv6 router from the start.
    pub local_mac: [u8; 6],
    pub remote_addr: Ipv4Addr,
    pub remote_prefix: u8,
    pub remote_addr6: Ipv6Addr,
    pub remote_prefix6: u8,
    pub local_addr: Ipv4Addr,
    pub local_addr6: Ipv6Addr,
    pub fake_net: Ipv4Net,
    pub fake_net6: Ipv6Net,
}

pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The kernel command line: the serial console, no reboot on panic (qemu exits instead:
/// `-no-reboot`), quiet (a slow emulated UART), no crypto self-tests (half a second of an
/// emulated boot; nothing the suite uses), and the topology for the init script.
pub fn kernel_command_line(net: &GuestNet) -> String {
    [
        "console=ttyS0".to_string(),
        "panic=-1".to_string(),
        "quiet".to_string(),
        "cryptomgr.notests".to_string(),
        format!("pmtu.mac={}", format_mac(&net.remote_mac)),
        format!("pmtu.addr={}/{}", net.remote_addr, net.remote_prefix),
        format!("pmtu.addr6={}/{}", net.remote_addr6, net.remote_prefix6),
        format!("pmtu.via={}", net.local_addr),
        format!("pmtu.via6={}", net.local_addr6),
        format!("pmtu.viamac={}", format_mac(&net.local_mac)),
        format!("pmtu.net={}", net.fake_net),
        format!("pmtu.net6={}", net.fake_net6),
    ]
    .join(" ")
}

/// One qemu invocation.
#[derive(Clone, Debug)]
pub struct QemuSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    /// The tap in LOCAL's namespace.
    pub tap: String,
    pub mac: [u8; 6],
    pub console: PathBuf,
    pub pidfile: PathBuf,
    pub accel: Accel,
    pub memory_mb: u32,
}

/// qemu's arguments (without the program).
pub fn argv(spec: &QemuSpec) -> Vec<String> {
    let accel = match spec.accel {
        // A 64 MiB translation cache instead of the default 1 GiB: less memory, no slower.
        Accel::Tcg => "tcg,tb-size=64",
        Accel::Kvm => "kvm",
    };
    let cpu = match spec.accel {
        Accel::Tcg => "max",
        Accel::Kvm => "host",
    };
    let mut out: Vec<String> = ["-accel", accel, "-machine", "q35", "-cpu", cpu, "-smp", "1"]
        .map(String::from)
        .to_vec();
    out.extend([
        "-m".to_string(),
        spec.memory_mb.to_string(),
        "-nodefaults".to_string(),
        "-no-user-config".to_string(),
        "-display".to_string(),
        "none".to_string(),
        "-monitor".to_string(),
        "none".to_string(),
        "-no-reboot".to_string(),
        "-serial".to_string(),
        format!("file:{}", spec.console.display()),
        "-kernel".to_string(),
        spec.kernel.display().to_string(),
        "-initrd".to_string(),
        spec.initrd.display().to_string(),
        "-append".to_string(),
        spec.append.clone(),
        "-netdev".to_string(),
        format!(
            "tap,id=n0,ifname={},script=no,downscript=no,vnet_hdr=off",
            spec.tap
        ),
        "-device".to_string(),
        format!("virtio-net-pci,netdev=n0,mac={}", format_mac(&spec.mac)),
        "-pidfile".to_string(),
        spec.pidfile.display().to_string(),
    ]);
    out
}

/// A running qemu, our child.
pub struct Qemu {
    child: Child,
    pub pid: i32,
    pidfile: PathBuf,
    detached: bool,
}

impl Qemu {
    /// Starts qemu inside namespace `netns` (where the tap is), in a session of its own (a
    /// Ctrl-C meant for pmtu must not reach it: pmtu stops it itself), stdout and stderr to
    /// `log`.
    pub fn spawn(spec: &QemuSpec, netns: Option<&str>, log: &Path) -> Result<Qemu> {
        let log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let _ = fs::remove_file(&spec.pidfile);
        let _ = fs::remove_file(&spec.console);
        let mut cmd = crate::net::netns::command(netns, QEMU)?;
        cmd.args(argv(spec))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_installed(),
            _ => anyhow!("starting {QEMU}: {e}"),
        })?;
        Ok(Qemu {
            pid: child.id() as i32,
            child,
            pidfile: spec.pidfile.clone(),
            detached: false,
        })
    }

    /// `Some(status)` once qemu has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Keeps qemu running when this is dropped (its pidfile finds it later).
    pub fn detach(&mut self) {
        self.detached = true;
    }

    /// Kills qemu (SIGKILL: the guest has nothing to save) and waits for it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.pidfile);
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.kill();
    }
}

/// The message for a missing qemu.
pub fn not_installed() -> anyhow::Error {
    anyhow!(
        "{QEMU} is not installed (or not on PATH): `cargo xtask setup` installs it (or \
         `apt-get install qemu-system-x86`)"
    )
}

/// Whether `program` is found on PATH (or is an existing path).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Whether the qemu a pidfile names still runs (and is a qemu started with that pidfile).
pub fn is_running(pidfile: &Path) -> bool {
    let Some(pid) = fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return false;
    };
    let stat_ok = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    });
    stat_ok
        && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(QEMU) && c.contains(&pidfile.display().to_string())
        })
}

/// Kills the qemu a pidfile names, if that process is still a qemu started with this very
/// pidfile (so never an unrelated process that reuses the PID). Returns its PID.
pub fn kill_stale(pidfile: &Path) -> Result<Option<i32>> {
    kill_recorded(pidfile, &[QEMU, &pidfile.display().to_string()])
}

/// Kills the process whose PID `pidfile` holds when its command line contains every word of
/// `marks`; waits up to 5 s for it to go. Returns its PID; removes the pidfile.
pub fn kill_recorded(pidfile: &Path, marks: &[&str]) -> Result<Option<i32>> {
    let Ok(text) = fs::read_to_string(pidfile) else {
        return Ok(None);
    };
    let _ = fs::remove_file(pidfile);
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(None);
    };
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return Ok(None);
    };
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if !marks.iter().all(|m| cmdline.contains(m)) {
        log::debug!(
            "pid {pid} from {} is not ours now: {cmdline}",
            pidfile.display()
        );
        return Ok(None);
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    // Not our child (a killed run started it): wait for /proc to drop it, or show a zombie
    // that init will reap.
    while Instant::now() < deadline {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return Ok(Some(pid)),
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                return Ok(Some(pid))
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    bail!(
        "pid {pid} ({}) does not exit after SIGKILL",
        pidfile.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> GuestNet {
        GuestNet {
            remote_mac: [2, 0, 0, 0, 0, 2],
            local_mac: [2, 0, 0, 0, 0, 1],
            remote_addr: "192.0.2.2".parse().unwrap(),
            remote_prefix: 24,
            remote_addr6: "2001:db8::2".parse().unwrap(),
            remote_prefix6: 64,
            local_addr: "192.0.2.1".parse().unwrap(),
            local_addr6: "2001:db8::1".parse().unwrap(),
            fake_net: "198.51.100.0/24".parse().unwrap(),
            fake_net6: "2001:db8:1::/64".parse().unwrap(),
        }
    }

    #[test]
    fn command_line_carries_the_topology() {
        assert_eq!(
            kernel_command_line(&net()),
            "console=ttyS0 panic=-1 quiet cryptomgr.notests pmtu.mac=02:00:00:00:00:02 pmtu.addr=192.0.2.2/24 \
             pmtu.addr6=2001:db8::2/64 pmtu.via=192.0.2.1 pmtu.via6=2001:db8::1 pmtu.viamac=02:00:00:00:00:01 \
             pmtu.net=198.51.100.0/24 pmtu.net6=2001:db8:1::/64"
        );
    }

    #[test]
    fn qemu_arguments() {
        let spec = QemuSpec {
            kernel: "/c/vmlinux".into(),
            initrd: "/s/initrd.cpio".into(),
            append: "console=ttyS0".into(),
            tap: "vm0".into(),
            mac: [2, 0, 0, 0, 0, 2],
            console: "/s/console.log".into(),
            pidfile: "/s/qemu.pid".into(),
            accel: Accel::Tcg,
            memory_mb: 160,
        };
        let args = argv(&spec).join(" ");
        for want in [
            "-accel tcg,tb-size=64 -machine q35 -cpu max -smp 1 -m 160",
            "-no-reboot -serial file:/s/console.log -kernel /c/vmlinux -initrd /s/initrd.cpio",
            "-netdev tap,id=n0,ifname=vm0,script=no,downscript=no,vnet_hdr=off",
            "-device virtio-net-pci,netdev=n0,mac=02:00:00:00:00:02 -pidfile /s/qemu.pid",
        ] {
            assert!(args.contains(want), "{want}\n{args}");
        }
        // The command line stays one argument, whatever it contains.
        let v = argv(&spec);
        let at = v.iter().position(|a| a == "-append").unwrap();
        assert_eq!(v[at + 1], "console=ttyS0");
        let kvm = argv(&QemuSpec {
            accel: Accel::Kvm,
            ..spec
        })
        .join(" ");
        assert!(kvm.contains("-accel kvm -machine q35 -cpu host"), "{kvm}");
    }

    #[test]
    fn accel_choice() {
        assert_eq!(AccelChoice::Tcg.candidates(), [Accel::Tcg]);
        assert_eq!(AccelChoice::Kvm.candidates(), [Accel::Kvm]);
        assert_eq!(*AccelChoice::Auto.candidates().last().unwrap(), Accel::Tcg);
    }

    #[test]
    fn a_pidfile_of_someone_else_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("pmtu-qemu-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("qemu.pid");
        // This test process is alive but is no qemu: never killed.
        fs::write(&pidfile, std::process::id().to_string()).unwrap();
        assert_eq!(kill_stale(&pidfile).unwrap(), None);
        assert!(!pidfile.exists());
        fs::write(&pidfile, "not a pid").unwrap();
        assert_eq!(kill_stale(&pidfile).unwrap(), None);
        assert_eq!(kill_stale(&dir.join("none")).unwrap(), None);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_recorded_process_of_ours_is_killed() {
        let dir = std::env::temp_dir().join(format!("pmtu-kill-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("sleep.pid");
        let mut child = std::process::Command::new("sleep")
            .arg("1000.5")
            .spawn()
            .unwrap();
        fs::write(&pidfile, child.id().to_string()).unwrap();
        // The child may not have exec'd yet when spawn returns: wait for its command line.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fs::read(format!("/proc/{}/cmdline", child.id()))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("1000.5"))
        {
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(1));
        }
        let killed = kill_recorded(&pidfile, &["sleep", "1000.5"]).unwrap();
        assert_eq!(killed, Some(child.id() as i32));
        assert!(!child.wait().unwrap().success());
        fs::remove_dir_all(dir).unwrap();
    }
}
