//! The lab's plan: every name, MAC and address of the built-in lab, in one place.
//!
//! Everything else (the lab's builder, status, the tests, the XDP benchmark) reads them here.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{bail, Result};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::{
    config::{Mac, Topology},
    wire::{tcp_frame, TcpFlags, TcpSegment, L2},
};

/// The lab's name when `--lab` is not given.
pub const DEFAULT_NAME: &str = "pmtu";
/// LOCAL's end of the veth pair (LOCAL_IF).
pub const LOCAL_IF: &str = "pmtu0";
/// REMOTE's end of the veth pair.
pub const REMOTE_IF: &str = "pmtu1";
/// Fixed, locally administered MACs: deterministic, and no need to read them back.
pub const LOCAL_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
pub const REMOTE_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
/// LOCAL_ADDR / LOCAL_ADDR6: the router's addresses on the link.
pub const LOCAL_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const LOCAL_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// REMOTE_ADDR / REMOTE_ADDR6: the kernel under test.
pub const REMOTE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const REMOTE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// FAKE_NET / FAKE_NET6 and the fake host on them: networks that exist only behind LOCAL.
pub const FAKE_NET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(198, 51, 100, 0), 24) {
    Ok(n) => n,
    Err(_) => panic!("FAKE_NET"),
};
pub const FAKE_NET_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 22);
pub const FAKE_NET6: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 64) {
        Ok(n) => n,
        Err(_) => panic!("FAKE_NET6"),
    };
pub const FAKE_NET_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x22);
/// `pmtu stress`'s fake hosts, one per flow: RFC 2544's benchmarking range, and a /48 of the
/// documentation prefix clear of the link (2001:db8::/64) and FAKE_NET6 (2001:db8:1::/64).
/// REMOTE routes them via LOCAL, LOCAL black-holes them, and the responder observes them.
pub const STRESS_NET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15) {
    Ok(n) => n,
    Err(_) => panic!("STRESS_NET"),
};
pub const STRESS_NET6: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, 0x5000, 0, 0, 0, 0, 0), 48) {
        Ok(n) => n,
        Err(_) => panic!("STRESS_NET6"),
    };
/// Prefix lengths of the link between LOCAL and REMOTE.
pub const LINK_PREFIX_V4: u8 = 24;
pub const LINK_PREFIX_V6: u8 = 64;
/// Where labs keep their state.
pub const STATE_ROOT: &str = "/run/pmtu";
/// Longest lab name (the namespaces get `-local` / `-remote` appended).
pub const MAX_NAME_LEN: usize = 20;
/// REMOTE's services.
pub const CHARGEN_PORT: u16 = 19;
pub const ECHO_PORT: u16 = 7;

pub fn local_ns(name: &str) -> String {
    format!("{name}-local")
}

/// The lab whose LOCAL namespace is `ns` by its name (the inverse of [`local_ns`]).
pub fn lab_of_local_ns(ns: &str) -> Option<&str> {
    ns.strip_suffix("-local")
}

pub fn remote_ns(name: &str) -> String {
    format!("{name}-remote")
}

pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// The bpffs holding the responder's pinned maps and links.
pub fn pin_dir(name: &str) -> PathBuf {
    state_dir(name).join("bpf")
}

/// Lab names: letters, digits and `-`, not starting with `-`, at most 20 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name.starts_with('-') {
        bail!(
            "`{name}` is not a lab name: use letters, digits and `-` (not first), at most \
             {MAX_NAME_LEN} characters, e.g. `pmtu` or `lab-2`"
        );
    }
    Ok(())
}

/// The original's variables for lab `name`: documentation addresses only.
pub fn topology(name: &str) -> Topology {
    Topology {
        local_if: LOCAL_IF.to_string(),
        local_mac: LOCAL_MAC,
        remote_mac: REMOTE_MAC,
        remote_ssh: None,
        local_addr: LOCAL_ADDR,
        remote_addr: REMOTE_ADDR,
        fake_net: FAKE_NET,
        fake_net_addr: FAKE_NET_ADDR,
        local_addr6: LOCAL_ADDR6,
        remote_addr6: REMOTE_ADDR6,
        fake_net6: FAKE_NET6,
        fake_net_addr6: FAKE_NET_ADDR6,
        local_netns: Some(local_ns(name)),
        remote_netns: Some(remote_ns(name)),
    }
}

/// The variables of lab `name` when REMOTE is a qemu guest: the same addresses, LOCAL_IF a tap,
/// no REMOTE namespace, REMOTE_SSH through the lab's own ssh configuration.
pub fn vm_topology(name: &str, remote_ssh: &str) -> Topology {
    Topology {
        remote_ssh: Some(remote_ssh.to_string()),
        remote_netns: None,
        ..topology(name)
    }
}

/// The guest's side of the link, for its kernel command line.
pub fn guest_net() -> super::vm::GuestNet {
    super::vm::GuestNet {
        remote_mac: REMOTE_MAC,
        local_mac: LOCAL_MAC,
        remote_addr: REMOTE_ADDR,
        remote_prefix: LINK_PREFIX_V4,
        remote_addr6: REMOTE_ADDR6,
        remote_prefix6: LINK_PREFIX_V6,
        local_addr: LOCAL_ADDR,
        local_addr6: LOCAL_ADDR6,
        fake_net: FAKE_NET,
        fake_net6: FAKE_NET6,
    }
}

/// REMOTE's chargen data toward `dst` as LOCAL_IF receives it: TCP 19 -> 40000, seq 1000,
/// ack 1, a counting payload, IP length `ip_len`, from REMOTE_MAC to LOCAL_MAC.
pub fn data_segment(src: IpAddr, dst: IpAddr, ip_len: usize) -> Result<Vec<u8>> {
    let headers = if dst.is_ipv4() { 20 + 20 } else { 40 + 20 };
    let seg = TcpSegment {
        src,
        dst,
        sport: 19,
        dport: 40000,
        seq: 1000,
        ack: 1,
        flags: TcpFlags {
            ack: true,
            ..Default::default()
        },
        window: 512,
        mss: None,
        sack_permitted: false,
        sack: None,
        payload: (0..ip_len.saturating_sub(headers))
            .map(|i| i as u8)
            .collect(),
    };
    tcp_frame(
        &L2 {
            src: REMOTE_MAC,
            dst: LOCAL_MAC,
        },
        &seg,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn lab_values_and_env_lines_round_trip() {
        let lab = topology("pmtu");
        let lines = lab.to_env_lines();
        assert_eq!(
            lines,
            [
                "LOCAL_IF=pmtu0",
                "LOCAL_MAC=02:00:00:00:00:01",
                "REMOTE_MAC=02:00:00:00:00:02",
                "LOCAL_ADDR=192.0.2.1",
                "REMOTE_ADDR=192.0.2.2",
                "FAKE_NET=198.51.100.0/24",
                "FAKE_NET_ADDR=198.51.100.22",
                "LOCAL_ADDR6=2001:db8::1",
                "REMOTE_ADDR6=2001:db8::2",
                "FAKE_NET6=2001:db8:1::/64",
                "FAKE_NET_ADDR6=2001:db8:1::22",
                "LOCAL_NETNS=pmtu-local",
                "REMOTE_NETNS=pmtu-remote",
            ]
        );
        let vars: HashMap<String, String> = lines
            .iter()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let back = Topology::from_lookup(|n| vars.get(n).cloned()).unwrap();
        assert_eq!(back, lab);
        assert!(lab.consistency_problems().is_empty());
    }

    #[test]
    fn stress_nets_overlap_neither_the_link_nor_the_fake_nets() {
        let link6 = Ipv6Net::new(LOCAL_ADDR6, LINK_PREFIX_V6).unwrap().trunc();
        for net in [link6, FAKE_NET6] {
            assert!(
                !STRESS_NET6.contains(&net) && !net.contains(&STRESS_NET6),
                "{net}"
            );
        }
        let link4 = Ipv4Net::new(LOCAL_ADDR, LINK_PREFIX_V4).unwrap().trunc();
        for net in [link4, FAKE_NET] {
            assert!(
                !STRESS_NET.contains(&net) && !net.contains(&STRESS_NET),
                "{net}"
            );
        }
    }

    #[test]
    fn serializes_with_the_variable_names() {
        let json = serde_json::to_value(topology("x")).unwrap();
        assert_eq!(json["LOCAL_IF"], "pmtu0");
        assert_eq!(json["LOCAL_MAC"], "02:00:00:00:00:01");
        assert_eq!(json["FAKE_NET"], "198.51.100.0/24");
        assert_eq!(json["FAKE_NET_ADDR6"], "2001:db8:1::22");
        assert_eq!(json["REMOTE_NETNS"], "x-remote");
        assert!(json.get("REMOTE_SSH").is_none());
    }
}
