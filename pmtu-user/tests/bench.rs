//! `pmtu bench responder`: both floods answered and measured, the figures printed, and nothing
//! left behind (the kernel router's namespaces, the temporary lab). Needs root.
mod common;

use std::time::Duration;

use common::{in_netns, pmtu_cmd, stderr, stdout, text, wait_until, LabGuard};
use pmtu::{
    lab::{kernel_router::KernelRouterLab, plan::REMOTE_IF},
    net::netns,
};

/// The value of `key=` in `line`.
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no {key} in `{line}`"))
}

#[test]
fn responder_bench_answers_both_floods_and_leaves_nothing() {
    let lab = LabGuard::new("hxbr");
    let out = lab.pmtu(&["bench", "responder", "--seconds", "0.3"]);
    assert!(out.status.success(), "bench responder: {}", text(&out));
    let printed = stdout(&out);
    for figure in ["responder_answers_per_s ", "responder_answers_per_s_ipv6 "] {
        let line = printed
            .lines()
            .find(|l| l.starts_with(figure))
            .unwrap_or_else(|| panic!("no `{figure}` line in:\n{printed}"));
        let (xdp, kernel) = (field(line, "xdp="), field(line, "kernel_router="));
        assert!(xdp > 0.0 && kernel > 0.0, "{line}");
        // Every answer was sent for: the flood's frames are counted.
        let (_, sent_part) = line
            .split_once("(sent_per_s ")
            .unwrap_or_else(|| panic!("no sent_per_s in `{line}`"));
        let sent = field(sent_part, "xdp=");
        assert!(sent >= xdp * 0.99, "{line}");
        let ratio = field(line, "ratio=");
        assert!(
            (ratio - xdp / kernel).abs() < 0.01 * ratio.max(1.0),
            "{line}"
        );
    }
    for ns in KernelRouterLab::names(lab.name()) {
        assert!(!netns::exists(&ns), "namespace {ns} was left behind");
    }
    assert!(lab.is_gone(), "the temporary lab was left behind");
}

/// REMOTE's ICMP errors received by its stack, as `nstat` shows them (IPv4, IPv6).
fn remote_icmp_errors(ns: &str) -> (u64, u64) {
    let out = in_netns(ns, "nstat -az IcmpInDestUnreachs Icmp6InPktTooBigs");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in nstat's output:\n{text}"))
    };
    (value("IcmpInDestUnreachs"), value("Icmp6InPktTooBigs"))
}

#[test]
fn responder_bench_counts_answers_in_xdp_and_puts_the_lab_back() {
    let lab = LabGuard::up("hxbk");
    let ns = lab.remote_ns();
    let before = remote_icmp_errors(&ns);
    let out = lab.pmtu(&["bench", "responder", "--seconds", "0.3"]);
    assert!(out.status.success(), "bench responder: {}", text(&out));
    // This kernel sends from XDP in live-frames mode (Linux 5.18 and later): no fallback.
    assert!(
        !stderr(&out).contains("packet socket"),
        "the flood fell back to a packet socket: {}",
        text(&out)
    );
    // The answers were counted and dropped at REMOTE's veth, never reaching its stack.
    assert_eq!(remote_icmp_errors(&ns), before, "{}", text(&out));
    // The lab's pass-through program is back on REMOTE's veth.
    let link = in_netns(&ns, &format!("ip -d link show {REMOTE_IF}"));
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains("name pmtu_pass "), "{link}");
}

/// A bench killed while REMOTE's veth runs its counter (which drops every ICMP error) leaves a
/// lab on which every scenario would blame REMOTE: the next run must refuse it (could not test,
/// 125), never FAIL.
#[test]
fn a_kept_lab_left_with_the_benchmark_counter_is_refused_not_failed() {
    let lab = LabGuard::up("hxbc");
    let ns = lab.remote_ns();
    let mut bench = pmtu_cmd(&["--lab", lab.name(), "bench", "responder", "--seconds", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the counter on REMOTE's veth",
        || {
            let link = in_netns(&ns, &format!("ip -d link show {REMOTE_IF}"));
            String::from_utf8_lossy(&link.stdout).contains("name pmtu_count ")
        },
    );
    bench.kill().unwrap();
    bench.wait().unwrap();
    let out = lab.pmtu(&["run", "ping", "pmtu"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(text(&out).contains("pmtu_count"), "{}", text(&out));
    // The way out the message gives works.
    let down = lab.pmtu(&["lab", "down"]);
    assert!(down.status.success(), "{}", text(&down));
    let up = lab.pmtu(&["lab", "up"]);
    assert!(up.status.success(), "{}", text(&up));
    let out = lab.pmtu(&["run", "ping", "pmtu"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn responder_bench_refuses_a_bad_duration() {
    for bad in ["0", "-1", "nan", "100"] {
        let arg = format!("--seconds={bad}");
        let out = common::pmtu_cmd(&["bench", "responder", &arg])
            .output()
            .unwrap();
        assert!(!out.status.success(), "--seconds {bad} was taken");
        let err = stderr(&out);
        assert!(err.contains("--seconds"), "--seconds {bad}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    }
}
