//! The lab's record, `lab.json` in its state dir: who made the lab, whether it is temporary,
//! the namespaces it made (by identity), and whether it is complete.
//!
//! It is written first, before anything of the lab exists, then each namespace is added before
//! it gets its name, and `complete` is set last, once REMOTE's services answer. Every write
//! replaces the file whole (a new file renamed over the old one), so at every instant the
//! record says whether the lab is complete and who owns it, and a reader never sees half of it.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::net::{
    netns::{self, Identity},
    procfs::proc_stat,
};

pub const RECORD_FILE: &str = "lab.json";

pub fn record_path(state: &Path) -> PathBuf {
    state.join(RECORD_FILE)
}

/// A namespace the lab made: its name and identity (the inode of its nsfs file, reused by later
/// namespaces, and its cookie, never reused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadeNamespace {
    pub name: String,
    pub inode: u64,
    #[serde(default)]
    pub cookie: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabRecord {
    /// The process that builds (and, for a temporary lab, owns) the lab.
    pub owner_pid: i32,
    /// Field 22 of /proc/PID/stat of the owner, to tell it from a later process with its PID.
    pub owner_start_time: u64,
    /// Made by `pmtu run` for itself, to be removed at its end.
    pub temporary: bool,
    pub namespaces: Vec<MadeNamespace>,
    /// Set last: everything is built and REMOTE's services answer.
    pub complete: bool,
}

impl LabRecord {
    /// A record for a lab this process is about to build.
    pub fn new(temporary: bool) -> Self {
        let pid = std::process::id() as i32;
        Self {
            owner_pid: pid,
            owner_start_time: proc_stat(pid).map(|s| s.start_time).unwrap_or_default(),
            temporary,
            namespaces: Vec::new(),
            complete: false,
        }
    }

    /// Whether the owner process is still alive (the same process, not a reuse of its PID).
    pub fn owner_alive(&self) -> bool {
        proc_stat(self.owner_pid)
            .is_some_and(|s| s.start_time == self.owner_start_time && s.state != 'Z')
    }

    /// The identity this lab recorded for namespace `ns`.
    pub fn identity_of(&self, ns: &str) -> Option<Identity> {
        self.namespaces
            .iter()
            .find(|n| n.name == ns)
            .map(|n| Identity {
                inode: n.inode,
                cookie: n.cookie,
            })
    }

    /// Whether the namespace now named `ns` is the one this lab made (by inode, and by cookie
    /// where the record has one).
    pub fn owns(&self, ns: &str) -> bool {
        let (Some(made), Some(now)) = (self.identity_of(ns), netns::identity(ns)) else {
            return false;
        };
        made.inode == now.inode && (made.cookie.is_none() || made.cookie == now.cookie)
    }

    /// Writes the record whole: a temporary file renamed over the old one.
    pub fn save(&self, state: &Path) -> Result<()> {
        let path = record_path(state);
        let tmp = state.join(format!(".{RECORD_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)?;
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// The record in `state`; None when there is none.
    pub fn load(state: &Path) -> Result<Option<Self>> {
        let path = record_path(state);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_names_its_owner() {
        let dir = std::env::temp_dir().join(format!("pmtu-record-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(LabRecord::load(&dir).unwrap(), None);
        let mut r = LabRecord::new(true);
        assert!(r.owner_alive());
        r.namespaces.push(MadeNamespace {
            name: "x-local".into(),
            inode: 42,
            cookie: Some(7),
        });
        r.save(&dir).unwrap();
        let back = LabRecord::load(&dir).unwrap().unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.identity_of("x-local"),
            Some(Identity {
                inode: 42,
                cookie: Some(7)
            })
        );
        assert_eq!(back.identity_of("x-remote"), None);
        assert!(!back.owns("x-local"), "no such namespace here");
        r.owner_start_time += 1;
        assert!(
            !r.owner_alive(),
            "a PID reused by another process is not the owner"
        );
        fs::write(record_path(&dir), "").unwrap();
        assert!(LabRecord::load(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
