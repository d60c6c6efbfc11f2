//! The one configuration type: LOCAL, REMOTE and the fake net, for labs and real remotes alike.
//!
//! The variables keep the original suite's names (LOCAL_IF ... FAKE_NET_ADDR6), so a setup
//! written for it works here unchanged. A lab fills them in itself (`lab::plan`); for a
//! real REMOTE the user sets them in the environment ([`Topology::from_env`]).
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{bail, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Serialize, Serializer};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Every variable of the original suite, in its order.
pub const VARS: [&str; 12] = [
    "LOCAL_IF",
    "LOCAL_MAC",
    "REMOTE_MAC",
    "REMOTE_SSH",
    "LOCAL_ADDR",
    "REMOTE_ADDR",
    "FAKE_NET",
    "FAKE_NET_ADDR",
    "LOCAL_ADDR6",
    "REMOTE_ADDR6",
    "FAKE_NET6",
    "FAKE_NET_ADDR6",
];

/// Variables that may stay unset: how to log in on REMOTE, and the namespaces of a lab.
pub const OPTIONAL_VARS: [&str; 3] = ["REMOTE_SSH", "LOCAL_NETNS", "REMOTE_NETNS"];

/// LOCAL (this machine, the router), REMOTE (the kernel under test) and the fake net behind
/// LOCAL that does not exist. Serialized with the variables' names as keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Topology {
    /// LOCAL's interface toward REMOTE.
    pub local_if: String,
    #[serde(serialize_with = "serialize_mac")]
    pub local_mac: Mac,
    #[serde(serialize_with = "serialize_mac")]
    pub remote_mac: Mac,
    /// How to log in on REMOTE (`user@host`, ssh options) to read and change its routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ssh: Option<String>,
    pub local_addr: Ipv4Addr,
    pub remote_addr: Ipv4Addr,
    #[serde(serialize_with = "serialize_display")]
    pub fake_net: Ipv4Net,
    pub fake_net_addr: Ipv4Addr,
    pub local_addr6: Ipv6Addr,
    pub remote_addr6: Ipv6Addr,
    #[serde(serialize_with = "serialize_display")]
    pub fake_net6: Ipv6Net,
    pub fake_net_addr6: Ipv6Addr,
    /// The network namespace LOCAL_IF lives in (labs); `None`: this process's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_netns: Option<String>,
    /// The network namespace REMOTE is (labs); `None`: REMOTE is another machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_netns: Option<String>,
}

impl Topology {
    /// Reads the variables from the environment. Fails when any is missing or malformed, with
    /// one line per bad value.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Topology::from_env`], but `None` when none of the variables is set (then a lab
    /// supplies the configuration).
    pub fn from_env_if_set() -> Result<Option<Self>> {
        Self::from_lookup_if_set(|name| std::env::var(name).ok())
    }

    /// [`Topology::from_env_if_set`] over any source of variables.
    pub fn from_lookup_if_set(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let any = VARS
            .iter()
            .chain(OPTIONAL_VARS.iter())
            .any(|name| lookup(name).is_some_and(|v| !v.trim().is_empty()));
        if any {
            Self::from_lookup(lookup).map(Some)
        } else {
            Ok(None)
        }
    }

    /// [`Topology::from_env`] over any source of variables (an empty value counts as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut r = Reader {
            lookup,
            problems: Vec::new(),
        };
        let missing: Vec<&str> = VARS
            .iter()
            .copied()
            .filter(|name| *name != "REMOTE_SSH" && r.get(name).is_none())
            .collect();
        if !missing.is_empty() {
            let (list, verb) = match missing.as_slice() {
                [one] => (one.to_string(), "is"),
                more => (more.join(", "), "are"),
            };
            r.problems.push(format!(
                "{list} {verb} not set: a real REMOTE needs all of LOCAL_IF LOCAL_MAC REMOTE_MAC \
                 LOCAL_ADDR REMOTE_ADDR FAKE_NET FAKE_NET_ADDR LOCAL_ADDR6 REMOTE_ADDR6 FAKE_NET6 \
                 FAKE_NET_ADDR6 (REMOTE_SSH is optional); a lab needs none of them (unset them \
                 all and `pmtu` builds its own lab)"
            ));
        }
        let v4 = |v: &str| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| "not an IPv4 address (like 192.0.2.1)".to_string())
        };
        let v6 = |v: &str| {
            v.parse::<Ipv6Addr>()
                .map_err(|_| "not an IPv6 address (like 2001:db8::1)".to_string())
        };
        let local_if = r.parse("LOCAL_IF", |v| check_ifname(v).map(|()| v.to_string()));
        let local_mac = r.parse("LOCAL_MAC", parse_mac);
        let remote_mac = r.parse("REMOTE_MAC", parse_mac);
        let remote_ssh = r.get("REMOTE_SSH");
        let local_addr = r.parse("LOCAL_ADDR", v4);
        let remote_addr = r.parse("REMOTE_ADDR", v4);
        let fake_net = r.parse("FAKE_NET", |v| {
            v.parse::<Ipv4Net>()
                .map(|n| n.trunc())
                .map_err(|_| "not an IPv4 prefix (like 198.51.100.0/24)".to_string())
        });
        let fake_net_addr = r.parse("FAKE_NET_ADDR", v4);
        let local_addr6 = r.parse("LOCAL_ADDR6", v6);
        let remote_addr6 = r.parse("REMOTE_ADDR6", v6);
        let fake_net6 = r.parse("FAKE_NET6", |v| {
            v.parse::<Ipv6Net>()
                .map(|n| n.trunc())
                .map_err(|_| "not an IPv6 prefix (like 2001:db8:1::/64)".to_string())
        });
        let fake_net_addr6 = r.parse("FAKE_NET_ADDR6", v6);
        let local_netns = r.get("LOCAL_NETNS");
        let remote_netns = r.get("REMOTE_NETNS");

        let (
            Some(local_if),
            Some(local_mac),
            Some(remote_mac),
            Some(local_addr),
            Some(remote_addr),
            Some(fake_net),
            Some(fake_net_addr),
            Some(local_addr6),
            Some(remote_addr6),
            Some(fake_net6),
            Some(fake_net_addr6),
        ) = (
            local_if,
            local_mac,
            remote_mac,
            local_addr,
            remote_addr,
            fake_net,
            fake_net_addr,
            local_addr6,
            remote_addr6,
            fake_net6,
            fake_net_addr6,
        )
        else {
            bail!("{}", r.problems.join("\n"));
        };
        let topology = Topology {
            local_if,
            local_mac,
            remote_mac,
            remote_ssh,
            local_addr,
            remote_addr,
            fake_net,
            fake_net_addr,
            local_addr6,
            remote_addr6,
            fake_net6,
            fake_net_addr6,
            local_netns,
            remote_netns,
        };
        let problems = topology.consistency_problems();
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        Ok(topology)
    }

    /// What does not fit together: the fake host outside the fake net, the fake net overlapping
    /// the link, LOCAL and REMOTE sharing an address, group MACs.
    pub fn consistency_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.fake_net.contains(&self.fake_net_addr) {
            out.push(format!(
                "FAKE_NET_ADDR {} is not inside FAKE_NET {}",
                self.fake_net_addr, self.fake_net
            ));
        }
        // A host address: not the network's broadcast address nor its network address (the
        // fake host would be answered by everyone, or be no host at all). /31 and /32 have none.
        if self.fake_net.prefix_len() < 31 {
            for (addr, what) in [
                (self.fake_net.broadcast(), "broadcast"),
                (self.fake_net.network(), "network"),
            ] {
                if self.fake_net_addr == addr {
                    out.push(format!(
                        "FAKE_NET_ADDR {} is FAKE_NET {}'s {what} address: pick a host address, \
                         e.g. {}",
                        self.fake_net_addr,
                        self.fake_net,
                        self.fake_net
                            .hosts()
                            .nth(21)
                            .unwrap_or(self.fake_net.network())
                    ));
                }
            }
        }
        if !self.fake_net6.contains(&self.fake_net_addr6) {
            out.push(format!(
                "FAKE_NET_ADDR6 {} is not inside FAKE_NET6 {}",
                self.fake_net_addr6, self.fake_net6
            ));
        }
        let hosts = [
            (
                "FAKE_NET",
                IpNet::V4(self.fake_net),
                ("LOCAL_ADDR", IpAddr::V4(self.local_addr)),
                ("REMOTE_ADDR", IpAddr::V4(self.remote_addr)),
            ),
            (
                "FAKE_NET6",
                IpNet::V6(self.fake_net6),
                ("LOCAL_ADDR6", IpAddr::V6(self.local_addr6)),
                ("REMOTE_ADDR6", IpAddr::V6(self.remote_addr6)),
            ),
        ];
        for (net_name, net, local, remote) in hosts {
            for (name, addr) in [local, remote] {
                if net.contains(&addr) {
                    out.push(format!(
                        "{net_name} {net} contains {name} {addr}: the fake net must be one that does not exist"
                    ));
                }
            }
            if local.1 == remote.1 {
                out.push(format!(
                    "{} and {} are both {}: they are two different hosts",
                    local.0, remote.0, local.1
                ));
            }
        }
        for (name, mac) in [
            ("LOCAL_MAC", self.local_mac),
            ("REMOTE_MAC", self.remote_mac),
        ] {
            if mac[0] & 1 != 0 {
                out.push(format!(
                    "{name} {}: a multicast address, not an interface's",
                    MacDisplay(&mac)
                ));
            }
        }
        out
    }

    /// `NAME=value` lines, one per set variable, in the original's order (then LOCAL_NETNS and
    /// REMOTE_NETNS); values a shell would split are single-quoted, so the lines can be sourced.
    pub fn to_env_lines(&self) -> Vec<String> {
        let mut vars: Vec<(&str, Option<String>)> = vec![
            ("LOCAL_IF", Some(self.local_if.clone())),
            ("LOCAL_MAC", Some(format_mac(&self.local_mac))),
            ("REMOTE_MAC", Some(format_mac(&self.remote_mac))),
            ("REMOTE_SSH", self.remote_ssh.clone()),
            ("LOCAL_ADDR", Some(self.local_addr.to_string())),
            ("REMOTE_ADDR", Some(self.remote_addr.to_string())),
            ("FAKE_NET", Some(self.fake_net.to_string())),
            ("FAKE_NET_ADDR", Some(self.fake_net_addr.to_string())),
            ("LOCAL_ADDR6", Some(self.local_addr6.to_string())),
            ("REMOTE_ADDR6", Some(self.remote_addr6.to_string())),
            ("FAKE_NET6", Some(self.fake_net6.to_string())),
            ("FAKE_NET_ADDR6", Some(self.fake_net_addr6.to_string())),
        ];
        vars.push(("LOCAL_NETNS", self.local_netns.clone()));
        vars.push(("REMOTE_NETNS", self.remote_netns.clone()));
        vars.into_iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name}={}", shell_quote(&v))))
            .collect()
    }
}

/// Reads variables, recording one problem per bad value instead of stopping at the first.
struct Reader<F> {
    lookup: F,
    problems: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn parse<T>(&mut self, name: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let value = self.get(name)?;
        parse(&value)
            .map_err(|why| self.problems.push(format!("{name}='{value}': {why}")))
            .ok()
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (one or two hex digits per byte).
pub fn parse_mac(text: &str) -> Result<Mac, String> {
    let bad = || "not a MAC address (six hex bytes like 02:00:00:00:00:01)".to_string();
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next().ok_or_else(bad)?;
        if part.is_empty() || part.len() > 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    MacDisplay(mac).to_string()
}

/// Displays a MAC as `aa:bb:cc:dd:ee:ff`.
pub struct MacDisplay<'a>(pub &'a Mac);

impl fmt::Display for MacDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Linux interface names: 1 to 15 bytes, no `/`, `:` or white space.
fn check_ifname(name: &str) -> Result<(), String> {
    if name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(
            "not an interface name (at most 15 characters, no '/', ':' or spaces)".to_string(),
        );
    }
    Ok(())
}

fn shell_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

fn serialize_mac<S: Serializer>(mac: &Mac, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&MacDisplay(mac))
}

fn serialize_display<T: fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn good() -> HashMap<&'static str, String> {
        [
            ("LOCAL_IF", "tap0"),
            ("LOCAL_MAC", "fe:e1:ba:d0:d5:6f"),
            ("REMOTE_MAC", "70:5f:ca:21:8d:70"),
            ("REMOTE_SSH", "qemu"),
            ("LOCAL_ADDR", "192.0.2.21"),
            ("REMOTE_ADDR", "192.0.2.22"),
            ("FAKE_NET", "198.51.100.0/24"),
            ("FAKE_NET_ADDR", "198.51.100.188"),
            ("LOCAL_ADDR6", "2001:db8::21"),
            ("REMOTE_ADDR6", "2001:db8::22"),
            ("FAKE_NET6", "2001:db8:1::/64"),
            ("FAKE_NET_ADDR6", "2001:db8:1::188"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
    }

    fn parse(vars: &HashMap<&'static str, String>) -> Result<Topology> {
        Topology::from_lookup(|name| vars.get(name).cloned())
    }

    fn error_with(name: &'static str, value: &str) -> String {
        let mut vars = good();
        vars.insert(name, value.to_string());
        parse(&vars).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_variable() {
        let t = parse(&good()).unwrap();
        assert_eq!(t.local_if, "tap0");
        assert_eq!(t.local_mac, [0xfe, 0xe1, 0xba, 0xd0, 0xd5, 0x6f]);
        assert_eq!(t.remote_mac, [0x70, 0x5f, 0xca, 0x21, 0x8d, 0x70]);
        assert_eq!(t.remote_ssh.as_deref(), Some("qemu"));
        assert_eq!(t.local_addr, Ipv4Addr::new(192, 0, 2, 21));
        assert_eq!(t.remote_addr, Ipv4Addr::new(192, 0, 2, 22));
        assert_eq!(t.fake_net.to_string(), "198.51.100.0/24");
        assert_eq!(t.fake_net_addr, Ipv4Addr::new(198, 51, 100, 188));
        assert_eq!(t.local_addr6.to_string(), "2001:db8::21");
        assert_eq!(t.remote_addr6.to_string(), "2001:db8::22");
        assert_eq!(t.fake_net6.to_string(), "2001:db8:1::/64");
        assert_eq!(t.fake_net_addr6.to_string(), "2001:db8:1::188");
        assert_eq!(t.local_netns, None);
        assert_eq!(t.remote_netns, None);
    }

    #[test]
    fn optional_and_namespace_variables() {
        let mut vars = good();
        vars.remove("REMOTE_SSH");
        vars.insert("LOCAL_NETNS", "a-local".into());
        vars.insert("REMOTE_NETNS", "a-remote".into());
        let t = parse(&vars).unwrap();
        assert_eq!(t.remote_ssh, None);
        assert_eq!(t.local_netns.as_deref(), Some("a-local"));
        assert_eq!(t.remote_netns.as_deref(), Some("a-remote"));
        // Empty counts as unset; surrounding blanks are ignored.
        vars.insert("REMOTE_SSH", String::new());
        vars.insert("LOCAL_IF", " tap0 ".into());
        let t = parse(&vars).unwrap();
        assert_eq!(t.remote_ssh, None);
        assert_eq!(t.local_if, "tap0");
    }

    #[test]
    fn host_bits_of_a_prefix_are_dropped() {
        let mut vars = good();
        vars.insert("FAKE_NET", "198.51.100.7/24".into());
        assert_eq!(
            parse(&vars).unwrap().fake_net.to_string(),
            "198.51.100.0/24"
        );
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:01"), Ok([2, 0, 0, 0, 0, 1]));
        assert_eq!(parse_mac("2:0:0:A:b:ff"), Ok([2, 0, 0, 10, 11, 255]));
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02:00:00:00:00:100",
            "02-00-00-00-00-01",
            "02:00:00:00:00:g1",
            "02::00:00:00:01",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert_eq!(format_mac(&[2, 0, 0, 10, 11, 255]), "02:00:00:0a:0b:ff");
    }

    #[test]
    fn every_bad_value_has_its_message() {
        for (name, value, says) in [
            ("LOCAL_MAC", "00:11:22:33:44", "LOCAL_MAC='00:11:22:33:44': not a MAC address (six hex bytes like 02:00:00:00:00:01)"),
            ("REMOTE_MAC", "zz:11:22:33:44:55", "REMOTE_MAC='zz:11:22:33:44:55': not a MAC address"),
            ("LOCAL_IF", "a-very-long-interface", "LOCAL_IF='a-very-long-interface': not an interface name"),
            ("LOCAL_IF", "tap/0", "not an interface name"),
            ("LOCAL_ADDR", "192.0.2.300", "LOCAL_ADDR='192.0.2.300': not an IPv4 address"),
            ("REMOTE_ADDR", "2001:db8::2", "REMOTE_ADDR='2001:db8::2': not an IPv4 address"),
            ("FAKE_NET", "198.51.100.0/33", "FAKE_NET='198.51.100.0/33': not an IPv4 prefix"),
            ("FAKE_NET", "198.51.100/24", "FAKE_NET='198.51.100/24': not an IPv4 prefix"),
            ("FAKE_NET_ADDR", "nowhere", "FAKE_NET_ADDR='nowhere': not an IPv4 address"),
            ("LOCAL_ADDR6", "192.0.2.1", "LOCAL_ADDR6='192.0.2.1': not an IPv6 address"),
            ("REMOTE_ADDR6", "2001:db8:::2", "REMOTE_ADDR6='2001:db8:::2': not an IPv6 address"),
            ("FAKE_NET6", "2001:db8:1::/129", "FAKE_NET6='2001:db8:1::/129': not an IPv6 prefix"),
            ("FAKE_NET_ADDR6", "x", "FAKE_NET_ADDR6='x': not an IPv6 address"),
            ("FAKE_NET_ADDR", "203.0.113.5", "FAKE_NET_ADDR 203.0.113.5 is not inside FAKE_NET 198.51.100.0/24"),
            ("FAKE_NET_ADDR6", "2001:db8:2::5", "FAKE_NET_ADDR6 2001:db8:2::5 is not inside FAKE_NET6 2001:db8:1::/64"),
            ("FAKE_NET", "192.0.2.0/24", "FAKE_NET 192.0.2.0/24 contains LOCAL_ADDR 192.0.2.21"),
            ("FAKE_NET6", "2001:db8::/32", "FAKE_NET6 2001:db8::/32 contains REMOTE_ADDR6 2001:db8::22"),
            ("REMOTE_ADDR", "192.0.2.21", "LOCAL_ADDR and REMOTE_ADDR are both 192.0.2.21"),
            ("REMOTE_ADDR6", "2001:db8::21", "LOCAL_ADDR6 and REMOTE_ADDR6 are both 2001:db8::21"),
            ("LOCAL_MAC", "01:00:5e:00:00:01", "LOCAL_MAC 01:00:5e:00:00:01: a multicast address"),
            ("FAKE_NET_ADDR", "198.51.100.255", "FAKE_NET_ADDR 198.51.100.255 is FAKE_NET 198.51.100.0/24's broadcast address"),
            ("FAKE_NET_ADDR", "198.51.100.0", "FAKE_NET_ADDR 198.51.100.0 is FAKE_NET 198.51.100.0/24's network address"),
        ] {
            let err = error_with(name, value);
            assert!(err.contains(says), "{name}={value}: {err}");
        }
    }

    #[test]
    fn reports_all_bad_values_at_once() {
        let mut vars = good();
        vars.insert("LOCAL_MAC", "nope".into());
        vars.insert("FAKE_NET6", "nope".into());
        let err = parse(&vars).unwrap_err().to_string();
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(
            err.contains("LOCAL_MAC='nope'") && err.contains("FAKE_NET6='nope'"),
            "{err}"
        );
    }

    #[test]
    fn missing_variables_are_named() {
        let mut vars = good();
        vars.remove("REMOTE_ADDR");
        let err = parse(&vars).unwrap_err().to_string();
        assert!(
            err.starts_with("REMOTE_ADDR is not set: a real REMOTE needs all of"),
            "{err}"
        );
        assert!(err.contains("a lab needs none of them"), "{err}");
        vars.remove("LOCAL_MAC");
        let err = parse(&vars).unwrap_err().to_string();
        assert!(
            err.starts_with("LOCAL_MAC, REMOTE_ADDR are not set"),
            "{err}"
        );
        // REMOTE_SSH alone is not required.
        let mut vars = good();
        vars.remove("REMOTE_SSH");
        assert!(parse(&vars).is_ok());
    }

    #[test]
    fn unset_means_lab() {
        let none = Topology::from_lookup_if_set(|_| None).unwrap();
        assert!(none.is_none());
        let blank = Topology::from_lookup_if_set(|_| Some(String::new())).unwrap();
        assert!(blank.is_none());
        let vars = good();
        let some = Topology::from_lookup_if_set(|n| vars.get(n).cloned()).unwrap();
        assert!(some.is_some());
        let err = Topology::from_lookup_if_set(|n| (n == "LOCAL_IF").then(|| "tap0".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("LOCAL_MAC"), "{err}");
    }

    #[test]
    fn env_lines_quote_for_the_shell() {
        let mut t = parse(&good()).unwrap();
        t.remote_ssh = Some("root@host -p 2222".into());
        assert!(t
            .to_env_lines()
            .contains(&"REMOTE_SSH='root@host -p 2222'".to_string()));
        t.remote_ssh = Some("it's".into());
        assert!(t
            .to_env_lines()
            .contains(&r"REMOTE_SSH='it'\''s'".to_string()));
        t.remote_ssh = None;
        assert!(!t.to_env_lines().iter().any(|l| l.starts_with("REMOTE_SSH")));
    }
}
