//! Output files written whole or not at all (`--report FILE`): a temporary file beside the
//! target, made when the run starts (so an unwritable place is an error before any test),
//! every write and the flush checked, renamed over the target at the end; removed when the run
//! ends before. An existing target is untouched until the rename.
use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

#[derive(Debug)]
pub struct OutFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl OutFile {
    /// Makes the temporary file beside `target`; `what` names the file in errors ("report").
    pub fn create(target: &Path, what: &str) -> Result<Self> {
        let Some(name) = target.file_name() else {
            bail!("the {what} file {} has no file name", target.display());
        };
        if target.is_dir() {
            bail!("the {what} file {} is a directory", target.display());
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let temp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(|| {
                format!(
                    "cannot write the {what} file {}: creating {}",
                    target.display(),
                    temp.display()
                )
            })?;
        Ok(OutFile {
            target: target.to_path_buf(),
            temp,
            file: Some(file),
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes the contents with `fill`, flushes and syncs them, and renames the file over the
    /// target.
    pub fn commit(
        mut self,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let file = self.file.take().context("output file already written")?;
        let mut out = BufWriter::new(file);
        let what = || format!("writing {}", self.temp.display());
        fill(&mut out).with_context(what)?;
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(what)?;
        file.sync_all().with_context(what)?;
        std::fs::rename(&self.temp, &self.target).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temp.display(),
                self.target.display()
            )
        })?;
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pmtu-outfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_target_appears_whole_only_at_commit() {
        let d = dir("commit");
        let target = d.join("r.html");
        std::fs::write(&target, "old").unwrap();
        let f = OutFile::create(&target, "report").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        f.commit(|w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "temporary file left"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_run_that_ends_early_leaves_the_target_and_no_temporary_file() {
        let d = dir("drop");
        let target = d.join("r.html");
        std::fs::write(&target, "old").unwrap();
        drop(OutFile::create(&target, "report").unwrap());
        let f = OutFile::create(&target, "report").unwrap();
        let err = f
            .commit(|_| Err(std::io::Error::other("disk full")))
            .unwrap_err();
        assert!(format!("{err:#}").contains("disk full"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "temporary file left"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn unwritable_places_are_refused_at_once() {
        let d = dir("bad");
        let err = OutFile::create(&d.join("nosuch/r.html"), "report").unwrap_err();
        assert!(format!("{err:#}").starts_with("cannot write the report file"));
        let err = OutFile::create(&d, "report").unwrap_err();
        assert!(format!("{err:#}").contains("is a directory"));
        std::fs::remove_dir_all(d).unwrap();
    }
}
