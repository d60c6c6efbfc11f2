//! The XDP responder from user space: load, attach, rules, counters, events.
//!
//! A [`Responder`] either owns the loaded object (programs, maps, links: dropping it detaches
//! everything) or holds only maps opened from a lab's pins ([`Responder::open_pinned`]), in which
//! case the programs stay attached after it is dropped.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData, PerCpuArray, RingBuf},
    programs::{links::FdLink, ProgramError, TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use ipnet::IpNet;
use nix::errno::Errno;
use pmtu_common::{
    Config, Counter, Event, Rule, COUNTER_COUNT, MAP_CONFIG, MAP_COUNTERS, MAP_EVENTS,
    MAP_RULES_V4, MAP_RULES_V6, MAP_RULE_SENT, PROG_FLOOR, PROG_PASS, PROG_RESPONDER, RULE_SLOTS,
};
use tokio::io::unix::AsyncFd;

use super::rules::{InstalledRule, RuleSpec};

/// The XDP object, built by build.rs from pmtu-ebpf.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pmtu.bpf.o"));

/// Hop limit / TTL of the ICMP errors the responder sends.
pub const ICMP_HOP_LIMIT: u8 = 64;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// In the driver (veth, tun/tap and most NICs): needed for XDP_TX at line rate.
    #[default]
    Native,
    /// Generic XDP in the stack: works on any interface, slower.
    Skb,
}

impl AttachMode {
    fn flags(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// The result of one BPF_PROG_TEST_RUN.
#[derive(Debug)]
pub struct TestOutcome {
    /// XDP action (`XDP_PASS` = 2, `XDP_TX` = 3, `XDP_DROP` = 1, `XDP_ABORTED` = 0).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Kernel-measured time per run.
    pub duration: Duration,
}

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub struct Responder {
    /// Programs and links, when this process loaded them.
    ebpf: Option<Ebpf>,
    rules_v4: LpmTrie<MapData, [u8; 4], Rule>,
    rules_v6: LpmTrie<MapData, [u8; 16], Rule>,
    config: Array<MapData, Config>,
    counters: PerCpuArray<MapData, u64>,
    /// ICMP errors sent per rule, indexed by the rule's slot.
    rule_sent: Array<MapData, u64>,
    /// Which slot each installed rule has; read from the maps on first use.
    slots: Option<HashMap<IpNet, u32>>,
    events: Option<RingBuf<MapData>>,
    logger: Logger,
    pin_dir: Option<PathBuf>,
}

/// aya-log's logger must stay alive (its map fd) and be polled to print.
enum Logger {
    None,
    Idle(
        #[allow(
            dead_code,
            reason = "kept alive, never read: dropping it closes the log map"
        )]
        Box<aya_log::EbpfLogger<&'static dyn log::Log>>,
    ),
    Polled(tokio::task::JoinHandle<()>),
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Logger::Polled(task) = &self.logger {
            task.abort();
        }
    }
}

/// The errno behind an error, found by walking its sources down to the `io::Error` the
/// syscall returned (aya wraps them: `ProgramError::SyscallError`, `MapError`, ...).
fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<Errno> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(code) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(Errno::from_raw(code));
        }
        cur = err.source();
    }
    None
}

/// Explains the usual reasons a BPF operation fails, from its errno.
fn bpf_hint(e: &(dyn std::error::Error + 'static)) -> &'static str {
    match errno_of(e) {
        Some(Errno::EPERM) | Some(Errno::EACCES) => {
            "loading XDP programs needs root (CAP_BPF and CAP_NET_ADMIN): run as root or through `cargo xtask run`"
        }
        Some(Errno::ENOSYS) => "this kernel has no BPF support (CONFIG_BPF_SYSCALL)",
        _ => "see the verifier log above",
    }
}

fn pinned(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Where a lab pins the XDP link of program `prog` on `iface` (in its pin directory `dir`).
pub fn link_pin(dir: &Path, prog: &str, iface: &str) -> PathBuf {
    dir.join(format!("link-{prog}-{iface}"))
}

impl Responder {
    /// Loads the object and its three programs into the kernel. With `pin_dir` (a directory on a
    /// bpffs), the maps are pinned there so that other processes can open them.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self> {
        let mut ebpf = Ebpf::load(OBJECT)
            .map_err(|e| anyhow!("loading the XDP object failed: {e} ({})", bpf_hint(&e)))?;
        for name in [PROG_RESPONDER, PROG_PASS, PROG_FLOOR] {
            let prog = xdp_mut(&mut ebpf, name)?;
            prog.load().map_err(|e| {
                let hint = bpf_hint(&e);
                anyhow!("the kernel refused XDP program `{name}`: {e:?} ({hint})")
            })?;
        }
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Logger::spawn(logger),
            Err(e) => {
                log::debug!("no eBPF logger: {e}");
                Logger::None
            }
        };
        let mut take = |name: &str| -> Result<Map> {
            let map = ebpf
                .take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the XDP object"))?;
            if let Some(dir) = pin_dir {
                map.pin(pinned(dir, name))
                    .with_context(|| format!("pinning map {name} in {}", dir.display()))?;
            }
            Ok(map)
        };
        let rules_v4 = take(MAP_RULES_V4)?.try_into()?;
        let rules_v6 = take(MAP_RULES_V6)?.try_into()?;
        let config = take(MAP_CONFIG)?.try_into()?;
        let counters = take(MAP_COUNTERS)?.try_into()?;
        let rule_sent = take(MAP_RULE_SENT)?.try_into()?;
        let events = take(MAP_EVENTS)?.try_into()?;
        Ok(Self {
            ebpf: Some(ebpf),
            rules_v4,
            rules_v6,
            config,
            counters,
            rule_sent,
            slots: None,
            events: Some(events),
            logger,
            pin_dir: pin_dir.map(Path::to_path_buf),
        })
    }

    /// Opens the maps a lab pinned in `dir` (see [`Responder::load`]).
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        let open = |name: &str| -> Result<Map> {
            let path = pinned(dir, name);
            let data = MapData::from_pin(&path).with_context(|| {
                format!(
                    "opening the lab's pinned map {} (is the lab up? `pmtu lab up`)",
                    path.display()
                )
            })?;
            Map::from_map_data(data).with_context(|| format!("pinned map {name}"))
        };
        Ok(Self {
            ebpf: None,
            rules_v4: open(MAP_RULES_V4)?.try_into()?,
            rules_v6: open(MAP_RULES_V6)?.try_into()?,
            config: open(MAP_CONFIG)?.try_into()?,
            counters: open(MAP_COUNTERS)?.try_into()?,
            rule_sent: open(MAP_RULE_SENT)?.try_into()?,
            slots: None,
            events: Some(open(MAP_EVENTS)?.try_into()?),
            logger: Logger::None,
            pin_dir: None,
        })
    }

    /// Attaches the responder to `iface` inside namespace `ns`.
    pub fn attach(&mut self, ns: Option<&str>, iface: &str, mode: AttachMode) -> Result<()> {
        self.attach_prog(PROG_RESPONDER, ns, iface, mode)
    }

    /// Attaches the pass-through program (the peer of a veth needs one for XDP_TX to arrive).
    pub fn attach_pass(&mut self, ns: Option<&str>, iface: &str) -> Result<()> {
        self.attach_prog(PROG_PASS, ns, iface, AttachMode::Native)
    }

    fn attach_prog(
        &mut self,
        name: &str,
        ns: Option<&str>,
        iface: &str,
        mode: AttachMode,
    ) -> Result<()> {
        let pin = self.pin_dir.as_ref().map(|d| link_pin(d, name, iface));
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or_else(|| anyhow!("this responder only holds pinned maps; it cannot attach"))?;
        let prog = xdp_mut(ebpf, name)?;
        let where_ = ns
            .map(|n| format!(" in namespace `{n}`"))
            .unwrap_or_default();
        crate::net::netns::run_in(ns, || {
            let id = prog.attach(iface, mode.flags()).map_err(|e| match &e {
                ProgramError::UnknownInterface { .. } => {
                    anyhow!("no interface `{iface}`{where_}: check the name with `ip link`")
                }
                _ => match errno_of(&e) {
                    Some(Errno::EBUSY) | Some(Errno::EEXIST) => anyhow!(
                        "another XDP program is already attached to `{iface}`{where_}; \
                         detach it (`ip link set dev {iface} xdp off`) or pick another interface"
                    ),
                    _ => anyhow!(
                        "attaching XDP program `{name}` to `{iface}`{where_} ({mode:?} mode) \
                         failed: {e:?} ({})",
                        bpf_hint(&e)
                    ),
                },
            })?;
            if let Some(pin) = &pin {
                let link = prog.take_link(id)?;
                let link: FdLink = link
                    .try_into()
                    .map_err(|e| anyhow!("XDP link of `{iface}` is not a bpf_link: {e}"))?;
                link.pin(pin)
                    .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
            }
            Ok(())
        })
    }

    /// The router addresses used as the source of ICMP errors.
    pub fn set_routers(&mut self, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
        let config = Config {
            router_v4: v4.octets(),
            router_v6: v6.octets(),
            hop_limit: ICMP_HOP_LIMIT,
            _pad: [0; 3],
        };
        self.config
            .set(0, config, 0)
            .context("writing the responder's router addresses")
    }

    /// Adds or replaces the rule for `prefix` (its ICMP count starts again at 0).
    pub fn set_rule(&mut self, prefix: IpNet, spec: RuleSpec) -> Result<()> {
        let prefix = prefix.trunc();
        let slot = self.slot_for(prefix)?;
        // The count starts at 0 before the rule that uses it is there.
        self.rule_sent
            .set(slot, 0, 0)
            .with_context(|| format!("resetting the ICMP count of the rule for {prefix}"))?;
        let rule = spec.to_rule(slot);
        match prefix {
            IpNet::V4(net) => {
                let key = Key::new(net.prefix_len() as u32, net.network().octets());
                self.rules_v4.insert(&key, rule, 0)
            }
            IpNet::V6(net) => {
                let key = Key::new(net.prefix_len() as u32, net.network().octets());
                self.rules_v6.insert(&key, rule, 0)
            }
        }
        .with_context(|| format!("writing the rule for {prefix}"))?;
        self.slots_mut().insert(prefix, slot);
        Ok(())
    }

    /// The rule slots in use, read from the rule maps the first time (another process, the
    /// lab's, may have installed rules).
    fn slots_mut(&mut self) -> &mut HashMap<IpNet, u32> {
        if self.slots.is_none() {
            let book = self
                .rule_values()
                .into_iter()
                .map(|(prefix, rule)| (prefix, rule.slot))
                .collect();
            self.slots = Some(book);
        }
        self.slots.get_or_insert_with(HashMap::new)
    }

    /// `prefix`'s slot if it has a rule, else the lowest free one.
    fn slot_for(&mut self, prefix: IpNet) -> Result<u32> {
        let book = self.slots_mut();
        if let Some(slot) = book.get(&prefix) {
            return Ok(*slot);
        }
        let mut used = vec![false; RULE_SLOTS as usize];
        for slot in book.values() {
            if let Some(u) = used.get_mut(*slot as usize) {
                *u = true;
            }
        }
        used.iter()
            .position(|u| !u)
            .map(|slot| slot as u32)
            .ok_or_else(|| {
                anyhow!(
                    "no room for the rule for {prefix}: {RULE_SLOTS} rules are installed already"
                )
            })
    }

    /// Removes the rule for exactly `prefix`; absent is not an error.
    pub fn remove_rule(&mut self, prefix: IpNet) -> Result<()> {
        let prefix = prefix.trunc();
        let result = match prefix {
            IpNet::V4(net) => self
                .rules_v4
                .remove(&Key::new(net.prefix_len() as u32, net.network().octets())),
            IpNet::V6(net) => self
                .rules_v6
                .remove(&Key::new(net.prefix_len() as u32, net.network().octets())),
        };
        match result {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(Errno::ENOENT as i32) => {}
            Err(e) => return Err(e).with_context(|| format!("removing the rule for {prefix}")),
        }
        self.slots_mut().remove(&prefix);
        Ok(())
    }

    /// The rule that applies to `addr` (longest prefix match), if any.
    pub fn rule_for(&self, addr: IpAddr) -> Option<Rule> {
        match addr {
            IpAddr::V4(a) => self.rules_v4.get(&Key::new(32, a.octets()), 0).ok(),
            IpAddr::V6(a) => self.rules_v6.get(&Key::new(128, a.octets()), 0).ok(),
        }
    }

    /// Every rule: prefix and map value.
    fn rule_values(&self) -> Vec<(IpNet, Rule)> {
        let mut out = Vec::new();
        for (key, rule) in self.rules_v4.iter().flatten() {
            if let Ok(net) = ipnet::Ipv4Net::new(Ipv4Addr::from(key.data()), key.prefix_len() as u8)
            {
                out.push((IpNet::V4(net), rule));
            }
        }
        for (key, rule) in self.rules_v6.iter().flatten() {
            if let Ok(net) = ipnet::Ipv6Net::new(Ipv6Addr::from(key.data()), key.prefix_len() as u8)
            {
                out.push((IpNet::V6(net), rule));
            }
        }
        out
    }

    /// Every rule, with the ICMP errors sent for it.
    pub fn rules(&self) -> Vec<(IpNet, InstalledRule)> {
        self.rule_values()
            .into_iter()
            .map(|(prefix, rule)| {
                let installed = InstalledRule {
                    mtu: rule.mtu,
                    budget: rule.budget,
                    sent: self.rule_sent.get(&rule.slot, 0).unwrap_or(0),
                    action: rule.action,
                    flags: rule.flags,
                    limit: rule.limit,
                    slot: rule.slot,
                };
                (prefix, installed)
            })
            .collect()
    }

    /// Removes every rule.
    pub fn clear_rules(&mut self) -> Result<()> {
        for (prefix, _) in self.rule_values() {
            self.remove_rule(prefix)?;
        }
        Ok(())
    }

    /// The per-CPU counters, summed, in [`Counter::ALL`] order.
    pub fn counters(&self) -> Result<[u64; COUNTER_COUNT as usize]> {
        let mut out = [0u64; COUNTER_COUNT as usize];
        for c in Counter::ALL {
            let values = self
                .counters
                .get(&(c as u32), 0)
                .with_context(|| format!("reading counter {}", c.name()))?;
            out[c as usize] = values.iter().sum();
        }
        Ok(out)
    }

    /// The event stream; there is one per responder. Call it inside a tokio runtime.
    pub fn take_events(&mut self) -> Result<EventStream> {
        let ring = self
            .events
            .take()
            .ok_or_else(|| anyhow!("the event stream was already taken"))?;
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged while it lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow!("watching the event ring buffer: {e}"))?;
        Ok(EventStream { ring })
    }

    /// Runs program `prog` once per `repeat` on `frame` through BPF_PROG_TEST_RUN.
    pub fn test_run(&self, prog: &str, frame: &[u8], repeat: u32) -> Result<TestOutcome> {
        let ebpf = self
            .ebpf
            .as_ref()
            .ok_or_else(|| anyhow!("test runs need a responder loaded by this process"))?;
        let prog: &Xdp = ebpf
            .program(prog)
            .ok_or_else(|| anyhow!("no program {prog}"))?
            .try_into()?;
        // Room for the headers an ICMP error prepends.
        let mut out = vec![0u8; frame.len() + 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN")?;
        out.truncate(result.data_size_out as usize);
        Ok(TestOutcome {
            action: result.return_value,
            frame: out,
            duration: result.duration,
        })
    }

    /// The loaded object, for callers that need a program directly (benchmarks).
    pub fn ebpf(&self) -> Option<&Ebpf> {
        self.ebpf.as_ref()
    }
}

/// Program `name` of the object, as an XDP program.
pub(super) fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the XDP object"))?
        .try_into()
        .with_context(|| format!("program {name} is not an XDP program"))
}

impl Logger {
    fn spawn(logger: aya_log::EbpfLogger<&'static dyn log::Log>) -> Self {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Logger::Idle(Box::new(logger));
        };
        let _guard = handle.enter();
        // SAFETY: the logger owns its ring buffer's fd, open and unchanged while it lives.
        let registered =
            unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
        let Ok(mut fd) = registered else {
            return Logger::None;
        };
        Logger::Polled(handle.spawn(async move {
            while let Ok(mut guard) = fd.readable_mut().await {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }))
    }
}

/// Events from the ring buffer, as tokio waits for them.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    /// Waits until at least one event is there and appends every waiting event to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> Result<()> {
        loop {
            let mut guard = self
                .ring
                .readable_mut()
                .await
                .context("waiting for XDP events")?;
            let before = out.len();
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if let Some(ev) = decode(&item) {
                    out.push(ev);
                }
            }
            guard.clear_ready();
            if out.len() > before {
                return Ok(());
            }
        }
    }

    /// Every event waiting now, without blocking.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            if let Some(ev) = decode(&item) {
                out.push(ev);
            }
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.ring.get_ref().as_raw_fd()
    }
}

fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: Event is #[repr(C)] plain data, valid for every bit pattern; the length was
    // checked and read_unaligned makes no alignment assumption.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Event) })
}
