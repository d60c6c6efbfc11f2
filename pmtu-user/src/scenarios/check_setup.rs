//! check-setup: the original suite's set-up checks (its `check-setup-local` and
//! `check-setup-remote`, about 34), plus what this suite needs besides (services answering
//! LOCAL, the XDP program). LOCAL is this Linux machine; REMOTE's checks are in its own OS's
//! words ([`remote_checks`]). Every check says what is wrong and how to fix it; the scenario
//! fails if any check does. The checks are independent and run at once.
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

use super::chargen;
use super::pmtu::CHARGEN_PORT;
use crate::{
    config::format_mac,
    net::{netns, rawsock},
    suite::{
        remote_checks::{prefetch, remote_checks, run_remote_check},
        tcp::FakeTcp,
        udp::ECHO_PORT,
        Ctx, Record, Scenario,
    },
};

pub const SCENARIO: Scenario = Scenario {
    name: "check-setup",
    about: "LOCAL, REMOTE, routes and services are set up as the suite needs",
    run: |ctx, rec| run(ctx, rec).boxed(),
    alone: false,
};

const WAIT: Duration = Duration::from_secs(1);
/// A ping to the fake host must go unanswered; with LOCAL's blackhole route it fails at once.
const SILENCE: Duration = Duration::from_millis(200);

type Check<'a> = (String, Box<dyn FnOnce() -> Result<()> + Send + 'a>);

async fn run(ctx: &Ctx, rec: &mut Record) -> Result<()> {
    let remote = remote_checks(&ctx.topo, ctx.profile.name);
    let pre = prefetch(ctx, &remote);
    let pre = &pre;
    let mut checks = local_checks(ctx);
    for check in remote {
        let name = check.name.clone();
        checks.push((name, Box::new(move || run_remote_check(ctx, &check, pre))));
    }
    log::info!("Run {} set-up checks at once.", checks.len());
    let mut results = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let running: Vec<_> = checks
                .into_iter()
                .map(|(name, f)| (name, s.spawn(f)))
                .collect();
            running
                .into_iter()
                .map(|(name, h)| {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(anyhow!("the check panicked")));
                    (name, r)
                })
                .collect::<Vec<_>>()
        })
    });
    // The guards against LOCAL set-ups that would make scenarios blame REMOTE (they talk to
    // REMOTE through the responder, so they run after the others).
    for (name, result) in local_setup_checks(ctx, true).await {
        results.push((name.to_string(), result));
    }
    let mut problems = Vec::new();
    for (name, result) in results {
        match result {
            Ok(()) => {
                log::info!("check {name}: ok");
                rec.measured(&name, "ok");
            }
            Err(e) => {
                rec.measured(&name, "FAIL");
                problems.push(format!("{name}: {e:#}"));
            }
        }
    }
    rec.measured("checks", rec.measured.len() as u64);
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
    xdp_attached(link)
        .filter_map(|a| a["mode"].as_u64())
        .collect()
}

/// Each XDP attachment of a link: `ip -j` lists several under `attached`, or describes the one
/// in `xdp` itself.
fn xdp_attached(link: &Value) -> impl Iterator<Item = &Value> {
    let xdp = &link["xdp"];
    match xdp["attached"].as_array() {
        Some(list) => list.iter().collect::<Vec<_>>(),
        None if xdp.is_object() => vec![xdp],
        None => Vec::new(),
    }
    .into_iter()
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
    if xdp_programs(&peer).contains(&pmtu_common::PROG_COUNT) {
        let name = peer["ifname"].as_str().unwrap_or("?");
        bail!(
            "the peer {name} of LOCAL_IF {local_if} runs `{}`, the responder benchmark's counter, \
             which drops every ICMP answer (a benchmark was killed before it put the \
             pass-through program back): rebuild the lab (`pmtu lab down`, then `pmtu lab up`)",
            pmtu_common::PROG_COUNT
        );
    }
    Ok(())
}

/// The names of the XDP programs attached to a link, as `ip -j -d` reports them.
fn xdp_programs(link: &Value) -> Vec<&str> {
    xdp_attached(link)
        .filter_map(|a| a["prog"]["name"].as_str())
        .collect()
}

/// Reads chargen from the fake host (acknowledging, so that REMOTE's window opens) and checks
/// that no frame reaching the responder is larger than LOCAL_IF's MTU.
async fn frame_sizes(ctx: &Ctx, mtu: u64, strict: bool) -> Result<()> {
    const ENOUGH: u32 = 128 * 1024;
    let fake = ctx.fake(false);
    let remote = chargen(ctx, false);
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

/// A line of LOCAL's `ip` output has all these words.
fn local_ip_has(ctx: &Ctx, args: &[&str], want: &[&str]) -> Result<String> {
    let out = ctx.local("ip", args)?;
    let ok = out.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        want.iter().all(|x| w.contains(x))
    });
    if ok {
        Ok(out)
    } else {
        Err(anyhow!(
            "`ip {}` on LOCAL says `{}`",
            args.join(" "),
            out.trim()
        ))
    }
}

/// The original's `check-setup-local`, on LOCAL (always Linux), and this suite's own needs.
fn local_checks(ctx: &Ctx) -> Vec<Check<'_>> {
    let t = &ctx.topo;
    let ns = t.local_netns.as_deref();
    let mut checks: Vec<Check<'_>> = Vec::new();
    add(
        &mut checks,
        "local_mac",
        Box::new(move || {
            let mac = ctx.sock.mac();
            if mac == t.local_mac {
                return Ok(());
            }
            bail!(
                "LOCAL_IF {} has MAC {}, LOCAL_MAC says {}: fix LOCAL_MAC",
                t.local_if,
                format_mac(&mac),
                format_mac(&t.local_mac)
            )
        }),
    );
    for v6 in [false, true] {
        let sfx = if v6 { "6" } else { "" };
        let (local, remote, fake): (IpAddr, IpAddr, IpAddr) = if v6 {
            (
                t.local_addr6.into(),
                t.remote_addr6.into(),
                t.fake_net_addr6.into(),
            )
        } else {
            (
                t.local_addr.into(),
                t.remote_addr.into(),
                t.fake_net_addr.into(),
            )
        };
        let net = if v6 {
            t.fake_net6.to_string()
        } else {
            t.fake_net.to_string()
        };
        add(
            &mut checks,
            &format!("local_ping_self{sfx}"),
            Box::new(move || {
                rawsock::ping(ns, local, WAIT).map(|_| ()).with_context(|| {
                    format!("LOCAL_ADDR{sfx} {local} does not answer ping on LOCAL")
                })
            }),
        );
        add(
            &mut checks,
            &format!("local_addr{sfx}_local"),
            Box::new(move || {
                let out = ctx.local("ip", &["route", "get", &local.to_string()])?;
                if out.starts_with("local ") {
                    return Ok(());
                }
                bail!(
                    "LOCAL_ADDR{sfx} {local} is not LOCAL's own address: `{}`",
                    out.trim()
                )
            }),
        );
        add(
            &mut checks,
            &format!("local_addr{sfx}_on_local_if"),
            Box::new(move || {
                let out = ctx.local("ip", &["-o", "addr", "show", "dev", &t.local_if])?;
                let prefix = format!("{local}/");
                if out.split_whitespace().any(|w| w.starts_with(&prefix)) {
                    return Ok(());
                }
                bail!(
                    "LOCAL_IF {} does not have LOCAL_ADDR{sfx} {local}: add it",
                    t.local_if
                )
            }),
        );
        add(
            &mut checks,
            &format!("remote_reachable{sfx}"),
            Box::new(move || {
                rawsock::ping(ns, remote, WAIT)
                    .map(|_| ())
                    .with_context(|| {
                        format!("REMOTE_ADDR{sfx} {remote} does not answer ping from LOCAL_IF")
                    })
            }),
        );
        add(
            &mut checks,
            &format!("remote{sfx}_via_local_if"),
            Box::new(move || {
                local_ip_has(
                    ctx,
                    &["route", "get", &remote.to_string()],
                    &["dev", &t.local_if],
                )
                .map(|_| ())
                .with_context(|| {
                    format!(
                        "LOCAL does not reach {remote} through LOCAL_IF {}",
                        t.local_if
                    )
                })
            }),
        );
        add(
            &mut checks,
            &format!("remote_mac{sfx}"),
            Box::new(move || remote_mac(ctx, remote)),
        );
        add(
            &mut checks,
            &format!("fake{sfx}_silent"),
            Box::new(move || {
                match rawsock::ping(ns, fake, SILENCE) {
                Err(_) => Ok(()),
                Ok(_) => bail!(
                    "FAKE_NET_ADDR{sfx} {fake} answers ping: it must not exist (LOCAL's own stack or a real host answers for it)"
                ),
            }
            }),
        );
        let (net1, net2) = (net.clone(), net);
        add(
            &mut checks,
            &format!("local_fake_route{sfx}"),
            Box::new(move || {
                let route = ctx.local("ip", &["route", "get", &fake.to_string()]);
                match route {
                    Err(_) => Ok(()),
                    Ok(r) if is_blackhole(&r) => Ok(()),
                    Ok(r) => bail!(
                        "LOCAL routes the fake host ({}) instead of black-holing it, so LOCAL's own stack could answer for it: `ip route add blackhole {net1}` on LOCAL",
                        r.trim()
                    ),
                }
            }),
        );
        add(
            &mut checks,
            &format!("local_fake_net{sfx}_blackhole"),
            Box::new(move || {
                let family = if v6 { "-6" } else { "-4" };
                let out = ctx.local("ip", &[family, "route", "show", "exact", &net2])?;
                if is_blackhole(&out) {
                    return Ok(());
                }
                bail!("LOCAL has no blackhole route for all of {net2} (`{}`): `ip route add blackhole {net2}` on LOCAL", out.trim())
            }),
        );
        add(
            &mut checks,
            if v6 { "chargen6" } else { "chargen" },
            Box::new(move || chargen_answers(ns, SocketAddr::new(remote, CHARGEN_PORT))),
        );
        add(
            &mut checks,
            if v6 { "echo6" } else { "echo" },
            Box::new(move || echo_answers(ns, SocketAddr::new(remote, ECHO_PORT))),
        );
    }
    add(
        &mut checks,
        "xdp_attached",
        Box::new(move || {
            let link = ctx.local("ip", &["link", "show", "dev", &t.local_if])?;
            if link.contains("xdp") {
                return Ok(());
            }
            bail!(
                "no XDP program on LOCAL_IF {}: `pmtu lab up` (lab) or `pmtu run` attaches it",
                t.local_if
            )
        }),
    );
    checks
}

fn add<'a>(
    checks: &mut Vec<Check<'a>>,
    name: &str,
    f: Box<dyn FnOnce() -> Result<()> + Send + 'a>,
) {
    checks.push((name.to_string(), f));
}

fn is_blackhole(route: &str) -> bool {
    ["blackhole", "unreachable", "prohibit"]
        .iter()
        .any(|k| route.contains(k))
}

/// LOCAL's neighbour entry for `remote` (resolved by the ping before it, or now) is REMOTE_MAC.
fn remote_mac(ctx: &Ctx, remote: IpAddr) -> Result<()> {
    let t = &ctx.topo;
    let want = format_mac(&t.remote_mac);
    let show = || {
        ctx.local(
            "ip",
            &["neigh", "show", &remote.to_string(), "dev", &t.local_if],
        )
        .unwrap_or_default()
    };
    let mut neigh = show();
    if !neigh.contains("lladdr") {
        // Not resolved yet: one ping resolves it.
        let _ = rawsock::ping(t.local_netns.as_deref(), remote, WAIT);
        neigh = show();
    }
    if neigh.contains(&want) {
        Ok(())
    } else if !neigh.contains("lladdr") {
        bail!(
            "LOCAL has not resolved {remote}'s MAC (`{}`): is REMOTE on LOCAL_IF's link?",
            neigh.trim()
        )
    } else {
        bail!(
            "LOCAL's neighbour entry for {remote} is `{}`, REMOTE_MAC says {want}: fix REMOTE_MAC",
            neigh.trim()
        )
    }
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
