//! `pmtu stress` end to end: a short run of every kind of flow passes on a healthy lab, and
//! fails naming the reason when REMOTE drops ICMP errors (nftables) or clamps path MTUs
//! (net.ipv4.route.min_pmtu), and a short run against the lab's qemu guest of Debian's 6.1
//! kernel passes. The runs take turns (one lock): two stress runs at once on a
//! small machine would overflow the veth's queues and make each other's runs invalid.
mod common;

use std::sync::Mutex;

use common::{chromium, json_stress, text, LabGuard, TempDir};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn stress(lab: &LabGuard, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["stress", "--format", "json"];
    all.extend_from_slice(args);
    let out = lab.pmtu(&all);
    (out.status.code(), json_stress(&out), text(&out))
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// The failure group of `reason`, which must be there.
fn group<'a>(summary: &'a Value, reason: &str) -> &'a Value {
    summary["failures"]
        .as_array()
        .and_then(|a| a.iter().find(|g| g["reason"] == reason))
        .unwrap_or_else(|| panic!("no failures for {reason} in {summary}"))
}

/// REMOTE's nftables drops the ICMP errors the responder sends (frag-needed, packet too big)
/// that also match `which` (an nft expression and a space, or "" for all of them).
fn drop_icmp_errors_on_remote(lab: &LabGuard, which: &str) {
    lab.on_remote(&["nft", "add table inet pmtu_fault"]);
    lab.on_remote(&[
        "nft",
        "add chain inet pmtu_fault input { type filter hook input priority filter ; }",
    ]);
    lab.on_remote(&[
        "nft",
        &format!("add rule inet pmtu_fault input icmp type destination-unreachable icmp code frag-needed {which}drop"),
    ]);
    lab.on_remote(&[
        "nft",
        &format!("add rule inet pmtu_fault input icmpv6 type packet-too-big {which}drop"),
    ]);
}

#[test]
fn a_short_run_of_every_kind_verifies_every_flow_and_probes_capacity() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = LabGuard::up("st");
    let dir = TempDir::new("stress-report");
    let page = dir.path().join("stress.html");
    let (code, s, all) = stress(
        &lab,
        &[
            "--flows",
            "2000",
            "--concurrency",
            "32",
            "--sample",
            "20",
            "--report",
            page.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(count(&s, "verified"), 2000, "{all}");
    assert_eq!(count(&s, "failed"), 0, "{all}");
    assert_eq!(count(&s, "events_lost"), 0, "{all}");
    assert_eq!(count(&s, "frames_dropped"), 0, "{all}");
    assert_eq!(s["valid"], true);
    for kind in ["tcp4", "tcp6", "udp4", "udp6"] {
        assert_eq!(count(&s["kinds"][kind], "verified"), 500, "{kind}: {all}");
        assert!(count(&s["kinds"][kind]["latency_us"], "p50") > 0, "{kind}");
        let c = &s["capacity"][kind];
        assert_eq!(count(c, "probed"), 20, "{kind}: {all}");
        assert_eq!(
            count(c, "remembered") + count(c, "readopted"),
            20,
            "{kind}: every destination remembered or adopted again: {all}"
        );
    }
    assert!(
        s["peak_rss_mb"].as_f64().is_some_and(|mb| mb > 0.0),
        "{all}"
    );
    assert_eq!(
        s["verified_per_second"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).sum::<u64>()),
        Some(2000)
    );
    // The page, as a browser reads it: the verdict, the figures, both charts.
    let (dom, _) = chromium(&["--dump-dom"], &page);
    for want in [
        r#"<span class="verdict pass">PASS</span>"#,
        "2000 of 2000 started",
        "REMOTE's PMTU state",
        "verified flows per second",
        "PTB to resend latency",
        "<svg",
    ] {
        assert!(dom.contains(want), "no `{want}` in the page: {dom}");
    }
    assert!(
        dom.contains("<td>udp6</td><td>500</td><td>500</td><td>0</td>"),
        "{dom}"
    );
    // The queue the run put on REMOTE's end of the veth is gone again.
    let qdisc = text(&lab.remote("tc qdisc show dev pmtu1"));
    assert!(qdisc.contains("noqueue"), "{qdisc}");
}

#[test]
fn remote_dropping_icmp_errors_fails_every_flow_as_ignored() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = LabGuard::up("st");
    drop_icmp_errors_on_remote(&lab, "");
    let (code, s, all) = stress(
        &lab,
        &["--flows", "200", "--concurrency", "64", "--sample", "0"],
    );
    assert_eq!(code, Some(1), "a FAIL: {all}");
    assert_eq!(count(&s, "verified"), 0, "{all}");
    let g = group(&s, "ignored_icmp");
    assert_eq!(count(g, "count"), 200, "{all}");
    assert!(
        g["why"]
            .as_str()
            .is_some_and(|w| w.contains("REMOTE ignored the ICMP error")),
        "{g}"
    );
    let e = &g["example"];
    assert!(
        e["measured"]
            .as_str()
            .is_some_and(|m| m.ends_with("=1500") || m.ends_with("=false")),
        "{e}"
    );
    assert!(e["fake"].as_str().is_some_and(|f| !f.is_empty()), "{e}");
}

/// A lost ICMP error is not REMOTE's fault: a flow that sees REMOTE resend (or reply) at the
/// quoted size has the error sent once more, and only a REMOTE that ignores that one too
/// fails. REMOTE here drops every other error (one flow at a time, so each flow loses its
/// first and gets its second).
#[test]
fn a_lost_icmp_error_is_sent_again_and_the_flow_verified() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = LabGuard::up("st");
    drop_icmp_errors_on_remote(&lab, "numgen inc mod 2 0 ");
    let (code, s, all) = stress(
        &lab,
        &["--flows", "24", "--concurrency", "1", "--sample", "0"],
    );
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(count(&s, "verified"), 24, "{all}");
    assert_eq!(count(&s, "answered_again"), 24, "{all}");
    assert_eq!(s["valid"], true, "{all}");
}

#[test]
fn remote_clamping_with_min_pmtu_fails_ipv4_flows_as_above_the_mtu() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = LabGuard::up("st");
    lab.on_remote(&["sysctl", "-qw", "net.ipv4.route.min_pmtu=1400"]);
    // Below 1396: IPv4's first fragment for a path MTU of 1400 is 20 + 1376.
    let (code, s, all) = stress(
        &lab,
        &[
            "--flows",
            "400",
            "--concurrency",
            "32",
            "--mtu",
            "1280-1390",
            "--sample",
            "0",
        ],
    );
    assert_eq!(code, Some(1), "a FAIL: {all}");
    let g = group(&s, "above_mtu");
    assert_eq!(count(g, "count"), 200, "every IPv4 flow: {all}");
    assert!(
        g["why"].as_str().is_some_and(|w| w.contains("min_pmtu")),
        "{g}"
    );
    for kind in ["tcp6", "udp6"] {
        assert_eq!(
            count(&s["kinds"][kind], "verified"),
            100,
            "IPv6 has no min_pmtu: {kind}: {all}"
        );
    }
    for kind in ["tcp4", "udp4"] {
        assert_eq!(count(&s["kinds"][kind], "failed"), 100, "{kind}: {all}");
    }
}

/// Against Debian's 6.1 kernel in the lab's qemu guest: the stress prefixes are routed via
/// LOCAL in the guest over ssh and its inetd serves the flows.
#[test]
fn a_short_run_against_the_debian_guest_verifies_every_flow() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = LabGuard::new("stv");
    let up = lab.pmtu(&["lab", "up", "--kernel", "debian"]);
    assert!(up.status.success(), "{}", text(&up));
    let (code, s, all) = stress(&lab, &["--flows", "200", "--sample", "10"]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(count(&s, "verified"), 200, "{all}");
    assert_eq!(count(&s, "failed"), 0, "{all}");
    assert_eq!(count(&s, "frames_dropped"), 0, "{all}");
    assert_eq!(s["valid"], true, "{all}");
    for kind in ["tcp4", "tcp6", "udp4", "udp6"] {
        let c = &s["capacity"][kind];
        assert_eq!(
            count(c, "remembered") + count(c, "readopted"),
            10,
            "{kind}: {all}"
        );
    }
}

/// A lab whose REMOTE lost its route to a stress prefix cannot test: an error before any flow
/// starts, never a run of flows failing as if REMOTE ignored its ICMP.
#[test]
fn a_lab_without_the_stress_routes_is_an_error_not_a_fail() {
    let lab = LabGuard::up("str");
    let out = lab.remote("ip -6 route del 2001:db8:5000::/48");
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.pmtu(&["stress", "--flows", "20"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(125), "{all}");
    assert!(
        all.contains("no route to the stress prefix 2001:db8:5000::/48"),
        "{all}"
    );
}
