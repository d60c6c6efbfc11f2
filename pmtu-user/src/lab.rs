//! The built-in lab: LOCAL and REMOTE as two network namespaces of this machine.
//!
//! `<name>-local` holds LOCAL_IF (`pmtu0`) with the XDP responder; `<name>-remote` holds its veth
//! peer (`pmtu1`), REMOTE's routes to the fake nets via LOCAL, and REMOTE's services (chargen and
//! echo, from openbsd-inetd or the built-in `pmtu serve`). The veth pair is created from inside
//! LOCAL's namespace with the peer placed directly into REMOTE's, so the root namespace never
//! sees either end. Links, addresses and routes are made through rtnetlink, with a netlink
//! socket opened inside each namespace.
//!
//! State lives in `/run/pmtu/<name>/`: a bpffs at `bpf/` holding the responder's pinned maps and
//! XDP links (so the programs stay attached after `pmtu lab up` exits and later processes open
//! the maps), the service's record (`service.json`: PID, start time, command line), its log
//! (`services.log`) and inetd's configuration (`inetd/inetd.conf`).
//!
//! Only the namespaces themselves come from `ip netns add/delete` (through [`crate::netns`]):
//! iproute2 owns the /run/netns convention (a shared mount, one bind-mounted nsfs file per
//! namespace) that every other tool reads, and rtnetlink has no call for it.
use std::{
    fs,
    future::Future,
    io::{self, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::TryStreamExt as _;
use ipnet::IpNet;
use netlink_packet_route::{
    address::{AddressAttribute, AddressHeaderFlags},
    link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkXdp, XdpAttached},
    route::{RouteAddress, RouteAttribute, RouteMetric, RouteType},
};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sys::{
        signal::{kill, Signal},
        statfs::{statfs, BPF_FS_MAGIC},
        wait::{waitpid, WaitPidFlag},
    },
    unistd::Pid,
};
use pmtu_common::{Counter, RuleAction, MAP_RULES_V4};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use crate::{
    netns,
    responder::{AttachMode, Responder, RuleSpec},
    topology::{format_mac, Mac, Topology},
};

/// The lab's name when `--lab` is not given.
pub const DEFAULT_NAME: &str = "pmtu";
/// LOCAL's end of the veth pair (LOCAL_IF).
pub const LOCAL_IF: &str = "pmtu0";
/// REMOTE's end of the veth pair.
pub const REMOTE_IF: &str = "pmtu1";
/// Fixed, locally administered MACs: deterministic, and no need to read them back.
pub const LOCAL_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
pub const REMOTE_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
/// Prefix lengths of the link between LOCAL and REMOTE.
pub const LINK_PREFIX_V4: u8 = 24;
pub const LINK_PREFIX_V6: u8 = 64;
/// Where labs keep their state.
pub const STATE_ROOT: &str = "/run/pmtu";
/// Longest lab name (the namespaces get `-local` / `-remote` appended).
pub const MAX_NAME_LEN: usize = 20;
pub const CHARGEN_PORT: u16 = 19;
pub const ECHO_PORT: u16 = 7;
/// Debian's openbsd-inetd.
pub const INETD: &str = "/usr/sbin/inetd";
/// The original setup's inetd.conf lines.
pub const INETD_CONF: &str = "\
chargen stream tcp nowait root internal
chargen stream tcp6 nowait root internal
echo dgram udp wait root internal
echo dgram udp6 wait root internal
";
/// Upper bound on the wait for REMOTE's services after they start.
const SERVICE_WAIT: Duration = Duration::from_secs(2);
/// Upper bound on the wait for a stopped service to exit before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(2);

pub fn local_ns(name: &str) -> String {
    format!("{name}-local")
}

pub fn remote_ns(name: &str) -> String {
    format!("{name}-remote")
}

pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

pub fn pin_dir(name: &str) -> PathBuf {
    state_dir(name).join("bpf")
}

fn record_path(state: &Path) -> PathBuf {
    state.join("service.json")
}

fn log_path(state: &Path) -> PathBuf {
    state.join("services.log")
}

/// Lab names: letters, digits and `-`, not starting with `-`, at most 20 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name.starts_with('-') {
        bail!(
            "`{name}` is not a lab name: use letters, digits and `-` (not first), at most \
             {MAX_NAME_LEN} characters, e.g. `pmtu` or `lab-2`"
        );
    }
    Ok(())
}

/// Which program serves chargen and echo inside REMOTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Debian's openbsd-inetd with its internal chargen and echo.
    Inetd,
    /// `pmtu serve`.
    Builtin,
}

/// What `up` starts: `PMTU_SERVICES=auto|inetd|builtin` (auto: inetd when installed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceChoice {
    #[default]
    Auto,
    Inetd,
    Builtin,
}

impl ServiceChoice {
    /// Reads PMTU_SERVICES (unset: auto).
    pub fn from_env() -> Result<Self> {
        match std::env::var("PMTU_SERVICES").ok().as_deref().map(str::trim) {
            None | Some("") | Some("auto") => Ok(Self::Auto),
            Some("inetd") => Ok(Self::Inetd),
            Some("builtin") => Ok(Self::Builtin),
            Some(other) => bail!(
                "PMTU_SERVICES='{other}': expected auto, inetd (openbsd-inetd) or builtin (`pmtu serve`)"
            ),
        }
    }

    fn resolve(self) -> Result<ServiceKind> {
        let have_inetd = Path::new(INETD).exists();
        match self {
            Self::Auto if have_inetd => Ok(ServiceKind::Inetd),
            Self::Auto | Self::Builtin => Ok(ServiceKind::Builtin),
            Self::Inetd if have_inetd => Ok(ServiceKind::Inetd),
            Self::Inetd => bail!(
                "PMTU_SERVICES=inetd, but {INETD} is not installed: `apt-get install openbsd-inetd`, \
                 or PMTU_SERVICES=builtin for `pmtu serve`"
            ),
        }
    }
}

/// How to build a lab beyond its name and XDP mode.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    pub services: ServiceChoice,
    /// The `pmtu` binary that runs `serve` for built-in services; default: this executable.
    pub serve_exe: Option<PathBuf>,
}

impl UpOptions {
    /// The defaults, with the service choice from PMTU_SERVICES.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            services: ServiceChoice::from_env()?,
            serve_exe: None,
        })
    }
}

/// REMOTE's service process, as `up` recorded it in the state dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub kind: ServiceKind,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: with the command line, tells our process from a later one
    /// that reuses the PID.
    pub start_time: u64,
    pub argv: Vec<String>,
}

/// A lab that is up.
#[derive(Clone, Debug)]
pub struct Lab {
    pub name: String,
    pub topology: Topology,
    pub state_dir: PathBuf,
    /// The bpffs holding the responder's pinned maps and links.
    pub pin_dir: PathBuf,
    /// REMOTE's end of the veth pair.
    pub remote_if: String,
    pub service: Option<ServiceRecord>,
}

impl Lab {
    fn new(name: &str, service: Option<ServiceRecord>) -> Self {
        Self {
            name: name.to_string(),
            topology: Topology::lab(name),
            state_dir: state_dir(name),
            pin_dir: pin_dir(name),
            remote_if: REMOTE_IF.to_string(),
            service,
        }
    }

    pub fn local_ns(&self) -> String {
        local_ns(&self.name)
    }

    pub fn remote_ns(&self) -> String {
        remote_ns(&self.name)
    }

    /// The responder's maps, opened from the lab's pins (its programs stay attached).
    pub fn responder(&self) -> Result<Responder> {
        Responder::open_pinned(&self.pin_dir)
    }
}

/// Whether anything of lab `name` exists (namespaces or state), complete or not.
pub fn exists(name: &str) -> bool {
    netns::exists(&local_ns(name)) || netns::exists(&remote_ns(name)) || state_dir(name).exists()
}

/// Opens lab `name`, which must be up.
pub fn open(name: &str) -> Result<Lab> {
    validate_name(name)?;
    let parts = [
        (local_ns(name), netns::exists(&local_ns(name))),
        (remote_ns(name), netns::exists(&remote_ns(name))),
        (
            format!("pinned maps in {}", pin_dir(name).display()),
            pin_dir(name).join(MAP_RULES_V4).exists(),
        ),
    ];
    if parts.iter().all(|(_, present)| !present) {
        bail!("no lab `{name}`: run `pmtu lab up --lab {name}`");
    }
    let missing: Vec<&str> = parts
        .iter()
        .filter(|(_, present)| !present)
        .map(|(what, _)| what.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "lab `{name}` is incomplete (missing: {}): `pmtu lab up --lab {name}` rebuilds it",
            missing.join(", ")
        );
    }
    Ok(Lab::new(name, read_record(&state_dir(name)).ok().flatten()))
}

/// Builds lab `name` (services chosen by PMTU_SERVICES), replacing a stale one of that name.
pub fn up(name: &str, mode: AttachMode) -> Result<Lab> {
    up_with(name, mode, &UpOptions::from_env()?)
}

/// [`up`] with explicit options. On failure, whatever was made is removed again.
pub fn up_with(name: &str, mode: AttachMode, options: &UpOptions) -> Result<Lab> {
    validate_name(name)?;
    let kind = options.services.resolve()?;
    if exists(name) {
        log::info!("replacing the existing lab `{name}`");
        down(name).with_context(|| format!("removing the old lab `{name}` first"))?;
    }
    match build(name, mode, kind, options) {
        Ok(lab) => Ok(lab),
        Err(e) => {
            if let Err(cleanup) = down(name) {
                log::warn!("removing the half-built lab `{name}`: {cleanup:#}");
            }
            Err(e.context(format!("building lab `{name}`")))
        }
    }
}

fn build(name: &str, mode: AttachMode, kind: ServiceKind, options: &UpOptions) -> Result<Lab> {
    let mut lab = Lab::new(name, None);
    let (lns, rns) = (lab.local_ns(), lab.remote_ns());
    let t = lab.topology.clone();
    let started = Instant::now();
    let step = |what: &str| log::debug!("lab `{name}`: {what} after {:?}", started.elapsed());
    netns::add(&lns)?;
    netns::add(&rns)?;

    // No DAD waits: the IPv6 addresses are usable at once. Set before any interface exists,
    // so the interfaces inherit `default`.
    let no_dad = [
        ("net/ipv6/conf/all/accept_dad", "0"),
        ("net/ipv6/conf/default/accept_dad", "0"),
    ];
    write_sysctls(&rns, &no_dad)?;
    write_sysctls(&lns, &no_dad)?;
    // LOCAL is a router only through its XDP program: its own stack forwards nothing.
    write_sysctls(
        &lns,
        &[
            ("net/ipv4/ip_forward", "0"),
            ("net/ipv6/conf/all/forwarding", "0"),
        ],
    )?;

    let remote_fd = fs::File::open(netns::path(&rns))
        .with_context(|| format!("opening network namespace `{rns}`"))?;
    let t_local = t.clone();
    netlink_in(&lns, move |h| async move {
        set_up(&h, "lo").await?;
        // The peer's attributes, including the namespace it is created in, travel inside
        // the veth's own message.
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(REMOTE_IF)
            .address(REMOTE_MAC.to_vec())
            .setns_by_fd(remote_fd.as_raw_fd())
            .build();
        let veth = LinkVeth::new(LOCAL_IF, REMOTE_IF)
            .address(LOCAL_MAC.to_vec())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .up()
            .build();
        h.link().add(veth).execute().await.with_context(|| {
            format!(
                "creating veth {LOCAL_IF} with peer {REMOTE_IF} in `{rns_name}`",
                rns_name = remote_ns(name)
            )
        })?;
        drop(remote_fd);
        let index = link_index(&h, LOCAL_IF).await?;
        add_address(&h, index, t_local.local_addr.into(), LINK_PREFIX_V4).await?;
        add_address(&h, index, t_local.local_addr6.into(), LINK_PREFIX_V6).await?;
        // LOCAL's own stack never answers for the fake host.
        add_route(&h, IpNet::V4(t_local.fake_net), None, true).await?;
        add_route(&h, IpNet::V6(t_local.fake_net6), None, true).await?;
        Ok(())
    })
    .with_context(|| format!("configuring LOCAL (namespace `{lns}`)"))?;

    let t_remote = t.clone();
    netlink_in(&rns, move |h| async move {
        set_up(&h, "lo").await?;
        set_up(&h, REMOTE_IF).await?;
        let index = link_index(&h, REMOTE_IF).await?;
        add_address(&h, index, t_remote.remote_addr.into(), LINK_PREFIX_V4).await?;
        add_address(&h, index, t_remote.remote_addr6.into(), LINK_PREFIX_V6).await?;
        // REMOTE reaches the fake nets through LOCAL, the router.
        add_route(
            &h,
            IpNet::V4(t_remote.fake_net),
            Some(t_remote.local_addr.into()),
            false,
        )
        .await?;
        add_route(
            &h,
            IpNet::V6(t_remote.fake_net6),
            Some(t_remote.local_addr6.into()),
            false,
        )
        .await?;
        Ok(())
    })
    .with_context(|| format!("configuring REMOTE (namespace `{rns}`)"))?;

    step("namespaces, links, addresses and routes");
    mount_bpffs(&lab.pin_dir)?;
    let mut responder = Responder::load(Some(&lab.pin_dir))?;
    responder.attach(Some(&lns), LOCAL_IF, mode)?;
    responder.attach_pass(Some(&rns), REMOTE_IF)?;
    responder.set_routers(t.local_addr, t.local_addr6)?;
    // The fake host's traffic is reported and dropped even between scenarios.
    responder.set_rule(IpNet::V4(t.fake_net), RuleSpec::observe())?;
    responder.set_rule(IpNet::V6(t.fake_net6), RuleSpec::observe())?;
    // The pinned links keep the programs attached.
    drop(responder);

    let serve_exe = match &options.serve_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("finding the pmtu executable for `pmtu serve`")?,
    };
    step("XDP loaded and attached");
    let (record, mut child) = start_service(&lab, kind, &serve_exe)?;
    lab.service = Some(record.clone());
    wait_for_services(&lab, &record, &mut child)?;
    step("services answering");
    Ok(lab)
}

/// Removes lab `name`: stops its services (by recorded PID, after checking it is still theirs),
/// removes the pins, unmounts the bpffs, deletes both namespaces (with them the veth pair and the
/// XDP attachments) and the state dir. Every step tolerates what an earlier run left missing, so
/// it also cleans half-built labs; nothing there at all is fine.
pub fn down(name: &str) -> Result<()> {
    validate_name(name)?;
    let state = state_dir(name);
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = stop_service(&state) {
        problems.push(format!("{e:#}"));
    }
    let pins = pin_dir(name);
    let bpffs_gone = match unmount_bpffs(&pins) {
        Ok(()) => true,
        Err(e) => {
            problems.push(format!("{e:#}"));
            false
        }
    };
    for ns in [local_ns(name), remote_ns(name)] {
        if let Err(e) = netns::delete(&ns) {
            problems.push(format!("{e:#}"));
        }
    }
    if bpffs_gone {
        match fs::remove_dir_all(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("removing {}: {e}", state.display())),
        }
    }
    if !problems.is_empty() {
        bail!("removing lab `{name}`: {}", problems.join("; "));
    }
    Ok(())
}

/// A lab that is removed when dropped: `pmtu run` makes one when no lab is up.
pub struct TempLab {
    lab: Lab,
}

impl TempLab {
    pub fn up(name: &str, mode: AttachMode) -> Result<Self> {
        Ok(Self {
            lab: up(name, mode)?,
        })
    }

    pub fn up_with(name: &str, mode: AttachMode, options: &UpOptions) -> Result<Self> {
        Ok(Self {
            lab: up_with(name, mode, options)?,
        })
    }
}

impl std::ops::Deref for TempLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl Drop for TempLab {
    fn drop(&mut self) {
        if let Err(e) = down(&self.lab.name) {
            log::error!("{e:#}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces: sysctls and netlink.

/// Writes sysctls (paths under /proc/sys) from a thread inside `ns`: /proc/sys/net resolves
/// against the network namespace of the thread that opens the file.
fn write_sysctls(ns: &str, values: &[(&str, &str)]) -> Result<()> {
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

/// Runs `f` with an rtnetlink handle whose socket was opened inside `ns`.
fn netlink_in<T, F, Fut>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    netns::run_in(Some(ns), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting a runtime for netlink")?;
        runtime.block_on(async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().context("opening a netlink socket")?;
            let task = tokio::spawn(connection);
            let out = f(handle).await;
            task.abort();
            out
        })
    })
}

async fn link_index(h: &Handle, name: &str) -> Result<u32> {
    let link = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("looking up interface {name}"))?;
    link.map(|l| l.header.index)
        .ok_or_else(|| anyhow!("no interface {name}"))
}

async fn set_up(h: &Handle, name: &str) -> Result<()> {
    let index = link_index(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))
}

async fn add_address(h: &Handle, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
    let mut req = h.address().add(index, addr, prefix);
    if addr.is_ipv6() {
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
    }
    req.execute()
        .await
        .with_context(|| format!("adding address {addr}/{prefix}"))
}

async fn add_route(h: &Handle, dest: IpNet, via: Option<IpAddr>, blackhole: bool) -> Result<()> {
    let message = match (dest, via) {
        (IpNet::V4(net), via) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net.network(), net.prefix_len());
            if let Some(IpAddr::V4(gw)) = via {
                b = b.gateway(gw);
            }
            if blackhole {
                b = b.kind(RouteType::BlackHole);
            }
            b.build()
        }
        (IpNet::V6(net), via) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(net.network(), net.prefix_len());
            if let Some(IpAddr::V6(gw)) = via {
                b = b.gateway(gw);
            }
            if blackhole {
                b = b.kind(RouteType::BlackHole);
            }
            b.build()
        }
    };
    let what = match (via, blackhole) {
        (_, true) => format!("blackhole {dest}"),
        (Some(gw), _) => format!("{dest} via {gw}"),
        (None, _) => dest.to_string(),
    };
    h.route()
        .add(message)
        .execute()
        .await
        .with_context(|| format!("adding route {what}"))
}

// ---------------------------------------------------------------------------------------------
// The bpffs.

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

fn mount_bpffs(dir: &Path) -> Result<()> {
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
fn unmount_bpffs(dir: &Path) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------
// REMOTE's services.

fn read_record(state: &Path) -> Result<Option<ServiceRecord>> {
    let path = record_path(state);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Starts the services inside REMOTE's namespace, in a session of their own (so a Ctrl-C on a
/// later `pmtu run` does not reach them), and records the process.
fn start_service(lab: &Lab, kind: ServiceKind, serve_exe: &Path) -> Result<(ServiceRecord, Child)> {
    let state = &lab.state_dir;
    let log = fs::File::create(log_path(state))
        .with_context(|| format!("creating {}", log_path(state).display()))?;
    let (program, args): (String, Vec<String>) = match kind {
        ServiceKind::Inetd => {
            let run = state.join("inetd");
            fs::create_dir_all(&run)?;
            fs::write(run.join("inetd.conf"), INETD_CONF)?;
            // -d: stay in the foreground (our PID is inetd's) and log to services.log.
            // -R: the default limit of 256 connections a minute would stop chargen for ten
            // minutes during a soak run.
            (
                INETD.to_string(),
                ["-d", "-R", "1000000", "/run/inetd.conf"]
                    .map(String::from)
                    .to_vec(),
            )
        }
        ServiceKind::Builtin => (
            serve_exe.to_string_lossy().into_owned(),
            vec!["serve".to_string()],
        ),
    };
    let mut cmd = netns::command(Some(&lab.remote_ns()), &program)?;
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let private_run = match kind {
        ServiceKind::Inetd => Some(
            std::ffi::CString::new(state.join("inetd").as_os_str().as_encoded_bytes())
                .context("state dir path")?,
        ),
        ServiceKind::Builtin => None,
    };
    // SAFETY: between fork and exec only async-signal-safe syscalls run here (setsid, unshare,
    // mount), on strings prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if let Some(dir) = &private_run {
                // inetd always writes /run/inetd.pid: give it a private /run (this lab's
                // inetd/ dir, which also holds its configuration) in a mount namespace of
                // its own, so the system's /run/inetd.pid is never touched.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                mount(
                    None::<&std::ffi::CStr>,
                    c"/",
                    None::<&std::ffi::CStr>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&std::ffi::CStr>,
                )?;
                mount(
                    Some(dir.as_c_str()),
                    c"/run",
                    None::<&std::ffi::CStr>,
                    MsFlags::MS_BIND,
                    None::<&std::ffi::CStr>,
                )?;
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {program} in namespace `{}`", lab.remote_ns()))?;
    let pid = child.id() as i32;
    let start_time = proc_stat(pid).map(|s| s.start_time).ok_or_else(|| {
        anyhow!(
            "{program} (pid {pid}) exited at once; see {}",
            log_path(state).display()
        )
    })?;
    let mut argv = vec![program];
    argv.extend(args);
    let record = ServiceRecord {
        kind,
        pid,
        start_time,
        argv,
    };
    fs::write(record_path(state), serde_json::to_string_pretty(&record)?)
        .with_context(|| format!("writing {}", record_path(state).display()))?;
    Ok((record, child))
}

/// Waits until chargen accepts on both families and echo answers on both, from a socket inside
/// LOCAL's namespace (so through the veth and the XDP programs).
fn wait_for_services(lab: &Lab, record: &ServiceRecord, child: &mut Child) -> Result<()> {
    let t = &lab.topology;
    let deadline = Instant::now() + SERVICE_WAIT;
    let log = log_path(&lab.state_dir);
    let who = match record.kind {
        ServiceKind::Inetd => format!("inetd (pid {})", record.pid),
        ServiceKind::Builtin => format!("`pmtu serve` (pid {})", record.pid),
    };
    let checks: [(SocketAddr, bool); 4] = [
        ((t.remote_addr, CHARGEN_PORT).into(), true),
        ((t.remote_addr6, CHARGEN_PORT).into(), true),
        ((t.remote_addr, ECHO_PORT).into(), false),
        ((t.remote_addr6, ECHO_PORT).into(), false),
    ];
    netns::run_in(Some(&lab.local_ns()), || {
        for (addr, tcp) in checks {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "REMOTE's {who} exited ({status}) before its services came up:\n{}",
                        log_tail(&log)
                    );
                }
                let attempt = if tcp {
                    probe_chargen(addr)
                } else {
                    probe_echo(addr)
                };
                let last_error = match attempt {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    let service = if tcp {
                        format!("chargen (tcp/{CHARGEN_PORT}) on {}", addr.ip())
                    } else {
                        format!("echo (udp/{ECHO_PORT}) on {}", addr.ip())
                    };
                    bail!(
                        "REMOTE's {service} did not answer within {} s ({last_error}); served by \
                         {who}, log {}:\n{}",
                        SERVICE_WAIT.as_secs(),
                        log.display(),
                        log_tail(&log)
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    })
}

fn probe_chargen(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)
}

fn probe_echo(addr: SocketAddr) -> io::Result<()> {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let probe = b"pmtu lab: echo check";
    socket.send(probe)?;
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf)?;
    if &buf[..n] != probe {
        return Err(io::Error::other("echo answered with different data"));
    }
    Ok(())
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    if tail.is_empty() {
        "(the log is empty)".to_string()
    } else {
        tail
    }
}

struct ProcStat {
    state: char,
    pgrp: i32,
    start_time: u64,
}

/// Fields of /proc/PID/stat; `None` when there is no such process.
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is still the process `record` describes: same start time and, unless it is a
/// zombie (whose command line is gone), same command line. A process that exec'd something else
/// since is not recognised, and is left alone.
fn is_ours(record: &ServiceRecord, stat: &ProcStat) -> bool {
    if stat.start_time != record.start_time {
        return false;
    }
    if stat.state == 'Z' {
        return true;
    }
    let Ok(raw) = fs::read(format!("/proc/{}/cmdline", record.pid)) else {
        return false;
    };
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // A script started through its `#!` line shows its interpreter first.
    let via_interpreter = argv.len() > record.argv.len()
        && argv.ends_with(&record.argv[1.min(record.argv.len())..])
        && argv.contains(&record.argv.first().cloned().unwrap_or_default());
    argv == record.argv || via_interpreter
}

/// Gone, or a zombie: then reaped if it is our child.
fn has_exited(pid: i32, start_time: u64) -> bool {
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    match proc_stat(pid) {
        None => true,
        Some(s) => s.start_time != start_time || s.state == 'Z' || s.state == 'X',
    }
}

fn stop_service(state: &Path) -> Result<()> {
    let Some(record) = read_record(state)? else {
        return Ok(());
    };
    let pid = record.pid;
    match proc_stat(pid) {
        None => {}
        Some(stat) if !is_ours(&record, &stat) => {
            log::warn!(
                "pid {pid} is no longer the lab's {:?} service (its start time or command line \
                 differ); leaving it alone",
                record.kind
            );
        }
        Some(stat) => {
            // The service leads its own session and process group (setsid): signal the group,
            // so that any child it forked goes too.
            let target = if stat.pgrp == pid {
                Pid::from_raw(-pid)
            } else {
                Pid::from_raw(pid)
            };
            let _ = kill(target, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_WAIT;
            while !has_exited(pid, record.start_time) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !has_exited(pid, record.start_time) {
                log::warn!(
                    "{:?} service (pid {pid}) ignored SIGTERM; killing it",
                    record.kind
                );
                let _ = kill(target, Signal::SIGKILL);
                let deadline = Instant::now() + STOP_WAIT;
                while !has_exited(pid, record.start_time) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !has_exited(pid, record.start_time) {
                    bail!("the lab's service (pid {pid}) does not exit even after SIGKILL");
                }
            }
        }
    }
    match fs::remove_file(record_path(state)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Status.

/// What `pmtu lab status` reports; `--json` prints it as is.
#[derive(Debug, Serialize)]
pub struct LabStatus {
    pub name: String,
    /// Both namespaces and the pinned maps are there.
    pub complete: bool,
    pub state_dir: PathBuf,
    pub topology: Topology,
    pub namespaces: Vec<NamespaceStatus>,
    pub service: Option<ServiceStatus>,
    pub rules: Vec<RuleStatus>,
    pub counters: Vec<CounterStatus>,
    /// What could not be read.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct NamespaceStatus {
    /// LOCAL or REMOTE.
    pub role: &'static str,
    pub name: String,
    pub exists: bool,
    pub interfaces: Vec<InterfaceStatus>,
    /// The main table.
    pub routes: Vec<RouteStatus>,
    /// The route to each fake host as the kernel resolves it now, with any cached PMTU.
    pub to_fake_host: Vec<RouteStatus>,
}

#[derive(Debug, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub mac: Option<String>,
    pub up: bool,
    pub mtu: Option<u32>,
    pub addresses: Vec<String>,
    pub xdp: Option<XdpStatus>,
}

#[derive(Debug, Serialize)]
pub struct XdpStatus {
    pub prog_id: u32,
    pub prog_name: Option<String>,
    /// native, skb, hw or multi.
    pub mode: String,
}

#[derive(Debug, Serialize)]
pub struct RouteStatus {
    pub destination: String,
    /// unicast, blackhole, local, ...
    pub kind: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
    /// The route's MTU metric: for a resolved route, the cached path MTU.
    pub mtu: Option<u32>,
    /// Seconds until a cached entry expires.
    pub expires_s: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub kind: ServiceKind,
    pub pid: i32,
    pub alive: bool,
    /// Sockets listening in REMOTE's namespace on the chargen and echo ports.
    pub listening: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RuleStatus {
    pub prefix: String,
    pub action: String,
    pub mtu: u32,
    /// ICMP errors allowed; 0: no limit.
    pub budget: u32,
    pub sent: u64,
    pub pass: bool,
}

#[derive(Debug, Serialize)]
pub struct CounterStatus {
    pub name: &'static str,
    pub value: u64,
}

/// Gathers the state of lab `name`, complete or not (error only when nothing of it exists).
pub fn status_report(name: &str) -> Result<LabStatus> {
    validate_name(name)?;
    if !exists(name) {
        bail!("no lab `{name}`: run `pmtu lab up --lab {name}`");
    }
    let topology = Topology::lab(name);
    let mut problems = Vec::new();
    let names: Vec<(u32, String)> = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_string()))
        .collect();
    let fake_hosts: [IpAddr; 2] = [
        topology.fake_net_addr.into(),
        topology.fake_net_addr6.into(),
    ];
    let mut namespaces = Vec::new();
    for (role, ns) in [("LOCAL", local_ns(name)), ("REMOTE", remote_ns(name))] {
        let mut status = NamespaceStatus {
            role,
            exists: netns::exists(&ns),
            name: ns.clone(),
            interfaces: Vec::new(),
            routes: Vec::new(),
            to_fake_host: Vec::new(),
        };
        if status.exists {
            match netlink_in(&ns, move |h| async move {
                inspect_namespace(&h, &fake_hosts).await
            }) {
                Ok((interfaces, routes, to_fake_host)) => {
                    status.interfaces = interfaces;
                    status.routes = routes;
                    status.to_fake_host = to_fake_host;
                }
                Err(e) => problems.push(format!("reading namespace `{ns}`: {e:#}")),
            }
            for iface in &mut status.interfaces {
                if let Some(xdp) = &mut iface.xdp {
                    xdp.prog_name = names
                        .iter()
                        .find(|(id, _)| *id == xdp.prog_id)
                        .map(|(_, n)| n.clone());
                }
            }
        }
        namespaces.push(status);
    }

    let service = match read_record(&state_dir(name)) {
        Ok(Some(record)) => {
            let alive =
                proc_stat(record.pid).is_some_and(|s| is_ours(&record, &s) && s.state != 'Z');
            let listening = if netns::exists(&remote_ns(name)) {
                netns::run_in(Some(&remote_ns(name)), || Ok(listening_sockets()))
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            Some(ServiceStatus {
                kind: record.kind,
                pid: record.pid,
                alive,
                listening,
            })
        }
        Ok(None) => None,
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };

    let pins = pin_dir(name);
    let complete = namespaces.iter().all(|n| n.exists) && pins.join(MAP_RULES_V4).exists();
    let (mut rules, mut counters) = (Vec::new(), Vec::new());
    if pins.join(MAP_RULES_V4).exists() {
        match Responder::open_pinned(&pins) {
            Ok(responder) => {
                rules = responder
                    .rules()
                    .into_iter()
                    .map(|(prefix, rule)| RuleStatus {
                        prefix: prefix.to_string(),
                        action: match RuleAction::from_u8(rule.action) {
                            Some(RuleAction::Answer) => "answer".to_string(),
                            Some(RuleAction::Blackhole) => "blackhole".to_string(),
                            Some(RuleAction::Observe) => "observe".to_string(),
                            None => format!("unknown ({})", rule.action),
                        },
                        mtu: rule.mtu,
                        budget: rule.budget,
                        sent: rule.sent,
                        pass: rule.flags & pmtu_common::RULE_F_PASS != 0,
                    })
                    .collect();
                match responder.counters() {
                    Ok(values) => {
                        counters = Counter::ALL
                            .iter()
                            .map(|c| CounterStatus {
                                name: c.name(),
                                value: values[*c as usize],
                            })
                            .collect()
                    }
                    Err(e) => problems.push(format!("{e:#}")),
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    Ok(LabStatus {
        name: name.to_string(),
        complete,
        state_dir: state_dir(name),
        topology,
        namespaces,
        service,
        rules,
        counters,
        problems,
    })
}

/// Interfaces (without lo), the main routing table and the routes to `fake_hosts`.
async fn inspect_namespace(
    h: &Handle,
    fake_hosts: &[IpAddr],
) -> Result<(Vec<InterfaceStatus>, Vec<RouteStatus>, Vec<RouteStatus>)> {
    let mut names = std::collections::HashMap::new();
    let mut interfaces = Vec::new();
    let mut links = h.link().get().execute();
    let mut indexes = Vec::new();
    while let Some(link) = links.try_next().await? {
        let mut iface = InterfaceStatus {
            name: String::new(),
            mac: None,
            up: link.header.flags.contains(LinkFlags::Up),
            mtu: None,
            addresses: Vec::new(),
            xdp: None,
        };
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(n) => iface.name = n.clone(),
                LinkAttribute::Address(a) => {
                    if let Ok(mac) = <Mac>::try_from(a.as_slice()) {
                        iface.mac = Some(format_mac(&mac));
                    }
                }
                LinkAttribute::Mtu(m) => iface.mtu = Some(*m),
                LinkAttribute::Xdp(xdp) => iface.xdp = xdp_status(xdp),
                _ => {}
            }
        }
        names.insert(link.header.index, iface.name.clone());
        if iface.name != "lo" {
            indexes.push(link.header.index);
            interfaces.push(iface);
        }
    }
    let mut addrs = h.address().get().execute();
    while let Some(msg) = addrs.try_next().await? {
        let Some(pos) = indexes.iter().position(|i| *i == msg.header.index) else {
            continue;
        };
        for attr in &msg.attributes {
            if let AddressAttribute::Address(a) = attr {
                interfaces[pos]
                    .addresses
                    .push(format!("{a}/{}", msg.header.prefix_len));
            }
        }
    }

    let mut routes = Vec::new();
    for family in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut dump = h.route().get(family).execute();
        while let Some(msg) = dump.try_next().await? {
            let table = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(msg.header.table as u32);
            if table == u32::from(netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN) {
                routes.push(route_status(&msg, &names));
            }
        }
    }

    let mut to_fake_host = Vec::new();
    for host in fake_hosts {
        let message = match host {
            IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(*a, 32)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(*a, 128)
                .build(),
        };
        // A blackhole route makes the lookup fail; the dump above shows it.
        if let Ok(Some(msg)) = h.route().get(message).execute().try_next().await {
            let mut status = route_status(&msg, &names);
            status.destination = host.to_string();
            to_fake_host.push(status);
        }
    }
    Ok((interfaces, routes, to_fake_host))
}

fn xdp_status(attrs: &[LinkXdp]) -> Option<XdpStatus> {
    let mut mode = None;
    let mut id = None;
    for attr in attrs {
        match attr {
            LinkXdp::Attached(XdpAttached::None) => return None,
            LinkXdp::Attached(a) => {
                mode = Some(match a {
                    XdpAttached::Driver => "native".to_string(),
                    XdpAttached::SocketBuffer => "skb".to_string(),
                    XdpAttached::Hardware => "hw".to_string(),
                    XdpAttached::Multiple => "multi".to_string(),
                    other => format!("{other:?}"),
                })
            }
            LinkXdp::ProgId(p) => id = Some(*p),
            _ => {}
        }
    }
    Some(XdpStatus {
        prog_id: id?,
        prog_name: None,
        mode: mode.unwrap_or_default(),
    })
}

fn route_address(a: &RouteAddress) -> String {
    match a {
        RouteAddress::Inet(a) => a.to_string(),
        RouteAddress::Inet6(a) => a.to_string(),
        other => format!("{other:?}"),
    }
}

fn route_status(
    msg: &netlink_packet_route::route::RouteMessage,
    names: &std::collections::HashMap<u32, String>,
) -> RouteStatus {
    let mut status = RouteStatus {
        destination: "default".to_string(),
        kind: format!("{:?}", msg.header.kind).to_lowercase(),
        gateway: None,
        dev: None,
        mtu: None,
        expires_s: None,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => {
                status.destination = format!(
                    "{}/{}",
                    route_address(a),
                    msg.header.destination_prefix_length
                )
            }
            RouteAttribute::Gateway(a) => status.gateway = Some(route_address(a)),
            RouteAttribute::Oif(i) => status.dev = names.get(i).cloned(),
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    if let RouteMetric::Mtu(mtu) = m {
                        status.mtu = Some(*mtu);
                    }
                }
            }
            // In clock ticks (USER_HZ, 100 a second).
            RouteAttribute::CacheInfo(ci) if ci.expires > 0 => {
                status.expires_s = Some(ci.expires / 100)
            }
            _ => {}
        }
    }
    status
}

/// The chargen and echo sockets listening in this thread's network namespace, from
/// /proc/thread-self/net (/proc/self/net would show the main thread's namespace).
fn listening_sockets() -> Vec<String> {
    let mut out = Vec::new();
    for (file, proto, family, port, state, service) in [
        ("tcp", "tcp", "IPv4", CHARGEN_PORT, "0A", "chargen"),
        ("tcp6", "tcp", "IPv6", CHARGEN_PORT, "0A", "chargen"),
        ("udp", "udp", "IPv4", ECHO_PORT, "07", "echo"),
        ("udp6", "udp", "IPv6", ECHO_PORT, "07", "echo"),
    ] {
        let Ok(text) = fs::read_to_string(format!("/proc/thread-self/net/{file}")) else {
            continue;
        };
        let wanted = format!(":{port:04X}");
        let listening = text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1).is_some_and(|local| local.ends_with(&wanted))
                && fields.get(3) == Some(&state)
        });
        if listening {
            out.push(format!("{service} {proto}/{port} {family}"));
        }
    }
    out
}

/// `pmtu lab status` for people.
pub fn status(name: &str) -> Result<String> {
    use std::fmt::Write as _;
    let s = status_report(name)?;
    let mut out = String::new();
    let state = if s.complete {
        "up"
    } else {
        "INCOMPLETE (`pmtu lab up` rebuilds it)"
    };
    let _ = writeln!(
        out,
        "lab `{}`: {state}; state in {}",
        s.name,
        s.state_dir.display()
    );
    for ns in &s.namespaces {
        if !ns.exists {
            let _ = writeln!(out, "{:<6} namespace {}: missing", ns.role, ns.name);
            continue;
        }
        let _ = writeln!(out, "{:<6} namespace {}", ns.role, ns.name);
        for i in &ns.interfaces {
            let _ = writeln!(
                out,
                "  {} {} {} mtu {} {}",
                i.name,
                i.mac.as_deref().unwrap_or("-"),
                if i.up { "up" } else { "DOWN" },
                i.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                i.addresses.join(" ")
            );
            match &i.xdp {
                Some(x) => {
                    let _ = writeln!(
                        out,
                        "    xdp: {} (prog id {}, {})",
                        x.prog_name.as_deref().unwrap_or("?"),
                        x.prog_id,
                        x.mode
                    );
                }
                None => {
                    let _ = writeln!(out, "    xdp: none");
                }
            }
        }
        for r in &ns.routes {
            let _ = writeln!(out, "  route {}", describe_route(r));
        }
        for r in &ns.to_fake_host {
            let pmtu = match (r.mtu, r.expires_s) {
                (Some(mtu), Some(exp)) => format!("cached PMTU {mtu}, expires in {exp} s"),
                (Some(mtu), None) => format!("MTU {mtu}"),
                _ => "no cached PMTU".to_string(),
            };
            let _ = writeln!(out, "  to the fake host {}: {pmtu}", describe_route(r));
        }
    }
    match &s.service {
        Some(svc) => {
            let _ = writeln!(
                out,
                "services: {} (pid {}) {}; listening: {}",
                match svc.kind {
                    ServiceKind::Inetd => "openbsd-inetd",
                    ServiceKind::Builtin => "pmtu serve",
                },
                svc.pid,
                if svc.alive { "running" } else { "NOT RUNNING" },
                if svc.listening.is_empty() {
                    "nothing".to_string()
                } else {
                    svc.listening.join(", ")
                }
            );
        }
        None => {
            let _ = writeln!(out, "services: none recorded");
        }
    }
    if !s.rules.is_empty() {
        let _ = writeln!(out, "XDP rules:");
        for r in &s.rules {
            let budget = if r.budget == 0 {
                "no limit".to_string()
            } else {
                r.budget.to_string()
            };
            let _ = writeln!(
                out,
                "  {} {} mtu {} budget {budget} sent {}{}",
                r.prefix,
                r.action,
                r.mtu,
                r.sent,
                if r.pass { " pass" } else { "" }
            );
        }
    }
    if !s.counters.is_empty() {
        let counters: Vec<String> = s
            .counters
            .iter()
            .map(|c| format!("{} {}", c.name, c.value))
            .collect();
        let _ = writeln!(out, "XDP counters: {}", counters.join(", "));
    }
    for p in &s.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    Ok(out)
}

fn describe_route(r: &RouteStatus) -> String {
    let mut text = if r.kind == "unicast" {
        r.destination.clone()
    } else {
        format!("{} {}", r.kind, r.destination)
    };
    if let Some(gw) = &r.gateway {
        text.push_str(&format!(" via {gw}"));
    }
    if let Some(dev) = &r.dev {
        text.push_str(&format!(" dev {dev}"));
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The command line.

/// `pmtu lab up | down | status`.
#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub cmd: LabCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum LabCmd {
    /// Build the lab (replacing any lab of the same name): LOCAL and REMOTE namespaces, the
    /// veth pair, addresses, routes, the XDP responder and REMOTE's chargen and echo.
    /// PMTU_SERVICES=builtin uses `pmtu serve` even when openbsd-inetd is installed.
    Up,
    /// Remove the lab: services, XDP programs, namespaces and state. Safe to repeat.
    Down,
    /// Show namespaces, interfaces, routes (with cached PMTUs), services, XDP programs, rules
    /// and counters.
    Status {
        /// Print the lab's configuration as NAME=value lines (LOCAL_IF ... REMOTE_NETNS)
        #[arg(long, conflicts_with = "json")]
        env: bool,
        /// Print everything as one JSON object
        #[arg(long)]
        json: bool,
    },
}

/// Runs `pmtu lab ...` for lab `lab`, attaching XDP in `mode`.
pub async fn cli(args: LabArgs, lab: &str, mode: AttachMode) -> Result<()> {
    let name = lab.to_string();
    validate_name(&name)?;
    let what = match &args.cmd {
        LabCmd::Up => "pmtu lab up",
        LabCmd::Down => "pmtu lab down",
        LabCmd::Status { .. } => "pmtu lab status",
    };
    crate::respond::require_root(what)?;
    match args.cmd {
        LabCmd::Up => {
            let started = Instant::now();
            let replaced = exists(&name);
            let options = UpOptions::from_env()?;
            let task = tokio::task::spawn_blocking({
                let name = name.clone();
                move || up_with(&name, mode, &options)
            });
            tokio::pin!(task);
            let lab = tokio::select! {
                result = &mut task => result.context("the lab task failed")??,
                () = crate::signals::stop() => {
                    eprintln!("interrupted: removing the half-built lab `{name}`");
                    let _ = task.await;
                    tokio::task::spawn_blocking(move || down(&name)).await??;
                    bail!("interrupted");
                }
            };
            let t = &lab.topology;
            let service = match &lab.service {
                Some(s) if s.kind == ServiceKind::Inetd => format!("openbsd-inetd (pid {})", s.pid),
                Some(s) => format!("pmtu serve (pid {})", s.pid),
                None => "none".to_string(),
            };
            if replaced {
                println!("replaced the lab `{name}` that was there");
            }
            println!(
                "lab `{}` up in {:.2} s: LOCAL {}/{} {} {}, REMOTE {}/{} {} {}, fake nets {} {}, \
                 services {service}, XDP {}",
                lab.name,
                started.elapsed().as_secs_f64(),
                lab.local_ns(),
                t.local_if,
                t.local_addr,
                t.local_addr6,
                lab.remote_ns(),
                lab.remote_if,
                t.remote_addr,
                t.remote_addr6,
                t.fake_net,
                t.fake_net6,
                match mode {
                    AttachMode::Native => "native",
                    AttachMode::Skb => "skb",
                },
            );
            let flag = if lab.name == DEFAULT_NAME {
                String::new()
            } else {
                format!(" --lab {}", lab.name)
            };
            println!("`pmtu{flag} lab status` shows it, `pmtu{flag} lab down` removes it");
        }
        LabCmd::Down => {
            let existed = exists(&name);
            let started = Instant::now();
            let n = name.clone();
            tokio::task::spawn_blocking(move || down(&n))
                .await
                .context("the lab task failed")??;
            if existed {
                println!(
                    "lab `{name}` removed in {:.2} s",
                    started.elapsed().as_secs_f64()
                );
            } else {
                println!("no lab `{name}`: nothing to remove");
            }
        }
        LabCmd::Status { env: true, .. } => {
            let lab = open(&name)?;
            for line in lab.topology.to_env_lines() {
                println!("{line}");
            }
        }
        LabCmd::Status { json: true, .. } => {
            let n = name.clone();
            let report = tokio::task::spawn_blocking(move || status_report(&n)).await??;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        LabCmd::Status { .. } => {
            let n = name.clone();
            print!(
                "{}",
                tokio::task::spawn_blocking(move || status(&n)).await??
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names() {
        for good in ["pmtu", "lab-2", "t12345-7", "A1", "abcdefghijklmnopqrst"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "a_b",
            "a b",
            "a/b",
            "abcdefghijklmnopqrstu",
            "ü",
            "a.b",
        ] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("is not a lab name"), "{bad}: {err}");
        }
        assert_eq!(local_ns("pmtu"), "pmtu-local");
        assert_eq!(remote_ns("pmtu"), "pmtu-remote");
        assert_eq!(pin_dir("x"), Path::new("/run/pmtu/x/bpf"));
    }

    #[test]
    fn proc_stat_of_self() {
        let me = std::process::id() as i32;
        let stat = proc_stat(me).unwrap();
        // Running, or sleeping while the test harness waits for other threads; never a zombie.
        assert!(
            matches!(stat.state, 'R' | 'S' | 'D'),
            "state {}",
            stat.state
        );
        assert!(stat.start_time > 0);
        assert!(proc_stat(i32::MAX).is_none());
    }

    #[test]
    fn service_record_round_trips() {
        let r = ServiceRecord {
            kind: ServiceKind::Inetd,
            pid: 42,
            start_time: 7,
            argv: vec![INETD.into(), "-d".into()],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"inetd\""), "{text}");
        assert_eq!(serde_json::from_str::<ServiceRecord>(&text).unwrap(), r);
    }

    #[test]
    fn inetd_lines_are_the_originals() {
        assert_eq!(INETD_CONF.lines().count(), 4);
        assert!(INETD_CONF.contains("chargen stream tcp6 nowait root internal"));
        assert!(INETD_CONF.contains("echo dgram udp6 wait root internal"));
    }
}
