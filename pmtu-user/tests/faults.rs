//! The fault catalogue: a suite that passes a broken kernel is worthless. Each fault breaks the
//! lab's REMOTE in one way (always inside REMOTE, through `pmtu lab exec`), runs the suite, and
//! checks that exactly the scenarios it guards fail, with the reason that names the breakage;
//! then reverts it and checks a healthy run passes again (so every revert is proven too).
//!
//! `cargo xtask faults` runs this binary alone; `cargo xtask test` runs it with the rest.
//! Each fault has its own lab, so the faults run concurrently.
mod common;

use common::{json_run, scenario, text, LabGuard};

/// One way to break REMOTE.
#[derive(Clone, Copy)]
struct Fault {
    name: &'static str,
    /// Commands (argv words) run on REMOTE to break it, in order.
    apply: &'static [&'static [&'static str]],
    /// Commands that put REMOTE back.
    revert: &'static [&'static [&'static str]],
    /// The scenarios that must FAIL, each with a phrase its reason must contain.
    breaks: &'static [(&'static str, &'static str)],
    /// Scenarios that may fail too, depending on timing (a path MTU that expires after one
    /// jiffy is still there for a scenario quick enough).
    may_break: &'static [&'static str],
    /// The scenarios to run (names; empty: the quick suite, `pmtu run`).
    run: &'static [&'static str],
}

/// Linux's IPv6 path MTU scenarios: with a path MTU that expires after one jiffy, those that
/// take longer than that between the Packet Too Big and the next packet fail.
const V6_PMTU: &[&str] = &["pmtu6", "udp6", "gateway6", "bigger6", "tiny6", "neighbor6"];

const CATALOGUE: &[Fault] = &[
    Fault {
        name: "icmp-filter",
        apply: &[
            &["nft", "add table inet pmtu_fault"],
            &[
                "nft",
                "add chain inet pmtu_fault input { type filter hook input priority filter ; }",
            ],
            &[
                "nft",
                "add rule inet pmtu_fault input icmp type destination-unreachable icmp code frag-needed drop",
            ],
            &["nft", "add rule inet pmtu_fault input icmpv6 type packet-too-big drop"],
        ],
        revert: &[&["nft", "delete table inet pmtu_fault"]],
        breaks: &[
            ("pmtu", "REMOTE ignored the ICMP"),
            ("pmtu6", "REMOTE ignored the ICMP"),
            ("udp6", "REMOTE ignored the Packet Too Big"),
            ("gateway6", "REMOTE ignored the Packet Too Big"),
            ("window", "never reached its TCP"),
            ("window6", "never reached its TCP"),
            ("bigger", "REMOTE ignored the ICMP fragmentation needed"),
            ("bigger6", "REMOTE ignored the ICMP Packet Too Big"),
            ("tiny", "REMOTE ignored the ICMP fragmentation needed with MTU 500"),
            ("tiny6", "REMOTE ignored the ICMP Packet Too Big"),
            ("persist", "REMOTE ignored the ICMP fragmentation needed"),
            ("persist6", "REMOTE ignored the ICMP Packet Too Big"),
            ("udp", "REMOTE's UDP ignored the ICMP"),
            ("neighbor6", "REMOTE ignored the Packet Too Big"),
        ],
        may_break: &[],
        run: &[],
    },
    Fault {
        name: "no-pmtu-disc",
        apply: &[&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=1"]],
        revert: &[&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=0"]],
        breaks: &[
            ("pmtu", "retransmit_ip_len was 552, expected 1300"),
            ("bigger", "resend_ip_len was 552, expected 1500"),
            ("persist", "retransmit_ip_len was 552, expected 1300"),
            ("udp", "next_reply_first_fragment_len was 548, expected 1300"),
        ],
        may_break: &[],
        run: &[],
    },
    Fault {
        name: "mtu-lock",
        apply: &[&[
            "ip", "route", "replace", "198.51.100.0/24", "via", "192.0.2.1", "mtu", "lock", "1500",
        ]],
        revert: &[&["ip", "route", "replace", "198.51.100.0/24", "via", "192.0.2.1"]],
        breaks: &[
            ("pmtu", "without DF: path MTU discovery is off"),
            ("window", "without DF"),
            ("bigger", "without DF"),
            ("tiny", "without DF"),
            ("persist", "without DF"),
            ("udp", "first_reply_df was false"),
        ],
        may_break: &[],
        run: &[],
    },
    Fault {
        name: "min-pmtu",
        apply: &[&["sysctl", "-qw", "net.ipv4.route.min_pmtu=1400"]],
        revert: &[&["sysctl", "-qw", "net.ipv4.route.min_pmtu=552"]],
        breaks: &[
            ("pmtu", "retransmit_ip_len was 1400, expected 1300"),
            ("bigger", "retransmit_ip_len was 1400, expected 1300"),
            ("tiny", "mtu500_resend_ip_len was 1400, expected 552"),
            ("persist", "retransmit_ip_len was 1400, expected 1300"),
            ("udp", "next_reply_first_fragment_len was 1396, expected 1300"),
        ],
        may_break: &[],
        run: &[],
    },
    Fault {
        name: "pmtu-expires",
        apply: &[&["sysctl", "-qw", "net.ipv4.route.mtu_expires=0"]],
        revert: &[&["sysctl", "-qw", "net.ipv4.route.mtu_expires=600"]],
        breaks: &[
            ("pmtu", "expected 1300"),
            ("bigger", "expected 1300"),
            ("tiny", "expected 552"),
            ("persist", "expected 1300"),
            ("udp", "REMOTE's UDP ignored the ICMP"),
        ],
        may_break: &[],
        run: &[],
    },
    Fault {
        name: "pmtu-expires6",
        apply: &[&["sysctl", "-qw", "net.ipv6.route.mtu_expires=0"]],
        revert: &[&["sysctl", "-qw", "net.ipv6.route.mtu_expires=600"]],
        breaks: &[("persist6", "new_connection_ip_len was 1500, expected 1300")],
        may_break: V6_PMTU,
        run: &[],
    },
    Fault {
        name: "hardened-pmtu-disc",
        apply: &[&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=2"]],
        revert: &[&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=0"]],
        breaks: &[
            ("pmtu", "REMOTE ignored the ICMP"),
            ("window", "never reached its TCP"),
            ("bigger", "REMOTE ignored the ICMP"),
            ("tiny", "REMOTE ignored the ICMP"),
            ("persist", "REMOTE ignored the ICMP"),
            ("udp", "REMOTE's UDP ignored the ICMP"),
        ],
        may_break: &[],
        run: &[],
    },
    Fault {
        name: "udp-pmtu-disc-off",
        apply: &[&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=3"]],
        revert: &[&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=0"]],
        breaks: &[("udp", "REMOTE's UDP ignored the ICMP")],
        may_break: &[],
        run: &[],
    },
    Fault {
        name: "base-mss",
        apply: &[&["sysctl", "-qw", "net.ipv4.tcp_base_mss=1400"]],
        revert: &[&["sysctl", "-qw", "net.ipv4.tcp_base_mss=1024"]],
        breaks: &[
            // Out at 740 (half of 1400's search floor) or not at all within 10 s.
            ("blackhole", "black hole"),
            ("blackhole6", "black hole"),
        ],
        may_break: &[],
        run: &["blackhole", "blackhole6"],
    },
];

/// Runs `names` (none: the quick suite) on `lab`; one JSON object per scenario.
fn suite(lab: &LabGuard, names: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["run", "--format", "json"];
    args.extend_from_slice(names);
    let out = lab.pmtu(&args);
    json_run(&out).0
}

fn on_remote(lab: &LabGuard, argv: &[&str]) {
    let mut args = vec!["lab", "exec", "--"];
    args.extend_from_slice(argv);
    let out = lab.pmtu(&args);
    assert!(out.status.success(), "on REMOTE: {argv:?}: {}", text(&out));
}

fn check(fault: &Fault) {
    let lab = LabGuard::up("f");
    check_on(&lab, fault);
}

/// Breaks `lab`'s REMOTE with `fault`, checks the verdicts, reverts, checks a healthy run.
fn check_on(lab: &LabGuard, fault: &Fault) {
    for argv in fault.apply {
        on_remote(lab, argv);
    }
    let broken = suite(lab, fault.run);
    for argv in fault.revert {
        on_remote(lab, argv);
    }
    let mut problems = Vec::new();
    for s in &broken {
        let name = s["name"].as_str().unwrap_or_default();
        let reason = s["reason"].as_str().unwrap_or_default();
        match fault.breaks.iter().find(|(n, _)| *n == name) {
            Some((_, says)) if s["verdict"] != "fail" => problems.push(format!(
                "{name} should fail (`{says}`) but was {}",
                s["verdict"]
            )),
            Some((_, says)) if !reason.contains(says) => problems.push(format!(
                "{name} failed for another reason: {reason} (expected `{says}`)"
            )),
            None if s["verdict"] == "fail" && !fault.may_break.contains(&name) => problems.push(
                format!("{name} failed though the fault does not touch it: {reason}"),
            ),
            _ => {}
        }
    }
    for (name, _) in fault.breaks {
        if fault.run.is_empty() || fault.run.contains(name) {
            let _ = scenario(&broken, name);
        }
    }
    assert!(problems.is_empty(), "fault {}: {problems:#?}", fault.name);
    let healthy = suite(lab, fault.run);
    let failed: Vec<_> = healthy.iter().filter(|s| s["verdict"] == "fail").collect();
    assert!(
        failed.is_empty(),
        "fault {}: not reverted: {failed:#?}",
        fault.name
    );
}

fn fault(name: &str) -> &'static Fault {
    CATALOGUE
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fault {name}"))
}

#[test]
fn icmp_filter() {
    check(fault("icmp-filter"));
}

#[test]
fn no_pmtu_disc() {
    check(fault("no-pmtu-disc"));
}

#[test]
fn mtu_lock() {
    check(fault("mtu-lock"));
}

#[test]
fn min_pmtu() {
    check(fault("min-pmtu"));
}

#[test]
fn pmtu_expires() {
    check(fault("pmtu-expires"));
}

#[test]
fn pmtu_expires6() {
    check(fault("pmtu-expires6"));
}

#[test]
fn hardened_pmtu_disc() {
    check(fault("hardened-pmtu-disc"));
}

#[test]
fn udp_pmtu_disc_off() {
    check(fault("udp-pmtu-disc-off"));
}

#[test]
fn base_mss() {
    check(fault("base-mss"));
}

/// Faults inside a qemu guest of Debian's 6.1 kernel (`--kernel debian`): the same commands
/// reach it over ssh, and over the whole quick suite exactly the same scenarios must fail
/// with the same reasons. One guest, the faults in turn.
#[test]
fn faults_inside_a_debian_guest() {
    let lab = LabGuard::new("fv");
    let out = lab.pmtu(&["lab", "up", "--kernel", "debian"]);
    assert!(
        out.status.success(),
        "lab up --kernel debian: {}",
        text(&out)
    );
    for name in ["no-pmtu-disc", "mtu-lock"] {
        check_on(&lab, fault(name));
    }
}

/// A check that passes a fault it should catch is worthless: a catalogue entry that claims a
/// scenario the fault does not break must be reported.
#[test]
#[should_panic(expected = "should fail")]
fn a_fault_that_is_not_caught_is_reported() {
    check(&Fault {
        name: "harmless",
        apply: &[&["true"]],
        revert: &[&["true"]],
        breaks: &[("pmtu", "anything")],
        may_break: &[],
        run: &["pmtu"],
    });
}
