//! The built-in labs: LOCAL and REMOTE as two network namespaces of this machine, or REMOTE as
//! a qemu guest booted from any kernel image (`--kernel`, [`vm`]) on a tap in LOCAL's namespace.
//!
//! `<name>-local` holds LOCAL_IF (`pmtu0`) with the XDP responder; `<name>-remote` holds its veth
//! peer (`pmtu1`), REMOTE's routes to the fake nets via LOCAL, and REMOTE's services (chargen and
//! echo, from openbsd-inetd or the built-in `pmtu serve`). The veth pair is created from inside
//! LOCAL's namespace with the peer placed directly into REMOTE's, so the root namespace never
//! sees either end. Links, addresses and routes are made through rtnetlink, with a netlink
//! socket opened inside each namespace.
//!
//! The rooms: `plan` (every name and address), `lock` and `record` (who uses and who made the
//! lab), `health` (what is there and whether it is usable), `teardown`, `bpffs` (pins),
//! `service` (REMOTE's services), `status` (`pmtu lab status`); this file builds a lab.
//!
//! State lives in `/run/pmtu/<name>/`: the lab's `lock` (see [`lock`]), its record (`lab.json`,
//! see [`record`]: written first, marked complete last), a bpffs at `bpf/` holding the
//! responder's pinned maps and XDP links, the service's record (`service.json`: PID, start time,
//! command line), its log (`services.log`) and inetd's configuration (`inetd/inetd.conf`); for a
//! VM lab, the guest's files instead of the service's (`vm.json`, `console.log`, `qemu.pid`,
//! `ssh/`: see [`vm`]; built by [`vm_lab`]).
//!
//! The namespaces are made by [`crate::net::netns::add_recorded`]: each one's identity is in the record
//! before it has its name, so a namespace of the lab's names is the lab's only if the record
//! says so; others are never used nor deleted ([`health`], [`teardown`]).
//!
//! Only the namespaces themselves come from `ip netns attach/delete` (through [`crate::net::netns`]):
//! iproute2 owns the /run/netns convention (a shared mount, one bind-mounted nsfs file per
//! namespace) that every other tool reads, and rtnetlink has no call for it.
pub mod bpffs;
pub mod health;
pub mod kernel_router;
pub mod lock;
pub mod plan;
pub mod record;
pub mod service;
pub mod status;
pub mod status_text;
pub mod teardown;
pub mod vm;
mod vm_lab;

use std::{fs, os::fd::AsRawFd as _, path::PathBuf, time::Instant};

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use netlink_packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::{
    config::Topology,
    net::{
        netns,
        rtnl::{add_address, add_route, add_router_neighbour, link_index, netlink_in, set_up},
        sysctl::write_sysctls,
    },
    remote::Remote,
    xdp::{
        responder::{AttachMode, Responder},
        rules::RuleSpec,
    },
};
use bpffs::mount_bpffs;
pub use health::{exists, find, foreign_namespaces, open, unusable_reasons, Found};
use health::{has_leftovers, refuse_foreign};
pub use lock::LabLock;
pub use plan::{
    local_ns, pin_dir, remote_ns, state_dir, validate_name, DEFAULT_NAME, LINK_PREFIX_V4,
    LINK_PREFIX_V6, LOCAL_IF, LOCAL_MAC, REMOTE_IF, REMOTE_MAC,
};
use record::{LabRecord, MadeNamespace};
use service::{start_service, wait_for_services};
pub use service::{ServiceChoice, ServiceKind, ServiceRecord, UpOptions};
use teardown::clear;
pub use teardown::{clear_traces, down, down_locked};
pub use vm_lab::{up_vm, up_vm_locked};

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
    /// REMOTE is this qemu guest (a VM lab).
    pub vm: Option<vm::VmRecord>,
    /// How long the guest took, when this process booted it.
    pub vm_times: Option<vm::BootTimes>,
}

impl Lab {
    fn new(name: &str, service: Option<ServiceRecord>) -> Self {
        Self {
            name: name.to_string(),
            topology: plan::topology(name),
            state_dir: state_dir(name),
            pin_dir: pin_dir(name),
            remote_if: REMOTE_IF.to_string(),
            service,
            vm: None,
            vm_times: None,
        }
    }

    fn new_vm(name: &str, record: vm::VmRecord) -> Self {
        Self {
            topology: plan::vm_topology(name, &record.remote_ssh),
            remote_if: "eth0".to_string(),
            vm: Some(record),
            ..Self::new(name, None)
        }
    }

    /// `netns` (REMOTE is this machine's kernel in a namespace) or `vm` (a qemu guest).
    pub fn kind(&self) -> &'static str {
        if self.vm.is_some() {
            "vm"
        } else {
            "netns"
        }
    }

    pub fn local_ns(&self) -> String {
        local_ns(&self.name)
    }

    pub fn remote_ns(&self) -> String {
        remote_ns(&self.name)
    }

    /// How commands reach this lab's REMOTE.
    pub fn remote(&self) -> Result<Remote> {
        let t = &self.topology;
        Remote::new(
            t.remote_netns.as_deref(),
            t.remote_ssh.as_deref(),
            t.local_netns.as_deref(),
        )
    }

    /// The responder's maps, opened from the lab's pins (its programs stay attached).
    pub fn responder(&self) -> Result<Responder> {
        Responder::open_pinned(&self.pin_dir)
    }
}

/// The record of lab `name`'s guest, if it is a VM lab.
pub fn vm_record(name: &str) -> Option<vm::VmRecord> {
    vm::VmRecord::read(&state_dir(name)).ok().flatten()
}
/// Builds lab `name` (services chosen by PMTU_SERVICES), replacing a stale one of that name.
pub fn up(name: &str, mode: AttachMode) -> Result<Lab> {
    up_with(name, mode, &UpOptions::from_env()?)
}

/// [`up`] with explicit options: takes the lab's lock for the time of the build. On failure,
/// whatever was made is removed again.
pub fn up_with(name: &str, mode: AttachMode, options: &UpOptions) -> Result<Lab> {
    let lock = LabLock::acquire(name, lock::wait_from_env()?, &|| {
        crate::signals::requested()
    })?;
    up_locked(&lock, mode, options, false)
}

/// Builds the lab whose lock is held, replacing whatever of it is there. The record is written
/// before anything is made and marked complete last.
pub fn up_locked(
    lock: &LabLock,
    mode: AttachMode,
    options: &UpOptions,
    temporary: bool,
) -> Result<Lab> {
    let name = lock.name();
    let kind = options.services.resolve()?;
    refuse_foreign(name)?;
    let record = begin(name, temporary)?;
    match build(name, mode, kind, options, record) {
        Ok(lab) => Ok(lab),
        Err(e) => {
            if let Err(cleanup) = clear(name, true) {
                log::warn!("removing the half-built lab `{name}`: {cleanup:#}");
            }
            Err(e.context(format!("building lab `{name}`")))
        }
    }
}

/// Removes whatever of lab `name` is there (the lock is held) and writes its new record, not
/// yet complete.
fn begin(name: &str, temporary: bool) -> Result<LabRecord> {
    if exists(name) && (has_leftovers(name) || netns::exists(&local_ns(name))) {
        log::info!("replacing the existing lab `{name}`");
    }
    clear(name, false).with_context(|| format!("removing the old lab `{name}` first"))?;
    let record = LabRecord::new(temporary);
    record
        .save(&state_dir(name))
        .with_context(|| format!("recording lab `{name}`"))?;
    Ok(record)
}

/// Makes namespace `ns`, its identity in `record` before it has its name: a namespace of that
/// name is this lab's only if its identity is recorded.
fn add_namespace(ns: &str, record: &mut LabRecord, state: &std::path::Path) -> Result<()> {
    netns::add_recorded(ns, |id| {
        record.namespaces.push(MadeNamespace {
            name: ns.to_string(),
            inode: id.inode,
            cookie: id.cookie,
        });
        record.save(state)
    })?;
    Ok(())
}

/// No DAD waits: the IPv6 addresses are usable at once. Set before any interface exists, so
/// the interfaces inherit `default`. On LOCAL also no forwarding: LOCAL is a router only
/// through its XDP program, its own stack forwards nothing.
fn namespace_sysctls(ns: &str, local: bool) -> Result<()> {
    let mut values = vec![
        ("net/ipv6/conf/all/accept_dad", "0"),
        ("net/ipv6/conf/default/accept_dad", "0"),
    ];
    // LOCAL is a router only through its XDP program: its own stack forwards nothing. But
    // LOCAL_IF (made later, so from `default`, set after `all`, which resets it) says it is a
    // router in its neighbour advertisements, as the router it plays would: Linux purges the
    // IPv6 path MTUs it learned through a gateway not flagged as a router whenever its route
    // garbage collection runs. What reaches LOCAL's stack for FAKE_NET6 still ends in the
    // blackhole route.
    if local {
        values.extend([
            ("net/ipv4/ip_forward", "0"),
            ("net/ipv6/conf/all/forwarding", "0"),
            ("net/ipv6/conf/default/forwarding", "1"),
        ]);
    }
    write_sysctls(ns, &values)
}

/// LOCAL_IF's addresses and LOCAL's blackhole routes for the fake nets.
async fn configure_local(h: &rtnetlink::Handle, t: &Topology) -> Result<()> {
    set_up(h, "lo").await?;
    set_up(h, LOCAL_IF).await?;
    let index = link_index(h, LOCAL_IF).await?;
    add_address(h, index, t.local_addr.into(), LINK_PREFIX_V4).await?;
    add_address(h, index, t.local_addr6.into(), LINK_PREFIX_V6).await?;
    // LOCAL's own stack never answers for the fake hosts.
    for net in fake_nets(t) {
        add_route(h, net, None, true).await?;
    }
    Ok(())
}

/// The responder on LOCAL_IF, pinned, with the routers' addresses and the fake nets observed.
fn attach_responder(lab: &Lab, mode: AttachMode, pass_on: Option<(&str, &str)>) -> Result<()> {
    let t = &lab.topology;
    mount_bpffs(&lab.pin_dir)?;
    let mut responder = Responder::load(Some(&lab.pin_dir))?;
    responder.attach(Some(&lab.local_ns()), LOCAL_IF, mode)?;
    if let Some((ns, iface)) = pass_on {
        responder.attach_pass(Some(ns), iface)?;
    }
    responder.set_routers(t.local_addr, t.local_addr6)?;
    // The fake hosts' traffic is reported and dropped even between scenarios.
    for net in fake_nets(t) {
        responder.set_rule(net, RuleSpec::observe())?;
    }
    // The pinned links keep the programs attached.
    Ok(())
}

fn build(
    name: &str,
    mode: AttachMode,
    kind: ServiceKind,
    options: &UpOptions,
    mut record: LabRecord,
) -> Result<Lab> {
    let mut lab = Lab::new(name, None);
    let (lns, rns) = (lab.local_ns(), lab.remote_ns());
    let t = lab.topology.clone();
    let started = Instant::now();
    let step = |what: &str| log::debug!("lab `{name}`: {what} after {:?}", started.elapsed());
    for ns in [&lns, &rns] {
        add_namespace(ns, &mut record, &lab.state_dir)?;
    }
    namespace_sysctls(&rns, false)?;
    namespace_sysctls(&lns, true)?;

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
        configure_local(&h, &t_local).await
    })
    .with_context(|| format!("configuring LOCAL (namespace `{lns}`)"))?;

    let t_remote = t.clone();
    netlink_in(&rns, move |h| async move {
        set_up(&h, "lo").await?;
        set_up(&h, REMOTE_IF).await?;
        let index = link_index(&h, REMOTE_IF).await?;
        add_address(&h, index, t_remote.remote_addr.into(), LINK_PREFIX_V4).await?;
        add_address(&h, index, t_remote.remote_addr6.into(), LINK_PREFIX_V6).await?;
        // REMOTE knows LOCAL as a router, as a host knows its next hop: Linux's IPv6 route
        // GC drops every PMTU exception behind a gateway whose neighbour entry lacks the
        // router flag each time more than gc_thresh (1024) routes are cached, which a stress
        // run of thousands of fake hosts reaches (and expire6 lost its entry within a second).
        // When the entry is deleted (neighbor6), LOCAL's neighbour advertisements, which carry
        // the router flag, say so again.
        add_router_neighbour(&h, index, t_remote.local_addr6.into(), &LOCAL_MAC).await?;
        // REMOTE reaches the fake nets through LOCAL, the router.
        for net in fake_nets(&t_remote) {
            let via = match net {
                IpNet::V4(_) => t_remote.local_addr.into(),
                IpNet::V6(_) => t_remote.local_addr6.into(),
            };
            add_route(&h, net, Some(via), false).await?;
        }
        Ok(())
    })
    .with_context(|| format!("configuring REMOTE (namespace `{rns}`)"))?;

    step("namespaces, links, addresses and routes");
    attach_responder(&lab, mode, Some((&rns, REMOTE_IF)))?;

    let serve_exe = match &options.serve_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("finding the pmtu executable for `pmtu serve`")?,
    };
    step("XDP loaded and attached");
    let (service, mut child) = start_service(&lab, kind, &serve_exe)?;
    lab.service = Some(service.clone());
    wait_for_services(&lab, &service, &mut child)?;
    step("services answering");
    record.complete = true;
    record.save(&lab.state_dir)?;
    Ok(lab)
}

/// The networks behind LOCAL: FAKE_NET, FAKE_NET6 and the stress prefixes.
pub(super) fn fake_nets(t: &Topology) -> [IpNet; 4] {
    [
        IpNet::V4(t.fake_net),
        IpNet::V6(t.fake_net6),
        IpNet::V4(plan::STRESS_NET),
        IpNet::V6(plan::STRESS_NET6),
    ]
}

/// A lab that is removed when dropped: `pmtu run` makes one when no lab is up. It holds the
/// lab's lock for its whole life, so nobody else uses or replaces it meanwhile.
pub struct TempLab {
    lab: Lab,
    lock: LabLock,
}

impl TempLab {
    pub fn up(name: &str, mode: AttachMode) -> Result<Self> {
        Self::up_with(name, mode, &UpOptions::from_env()?)
    }

    pub fn up_with(name: &str, mode: AttachMode, options: &UpOptions) -> Result<Self> {
        let lock = LabLock::acquire(name, lock::wait_from_env()?, &|| {
            crate::signals::requested()
        })?;
        Self::up_locked(lock, mode, options)
    }

    /// Builds a temporary lab under a lock already held.
    pub fn up_locked(lock: LabLock, mode: AttachMode, options: &UpOptions) -> Result<Self> {
        let lab = up_locked(&lock, mode, options, true)?;
        Ok(Self { lab, lock })
    }

    /// A temporary VM lab (`--kernel`) under a lock already held.
    pub fn up_vm_locked(lock: LabLock, mode: AttachMode, options: &vm::VmOptions) -> Result<Self> {
        let lab = up_vm_locked(&lock, mode, options, true)?;
        Ok(Self { lab, lock })
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
        if let Err(e) = down_locked(&self.lock) {
            log::error!("{e:#}");
        }
    }
}
