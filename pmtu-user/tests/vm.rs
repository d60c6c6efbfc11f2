//! REMOTE as a qemu guest (`--kernel`): the suite against Debian's 6.1 kernel, bad input with
//! one clear message each, and signals during the boot and during the suite. After each test
//! nothing of its lab is left: no namespace, no state, no qemu, no ssh master.
//!
//! The guests boot under TCG on a small machine, so the tests that boot one take turns
//! ([`one_guest_at_a_time`]); the bad-input tests boot nothing and run alongside.
mod common;

use std::{
    fs,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use common::{json_run, pmtu_cmd, stderr, text, wait_until, LabGuard};
use pmtu::lab::plan;

/// The quick suite, in order, as `pmtu run` runs it: the registry's list, so that a new
/// scenario is run against the guest too.
fn quick_suite() -> Vec<&'static str> {
    pmtu::scenarios::ALL.iter().map(|s| s.name).collect()
}

/// How long a boot may take here (TCG, two shared cores) before a test gives up.
const BOOT_LIMIT: Duration = Duration::from_secs(120);

fn one_guest_at_a_time() -> MutexGuard<'static, ()> {
    static GUEST: Mutex<()> = Mutex::new(());
    GUEST.lock().unwrap_or_else(|p| p.into_inner())
}

/// PIDs of processes whose command line mentions lab `name`'s state dir (its qemu, its ssh
/// master).
fn processes_of(name: &str) -> Vec<(i32, String)> {
    let mark = format!("{}/", plan::state_dir(name).display());
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Zombies have an empty command line; they hold no tap and no socket.
        if cmdline.contains(&mark) {
            out.push((pid, cmdline));
        }
    }
    out
}

/// Nothing of the lab: namespaces, state dir, processes.
fn assert_gone(lab: &LabGuard) {
    assert!(lab.is_gone(), "lab {} left namespaces or state", lab.name());
    let left = processes_of(lab.name());
    assert!(
        left.is_empty(),
        "lab {} left processes: {left:?}",
        lab.name()
    );
}

/// `pmtu --lab NAME ARGS` started in the background, output captured.
fn spawn(lab: &LabGuard, args: &[&str]) -> Child {
    let mut cmd = pmtu_cmd(&["--lab", lab.name()]);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Waits until the lab's qemu has started (its pidfile is written).
fn wait_for_qemu(lab: &LabGuard) {
    let pidfile = plan::state_dir(lab.name()).join("qemu.pid");
    wait_until(BOOT_LIMIT, "qemu started", || pidfile.exists());
}

/// A copy of Debian's bzImage (fetched by `cargo xtask setup` or the first `--kernel debian`).
fn debian_bzimage() -> PathBuf {
    let cache = pmtu::lab::vm::image::cache_root();
    let root =
        cache
            .join("kernels")
            .join(fs::read_link(cache.join("kernels/debian")).expect(
                "Debian's kernel is fetched: `cargo xtask setup`, or `pmtu run --kernel debian`",
            ));
    fs::read_dir(root.join("boot"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .unwrap()
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pmtu-vm-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn fetch_debian_once() {
    static FETCHED: Mutex<bool> = Mutex::new(false);
    let mut done = FETCHED.lock().unwrap_or_else(|p| p.into_inner());
    if !*done {
        let mut progress = |line: &str| eprintln!("{line}");
        pmtu::lab::vm::image::resolve(
            "debian",
            None,
            &pmtu::lab::vm::image::cache_root(),
            &mut progress,
        )
        .unwrap();
        *done = true;
    }
}

#[test]
fn debian_6_1_guest_passes_every_scenario_and_is_named_in_the_summary() {
    let _turn = one_guest_at_a_time();
    let lab = LabGuard::new("vm");
    // No names: the whole quick suite, check-setup included.
    let out = lab.pmtu(&["run", "--kernel", "debian", "--format", "json"]);
    let (scenarios, summary) = json_run(&out);
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, quick_suite(), "{}", text(&out));
    let not_passed: Vec<String> = scenarios
        .iter()
        .filter(|s| s["verdict"] != "pass")
        .map(|s| format!("{} {}: {}", s["name"], s["verdict"], s["reason"]))
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:#?}\n{}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(summary["passed"], quick_suite().len(), "{summary}");
    assert_eq!(summary["lab"], "vm", "{summary}");
    let kernel = summary["remote_kernel"].as_str().unwrap_or_default();
    assert!(kernel.starts_with("6.1."), "{summary}");
    assert_ne!(
        Some(kernel.to_string()),
        nix::sys::utsname::uname()
            .ok()
            .map(|u| u.release().to_string_lossy().into_owned()),
        "the kernel under test is the guest's, not this machine's"
    );
    // The same numbers as the namespace lab: the router's 1300 is adopted exactly.
    let pmtu = common::scenario(&scenarios, "pmtu");
    assert_eq!(pmtu["measured"]["retransmit_ip_len"], 1300, "{pmtu}");
    assert_gone(&lab);
}

/// The long scenarios (`pmtu run --all` adds them): a lab's guest is ours, so they change its
/// settings (a 2 s path MTU lifetime, black-hole detection) and put them back, as on a
/// namespace lab; none is skipped as on a real REMOTE.
#[test]
fn debian_6_1_guest_passes_the_long_scenarios_with_its_settings_changed() {
    let _turn = one_guest_at_a_time();
    let lab = LabGuard::new("vm");
    let long: Vec<&str> = pmtu::scenarios::LONG.iter().map(|s| s.name).collect();
    let mut args = vec!["run", "--kernel", "debian", "--format", "json"];
    args.extend(&long);
    let out = lab.pmtu(&args);
    let (scenarios, summary) = json_run(&out);
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, long, "{}", text(&out));
    for s in &scenarios {
        assert_eq!(s["verdict"], "pass", "{s}\n{}", text(&out));
    }
    assert!(out.status.success(), "{}", text(&out));
    for name in ["expire", "expire6"] {
        let s = common::scenario(&scenarios, name);
        assert_eq!(s["measured"]["lifetime_set_s"], 2, "{s}");
    }
    assert!(
        summary["remote_kernel"]
            .as_str()
            .is_some_and(|k| k.starts_with("6.1.")),
        "{summary}"
    );
    assert_gone(&lab);
}

#[test]
fn a_lab_kept_up_serves_scenarios_status_and_exec_until_it_is_taken_down() {
    let _turn = one_guest_at_a_time();
    let lab = LabGuard::new("vm");
    let up = lab.pmtu(&["lab", "up", "--kernel", "debian"]);
    assert!(up.status.success(), "{}", text(&up));
    let status = lab.pmtu(&["lab", "status"]);
    let status_text = common::stdout(&status);
    assert!(status_text.contains("REMOTE a qemu guest"), "{status_text}");
    assert!(
        status_text.contains("running): kernel 6.1."),
        "{status_text}"
    );
    let exec = lab.pmtu(&["lab", "exec", "--", "uname", "-r"]);
    assert!(common::stdout(&exec).starts_with("6.1."), "{}", text(&exec));
    // Words reach REMOTE's command as words, whatever they contain.
    let echo = lab.pmtu(&["lab", "exec", "--", "echo", "a b", "'c'", "$HOME;true"]);
    assert_eq!(
        common::stdout(&echo),
        "a b 'c' $HOME;true\n",
        "{}",
        text(&echo)
    );
    // The environment form reaches the same guest: REMOTE_SSH through the lab's own config.
    let env = common::stdout(&lab.pmtu(&["lab", "status", "--env"]));
    assert!(
        env.contains("REMOTE_SSH='pmtu-remote -F /run/pmtu/"),
        "{env}"
    );
    // The same guest as a real REMOTE, from those variables: REMOTE_SSH over ssh.
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    let real = pmtu_cmd(&["run", "ping", "pmtu", "--format", "json"])
        .envs(vars)
        .output()
        .unwrap();
    assert!(real.status.success(), "{}", text(&real));
    let (_, summary) = json_run(&real);
    assert_eq!(summary["lab"], "remote", "{summary}");
    assert!(
        summary["remote_kernel"]
            .as_str()
            .is_some_and(|k| k.starts_with("6.1.")),
        "REMOTE's uname -r over ssh: {summary}"
    );
    let one = lab.pmtu(&["pmtu6"]);
    assert!(one.status.success(), "{}", text(&one));
    assert!(
        common::stdout(&one).starts_with("REMOTE: kernel 6.1."),
        "{}",
        text(&one)
    );
    // Asking for another kernel on this lab is refused, not silently ignored.
    let other = lab.pmtu(&["run", "ping", "--kernel", "/boot/vmlinuz-other"]);
    assert!(!other.status.success());
    assert!(
        stderr(&other).contains("not a guest of /boot/vmlinuz-other"),
        "{}",
        text(&other)
    );
    assert!(!processes_of(lab.name()).is_empty(), "the lab stays up");
    let down = lab.pmtu(&["lab", "down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_gone(&lab);
}

/// One line, non-zero exit, nothing made or left.
fn refused(lab: &LabGuard, out: &std::process::Output, says: &str) {
    assert!(!out.status.success(), "{}", text(out));
    let err = stderr(out);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("pmtu: "), "{}", text(out));
    assert!(last.contains(says), "expected `{says}`:\n{}", text(out));
    assert_gone(lab);
}

#[test]
fn bad_images_are_refused_with_one_message_before_anything_is_made() {
    let scratch = Scratch::new("bad");
    let lab = LabGuard::new("vm");
    let out = lab.pmtu(&["run", "--kernel", "/no/such/file"]);
    refused(&lab, &out, "/no/such/file: no such file");

    let text_file = scratch.path("notes.txt");
    fs::write(&text_file, "not a kernel\n").unwrap();
    let out = lab.pmtu(&["run", "--kernel", text_file.to_str().unwrap()]);
    refused(&lab, &out, "is not a kernel image");

    fetch_debian_once();
    let mut image = fs::read(debian_bzimage()).unwrap();
    let mid = image.len() / 2;
    image[mid..mid + 4096].fill(0x55);
    let corrupt = scratch.path("vmlinuz-corrupt");
    fs::write(&corrupt, &image).unwrap();
    let out = lab.pmtu(&["run", "--kernel", corrupt.to_str().unwrap()]);
    refused(&lab, &out, "a corrupt kernel image");

    let empty = scratch.path("modules");
    fs::create_dir_all(&empty).unwrap();
    let out = lab.pmtu(&[
        "run",
        "--kernel",
        "debian",
        "--modules",
        empty.to_str().unwrap(),
    ]);
    refused(&lab, &out, "no modules for kernel 6.1.");

    let out = lab.pmtu(&["run", "--modules", empty.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--modules needs --kernel: {}",
        text(&out)
    );
}

#[test]
fn qemu_missing_is_one_message() {
    let lab = LabGuard::new("vm");
    // `ip` is in /usr/sbin too; qemu-system-x86_64 only in /usr/bin.
    let out = pmtu_cmd(&["--lab", lab.name(), "run", "--kernel", "debian"])
        .env("PATH", "/usr/sbin")
        .output()
        .unwrap();
    refused(&lab, &out, "qemu-system-x86_64 is not installed");
}

#[test]
fn a_kernel_without_virtio_net_fails_its_boot_with_the_guests_reason() {
    let _turn = one_guest_at_a_time();
    fetch_debian_once();
    // The bzImage alone, no modules beside it: Debian's virtio_net is a module.
    let scratch = Scratch::new("novirtio");
    let lone = scratch.path("vmlinuz");
    fs::copy(debian_bzimage(), &lone).unwrap();
    let lab = LabGuard::new("vm");
    let out = lab.pmtu(&["run", "ping", "--kernel", lone.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("did not come up: no virtio_net"),
        "{}",
        text(&out)
    );
    assert!(err.contains("last lines of the console"), "{}", text(&out));
    assert_gone(&lab);
}

#[test]
fn ctrl_c_during_the_boot_removes_the_guest_and_the_lab() {
    let _turn = one_guest_at_a_time();
    fetch_debian_once();
    let lab = LabGuard::new("vm");
    let child = spawn(&lab, &["run", "--kernel", "debian"]);
    wait_for_qemu(&lab);
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", text(&out));
    assert_gone(&lab);
}

#[test]
fn sigterm_during_the_suite_removes_the_guest_and_the_lab() {
    let _turn = one_guest_at_a_time();
    fetch_debian_once();
    let lab = LabGuard::new("vm");
    let child = spawn(&lab, &["run", "--kernel", "debian"]);
    // The suite has begun once the target line is out; the first scenario takes a while.
    let state = plan::state_dir(lab.name());
    wait_until(BOOT_LIMIT, "the guest ready", || {
        state.join("vm.json").exists() && state.join("ssh/master.pid").exists()
    });
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.code() == Some(128 + 15) || out.status.signal().is_some(),
        "{}",
        text(&out)
    );
    assert_gone(&lab);
}

#[test]
fn a_guest_left_by_a_killed_run_is_replaced_by_the_next_run() {
    let _turn = one_guest_at_a_time();
    fetch_debian_once();
    let lab = LabGuard::new("vm");
    let child = spawn(&lab, &["run", "--kernel", "debian"]);
    wait_for_qemu(&lab);
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait_with_output().unwrap();
    let stale = processes_of(lab.name());
    assert!(
        stale.iter().any(|(_, c)| c.contains("qemu-system")),
        "SIGKILL leaves the guest: {stale:?}"
    );
    let out = lab.pmtu(&["run", "ping", "--kernel", "debian"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("replacing lab"), "{}", text(&out));
    for (pid, _) in stale {
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || fs::read(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .is_empty(),
            "stale pid {pid} still runs"
        );
    }
    assert_gone(&lab);
}
