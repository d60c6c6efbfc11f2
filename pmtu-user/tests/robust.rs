//! Verdicts you can trust, for the lab: a killed run, a shared lab, a namespace pmtu did not
//! make, a lost service record, an interrupted run's traces, a restricted root, a closed stdout.
//! Each test uses labs of its own (`vd<pid>-<n>`), removed however the test ends.
use std::{
    fs,
    os::fd::OwnedFd,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use nix::fcntl::{Flock, FlockArg};
use pmtu::lab::{self, plan};
use serde_json::Value;

mod common;

use common::{
    assert_gone, json_run, lab_is_gone, lab_record, ns_ident, ns_inode, processes_in, stderr,
    stdout, text, wait_until, LabGuard, NetnsGuard, PMTU,
};

/// `pmtu --lab NAME ARGS` started in the background, output kept.
fn spawn(name: &str, args: &[&str]) -> Child {
    Command::new(PMTU)
        .args(["--lab", name])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The rules a lab keeps between runs: observe rules for FAKE_NET, FAKE_NET6 and the two
/// stress prefixes.
const LAB_RULES: usize = 4;

/// Every scenario of a JSON run passed.
fn assert_all_pass(out: &Output) {
    assert!(out.status.success(), "{}", text(out));
    let (scenarios, summary) = json_run(out);
    let quick = pmtu::scenarios::ALL.len();
    assert_eq!(scenarios.len(), quick, "{}", text(out));
    assert_eq!(summary["passed"], quick, "{}", text(out));
}

fn is_bpffs_mounted(name: &str) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.contains(&format!("/run/pmtu/{name}/bpf ")))
}

/// The moments of a temporary lab's set-up at which the kill loop strikes, in the order they
/// happen: each is a condition on what exists so far.
/// A moment of the set-up: its name, and whether lab NAME has reached it.
type Moment = (&'static str, fn(&str) -> bool);

const MOMENTS: &[Moment] = &[
    ("the lock file", |n| lab::lock::lock_path(n).exists()),
    ("the record", |n| lab_record(n).is_some()),
    ("LOCAL's namespace", |n| {
        ns_inode(&plan::local_ns(n)).is_some()
    }),
    ("REMOTE's namespace", |n| {
        ns_inode(&plan::remote_ns(n)).is_some()
    }),
    ("the bpffs", is_bpffs_mounted),
    ("the pinned maps", |n| {
        plan::pin_dir(n).join("RULES_V4").exists()
    }),
    ("the responder's link", |n| {
        plan::pin_dir(n).join("link-pmtu-pmtu0").exists()
    }),
    ("the pass-through link", |n| {
        plan::pin_dir(n).join("link-pmtu_pass-pmtu1").exists()
    }),
    ("the services' log", |n| {
        plan::state_dir(n).join("services.log").exists()
    }),
    ("the service record", |n| {
        plan::state_dir(n).join("service.json").exists()
    }),
    ("the complete mark", |n| {
        lab_record(n).is_some_and(|r| r["complete"] == true)
    }),
];

/// SIGKILL at spread-out moments of a temporary lab's set-up: after each, the next run replaces
/// what was left and passes everything, and `lab down` leaves nothing, processes included.
#[test]
fn a_run_killed_at_any_moment_of_the_set_up_leaves_nothing_that_harms() {
    for (what, reached) in MOMENTS {
        let lab = LabGuard::new("vd");
        let mut child = spawn(&lab.0, &["run"]);
        wait_until(Duration::from_secs(10), what, || {
            reached(&lab.0) || child.try_wait().unwrap().is_some()
        });
        child.kill().unwrap();
        child.wait().unwrap();
        let inodes: Vec<_> = [lab.local_ns(), lab.remote_ns()]
            .iter()
            .filter_map(|ns| ns_ident(ns))
            .collect();
        eprintln!(
            "killed after {what}: left {:?}",
            lab_record(&lab.0).map(|r| r.to_string())
        );
        // Whatever is there is not a lab to use as it is.
        let status = lab.pmtu(&["lab", "status"]);
        assert!(
            !stdout(&status).starts_with(&format!("lab `{}`: up;", lab.0)),
            "killed after {what}, status says up: {}",
            text(&status)
        );
        let out = lab.pmtu(&["run", "--format", "json"]);
        assert_all_pass(&out);
        assert!(lab.is_gone(), "killed after {what}: the replacement stayed");
        let down = lab.pmtu(&["lab", "down"]);
        assert!(down.status.success(), "{}", text(&down));
        assert_gone(&lab.0, &inodes);
    }
}

/// Holds lab `name`'s lock the way a run does.
fn hold_lock(name: &str) -> Flock<fs::File> {
    fs::create_dir_all(plan::state_dir(name)).unwrap();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lab::lock::lock_path(name))
        .unwrap();
    Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap()
}

#[test]
fn a_busy_lab_is_waited_for_then_named_with_its_user() {
    let lab = LabGuard::new("vd");
    let held = hold_lock(&lab.0);
    let says = format!("lab {} is in use by PID {}", lab.0, std::process::id());
    for args in [&["run", "ping"][..], &["lab", "up"], &["lab", "down"]] {
        let out = Command::new(PMTU)
            .args(["--lab", &lab.0])
            .args(args)
            .env("PMTU_LOCK_WAIT", "0.3")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(&says), "{args:?}: {}", text(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", text(&out));
    }
    assert!(
        ns_inode(&lab.local_ns()).is_none(),
        "nothing was built meanwhile"
    );
    drop(held);
}

#[test]
fn concurrent_runs_take_turns() {
    // Two runs making the same temporary lab.
    let lab = LabGuard::new("vd");
    let (a, b) = (
        spawn(&lab.0, &["run", "--format", "json"]),
        spawn(&lab.0, &["run", "--format", "json"]),
    );
    for child in [a, b] {
        assert_all_pass(&child.wait_with_output().unwrap());
    }
    assert!(lab.is_gone());

    // Two `lab up` at once, then two runs on the kept lab.
    let ups = [spawn(&lab.0, &["lab", "up"]), spawn(&lab.0, &["lab", "up"])];
    for child in ups {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let runs = [
        spawn(&lab.0, &["run", "--format", "json"]),
        spawn(&lab.0, &["run", "--format", "json"]),
    ];
    for child in runs {
        assert_all_pass(&child.wait_with_output().unwrap());
    }
    let status = lab.pmtu(&["lab", "status", "--json"]);
    let json: Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(json["complete"], true, "{json}");
}

#[test]
fn a_namespace_pmtu_did_not_make_is_never_used_nor_deleted() {
    let lab = LabGuard::new("vd");
    let out = Command::new("ip")
        .args(["netns", "add", &lab.local_ns()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let _theirs = NetnsGuard(lab.local_ns());
    let inode = ns_inode(&lab.local_ns()).unwrap();
    for args in [&["run", "ping"][..], &["lab", "up"]] {
        let out = lab.pmtu(args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            stderr(&out).contains(&format!(
                "network namespace {} exists but was not made by pmtu",
                lab.local_ns()
            )),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = lab.pmtu(&["lab", "down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("left alone"), "{}", text(&out));
    assert_eq!(
        ns_inode(&lab.local_ns()),
        Some(inode),
        "deleted or replaced"
    );
    assert!(ns_inode(&lab.remote_ns()).is_none());
}

#[test]
fn down_stops_the_lab_s_processes_even_without_their_record() {
    for broken in ["empty", "missing"] {
        let lab = LabGuard::up("vd");
        let inodes = [
            ns_ident(&lab.local_ns()).unwrap(),
            ns_ident(&lab.remote_ns()).unwrap(),
        ];
        assert!(!processes_in(&inodes).is_empty(), "no service to orphan");
        let record = plan::state_dir(&lab.0).join("service.json");
        match broken {
            "empty" => fs::write(&record, "").unwrap(),
            _ => fs::remove_file(&record).unwrap(),
        }
        let out = lab.pmtu(&["lab", "down"]);
        assert!(out.status.success(), "{broken}: {}", text(&out));
        assert_gone(&lab.0, &inodes);
    }
}

/// REMOTE's TCP connections toward the fake nets, as `ss` lists them.
fn remote_connections(lab: &LabGuard) -> String {
    let out = lab.remote("ss -Htn dst 2001:db8:1::/64");
    let v4 = lab.remote("ss -Htn dst 198.51.100.0/24");
    stdout(&out) + &stdout(&v4)
}

/// The prefixes of lab `name`'s XDP rules, sorted; none when its responder cannot be opened.
fn rules(name: &str) -> Vec<String> {
    let mut prefixes: Vec<String> = lab::open(name)
        .and_then(|l| l.responder())
        .map(|r| r.rules().iter().map(|(p, _)| p.to_string()).collect())
        .unwrap_or_default();
    prefixes.sort();
    prefixes
}

#[test]
fn a_run_starts_by_clearing_what_a_killed_run_left_in_a_kept_lab() {
    let lab = LabGuard::up("vd");
    let standing = rules(&lab.0);
    assert_eq!(standing.len(), LAB_RULES, "{standing:?}");
    // blackhole sets a rule for its fake host and holds it and its chargen connection for
    // seconds (REMOTE probes its way down): kill it there, with no chance to clean up.
    let mut child = spawn(&lab.0, &["blackhole"]);
    wait_until(
        Duration::from_secs(5),
        "blackhole's rule and connection",
        || {
            assert!(child.try_wait().unwrap().is_none(), "blackhole ended first");
            rules(&lab.0).len() > LAB_RULES && !remote_connections(&lab).is_empty()
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let left = rules(&lab.0);
    assert!(
        standing.iter().all(|p| left.contains(p)) && left.len() > LAB_RULES,
        "{left:?}"
    );
    assert!(!remote_connections(&lab).is_empty());

    let out = lab.pmtu(&["run", "ping"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        rules(&lab.0),
        standing,
        "not the lab's standing rules (the killed run's rule is still there, or one of the \
         lab's own is gone)"
    );
    assert!(
        remote_connections(&lab).is_empty(),
        "REMOTE still talks to the fake host: {}",
        remote_connections(&lab)
    );
    // chargen's children (inetd forks one per connection) are gone with their connections.
    let remote = ns_ident(&lab.remote_ns()).unwrap();
    wait_until(
        Duration::from_secs(5),
        "only the service left in REMOTE",
        || processes_in(&[remote]).len() == 1,
    );
}

#[test]
fn status_says_up_only_when_the_interfaces_are_up() {
    let lab = LabGuard::up("vd");
    let out = lab.remote("ip link set pmtu1 down");
    assert!(out.status.success(), "{}", text(&out));
    let status = lab.pmtu(&["lab", "status"]);
    let first = stdout(&status)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.contains("INCOMPLETE") && first.contains("pmtu1 in"),
        "{}",
        text(&status)
    );
    let out = lab.pmtu(&["run", "ping"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("rebuilding lab"), "{}", text(&out));
    let status = lab.pmtu(&["lab", "status"]);
    assert!(
        stdout(&status).starts_with(&format!("lab `{}`: up;", lab.0)),
        "{}",
        text(&status)
    );
}

#[test]
fn root_without_capabilities_changes_nothing() {
    let lab = LabGuard::up("vd");
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-all",
            "--",
            PMTU,
            "--lab",
            &lab.0,
            "lab",
            "down",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("needs CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN"),
        "{}",
        text(&out)
    );
    let status = lab.pmtu(&["lab", "status", "--json"]);
    let json: Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(json["complete"], true, "{json}");
    assert_eq!(json["service"]["alive"], true, "{json}");
}

/// The write end of a pipe whose read end is already closed.
fn closed_pipe() -> OwnedFd {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    write
}

#[test]
fn up_and_down_into_a_closed_stdout_do_their_work_without_panicking() {
    let lab = LabGuard::new("vd");
    for args in [["lab", "up"], ["lab", "down"]] {
        let out = Command::new(PMTU)
            .args(["--lab", &lab.0])
            .args(args)
            .stdout(Stdio::from(closed_pipe()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", text(&out));
        if args[1] == "up" {
            assert!(lab::open(&lab.0).is_ok(), "not up");
        }
    }
    assert!(lab_is_gone(&lab.0));
}
