//! check-setup: the original suite's set-up checks. Every check says what is wrong and how
//! to fix it; the scenario fails if any check does.
//!
//! Beyond the original, it guards against LOCAL set-ups that would make the other scenarios
//! blame REMOTE for LOCAL's doing ([`local_setup_problems`], which `pmtu run` also checks before
//! any scenario): the responder in generic (skb) mode, native XDP_TX on a veth whose peer has no
//! XDP program (the peer drops every ICMP answer), and frames larger than LOCAL_IF's MTU
//! reaching the responder (TSO/GSO super-frames, e.g. from a qemu tap with vnet headers).
use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::FutureExt as _;
use serde_json::Value;

use super::pmtu::CHARGEN_PORT;
use crate::{
    net::{netns, rawsock},
    suite::{tcp::FakeTcp, udp::ECHO_PORT, Ctx, Record, Scenario},
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

    for (name, result) in local_setup_checks(ctx, true).await {
        check(name, result);
    }

    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// LOCAL set-ups that would make scenarios FAIL for LOCAL's doing, each as "what: why and how to
/// fix it". `pmtu run` refuses to run scenarios while there is any.
pub async fn local_setup_problems(ctx: &Ctx) -> Vec<String> {
    local_setup_checks(ctx, false)
        .await
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e:#}")))
        .collect()
}

/// The checks behind [`local_setup_problems`]. With `strict`, a frame-size probe that cannot
/// run (chargen not answering) counts as a failure; otherwise only what it measures does (the
/// chargen check reports a silent chargen).
async fn local_setup_checks(ctx: &Ctx, strict: bool) -> Vec<(&'static str, Result<()>)> {
    let t = &ctx.topo;
    let link = match link_json(t.local_netns.as_deref(), Some(&t.local_if)) {
        Ok(mut links) if !links.is_empty() => links.swap_remove(0),
        Ok(_) | Err(_) => {
            return vec![(
                "xdp_mode",
                Err(anyhow!(
                    "cannot read LOCAL_IF {} with `ip -j -d link`",
                    t.local_if
                )),
            )]
        }
    };
    let modes = xdp_modes(&link);
    let mut out = Vec::new();
    out.push((
        "xdp_mode",
        if modes.contains(&XDP_MODE_SKB) {
            Err(anyhow!(
                "the responder runs in generic (skb) mode on LOCAL_IF {}: REMOTE's TSO/GSO \
                 super-frames reach it whole and its answers do not make REMOTE resend smaller \
                 (scenarios would blame REMOTE); attach it in native mode (--xdp-mode native)",
                t.local_if
            ))
        } else {
            Ok(())
        },
    ));
    let is_veth = link["linkinfo"]["info_kind"] == "veth";
    if is_veth && modes.contains(&XDP_MODE_DRV) {
        out.push((
            "veth_peer",
            veth_peer_has_xdp(t.local_netns.as_deref(), &link, &t.local_if),
        ));
    }
    let mtu = link["mtu"].as_u64().unwrap_or(1500);
    out.push(("frame_sizes", frame_sizes(ctx, mtu, strict).await));
    out
}

const XDP_MODE_DRV: u64 = 1;
const XDP_MODE_SKB: u64 = 2;

/// `ip -j -d link show [dev IF]` inside `ns`, parsed.
fn link_json(ns: Option<&str>, dev: Option<&str>) -> Result<Vec<Value>> {
    let mut args = vec!["-j", "-d", "link", "show"];
    if let Some(dev) = dev {
        args.extend(["dev", dev]);
    }
    let text = netns::run(ns, "ip", &args)?;
    serde_json::from_str(&text).context("parsing `ip -j link`")
}

/// The XDP attach modes on a link (1 native, 2 generic, 3 offloaded), as `ip -j` reports them.
fn xdp_modes(link: &Value) -> Vec<u64> {
    let xdp = &link["xdp"];
    match xdp["attached"].as_array() {
        Some(list) => list.iter().filter_map(|a| a["mode"].as_u64()).collect(),
        None => xdp["mode"].as_u64().into_iter().collect(),
    }
}

/// Native XDP_TX on a veth arrives only when the peer has an XDP program too.
fn veth_peer_has_xdp(ns: Option<&str>, link: &Value, local_if: &str) -> Result<()> {
    let Some(peer_index) = link["link_index"].as_u64() else {
        return Ok(());
    };
    // The peer is in this namespace, or in the one LOCAL's namespace knows by this id.
    let peer_ns = match link["link_netnsid"].as_u64() {
        None => ns.map(str::to_string),
        Some(id) => {
            let ids: Value =
                serde_json::from_str(&netns::run(ns, "ip", &["-j", "netns", "list-id"])?)
                    .context("parsing `ip -j netns list-id`")?;
            let name = ids.as_array().and_then(|l| {
                l.iter()
                    .find(|e| e["nsid"].as_u64() == Some(id))
                    .and_then(|e| e["name"].as_str().map(str::to_string))
            });
            match name {
                Some(n) => Some(n),
                None => {
                    log::warn!(
                        "LOCAL_IF {local_if} is a veth whose peer is in a namespace without a name: \
                         cannot check that the peer has an XDP program (native XDP_TX needs one)"
                    );
                    return Ok(());
                }
            }
        }
    };
    let peer = link_json(peer_ns.as_deref(), None)?
        .into_iter()
        .find(|l| l["ifindex"].as_u64() == Some(peer_index));
    let Some(peer) = peer else {
        return Ok(());
    };
    if xdp_modes(&peer).is_empty() {
        let name = peer["ifname"].as_str().unwrap_or("?");
        let where_ = peer_ns
            .map(|n| format!(" in namespace `{n}`"))
            .unwrap_or_default();
        bail!(
            "LOCAL_IF {local_if} is a veth in native XDP mode, and its peer {name}{where_} has no \
             XDP program: the peer drops every ICMP answer the responder sends (XDP_TX), so \
             REMOTE would seem to ignore them; attach one to the peer (`pmtu respond --peer`, \
             any program that passes), or use a tap"
        );
    }
    Ok(())
}

/// Reads chargen from the fake host (acknowledging, so that REMOTE's window opens) and checks
/// that no frame reaching the responder is larger than LOCAL_IF's MTU.
async fn frame_sizes(ctx: &Ctx, mtu: u64, strict: bool) -> Result<()> {
    const ENOUGH: u32 = 128 * 1024;
    let fake = ctx.fake(false);
    let remote = SocketAddr::new(ctx.remote_addr(false), CHARGEN_PORT);
    let mut tcp = match FakeTcp::connect(ctx, fake, remote).await {
        Ok(tcp) => tcp,
        Err(e) if strict => return Err(e.context("probing frame sizes")),
        Err(e) => {
            log::info!("frame-size probe skipped: {e:#}");
            return Ok(());
        }
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut largest, mut next) = (0u16, tcp.data_start);
    while next.wrapping_sub(tcp.data_start) < ENOUGH && u64::from(largest) <= mtu {
        let Some(ev) = tcp.flow.next_until(deadline).await else {
            break;
        };
        if !ev.is_tcp() || ev.payload_len() == 0 {
            continue;
        }
        largest = largest.max(ev.ip_len);
        if ev.seq == next {
            next = ev.seq_end();
            tcp.ack(next)?;
        }
    }
    tcp.reset()?;
    log::info!(
        "frame-size probe: {} bytes of chargen, largest packet {largest} (LOCAL_IF's MTU {mtu})",
        next.wrapping_sub(tcp.data_start)
    );
    if u64::from(largest) > mtu {
        bail!(
            "a {largest}-byte packet reached the responder, larger than LOCAL_IF's MTU {mtu}: \
             REMOTE's TSO/GSO super-frames reach it whole (generic XDP, or a tap with vnet \
             headers: qemu's `vnet_hdr=off`, or `ethtool -K IF tso off` on REMOTE), and the \
             scenarios would blame REMOTE for it"
        );
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
