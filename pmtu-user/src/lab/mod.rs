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
//! The rooms: `plan` (every name and address), `bpffs` (pins), `service` (REMOTE's services),
//! `status` (`pmtu lab status`); this file builds and removes a lab.
//!
//! State lives in `/run/pmtu/<name>/`: a bpffs at `bpf/` holding the responder's pinned maps and
//! XDP links, the service's record (`service.json`: PID, start time, command line), its log
//! (`services.log`) and inetd's configuration (`inetd/inetd.conf`); for a VM lab, the guest's
//! files instead of the service's (`vm.json`, `console.log`, `qemu.pid`, `ssh/`: see [`vm`]).
//!
//! Only the namespaces themselves come from `ip netns add/delete` (through [`crate::net::netns`]):
//! iproute2 owns the /run/netns convention (a shared mount, one bind-mounted nsfs file per
//! namespace) that every other tool reads, and rtnetlink has no call for it.
pub mod bpffs;
pub mod plan;
pub mod service;
pub mod status;
pub mod vm;

use std::{fs, io, os::fd::AsRawFd as _, path::PathBuf, time::Instant};

use anyhow::{bail, Context as _, Result};
use ipnet::IpNet;
use netlink_packet_route::link::{InfoData, InfoVeth};
use pmtu_common::MAP_RULES_V4;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::{
    config::Topology,
    net::{
        netns,
        rtnl::{add_address, add_route, link_index, netlink_in, set_up},
        sysctl::write_sysctls,
    },
    remote::Remote,
    xdp::responder::{AttachMode, Responder, RuleSpec},
};
use bpffs::{mount_bpffs, unmount_bpffs};
pub use plan::{
    local_ns, pin_dir, remote_ns, state_dir, validate_name, DEFAULT_NAME, LINK_PREFIX_V4,
    LINK_PREFIX_V6, LOCAL_IF, LOCAL_MAC, REMOTE_IF, REMOTE_MAC,
};
use service::{read_record, start_service, stop_service, wait_for_services};
pub use service::{ServiceChoice, ServiceKind, ServiceRecord, UpOptions};

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

/// Whether anything of lab `name` exists (namespaces or state), complete or not.
pub fn exists(name: &str) -> bool {
    netns::exists(&local_ns(name)) || netns::exists(&remote_ns(name)) || state_dir(name).exists()
}

/// The record of lab `name`'s guest, if it is a VM lab.
pub fn vm_record(name: &str) -> Option<vm::VmRecord> {
    vm::VmRecord::read(&state_dir(name)).ok().flatten()
}

/// Opens lab `name`, which must be up.
pub fn open(name: &str) -> Result<Lab> {
    validate_name(name)?;
    if let Some(record) = vm_record(name) {
        return open_vm(name, record);
    }
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

/// A VM lab is up when LOCAL's namespace, the pins and the guest's qemu are there.
fn open_vm(name: &str, record: vm::VmRecord) -> Result<Lab> {
    let files = vm::Files::new(&state_dir(name));
    let parts = [
        (local_ns(name), netns::exists(&local_ns(name))),
        (
            format!("pinned maps in {}", pin_dir(name).display()),
            pin_dir(name).join(MAP_RULES_V4).exists(),
        ),
        (
            format!("the guest (qemu pid {})", record.qemu_pid),
            vm::qemu::is_running(&files.pidfile),
        ),
    ];
    let missing: Vec<&str> = parts
        .iter()
        .filter(|(_, present)| !present)
        .map(|(what, _)| what.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "lab `{name}` is incomplete (missing: {}): `pmtu lab up --lab {name} --kernel {}` \
             rebuilds it",
            missing.join(", "),
            record.image
        );
    }
    Ok(Lab::new_vm(name, record))
}

/// Builds lab `name` (services chosen by PMTU_SERVICES), replacing a stale one of that name.
pub fn up(name: &str, mode: AttachMode) -> Result<Lab> {
    up_with(name, mode, &UpOptions::from_env()?)
}

/// [`up`] with explicit options. On failure, whatever was made is removed again.
pub fn up_with(name: &str, mode: AttachMode, options: &UpOptions) -> Result<Lab> {
    validate_name(name)?;
    let kind = options.services.resolve()?;
    replace_existing(name)?;
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

/// Builds lab `name` with REMOTE a qemu guest (`--kernel`), replacing a stale one of that name.
/// Bad input (no such image, no qemu) is refused before anything is made or removed; on a
/// later failure whatever was made is removed again. Progress lines (a first download) go to
/// stderr.
pub fn up_vm(name: &str, mode: AttachMode, options: &vm::VmOptions) -> Result<Lab> {
    validate_name(name)?;
    let kernel = vm::resolve_kernel(options, &mut |line| eprintln!("pmtu: {line}"))?;
    replace_existing(name)?;
    match build_vm(name, mode, options, kernel) {
        Ok(lab) => Ok(lab),
        Err(e) => {
            if let Err(cleanup) = down(name) {
                log::warn!("removing the half-built lab `{name}`: {cleanup:#}");
            }
            Err(e.context(format!("building lab `{name}`")))
        }
    }
}

fn replace_existing(name: &str) -> Result<()> {
    if exists(name) {
        log::info!("replacing the existing lab `{name}`");
        down(name).with_context(|| format!("removing the old lab `{name}` first"))?;
    }
    Ok(())
}

/// LOCAL's namespace with the sysctls both kinds of lab set.
fn local_namespace(lns: &str) -> Result<()> {
    netns::add(lns)?;
    // No DAD waits: the IPv6 addresses are usable at once. Set before any interface exists,
    // so the interfaces inherit `default`.
    write_sysctls(
        lns,
        &[
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv6/conf/default/accept_dad", "0"),
            // LOCAL is a router only through its XDP program: its own stack forwards nothing.
            ("net/ipv4/ip_forward", "0"),
            ("net/ipv6/conf/all/forwarding", "0"),
        ],
    )
}

/// LOCAL_IF's addresses and LOCAL's blackhole routes for the fake nets.
async fn configure_local(h: &rtnetlink::Handle, t: &Topology) -> Result<()> {
    set_up(h, "lo").await?;
    set_up(h, LOCAL_IF).await?;
    let index = link_index(h, LOCAL_IF).await?;
    add_address(h, index, t.local_addr.into(), LINK_PREFIX_V4).await?;
    add_address(h, index, t.local_addr6.into(), LINK_PREFIX_V6).await?;
    // LOCAL's own stack never answers for the fake host.
    add_route(h, IpNet::V4(t.fake_net), None, true).await?;
    add_route(h, IpNet::V6(t.fake_net6), None, true).await?;
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
    // The fake host's traffic is reported and dropped even between scenarios.
    responder.set_rule(IpNet::V4(t.fake_net), RuleSpec::observe())?;
    responder.set_rule(IpNet::V6(t.fake_net6), RuleSpec::observe())?;
    // The pinned links keep the programs attached.
    Ok(())
}

/// A VM lab: LOCAL's namespace with a tap as LOCAL_IF (the responder on it, natively: tun
/// supports XDP_TX without a program on the other side), and the guest on the tap.
fn build_vm(
    name: &str,
    mode: AttachMode,
    options: &vm::VmOptions,
    kernel: vm::Kernel,
) -> Result<Lab> {
    let lns = local_ns(name);
    let started = Instant::now();
    let step = |what: &str| log::debug!("lab `{name}`: {what} after {:?}", started.elapsed());
    local_namespace(&lns)?;
    vm::add_tap(Some(&lns), LOCAL_IF, &LOCAL_MAC)?;
    let t = plan::topology(name);
    netlink_in(&lns, move |h| async move { configure_local(&h, &t).await })
        .with_context(|| format!("configuring LOCAL (namespace `{lns}`)"))?;
    let lab = Lab::new(name, None);
    attach_responder(&lab, mode, None)?;
    step("namespace, tap, addresses, routes and XDP");
    let spec = vm::GuestSpec {
        options: options.clone(),
        kernel,
        netns: Some(lns.clone()),
        tap: LOCAL_IF.to_string(),
        net: plan::guest_net(),
        state_dir: lab.state_dir.clone(),
        cache: vm::image::cache_root(),
        accel: vm::AccelChoice::from_env()?,
        ready_timeout: vm::READY_TIMEOUT,
    };
    let guest = vm::Guest::boot(&spec)?;
    log::info!(
        "lab `{name}`: guest {} ready in {:.1} s (prepare {:.1} s, boot {:.1} s, ssh {:.1} s)",
        guest.record.release,
        started.elapsed().as_secs_f64(),
        guest.times.prepare.as_secs_f64(),
        guest.times.boot_to_ready.as_secs_f64(),
        guest.times.ssh_login.as_secs_f64()
    );
    let times = guest.times;
    let mut lab = Lab::new_vm(name, guest.detach());
    lab.vm_times = Some(times);
    Ok(lab)
}

fn build(name: &str, mode: AttachMode, kind: ServiceKind, options: &UpOptions) -> Result<Lab> {
    let mut lab = Lab::new(name, None);
    let (lns, rns) = (lab.local_ns(), lab.remote_ns());
    let t = lab.topology.clone();
    let started = Instant::now();
    let step = |what: &str| log::debug!("lab `{name}`: {what} after {:?}", started.elapsed());
    local_namespace(&lns)?;
    netns::add(&rns)?;
    write_sysctls(
        &rns,
        &[
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv6/conf/default/accept_dad", "0"),
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
    attach_responder(&lab, mode, Some((&rns, REMOTE_IF)))?;

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
    if let Err(e) = vm::stop_stale(&state) {
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

    pub fn up_vm(name: &str, mode: AttachMode, options: &vm::VmOptions) -> Result<Self> {
        Ok(Self {
            lab: up_vm(name, mode, options)?,
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
