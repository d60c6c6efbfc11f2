//! check-setup: the original suite's set-up checks (its `check-setup-local` and
//! `check-setup-remote`, about 34), plus what this suite needs besides (services answering
//! LOCAL, the XDP program). LOCAL is this Linux machine; REMOTE's checks are in its own OS's
//! words ([`remote_checks`]). Every check says what is wrong and how to fix it; the scenario
//! fails if any check does. The checks are independent and run at once.
use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::FutureExt as _;

use super::pmtu::CHARGEN_PORT;
use crate::{
    config::format_mac,
    net::{netns, rawsock},
    suite::{
        remote_checks::{remote_checks, run_remote_check},
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
    let mut checks = local_checks(ctx);
    for check in remote_checks(&ctx.topo, ctx.profile.name) {
        let name = check.name.clone();
        checks.push((name, Box::new(move || run_remote_check(ctx, &check))));
    }
    log::info!("Run {} set-up checks at once.", checks.len());
    let results = tokio::task::block_in_place(|| {
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
