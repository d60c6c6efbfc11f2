//! Sysctls of a network namespace, read and written from a thread inside it.
use std::{fs, path::Path};

use anyhow::{Context as _, Result};

use super::netns;

/// Writes sysctls (paths under /proc/sys) from a thread inside `ns`: /proc/sys/net resolves
/// against the network namespace of the thread that opens the file.
pub fn write_sysctls(ns: &str, values: &[(&str, &str)]) -> Result<()> {
    netns::run_in(Some(ns), || {
        for (key, value) in values {
            let path = Path::new("/proc/sys").join(key);
            fs::write(&path, value).with_context(|| {
                format!(
                    "setting {} = {value} in namespace `{ns}`",
                    key.replace('/', ".")
                )
            })?;
        }
        Ok(())
    })
}

/// Reads a sysctl from a thread inside `ns`.
pub fn read_sysctl(ns: &str, key: &str) -> Result<String> {
    netns::run_in(Some(ns), || {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("reading {key} in namespace `{ns}`"))?
            .trim()
            .to_string())
    })
}
