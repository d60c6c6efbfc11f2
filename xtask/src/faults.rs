//! `cargo xtask faults`: proves the suite catches broken kernels.
//!
//! On a lab of its own: a healthy run must pass completely; then for each fault, break REMOTE
//! inside its own network namespace, run the suite, always revert, and check that the scenarios
//! the fault breaks did fail. A last healthy run shows that every revert left REMOTE as it was.
//! Nothing here touches the root namespace: every change is `ip netns exec $REMOTE_NETNS ...`.
use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Command, ExitCode, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{
    exec::{self, describe, describe_status, Interrupted},
    lab::{Lab, SuiteRun},
};

const LAB: &str = "pmtu-faults";

/// The lab's variables the faults use.
struct Remote {
    netns: String,
    fake_net: String,
    local_addr: String,
}

impl Remote {
    fn from_env(vars: &BTreeMap<String, String>) -> Result<Remote> {
        let get = |key: &str| -> Result<String> {
            match vars.get(key) {
                Some(v) if !v.is_empty() => Ok(v.clone()),
                _ => bail!(
                    "`pmtu lab status --lab {LAB} --env` did not print {key}=...: the faults \
                     need REMOTE_NETNS, FAKE_NET and LOCAL_ADDR"
                ),
            }
        };
        let remote = Remote {
            netns: get("REMOTE_NETNS")?,
            fake_net: get("FAKE_NET")?,
            local_addr: get("LOCAL_ADDR")?,
        };
        remote.check_not_root_namespace()?;
        Ok(remote)
    }

    /// Refuses a REMOTE_NETNS that does not exist or is the root namespace itself.
    fn check_not_root_namespace(&self) -> Result<()> {
        let path = Path::new("/run/netns").join(&self.netns);
        let remote = std::fs::metadata(&path).with_context(|| {
            format!(
                "REMOTE_NETNS={} has no {}: is lab {LAB} up?",
                self.netns,
                path.display()
            )
        })?;
        let own = std::fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
        if (remote.dev(), remote.ino()) == (own.dev(), own.ino()) {
            bail!(
                "REMOTE_NETNS={} is xtask's own network namespace: refusing to break it",
                self.netns
            );
        }
        Ok(())
    }

    /// `ip netns exec $REMOTE_NETNS args...`
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        exec::run(&mut self.cmd(args))
    }

    fn sysctl(&self, key: &str) -> Result<String> {
        Ok(exec::output(&mut self.cmd(&["sysctl", "-n", key]))?
            .trim()
            .to_owned())
    }

    fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["sysctl", "-q", "-w", &format!("{key}={value}")])
    }

    fn nft(&self, ruleset: &str) -> Result<()> {
        let mut cmd = self.cmd(&["nft", "-f", "-"]);
        let mut child = cmd
            .stdin(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", describe(&cmd)))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(ruleset.as_bytes())
                .with_context(|| format!("writing the ruleset to {}", describe(&cmd)))?;
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("{} failed with {}", describe(&cmd), describe_status(status));
        }
        Ok(())
    }
}

/// Undoes a fault: returned by `apply` only once the fault is in place.
type Revert = Box<dyn FnOnce(&Remote) -> Result<()>>;

struct Fault {
    name: &'static str,
    /// Scenarios that must fail while the fault is in place.
    breaks: &'static [&'static str],
    apply: fn(&Remote) -> Result<Revert>,
}

const FAULTS: &[Fault] = &[
    Fault {
        name: "icmp-filter",
        breaks: &["pmtu", "pmtu6", "udp6"],
        apply: icmp_filter,
    },
    Fault {
        name: "no-pmtu-disc",
        breaks: &["pmtu"],
        apply: no_pmtu_disc,
    },
    Fault {
        name: "mtu-lock",
        breaks: &["pmtu"],
        apply: mtu_lock,
    },
    Fault {
        name: "min-pmtu",
        breaks: &["pmtu"],
        apply: min_pmtu,
    },
    Fault {
        name: "pmtu-expires",
        breaks: &["pmtu"],
        apply: pmtu_expires,
    },
];

/// REMOTE drops every incoming ICMP frag-needed and Packet Too Big: a firewall black hole.
fn icmp_filter(remote: &Remote) -> Result<Revert> {
    remote.nft(
        "table inet pmtu_fault {\n\
         \tchain input {\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\ticmp type destination-unreachable icmp code frag-needed drop\n\
         \t\ticmpv6 type packet-too-big drop\n\
         \t}\n\
         }\n",
    )?;
    Ok(Box::new(|r: &Remote| {
        r.run(&["nft", "delete", "table", "inet", "pmtu_fault"])
    }))
}

/// REMOTE switches IPv4 PMTUD off: it ignores frag-needed and sends without DF.
fn no_pmtu_disc(remote: &Remote) -> Result<Revert> {
    sysctl_fault(remote, "net.ipv4.ip_no_pmtu_disc", "1")
}

/// REMOTE's route to FAKE_NET has a locked MTU of 1500, which IPv4 PMTU does not lower.
fn mtu_lock(remote: &Remote) -> Result<Revert> {
    let (net, via) = (remote.fake_net.clone(), remote.local_addr.clone());
    remote.run(&[
        "ip", "route", "replace", &net, "via", &via, "mtu", "lock", "1500",
    ])?;
    Ok(Box::new(move |r: &Remote| {
        r.run(&["ip", "route", "replace", &net, "via", &via])
    }))
}

/// REMOTE refuses to lower an IPv4 path MTU below 1400, above the 1300 the suite announces.
fn min_pmtu(remote: &Remote) -> Result<Revert> {
    sysctl_fault(remote, "net.ipv4.route.min_pmtu", "1400")
}

/// REMOTE forgets a learned IPv4 path MTU at once. (Linux's IPv6 keeps it with 0.)
fn pmtu_expires(remote: &Remote) -> Result<Revert> {
    sysctl_fault(remote, "net.ipv4.route.mtu_expires", "0")
}

fn sysctl_fault(remote: &Remote, key: &'static str, value: &str) -> Result<Revert> {
    let old = remote.sysctl(key)?;
    remote.set_sysctl(key, value)?;
    Ok(Box::new(move |r: &Remote| r.set_sysctl(key, &old)))
}

/// Reverts on drop unless reverted explicitly: an error or Ctrl-C never leaves a fault behind
/// (and the lab's teardown removes REMOTE's namespace in any case).
struct Applied<'a> {
    remote: &'a Remote,
    name: &'static str,
    revert: Option<Revert>,
}

impl Applied<'_> {
    fn revert(mut self) -> Result<()> {
        match self.revert.take() {
            Some(revert) => {
                revert(self.remote).with_context(|| format!("reverting fault {} failed", self.name))
            }
            None => Ok(()),
        }
    }
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        if let Some(revert) = self.revert.take() {
            if let Err(e) = revert(self.remote) {
                eprintln!("xtask: warning: reverting fault {}: {e:#}", self.name);
            }
        }
    }
}

/// "caught (pmtu: reason; pmtu6: reason)" or "NOT CAUGHT (expected pmtu to fail)".
fn verdict(fault: &Fault, run: &SuiteRun) -> (bool, String) {
    let missed: Vec<&str> = fault
        .breaks
        .iter()
        .copied()
        .filter(|name| !run.scenario(name).is_some_and(|s| s.failed()))
        .collect();
    // The expected failures first, then any other scenario the fault broke.
    let mut failed: Vec<String> = Vec::new();
    for name in fault.breaks {
        if let Some(s) = run.scenario(name).filter(|s| s.failed()) {
            failed.push(format!("{}: {}", s.name, s.reason()));
        }
    }
    for s in run.failures() {
        if !fault.breaks.contains(&s.name.as_str()) {
            failed.push(format!("{}: {}", s.name, s.reason()));
        }
    }
    if missed.is_empty() {
        return (true, format!("caught ({})", failed.join("; ")));
    }
    let mut text = format!("NOT CAUGHT (expected {} to fail", missed.join(", "));
    for name in &missed {
        match run.scenario(name) {
            None => text.push_str(&format!("; {name} did not run")),
            Some(s) if s.verdict != "pass" => text.push_str(&format!("; {name}: {}", s.verdict)),
            Some(_) => {}
        }
    }
    if !failed.is_empty() {
        text.push_str(&format!("; failed: {}", failed.join("; ")));
    }
    text.push(')');
    (false, text)
}

/// A healthy run: every scenario passes (skips are shown).
fn healthy(lab: &Lab, when: &str) -> Result<bool> {
    let run = lab.run_suite()?;
    let ok = run.passed();
    println!(
        "healthy run {when}: {} ({}, {:.1} s)",
        if ok { "passed" } else { "FAILED" },
        run.counts(),
        run.wall.as_secs_f64()
    );
    for s in run.failures() {
        println!("  FAIL {}: {}", s.name, s.reason());
    }
    for s in run.scenarios.iter().filter(|s| s.verdict == "skip") {
        println!("  skip {}: {}", s.name, s.reason());
    }
    Ok(ok)
}

pub fn faults(pmtu: &Path) -> Result<ExitCode> {
    let lab = Lab::up(pmtu, LAB)?;
    let remote = Remote::from_env(&lab.env()?)?;
    let total = FAULTS.len();
    if !healthy(&lab, "before the faults")? {
        println!("faults: 0/{total} run, healthy run FAILED");
        bail!("the healthy kernel must pass every scenario before faults mean anything");
    }
    let mut caught = 0;
    for fault in FAULTS {
        let revert = match (fault.apply)(&remote) {
            Ok(revert) => revert,
            Err(e) => {
                println!("fault {}: ERROR (applying it: {e:#})", fault.name);
                continue;
            }
        };
        let applied = Applied {
            remote: &remote,
            name: fault.name,
            revert: Some(revert),
        };
        let run = lab.run_suite();
        // A fault left in place would spoil every later result: a failed revert ends the task.
        applied.revert()?;
        match run {
            Ok(run) => {
                let (ok, text) = verdict(fault, &run);
                caught += usize::from(ok);
                println!("fault {}: {text}", fault.name);
            }
            Err(e) if e.is::<Interrupted>() => return Err(e),
            Err(e) => println!("fault {}: ERROR ({e:#})", fault.name),
        }
        exec::check_interrupted()?;
    }
    let healthy_after = healthy(&lab, "after the faults")?;
    drop(lab);
    let all = caught == total && healthy_after;
    println!(
        "faults: {caught}/{total} caught, healthy run {}",
        if healthy_after {
            "passed"
        } else {
            "passed before but FAILED after the faults"
        }
    );
    Ok(if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use std::{os::unix::process::ExitStatusExt, process::ExitStatus, time::Duration};

    use super::*;

    fn run_with(lines: &[&str]) -> SuiteRun {
        let mut lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        lines
            .push(r#"{"type":"summary","passed":0,"failed":0,"skipped":0,"duration_ms":1}"#.into());
        SuiteRun::parse("test", ExitStatus::from_raw(0), &lines, Duration::ZERO).expect("parsed")
    }

    /// A throwaway namespace shaped like the lab's REMOTE (address, route to FAKE_NET via
    /// LOCAL_ADDR), deleted on drop.
    struct TestNetns(String);

    impl TestNetns {
        fn new() -> TestNetns {
            let ns = TestNetns(format!("xtask-test-{}", std::process::id()));
            let ip = |args: &[&str]| {
                exec::run(Command::new("ip").args(args)).expect("setting up the test namespace")
            };
            ip(&["netns", "add", &ns.0]);
            ip(&[
                "-n", &ns.0, "link", "add", "r0", "type", "veth", "peer", "name", "r1",
            ]);
            ip(&["-n", &ns.0, "addr", "add", "192.0.2.2/24", "dev", "r0"]);
            ip(&["-n", &ns.0, "link", "set", "r0", "up"]);
            ip(&["-n", &ns.0, "link", "set", "r1", "up"]);
            ip(&[
                "-n",
                &ns.0,
                "route",
                "add",
                "198.51.100.0/24",
                "via",
                "192.0.2.1",
            ]);
            ns
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    /// Every fault changes REMOTE's namespace and its revert restores it exactly; the root
    /// namespace never changes. Needs root (CI and `cargo xtask test` run as root).
    #[test]
    fn faults_apply_and_revert_inside_remote_namespace_only() {
        if !exec::is_root() || exec::which("nft").is_none() {
            eprintln!("skipped: needs root and nft");
            return;
        }
        let netns = TestNetns::new();
        let remote = Remote {
            netns: netns.0.clone(),
            fake_net: "198.51.100.0/24".into(),
            local_addr: "192.0.2.1".into(),
        };
        remote
            .check_not_root_namespace()
            .expect("a namespace of its own");
        let state = |r: &Remote| -> String {
            let out = |args: &[&str]| exec::output(&mut r.cmd(args)).expect("reading state");
            [
                out(&["nft", "list", "ruleset"]),
                out(&[
                    "sysctl",
                    "net.ipv4.ip_no_pmtu_disc",
                    "net.ipv4.route.min_pmtu",
                    "net.ipv4.route.mtu_expires",
                ]),
                out(&["ip", "route", "show", "198.51.100.0/24"]),
            ]
            .join("")
        };
        let root_state = || {
            exec::output(Command::new("sysctl").args([
                "net.ipv4.ip_no_pmtu_disc",
                "net.ipv4.route.min_pmtu",
                "net.ipv4.route.mtu_expires",
            ]))
            .expect("root sysctls")
        };
        let (before, root_before) = (state(&remote), root_state());
        for fault in FAULTS {
            let revert = (fault.apply)(&remote).expect(fault.name);
            let applied = state(&remote);
            assert_ne!(applied, before, "fault {} changed nothing", fault.name);
            assert_eq!(
                root_state(),
                root_before,
                "fault {} reached root",
                fault.name
            );
            revert(&remote).expect("revert");
            assert_eq!(state(&remote), before, "fault {} not reverted", fault.name);
        }
    }

    #[test]
    fn caught_when_every_expected_scenario_failed() {
        let run = run_with(&[
            r#"{"type":"scenario","name":"pmtu","verdict":"fail","reason":"retransmit was 1500"}"#,
            r#"{"type":"scenario","name":"pmtu6","verdict":"fail","reason":"no retransmit"}"#,
            r#"{"type":"scenario","name":"udp6","verdict":"fail","reason":"reply not fragmented"}"#,
            r#"{"type":"scenario","name":"ping","verdict":"pass"}"#,
        ]);
        let (ok, text) = verdict(&FAULTS[0], &run);
        assert!(ok);
        assert_eq!(
            text,
            "caught (pmtu: retransmit was 1500; pmtu6: no retransmit; udp6: reply not fragmented)"
        );
    }

    #[test]
    fn not_caught_names_the_scenario_that_passed() {
        let run = run_with(&[r#"{"type":"scenario","name":"pmtu","verdict":"pass"}"#]);
        let (ok, text) = verdict(&FAULTS[2], &run);
        assert!(!ok);
        assert_eq!(text, "NOT CAUGHT (expected pmtu to fail)");
    }

    #[test]
    fn a_skipped_scenario_is_not_caught() {
        let run = run_with(&[r#"{"type":"scenario","name":"pmtu","verdict":"skip"}"#]);
        let (ok, text) = verdict(&FAULTS[1], &run);
        assert!(!ok);
        assert_eq!(text, "NOT CAUGHT (expected pmtu to fail; pmtu: skip)");
    }
}
