//! The lab's bpffs: where the responder's maps and XDP links are pinned, so the programs stay
//! attached after `pmtu lab up` exits and later processes open the maps.
use std::{fs, path::Path};

use anyhow::{bail, Context as _, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};

pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

pub fn mount_bpffs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !is_bpffs(dir) {
        mount(
            Some("bpf"),
            dir,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .with_context(|| format!("mounting a bpffs at {} (needs root)", dir.display()))?;
    }
    Ok(())
}

/// Removes the pins (detaching the XDP programs they hold) and unmounts the bpffs.
pub fn unmount_bpffs(dir: &Path) -> Result<()> {
    // A failed earlier run may have mounted more than one; unmount until none is left.
    for _ in 0..8 {
        if !is_bpffs(dir) {
            return Ok(());
        }
        // Unpinning releases the links and maps even where another mount namespace still
        // sees this bpffs. The kernel's own entries (maps.debug, progs.debug) cannot be
        // removed; the unmount takes care of them.
        for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            if let Err(e) = fs::remove_file(&path) {
                log::debug!("leaving {} to the unmount: {e}", path.display());
            }
        }
        if let Err(e) = umount2(dir, MntFlags::empty()) {
            log::debug!("unmounting {}: {e}; detaching it instead", dir.display());
            umount2(dir, MntFlags::MNT_DETACH)
                .with_context(|| format!("unmounting the bpffs at {}", dir.display()))?;
        }
    }
    bail!("{} is still a bpffs after 8 unmounts", dir.display())
}
