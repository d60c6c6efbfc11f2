//! check-setup: the original suite's set-up checks. Every check says what is wrong and how
//! to fix it; the scenario fails if any check does.
use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use futures::FutureExt as _;

use super::pmtu::CHARGEN_PORT;
use crate::{
    net::{netns, rawsock},
    suite::{udp::ECHO_PORT, Ctx, Record, Scenario},
};

pub const SCENARIO: Scenario = Scenario {
    name: "check-setup",
    about: "LOCAL, REMOTE, routes and services are set up as the suite needs",
    run: |ctx, rec| run(ctx, rec).boxed(),
};

const WAIT: Duration = Duration::from_secs(1);

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let t = &ctx.topo;
    let local_ns = t.local_netns.clone();
    let mut problems: Vec<String> = Vec::new();
    let mut check = |name: &str, result: Result<()>| match result {
        Ok(()) => {
            log::info!("check {name}: ok");
            rec.measured(name, "ok");
        }
        Err(e) => {
            rec.measured(name, "FAIL");
            problems.push(format!("{name}: {e:#}"));
        }
    };

    check("local_mac", {
        let mac = ctx.sock.mac();
        if mac == t.local_mac {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "LOCAL_IF {} has MAC {}, LOCAL_MAC says {}: fix LOCAL_MAC",
                t.local_if,
                mac_text(mac),
                mac_text(t.local_mac)
            ))
        }
    });

    let (ns, dst4, dst6) = (local_ns.clone(), t.remote_addr, t.remote_addr6);
    let pings = tokio::task::spawn_blocking(move || {
        (
            rawsock::ping(ns.as_deref(), dst4.into(), WAIT),
            rawsock::ping(ns.as_deref(), dst6.into(), WAIT),
        )
    })
    .await?;
    check(
        "remote_reachable",
        pings.0.map(|_| ()).with_context(|| {
            format!(
                "REMOTE_ADDR {} does not answer ping from LOCAL_IF",
                t.remote_addr
            )
        }),
    );
    check(
        "remote_reachable6",
        pings.1.map(|_| ()).with_context(|| {
            format!(
                "REMOTE_ADDR6 {} does not answer ping from LOCAL_IF",
                t.remote_addr6
            )
        }),
    );

    let neigh = ctx
        .local(
            "ip",
            &[
                "neigh",
                "show",
                &t.remote_addr.to_string(),
                "dev",
                &t.local_if,
            ],
        )
        .unwrap_or_default();
    let remote_mac = if neigh.contains(&mac_text(t.remote_mac)) {
        Ok(())
    } else if !neigh.contains("lladdr") {
        Err(anyhow::anyhow!(
            "LOCAL has not resolved REMOTE_ADDR's MAC (`{}`): is REMOTE on LOCAL_IF's link?",
            neigh.trim()
        ))
    } else {
        Err(anyhow::anyhow!(
            "LOCAL's neighbour entry for REMOTE_ADDR is `{}`, REMOTE_MAC says {}: fix REMOTE_MAC",
            neigh.trim(),
            mac_text(t.remote_mac)
        ))
    };
    check("remote_mac", remote_mac);

    for (key, fake, hint) in [
        (
            "local_fake_route",
            t.fake_net_addr.to_string(),
            format!("ip route add blackhole {}", t.fake_net),
        ),
        (
            "local_fake_route6",
            t.fake_net_addr6.to_string(),
            format!("ip -6 route add blackhole {}", t.fake_net6),
        ),
    ] {
        let route = ctx.local("ip", &["route", "get", &fake]);
        check(key, match route {
            Err(_) => Ok(()),
            Ok(r) if r.contains("blackhole") || r.contains("unreachable") || r.contains("prohibit") => Ok(()),
            Ok(r) => Err(anyhow::anyhow!(
                "LOCAL routes the fake host ({}) instead of black-holing it, so LOCAL's own stack could answer for it: `{hint}` on LOCAL",
                r.trim()
            )),
        });
    }

    for (key, fake, gw, net) in [
        (
            "remote_fake_route",
            t.fake_net_addr.to_string(),
            t.local_addr.to_string(),
            t.fake_net.to_string(),
        ),
        (
            "remote_fake_route6",
            t.fake_net_addr6.to_string(),
            t.local_addr6.to_string(),
            t.fake_net6.to_string(),
        ),
    ] {
        let route = ctx
            .remote("ip", &["route", "get", &fake])
            .unwrap_or_default();
        check(
            key,
            if route.contains(&format!("via {gw} ")) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                "REMOTE does not route {net} via LOCAL ({gw}): it has `{}`; add `ip route add {net} via {gw}` on REMOTE",
                route.trim()
            ))
            },
        );
    }

    for addr in [IpAddr::from(t.remote_addr), IpAddr::from(t.remote_addr6)] {
        let ns = local_ns.clone();
        let target = SocketAddr::new(addr, CHARGEN_PORT);
        let r = tokio::task::spawn_blocking(move || chargen_answers(ns.as_deref(), target)).await?;
        check(
            if addr.is_ipv4() {
                "chargen"
            } else {
                "chargen6"
            },
            r,
        );
    }
    for addr in [IpAddr::from(t.remote_addr), IpAddr::from(t.remote_addr6)] {
        let ns = local_ns.clone();
        let target = SocketAddr::new(addr, ECHO_PORT);
        let r = tokio::task::spawn_blocking(move || echo_answers(ns.as_deref(), target)).await?;
        check(if addr.is_ipv4() { "echo" } else { "echo6" }, r);
    }

    let link = ctx
        .local("ip", &["link", "show", "dev", &t.local_if])
        .unwrap_or_default();
    check(
        "xdp_attached",
        if link.contains("xdp") {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "no XDP program on LOCAL_IF {}: `pmtu lab up` (lab) or `pmtu run` attaches it",
                t.local_if
            ))
        },
    );

    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

fn chargen_answers(ns: Option<&str>, target: SocketAddr) -> Result<()> {
    let mut stream = netns::run_in(ns, || {
        TcpStream::connect_timeout(&target, WAIT).with_context(|| {
            format!("chargen on tcp {target} does not accept connections: start it on REMOTE (inetd `chargen stream tcp nowait root internal`, tcp6 too)")
        })
    })?;
    stream.set_read_timeout(Some(WAIT))?;
    let mut buf = [0u8; 74];
    stream
        .read_exact(&mut buf)
        .with_context(|| format!("chargen on tcp {target} accepted but sent no line"))?;
    Ok(())
}

fn echo_answers(ns: Option<&str>, target: SocketAddr) -> Result<()> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .context("bind address")?;
    let sock = netns::run_in(ns, || Ok(UdpSocket::bind(bind)?))?;
    sock.set_read_timeout(Some(WAIT))?;
    sock.send_to(b"pmtu check-setup", target)?;
    let mut buf = [0u8; 64];
    sock.recv_from(&mut buf).with_context(|| {
        format!("echo on udp {target} does not answer: start it on REMOTE (inetd `echo dgram udp wait root internal`, udp6 too)")
    })?;
    Ok(())
}
