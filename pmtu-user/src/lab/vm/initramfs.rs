//! The guest's userland: an initramfs (cpio "newc") built here, in two parts that the kernel
//! unpacks one after the other.
//!
//! - The base ([`base`]): busybox for the basics, and Debian's own `dash`, iproute2's `ip`,
//!   openbsd-inetd's `inetd` and `sshd` with the libraries they load, found as `ldd` finds them; `/etc` for them, and the init script.
//!   The same for every kernel and every lab, so it is built once and cached under a key made
//!   of everything that goes in (`initramfs/base-<key>.cpio` in the cache).
//! - The boot part ([`boot_part`]): the kernel's modules (virtio_pci and virtio_net with their
//!   dependencies, loaded at boot), the lab's ssh host key and
//!   pmtu's public key. Small, made for every boot.
//!
//! The init script reads the topology from the kernel command line (`pmtu.mac=` ...: see
//! [`super::qemu::kernel_command_line`]), configures the interface with REMOTE_MAC, routes the
//! fake nets via LOCAL, starts inetd (the original's four service lines) and sshd, waits until
//! they listen, and prints `pmtu-init: READY <release>` on the console; on any failure it
//! prints `pmtu-init: FAILED: <why>` and powers off.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fs,
    io::{Read as _, Write},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

use super::{cpio::Cpio, elf, files};

// ---------------------------------------------------------------------------------------------
// The base userland.

/// A program the guest needs: where it may be on this machine, where it goes in the guest,
/// and the package that provides it.
struct Program {
    host: &'static [&'static str],
    guest: &'static str,
    package: &'static str,
}

const PROGRAMS: &[Program] = &[
    Program {
        host: &["/bin/busybox", "/usr/bin/busybox"],
        guest: "/bin/busybox",
        package: "busybox-static",
    },
    Program {
        host: &["/bin/dash", "/usr/bin/dash"],
        guest: "/bin/dash",
        package: "dash",
    },
    Program {
        host: &["/sbin/ip", "/bin/ip", "/usr/sbin/ip", "/usr/bin/ip"],
        guest: "/bin/ip",
        package: "iproute2",
    },
    Program {
        host: &["/bin/ss", "/usr/bin/ss", "/sbin/ss", "/usr/sbin/ss"],
        guest: "/bin/ss",
        package: "iproute2",
    },
    Program {
        host: &["/usr/sbin/inetd"],
        guest: "/bin/inetd",
        package: "openbsd-inetd",
    },
    // sshd re-executes itself by its absolute path: keep Debian's.
    Program {
        host: &["/usr/sbin/sshd"],
        guest: "/usr/sbin/sshd",
        package: "openssh-server",
    },
];

/// Programs taken along when this machine has them: OpenSSH 9.8 and later run each session
/// in a helper of their own, at its real path.
const OPTIONAL_PROGRAMS: &[&str] = &[
    "/usr/lib/openssh/sshd-session",
    "/usr/lib/openssh/sshd-auth",
];

/// busybox applets linked in /bin (not `ip` or `sh`: iproute2's and dash take those names).
const APPLETS: &[&str] = &[
    "cat", "chmod", "cp", "cut", "dmesg", "echo", "env", "false", "grep", "head", "hostname", "id",
    "init", "insmod", "kill", "ln", "ls", "lsmod", "mkdir", "modprobe", "mount", "nc", "ping",
    "ping6", "poweroff", "printf", "ps", "reboot", "rm", "rmmod", "sed", "seq", "sleep", "sysctl",
    "tail", "test", "tr", "true", "umount", "uname", "wc",
];

/// Where the dynamic loader looks when there is no ld.so.cache (Debian's multiarch paths).
const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Bump when the layout or the generated files change in a way the key would not see.
const BASE_FORMAT: &str = "pmtu-initramfs-base-1";

/// The original setup's inetd.conf lines.
pub const INETD_CONF: &str = "\
chargen stream tcp nowait root internal
chargen stream tcp6 nowait root internal
echo dgram udp wait root internal
echo dgram udp6 wait root internal
";

const INITTAB: &str = "::sysinit:/etc/pmtu-init\n";

const INIT_SCRIPT: &str = include_str!("pmtu-init.sh");

const SSHD_CONFIG: &str = "\
# pmtu's guest: root logs in with pmtu's key only.
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
PidFile /run/sshd.pid
LogLevel ERROR
MaxSessions 100
MaxStartups 100
";

/// /etc of the guest: users for root and sshd's privilege separation, name service from
/// files only, the services inetd resolves, inetd's and sshd's configuration.
fn etc_files() -> Vec<(&'static str, u32, String)> {
    vec![
        (
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .into(),
        ),
        ("etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n".into()),
        // An empty password field (not `*`): sshd without PAM treats `*` as locked.
        (
            "etc/shadow",
            0o600,
            "root::19000:0:99999:7:::\nsshd:!:19000::::::\nnobody:!:19000::::::\n".into(),
        ),
        (
            "etc/nsswitch.conf",
            0o644,
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\n\
             protocols: files\n"
                .into(),
        ),
        (
            "etc/hosts",
            0o644,
            "127.0.0.1 localhost\n::1 localhost\n".into(),
        ),
        (
            "etc/services",
            0o644,
            "echo 7/tcp\necho 7/udp\nchargen 19/tcp ttytst source\nchargen 19/udp ttytst source\n\
             ssh 22/tcp\n"
                .into(),
        ),
        (
            "etc/protocols",
            0o644,
            "ip 0 IP\nicmp 1 ICMP\ntcp 6 TCP\nudp 17 UDP\nipv6 41 IPv6\nipv6-frag 44 IPv6-Frag\n\
             ipv6-icmp 58 IPv6-ICMP\n"
                .into(),
        ),
        ("etc/inetd.conf", 0o644, INETD_CONF.into()),
        ("etc/ssh/sshd_config", 0o644, SSHD_CONFIG.into()),
        ("etc/inittab", 0o644, INITTAB.into()),
        ("etc/pmtu-init", 0o755, INIT_SCRIPT.into()),
    ]
}

/// What goes into the base archive, gathered from this machine.
struct Base {
    /// Guest path -> host file.
    files: BTreeMap<String, PathBuf>,
    /// Guest path -> the guest path of the same host file (one copy of each file).
    links: BTreeMap<String, String>,
}

impl Base {
    /// Adds a host file at a guest path, or a link when the same file is already in.
    fn add(&mut self, guest: &str, host: &Path, seen: &mut BTreeMap<PathBuf, String>) {
        let canonical = fs::canonicalize(host).unwrap_or_else(|_| host.to_path_buf());
        match seen.get(&canonical) {
            Some(first) if first != guest => {
                self.links.insert(guest.to_string(), first.clone());
            }
            Some(_) => {}
            None => {
                seen.insert(canonical, guest.to_string());
                self.files.insert(guest.to_string(), host.to_path_buf());
            }
        }
    }
}

impl Base {
    fn gather() -> Result<Base> {
        let mut base = Base {
            files: BTreeMap::new(),
            links: BTreeMap::new(),
        };
        let mut copies = BTreeMap::new();
        let mut queue = VecDeque::new();
        for p in PROGRAMS {
            let host = p
                .host
                .iter()
                .find(|h| Path::new(h).is_file())
                .ok_or_else(|| {
                    anyhow!(
                    "the guest needs {} from Debian's {}, which is not installed: `cargo xtask \
                     setup` installs it (or `apt-get install {}`)",
                    p.host[0],
                    p.package,
                    p.package
                )
                })?;
            base.add(p.guest, Path::new(host), &mut copies);
            queue.push_back(PathBuf::from(host));
        }
        for path in OPTIONAL_PROGRAMS {
            if Path::new(path).is_file() {
                base.add(path, Path::new(path), &mut copies);
                queue.push_back(PathBuf::from(path));
            }
        }
        // Libraries, breadth first, each once.
        let mut seen = BTreeSet::new();
        while let Some(host) = queue.pop_front() {
            let data = fs::read(&host).with_context(|| format!("reading {}", host.display()))?;
            let needs = elf::needs(&data).with_context(|| format!("{}", host.display()))?;
            if let Some(interp) = needs.interpreter {
                if seen.insert(interp.clone()) {
                    base.add(&interp, Path::new(&interp), &mut copies);
                }
            }
            for lib in needs.libraries {
                if !seen.insert(lib.clone()) {
                    continue;
                }
                let found = needs
                    .search
                    .iter()
                    .map(String::as_str)
                    .chain(LIBRARY_DIRS.iter().copied())
                    .map(|dir| Path::new(dir).join(&lib))
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        anyhow!(
                            "{lib}, which {} needs, is in none of {}",
                            host.display(),
                            LIBRARY_DIRS.join(" ")
                        )
                    })?;
                base.add(&found.to_string_lossy(), &found, &mut copies);
                queue.push_back(found);
            }
        }
        Ok(base)
    }

    /// The cache key: the format, each file's guest path, host path, size, mtime and inode,
    /// and the generated files.
    fn key(&self) -> Result<String> {
        let mut h = Sha256::new();
        h.update(BASE_FORMAT);
        for (guest, host) in &self.files {
            let m = fs::metadata(host).with_context(|| format!("{}", host.display()))?;
            h.update(format!(
                "{guest}\0{}\0{}\0{}\0{}\0{}\n",
                host.display(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino()
            ));
        }
        for (guest, target) in &self.links {
            h.update(format!("{guest}\0->{target}\n"));
        }
        for (path, mode, text) in etc_files() {
            h.update(format!("{path}\0{mode}\0{}\0", text.len()));
            h.update(text);
        }
        h.update(APPLETS.join(","));
        Ok(files::hex(&h.finalize()[..16]))
    }

    fn write(&self, out: impl Write) -> Result<()> {
        let mut cpio = Cpio::new(out);
        for dir in [
            "bin",
            "dev",
            "etc/pmtu",
            "lib/modules",
            "proc",
            "root",
            "run",
            "sys",
            "tmp",
            "usr/sbin",
            "var",
        ] {
            cpio.dir(dir)?;
        }
        cpio.symlink("sbin", "bin")?;
        cpio.symlink("usr/bin", "../bin")?;
        cpio.symlink("var/run", "../run")?;
        for (guest, host) in &self.files {
            let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
            cpio.file(guest, 0o755, &data)?;
        }
        for (guest, target) in &self.links {
            cpio.symlink(guest, target)?;
        }
        cpio.symlink("bin/sh", "dash")?;
        for applet in APPLETS {
            cpio.symlink(&format!("bin/{applet}"), "busybox")?;
        }
        // The kernel runs /init; busybox's init runs /etc/pmtu-init (inittab) and reaps.
        cpio.symlink("init", "bin/busybox")?;
        for (path, mode, text) in etc_files() {
            cpio.file(path, mode, text.as_bytes())?;
        }
        cpio.finish()?;
        Ok(())
    }
}

/// The base archive, built now unless the cache has it: `(path, built now)`.
pub fn base(cache: &Path) -> Result<(PathBuf, bool)> {
    let base = Base::gather().context("gathering the guest's programs")?;
    let path = cache
        .join("initramfs")
        .join(format!("base-{}.cpio", base.key()?));
    if path.exists() {
        return Ok((path, false));
    }
    let mut data = Vec::with_capacity(32 << 20);
    base.write(&mut data)?;
    files::write_atomic(&path, &data)?;
    prune_old_bases(&path);
    Ok((path, true))
}

/// Removes base archives other than `current` that no boot used for an hour (made before the
/// guest's programs were updated).
fn prune_old_bases(current: &Path) {
    let Some(dir) = current.parent() else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.accessed())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        let name = entry.file_name().to_string_lossy().into_owned();
        if path != current && old && name.starts_with("base-") && name.ends_with(".cpio") {
            let _ = fs::remove_file(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Modules and the boot part.

/// Modules the guest loads at boot: the NIC.
pub const BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// Which module files go into the guest.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModulePlan {
    /// Paths relative to the modules dir, in load order (dependencies first).
    pub load: Vec<String>,
    /// Wanted modules that are built in.
    pub builtin: Vec<String>,
}

/// A module's name from its path: `kernel/drivers/net/virtio_net.ko.xz` -> `virtio_net`
/// (`-` and `_` are the same to modprobe).
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// Plans from modules.dep (and modules.builtin) text.
pub fn plan_modules(
    dep: &str,
    builtin: &str,
    boot: &[&str],
) -> std::result::Result<ModulePlan, String> {
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let list = rest.split_whitespace().map(String::from).collect();
        deps.insert(module_name(path), (path.trim().to_string(), list));
    }
    let builtins: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut plan = ModulePlan::default();
    let mut add = |name: &str| -> bool {
        let Some((path, list)) = deps.get(&name.replace('-', "_")) else {
            return false;
        };
        // modules.dep lists every dependency, the deepest last: load them in reverse.
        for p in list.iter().rev().chain(std::iter::once(path)) {
            if !plan.load.contains(p) {
                plan.load.push(p.clone());
            }
        }
        true
    };
    let mut builtin_found = Vec::new();
    for name in boot {
        if builtins.contains(&name.replace('-', "_")) {
            builtin_found.push(name.to_string());
        } else if !add(name) {
            return Err(name.to_string());
        }
    }
    plan.builtin = builtin_found;
    Ok(plan)
}

/// A module file's contents, uncompressed (busybox's insmod takes plain .ko files).
fn module_data(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    if name.ends_with(".ko.xz") {
        liblzma::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {name}"))?;
    } else if name.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {name}"))?;
    } else if name.ends_with(".ko.zst") {
        bail!("{name}: zstd-compressed modules are not supported; install them uncompressed or with xz (CONFIG_MODULE_COMPRESS_XZ)");
    } else {
        out = raw;
    }
    Ok(out)
}

/// What makes one boot's archive.
pub struct BootPart<'a> {
    /// `lib/modules/<release>` with modules.dep, if the kernel has modules.
    pub modules: Option<&'a Path>,
    pub release: &'a str,
    /// The private host key (OpenSSH format).
    pub host_key: &'a [u8],
    /// authorized_keys lines.
    pub authorized_keys: &'a str,
}

/// The boot part of the initramfs: modules (with a modules.dep for them alone, so busybox's
/// modprobe works), /etc/pmtu/modules (the load order), the ssh keys.
pub fn boot_part(part: &BootPart) -> Result<Vec<u8>> {
    let mut cpio = Cpio::new(Vec::new());
    if let Some(dir) = part.modules {
        let dep = fs::read_to_string(dir.join("modules.dep"))
            .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
        let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        let plan = plan_modules(&dep, &builtin, BOOT_MODULES).map_err(|missing| {
            anyhow!(
                "kernel {} has no {missing}: it is neither built in (modules.builtin) nor among \
                 the modules in {}; the guest needs virtio_pci and virtio_net",
                part.release,
                dir.display()
            )
        })?;
        let guest_dir = format!("lib/modules/{}", part.release);
        let plain = |p: &str| -> String {
            for ext in [".xz", ".gz", ".zst"] {
                if let Some(s) = p.strip_suffix(ext) {
                    return s.to_string();
                }
            }
            p.to_string()
        };
        for rel in &plan.load {
            let data = module_data(&dir.join(rel))?;
            cpio.file(&format!("{guest_dir}/{}", plain(rel)), 0o644, &data)?;
        }
        let shipped: BTreeSet<&String> = plan.load.iter().collect();
        let dep_lines: String = dep
            .lines()
            .filter_map(|l| {
                let (path, rest) = l.split_once(':')?;
                shipped.contains(&path.trim().to_string()).then(|| {
                    let list: Vec<String> = rest.split_whitespace().map(plain).collect();
                    format!("{}: {}\n", plain(path.trim()), list.join(" "))
                })
            })
            .collect();
        cpio.file(
            &format!("{guest_dir}/modules.dep"),
            0o644,
            dep_lines.as_bytes(),
        )?;
        let order: String = plan
            .load
            .iter()
            .map(|rel| format!("/{guest_dir}/{}\n", plain(rel)))
            .collect();
        cpio.file("etc/pmtu/modules", 0o644, order.as_bytes())?;
    }
    cpio.file("etc/ssh/ssh_host_ed25519_key", 0o600, part.host_key)?;
    cpio.file(
        "etc/ssh/authorized_keys",
        0o644,
        part.authorized_keys.as_bytes(),
    )?;
    Ok(cpio.finish()?)
}

#[cfg(test)]
#[path = "initramfs_tests.rs"]
mod tests;
