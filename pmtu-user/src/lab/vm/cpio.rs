//! The cpio "newc" archive the kernel unpacks as its initramfs.
use std::{
    collections::BTreeSet,
    io::{self, Write},
};

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

/// A cpio archive in the "newc" format the kernel unpacks (Documentation/driver-api/
/// early-userspace/buffer-format.rst): owner root, mtime 0, parents before children.
pub struct Cpio<W: Write> {
    out: W,
    next_ino: u32,
    dirs: BTreeSet<String>,
    written: u64,
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            dirs: BTreeSet::new(),
            written: 0,
        }
    }

    /// A directory (and its missing parents).
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        let path = clean(path);
        if path.is_empty() || self.dirs.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        self.dirs.insert(path.clone());
        self.entry(&path, S_IFDIR | 0o755, 2, &[])
    }

    /// A regular file with permission bits `mode` (e.g. 0o755).
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let path = clean(path);
        self.parents(&path)?;
        self.entry(&path, S_IFREG | (mode & 0o7777), 1, data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = clean(path);
        self.parents(&path)?;
        self.entry(&path, S_IFLNK | 0o777, 1, target.as_bytes())
    }

    /// Writes the trailer (padded to 512 bytes, so another archive can follow) and returns
    /// the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, &[])?;
        let pad = (512 - (self.written % 512) as usize) % 512;
        self.out.write_all(&vec![0u8; pad])?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("{name}: too large for cpio")))?;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, 0, 0, 0, 0, 0, 0,
            name.len() + 1,
            0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad4()?;
        self.put(data)?;
        self.pad4()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

/// Archive paths are relative: no leading or trailing `/`.
fn clean(path: &str) -> String {
    path.trim_matches('/').to_string()
}
