//! Named network namespaces, as `ip netns` makes them (/run/netns/NAME).
//!
//! setns(2) moves only the calling thread, so work inside a namespace runs on a short-lived
//! thread of its own ([`run_in`]); sockets and BPF links created there stay bound to that
//! namespace after the thread ends. Child processes enter it between fork and exec ([`command`]).
use std::{
    fs::{self, File},
    os::{
        fd::AsFd as _,
        unix::{fs::MetadataExt as _, process::CommandExt as _},
    },
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use nix::{
    libc,
    sched::{setns, unshare, CloneFlags},
};

pub const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Whether namespace `name` exists: its file in /run/netns has a namespace mounted on it.
pub fn exists(name: &str) -> bool {
    is_nsfs(&path(name))
}

fn is_nsfs(p: &std::path::Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// A file in /run/netns with no namespace mounted on it: what `ip netns add|attach` leaves when
/// it dies between creating the file and mounting the namespace.
pub fn is_dangling(name: &str) -> bool {
    let p = path(name);
    p.is_file() && !is_nsfs(&p)
}

fn open(name: &str) -> Result<File> {
    File::open(path(name)).with_context(|| {
        format!("network namespace `{name}` does not exist (no {NETNS_DIR}/{name})")
    })
}

/// Creates the namespace with `ip netns add` (which also makes /run/netns a shared mount).
pub fn add(name: &str) -> Result<()> {
    run_ip(&["netns", "add", name]).with_context(|| format!("creating network namespace `{name}`"))
}

/// The namespace's identity: the inode of its nsfs file (what /proc/PID/ns/net links to as
/// `net:[INODE]`). None when there is no such named namespace.
pub fn inode(name: &str) -> Option<u64> {
    if !exists(name) {
        return None;
    }
    fs::metadata(path(name)).ok().map(|m| m.ino())
}

/// A namespace's identity: the inode of its nsfs file (what /proc/PID/ns/net links to as
/// `net:[INODE]`, and reused for a later namespace once it is gone) and its cookie
/// (SO_NETNS_COOKIE, never reused while the system runs; None on kernels before 5.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub inode: u64,
    pub cookie: Option<u64>,
}

/// The identity of named namespace `name`, if it exists.
pub fn identity(name: &str) -> Option<Identity> {
    Some(Identity {
        inode: inode(name)?,
        cookie: cookie_of(&path(name)),
    })
}

/// The cookie of the network namespace this thread is in.
fn cookie_here() -> Option<u64> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd as _;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, a u64 we own.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(cookie)
}

/// The cookie of the namespace behind `file` (/run/netns/NAME or /proc/PID/ns/net).
pub fn cookie_of(file: &std::path::Path) -> Option<u64> {
    let ns = File::open(file).ok()?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).ok()?;
            cookie_here()
        })
        .join()
        .ok()
        .flatten()
    })
}

/// Creates namespace `name`, handing its identity to `record` before the name exists.
///
/// A thread unshares a new network namespace, `record` stores its inode (e.g. in a lab's
/// state), and only then `ip netns attach` gives it its name (refusing a name that is taken).
/// So a namespace of that name with that inode was made here, whenever the process is killed:
/// before the attach the namespace dies with the thread, after it the record already names it.
pub fn add_recorded(
    name: &str,
    record: impl FnOnce(Identity) -> Result<()> + Send,
) -> Result<Identity> {
    std::thread::scope(|s| {
        s.spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET)
                .context("creating a network namespace (needs root)")?;
            let ino = fs::metadata("/proc/thread-self/ns/net")
                .context("reading the new namespace's identity")?
                .ino();
            let made = Identity {
                inode: ino,
                cookie: cookie_here(),
            };
            record(made)?;
            let tid = nix::unistd::gettid().to_string();
            let mut attach = Command::new("ip");
            attach.args(["netns", "attach", name, &tid]);
            // If this process dies meanwhile, `ip` dies too instead of naming the namespace
            // later behind the back of whoever cleans up.
            // SAFETY: prctl is async-signal-safe; the closure makes only that one call.
            unsafe {
                attach.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)
                });
            }
            run_cmd(attach, &["netns", "attach", name, &tid])?;
            if identity(name) != Some(made) {
                bail!("`ip netns attach {name}` did not name the namespace just made");
            }
            Ok(made)
        })
        .join()
        .unwrap_or_else(|_| bail!("creating network namespace `{name}` panicked"))
    })
    .with_context(|| format!("creating network namespace `{name}`"))
}

/// The processes (thread-group leaders) whose network namespace is `ns`.
pub fn pids_in(ns: Identity) -> Vec<i32> {
    let want = format!("net:[{}]", ns.inode);
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let link = format!("/proc/{pid}/ns/net");
            fs::read_link(&link).is_ok_and(|l| l.as_os_str() == want.as_str())
                && (ns.cookie.is_none() || cookie_of(std::path::Path::new(&link)) == ns.cookie)
        })
        .collect()
}

/// Deletes the namespace; its interfaces go with it. Absent is not an error.
pub fn delete(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    run_ip(&["netns", "delete", name])
        .with_context(|| format!("deleting network namespace `{name}`"))
}

fn run_ip(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_cmd(cmd, args)
}

/// Runs `ip` as prepared in `cmd` (whose arguments are `args`, for messages).
fn run_cmd(mut cmd: Command, args: &[&str]) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (iproute2); `cargo xtask setup` installs it")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `ns` (or here, for `None`) and returns its result.
pub fn run_in<T: Send>(ns: Option<&str>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(ns) = ns else {
        return f();
    };
    let file = open(ns)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering network namespace `{ns}` (needs root)"))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("a task inside network namespace `{ns}` panicked"))
    })
}

/// A command that runs inside namespace `ns` (or here, for `None`).
pub fn command(ns: Option<&str>, program: &str) -> Result<Command> {
    let mut cmd = Command::new(program);
    if let Some(ns) = ns {
        let file = open(ns)?;
        // SAFETY: setns is async-signal-safe; the closure only makes that one syscall.
        unsafe {
            cmd.pre_exec(move || {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
    }
    Ok(cmd)
}

/// Runs a command to completion inside `ns`; on failure the error carries its stderr.
pub fn run(ns: Option<&str>, program: &str, args: &[&str]) -> Result<String> {
    let out = command(ns, program)?
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{program}`"))?;
    let where_ = ns
        .map(|n| format!(" in namespace `{n}`"))
        .unwrap_or_default();
    if !out.status.success() {
        bail!(
            "`{program} {}`{where_} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A multi-threaded tokio runtime whose threads (workers and blocking pool) enter namespace
/// `ns` as they start, so that the sockets its tasks create belong there. A thread that
/// cannot enter it logs an error and stays where it is: callers bind their sockets to an
/// address of `ns`, which fails anywhere else.
pub fn runtime_in(ns: &str, workers: usize) -> Result<tokio::runtime::Runtime> {
    let file = std::sync::Arc::new(open(ns)?);
    let name = ns.to_string();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = setns(file.as_fd(), CloneFlags::CLONE_NEWNET) {
                log::error!("a thread could not enter network namespace `{name}`: {e}");
            }
        })
        .build()
        .context("starting a runtime")
}
