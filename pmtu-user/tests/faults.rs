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
struct Fault {
    name: &'static str,
    /// Commands (argv words) run on REMOTE to break it, in order.
    apply: &'static [&'static [&'static str]],
    /// Commands that put REMOTE back.
    revert: &'static [&'static [&'static str]],
    /// The scenarios that must FAIL, each with a phrase its reason must contain.
    breaks: &'static [(&'static str, &'static str)],
}

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
        ],
    },
    Fault {
        name: "no-pmtu-disc",
        apply: &[&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=1"]],
        revert: &[&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=0"]],
        breaks: &[("pmtu", "retransmit_ip_len was 552, expected 1300")],
    },
    Fault {
        name: "mtu-lock",
        apply: &[&[
            "ip", "route", "replace", "198.51.100.0/24", "via", "192.0.2.1", "mtu", "lock", "1500",
        ]],
        revert: &[&["ip", "route", "replace", "198.51.100.0/24", "via", "192.0.2.1"]],
        breaks: &[("pmtu", "")],
    },
    Fault {
        name: "min-pmtu",
        apply: &[&["sysctl", "-qw", "net.ipv4.route.min_pmtu=1400"]],
        revert: &[&["sysctl", "-qw", "net.ipv4.route.min_pmtu=552"]],
        breaks: &[("pmtu", "expected 1300")],
    },
    Fault {
        name: "pmtu-expires",
        apply: &[&["sysctl", "-qw", "net.ipv4.route.mtu_expires=0"]],
        revert: &[&["sysctl", "-qw", "net.ipv4.route.mtu_expires=600"]],
        breaks: &[("pmtu", "expected 1300")],
    },
];

/// Runs the whole suite on `lab` and returns (verdict per scenario, reason per scenario).
fn suite(lab: &LabGuard) -> Vec<serde_json::Value> {
    let out = lab.pmtu(&["run", "--format", "json"]);
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
    let broken = suite(lab);
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
            None if s["verdict"] == "fail" => problems.push(format!(
                "{name} failed though the fault does not touch it: {reason}"
            )),
            _ => {}
        }
    }
    for (name, _) in fault.breaks {
        let _ = scenario(&broken, name);
    }
    assert!(problems.is_empty(), "fault {}: {problems:#?}", fault.name);
    let healthy = suite(lab);
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

/// Faults inside a qemu guest of Debian's 6.1 kernel (`--kernel debian`): the same commands
/// reach it over ssh, and the same scenarios must fail with the same reasons. One guest, the
/// faults in turn.
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
    });
}
