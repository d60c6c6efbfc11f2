//! One lab, one user at a time: an exclusive flock on `lock` in the lab's state dir, held by
//! `pmtu run`, `pmtu lab up` and `pmtu lab down` for as long as they work on the lab.
//!
//! The kernel drops the lock when its holder dies, however it dies, so a lab whose lock is free
//! has no live user: a temporary lab found that way was left by a killed run. A second user
//! waits a bounded time (PMTU_LOCK_WAIT seconds, default 10), then gives up naming the holder.
//!
//! `lab down` removes the state dir with the lock file in it. A waiter that then gets the lock
//! holds it on a file that no longer has a name; it notices (the path no longer leads to the
//! file it locked) and locks the new file instead.
use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use super::plan::{state_dir, validate_name};

/// The lock file inside the state dir.
pub const LOCK_FILE: &str = "lock";
/// How long a second user waits when PMTU_LOCK_WAIT is not set.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

pub fn lock_path(name: &str) -> PathBuf {
    state_dir(name).join(LOCK_FILE)
}

/// The wait from PMTU_LOCK_WAIT (seconds, fractions allowed), else [`DEFAULT_WAIT`].
pub fn wait_from_env() -> Result<Duration> {
    match std::env::var("PMTU_LOCK_WAIT")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("") => Ok(DEFAULT_WAIT),
        Some(text) => text
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
            .map(Duration::from_secs_f64)
            .with_context(|| {
                format!("PMTU_LOCK_WAIT='{text}': expected seconds to wait for a busy lab, e.g. 10")
            }),
    }
}

/// The exclusive lock of one lab; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LabLock {
    name: String,
    _lock: Flock<File>,
}

impl LabLock {
    /// Takes lab `name`'s lock, creating its state dir if needed; waits up to `wait` for another
    /// user, then fails with "lab NAME is in use by PID N". `stop` is asked while waiting (a
    /// Ctrl-C ends the wait).
    pub fn acquire(name: &str, wait: Duration, stop: &dyn Fn() -> bool) -> Result<Self> {
        validate_name(name)?;
        let path = lock_path(name);
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            let file = open_lock_file(&path)?;
            let ino = file.metadata()?.ino();
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    // Still the file the path names? (A `down` may have removed it meanwhile.)
                    if fs::metadata(&path).is_ok_and(|m| m.ino() == ino) {
                        return Ok(Self {
                            name: name.to_string(),
                            _lock: lock,
                        });
                    }
                    continue;
                }
                Err((_, Errno::EWOULDBLOCK)) => {}
                Err((_, e)) => bail!("locking {}: {e}", path.display()),
            }
            let holder = holder_of(&path)
                .map(|pid| format!("PID {pid}"))
                .unwrap_or_else(|| "another process".to_string());
            if Instant::now() >= deadline {
                bail!(
                    "lab {name} is in use by {holder} (waited {:.0} s; PMTU_LOCK_WAIT sets how long)",
                    wait.as_secs_f64()
                );
            }
            if stop() {
                bail!("interrupted while waiting for lab {name}");
            }
            if !said {
                log::warn!(
                    "lab {name} is in use by {holder}; waiting up to {:.0} s",
                    wait.as_secs_f64()
                );
                said = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`LabLock::acquire`] with the wait from PMTU_LOCK_WAIT and no way to stop early.
    pub fn acquire_default(name: &str) -> Result<Self> {
        Self::acquire(name, wait_from_env()?, &|| false)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    for _ in 0..100 {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
        {
            Ok(f) => return Ok(f),
            // The state dir went away between the two calls (a `down` finishing): again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        }
    }
    bail!("{} keeps disappearing", path.display())
}

/// The PID holding the flock on `path`, from /proc/locks; None when it is free or unknown.
pub fn holder_of(path: &Path) -> Option<i32> {
    let meta = fs::metadata(path).ok()?;
    let (major, minor) = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
    );
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"; waiters are marked "->".
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&want.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

/// Who holds lab `name`'s lock right now, if anyone (for `lab status`).
pub fn in_use_by(name: &str) -> Option<i32> {
    holder_of(&lock_path(name))
}
