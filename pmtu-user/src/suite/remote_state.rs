//! REMOTE's state, read and changed in its own OS's dialect: the route (and path MTU) toward
//! an address, neighbour entries, sysctls (set for a scenario and restored however it ends),
//! counters. No Linux command is ever run on an OpenBSD REMOTE.
use std::net::IpAddr;

use anyhow::{bail, Context as _, Result};

use super::{Ctx, ProfileName};

/// What REMOTE's routing table says about one destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// The path MTU REMOTE keeps for it, if any.
    pub mtu: Option<u32>,
    /// Linux's `mtu lock`: DF is cleared on packets toward it.
    pub locked: bool,
    /// Seconds until the path MTU expires, when REMOTE says.
    pub expires_s: Option<u32>,
    pub gateway: Option<String>,
    /// OpenBSD's route flags (`UP`, `GATEWAY`, `HOST`, `DYNAMIC`, `DONE`, ...).
    pub flags: Vec<String>,
    /// REMOTE's own words, for reports.
    pub text: String,
}

/// REMOTE's route toward `addr`: `ip route get` (Linux), `route -n get -host` (OpenBSD).
pub fn route_to(ctx: &Ctx, addr: IpAddr) -> Result<Route> {
    let a = addr.to_string();
    let text = match ctx.profile.name {
        ProfileName::Linux => ctx.remote("ip", &["route", "get", &a]),
        ProfileName::Openbsd => {
            let family = if addr.is_ipv4() { "-inet" } else { "-inet6" };
            ctx.remote("route", &["-n", "get", family, "-host", &a])
        }
    }
    .with_context(|| format!("reading REMOTE's route to {addr}"))?;
    Ok(match ctx.profile.name {
        ProfileName::Linux => parse_linux_route(&text),
        ProfileName::Openbsd => parse_openbsd_route(&text)?,
    })
}

/// `ip route get` output: `2001:db8:1::22 from :: via 2001:db8::1 dev pmtu1 src 2001:db8::2
/// metric 1024 expires 598sec mtu 1300 pref medium`, `... cache expires 598sec mtu lock 552`.
pub fn parse_linux_route(text: &str) -> Route {
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .copied()
    };
    let locked = after("mtu") == Some("lock");
    let mtu = if locked {
        words
            .iter()
            .position(|w| *w == "mtu")
            .and_then(|i| words.get(i + 2))
            .and_then(|v| v.parse().ok())
    } else {
        after("mtu").and_then(|v| v.parse().ok())
    };
    Route {
        mtu,
        locked,
        expires_s: after("expires").and_then(|v| v.trim_end_matches("sec").parse().ok()),
        gateway: after("via").map(str::to_string),
        flags: Vec::new(),
        text: text.trim().to_string(),
    }
}

/// `route -n get` output: `gateway: ...`, `flags: <UP,GATEWAY,HOST,DYNAMIC,DONE>`, then a
/// header `use mtu expire` and its values (mtu 0: none kept).
pub fn parse_openbsd_route(text: &str) -> Result<Route> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
    };
    let flags = field("flags")
        .map(|f| {
            f.trim_start_matches('<')
                .trim_end_matches('>')
                .split(',')
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut lines = text.lines();
    let Some(header) = lines
        .by_ref()
        .find(|l| l.split_whitespace().any(|w| w == "mtu"))
    else {
        bail!(
            "REMOTE's `route -n get` shows no mtu column: {}",
            text.trim()
        );
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    let values: Vec<&str> = lines
        .next()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let value = |name: &str| -> Option<u32> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Ok(Route {
        mtu: value("mtu").filter(|m| *m != 0),
        locked: false,
        expires_s: value("expire").filter(|e| *e != 0),
        gateway: field("gateway"),
        flags,
        text: text.trim().to_string(),
    })
}

/// Removes REMOTE's neighbour (ARP / NDP) entry for `addr`, a permanent one too (a lab's
/// REMOTE holds a permanent router entry for LOCAL_ADDR6); it must resolve it again.
pub fn forget_neighbour(ctx: &Ctx, addr: IpAddr) -> Result<()> {
    let a = addr.to_string();
    match ctx.profile.name {
        // Without `nud all`, flush leaves permanent entries alone.
        ProfileName::Linux => ctx.remote("ip", &["neigh", "flush", "to", &a, "nud", "all"]),
        ProfileName::Openbsd if addr.is_ipv6() => ctx.remote("ndp", &["-d", &a]),
        ProfileName::Openbsd => ctx.remote("arp", &["-d", &a]),
    }
    .with_context(|| format!("deleting REMOTE's neighbour entry for {addr}"))?;
    Ok(())
}

/// Reads a counter of REMOTE's network stack (Linux: `/proc/net/netstat` and `/proc/net/snmp`
/// names such as `TcpExtOutOfWindowIcmps`).
pub fn counter(ctx: &Ctx, name: &str) -> Result<u64> {
    if ctx.profile.name != ProfileName::Linux {
        bail!("no counter {name} on {:?}", ctx.profile.name);
    }
    let text = ctx
        .remote("cat", &["/proc/net/netstat", "/proc/net/snmp"])
        .context("reading REMOTE's network counters")?;
    parse_proc_counter(&text, name).with_context(|| format!("REMOTE has no counter {name}"))
}

/// Finds `TcpExtFoo` in /proc/net/netstat's pairs of lines (`TcpExt: ... Foo ...` then
/// `TcpExt: ... 3 ...`).
pub fn parse_proc_counter(text: &str, name: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.windows(2) {
        let (Some((prefix, names)), Some((prefix2, values))) =
            (pair[0].split_once(':'), pair[1].split_once(':'))
        else {
            continue;
        };
        if prefix != prefix2 || !name.starts_with(prefix) {
            continue;
        }
        let field = &name[prefix.len()..];
        // `Tcp:` (snmp) is a prefix of `TcpExt...` too: keep looking when it has no such field.
        if let Some(i) = names.split_whitespace().position(|n| n == field) {
            return values.split_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

/// Reads one of REMOTE's sysctls (`sysctl -n`, the same on Linux and OpenBSD).
pub fn read_sysctl(ctx: &Ctx, key: &str) -> Result<String> {
    Ok(ctx
        .remote("sysctl", &["-n", key])
        .with_context(|| format!("reading REMOTE's {key}"))?
        .trim()
        .to_string())
}

fn write_sysctl(ctx: &Ctx, key: &str, value: &str) -> Result<()> {
    let assignment = format!("{key}={value}");
    match ctx.profile.name {
        ProfileName::Linux => ctx.remote("sysctl", &["-qw", &assignment]),
        ProfileName::Openbsd => ctx.remote("sysctl", &[&assignment]),
    }
    .with_context(|| format!("setting REMOTE's {assignment}"))?;
    Ok(())
}

/// A sysctl of REMOTE set for one scenario; put back when dropped, however the scenario ends
/// (failure, Ctrl-C). Only on a REMOTE that is ours ([`Ctx::remote_is_ours`]).
pub struct SysctlChange<'a> {
    ctx: &'a Ctx,
    key: String,
    old: String,
}

impl<'a> SysctlChange<'a> {
    pub fn set(ctx: &'a Ctx, key: &str, value: &str) -> Result<Self> {
        if !ctx.remote_is_ours {
            bail!("REMOTE is not a lab's: its {key} is not the suite's to change");
        }
        let old = read_sysctl(ctx, key)?;
        write_sysctl(ctx, key, value)?;
        Ok(Self {
            ctx,
            key: key.to_string(),
            old,
        })
    }
}

impl Drop for SysctlChange<'_> {
    fn drop(&mut self) {
        if let Err(e) = write_sysctl(self.ctx, &self.key, &self.old) {
            log::warn!("putting REMOTE's {} back to {}: {e:#}", self.key, self.old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_routes_with_and_without_a_path_mtu() {
        let r = parse_linux_route(
            "2001:db8:1::22 from :: via 2001:db8::1 dev pmtu1 src 2001:db8::2 metric 1024 \
             expires 598sec mtu 1300 pref medium\n",
        );
        assert_eq!(r.mtu, Some(1300));
        assert!(!r.locked);
        assert_eq!(r.expires_s, Some(598));
        assert_eq!(r.gateway.as_deref(), Some("2001:db8::1"));
        let r = parse_linux_route(
            "198.51.100.22 via 192.0.2.1 dev pmtu1 src 192.0.2.2 uid 0 \n    cache expires 597sec mtu lock 552 \n",
        );
        assert_eq!((r.mtu, r.locked), (Some(552), true));
        let r = parse_linux_route(
            "198.51.100.22 via 192.0.2.1 dev pmtu1 src 192.0.2.2 uid 0 \n    cache \n",
        );
        assert_eq!((r.mtu, r.locked, r.expires_s), (None, false, None));
    }

    #[test]
    fn openbsd_routes_as_the_original_reads_them() {
        let text = "   route to: 2001:db8:1::22\ndestination: 2001:db8:1::22\n       mask: \
                    ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n    gateway: 2001:db8::1\n  \
                    interface: vio0\n if address: 2001:db8::2\n   priority: 56 ()\n      \
                    flags: <UP,GATEWAY,HOST,DYNAMIC,DONE>\n     use       mtu    expire\n       \
                    3      1300       596\n";
        let r = parse_openbsd_route(text).unwrap();
        assert_eq!(r.mtu, Some(1300));
        assert_eq!(r.expires_s, Some(596));
        assert_eq!(r.gateway.as_deref(), Some("2001:db8::1"));
        assert_eq!(r.flags, ["UP", "GATEWAY", "HOST", "DYNAMIC", "DONE"]);
        let net = text
            .replace("3      1300       596", "0         0         0")
            .replace("HOST,DYNAMIC,", "");
        let r = parse_openbsd_route(&net).unwrap();
        assert_eq!((r.mtu, r.expires_s), (None, None));
        assert!(parse_openbsd_route("route: writing to routing socket: No such process").is_err());
    }

    #[test]
    fn proc_counters_are_found_by_their_full_name() {
        let text = "Tcp: RtoAlgorithm RtoMin\nTcp: 1 200\nTcpExt: SyncookiesSent OutOfWindowIcmps LockDroppedIcmps\n\
                    TcpExt: 0 7 1\nIpExt: InNoRoutes OutOfWindowIcmps\nIpExt: 5 9\n";
        assert_eq!(parse_proc_counter(text, "TcpExtOutOfWindowIcmps"), Some(7));
        assert_eq!(parse_proc_counter(text, "IpExtInNoRoutes"), Some(5));
        assert_eq!(parse_proc_counter(text, "TcpExtNothing"), None);
        assert_eq!(parse_proc_counter(text, "TcpRtoMin"), Some(200));
    }
}
