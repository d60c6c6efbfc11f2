//! Builds the XDP program (pmtu-ebpf) for the BPF target and leaves the object in OUT_DIR,
//! where `src/xdp/responder.rs` embeds it.
//!
//! This is what aya-build does, without its dependency tree, plus a fallback to stable with
//! RUSTC_BOOTSTRAP when there is no nightly. Needs rust-src and bpf-linker: `cargo xtask setup`
//! installs both.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    if let Err(e) = build() {
        eprintln!("error: {e}");
        eprintln!("hint: `cargo xtask setup` installs rust-src and bpf-linker");
        std::process::exit(1);
    }
}

/// The toolchain that builds `core` for the BPF target: nightly when installed, else stable
/// with RUSTC_BOOTSTRAP (both verified on this machine kind).
fn toolchain() -> (String, bool) {
    if let Ok(t) = env::var("PMTU_EBPF_TOOLCHAIN") {
        return (t, false);
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nightly {
        ("nightly".into(), false)
    } else {
        ("stable".into(), true)
    }
}

fn build() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let ebpf = manifest.join("../pmtu-ebpf");
    let common = manifest.join("../pmtu-common");
    for p in [
        ebpf.join("src"),
        ebpf.join("Cargo.toml"),
        common.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=PMTU_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").map_err(|e| e.to_string())?;
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let (toolchain, bootstrap) = toolchain();
    // One target dir for every profile and for clippy: the object is built once, and later
    // builds find it up to date (each build script run gets an OUT_DIR of its own).
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target"))
        .join("ebpf");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        &toolchain,
        "cargo",
        "build",
        "--package",
        "pmtu-ebpf",
        "--bins",
    ])
    .args(["--release", "--target", target, "-Z", "build-std=core"])
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(&ebpf)
    .env(
        "CARGO_ENCODED_RUSTFLAGS",
        [
            format!("--cfg=bpf_target_arch=\"{arch}\""),
            "-Cdebuginfo=2".into(),
            "-Clink-arg=--btf".into(),
            // Word loads and stores for unaligned data (frames, packed headers) instead of
            // byte by byte; the kernel accepts them on every architecture it runs XDP on.
            "-Ctarget-feature=+allows-misaligned-mem-access".into(),
        ]
        .join("\x1f"),
    )
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER");
    if bootstrap {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run rustup ({e}); is rustup installed?"))?;
    if !status.success() {
        return Err(format!(
            "building the XDP program failed ({status}): {cmd:?}"
        ));
    }
    copy(
        &target_dir.join(target).join("release/pmtu"),
        &out_dir.join("pmtu.bpf.o"),
    )
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}
