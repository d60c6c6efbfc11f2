//! The suite end to end: the real `pmtu` binary, real labs (namespaces, veth, inetd, XDP),
//! REMOTE being this machine's kernel. Each test has its own lab, removed also on failure.
use std::{
    fs::File,
    path::Path,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use serde_json::Value;

const PMTU: &str = env!("CARGO_BIN_EXE_pmtu");

/// A unique lab name; the lab (if any) is removed on drop.
struct Lab(String);

impl Lab {
    fn name() -> Lab {
        static N: AtomicU32 = AtomicU32::new(0);
        Lab(format!(
            "e{}-{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::SeqCst)
        ))
    }

    fn up() -> Lab {
        let lab = Lab::name();
        let out = lab.pmtu(&["lab", "up"]);
        assert!(out.status.success(), "lab up: {}", text(&out));
        lab
    }

    fn pmtu(&self, args: &[&str]) -> Output {
        Command::new(PMTU)
            .args(args)
            .args(["--lab", &self.0])
            .output()
            .unwrap()
    }

    fn remote(&self, cmd: &str) -> Output {
        let args: Vec<&str> = cmd.split(' ').collect();
        Command::new("ip")
            .args(["netns", "exec", &format!("{}-remote", self.0)])
            .args(&args)
            .output()
            .unwrap()
    }

    /// Nothing of the lab is left: namespaces, state directory.
    fn is_gone(&self) -> bool {
        !Path::new(&format!("/run/netns/{}-local", self.0)).exists()
            && !Path::new(&format!("/run/netns/{}-remote", self.0)).exists()
            && !Path::new(&format!("/run/pmtu/{}", self.0)).exists()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(PMTU)
            .args(["lab", "down", "--lab", &self.0])
            .output();
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The JSON lines of a run: (scenario objects, summary).
fn json_run(out: &Output) -> (Vec<Value>, Value) {
    let mut scenarios = Vec::new();
    let mut summary = Value::Null;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", text(out)));
        match v["type"].as_str() {
            Some("scenario") => scenarios.push(v),
            Some("summary") => summary = v,
            other => panic!("unknown object type {other:?}: {line}"),
        }
    }
    (scenarios, summary)
}

fn verdict<'a>(scenarios: &'a [Value], name: &str) -> &'a Value {
    scenarios
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scenario {name} in {scenarios:?}"))
}

const ALL: [&str; 9] = [
    "check-setup",
    "ping",
    "ping6",
    "pmtu",
    "pmtu6",
    "udp6",
    "gateway6",
    "tcpfrag6",
    "udpfrag6",
];

#[test]
fn every_scenario_passes_with_the_expected_numbers() {
    let lab = Lab::up();
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
        (Some(9), Some(0))
    );
    let m = |name: &str, key: &str| verdict(&scenarios, name)["measured"][key].clone();
    assert_eq!(m("pmtu", "retransmit_ip_len"), 1300);
    assert_eq!(m("pmtu6", "retransmit_ip_len"), 1300);
    assert_eq!(m("udp6", "first_reply_ip_len"), 1448);
    assert_eq!(m("udp6", "next_reply_first_fragment_len"), 1296);
    assert_eq!(m("gateway6", "next_reply_first_fragment_len"), 1296);
    assert_eq!(m("tcpfrag6", "atomic_fragments"), 0);
    assert_eq!(m("tcpfrag6", "retransmit_ip_len"), 1500);
    assert_eq!(m("udpfrag6", "next_reply_ip_len"), 1248);
    assert_eq!(m("udpfrag6", "next_reply_fragmented"), false);

    // Each scenario through its own subcommand, human output; the lab stays up.
    for name in ALL {
        let out = lab.pmtu(&[name]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert!(
            stdout.starts_with(&format!("PASS {name} ")),
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
fn a_temporary_lab_is_removed_and_pcap_is_written() {
    let lab = Lab::name();
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

/// Starts a run on a temporary lab, waits until the lab exists, signals it, checks clean-up.
fn interrupt_with(signal: nix::sys::signal::Signal) {
    let lab = Lab::name();
    let mut child = Command::new(PMTU)
        .args(["run", "--lab", &lab.0])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Path::new(&format!("/run/pmtu/{}/service.json", lab.0)).exists() {
        assert!(Instant::now() < deadline, "the lab never came up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "pmtu did not stop after {signal}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "{signal}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lab.is_gone(), "{signal} left the lab behind");
}

#[test]
fn sigint_and_sigterm_clean_up() {
    interrupt_with(nix::sys::signal::Signal::SIGINT);
    interrupt_with(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn a_remote_that_filters_icmp_fails_with_the_reason() {
    let lab = Lab::up();
    let rules = "table inet pmtu_fault {\n chain input {\n  type filter hook input priority 0;\n  \
                 icmp type destination-unreachable icmp code frag-needed drop\n  \
                 icmpv6 type packet-too-big drop\n }\n}\n";
    let mut nft = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-remote", lab.0),
            "nft",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    nft.stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success());

    let out = lab.pmtu(&["run", "pmtu", "pmtu6", "udp6", "ping", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (scenarios, summary) = json_run(&out);
    for (name, says) in [
        ("pmtu", "retransmit_ip_len was 1500, expected 1300: REMOTE ignored the ICMP fragmentation needed"),
        ("pmtu6", "retransmit_ip_len was 1500, expected 1300: REMOTE ignored the ICMP Packet Too Big"),
        ("udp6", "REMOTE ignored the Packet Too Big"),
    ] {
        let s = verdict(&scenarios, name);
        assert_eq!(s["verdict"], "fail", "{s}");
        assert!(s["reason"].as_str().unwrap().contains(says), "{name}: {s}");
    }
    assert_eq!(verdict(&scenarios, "ping")["verdict"], "pass");
    assert_eq!(
        (summary["passed"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(3))
    );

    // Healthy again once the filter is gone.
    assert!(lab
        .remote("nft delete table inet pmtu_fault")
        .status
        .success());
    let out = lab.pmtu(&["run", "pmtu", "pmtu6", "udp6"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn pmtud_switched_off_is_caught() {
    let lab = Lab::up();
    let sysctl = |v: &str| {
        let out = lab.remote(&format!("sysctl -qw net.ipv4.ip_no_pmtu_disc={v}"));
        assert!(out.status.success(), "{}", text(&out));
    };
    sysctl("1");
    let out = lab.pmtu(&["pmtu", "--format", "json"]);
    sysctl("0");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (scenarios, _) = json_run(&out);
    let s = verdict(&scenarios, "pmtu");
    assert_eq!(s["measured"]["retransmit_ip_len"], 552, "{s}");
    assert!(
        s["reason"].as_str().unwrap().contains("ip_no_pmtu_disc"),
        "{s}"
    );
}

#[test]
fn bad_input_gets_one_clear_message() {
    let lab = Lab::up();
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
    for (key, value, says) in [
        (
            "LOCAL_MAC",
            "00:11:22",
            "LOCAL_MAC='00:11:22': not a MAC address",
        ),
        ("FAKE_NET", "198.51.100.0/33", "FAKE_NET='198.51.100.0/33'"),
        ("REMOTE_ADDR6", "2001:db8::zz", "REMOTE_ADDR6"),
        ("LOCAL_IF", "nosuch0", "no interface `nosuch0`"),
    ] {
        let out = run_with(key, value, &["run", "ping"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {}", text(&out));
        assert!(err.contains(says), "{key}: expected `{says}` in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{key}: not one line: {err}");
    }

    // REMOTE unreachable: check-setup says so.
    let out = run_with("REMOTE_ADDR", "192.0.2.99", &["check-setup"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("192.0.2.99 does not answer ping"),
        "{}",
        text(&out)
    );

    // Unknown scenario.
    let out = lab.pmtu(&["run", "nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unknown scenario `nosuch`") && err.contains("pmtu6"),
        "{err}"
    );

    // A service that does not listen: chargen blocked with a reject on REMOTE.
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
    assert_eq!(echo.status.code(), Some(1), "{}", text(&echo));
    assert!(
        String::from_utf8_lossy(&echo.stdout)
            .contains("port unreachable: nothing listens on udp [2001:db8::2]:7"),
        "{}",
        text(&echo)
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
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
    let lab = Lab::name();
    let mut child = Command::new(PMTU)
        .args(["run", "--lab", &lab.0])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = format!("/run/pmtu/{}/temporary-for-pid", lab.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Path::new(&marker).exists() {
        assert!(Instant::now() < deadline, "the temporary lab never came up");
        std::thread::sleep(Duration::from_millis(5));
    }
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
