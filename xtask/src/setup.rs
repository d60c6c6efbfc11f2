//! `cargo xtask setup`: what the build and the suite need on a fresh Debian machine.
//!
//! Each part checks first and does nothing when it is already there, so a second run takes a
//! fraction of a second:
//! - rust-src for the toolchain that builds the XDP program (nightly, else stable, which the
//!   build then drives with RUSTC_BOOTSTRAP=1: see pmtu-user/build.rs);
//! - bpf-linker 0.13.0, linked against the toolchain's own libLLVM (docs: toolchain.md);
//! - the Debian packages the suite runs (ip, ethtool, nft, inetd, ping, sysctl) and those the
//!   VM REMOTE needs (qemu, busybox, sshd, ssh, depmod);
//! - Debian's current kernel for `--kernel debian`, downloaded (never installed) and unpacked
//!   into pmtu's cache;
//! - with `cargo xtask setup` and `cargo xtask test` only, the ones the tests read the suite's
//!   output with (a TAP parser, a headless browser): not needed to build or run pmtu.
use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::exec::{self, cargo, output, run, which};

/// The bpf-linker release the build is known to work with (LLVM 22, rustc 1.97).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the suite uses: `ip`, `ethtool`, `nft`, inetd's chargen/echo for REMOTE,
/// `ping`, `sysctl`; for a VM REMOTE (`--kernel`): qemu, the guest's busybox, sshd (installed,
/// never started here), ssh and ssh-keygen, dash, depmod for unpacked kernel packages.
pub const PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "nftables",
    "openbsd-inetd",
    "iputils-ping",
    "procps",
    "qemu-system-x86",
    "busybox-static",
    "openssh-server",
    "openssh-client",
    "dash",
    "kmod",
];

/// Debian packages only the tests use: `prove` (perl's TAP::Parser) reads `--format tap`,
/// headless Chromium renders `--report FILE.html`.
pub const TEST_PACKAGES: &[&str] = &["perl", "chromium"];
/// The metapackage whose dependency is Debian's current kernel.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";

/// Whether missing Debian packages are an error (explicit `setup`, the suite) or only a
/// warning (a non-root `build`, which does not need them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Packages {
    Required,
    Optional,
}

pub fn setup(packages: Packages) -> Result<()> {
    let toolchain = ebpf_toolchain();
    rust_src(&toolchain)?;
    bpf_linker(&toolchain)?;
    debian_packages("debian packages", PACKAGES, packages)?;
    if packages == Packages::Required {
        debian_kernel()?;
    }
    Ok(())
}

/// What the tests need besides the suite's own packages (`cargo xtask setup`, `cargo xtask
/// test`).
pub fn test_packages() -> Result<()> {
    debian_packages("test packages", TEST_PACKAGES, Packages::Required)
}

/// pmtu's cache: `$PMTU_CACHE`, else ~/.cache/pmtu (as pmtu itself reads it).
fn cache_root() -> PathBuf {
    match std::env::var_os("PMTU_CACHE").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => home().join(".cache/pmtu"),
    }
}

/// Debian's current kernel for `pmtu run --kernel debian`: `apt-get download` of the package
/// linux-image-amd64 depends on, `dpkg-deb -x` and `depmod -b` into
/// `<cache>/kernels/<package>/` (marked complete by `.complete`), and `<cache>/kernels/debian`
/// linked to it: the layout pmtu-user/src/lab/vm/image.rs reads (and makes itself on first use
/// when setup has not). Nothing is installed. Quick when done.
fn debian_kernel() -> Result<()> {
    let kernels = cache_root().join("kernels");
    let link = kernels.join("debian");
    if let Ok(target) = fs::read_link(&link) {
        if kernels.join(&target).join(".complete").exists() {
            println!("setup: debian kernel {} ok", target.display());
            return Ok(());
        }
    }
    let depends = output(Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]))
        .context("asking apt-cache for Debian's current kernel")?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| {
            format!("apt-cache knows no kernel behind {KERNEL_METAPACKAGE}: run `apt-get update`")
        })?
        .to_string();
    let dir = kernels.join(&package);
    if !dir.join(".complete").exists() {
        println!(
            "setup: fetching Debian's kernel {package} into {} (download and unpack only)",
            kernels.display()
        );
        let tmp = kernels.join(format!(".{package}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let result = unpack_kernel(&package, &tmp);
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let root = tmp.join("root");
        fs::write(root.join(".complete"), "")?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&root, &dir)
            .with_context(|| format!("moving {} to {}", root.display(), dir.display()))?;
        let _ = fs::remove_dir_all(&tmp);
    }
    let tmp_link = kernels.join(format!(".debian.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp_link);
    symlink(&package, &tmp_link)
        .and_then(|()| fs::rename(&tmp_link, &link))
        .with_context(|| format!("linking {} to {package}", link.display()))?;
    println!("setup: debian kernel {package} ok");
    Ok(())
}

/// Downloads `package` into `tmp` and unpacks it into `tmp/root`, with a modules.dep.
fn unpack_kernel(package: &str, tmp: &Path) -> Result<()> {
    run(Command::new("apt-get")
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
        .current_dir(tmp))
    .with_context(|| format!("apt-get download {package} failed"))?;
    let deb = fs::read_dir(tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", tmp.display()))?;
    let root = tmp.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))
        .with_context(|| format!("unpacking {}", deb.display()))?;
    fs::remove_file(&deb)?;
    let modules = root.join("lib/modules");
    for entry in fs::read_dir(&modules)
        .with_context(|| format!("{} has no lib/modules", package))?
        .flatten()
    {
        let release = entry.file_name();
        run(Command::new("depmod").arg("-b").arg(&root).arg(&release))
            .context("depmod -b (kmod) failed")?;
    }
    Ok(())
}

/// The toolchain that builds the XDP program, chosen as pmtu-user/build.rs chooses it.
fn ebpf_toolchain() -> String {
    if let Ok(t) = std::env::var("PMTU_EBPF_TOOLCHAIN") {
        return t;
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nightly { "nightly" } else { "stable" }.into()
}

fn rust_src(toolchain: &str) -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))
    .context("listing rustup components (is rustup installed? https://rustup.rs)")?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        println!("setup: rust-src ok ({toolchain})");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", toolchain]))
        .context("adding rust-src, which the XDP build needs to compile `core`")?;
    println!("setup: installed rust-src ({toolchain})");
    Ok(())
}

/// `bpf-linker --version` -> "0.13.0", or None when it does not run.
fn linker_version(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(str::to_owned)
}

/// Where `cargo install` puts binaries: $CARGO_INSTALL_ROOT/bin, else $CARGO_HOME/bin, else
/// ~/.cargo/bin.
fn install_bin() -> PathBuf {
    if let Some(root) = std::env::var_os("CARGO_INSTALL_ROOT") {
        return PathBuf::from(root).join("bin");
    }
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(home).join("bin");
    }
    home().join(".cargo/bin")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// The directory the bpf-linker binary's rpath points to: fixed, outside the checkout, so the
/// linker keeps working whatever checkout built it.
pub fn llvm_lib_dir() -> PathBuf {
    home().join(".cache/pmtu/llvm/lib")
}

/// Puts `dir` first on this process's PATH (and so on its children's).
fn prepend_path(dir: &Path) {
    let old = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&old));
    if let Ok(joined) = std::env::join_paths(dirs) {
        std::env::set_var("PATH", joined);
    }
}

fn bpf_linker(toolchain: &str) -> Result<()> {
    let bin = install_bin();
    let installed = bin.join("bpf-linker");
    let on_path = which("bpf-linker");
    if let Some(p) = &on_path {
        if linker_version(p).as_deref() == Some(BPF_LINKER_VERSION) {
            println!("setup: bpf-linker {BPF_LINKER_VERSION} ok");
            return Ok(());
        }
    }
    if linker_version(&installed).as_deref() == Some(BPF_LINKER_VERSION) {
        // Installed but not first on PATH: the XDP build calls it by name.
        prepend_path(&bin);
        println!(
            "setup: bpf-linker {BPF_LINKER_VERSION} ok (xtask puts {} first on PATH; add it \
             to PATH to build without xtask)",
            bin.display()
        );
        return Ok(());
    }
    install_bpf_linker(toolchain)?;
    match linker_version(&installed) {
        Some(v) if v == BPF_LINKER_VERSION => {}
        other => bail!(
            "bpf-linker was installed but {} reports version {other:?}, expected \
             {BPF_LINKER_VERSION}",
            installed.display()
        ),
    }
    if which("bpf-linker").as_deref() != Some(installed.as_path()) {
        prepend_path(&bin);
        println!(
            "setup: note: add {} to PATH to build without xtask",
            bin.display()
        );
    }
    println!("setup: installed bpf-linker {BPF_LINKER_VERSION}");
    Ok(())
}

/// Builds bpf-linker against the toolchain's own libLLVM, as docs/toolchain.md describes:
/// Debian's LLVM is too old, and the default feature wants a newer LLVM than rustc's.
fn install_bpf_linker(toolchain: &str) -> Result<()> {
    let sysroot =
        output(Command::new("rustup").args(["run", toolchain, "rustc", "--print", "sysroot"]))
            .with_context(|| format!("finding the sysroot of the {toolchain} toolchain"))?;
    let sysroot_lib = PathBuf::from(sysroot.trim()).join("lib");
    let (libllvm, major) = find_libllvm(&sysroot_lib)?;
    let dir = llvm_lib_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let soname = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    // The soname the binary asks for, and the name the linker looks for.
    for link in [dir.join(soname), dir.join("libLLVM.so")] {
        replace_symlink(&libllvm, &link)?;
    }
    let prefix = dir.parent().context("LLVM lib dir has no parent")?;
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {major}; about 90 s)",
        libllvm.display()
    );
    let mut cmd = cargo();
    cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", prefix);
    run(&mut cmd).context(
        "building bpf-linker failed: see cargo's messages above (docs: \
         /work/shared/docs/toolchain.md, step 2)",
    )
}

/// The toolchain's libLLVM (`libLLVM.so.22.1-rust-1.97.0-nightly`) and its major version.
fn find_libllvm(lib: &Path) -> Result<(PathBuf, u32)> {
    let entries = fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("libLLVM.so.")) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(major) = digits.parse() {
            return Ok((entry.path(), major));
        }
    }
    bail!(
        "no libLLVM.so.* in {}: this toolchain does not ship the shared LLVM that bpf-linker \
         links against",
        lib.display()
    )
}

fn replace_symlink(target: &Path, link: &Path) -> Result<()> {
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link).with_context(|| format!("removing {}", link.display()))?;
    }
    symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

/// The packages of `wanted` that dpkg does not report as installed.
fn missing_packages(wanted: &[&'static str]) -> Result<Vec<&'static str>> {
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the others.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(wanted)
        .stderr(std::process::Stdio::null())
        .output()
        .context(
            "cannot run dpkg-query: `cargo xtask setup` installs packages on Debian; elsewhere \
             install iproute2, ethtool, nftables, an inetd with chargen/echo, ping and sysctl \
             by hand",
        )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(" ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    Ok(wanted
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect())
}

fn debian_packages(what: &str, wanted: &[&'static str], need: Packages) -> Result<()> {
    let missing = missing_packages(wanted)?;
    if missing.is_empty() {
        println!("setup: {what} ok");
        return Ok(());
    }
    let list = missing.join(" ");
    if !exec::is_root() {
        let msg = format!(
            "missing Debian packages: {list}; run `cargo xtask setup` as root (or `apt-get \
             install {list}`)"
        );
        if need == Packages::Required {
            bail!(msg);
        }
        println!("setup: warning: {msg} (the build does not need them, the suite does)");
        return Ok(());
    }
    // apt-get update only when something is missing: it is the slow part.
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get update failed: check the package sources in /etc/apt")?;
    {
        // openbsd-inetd's and openssh-server's installs would start their daemons in the root
        // namespace; the lab starts its own inside REMOTE's namespace or guest.
        let _no_services = NoServiceStart::install(Path::new(POLICY_RC_D))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .with_context(|| format!("installing {list} failed: see apt-get's messages above"))?;
    }
    let still = missing_packages(wanted)?;
    if !still.is_empty() {
        bail!(
            "apt-get reported success but these are still not installed: {}",
            still.join(" ")
        );
    }
    println!("setup: installed {list}");
    Ok(())
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// A policy-rc.d that forbids starting services (exit 101) while packages install; removed on
/// drop, and only when this guard created it (an existing one is left alone).
pub struct NoServiceStart {
    created: Option<PathBuf>,
}

impl NoServiceStart {
    pub fn install(path: &Path) -> Result<Self> {
        if fs::symlink_metadata(path).is_ok() {
            return Ok(Self { created: None });
        }
        fs::write(
            path,
            "#!/bin/sh\n# Written by `cargo xtask setup` while it installs packages: start no \
             service.\nexit 101\n",
        )
        .with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
        Ok(Self {
            created: Some(path.to_path_buf()),
        })
    }
}

impl Drop for NoServiceStart {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            if let Err(e) = fs::remove_file(path) {
                eprintln!("setup: warning: cannot remove {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn policy_rc_d_is_created_and_removed() {
        let dir = temp_dir("policy-new");
        let path = dir.join("policy-rc.d");
        {
            let _guard = NoServiceStart::install(&path).expect("install");
            // Through sh: exec'ing a file just written can race with forks in other test threads.
            let status = Command::new("sh")
                .arg(&path)
                .status()
                .expect("run policy-rc.d");
            assert_eq!(status.code(), Some(101));
        }
        assert!(!path.exists(), "the guard removes the file it created");
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn existing_policy_rc_d_is_left_alone() {
        let dir = temp_dir("policy-old");
        let path = dir.join("policy-rc.d");
        fs::write(&path, "#!/bin/sh\nexit 0\n").expect("write");
        drop(NoServiceStart::install(&path).expect("install"));
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "#!/bin/sh\nexit 0\n"
        );
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn finds_libllvm_and_its_major_version() {
        let dir = temp_dir("llvm");
        fs::write(dir.join("librustc_driver-1234.so"), "").expect("write");
        fs::write(dir.join("libLLVM.so.22.1-rust-1.97.0-nightly"), "").expect("write");
        let (path, major) = find_libllvm(&dir).expect("found");
        assert_eq!(major, 22);
        assert!(path.ends_with("libLLVM.so.22.1-rust-1.97.0-nightly"));
        fs::remove_dir_all(dir).ok();
    }
}
