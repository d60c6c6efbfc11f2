//! Unit tests of image.rs.
use std::io::Write as _;

use super::*;

/// A minimal bzImage: boot header with protocol 2.15, a kernel_version string and a
/// payload.
fn fake_bzimage(release: &str, payload: &[u8]) -> Vec<u8> {
    let setup_sects = 1u8;
    let mut data = vec![0u8; 1024];
    data[0x1f1] = setup_sects;
    data[0x202..0x206].copy_from_slice(b"HdrS");
    data[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    let version_at = 0x300;
    data[0x20e..0x210].copy_from_slice(&((version_at - 0x200) as u16).to_le_bytes());
    let text = format!("{release} (builder@host) #1 SMP\0");
    data[version_at..version_at + text.len()].copy_from_slice(text.as_bytes());
    let pm_start = (setup_sects as usize + 1) * 512;
    data[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
    data[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    data.resize(pm_start + 16, 0);
    data.extend_from_slice(payload);
    data.extend_from_slice(&[0xaa; 4]);
    data
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
    enc.write_all(data).unwrap();
    let mut out = enc.finish().unwrap();
    // What the kernel's build appends: the uncompressed size.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[test]
fn formats_by_magic() {
    assert_eq!(detect(&fake_bzimage("6.1.0", b"x")), Some(Format::BzImage));
    assert_eq!(detect(b"\x7fELF\x02\x01\x01"), Some(Format::Elf));
    assert_eq!(detect(b"!<arch>\ndebian-binary   "), Some(Format::Deb));
    assert_eq!(detect(b"hello world"), None);
    assert_eq!(detect(&[0u8; 4096]), None);
}

#[test]
fn boot_header_release_and_payload() {
    let img = fake_bzimage("6.1.0-56-amd64", b"PAYLOAD!");
    let h = BzHeader::parse(&img).unwrap();
    assert_eq!(h.release.as_deref(), Some("6.1.0-56-amd64"));
    let (start, len) = h.payload.unwrap();
    assert_eq!(&img[start..start + len], b"PAYLOAD!");
    // Cut short: no header; a payload beyond the end: none.
    assert!(BzHeader::parse(&img[..0x240]).is_none());
    let mut bad = img.clone();
    bad[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(BzHeader::parse(&bad).unwrap().payload, None);
}

#[test]
fn xz_and_gzip_payloads_decompress_and_trailing_bytes_are_ignored() {
    let kernel = b"\x7fELF pretend kernel".repeat(1000);
    let packed = xz(&kernel);
    assert_eq!(compression(&packed), Compression::Xz);
    assert_eq!(decompress(&packed).unwrap().unwrap(), kernel);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&kernel).unwrap();
    let mut gz = gz.finish().unwrap();
    gz.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(compression(&gz), Compression::Gzip);
    assert_eq!(decompress(&gz).unwrap().unwrap(), kernel);
    assert_eq!(decompress(b"\x28\xb5\x2f\xfd zstd").unwrap(), None);
    // A damaged stream is an error, not a kernel.
    let mut broken = packed.clone();
    let mid = broken.len() / 2;
    broken[mid..mid + 8].copy_from_slice(&[0x55; 8]);
    assert!(decompress(&broken).is_err());
}

#[test]
fn the_xz_payload_is_found_by_its_magic_without_header_offsets() {
    let kernel = b"\x7fELF".repeat(100);
    let mut img = fake_bzimage("6.1.0", &xz(&kernel));
    // Protocol 2.07: no payload fields.
    img[0x206..0x208].copy_from_slice(&0x0207u16.to_le_bytes());
    let h = BzHeader::parse(&img).unwrap();
    assert_eq!(h.payload, None);
    let p = payload(&img, &h).unwrap();
    assert_eq!(decompress(p).unwrap().unwrap(), kernel);
}

#[test]
fn banner() {
    let data = b"xxLinux version %s (%s)\0yyLinux version 6.1.0-56-amd64 (debian-kernel@lists)";
    assert_eq!(banner_release(data).as_deref(), Some("6.1.0-56-amd64"));
    assert_eq!(banner_release(b"no banner here"), None);
}

#[test]
fn modules_dir_forms_and_messages() {
    let root = std::env::temp_dir().join(format!("pmtu-modules-{}", std::process::id()));
    let tree = root.join("lib/modules/6.1.0-test");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("modules.dep"), "").unwrap();
    assert_eq!(modules_in(&root, "6.1.0-test").unwrap(), tree);
    assert_eq!(modules_in(&tree, "6.1.0-test").unwrap(), tree);
    let err = modules_in(&root, "6.2.0").unwrap_err().to_string();
    assert!(err.contains("no modules for kernel 6.2.0"), "{err}");
    assert!(err.contains("it has modules for 6.1.0-test only"), "{err}");
    let empty = root.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = modules_in(&empty, "6.1.0").unwrap_err().to_string();
    assert!(err.contains("make modules_install"), "{err}");
    let err = modules_in(&root.join("nope"), "6.1.0")
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("no such directory"), "{err}");
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn bad_images_say_what_is_wrong() {
    let dir = std::env::temp_dir().join(format!("pmtu-images-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("cache");
    let mut quiet = |_: &str| {};
    let res = |p: &Path, q: &mut dyn FnMut(&str)| {
        resolve(p.to_str().unwrap(), None, &cache, q)
            .unwrap_err()
            .to_string()
    };
    let err = res(&dir.join("missing"), &mut quiet);
    assert!(err.contains("no such file"), "{err}");
    let text = dir.join("text");
    fs::write(&text, "hello").unwrap();
    assert!(res(&text, &mut quiet).contains("is not a kernel image"));
    let corrupt = dir.join("corrupt");
    let mut packed = xz(&b"\x7fELF".repeat(5000));
    let mid = packed.len() / 2;
    packed[mid..mid + 8].copy_from_slice(&[0x55; 8]);
    fs::write(&corrupt, fake_bzimage("6.1.0", &packed)).unwrap();
    let err = res(&corrupt, &mut quiet);
    assert!(err.contains("a corrupt kernel image"), "{err}");
    assert!(res(&dir, &mut quiet).contains("is a directory"));
    fs::remove_dir_all(dir).unwrap();
}
