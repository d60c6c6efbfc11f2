//! The one harness of the end-to-end tests: unique names, a guard that removes a lab however
//! the test ends, the `pmtu` binary as a runner, its JSON lines, and waiting for a condition
//! with a deadline (never a sleep as synchronisation).
//!
//! Each test binary includes this with `mod common;` and uses what it needs.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use pmtu::{
    lab::{self, plan},
    net::netns::{self, Identity},
};
use serde_json::Value;

/// The binary under test.
pub const PMTU: &str = env!("CARGO_BIN_EXE_pmtu");

/// A name no other test, test binary or concurrent run uses: `<prefix><pid>-<n>`, short enough
/// for a lab name (namespaces get `-local` / `-remote`).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A lab name owned by one test; the lab, if any, is removed when the guard is dropped,
/// whether the test passed or panicked.
pub struct LabGuard(pub String);

impl LabGuard {
    /// A fresh name; nothing is made yet (a `pmtu run` on it makes a temporary lab).
    pub fn new(prefix: &str) -> Self {
        Self(unique_name(prefix))
    }

    /// A lab brought up with `pmtu lab up`.
    pub fn up(prefix: &str) -> Self {
        let lab = Self::new(prefix);
        let out = lab.pmtu(&["lab", "up"]);
        assert!(out.status.success(), "lab up: {}", text(&out));
        lab
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `pmtu --lab NAME ARGS`.
    pub fn pmtu(&self, args: &[&str]) -> Output {
        Command::new(PMTU)
            .args(["--lab", &self.0])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn remote_ns(&self) -> String {
        plan::remote_ns(&self.0)
    }

    pub fn local_ns(&self) -> String {
        plan::local_ns(&self.0)
    }

    /// A command inside REMOTE's namespace, split at spaces.
    pub fn remote(&self, cmd: &str) -> Output {
        in_netns(&self.remote_ns(), cmd)
    }

    /// Nothing of the lab is left: namespaces, state directory.
    pub fn is_gone(&self) -> bool {
        lab_is_gone(&self.0)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.0) {
            eprintln!("removing lab {}: {e:#}", self.0);
        }
    }
}

/// Nothing of lab `name` is left: namespaces, state directory.
pub fn lab_is_gone(name: &str) -> bool {
    !Path::new("/run/netns").join(plan::local_ns(name)).exists()
        && !Path::new("/run/netns").join(plan::remote_ns(name)).exists()
        && !plan::state_dir(name).exists()
}

/// A network namespace made by a test, deleted on drop.
pub struct NetnsGuard(pub String);

impl NetnsGuard {
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns add {name}: {}", text(&out));
        Self(name)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

/// `ip netns exec NS` + a command split at spaces.
pub fn in_netns(ns: &str, cmd: &str) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd.split(' '))
        .output()
        .unwrap()
}

/// The binary with ARGS, ready to run.
pub fn pmtu_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(PMTU);
    cmd.args(args);
    cmd
}

/// Everything a failed assertion needs to show about a run.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON lines of `pmtu run --format json`: (scenario objects, summary). Panics on a line
/// that is not JSON, an unknown object type, or a missing summary.
pub fn json_run(out: &Output) -> (Vec<Value>, Value) {
    let mut scenarios = Vec::new();
    let mut summary = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", text(out)));
        match v["type"].as_str() {
            Some("scenario") => scenarios.push(v),
            Some("summary") => summary = Some(v),
            other => panic!("unknown object type {other:?}: {line}"),
        }
    }
    let summary = summary.unwrap_or_else(|| panic!("no summary line\n{}", text(out)));
    (scenarios, summary)
}

/// Scenario `name`'s object in a JSON run.
pub fn scenario<'a>(scenarios: &'a [Value], name: &str) -> &'a Value {
    scenarios
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scenario {name} in {scenarios:?}"))
}

/// Polls `cond` until it holds; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What a real TAP consumer (perl's TAP::Parser, the one `prove` uses) read from some TAP.
#[derive(Debug, PartialEq, Eq)]
pub struct TapRead {
    pub plan: String,
    pub run: u32,
    pub passed: Vec<u32>,
    pub failed: Vec<u32>,
    pub skipped: Vec<u32>,
    pub parse_errors: Vec<String>,
}

/// Parses `tap` with TAP::Parser (Debian's perl; `cargo xtask setup` installs it).
pub fn tap_parse(tap: &str) -> TapRead {
    use std::io::Write as _;
    const SCRIPT: &str = r#"
        use TAP::Parser;
        local $/; my $tap = <STDIN>;
        my $p = TAP::Parser->new({ tap => $tap });
        while (defined(my $r = $p->next)) {}
        print "plan=", $p->plan, "\n";
        print "run=", $p->tests_run, "\n";
        print "passed=", join(",", $p->passed), "\n";
        print "failed=", join(",", $p->failed), "\n";
        print "skipped=", join(",", $p->skipped), "\n";
        print "error=$_\n" for $p->parse_errors;
    "#;
    let mut child = Command::new("perl")
        .args(["-e", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("perl (TAP::Parser): run `cargo xtask setup`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(tap.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "TAP::Parser: {}", text(&out));
    let mut read = TapRead {
        plan: String::new(),
        run: 0,
        passed: Vec::new(),
        failed: Vec::new(),
        skipped: Vec::new(),
        parse_errors: Vec::new(),
    };
    let numbers = |v: &str| -> Vec<u32> { v.split(',').filter_map(|n| n.parse().ok()).collect() };
    for line in stdout(&out).lines() {
        match line.split_once('=') {
            Some(("plan", v)) => read.plan = v.into(),
            Some(("run", v)) => read.run = v.parse().unwrap(),
            Some(("passed", v)) => read.passed = numbers(v),
            Some(("failed", v)) => read.failed = numbers(v),
            Some(("skipped", v)) => read.skipped = numbers(v),
            Some(("error", v)) => read.parse_errors.push(v.into()),
            _ => panic!("unexpected TAP::Parser line {line}"),
        }
    }
    read
}

/// Headless Chromium (Debian's `chromium`; `cargo xtask setup` installs it) with `args`, then
/// `file`: (stdout, stderr). Its console messages are logged to stderr.
pub fn chromium(args: &[&str], file: &Path) -> (String, String) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium: run `cargo xtask setup`");
    assert!(out.status.success(), "chromium: {}", text(&out));
    (stdout(&out), stderr(&out))
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl LabGuard {
    /// `pmtu --lab NAME lab exec -- ARGV`, which must succeed.
    pub fn on_remote(&self, argv: &[&str]) {
        let mut args = vec!["lab", "exec", "--"];
        args.extend_from_slice(argv);
        let out = self.pmtu(&args);
        assert!(out.status.success(), "on REMOTE: {argv:?}: {}", text(&out));
    }
}

/// Polls `left` until it returns nothing; panics with `what` and what was still there after
/// `limit`.
pub fn wait_until_none<T: std::fmt::Debug>(
    limit: Duration,
    what: &str,
    mut left: impl FnMut() -> Vec<T>,
) {
    let deadline = Instant::now() + limit;
    loop {
        let now = left();
        if now.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still there after {limit:?}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The identity (nsfs inode) of named network namespace `ns`, if it exists.
pub fn ns_inode(ns: &str) -> Option<u64> {
    fs::metadata(Path::new("/run/netns").join(ns))
        .ok()
        .map(|m| m.ino())
}

/// The identity (inode and cookie) of named network namespace `ns`, if it exists.
pub fn ns_ident(ns: &str) -> Option<Identity> {
    netns::identity(ns)
}

/// Processes whose network namespace is one of `namespaces`, as "PID: command line".
pub fn processes_in(namespaces: &[Identity]) -> Vec<String> {
    namespaces
        .iter()
        .flat_map(|ns| netns::pids_in(*ns))
        .map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect()
}

/// Lab `name`'s record (lab.json), if there is one that parses.
pub fn lab_record(name: &str) -> Option<Value> {
    let text = fs::read_to_string(plan::state_dir(name).join("lab.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits until nothing of lab `name` is left: namespaces, state, mounts, and no process in the
/// `namespaces` it had (teardown and the reaping of orphans are asynchronous).
pub fn assert_gone(name: &str, namespaces: &[Identity]) {
    assert!(
        lab_is_gone(name),
        "lab {name} left namespaces or state behind"
    );
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!("/run/pmtu/{name}/")),
        "lab {name} left a mount: {mounts}"
    );
    wait_until_none(
        Duration::from_secs(5),
        &format!("no process left in lab {name}'s namespaces"),
        || processes_in(namespaces),
    );
}

/// The one JSON object of `pmtu stress --format json` (progress lines go to stderr).
pub fn json_stress(out: &Output) -> Value {
    let text_out = String::from_utf8_lossy(&out.stdout);
    let line = text_out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON object\n{}", text(out)));
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["type"], "stress", "{line}");
    v
}
