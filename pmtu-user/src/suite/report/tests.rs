//! The reporters' text, captured from a `Vec<u8>`.
use std::time::Duration;

use serde_json::json;

use super::{html, ladder, Format, Reporter, Summary, Target};
use crate::suite::{
    capture::{Frame, FrameKind},
    Outcome, Verdict,
};

fn outcome(name: &'static str, verdict: Verdict, reason: Option<&str>) -> Outcome {
    let mut o = Outcome {
        kind: "scenario",
        name,
        about: "what it does",
        verdict,
        measured: Default::default(),
        expected: Default::default(),
        reason: reason.map(Into::into),
        duration_ms: 12,
    };
    if name == "pmtu" {
        o.measured.insert("retransmit_ip_len".into(), json!(1500));
        o.measured.insert("icmp_mtu".into(), json!(1300));
        o.expected.insert("retransmit_ip_len".into(), json!(1300));
    }
    o
}

fn run(format: Format, outcomes: &[Outcome], interrupted: Option<&str>) -> String {
    let mut r = Reporter::new(format, Vec::new());
    r.start(outcomes.len() + usize::from(interrupted.is_some()));
    for o in outcomes {
        r.outcome(o);
    }
    r.finish(&Summary::of(outcomes, 99), interrupted);
    String::from_utf8(r.into_inner()).unwrap()
}

fn mixed() -> Vec<Outcome> {
    vec![
        outcome("ping", Verdict::Pass, None),
        outcome(
            "pmtu",
            Verdict::Fail,
            Some("retransmit_ip_len was 1500, expected 1300: REMOTE ignored the ICMP"),
        ),
        outcome(
            "udp6",
            Verdict::Error,
            Some("sending: Network is down\n(os error 100)"),
        ),
        outcome("gateway6", Verdict::Skip, Some("not on this profile")),
    ]
}

#[test]
fn ktap_has_version_plan_numbered_results_and_diagnostics_before_them() {
    let text = run(Format::Tap, &mixed(), None);
    let expected = "\
KTAP version 1
1..4
ok 1 ping
# pmtu: measured: icmp_mtu=1300 retransmit_ip_len=1500
# pmtu: expected: retransmit_ip_len=1300
# pmtu: why: retransmit_ip_len was 1500, expected 1300: REMOTE ignored the ICMP
not ok 2 pmtu
# udp6: error: sending: Network is down (os error 100)
not ok 3 udp6 # ERROR sending: Network is down (os error 100)
ok 4 gateway6 # SKIP not on this profile
# 1 passed, 1 failed, 1 skipped, 1 error in 99 ms
# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:1
";
    assert_eq!(text, expected);
}

#[test]
fn an_interrupted_ktap_run_bails_out() {
    let text = run(Format::Tap, &mixed()[..1], Some("SIGTERM"));
    assert!(
        text.starts_with("KTAP version 1\n1..2\nok 1 ping\n"),
        "{text}"
    );
    assert!(
        text.ends_with("Bail out! interrupted by SIGTERM\n"),
        "{text}"
    );
}

#[test]
fn human_lines_say_why_a_fail_failed_and_why_an_error_could_not_test() {
    let text = run(Format::Human, &mixed(), None);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "PASS ping            12 ms");
    assert_eq!(
        lines[1],
        "FAIL pmtu            12 ms  icmp_mtu=1300 retransmit_ip_len=1500 (expected 1300)"
    );
    assert_eq!(
        lines[2],
        "     why: retransmit_ip_len was 1500, expected 1300: REMOTE ignored the ICMP"
    );
    assert_eq!(lines[3], "ERROR udp6            12 ms");
    assert_eq!(lines[4], "     could not test: sending: Network is down");
    assert_eq!(
        lines.last().copied(),
        Some("1 passed, 1 failed, 1 skipped, 1 error")
    );
}

#[test]
fn json_objects_carry_the_error_verdict_and_the_error_count() {
    let text = run(Format::Json, &mixed(), None);
    let values: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(values[2]["verdict"], "error");
    assert_eq!(values[1]["verdict"], "fail");
    assert!(values[1].get("about").is_none());
    assert_eq!(
        values[4],
        json!({"type": "summary", "passed": 1, "failed": 1, "skipped": 1, "errors": 1,
               "duration_ms": 99})
    );
}

#[test]
fn summary_counts_name_errors_only_when_there_are_some() {
    let s = Summary::of(&[outcome("ping", Verdict::Pass, None)], 1);
    assert_eq!(s.counts(), "1 passed, 0 failed");
    let two = [
        outcome("a", Verdict::Error, None),
        outcome("b", Verdict::Error, None),
    ];
    assert_eq!(
        Summary::of(&two, 1).counts(),
        "0 passed, 0 failed, 2 errors"
    );
}

fn frame(ms: u64, kind: FrameKind, data: Vec<u8>, scenario: &'static str) -> Frame {
    Frame {
        when: Duration::from_millis(1_000 + ms),
        orig_len: data.len() as u32,
        data,
        kind,
        scenario: Some(scenario),
    }
}

/// A TCP segment with `payload` bytes between the fake host's port 40000 and REMOTE's 19.
fn tcp(from_fake: bool, seq: u32, payload: usize, syn: bool) -> Vec<u8> {
    let (fake, remote) = ([198, 51, 100, 22], [192, 0, 2, 2]);
    let (src, dst, sp, dp) = if from_fake {
        (fake, remote, 40000, 19)
    } else {
        (remote, fake, 19, 40000)
    };
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sp, dp, seq, 65535);
    // Each side acknowledges the other's SYN (REMOTE's ISN 9000, the fake host's 5000).
    let b = if syn {
        b.syn()
    } else {
        b.ack(if from_fake { 9001 } else { 5001 })
    };
    let mut out = Vec::new();
    b.write(&mut out, &vec![b'x'; payload]).unwrap();
    out
}

#[test]
fn the_ladder_has_one_arrow_per_packet_in_its_column_and_marks_the_quote() {
    use pmtu_common::EventAction::{Answered, Observed};
    use FrameKind::{Reported, Sent};
    let frames = [
        frame(0, Sent, tcp(true, 5000, 0, true), "pmtu"),
        frame(
            1,
            Reported(Some(Observed)),
            tcp(false, 9000, 0, true),
            "pmtu",
        ),
        frame(
            2,
            Reported(Some(Answered)),
            tcp(false, 9001, 1460, false),
            "pmtu",
        ),
        frame(2, FrameKind::Answer, tcp(false, 1, 0, false), "pmtu"),
        // A late packet toward another endpoint.
        frame(
            3,
            Reported(Some(Observed)),
            {
                let mut f = tcp(false, 1, 10, false);
                f[14 + 20 + 2] = 0x77;
                f
            },
            "pmtu",
        ),
    ];
    let refs: Vec<&Frame> = frames.iter().collect();
    let arrows = ladder::arrows(&refs);
    use ladder::{Column::*, Style};
    let cols: Vec<_> = arrows.iter().map(|a| (a.from, a.to, a.style)).collect();
    assert_eq!(
        cols,
        [
            (Fake, Remote, Style::Fake),
            (Remote, Fake, Style::Remote),
            (Remote, Router, Style::Quoted),
            (Router, Remote, Style::Icmp),
            (Remote, Fake, Style::Stray),
        ]
    );
    assert_eq!(arrows[0].label, "TCP S seq 0 len 0 · ip 40 DF");
    assert_eq!(
        arrows[2].label,
        "✱ TCP . seq 1:1461 ack 1 len 1460 · ip 1500 DF"
    );
    assert_eq!(arrows[2].note, Some("too big"));
    assert_eq!(arrows[2].at_us, 2000);
    assert!(
        arrows[3].label.ends_with("(quotes ✱)"),
        "{}",
        arrows[3].label
    );
    let svg = ladder::svg("pmtu-0", ["fake\na", "router\nb", "REMOTE\nc"], &arrows);
    assert_eq!(svg.matches("<g class=\"packet").count(), 5);
    assert!(svg.starts_with("<svg class=\"ladder\" id=\"ladder-pmtu-0\""));
}

#[test]
fn the_page_has_the_summary_and_a_ladder_per_scenario_and_escapes_text() {
    let mut outcomes = mixed();
    outcomes[1].reason = Some("<script>x</script> & more".into());
    let info = html::RunInfo {
        kernel: "Linux 6.18.0".into(),
        lab: "the built-in lab `pmtu`".into(),
        profile: "linux".into(),
        started: Duration::from_secs(1_764_027_667),
        command: "pmtu run --report r.html".into(),
        columns: [
            "fake host\n1".into(),
            "router\n2".into(),
            "REMOTE\n3".into(),
        ],
    };
    let frames = [frame(0, FrameKind::Sent, tcp(true, 1, 0, true), "pmtu")];
    let mut page = Vec::new();
    html::write(
        &mut page,
        &info,
        &Summary::of(&outcomes, 5),
        &outcomes,
        &frames,
    )
    .unwrap();
    let page = String::from_utf8(page).unwrap();
    assert_eq!(
        page.matches("<svg class=\"ladder\"").count(),
        outcomes.len()
    );
    assert!(page.contains("<td>Linux 6.18.0</td>"));
    assert!(page.contains("2025-11-24 23:41:07 UTC"), "utc date");
    assert!(page.contains("&lt;script&gt;x&lt;/script&gt; &amp; more"));
    assert!(!page.contains("<script"), "no script, nothing to fetch");
    assert!(!page.contains("http"), "nothing fetched from anywhere");
    assert!(page.contains(r#"<tr class="mismatch"><td>retransmit_ip_len</td>"#));
}

#[test]
fn utc_dates_match_the_calendar() {
    assert_eq!(html::utc_text(Duration::ZERO), "1970-01-01 00:00:00 UTC");
    assert_eq!(
        html::utc_text(Duration::from_secs(951_782_400)),
        "2000-02-29 00:00:00 UTC"
    );
    assert_eq!(
        html::utc_text(Duration::from_secs(4_102_444_799)),
        "2099-12-31 23:59:59 UTC"
    );
}

#[test]
fn the_target_names_the_kernel_under_test() {
    let target = Target {
        lab: Some("vm".into()),
        remote_kernel: Some("6.1.0-56-amd64".into()),
        boot_to_ready_ms: Some(4321),
        description: "a qemu guest booted from debian, lab `pmtu`".into(),
        ..Target::default()
    };
    let written = |format: Format| {
        let mut r = Reporter::new(format, Vec::new());
        r.target(&target);
        r.finish(&Summary::of(&[], 10).with_target(target.clone()), None);
        String::from_utf8(r.into_inner()).unwrap()
    };
    let json = written(Format::Json);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["remote_kernel"], "6.1.0-56-amd64");
    assert_eq!(v["lab"], "vm");
    assert_eq!(v["boot_to_ready_ms"], 4321);
    assert!(v.get("description").is_none(), "{json}");
    assert!(v.get("ssh_login_ms").is_none(), "{json}");
    // Human output names the kernel first; the summary line stays as it was.
    assert_eq!(
        written(Format::Human),
        "REMOTE: kernel 6.1.0-56-amd64 (a qemu guest booted from debian, lab `pmtu`)\n\
         0 passed, 0 failed\n"
    );
    assert!(!written(Format::Tap).contains("6.1.0"));
}
