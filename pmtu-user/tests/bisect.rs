//! `git bisect run` over pmtu's exit codes, for real: a throwaway git repository whose commits
//! stand for kernel versions. Each commit carries `remote.sh`, the stand-in for "build this
//! commit's kernel and boot it as REMOTE": it puts the lab's REMOTE in that commit's state with
//! `pmtu lab exec`. From one commit on, PMTUD is off (net.ipv4.ip_no_pmtu_disc=1: pmtu FAILs,
//! exit 1, bad); one commit does not build (its script exits 125); on one, chargen refuses
//! connections, so pmtu cannot test (ERROR, exit 125). Bisect must name the first bad commit
//! and skip the two it cannot test.
use std::{path::Path, process::Command};

mod common;

use common::{text, LabGuard, TempDir, PMTU};

/// What each commit's REMOTE is like, oldest first.
const HISTORY: &[(&str, &str)] = &[
    ("healthy", "v1: healthy"),
    ("healthy", "v2: healthy"),
    ("healthy", "v3: healthy"),
    ("no-chargen", "v4: chargen refuses connections"),
    ("healthy", "v5: healthy"),
    ("no-pmtud", "v6: PMTUD off"),
    ("no-build", "v7: does not build"),
    ("no-pmtud", "v8: still off"),
];
const FIRST_BAD: &str = "v6: PMTUD off";
const CANNOT_TEST: [&str; 2] = ["v4: chargen refuses connections", "v7: does not build"];

/// The commit's `remote.sh`: puts REMOTE in `state` (every state is set whole, since bisect
/// jumps back and forth).
fn remote_script(state: &str) -> String {
    let mut s = String::from(
        "#!/bin/sh\n\
         # Stands for: build this commit's kernel, boot it as REMOTE.\n\
         set -e\n",
    );
    if state == "no-build" {
        s.push_str("echo 'this commit does not build' >&2\nexit 125\n");
        return s;
    }
    s.push_str(
        "on_remote() { \"$PMTU\" lab exec -- \"$@\"; }\n\
         on_remote nft add table inet rp_bisect\n\
         on_remote nft flush table inet rp_bisect\n",
    );
    let disc = if state == "no-pmtud" { 1 } else { 0 };
    s.push_str(&format!(
        "on_remote sysctl -qw net.ipv4.ip_no_pmtu_disc={disc}\n"
    ));
    if state == "no-chargen" {
        s.push_str(
            "on_remote nft 'add chain inet rp_bisect input { type filter hook input priority 0 ; }'\n\
             on_remote nft add rule inet rp_bisect input tcp dport 19 reject with tcp reset\n",
        );
    }
    s
}

fn git(repo: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=pmtu test",
            "-c",
            "user.email=pmtu@example.org",
        ])
        .args(args)
        .env("GIT_AUTHOR_DATE", "2025-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2025-01-01T00:00:00Z")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git")
}

fn git_ok(repo: &Path, args: &[&str]) -> String {
    let out = git(repo, args);
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    common::stdout(&out)
}

/// The subject of a commit.
fn subject(repo: &Path, rev: &str) -> String {
    git_ok(repo, &["log", "-1", "--format=%s", rev])
        .trim()
        .to_string()
}

#[test]
fn git_bisect_run_finds_the_first_bad_commit_and_skips_what_cannot_be_tested() {
    let lab = LabGuard::up("rp");
    let dir = TempDir::new("rp-bisect");
    let repo = dir.path();
    git_ok(repo, &["init", "-q", "-b", "main"]);
    for (state, message) in HISTORY {
        let script = repo.join("remote.sh");
        std::fs::write(&script, remote_script(state)).unwrap();
        git_ok(repo, &["add", "remote.sh"]);
        git_ok(repo, &["commit", "-q", "--allow-empty", "-m", message]);
    }
    let oldest = git_ok(repo, &["rev-list", "--max-parents=0", "HEAD"]);
    git_ok(repo, &["bisect", "start", "HEAD", oldest.trim()]);

    // The kernel developer's one command: a script that fails to build is "cannot test".
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "bisect",
            "run",
            "sh",
            "-c",
            "sh ./remote.sh || exit 125; exec \"$PMTU\" run pmtu",
        ])
        .env("PMTU", PMTU)
        .env("PMTU_LAB", lab.name())
        .output()
        .unwrap();
    let log = git_ok(repo, &["bisect", "log"]);
    let _ = git(repo, &["bisect", "reset"]);
    lab.on_remote(&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=0"]);
    let _ = lab.pmtu(&[
        "lab",
        "exec",
        "--",
        "nft",
        "delete",
        "table",
        "inet",
        "rp_bisect",
    ]);
    assert!(
        out.status.success(),
        "git bisect run: {}\n{log}",
        text(&out)
    );

    let stdout = common::stdout(&out);
    let named = stdout
        .lines()
        .find_map(|l| l.strip_suffix(" is the first bad commit"))
        .unwrap_or_else(|| panic!("bisect named no commit:\n{stdout}\n{log}"));
    assert_eq!(subject(repo, named), FIRST_BAD, "{stdout}\n{log}");

    // Every commit bisect skipped is one that cannot be tested, and both were skipped.
    let skipped: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix("git bisect skip "))
        .map(|rev| subject(repo, rev))
        .collect();
    let mut expected = CANNOT_TEST.map(String::from).to_vec();
    let mut got = skipped.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "skipped {skipped:?}\n{log}");
}
