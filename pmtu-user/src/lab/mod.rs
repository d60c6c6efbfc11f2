//! The built-in labs: LOCAL and REMOTE as two network namespaces of this machine.
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
//! (`services.log`) and inetd's configuration (`inetd/inetd.conf`).
//!
//! Only the namespaces themselves come from `ip netns add/delete` (through [`crate::net::netns`]):
//! iproute2 owns the /run/netns convention (a shared mount, one bind-mounted nsfs file per
//! namespace) that every other tool reads, and rtnetlink has no call for it.
pub mod bpffs;
pub mod plan;
pub mod service;
pub mod status;

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
        rtnl::{add_address, add_route, add_router_neighbour, link_index, netlink_in, set_up},
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
    // LOCAL is a router only through its XDP program: its own stack forwards nothing. But
    // LOCAL_IF (made below, so from `default`, set after `all`, which resets it) says it is a
    // router in its neighbour advertisements, as the router it plays would: Linux purges the
    // IPv6 path MTUs it learned through a gateway not flagged as a router whenever its route
    // garbage collection runs. What reaches LOCAL's stack for FAKE_NET6 still ends in the
    // blackhole route.
    write_sysctls(
        &lns,
        &[
            ("net/ipv4/ip_forward", "0"),
            ("net/ipv6/conf/all/forwarding", "0"),
            ("net/ipv6/conf/default/forwarding", "1"),
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
        // REMOTE knows LOCAL as an IPv6 router, as a router advertisement would tell it; when
        // the entry is deleted, LOCAL's neighbour advertisements say so again.
        add_router_neighbour(&h, index, t_remote.local_addr6.into(), &LOCAL_MAC).await?;
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
