//! `pmtu bench responder`: both floods answered and measured, the figures printed, and nothing
//! left behind (the kernel router's namespaces, the temporary lab). Needs root.
mod common;

use common::{stderr, stdout, text, LabGuard};
use pmtu::{lab::kernel_router::KernelRouterLab, net::netns};

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
