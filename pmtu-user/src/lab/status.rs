//! `pmtu lab status`: what is there (namespaces, interfaces, routes with cached PMTUs,
//! services, XDP programs, rules, counters), read afresh, and what could not be read.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{bail, Result};
use futures::TryStreamExt as _;
use netlink_packet_route::{
    address::AddressAttribute,
    link::{LinkAttribute, LinkFlags, LinkXdp, XdpAttached},
    route::{RouteAddress, RouteAttribute, RouteMetric},
};
use pmtu_common::{Counter, RuleAction, MAP_RULES_V4};
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::Serialize;

use super::{
    exists, lock,
    plan::{self, local_ns, pin_dir, remote_ns, state_dir, validate_name, CHARGEN_PORT, ECHO_PORT},
    record::LabRecord,
    service::{is_ours, read_record, ServiceKind},
    unusable_reasons, vm,
};
use crate::{
    config::{format_mac, Mac, Topology},
    net::{netns, procfs::proc_stat, rtnl::netlink_in},
    xdp::responder::Responder,
};

/// What `pmtu lab status` reports; `--json` prints it as is.
#[derive(Debug, Serialize)]
pub struct LabStatus {
    pub name: String,
    /// Built to the end, every part there, interfaces up, services running: usable.
    pub complete: bool,
    /// Why it is not usable as it is (empty when `complete`).
    pub unusable: Vec<String>,
    /// Made by `pmtu run` for itself (removed at its end), not kept by `pmtu lab up`.
    pub temporary: bool,
    /// The process that built the lab, and whether it still runs.
    pub owner_pid: Option<i32>,
    pub owner_alive: bool,
    /// The process holding the lab's lock now (a run, `lab up` or `lab down`).
    pub in_use_by: Option<i32>,
    pub state_dir: PathBuf,
    pub topology: Topology,
    pub namespaces: Vec<NamespaceStatus>,
    pub service: Option<ServiceStatus>,
    /// REMOTE as a qemu guest (a VM lab).
    pub vm: Option<VmStatus>,
    pub rules: Vec<RuleStatus>,
    pub counters: Vec<CounterStatus>,
    /// What could not be read.
    pub problems: Vec<String>,
}

/// A VM lab's guest.
#[derive(Debug, Serialize)]
pub struct VmStatus {
    #[serde(flatten)]
    pub record: vm::VmRecord,
    /// qemu still runs.
    pub alive: bool,
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
    let record = vm::VmRecord::read(&state_dir(name)).ok().flatten();
    let topology = match &record {
        Some(r) => plan::vm_topology(name, &r.remote_ssh),
        None => plan::topology(name),
    };
    let vm = record.map(|record| VmStatus {
        alive: vm::qemu::is_running(&vm::Files::new(&state_dir(name)).pidfile),
        record,
    });
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
    let mut roles = vec![("LOCAL", local_ns(name))];
    if vm.is_none() {
        roles.push(("REMOTE", remote_ns(name)));
    }
    for (role, ns) in roles {
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
    let unusable = unusable_reasons(name);
    let complete = unusable.is_empty();
    let record = LabRecord::load(&state_dir(name)).ok().flatten();
    let (mut rules, mut counters) = (Vec::new(), Vec::new());
    if pins.join(MAP_RULES_V4).exists() {
        match Responder::open_pinned(&pins) {
            Ok(responder) => {
                rules = responder
                    .rules()
                    .into_iter()
                    .map(|(prefix, rule)| RuleStatus {
                        prefix: prefix.to_string(),
                        action: RuleAction::from_u8(rule.action)
                            .map(|a| a.name().to_string())
                            .unwrap_or_else(|| format!("unknown ({})", rule.action)),
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
        unusable,
        temporary: record.as_ref().is_some_and(|r| r.temporary),
        owner_pid: record.as_ref().map(|r| r.owner_pid),
        owner_alive: record.as_ref().is_some_and(|r| r.owner_alive()),
        in_use_by: lock::in_use_by(name),
        state_dir: state_dir(name),
        topology,
        namespaces,
        service,
        vm,
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
