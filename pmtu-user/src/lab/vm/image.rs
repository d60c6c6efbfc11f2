//! The kernel under test: what IMAGE names, the file qemu boots, and the modules beside it.
//!
//! IMAGE is a bzImage, an ELF vmlinux, a Debian linux-image .deb (unpacked, never installed), or
//! the word `debian`: Debian's current kernel for this release (the package linux-image-amd64
//! depends on), fetched with `apt-get download` once. Everything derived lives in the cache
//! ([`cache_root`]):
//!
//! - `kernels/<package>/`: an unpacked Debian kernel package (`boot/vmlinuz-*`,
//!   `lib/modules/<release>/` with a modules.dep from `depmod -b`), complete when `.complete`
//!   exists; `kernels/debian` is a symlink to the package `debian` resolved to.
//!   `cargo xtask setup` makes the same layout.
//! - `vmlinux/<sha256 of the bzImage>.elf`: the uncompressed kernel from a bzImage. Under TCG
//!   booting it (through its PVH entry) instead of the bzImage saves the seconds the guest would
//!   spend decompressing itself.
use std::{
    fs,
    io::{self, Read as _},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

use super::{
    debian::{debian, tree_kernel, unpack_user_deb},
    elf,
    files::{hex, write_atomic},
};

/// What IMAGE may be, for messages.
pub const IMAGE_FORMS: &str =
    "IMAGE is a bzImage, an ELF vmlinux, a Debian linux-image .deb, or `debian`";

/// pmtu's cache: `$PMTU_CACHE`, else `$HOME/.cache/pmtu` (`/root/.cache/pmtu` without HOME).
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("PMTU_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/pmtu")
}

/// A kernel ready to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// What qemu's `-kernel` gets: an ELF vmlinux with a PVH entry, or the bzImage.
    pub boot_image: PathBuf,
    /// The release (`uname -r`) as the image states it.
    pub release: String,
    /// `lib/modules/<release>` with a modules.dep; `None`: no modules (all built in, or the
    /// guest finds out).
    pub modules: Option<PathBuf>,
}

/// What a file's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    BzImage,
    Elf,
    Deb,
}

/// Recognises a bzImage (the `HdrS` boot header), an ELF file or a Debian package (an ar
/// archive).
pub fn detect(head: &[u8]) -> Option<Format> {
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        Some(Format::BzImage)
    } else if elf::is_elf(head) {
        Some(Format::Elf)
    } else if head.starts_with(b"!<arch>\n") {
        Some(Format::Deb)
    } else {
        None
    }
}

/// Resolves IMAGE and `--modules` to a bootable kernel; `progress` gets one line per slow
/// step (a download, an unpack, a decompression).
pub fn resolve(
    image: &str,
    modules: Option<&Path>,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Kernel> {
    if image.trim().is_empty() {
        bail!("--kernel needs a value: {IMAGE_FORMS}");
    }
    if image == "debian" {
        let root = debian(cache, progress)?;
        return from_tree(&root, modules, cache, progress);
    }
    let path = Path::new(image);
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => anyhow!("{image}: no such file ({IMAGE_FORMS})"),
        _ => anyhow!("{image}: {e}"),
    })?;
    if meta.is_dir() {
        bail!("{image} is a directory: {IMAGE_FORMS}");
    }
    let mut head = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .with_context(|| format!("reading {image}"))?;
    match detect(&head) {
        Some(Format::Deb) => {
            let root = unpack_user_deb(path, cache, progress)?;
            from_tree(&root, modules, cache, progress)
        }
        Some(Format::BzImage) => from_bzimage(path, modules, cache, progress),
        Some(Format::Elf) => from_elf(path, modules),
        None => bail!(
            "{image} is not a kernel image: no bzImage boot header, not ELF, not a Debian \
             package ({IMAGE_FORMS})"
        ),
    }
}

fn from_bzimage(
    path: &Path,
    modules: Option<&Path>,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Kernel> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let header = BzHeader::parse(&data).ok_or_else(|| {
        anyhow!(
            "{}: a corrupt bzImage (its boot header is cut short)",
            path.display()
        )
    })?;
    let release = header.release.clone().ok_or_else(|| {
        anyhow!(
            "{}: the bzImage states no kernel release (boot protocol before 2.0?)",
            path.display()
        )
    })?;
    let boot_image = vmlinux_for(path, &data, &header, cache, progress)?;
    let modules = modules_for(path, &release, modules)?;
    Ok(Kernel {
        boot_image,
        release,
        modules,
    })
}

fn from_elf(path: &Path, modules: Option<&Path>) -> Result<Kernel> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let pvh = elf::has_pvh_note(&data)
        .map_err(|e| anyhow!("{}: not a kernel ELF image: {e}", path.display()))?;
    if !pvh {
        bail!(
            "{}: this ELF vmlinux has no PVH entry note (CONFIG_PVH), so qemu cannot boot it; \
             give the bzImage (arch/x86/boot/bzImage) instead",
            path.display()
        );
    }
    let release = banner_release(&data).ok_or_else(|| {
        anyhow!(
            "{}: no \"Linux version\" banner in this ELF file: not a kernel",
            path.display()
        )
    })?;
    let modules = modules_for(path, &release, modules)?;
    Ok(Kernel {
        boot_image: path.to_path_buf(),
        release,
        modules,
    })
}

/// A kernel from an unpacked package tree: `boot/vmlinuz-<release>` and
/// `lib/modules/<release>`.
fn from_tree(
    root: &Path,
    modules: Option<&Path>,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Kernel> {
    let (vmlinuz, _) = tree_kernel(root)?;
    let kernel = from_bzimage(&vmlinuz, modules, cache, progress)?;
    if kernel.modules.is_none() {
        bail!(
            "{}: no modules for {} in the package (lib/modules/{}/modules.dep)",
            root.display(),
            kernel.release,
            kernel.release
        );
    }
    Ok(kernel)
}

// ---------------------------------------------------------------------------------------------
// bzImage.

/// The parts of the x86 boot header (Documentation/arch/x86/boot.rst) this needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BzHeader {
    /// The release, from the `kernel_version` string.
    pub release: Option<String>,
    /// Offset and length of the compressed kernel in the file (protocol 2.08 and later).
    pub payload: Option<(usize, usize)>,
}

impl BzHeader {
    pub fn parse(data: &[u8]) -> Option<BzHeader> {
        if data.len() < 0x250 || &data[0x202..0x206] != b"HdrS" {
            return None;
        }
        let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
        let u32_at =
            |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        let protocol = u16_at(0x206);
        let release = match u16_at(0x20e) as usize {
            0 => None,
            ptr => data.get(ptr + 0x200..).and_then(|text| {
                let end = text.iter().position(|b| *b == 0 || *b == b' ')?;
                let release = std::str::from_utf8(&text[..end]).ok()?;
                (!release.is_empty()).then(|| release.to_string())
            }),
        };
        let payload = (protocol >= 0x208).then(|| {
            let setup_sects = match data[0x1f1] {
                0 => 4,
                n => n as usize,
            };
            let start = (setup_sects + 1) * 512 + u32_at(0x248) as usize;
            (start, u32_at(0x24c) as usize)
        });
        let payload = payload.filter(|(start, len)| {
            start
                .checked_add(*len)
                .is_some_and(|end| *len > 0 && end <= data.len())
        });
        Some(BzHeader { release, payload })
    }
}

/// How a bzImage's payload is compressed, from its magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Gzip,
    /// zstd, lz4, lzma, lzo, bzip2: booted as the bzImage.
    Other,
}

pub fn compression(payload: &[u8]) -> Compression {
    if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else {
        Compression::Other
    }
}

/// The payload of a bzImage: from the header, else found by the xz magic.
fn payload<'a>(data: &'a [u8], header: &BzHeader) -> Option<&'a [u8]> {
    if let Some((start, len)) = header.payload {
        return Some(&data[start..start + len]);
    }
    let magic = [0xfd, b'7', b'z', b'X', b'Z', 0];
    let at = data.windows(magic.len()).position(|w| w == magic)?;
    Some(&data[at..])
}

/// Decompresses the kernel from a bzImage's payload; `Ok(None)` for a compression this does
/// not read.
pub fn decompress(payload: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(payload.len() * 5);
    match compression(payload) {
        // Both decoders stop at the end of the first stream: the kernel's build appends the
        // uncompressed size after it.
        Compression::Xz => liblzma::read::XzDecoder::new(payload)
            .read_to_end(&mut out)
            .context("its xz payload does not decompress")?,
        Compression::Gzip => flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .context("its gzip payload does not decompress")?,
        Compression::Other => return Ok(None),
    };
    Ok(Some(out))
}

/// The file to boot for a bzImage: its vmlinux from the cache (extracted now if need be), or
/// the bzImage itself when the payload is not xz or gzip or the kernel has no PVH entry.
fn vmlinux_for(
    path: &Path,
    data: &[u8],
    header: &BzHeader,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let dir = cache.join("vmlinux");
    let key = hex(&Sha256::digest(data)[..16]);
    let elf_path = dir.join(format!("{key}.elf"));
    let none_path = dir.join(format!("{key}.bzimage-only"));
    if elf_path.exists() {
        return Ok(elf_path);
    }
    if none_path.exists() {
        return Ok(path.to_path_buf());
    }
    let corrupt = |why: String| anyhow!("{}: a corrupt kernel image: {why}", path.display());
    let payload = payload(data, header)
        .ok_or_else(|| corrupt("its boot header points outside the file".to_string()))?;
    let comp = compression(payload);
    if comp != Compression::Other {
        progress(&format!(
            "extracting the uncompressed kernel from {} (once; it boots faster)",
            path.display()
        ));
    }
    let vmlinux = decompress(payload).map_err(|e| corrupt(format!("{e:#}")))?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let usable = match &vmlinux {
        Some(v) => {
            if !elf::is_elf(v) {
                return Err(corrupt(
                    "its payload decompresses to something that is not ELF".to_string(),
                ));
            }
            elf::has_pvh_note(v).map_err(|e| corrupt(format!("{e:#}")))?
        }
        None => false,
    };
    match vmlinux {
        Some(v) if usable => {
            write_atomic(&elf_path, &v)?;
            Ok(elf_path)
        }
        _ => {
            log::info!(
                "{}: booting the bzImage itself (payload {comp:?}, or no PVH entry)",
                path.display()
            );
            write_atomic(&none_path, b"")?;
            Ok(path.to_path_buf())
        }
    }
}

/// The release in a kernel's `Linux version <release> (...)` banner.
pub fn banner_release(data: &[u8]) -> Option<String> {
    let needle = b"Linux version ";
    let mut from = 0;
    while let Some(at) = data[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
    {
        let rest = &data[at + needle.len()..];
        let end = rest
            .iter()
            .position(|b| *b == b' ' || *b == 0)
            .unwrap_or(rest.len());
        let release = &rest[..end];
        // The banner's format string ("Linux version %s") also occurs; a real release starts
        // with a digit.
        if release.first().is_some_and(u8::is_ascii_digit) {
            if let Ok(r) = std::str::from_utf8(release) {
                return Some(r.to_string());
            }
        }
        from = at + needle.len();
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Modules.

/// The modules directory for `release`: from `--modules DIR` (which must have them), else
/// beside the image (`../lib/modules/<release>` of `boot/vmlinuz-*`, or `lib/modules/<release>`
/// next to it); `None` when there are none beside it.
fn modules_for(image: &Path, release: &str, given: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(dir) = given {
        return modules_in(dir, release).map(Some);
    }
    let dir = image.parent().unwrap_or(Path::new("."));
    for candidate in [
        dir.join("../lib/modules").join(release),
        dir.join("lib/modules").join(release),
    ] {
        if candidate.join("modules.dep").exists() {
            return Ok(Some(fs::canonicalize(&candidate).unwrap_or(candidate)));
        }
    }
    log::info!(
        "no modules for {release} beside {}: the kernel must have virtio_net built in",
        image.display()
    );
    Ok(None)
}

/// `DIR` itself, `DIR/lib/modules/<release>` or `DIR/<release>`, whichever has a modules.dep.
pub fn modules_in(dir: &Path, release: &str) -> Result<PathBuf> {
    if !dir.is_dir() {
        bail!("--modules {}: no such directory", dir.display());
    }
    let candidates = [
        dir.to_path_buf(),
        dir.join("lib/modules").join(release),
        dir.join(release),
    ];
    if let Some(found) = candidates.iter().find(|c| c.join("modules.dep").exists()) {
        return Ok(found.clone());
    }
    let others: Vec<String> = fs::read_dir(dir.join("lib/modules"))
        .or_else(|_| fs::read_dir(dir))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("modules.dep").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let hint = if others.is_empty() {
        format!(
            "`make modules_install INSTALL_MOD_PATH={0}` installs them there, `depmod -b {0} \
             {release}` writes modules.dep",
            dir.display()
        )
    } else {
        format!("it has modules for {} only", others.join(", "))
    };
    bail!(
        "--modules {}: no modules for kernel {release} (no modules.dep in it, in \
         lib/modules/{release} or in {release}); {hint}",
        dir.display()
    )
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
