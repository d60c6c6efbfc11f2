//! The built-in lab end to end: real namespaces, veth, XDP and REMOTE's services. Needs root.
//!
//! Each test uses a lab of its own (`t<pid>-<n>`) and removes it however the test ends. The
//! built-in services run `pmtu serve` from the real binary (PMTU_TEST_SERVE_EXE overrides it).
use std::{
    fs,
    io::Read as _,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use pmtu::{
    lab::{self, plan, service::INETD, Lab, ServiceChoice, ServiceKind, TempLab, UpOptions},
    net::netns,
    serve,
    xdp::responder::AttachMode,
};

mod common;

use common::{processes_in, unique_name, wait_until_none, LabGuard as Guard, PMTU};

/// Fails clearly when the binary does not have subcommand `sub` yet.
fn require_subcommand(sub: &str) {
    let ok = Command::new(PMTU)
        .args([sub, "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`pmtu {sub}` is not in src/main.rs yet (pmtu::{sub}::cli); meanwhile \
         PMTU_TEST_SERVE_EXE=<a binary with `serve`> runs the library tests"
    );
}

/// The binary whose `serve` runs the built-in services.
fn serve_exe() -> PathBuf {
    match std::env::var_os("PMTU_TEST_SERVE_EXE") {
        Some(exe) => PathBuf::from(exe),
        None => {
            require_subcommand("serve");
            PathBuf::from(PMTU)
        }
    }
}

fn options(services: ServiceChoice) -> UpOptions {
    UpOptions {
        services,
        serve_exe: Some(serve_exe()),
    }
}

fn up(name: &str, services: ServiceChoice) -> Lab {
    let started = Instant::now();
    let lab = lab::up_with(name, AttachMode::Native, &options(services))
        .unwrap_or_else(|e| panic!("lab up {name} (run as root): {e:#}"));
    eprintln!("lab {name} up in {:?}", started.elapsed());
    lab
}

fn have_inetd() -> bool {
    let present = Path::new(INETD).exists();
    if !present {
        eprintln!("{} not installed: skipping the inetd variant", INETD);
    }
    present
}

/// The network namespace's identity, to find processes still inside it after `down`.
fn ns_inode(ns: &str) -> netns::Identity {
    common::ns_ident(ns).unwrap_or_else(|| panic!("no namespace {ns}"))
}

fn chargen_from_local(lab: &Lab, addr: IpAddr) -> Vec<u8> {
    netns::run_in(Some(&lab.local_ns()), || {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::new(addr, plan::CHARGEN_PORT),
            Duration::from_secs(2),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut got = vec![0u8; 2 * serve::LINE_BYTES];
        s.read_exact(&mut got)?;
        Ok(got)
    })
    .unwrap_or_else(|e| panic!("chargen on {addr}: {e:#}"))
}

fn echo_from_local(lab: &Lab, addr: IpAddr, payload: &[u8]) -> Vec<u8> {
    netns::run_in(Some(&lab.local_ns()), || {
        let bind = SocketAddr::new(
            if addr.is_ipv4() {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u8; 16])
            },
            0,
        );
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(payload, SocketAddr::new(addr, plan::ECHO_PORT))?;
        let mut buf = vec![0u8; 65536];
        let (n, _) = s.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
    .unwrap_or_else(|e| panic!("echo on {addr}: {e:#}"))
}

/// Everything a scenario relies on, checked from the outside.
fn check_lab(lab: &Lab, kind: ServiceKind) {
    let t = &lab.topology;
    let (lns, rns) = (lab.local_ns(), lab.remote_ns());
    assert_eq!(t.local_netns.as_deref(), Some(lns.as_str()));
    assert_eq!(t.remote_netns.as_deref(), Some(rns.as_str()));

    // REMOTE reaches LOCAL on both families.
    for (flag, addr) in [
        ("-4", t.local_addr.to_string()),
        ("-6", t.local_addr6.to_string()),
    ] {
        netns::run(Some(&rns), "ping", &[flag, "-c1", "-W2", &addr])
            .unwrap_or_else(|e| panic!("REMOTE pings {addr}: {e:#}"));
    }

    // chargen answers on both families with the RFC 864 pattern; echo on both.
    let expected: Vec<u8> = (0..2).flat_map(serve::chargen_line).collect();
    assert_eq!(chargen_from_local(lab, t.remote_addr.into()), expected);
    assert_eq!(chargen_from_local(lab, t.remote_addr6.into()), expected);
    let payload: Vec<u8> = (0..1400u32).map(|i| i as u8).collect();
    assert_eq!(
        echo_from_local(lab, t.remote_addr6.into(), &payload),
        payload
    );
    assert_eq!(
        echo_from_local(lab, t.remote_addr.into(), &payload),
        payload
    );

    // The responder on LOCAL_IF, the pass-through program on REMOTE's end.
    let local_link = netns::run(Some(&lns), "ip", &["link", "show", "pmtu0"]).unwrap();
    assert!(
        local_link.contains("prog/xdp") && local_link.contains("name pmtu "),
        "{local_link}"
    );
    assert!(
        local_link.contains("link/ether 02:00:00:00:00:01"),
        "{local_link}"
    );
    let remote_link = netns::run(Some(&rns), "ip", &["link", "show", "pmtu1"]).unwrap();
    assert!(remote_link.contains("name pmtu_pass"), "{remote_link}");
    assert!(
        remote_link.contains("link/ether 02:00:00:00:00:02"),
        "{remote_link}"
    );

    // Routes: REMOTE via LOCAL, LOCAL's blackholes.
    let remote_routes = netns::run(Some(&rns), "ip", &["route", "show"]).unwrap();
    assert!(
        remote_routes.contains("198.51.100.0/24 via 192.0.2.1 dev pmtu1"),
        "{remote_routes}"
    );
    let remote_routes6 = netns::run(Some(&rns), "ip", &["-6", "route", "show"]).unwrap();
    assert!(
        remote_routes6.contains("2001:db8:1::/64 via 2001:db8::1 dev pmtu1"),
        "{remote_routes6}"
    );
    let local_routes = netns::run(Some(&lns), "ip", &["route", "show"]).unwrap();
    assert!(
        local_routes.contains("blackhole 198.51.100.0/24"),
        "{local_routes}"
    );
    let local_routes6 = netns::run(Some(&lns), "ip", &["-6", "route", "show"]).unwrap();
    assert!(
        local_routes6.contains("blackhole 2001:db8:1::/64"),
        "{local_routes6}"
    );

    // Sysctls written from a thread inside each namespace landed there.
    for ns in [&lns, &rns] {
        let dad = netns::run(
            Some(ns),
            "sysctl",
            &["-n", "net.ipv6.conf.default.accept_dad"],
        )
        .unwrap();
        assert_eq!(dad.trim(), "0", "accept_dad in {ns}");
    }
    let forward = netns::run(Some(&lns), "sysctl", &["-n", "net.ipv4.ip_forward"]).unwrap();
    assert_eq!(forward.trim(), "0");

    // The root namespace never sees the veth.
    for dev in ["pmtu0", "pmtu1"] {
        assert!(Command::new("ip")
            .args(["link", "show", dev])
            .output()
            .is_ok_and(|o| !o.status.success()));
    }

    // status, through the pinned maps.
    let report = lab::status::status_report(&lab.name).unwrap();
    assert!(report.complete, "{report:?}");
    let service = report.service.as_ref().expect("a service record");
    assert_eq!(service.kind, kind);
    assert!(service.alive, "{report:?}");
    assert_eq!(service.listening.len(), 4, "{:?}", service.listening);
    // FAKE_NET, FAKE_NET6 and the stress prefixes.
    assert_eq!(report.rules.len(), 4, "{:?}", report.rules);
    for stress in ["198.18.0.0/15", "2001:db8:5000::/48"] {
        assert!(
            report.rules.iter().any(|r| r.prefix == stress),
            "{stress}: {:?}",
            report.rules
        );
    }
    assert!(report.rules.iter().all(|r| r.action == "observe"));
    let text = lab::status_text::status(&lab.name).unwrap();
    assert!(text.contains("xdp: pmtu (prog id"), "{text}");
    assert!(text.contains("xdp: pmtu_pass (prog id"), "{text}");
    assert!(
        text.contains("to the fake host 198.51.100.22 via 192.0.2.1"),
        "{text}"
    );

    // open() finds the same lab.
    let opened = lab::open(&lab.name).unwrap();
    assert_eq!(opened.topology, lab.topology);
    assert_eq!(opened.service, lab.service);
    opened.responder().unwrap();
}

/// Everything of lab `name` is gone, including processes in its namespaces.
fn check_gone(name: &str, inodes: &[netns::Identity]) {
    assert!(!lab::exists(name));
    assert!(!netns::exists(&lab::local_ns(name)));
    assert!(!netns::exists(&lab::remote_ns(name)));
    assert!(!lab::state_dir(name).exists());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&format!("/run/pmtu/{name}/")), "{mounts}");
    // Namespace teardown and the reaping of orphans are asynchronous: wait for it.
    wait_until_none(
        Duration::from_secs(5),
        "no process left in the lab's namespaces",
        || processes_in(inodes),
    );
}

fn cycle(services: ServiceChoice, kind: ServiceKind) {
    let name = unique_name("t");
    let _guard = Guard(name.clone());
    let lab = up(&name, services);
    let record = lab.service.clone().expect("a service record");
    assert_eq!(record.kind, kind);
    check_lab(&lab, kind);
    let inodes = [ns_inode(&lab.local_ns()), ns_inode(&lab.remote_ns())];
    let started = Instant::now();
    lab::down(&name).unwrap();
    eprintln!("lab {name} down in {:?}", started.elapsed());
    check_gone(&name, &inodes);
    assert!(!Path::new(&format!("/proc/{}", record.pid)).exists() || is_zombie(record.pid));
    // Again: nothing to do, no error.
    lab::down(&name).unwrap();
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn inetd_lab_up_check_down() {
    if have_inetd() {
        cycle(ServiceChoice::Inetd, ServiceKind::Inetd);
    }
}

#[test]
fn builtin_lab_up_check_down() {
    cycle(ServiceChoice::Builtin, ServiceKind::Builtin);
}

#[test]
fn up_again_replaces_the_lab() {
    let name = unique_name("t");
    let _guard = Guard(name.clone());
    let choice = if have_inetd() {
        ServiceChoice::Inetd
    } else {
        ServiceChoice::Builtin
    };
    let first = up(&name, choice);
    let old = first.service.clone().unwrap();
    let old_inodes = [ns_inode(&first.local_ns()), ns_inode(&first.remote_ns())];
    let second = up(&name, choice);
    let new = second.service.clone().unwrap();
    assert_ne!(old.pid, new.pid);
    assert!(
        !old_inodes.is_empty() && old_inodes.iter().all(|i| i.inode != 0),
        "the old lab's namespaces were identified"
    );
    wait_until_none(
        Duration::from_secs(5),
        "no process left in the replaced lab's namespaces",
        || processes_in(&old_inodes),
    );
    assert_ne!(
        ns_inode(&second.remote_ns()),
        old_inodes[1],
        "REMOTE's namespace was made anew"
    );
    check_lab(&second, new.kind);
}

#[test]
fn down_cleans_half_built_labs() {
    // A record and one namespace, as a run killed early leaves them.
    let name = unique_name("t");
    let _guard = Guard(name.clone());
    {
        let lock = lab::LabLock::acquire_default(&name).unwrap();
        let mut record = lab::record::LabRecord::new(true);
        let state = lab::state_dir(lock.name());
        record.save(&state).unwrap();
        netns::add_recorded(&lab::local_ns(&name), |id| {
            record.namespaces.push(lab::record::MadeNamespace {
                name: lab::local_ns(&name),
                inode: id.inode,
                cookie: id.cookie,
            });
            record.save(&state)
        })
        .unwrap();
        fs::create_dir_all(lab::pin_dir(&name)).unwrap();
    }
    assert!(lab::exists(&name));
    let err = lab::open(&name).unwrap_err().to_string();
    assert!(
        err.contains("is incomplete") && err.contains(&format!("pmtu lab up --lab {name}")),
        "{err}"
    );
    assert!(!lab::status::status_report(&name).unwrap().complete);
    lab::down(&name).unwrap();
    check_gone(&name, &[]);

    // A recorded service PID that now belongs to another process is left alone.
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    fs::create_dir_all(lab::state_dir(&name)).unwrap();
    let record = lab::ServiceRecord {
        kind: ServiceKind::Builtin,
        pid: other.id() as i32,
        start_time: 1,
        argv: vec!["pmtu".into(), "serve".into()],
    };
    fs::write(
        lab::state_dir(&name).join("service.json"),
        serde_json::to_string(&record).unwrap(),
    )
    .unwrap();
    lab::down(&name).unwrap();
    assert!(
        other.try_wait().unwrap().is_none(),
        "down killed a process that was not the lab's"
    );
    other.kill().unwrap();
    other.wait().unwrap();
    check_gone(&name, &[]);
}

#[test]
fn temp_lab_goes_away_on_drop() {
    let name = unique_name("t");
    let _guard = Guard(name.clone());
    let inodes;
    {
        let temp =
            TempLab::up_with(&name, AttachMode::Native, &options(ServiceChoice::Builtin)).unwrap();
        inodes = [ns_inode(&temp.local_ns()), ns_inode(&temp.remote_ns())];
        assert!(lab::exists(&name));
    }
    check_gone(&name, &inodes);
}

#[test]
fn errors_name_the_fix() {
    let name = unique_name("t");
    let err = lab::open(&name).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("no lab `{name}`: run `pmtu lab up --lab {name}`")
    );
    let err = lab::status_text::status(&name).unwrap_err().to_string();
    assert!(err.contains("no lab"), "{err}");
    for bad in ["bad_name", "-x", "much-too-long-lab-name-here"] {
        let err = format!("{:#}", lab::up(bad, AttachMode::Native).unwrap_err());
        assert!(err.contains("is not a lab name"), "{bad}: {err}");
        assert!(lab::down(bad).is_err());
    }
    assert!(!lab::exists(&name));
}

#[test]
fn a_service_that_does_not_come_up_is_named_and_nothing_is_left() {
    use std::os::unix::fs::PermissionsExt as _;
    // A "pmtu" whose `serve` never listens, and one that exits at once.
    let dir = std::env::temp_dir().join(format!("pmtu-lab-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    // The shell stays (no exec) and its `sleep` is a child in the service's process group.
    for (script, body, says) in [
        (
            "silent",
            "#!/bin/sh\nsleep 37\n",
            "REMOTE's chargen (tcp/19) on 192.0.2.2 did not answer within 2 s",
        ),
        (
            "crash",
            "#!/bin/sh\necho cannot serve >&2\nexit 3\n",
            "exited (exit status: 3) before its services came up",
        ),
    ] {
        let exe = dir.join(script);
        fs::write(&exe, body).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let name = unique_name("t");
        let _guard = Guard(name.clone());
        let options = UpOptions {
            services: ServiceChoice::Builtin,
            serve_exe: Some(exe),
        };
        let err = format!(
            "{:#}",
            lab::up_with(&name, AttachMode::Native, &options).unwrap_err()
        );
        assert!(err.contains(says), "{err}");
        if script == "crash" {
            assert!(
                err.contains("cannot serve"),
                "the log's tail is quoted: {err}"
            );
        }
        check_gone(&name, &[]);
    }
    // Neither the script nor its `sleep` survives: both went with the process group.
    let left_running = || -> Vec<String> {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
            })
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&dir.display().to_string()) || c.starts_with("sleep 37"))
            .collect()
    };
    wait_until_none(
        Duration::from_secs(5),
        "the failed service's processes gone",
        left_running,
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// Runs `pmtu ARGS --lab NAME` with extra environment; (success, stdout, stderr).
fn pmtu(args: &[&str], name: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(PMTU)
        .args(args)
        .args(["--lab", name])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_drives_the_lab() {
    require_subcommand("lab");
    let name = unique_name("t");
    let _guard = Guard(name.clone());

    let (ok, out, err) = pmtu(&["lab", "up"], &name, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("lab `{name}` up in")), "{out}");

    let (ok, out, err) = pmtu(&["lab", "status"], &name, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("xdp: pmtu (prog id") && out.contains("running"),
        "{out}"
    );

    // --env gives back the lab's configuration, namespaces included.
    let (ok, out, err) = pmtu(&["lab", "status", "--env"], &name, &[]);
    assert!(ok, "{err}");
    let vars: std::collections::HashMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let topology = pmtu::config::Topology::from_lookup(|k| vars.get(k).cloned()).unwrap();
    assert_eq!(topology, plan::topology(&name));

    // `up` again, with the built-in services: `pmtu serve` from the same binary.
    let (ok, out, err) = pmtu(&["lab", "up"], &name, &[("PMTU_SERVICES", "builtin")]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = pmtu(&["lab", "status", "--json"], &name, &[]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["complete"], true, "{json}");
    assert_eq!(json["service"]["kind"], "builtin", "{json}");
    assert_eq!(json["service"]["alive"], true, "{json}");
    assert_eq!(json["topology"]["REMOTE_NETNS"], lab::remote_ns(&name));
    let inodes = [
        ns_inode(&lab::local_ns(&name)),
        ns_inode(&lab::remote_ns(&name)),
    ];

    let (ok, _, err) = pmtu(&["lab", "up"], &name, &[("PMTU_SERVICES", "bogus")]);
    assert!(!ok && err.contains("PMTU_SERVICES='bogus'"), "{err}");

    let (ok, out, err) = pmtu(&["lab", "down"], &name, &[]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("lab `{name}` removed")), "{out}");
    check_gone(&name, &inodes);
    let (ok, out, err) = pmtu(&["lab", "down"], &name, &[]);
    assert!(ok && out.contains("nothing to remove"), "{out}{err}");
    let (ok, _, err) = pmtu(&["lab", "status"], &name, &[]);
    assert!(!ok && err.contains(&format!("no lab `{name}`")), "{err}");
    let (ok, _, err) = pmtu(&["lab", "up"], "bad_name", &[]);
    assert!(!ok && err.contains("is not a lab name"), "{err}");
}
