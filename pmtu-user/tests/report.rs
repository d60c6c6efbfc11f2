//! What CI and people read from a run: KTAP read by a real TAP parser, the exit codes, and the
//! HTML report rendered by headless Chromium. Real labs; each test has its own.
mod common;

use common::{chromium, tap_parse, text, LabGuard, TempDir};

/// The quick suite: the original's nine and the RFC scenarios beyond them.
const ALL: usize = 19;

/// Blocks REMOTE's chargen (tcp/19) with a TCP reset: the TCP scenarios cannot test REMOTE.
fn block_chargen(lab: &LabGuard) {
    lab.on_remote(&["nft", "add table inet rp_report"]);
    lab.on_remote(&[
        "nft",
        "add chain inet rp_report input { type filter hook input priority 0 ; }",
    ]);
    lab.on_remote(&[
        "nft",
        "add rule inet rp_report input tcp dport 19 reject with tcp reset",
    ]);
}

#[test]
fn ktap_passes_a_tap_parser_with_the_right_results_and_exit_codes() {
    let lab = LabGuard::up("rp");

    // Healthy: N tests, all ok, exit 0.
    let out = lab.pmtu(&["run", "--format", "tap"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tap = common::stdout(&out);
    assert!(tap.starts_with("KTAP version 1\n1..19\n"), "{tap}");
    let read = tap_parse(&tap);
    assert_eq!(read.plan, "1..19");
    assert_eq!(read.run as usize, ALL);
    assert_eq!(read.passed, (1..=ALL as u32).collect::<Vec<_>>());
    assert!(
        read.failed.is_empty() && read.parse_errors.is_empty(),
        "{read:?}"
    );

    // REMOTE broken: pmtu is `not ok` with its numbers and reason; exit 1.
    lab.on_remote(&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=1"]);
    let out = lab.pmtu(&["run", "--format", "tap", "ping", "pmtu"]);
    lab.on_remote(&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let tap = common::stdout(&out);
    let read = tap_parse(&tap);
    assert_eq!(
        (read.run, read.passed, read.failed),
        (2, vec![1], vec![2]),
        "{tap}"
    );
    for diagnostic in [
        "\n# pmtu: measured: icmp_mtu=1300 quoted_ip_len=1500 retransmit_ip_len=552\n",
        "\n# pmtu: expected: retransmit_ip_len=1300\n",
        "\n# pmtu: why: retransmit_ip_len was 552, expected 1300: REMOTE fell back to 552",
        "\nnot ok 2 pmtu\n",
    ] {
        assert!(tap.contains(diagnostic), "no `{diagnostic}` in\n{tap}");
    }

    // Could not test (chargen refuses): `not ok ... # ERROR`, exit 125, REMOTE not blamed.
    block_chargen(&lab);
    let out = lab.pmtu(&["run", "--format", "tap", "ping", "pmtu"]);
    let json = lab.pmtu(&["run", "--format", "json", "pmtu"]);
    let human = lab.pmtu(&["pmtu"]);
    lab.on_remote(&["nft", "delete table inet rp_report"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let tap = common::stdout(&out);
    let read = tap_parse(&tap);
    assert_eq!((read.passed, read.failed), (vec![1], vec![2]), "{tap}");
    assert!(
        tap.contains("\nnot ok 2 pmtu # ERROR REMOTE refused the connection with RST"),
        "{tap}"
    );
    assert!(tap.contains("# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:1\n"));
    let (scenarios, summary) = common::json_run(&json);
    assert_eq!(scenarios[0]["verdict"], "error", "{}", text(&json));
    assert_eq!(
        (summary["failed"].as_u64(), summary["errors"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(human.status.code(), Some(125), "{}", text(&human));
    assert!(
        // After the line naming the kernel under test.
        common::stdout(&human).starts_with("REMOTE: kernel ")
            && common::stdout(&human).contains("\nERROR pmtu ")
            && common::stdout(&human).contains("\n     could not test: "),
        "{}",
        text(&human)
    );

    // Usage errors exit 2 with one line.
    for args in [&["run", "nosuch"][..], &["run", "--format", "yaml"]] {
        let out = lab.pmtu(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
}

/// The `<svg class="ladder" ...>` elements of a DOM, with the section each is in.
fn ladders(dom: &str) -> Vec<(String, String)> {
    dom.split("<section class=\"scenario ")
        .skip(1)
        .map(|section| {
            let id = section
                .split("id=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_default()
                .to_string();
            let svg = section
                .split_once("<svg class=\"ladder\"")
                .map(|(_, rest)| rest.split("</svg>").next().unwrap_or_default().to_string())
                .unwrap_or_default();
            (id, svg)
        })
        .collect()
}

#[test]
fn the_html_report_renders_a_ladder_per_scenario() {
    let lab = LabGuard::up("rp");
    let dir = TempDir::new("rp-html");
    let page = dir.path().join("r.html");
    let out = lab.pmtu(&["run", "--report", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("http"), "the page fetches nothing");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "a temporary file was left beside the report"
    );

    let (dom, log) = chromium(&["--dump-dom"], &page);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let ladders = ladders(&dom);
    assert_eq!(ladders.len(), ALL, "one section per scenario in the DOM");
    let uname = lab.remote("uname -sr");
    assert!(
        dom.contains(common::stdout(&uname).trim()),
        "kernel under test"
    );
    for (id, svg) in &ladders {
        assert!(!svg.is_empty(), "{id}: no ladder");
        assert!(
            svg.contains("fake host") && svg.contains("router (LOCAL)"),
            "{id}"
        );
    }
    let pmtu = &ladders
        .iter()
        .find(|(id, _)| id.starts_with("pmtu-"))
        .unwrap()
        .1;
    for mark in [
        r#"class="packet fake""#,
        r#"class="packet quoted""#,
        r#"class="packet icmp""#,
        "ICMP frag-needed mtu 1300",
        "✱ TCP",
    ] {
        assert!(pmtu.contains(mark), "pmtu's ladder lacks {mark}:\n{pmtu}");
    }
    let udp6 = &ladders
        .iter()
        .find(|(id, _)| id.starts_with("udp6-"))
        .unwrap()
        .1;
    assert!(udp6.contains("ICMPv6 Packet Too Big mtu 1300"), "{udp6}");
    assert!(udp6.contains("frag off 1248"), "{udp6}");

    // A picture of it, as a person sees it.
    let shot = dir.path().join("r.png");
    let (_, log) = chromium(
        &[
            "--hide-scrollbars",
            "--window-size=1100,1500",
            &format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {log}"));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

#[test]
fn an_unwritable_report_is_refused_before_testing_and_an_old_one_is_kept() {
    let lab = LabGuard::new("rp");
    let dir = TempDir::new("rp-bad");
    let out = lab.pmtu(&[
        "run",
        "ping",
        "--report",
        dir.path().join("nosuch/r.html").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = common::stderr(&out);
    assert!(
        err.starts_with("pmtu: cannot write the report file"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(lab.is_gone(), "no lab was made");

    // A run whose set-up fails leaves an existing report as it was, and no temporary file.
    let old = dir.path().join("old.html");
    std::fs::write(&old, "old").unwrap();
    let mut cmd = common::pmtu_cmd(&["run", "ping", "--report", old.to_str().unwrap()]);
    for (k, v) in [
        ("LOCAL_IF", "nosuch0"),
        ("LOCAL_MAC", "02:00:00:00:00:01"),
        ("REMOTE_MAC", "02:00:00:00:00:02"),
        ("LOCAL_ADDR", "192.0.2.1"),
        ("REMOTE_ADDR", "192.0.2.2"),
        ("FAKE_NET", "198.51.100.0/24"),
        ("FAKE_NET_ADDR", "198.51.100.22"),
        ("LOCAL_ADDR6", "2001:db8::1"),
        ("REMOTE_ADDR6", "2001:db8::2"),
        ("FAKE_NET6", "2001:db8:1::/64"),
        ("FAKE_NET_ADDR6", "2001:db8:1::22"),
    ] {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        common::stderr(&out).contains("REMOTE_SSH is not set"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "old");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary file left"
    );

    // A malformed variable, or lab name, is a usage error.
    let out = cmd.env("LOCAL_MAC", "00:11:22").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = common::pmtu_cmd(&["--lab", "bad name!", "run", "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        common::stderr(&out).contains("is not a lab name"),
        "{}",
        text(&out)
    );
}
