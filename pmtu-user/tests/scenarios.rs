//! The suite end to end: the real `pmtu` binary, real labs (namespaces, veth, inetd, XDP),
//! REMOTE being this machine's kernel. Each test has its own lab, removed also on failure.
use std::{
    fs::File,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;

mod common;

use common::{json_run, lab_record, scenario, stderr, stdout, text, wait_until, LabGuard, PMTU};

/// `pmtu run`: the original's nine in its order, then the RFC behaviours beyond it.
const ALL: [&str; 19] = [
    "check-setup",
    "ping",
    "ping6",
    "pmtu",
    "pmtu6",
    "udp6",
    "gateway6",
    "tcpfrag6",
    "udpfrag6",
    "window",
    "window6",
    "bigger",
    "bigger6",
    "tiny",
    "tiny6",
    "persist",
    "persist6",
    "udp",
    "neighbor6",
];

/// `pmtu run --all` adds these.
const LONG: [&str; 4] = ["expire", "expire6", "blackhole", "blackhole6"];

#[test]
fn every_scenario_passes_with_the_expected_numbers() {
    let lab = LabGuard::up("e");
    let out = lab.pmtu(&["run", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let (scenarios, summary) = json_run(&out);
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALL, "order of the original Makefile");
    for s in &scenarios {
        assert_eq!(s["verdict"], "pass", "{s}");
        assert!(s["duration_ms"].is_u64());
    }
    assert_eq!(
        (summary["passed"].as_u64(), summary["failed"].as_u64()),
        (Some(ALL.len() as u64), Some(0))
    );
    let m = |name: &str, key: &str| scenario(&scenarios, name)["measured"][key].clone();
    assert_eq!(m("pmtu", "retransmit_ip_len"), 1300);
    assert_eq!(m("pmtu6", "retransmit_ip_len"), 1300);
    assert_eq!(m("udp6", "first_reply_ip_len"), 1448);
    assert_eq!(m("udp6", "next_reply_first_fragment_len"), 1296);
    assert_eq!(m("gateway6", "next_reply_first_fragment_len"), 1296);
    assert_eq!(m("tcpfrag6", "atomic_fragments"), 0);
    assert_eq!(m("tcpfrag6", "retransmit_ip_len"), 1500);
    assert_eq!(m("udpfrag6", "next_reply_ip_len"), 1248);
    assert_eq!(m("udpfrag6", "next_reply_fragmented"), false);
    assert_eq!(m("udpfrag6", "large_next_reply_ip_len"), 1448);
    assert_eq!(m("udpfrag6", "large_next_reply_fragmented"), false);
    assert!(m("check-setup", "checks").as_u64() >= Some(34));
    for name in ["pmtu", "pmtu6"] {
        assert_eq!(m(name, "resent_before_rto"), true);
        assert!(m(name, "resend_after_ms").as_f64() < Some(200.0));
    }
    assert_eq!(m("gateway6", "route_mtu_before"), 1300);
    assert_eq!(m("gateway6", "route_mtu_after_readd"), 0);
    for name in ["window", "window6"] {
        assert_eq!(m(name, "resend_ip_len"), 1500);
        assert_eq!(m(name, "segments_at_1300"), 0);
        assert_eq!(m(name, "remote_pmtu"), 0);
        assert_eq!(m(name, "out_of_window_icmps"), 2);
    }
    for name in ["bigger", "bigger6"] {
        assert_eq!(m(name, "resend_ip_len"), 1500);
        assert_eq!(m(name, "remote_pmtu_after_larger"), 0);
        assert_eq!(m(name, "new_data_ip_len"), 1300);
        assert_eq!(m(name, "remote_pmtu"), 1300);
    }
    for mtu in [500, 67, 0] {
        assert_eq!(m("tiny", &format!("mtu{mtu}_resend_ip_len")), 552);
        assert_eq!(m("tiny", &format!("mtu{mtu}_resend_df")), false);
    }
    assert_eq!(m("tiny6", "below_min_resend_ip_len"), 1500);
    assert_eq!(m("tiny6", "min_retransmit_ip_len"), 1280);
    assert_eq!(m("persist", "new_connection_ip_len"), 1300);
    assert_eq!(m("persist", "synack_mss"), 1260);
    assert_eq!(m("persist", "udp_first_fragment_len"), 1300);
    assert_eq!(m("persist6", "new_connection_ip_len"), 1300);
    assert_eq!(m("persist6", "synack_mss"), 1240);
    assert_eq!(m("persist6", "udp_first_fragment_len"), 1296);
    assert_eq!(m("udp", "first_reply_ip_len"), 1428);
    assert_eq!(m("udp", "first_reply_df"), true);
    assert_eq!(m("udp", "next_reply_first_fragment_len"), 1300);
    assert_eq!(m("udp", "next_reply_last_fragment_len"), 148);
    assert_eq!(m("udp", "next_reply_df"), false);
    assert_eq!(m("neighbor6", "after_reply_first_fragment_len"), 1296);
    assert_eq!(m("neighbor6", "after_reply_last_fragment_len"), 208);
    assert_eq!(m("neighbor6", "too_big_after_delete"), 0);

    // Each scenario through its own subcommand, human output; the lab stays up.
    for name in ALL {
        let out = lab.pmtu(&[name]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert!(
            stdout.starts_with("REMOTE: kernel ")
                && stdout
                    .lines()
                    .nth(1)
                    .is_some_and(|l| l.starts_with(&format!("PASS {name} "))),
            "{name}: {stdout}"
        );
        assert!(
            stdout.trim_end().ends_with("1 passed, 0 failed"),
            "{stdout}"
        );
    }
    assert!(!lab.is_gone());
}

#[test]
fn run_all_adds_the_long_scenarios_and_puts_remote_back() {
    let lab = LabGuard::up("e");
    let sysctls =
        "sysctl -n net.ipv4.route.mtu_expires net.ipv6.route.mtu_expires net.ipv4.tcp_mtu_probing";
    let before = lab.remote(sysctls);
    let out = lab.pmtu(&["run", "--all", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let (scenarios, _) = json_run(&out);
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = ALL.iter().chain(LONG.iter()).copied().collect();
    assert_eq!(names, want);
    let m = |name: &str, key: &str| scenario(&scenarios, name)["measured"][key].clone();
    for name in ["expire", "expire6"] {
        let expired = m(name, "expired_after_ms").as_u64().unwrap();
        assert!((2000..3000).contains(&expired), "{name}: {expired}");
        assert_eq!(m(name, "expired_ip_len"), 1500);
        assert!(m(name, "last_at_1300_after_ms").as_u64() < Some(2000));
    }
    assert_eq!(m("blackhole", "fallback_ip_len"), 1064);
    assert_eq!(m("blackhole6", "fallback_ip_len"), 1084);
    for name in ["blackhole", "blackhole6"] {
        let probed = m(name, "probed_ip_len").as_u64().unwrap();
        assert!(probed > 1084 && probed <= 1300, "{name}: {probed}");
        assert!(m(name, "probed_after_ms").as_u64() < Some(10_000));
    }
    // The scenarios put REMOTE's settings back.
    assert_eq!(stdout(&lab.remote(sysctls)), stdout(&before));
    // Also when the scenario fails: with Packet Too Big filtered, expire6 learns nothing.
    for cmd in [
        "nft add table inet pmtu_t",
        "nft add chain inet pmtu_t input { type filter hook input priority 0 ; }",
        "nft add rule inet pmtu_t input icmpv6 type packet-too-big drop",
    ] {
        let out = lab.remote(cmd);
        assert!(out.status.success(), "{cmd}: {}", text(&out));
    }
    let out = lab.pmtu(&["expire6"]);
    lab.remote("nft delete table inet pmtu_t");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(stdout(&lab.remote(sysctls)), stdout(&before));
    // Names and --all do not go together: a usage error.
    let out = lab.pmtu(&["run", "--all", "pmtu"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("--all"), "{}", text(&out));
}

#[test]
fn a_temporary_lab_is_removed_and_pcap_is_written() {
    let lab = LabGuard::new("e");
    let dir = std::env::temp_dir().join(format!("pmtu-e2e-{}", lab.0));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("run.pcap");
    let out = lab.pmtu(&["run", "pmtu", "--pcap", pcap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.is_gone(), "temporary lab left behind");

    let mut reader = PcapReader::new(File::open(&pcap).unwrap()).unwrap();
    let (mut syn, mut full, mut frag_needed) = (false, false, false);
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        // Reported packets and answers are truncated to the event's 128 bytes: lax parsing.
        full |= p.orig_len == 14 + 1500;
        let Ok(s) = LaxSlicedPacket::from_ethernet(&p.data) else {
            continue;
        };
        match (&s.net, &s.transport) {
            (Some(LaxNetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t)))
                if t.syn() && !t.ack() && ip.header().source() == [198, 51, 100, 22] =>
            {
                syn |= t.destination_port() == 19;
            }
            (Some(LaxNetSlice::Ipv4(ip)), _) if ip.header().protocol().0 == 1 => {
                let b = ip.payload().payload;
                frag_needed |= b.len() >= 8
                    && b[0] == 3
                    && b[1] == 4
                    && u16::from_be_bytes([b[6], b[7]]) == 1300
                    && p.orig_len == 14 + 576;
            }
            _ => {}
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(syn, "the fake host's SYN is not in the capture");
    assert!(full, "REMOTE's 1500-byte segment is not in the capture");
    assert!(
        frag_needed,
        "the frag-needed answer (MTU 1300) is not in the capture"
    );
}

/// Starts a run on a temporary lab, waits until the lab exists, signals it, checks clean-up
/// and the exit code a shell gives that signal (128 + its number).
fn interrupt_with(signal: nix::sys::signal::Signal) {
    let lab = LabGuard::new("e");
    let mut child = Command::new(PMTU)
        .args(["run", "--lab", &lab.0])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let service = format!("/run/pmtu/{}/service.json", lab.0);
    wait_until(Duration::from_secs(5), "the lab coming up", || {
        Path::new(&service).exists()
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let mut status = None;
    wait_until(
        Duration::from_secs(10),
        "pmtu stopping after the signal",
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    let status = status.unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + signal as i32),
        "{signal}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lab.is_gone(), "{signal} left the lab behind");
}

#[test]
fn sigint_sigterm_and_sighup_clean_up() {
    interrupt_with(nix::sys::signal::Signal::SIGINT);
    interrupt_with(nix::sys::signal::Signal::SIGTERM);
    interrupt_with(nix::sys::signal::Signal::SIGHUP);
}

#[test]
fn bad_input_gets_one_clear_message() {
    let lab = LabGuard::up("e");
    let env_out = lab.pmtu(&["lab", "status", "--env"]);
    assert!(env_out.status.success(), "{}", text(&env_out));
    let env: Vec<(String, String)> = String::from_utf8_lossy(&env_out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let run_with = |key: &str, value: &str, args: &[&str]| {
        let mut cmd = Command::new(PMTU);
        for (k, v) in &env {
            cmd.env(k, if k == key { value } else { v });
        }
        cmd.args(args).output().unwrap()
    };
    // Malformed values are usage errors (2); an interface that is not there is a set-up
    // error: pmtu could not test (125).
    for (key, value, says, code) in [
        (
            "LOCAL_MAC",
            "00:11:22",
            "LOCAL_MAC='00:11:22': not a MAC address",
            2,
        ),
        (
            "FAKE_NET",
            "198.51.100.0/33",
            "FAKE_NET='198.51.100.0/33'",
            2,
        ),
        ("REMOTE_ADDR6", "2001:db8::zz", "REMOTE_ADDR6", 2),
        ("LOCAL_IF", "nosuch0", "no interface `nosuch0`", 125),
        (
            "FAKE_NET_ADDR",
            "198.51.100.255",
            "FAKE_NET_ADDR 198.51.100.255 is FAKE_NET 198.51.100.0/24's broadcast address",
            2,
        ),
    ] {
        let out = run_with(key, value, &["run", "ping"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{key}: {}", text(&out));
        assert!(err.contains(says), "{key}: expected `{says}` in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{key}: not one line: {err}");
    }

    // REMOTE unreachable: check-setup says so, and could not test (125, ERROR).
    let out = run_with("REMOTE_ADDR", "192.0.2.99", &["check-setup"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| !l.starts_with("REMOTE: kernel "))
            .is_some_and(|l| l.starts_with("ERROR check-setup")),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("192.0.2.99 does not answer ping"),
        "{}",
        text(&out)
    );

    // Unknown scenario: a usage error.
    let out = lab.pmtu(&["run", "nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        err.contains("unknown scenario `nosuch`") && err.contains("pmtu6"),
        "{err}"
    );

    // A service that does not listen (chargen, echo blocked with a reject on REMOTE): the
    // scenario could not test REMOTE, an ERROR (125), not a FAIL.
    let out = lab.remote("nft add table inet pmtu_t");
    assert!(out.status.success(), "{}", text(&out));
    lab.remote("nft add chain inet pmtu_t input { type filter hook input priority 0 ; }");
    let out = lab.remote("nft add rule inet pmtu_t input tcp dport 19 reject with tcp reset");
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.remote("nft add rule inet pmtu_t input udp dport 7 reject");
    assert!(out.status.success(), "{}", text(&out));
    let echo = lab.pmtu(&["udp6"]);
    let out = lab.pmtu(&["pmtu"]);
    lab.remote("nft delete table inet pmtu_t");
    assert_eq!(echo.status.code(), Some(125), "{}", text(&echo));
    assert!(
        String::from_utf8_lossy(&echo.stdout)
            .contains("port unreachable: nothing listens on udp [2001:db8::2]:7"),
        "{}",
        text(&echo)
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing listens on tcp 192.0.2.2:19"),
        "{}",
        text(&out)
    );
    // The lab is still whole and healthy afterwards.
    let out = lab.pmtu(&["run", "check-setup", "pmtu"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_stale_lab_from_a_killed_run_is_replaced() {
    let lab = LabGuard::new("e");
    let mut child = Command::new(PMTU)
        .args(["run", "--lab", &lab.0])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(5),
        "the temporary lab coming up",
        || lab_record(&lab.0).is_some_and(|r| r["complete"] == true),
    );
    // No chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !lab.is_gone(),
        "nothing left to replace: the test proves nothing"
    );

    let out = lab.pmtu(&["run", "ping"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("left by a killed run"),
        "{}",
        text(&out)
    );
    assert!(
        lab.is_gone(),
        "the replacement lab was not removed after the run"
    );
}
