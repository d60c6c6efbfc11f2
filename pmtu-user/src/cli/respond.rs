//! `pmtu respond`: the responder alone on an interface, printing what it sees until Ctrl-C.
//! Useful by itself to emulate a small-MTU hop in front of any host.
use std::{
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{bail, Context as _, Result};
use ipnet::IpNet;
use pmtu_common::Counter;

use pmtu::{
    net::netns,
    signals,
    xdp::{
        events::PacketEvent,
        responder::{parse_rule, AttachMode, Responder},
    },
};

use super::require_root;

#[derive(clap::Args, Debug)]
pub struct RespondArgs {
    /// Interface to attach to (LOCAL_IF).
    #[arg(long, short)]
    pub iface: String,
    /// Network namespace the interface is in (default: this process's).
    #[arg(long)]
    pub netns: Option<String>,
    /// PREFIX=MTU[,action=answer|blackhole|observe][,budget=N][,limit=N][,pass]; repeatable.
    /// `limit` answers packets longer than N (default: MTU) while announcing MTU.
    /// `pass` delivers packets that are not answered instead of dropping them (a real hop).
    #[arg(long = "rule", short, required = true)]
    pub rules: Vec<String>,
    /// Source of the ICMP errors for IPv4 (default: the interface's first IPv4 address).
    #[arg(long)]
    pub router4: Option<Ipv4Addr>,
    /// Source of the ICMPv6 errors (default: the interface's first global IPv6 address).
    #[arg(long)]
    pub router6: Option<Ipv6Addr>,
    /// Accept MTUs below 68 (IPv4) / 1280 (IPv6), to see how a host handles them.
    #[arg(long)]
    pub allow_below_minimum: bool,
    /// The other end of a veth: gets the pass-through XDP program, without which native XDP_TX
    /// frames sent on a veth are dropped.
    #[arg(long)]
    pub peer: Option<String>,
    /// Network namespace of --peer (default: --netns).
    #[arg(long, requires = "peer")]
    pub peer_netns: Option<String>,
    /// Print only the counters at the end, not every packet.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The first IPv4 and global IPv6 address of `iface` inside `ns`.
fn iface_addrs(ns: Option<&str>, iface: &str) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    netns::run_in(ns, || {
        let mut v4 = None;
        let mut v6 = None;
        let mut found = false;
        for ifa in nix::ifaddrs::getifaddrs().context("listing interface addresses")? {
            if ifa.interface_name != iface {
                continue;
            }
            found = true;
            let Some(addr) = ifa.address else { continue };
            if let Some(a) = addr.as_sockaddr_in() {
                v4.get_or_insert(a.ip());
            } else if let Some(a) = addr.as_sockaddr_in6() {
                let ip = a.ip();
                if !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                    v6.get_or_insert(ip);
                }
            }
        }
        if !found {
            let where_ = ns
                .map(|n| format!(" in namespace `{n}`"))
                .unwrap_or_default();
            bail!("no interface `{iface}`{where_}: check the name with `ip link`");
        }
        Ok((v4, v6))
    })
}

/// Whether `iface` is a veth (by its driver, as `ethtool -i` reports it).
fn is_veth(ns: Option<&str>, iface: &str) -> bool {
    netns::run(ns, "ethtool", &["-i", iface]).is_ok_and(|out| out.contains("driver: veth"))
}

pub async fn cli(args: RespondArgs, mode: AttachMode) -> Result<()> {
    let rules: Vec<(IpNet, _)> = args
        .rules
        .iter()
        .map(|r| parse_rule(r, args.allow_below_minimum))
        .collect::<Result<_>>()?;
    require_root("pmtu respond")?;
    let ns = args.netns.as_deref();
    for n in [ns, args.peer_netns.as_deref()].into_iter().flatten() {
        if !netns::exists(n) {
            bail!("network namespace `{n}` does not exist (see `ip netns list`)");
        }
    }
    let (own4, own6) = iface_addrs(ns, &args.iface)?;
    let needs4 = rules.iter().any(|(p, _)| matches!(p, IpNet::V4(_)));
    let needs6 = rules.iter().any(|(p, _)| matches!(p, IpNet::V6(_)));
    let router4 = match (args.router4, own4) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) if needs4 => bail!(
            "`{}` has no IPv4 address to send ICMP from; give one with --router4",
            args.iface
        ),
        (None, None) => Ipv4Addr::UNSPECIFIED,
    };
    let router6 = match (args.router6, own6) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) if needs6 => bail!(
            "`{}` has no global IPv6 address to send ICMPv6 from; give one with --router6",
            args.iface
        ),
        (None, None) => Ipv6Addr::UNSPECIFIED,
    };

    let mut responder = Responder::load(None)?;
    responder.set_routers(router4, router6)?;
    for (prefix, spec) in &rules {
        responder.set_rule(*prefix, *spec)?;
    }
    let mut events = responder.take_events()?;
    responder.attach(ns, &args.iface, mode)?;
    if let Some(peer) = &args.peer {
        responder.attach_pass(args.peer_netns.as_deref().or(ns), peer)?;
    } else if mode == AttachMode::Native && is_veth(ns, &args.iface) {
        eprintln!(
            "pmtu respond: warning: `{}` is a veth; its peer drops native XDP_TX frames (the ICMP \
             answers) unless it has an XDP program too: give --peer (and --peer-netns)",
            args.iface
        );
    }
    eprintln!(
        "pmtu respond: XDP ({mode:?}) on {}{}, ICMP from {router4} / {router6}; {} rule(s); Ctrl-C to stop",
        args.iface,
        ns.map(|n| format!(" in {n}")).unwrap_or_default(),
        rules.len()
    );
    for (prefix, spec) in &rules {
        eprintln!(
            "  {prefix}: mtu {} {:?}{}{}",
            spec.mtu,
            spec.action,
            if spec.budget > 0 {
                format!(", budget {}", spec.budget)
            } else {
                String::new()
            },
            if spec.pass { ", pass" } else { "" }
        );
    }

    let mut batch = Vec::new();
    let stop = signals::stop();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = events.next_batch(&mut batch) => {
                r?;
                if !args.quiet {
                    // A closed pipe must not panic past the detach below.
                    let mut out = std::io::stdout().lock();
                    for ev in batch.drain(..) {
                        let _ = writeln!(out, "{}", PacketEvent::from(&ev));
                    }
                    let _ = out.flush();
                }
                batch.clear();
            }
            _ = &mut stop => break,
        }
    }
    let counters = responder.counters()?;
    let text: Vec<String> = Counter::ALL
        .iter()
        .map(|c| format!("{}={}", c.name(), counters[*c as usize]))
        .collect();
    eprintln!("pmtu respond: detaching; counters: {}", text.join(" "));
    drop(responder);
    Ok(())
}
