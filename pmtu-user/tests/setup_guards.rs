//! LOCAL's own set-up never produces a FAIL that blames REMOTE: check-setup names the set-ups
//! that would (generic XDP, native XDP_TX on a veth whose peer has no program, frames larger than
//! LOCAL_IF's MTU) and `pmtu run` refuses them up front; `--pcap` is whole or reports an error;
//! REMOTE_SSH reaches ssh as a shell would split it. Each test has labs of its own.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use pmtu::lab::plan;

mod common;

use common::{json_run, scenario, stderr, stdout, text, LabGuard, PMTU};

fn scratch_dir(lab: &LabGuard) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pmtu-guards-{}", lab.0));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A run refused before any scenario: an error naming `says`, no verdict at all.
fn assert_refused(lab: &LabGuard, says: &str) {
    let out = lab.pmtu(&["run", "--format", "json"]);
    // Could not test: LOCAL's set-up is at fault (125), never a FAIL.
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(stdout(&out).is_empty(), "scenarios ran: {}", text(&out));
    assert!(
        stderr(&out).contains("LOCAL's set-up would make scenarios fail")
            && stderr(&out).contains(says),
        "{}",
        text(&out)
    );
}

#[test]
fn generic_xdp_is_refused_and_named_by_check_setup() {
    let lab = LabGuard::new("vd");
    let out = lab.pmtu(&["--xdp-mode", "skb", "lab", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_refused(&lab, "xdp_mode: the responder runs in generic (skb) mode");

    // check-setup alone reports it as its own problem (an ERROR: LOCAL is at fault), and sees the
    // super-frames that generic XDP lets through (how large REMOTE's first packets are varies: a
    // few tries).
    let mut reasons = Vec::new();
    for _ in 0..8 {
        let out = lab.pmtu(&["check-setup", "--format", "json"]);
        let (scenarios, _) = json_run(&out);
        let s = scenario(&scenarios, "check-setup");
        assert_eq!(s["verdict"], "error", "{s}");
        let reason = s["reason"].as_str().unwrap_or_default().to_string();
        assert!(
            reason.contains("xdp_mode: the responder runs in generic (skb) mode"),
            "{reason}"
        );
        let done = reason.contains("frame_sizes: a ")
            && reason.contains("larger than LOCAL_IF's MTU 1500");
        reasons.push(reason);
        if done {
            return;
        }
    }
    panic!("no frame larger than the MTU was seen: {reasons:#?}");
}

#[test]
fn a_veth_peer_without_xdp_is_refused() {
    let lab = LabGuard::up("vd");
    // Unpinning the pass-through program's link detaches it from REMOTE's end.
    fs::remove_file(plan::pin_dir(&lab.0).join("link-pmtu_pass-pmtu1")).unwrap();
    assert_refused(
        &lab,
        &format!(
            "veth_peer: LOCAL_IF pmtu0 is a veth in native XDP mode, and its peer pmtu1 in \
             namespace `{}` has no XDP program",
            lab.remote_ns()
        ),
    );
    let out = lab.pmtu(&["check-setup"]);
    assert!(stdout(&out).contains("veth_peer=FAIL"), "{}", text(&out));
}

#[test]
fn pcap_is_whole_or_an_error() {
    let lab = LabGuard::new("vd");
    let dir = scratch_dir(&lab);

    // A device that refuses every write.
    let out = lab.pmtu(&["run", "ping", "--pcap", "/dev/full"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("writing the pcap file /dev/full")
            && stderr(&out).contains("No space left on device")
            && !stderr(&out).contains("wrote"),
        "{}",
        text(&out)
    );
    assert!(lab.is_gone());

    // A run that fails at set-up leaves an existing file as it was, and no temporary file.
    let precious = dir.join("old.pcap");
    fs::write(&precious, "precious").unwrap();
    let out = Command::new(PMTU)
        .args(["--lab", &lab.0, "run", "ping", "--pcap"])
        .arg(&precious)
        .env("PMTU_SERVICES", "bogus")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(fs::read_to_string(&precious).unwrap(), "precious");
    assert_eq!(entries(&dir), ["old.pcap"]);

    // A full file system: an error, and neither a truncated file nor a temporary one.
    let kept = LabGuard::up("vd");
    let full = dir.join("full");
    fs::create_dir_all(&full).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=8k tmpfs {d} && {PMTU} --lab {lab} run pmtu --pcap {d}/run.pcap; \
         echo exit=$?; ls -A {d}",
        d = full.display(),
        lab = kept.0
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("exit=125") && stderr(&out).contains("No space left on device"),
        "{}",
        text(&out)
    );
    assert!(
        stdout(&out).trim_end().ends_with("exit=125"),
        "files left: {}",
        text(&out)
    );
    fs::remove_dir_all(&dir).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "full")
        .collect();
    names.sort();
    names
}

#[test]
fn remote_ssh_is_split_like_a_shell_and_never_read_as_an_option() {
    let lab = LabGuard::up("vd");
    let dir = scratch_dir(&lab);
    // An `ssh` that records its words and runs REMOTE's command in REMOTE's namespace, as
    // sshd does: the words after `--` joined by spaces, for REMOTE's shell.
    let ssh = dir.join("ssh");
    fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {d}/argv.$$\nwhile [ \"$1\" != -- ]; do shift; done\n\
             shift\nexec ip netns exec {ns} sh -c \"$*\"\n",
            d = dir.display(),
            ns = lab.remote_ns()
        ),
    )
    .unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
    let env_out = lab.pmtu(&["lab", "status", "--env"]);
    let env: Vec<(String, String)> = stdout(&env_out)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .filter(|(k, _): &(String, String)| k != "REMOTE_NETNS")
        .collect();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |login: &str| {
        Command::new(PMTU)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("REMOTE_SSH", login)
            .env("PATH", &path)
            .args(["run", "ping", "gateway6"])
            .output()
            .unwrap()
    };

    let out = run("root@remote -p 2222");
    assert!(out.status.success(), "{}", text(&out));
    let words: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("argv."))
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(!words.is_empty(), "ssh was never called");
    for argv in &words {
        assert!(
            argv.contains("\nroot@remote\n-p\n2222\n--\n"),
            "ssh's words: {argv:?}"
        );
    }

    let pwned = dir.join("pwned");
    let calls = words.len();
    let out = run(&format!("-oProxyCommand=touch {}", pwned.display()));
    // A usage error: the variable is malformed.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("starts with an option"),
        "{}",
        text(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", text(&out));
    assert!(!pwned.exists(), "the option ran a command");
    let now = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("argv."))
        .count();
    assert_eq!(now, calls, "ssh was called with an option first");
    fs::remove_dir_all(&dir).unwrap();
}
