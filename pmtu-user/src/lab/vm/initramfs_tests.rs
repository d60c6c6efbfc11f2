//! Unit tests of initramfs.rs.
use super::*;
use crate::lab::vm::cpio::{S_IFDIR, S_IFLNK, S_IFREG};

/// Reads a newc archive back: (name, mode, data) per entry, checking the format as the
/// kernel does (magic, 4-byte alignment, trailer).
fn read_newc(mut data: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let total = data.len();
    loop {
        let offset = total - data.len();
        assert_eq!(offset % 4, 0, "entries start 4-byte aligned");
        assert_eq!(&data[..6], b"070701", "magic at {offset}");
        let field = |i: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&data[6 + i * 8..14 + i * 8]).unwrap(),
                16,
            )
            .unwrap()
        };
        let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
        let name_end = 110 + namesize;
        let name = std::str::from_utf8(&data[110..name_end - 1])
            .unwrap()
            .to_string();
        assert_eq!(data[name_end - 1], 0);
        let data_start = name_end.div_ceil(4) * 4;
        let body = data[data_start..data_start + size].to_vec();
        let next = (data_start + size).div_ceil(4) * 4;
        data = &data[next..];
        if name == "TRAILER!!!" {
            assert_eq!(total % 512, 0, "padded to 512");
            assert!(data.iter().all(|b| *b == 0));
            return out;
        }
        out.push((name, mode, body));
    }
}

#[test]
fn cpio_newc_round_trips_with_parents_first() {
    let mut c = Cpio::new(Vec::new());
    c.file("/usr/sbin/sshd", 0o755, b"ELF...").unwrap();
    c.symlink("bin/sh", "dash").unwrap();
    c.dir("usr").unwrap();
    c.file("etc/shadow", 0o600, b"root::1:").unwrap();
    c.file("e", 0o644, b"").unwrap();
    let bytes = c.finish().unwrap();
    let entries = read_newc(&bytes);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "usr",
            "usr/sbin",
            "usr/sbin/sshd",
            "bin",
            "bin/sh",
            "etc",
            "etc/shadow",
            "e"
        ]
    );
    assert_eq!(entries[0].1, S_IFDIR | 0o755);
    assert_eq!(
        entries[2],
        ("usr/sbin/sshd".into(), S_IFREG | 0o755, b"ELF...".to_vec())
    );
    assert_eq!(
        entries[4],
        ("bin/sh".into(), S_IFLNK | 0o777, b"dash".to_vec())
    );
    assert_eq!(entries[6].1, S_IFREG | 0o600);
}

#[test]
fn cpio_header_fields_are_exact() {
    let mut c = Cpio::new(Vec::new());
    c.file("ab", 0o644, b"xyz").unwrap();
    let bytes = c.finish().unwrap();
    // ino 1, mode 100644, uid 0, gid 0, nlink 1, mtime 0, size 3, dev 0/0, rdev 0/0,
    // namesize 3 ("ab\0"), check 0.
    let expected = [
        "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "00000000",
        "00000003", "00000000", "00000000", "00000000", "00000000", "00000003", "00000000",
    ]
    .concat();
    assert_eq!(std::str::from_utf8(&bytes[..110]).unwrap(), expected);
    assert_eq!(&bytes[110..113], b"ab\0");
    assert_eq!(
        &bytes[113..116],
        [0, 0, 0],
        "name padded to 4 (110 + 3 + 3)"
    );
    assert_eq!(&bytes[116..119], b"xyz");
}

const DEP: &str = "\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/net/netfilter/nfnetlink.ko:
kernel/net/netfilter/nf_tables.ko.xz: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
";

#[test]
fn modules_load_in_dependency_order() {
    let plan = plan_modules(DEP, "", BOOT_MODULES).unwrap();
    let names: Vec<String> = plan.load.iter().map(|p| module_name(p)).collect();
    // What `modprobe --show-depends virtio_pci virtio_net` prints for Debian's 6.1.
    assert_eq!(
        names,
        [
            "virtio_ring",
            "virtio",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
            "virtio_pci",
            "failover",
            "net_failover",
            "virtio_net"
        ]
    );
    assert!(plan.builtin.is_empty());
}

#[test]
fn built_in_and_missing_modules() {
    let builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/virtio/virtio.ko\n";
    let plan = plan_modules(DEP, builtin, BOOT_MODULES).unwrap();
    assert_eq!(plan.builtin, ["virtio_pci"]);
    assert_eq!(module_name(plan.load.last().unwrap()), "virtio_net");
    assert_eq!(
        plan_modules("kernel/x.ko:\n", "", BOOT_MODULES),
        Err("virtio_pci".to_string())
    );
    // All built in: nothing to load.
    let all = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/net/virtio_net.ko\n";
    assert!(plan_modules("", all, BOOT_MODULES).unwrap().load.is_empty());
    assert_eq!(module_name("kernel/a/snd-hda.ko.zst"), "snd_hda");
}

#[test]
fn boot_part_without_modules_holds_the_keys() {
    let bytes = boot_part(&BootPart {
        modules: None,
        release: "6.1.0",
        host_key: b"PRIVATE",
        authorized_keys: "ssh-ed25519 AAAA pmtu\n",
    })
    .unwrap();
    let entries = read_newc(&bytes);
    let key = entries
        .iter()
        .find(|e| e.0 == "etc/ssh/ssh_host_ed25519_key")
        .unwrap();
    assert_eq!(key.1, S_IFREG | 0o600, "sshd refuses a readable host key");
    assert!(!entries.iter().any(|e| e.0 == "etc/pmtu/modules"));
}

#[test]
fn init_script_parses_with_dash() {
    let Ok(out) = std::process::Command::new("dash")
        .args(["-n", "-c", INIT_SCRIPT])
        .output()
    else {
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
