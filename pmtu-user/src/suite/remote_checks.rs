//! The original's set-up checks of REMOTE (its `check-setup-remote`), each in REMOTE's own OS's
//! words: OpenBSD's are the original's commands (`route -n get`, `arp -na`, `ndp -na`,
//! `netstat`, `pfctl`); Linux's are their iproute2 equivalents. No Linux command is ever run on
//! an OpenBSD REMOTE.
use std::{collections::HashMap, net::IpAddr};

use anyhow::{bail, Context as _, Result};

use super::{Ctx, ProfileName};
use crate::config::{format_mac, Mac, Topology};

/// What a check runs on REMOTE and what it wants to see.
enum Probe {
    /// The command succeeds (a ping that is answered).
    Succeeds(Vec<String>),
    /// Some line of the command's output passes the test (the original's `grep -q`).
    Line(Vec<String>, Box<dyn Fn(&str) -> bool + Send + Sync>),
    /// Linux: the interface holding the address has the MAC.
    LinuxMacOf(IpAddr, Mac),
    /// Linux: the neighbour entry for the address (resolved by a ping) is flagged as a router.
    LinuxRouterNeighbour(IpAddr),
}

/// One check: its name (a key of check-setup's record), what it runs, and what to do when it
/// fails.
pub struct RemoteCheck {
    pub name: String,
    probe: Probe,
    fix: String,
}

fn words(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|w| w.to_string()).collect()
}

fn succeeds(name: &str, argv: &[&str], fix: String) -> RemoteCheck {
    RemoteCheck {
        name: name.to_string(),
        probe: Probe::Succeeds(words(argv)),
        fix,
    }
}

fn line(
    name: &str,
    argv: &[&str],
    test: impl Fn(&str) -> bool + Send + Sync + 'static,
    fix: String,
) -> RemoteCheck {
    RemoteCheck {
        name: name.to_string(),
        probe: Probe::Line(words(argv), Box::new(test)),
        fix,
    }
}

/// `flags: <...LOCAL...>`, `gateway: ADDR`: a line of `route -n get` (OpenBSD).
fn route_field(field: &'static str, want: String) -> impl Fn(&str) -> bool + Send + Sync {
    move |l: &str| {
        l.trim().strip_prefix(field).is_some_and(|rest| {
            let rest = rest.trim_start_matches(':').trim();
            if field == "flags" {
                rest.trim_matches(|c| c == '<' || c == '>')
                    .split(',')
                    .any(|f| f == want)
            } else {
                rest == want
            }
        })
    }
}

/// A line whose whitespace-separated words include every one of `want`.
fn has_words(want: Vec<String>) -> impl Fn(&str) -> bool + Send + Sync {
    move |l: &str| {
        let w: Vec<&str> = l.split_whitespace().collect();
        want.iter().all(|x| w.contains(&x.as_str()))
    }
}

/// An `ss -Hl` line whose local address (4th column) is one of `any`.
fn listens_on(any: Vec<String>) -> impl Fn(&str) -> bool + Send + Sync {
    move |l: &str| {
        l.split_whitespace()
            .nth(3)
            .is_some_and(|local| any.iter().any(|a| a == local))
    }
}

/// Every check of REMOTE for this profile, in the original's order.
pub fn remote_checks(t: &Topology, profile: ProfileName) -> Vec<RemoteCheck> {
    let mut checks = Vec::new();
    for v6 in [false, true] {
        let (sfx, remote, local, net, fake): (&str, IpAddr, IpAddr, String, IpAddr) = if v6 {
            (
                "6",
                t.remote_addr6.into(),
                t.local_addr6.into(),
                t.fake_net6.to_string(),
                t.fake_net_addr6.into(),
            )
        } else {
            (
                "",
                t.remote_addr.into(),
                t.local_addr.into(),
                t.fake_net.to_string(),
                t.fake_net_addr.into(),
            )
        };
        let (r, l, f) = (remote.to_string(), local.to_string(), fake.to_string());
        let net_addr = net.split('/').next().unwrap_or_default().to_string();
        let mac = format_mac(&t.remote_mac);
        let route_fix = match profile {
            ProfileName::Linux => format!(
                "REMOTE does not route {net} via LOCAL_ADDR{sfx} {l}: `ip route add {net} via {l}` on REMOTE"
            ),
            ProfileName::Openbsd => format!(
                "REMOTE does not route {net} via LOCAL_ADDR{sfx} {l}: `route add -inet{sfx} {net} {l}` on REMOTE"
            ),
        };
        match profile {
            ProfileName::Linux => {
                checks.push(succeeds(
                    &format!("remote_ping_self{sfx}"),
                    &["ping", "-n", "-c", "1", "-W", "1", &r],
                    format!("REMOTE cannot ping its own {r}: is the address up?"),
                ));
                checks.push(line(
                    &format!("remote_addr{sfx}_local"),
                    &["ip", "route", "get", &r],
                    |l| l.starts_with("local "),
                    format!("{r} is not a local address of REMOTE: set REMOTE_ADDR{sfx}"),
                ));
                checks.push(RemoteCheck {
                    name: format!("remote_addr{sfx}_mac"),
                    probe: Probe::LinuxMacOf(remote, t.remote_mac),
                    fix: format!("REMOTE's interface with {r} is not {mac}: set REMOTE_MAC"),
                });
                checks.push(succeeds(
                    &format!("remote_ping_local{sfx}"),
                    &["ping", "-n", "-c", "1", "-W", "1", &l],
                    format!("REMOTE cannot ping LOCAL_ADDR{sfx} {l}"),
                ));
                if v6 {
                    checks.push(RemoteCheck {
                        name: "remote_gateway6_router".into(),
                        probe: Probe::LinuxRouterNeighbour(local),
                        fix: format!(
                            "REMOTE does not see LOCAL_ADDR6 {l} as a router, so Linux drops the \
                             path MTUs it learns through it at its next route garbage \
                             collection: `sysctl net.ipv6.conf.{}.forwarding=1` on LOCAL",
                            t.local_if
                        ),
                    });
                }
                for (key, dst) in [
                    ("remote_route_fake_net", &net_addr),
                    ("remote_fake_route", &f),
                ] {
                    checks.push(line(
                        &format!("{key}{sfx}"),
                        &["ip", "route", "get", dst],
                        has_words(vec!["via".into(), l.clone()]),
                        route_fix.clone(),
                    ));
                }
            }
            ProfileName::Openbsd => {
                let (ping, family, table) = if v6 {
                    ("ping6", "-inet6", "ndp")
                } else {
                    ("ping", "-inet", "arp")
                };
                checks.push(succeeds(
                    &format!("remote_ping_self{sfx}"),
                    &[ping, "-n", "-c", "1", &r],
                    format!("REMOTE cannot ping its own {r}: is the address up?"),
                ));
                checks.push(line(
                    &format!("remote_addr{sfx}_local"),
                    &["route", "-n", "get", family, &r],
                    route_field("flags", "LOCAL".into()),
                    format!("{r} is not a local address of REMOTE: set REMOTE_ADDR{sfx}"),
                ));
                let (addr, want_mac) = (r.clone(), mac.clone());
                checks.push(line(
                    &format!("remote_addr{sfx}_mac"),
                    &[table, "-na"],
                    move |l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        w.first() == Some(&addr.as_str())
                            && w.contains(&want_mac.as_str())
                            && w.contains(&"permanent")
                    },
                    format!("REMOTE's {table} table has no permanent {r} at {mac}: set REMOTE_MAC"),
                ));
                checks.push(succeeds(
                    &format!("remote_ping_local{sfx}"),
                    &[ping, "-n", "-c", "1", &l],
                    format!("REMOTE cannot ping LOCAL_ADDR{sfx} {l}"),
                ));
                for (key, dst) in [("remote_route_fake_net", &net), ("remote_fake_route", &f)] {
                    checks.push(line(
                        &format!("{key}{sfx}"),
                        &["route", "-n", "get", family, dst],
                        route_field("gateway", l.clone()),
                        route_fix.clone(),
                    ));
                }
            }
        }
    }
    checks.extend(listener_checks(t, profile));
    checks
}

/// REMOTE's chargen (tcp 19) and echo (udp 7) sockets, both families; pf on OpenBSD.
fn listener_checks(t: &Topology, profile: ProfileName) -> Vec<RemoteCheck> {
    let mut checks = Vec::new();
    for (service, tcp, port) in [("chargen", true, 19), ("echo", false, 7)] {
        for v6 in [false, true] {
            let sfx = if v6 { "6" } else { "" };
            let name = format!("remote_{service}{sfx}_listens");
            let fix = format!(
                "nothing on REMOTE listens on {} port {port}{}: start {service} there (inetd)",
                if tcp { "tcp" } else { "udp" },
                if v6 { " for IPv6" } else { "" }
            );
            match profile {
                ProfileName::Linux => {
                    let any: Vec<String> = if v6 {
                        vec![
                            format!("[::]:{port}"),
                            format!("*:{port}"),
                            format!("[{}]:{port}", t.remote_addr6),
                        ]
                    } else {
                        vec![
                            format!("0.0.0.0:{port}"),
                            format!("*:{port}"),
                            format!("{}:{port}", t.remote_addr),
                        ]
                    };
                    let ss = if tcp { "-Hltn" } else { "-Hlun" };
                    checks.push(line(&name, &["ss", ss], listens_on(any), fix));
                }
                ProfileName::Openbsd => {
                    let family = if v6 { "inet6" } else { "inet" };
                    let proto = if tcp { "tcp" } else { "udp" };
                    checks.push(line(
                        &name,
                        &["netstat", "-na", "-f", family, "-p", proto],
                        has_words(vec![format!("*.{port}")]),
                        fix,
                    ));
                }
            }
        }
    }
    if profile == ProfileName::Openbsd {
        checks.push(line(
            "remote_pf_anchor",
            &["pfctl", "-sr"],
            |l| l.trim() == "anchor \"regress\" all",
            "REMOTE's pf ruleset has no `anchor \"regress\" all`: add it to pf.conf".into(),
        ));
        checks.push(line(
            "remote_pf_enabled",
            &["pfctl", "-si"],
            |l| l.starts_with("Status: Enabled "),
            "pf is not enabled on REMOTE: `pfctl -e`".into(),
        ));
    }
    checks
}

/// The output of every plain command the checks run, fetched in one round trip to REMOTE
/// (over ssh, one command each costs a round trip: across a real network or into a slow guest
/// that adds up). Only commands that succeeded are kept: a check whose command failed runs it
/// again alone, so that its error is that command's own.
#[derive(Default)]
pub struct Prefetched(HashMap<Vec<String>, String>);

const BEGIN: &str = "@@pmtu-check-begin";
const END: &str = "@@pmtu-check-end";

/// Runs the plain commands of `checks` on REMOTE as one script, one after the other.
pub fn prefetch(ctx: &Ctx, checks: &[RemoteCheck]) -> Prefetched {
    let mut argvs: Vec<&Vec<String>> = Vec::new();
    for check in checks {
        if let Probe::Succeeds(argv) | Probe::Line(argv, _) = &check.probe {
            if !argvs.contains(&argv) {
                argvs.push(argv);
            }
        }
    }
    let script: String = argvs
        .iter()
        .enumerate()
        .map(|(i, argv)| {
            format!(
                "printf '{BEGIN} {i}\\n'; {} </dev/null 2>/dev/null; rc=$?; printf '\\n{END} {i} %d\\n' \"$rc\"\n",
                shell_words::join(argv.iter())
            )
        })
        .collect();
    match ctx.remote_script(&script) {
        Ok(out) => Prefetched(parse_batch(&out, &argvs)),
        Err(e) => {
            log::debug!("the checks' batch failed, each runs alone: {e:#}");
            Prefetched::default()
        }
    }
}

/// The outputs of the commands that exited 0, by command, from the batch's marked output.
fn parse_batch(out: &str, argvs: &[&Vec<String>]) -> HashMap<Vec<String>, String> {
    let mut found = HashMap::new();
    let mut current: Option<(usize, String)> = None;
    for line in out.lines() {
        if let Some(i) = line.strip_prefix(BEGIN).and_then(|r| r.trim().parse().ok()) {
            current = Some((i, String::new()));
        } else if let Some(rest) = line.strip_prefix(END) {
            let mut words = rest.split_whitespace().map(str::parse::<usize>);
            if let (Some((i, text)), Some(Ok(j)), Some(Ok(0))) =
                (current.take(), words.next(), words.next())
            {
                if let (true, Some(argv)) = (i == j, argvs.get(i)) {
                    found.insert((*argv).clone(), text);
                }
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    found
}

/// Runs one check on REMOTE; the error says what was seen and how to fix it.
pub fn run_remote_check(ctx: &Ctx, check: &RemoteCheck, pre: &Prefetched) -> Result<()> {
    let run = |argv: &[String]| -> Result<String> {
        if let Some(out) = pre.0.get(argv) {
            return Ok(out.clone());
        }
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        ctx.remote(&argv[0], &args)
    };
    match &check.probe {
        Probe::Succeeds(argv) => {
            run(argv).with_context(|| check.fix.clone())?;
        }
        Probe::Line(argv, test) => {
            let out = run(argv).with_context(|| check.fix.clone())?;
            if !out.lines().any(test) {
                bail!(
                    "{}: `{}` on REMOTE says `{}`",
                    check.fix,
                    argv.join(" "),
                    out.trim().lines().take(3).collect::<Vec<_>>().join(" / ")
                );
            }
        }
        Probe::LinuxMacOf(addr, mac) => {
            let a = addr.to_string();
            let out = ctx.remote("ip", &["-o", "addr", "show", "to", &a])?;
            let Some(dev) = out.split_whitespace().nth(1) else {
                bail!("{}: no interface of REMOTE has {a}", check.fix);
            };
            let dev = dev.split('@').next().unwrap_or(dev).to_string();
            let link = ctx.remote("ip", &["-o", "link", "show", "dev", &dev])?;
            let want = format!("link/ether {}", format_mac(mac));
            if !link.contains(&want) {
                bail!("{}: REMOTE's {dev} is `{}`", check.fix, link.trim());
            }
        }
        Probe::LinuxRouterNeighbour(addr) => {
            let a = addr.to_string();
            ctx.remote("ping", &["-n", "-c", "1", "-W", "1", &a])?;
            let neigh = ctx.remote("ip", &["neigh", "show", &a])?;
            if !neigh.split_whitespace().any(|w| w == "router") {
                bail!(
                    "{}: REMOTE's neighbour entry is `{}`",
                    check.fix,
                    neigh.trim()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_the_output_of_each_command_that_succeeded() {
        let a = words(&["ip", "route"]);
        let b = words(&["ping", "-c", "1", "192.0.2.1"]);
        let c = words(&["ss", "-Hl"]);
        let out = format!(
            "{BEGIN} 0\ndefault via 192.0.2.1\n198.51.100.0/24 via 192.0.2.1\n\n{END} 0 0\n\
             {BEGIN} 1\n\n{END} 1 1\n{BEGIN} 2\nudp UNCONN 0 0 0.0.0.0:7\n{END} 1 0\n"
        );
        let found = parse_batch(&out, &[&a, &b, &c]);
        assert_eq!(
            found.get(&a).map(String::as_str),
            Some("default via 192.0.2.1\n198.51.100.0/24 via 192.0.2.1\n\n")
        );
        assert!(
            !found.contains_key(&b),
            "a failed command must run again alone"
        );
        assert!(
            !found.contains_key(&c),
            "an end marker of another command ends nothing"
        );
    }

    fn topo() -> Topology {
        Topology::from_lookup(|name| {
            Some(
                match name {
                    "LOCAL_IF" => "pmtu0",
                    "LOCAL_MAC" => "02:00:00:00:00:01",
                    "REMOTE_MAC" => "02:00:00:00:00:02",
                    "LOCAL_ADDR" => "192.0.2.1",
                    "REMOTE_ADDR" => "192.0.2.2",
                    "FAKE_NET" => "198.51.100.0/24",
                    "FAKE_NET_ADDR" => "198.51.100.22",
                    "LOCAL_ADDR6" => "2001:db8::1",
                    "REMOTE_ADDR6" => "2001:db8::2",
                    "FAKE_NET6" => "2001:db8:1::/64",
                    "FAKE_NET_ADDR6" => "2001:db8:1::22",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .unwrap()
    }

    fn argv(c: &RemoteCheck) -> Vec<String> {
        match &c.probe {
            Probe::Succeeds(a) | Probe::Line(a, _) => a.clone(),
            Probe::LinuxMacOf(..) | Probe::LinuxRouterNeighbour(_) => vec!["ip".into()],
        }
    }

    #[test]
    fn openbsd_checks_are_the_originals_and_never_linux_commands() {
        let checks = remote_checks(&topo(), ProfileName::Openbsd);
        assert_eq!(checks.len(), 18, "the original checks REMOTE 18 times");
        for c in &checks {
            let a = argv(c);
            assert!(
                ["ping", "ping6", "route", "arp", "ndp", "netstat", "pfctl"]
                    .contains(&a[0].as_str()),
                "{}: {a:?}",
                c.name
            );
        }
        let find = |n: &str| checks.iter().find(|c| c.name == n).unwrap();
        let Probe::Line(a, test) = &find("remote_fake_route6").probe else {
            panic!()
        };
        assert_eq!(a.join(" "), "route -n get -inet6 2001:db8:1::22");
        assert!(test("    gateway: 2001:db8::1"));
        assert!(!test("    gateway: 2001:db8::10"));
        let Probe::Line(_, test) = &find("remote_addr_mac").probe else {
            panic!()
        };
        assert!(test("192.0.2.2  02:00:00:00:00:02 vio0 permanent l"));
        assert!(!test("192.0.2.2  02:00:00:00:00:02 vio0 19m59s"));
        let Probe::Line(_, test) = &find("remote_addr_local").probe else {
            panic!()
        };
        assert!(test("      flags: <UP,HOST,DONE,LLINFO,LOCAL>"));
        let Probe::Line(_, test) = &find("remote_echo6_listens").probe else {
            panic!()
        };
        assert!(test("udp          0      0  *.7                    *.*"));
        assert!(!test("udp          0      0  *.77                   *.*"));
    }

    #[test]
    fn linux_checks_use_iproute2_and_ss() {
        let checks = remote_checks(&topo(), ProfileName::Linux);
        for c in &checks {
            let a = argv(c);
            assert!(
                ["ping", "ip", "ss"].contains(&a[0].as_str()),
                "{}: {a:?}",
                c.name
            );
        }
        let find = |n: &str| checks.iter().find(|c| c.name == n).unwrap();
        let Probe::Line(_, test) = &find("remote_chargen6_listens").probe else {
            panic!()
        };
        assert!(test("LISTEN 0      128       [::]:19    [::]:*"));
        assert!(!test("LISTEN 0      128    0.0.0.0:19 0.0.0.0:*"));
        let Probe::Line(_, test) = &find("remote_route_fake_net").probe else {
            panic!()
        };
        assert!(test(
            "198.51.100.0 via 192.0.2.1 dev pmtu1 src 192.0.2.2 uid 0"
        ));
        assert!(!test("198.51.100.0 dev pmtu1 src 192.0.2.2 uid 0"));
    }
}
