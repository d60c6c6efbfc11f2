//! Debian's kernel packages: fetched with `apt-get download`, unpacked (never installed), with
//! a modules.dep from `depmod -b`, complete when `.complete` exists.
use std::{
    fs, io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::UNIX_EPOCH,
};

use anyhow::{anyhow, bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

use super::files::{hex, temp_sibling};

/// The Debian metapackage whose dependency is "Debian's current kernel".
pub const DEBIAN_METAPACKAGE: &str = "linux-image-amd64";

/// The unpacked tree of Debian's current kernel, fetched on first use.
pub(super) fn debian(cache: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let kernels = cache.join("kernels");
    let link = kernels.join("debian");
    if let Ok(target) = fs::read_link(&link) {
        let dir = kernels.join(target);
        if dir.join(".complete").exists() {
            return Ok(dir);
        }
    }
    let package = debian_package()?;
    let dir = kernels.join(&package);
    if !dir.join(".complete").exists() {
        progress(&format!(
            "fetching Debian's kernel {package} with apt-get download into {} (once)",
            kernels.display()
        ));
        let tmp = temp_sibling(&dir);
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let result = (|| {
            command_ok(
                Command::new("apt-get")
                    .args(["download", "-q", "-o", "APT::Sandbox::User=root", &package])
                    .current_dir(&tmp),
                "apt-get download",
                "is apt installed, and has `apt-get update` run?",
            )?;
            let deb = fs::read_dir(&tmp)?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", tmp.display()))?;
            unpack_deb(&deb, &tmp.join("root"), progress)?;
            fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e.context(format!("fetching {package}")));
        }
        install_tree(&tmp.join("root"), &dir)?;
        let _ = fs::remove_dir_all(&tmp);
    }
    let tmp_link = temp_sibling(&link);
    std::os::unix::fs::symlink(&package, &tmp_link)
        .and_then(|()| fs::rename(&tmp_link, &link))
        .with_context(|| format!("linking {} to {package}", link.display()))?;
    Ok(dir)
}

/// The package `linux-image-amd64` depends on (e.g. linux-image-6.1.0-56-amd64).
fn debian_package() -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", DEBIAN_METAPACKAGE])
        .stdin(Stdio::null())
        .output()
        .context(
            "running apt-cache: `--kernel debian` fetches Debian's kernel with apt; on another \
             system give a kernel image",
        )?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!(
                "apt-cache knows no kernel behind {DEBIAN_METAPACKAGE} ({}): run `apt-get update`",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

/// A user's .deb, unpacked into the cache (keyed by its path, size and mtime).
pub(super) fn unpack_user_deb(
    deb: &Path,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let meta = fs::metadata(deb)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let abs = fs::canonicalize(deb).unwrap_or_else(|_| deb.to_path_buf());
    let key = hex(&Sha256::digest(format!("{}\0{}\0{mtime}", abs.display(), meta.len()))[..8]);
    let dir = cache.join("kernels").join(format!("deb-{key}"));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    let tmp = temp_sibling(&dir);
    let result = unpack_deb(deb, &tmp, progress);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    install_tree(&tmp, &dir)?;
    Ok(dir)
}

/// `dpkg-deb -x` into `dest`, then `depmod -b` for the modules (the package has no
/// modules.dep; the postinst that would write one never runs).
fn unpack_deb(deb: &Path, dest: &Path, progress: &mut dyn FnMut(&str)) -> Result<()> {
    progress(&format!("unpacking {} (once)", deb.display()));
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    command_ok(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest),
        "dpkg-deb -x",
        "is dpkg installed, and is this a Debian package?",
    )
    .with_context(|| format!("unpacking {}", deb.display()))?;
    let (_, release) = tree_kernel(dest).with_context(|| deb.display().to_string())?;
    if dest.join("lib/modules").join(&release).is_dir() {
        command_ok(
            Command::new("depmod").arg("-b").arg(dest).arg(&release),
            "depmod -b",
            "`apt-get install kmod`",
        )?;
    }
    Ok(())
}

/// Moves a finished tree into place and marks it complete; a tree another run finished first
/// wins.
fn install_tree(tmp: &Path, dir: &Path) -> Result<()> {
    fs::write(tmp.join(".complete"), "")?;
    if let Err(e) = fs::rename(tmp, dir) {
        if dir.join(".complete").exists() {
            let _ = fs::remove_dir_all(tmp);
            return Ok(());
        }
        return Err(e).with_context(|| format!("moving {} to {}", tmp.display(), dir.display()));
    }
    Ok(())
}

fn command_ok(cmd: &mut Command, what: &str, hint: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow!("`{what}`: not installed ({hint})"),
            _ => anyhow!("`{what}`: {e}"),
        })?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The one `boot/vmlinuz-*` of an unpacked package and its release.
pub(super) fn tree_kernel(root: &Path) -> Result<(PathBuf, String)> {
    let boot = root.join("boot");
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(&boot) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(release) = name.strip_prefix("vmlinuz-") {
                found.push((entry.path(), release.to_string()));
            }
        }
    }
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "{} holds no boot/vmlinuz-*: not a linux-image package",
            root.display()
        ),
        _ => bail!(
            "{} holds more than one kernel: {}",
            root.display(),
            found
                .iter()
                .map(|(_, r)| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
