//! `pmtu respond` end to end: the real binary attaches the XDP responder to LOCAL's veth in a
//! throwaway pair of namespaces; REMOTE's kernel must adopt the announced MTU.
use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr, UdpSocket},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{libc, setsockopt_impl, sockopt_impl, sys::socket::setsockopt};
use pmtu::net::netns;

mod common;

use common::{NetnsGuard, PMTU};

/// Two namespaces joined by a veth (LOCAL `v0` 192.0.2.1 / 2001:db8::1, REMOTE `v1` .2 / ::2),
/// REMOTE routing the fake nets via LOCAL. Deleted on drop, also when a test fails.
struct Pair {
    local: String,
    remote: String,
    _guards: [NetnsGuard; 2],
}

impl Pair {
    fn new() -> Pair {
        let guards = [NetnsGuard::new("prl"), NetnsGuard::new("prr")];
        let pair = Pair {
            local: guards[0].0.clone(),
            remote: guards[1].0.clone(),
            _guards: guards,
        };
        let (l, r) = (Some(pair.local.as_str()), Some(pair.remote.as_str()));
        let ip = |ns, args: &str| {
            netns::run(ns, "ip", &args.split(' ').collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("{e:#}"));
        };
        ip(
            l,
            &format!("link add v0 type veth peer name v1 netns {}", pair.remote),
        );
        for (ns, dev, n) in [(l, "v0", 1), (r, "v1", 2)] {
            netns::run(ns, "sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"]).unwrap();
            ip(ns, &format!("link set {dev} up"));
            ip(ns, &format!("addr add 192.0.2.{n}/24 dev {dev}"));
            ip(ns, &format!("addr add 2001:db8::{n}/64 dev {dev} nodad"));
        }
        ip(r, "route add 198.51.100.0/24 via 192.0.2.1");
        ip(r, "route add 2001:db8:1::/64 via 2001:db8::1");
        ip(l, "route add blackhole 198.51.100.0/24");
        ip(l, "route add blackhole 2001:db8:1::/64");
        pair
    }

    fn respond(&self, rules: &[&str]) -> Responder {
        let mut cmd = Command::new(PMTU);
        cmd.args([
            "respond",
            "--netns",
            &self.local,
            "--iface",
            "v0",
            "--peer",
            "v1",
        ])
        .args(["--peer-netns", &self.remote]);
        for r in rules {
            cmd.args(["--rule", r]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pmtu respond");
        // Ready once it says how to stop it.
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut banner = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C to stop") {
                break;
            }
        }
        assert!(
            banner.contains("Ctrl-C"),
            "pmtu respond did not start:\n{banner}"
        );
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Responder {
            banner,
            child,
            events: rx,
            seen: Vec::new(),
            rest: Some(std::thread::spawn(move || {
                lines.map_while(Result::ok).collect::<Vec<_>>().join("\n")
            })),
        }
    }

    /// `ip route get` on REMOTE, waiting until it shows `mtu N` or the deadline passes.
    fn wait_route_mtu(&self, dst: IpAddr, mtu: u32) -> String {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let out = netns::run(
                Some(&self.remote),
                "ip",
                &["route", "get", &dst.to_string()],
            )
            .unwrap();
            if out.contains(&format!("mtu {mtu}")) || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A UDP datagram of IP length 1500 with DF (IPv4) from REMOTE to `dst`.
    fn send_1500(&self, dst: IpAddr) {
        self.send_1500s(dst, 1, libc::IP_PMTUDISC_DO);
    }

    /// `count` such datagrams; with IP_PMTUDISC_PROBE they stay 1500 long (with DF) after
    /// REMOTE has learnt a smaller path MTU.
    fn send_1500s(&self, dst: IpAddr, count: usize, pmtudisc: libc::c_int) {
        netns::run_in(Some(&self.remote), || {
            let (bind, payload) = match dst {
                IpAddr::V4(_) => ("0.0.0.0:0", 1500 - 28),
                IpAddr::V6(_) => ("[::]:0", 1500 - 48),
            };
            let sock = UdpSocket::bind(bind)?;
            // IP(V6)_PMTUDISC_DO never fragments locally; PROBE keeps sending 1500 with DF.
            // Both families use the same values.
            match dst {
                IpAddr::V4(_) => setsockopt(&sock, IpMtuDiscover, &pmtudisc)?,
                IpAddr::V6(_) => setsockopt(&sock, Ipv6MtuDiscover, &pmtudisc)?,
            }
            for _ in 0..count {
                sock.send_to(&vec![b'x'; payload], SocketAddr::new(dst, 9))?;
            }
            Ok(())
        })
        .unwrap();
    }
}

sockopt_impl!(
    /// IP_MTU_DISCOVER (ip(7)), which nix does not name.
    IpMtuDiscover,
    SetOnly,
    libc::IPPROTO_IP,
    libc::IP_MTU_DISCOVER,
    libc::c_int
);
sockopt_impl!(
    /// IPV6_MTU_DISCOVER (ipv6(7)).
    Ipv6MtuDiscover,
    SetOnly,
    libc::IPPROTO_IPV6,
    libc::IPV6_MTU_DISCOVER,
    libc::c_int
);

struct Responder {
    /// What it printed before "Ctrl-C to stop": the rules in force.
    banner: String,
    child: Child,
    events: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    rest: Option<std::thread::JoinHandle<String>>,
}

impl Responder {
    /// Waits (3 s at most) for an event line containing `text`.
    fn wait_event(&mut self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.seen.iter().any(|l| l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return false,
            }
        }
        true
    }

    /// Waits (5 s at most) until `n` event lines contain `text`.
    fn wait_events(&mut self, text: &str, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.seen.iter().filter(|l| l.contains(text)).count();
            let left = deadline.saturating_duration_since(Instant::now());
            if seen >= n {
                return seen;
            }
            match self.events.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return seen,
            }
        }
    }

    /// Stops it with SIGINT like a user would; returns (stdout, stderr after the banner).
    fn stop(mut self) -> (String, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        let err = self.rest.take().unwrap().join().unwrap();
        assert!(
            out.status.success(),
            "pmtu respond exited with {}: {err}",
            out.status
        );
        self.seen.extend(self.events.try_iter());
        (self.seen.join("\n"), err)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn xdp_attached(ns: &str, dev: &str) -> bool {
    netns::run(Some(ns), "ip", &["link", "show", dev])
        .map(|o| o.contains("xdp"))
        .unwrap_or(false)
}

#[test]
fn remote_adopts_the_announced_mtu_on_both_families() {
    let pair = Pair::new();
    let responder = pair.respond(&["198.51.100.0/24=1300", "2001:db8:1::/64=1300"]);
    assert!(xdp_attached(&pair.local, "v0"));

    let fake4: IpAddr = "198.51.100.22".parse().unwrap();
    let fake6: IpAddr = "2001:db8:1::22".parse().unwrap();
    pair.send_1500(fake4);
    pair.send_1500(fake6);
    let route4 = pair.wait_route_mtu(fake4, 1300);
    let route6 = pair.wait_route_mtu(fake6, 1300);

    let (events, log) = responder.stop();
    assert!(
        route4.contains("mtu 1300"),
        "REMOTE's IPv4 route has no PMTU 1300: {route4}"
    );
    assert!(
        route6.contains("mtu 1300"),
        "REMOTE's IPv6 route has no PMTU 1300: {route6}"
    );
    assert!(
        events.contains("udp 192.0.2.2.")
            && events.contains("> 198.51.100.22.9: len 1480, ip 1500 DF -> ANSWERED (mtu 1300)"),
        "no IPv4 event for the datagram:\n{events}"
    );
    assert!(
        events.contains("> 2001:db8:1::22.9: len 1460, ip 1500 -> ANSWERED (mtu 1300)"),
        "no IPv6 event for the datagram:\n{events}"
    );
    assert!(log.contains("answered=2"), "counters: {log}");
    // Detached on exit.
    assert!(
        !xdp_attached(&pair.local, "v0"),
        "XDP still attached after exit"
    );
    assert!(
        !xdp_attached(&pair.remote, "v1"),
        "pass program still attached after exit"
    );
}

#[test]
fn blackhole_rule_sends_no_icmp() {
    let pair = Pair::new();
    let mut responder = pair.respond(&["198.51.100.0/24=1300,action=blackhole"]);
    let fake4: IpAddr = "198.51.100.22".parse().unwrap();
    pair.send_1500(fake4);
    let reported = responder.wait_event("ip 1500 DF -> blackholed");
    let (events, log) = responder.stop();
    assert!(reported, "no black-hole event: {events}");
    // The responder's own count: nothing answered, one packet black-holed.
    assert!(
        log.contains("answered=0") && log.contains("blackholed=1"),
        "counters: {log}"
    );
    let route = netns::run(Some(&pair.remote), "ip", &["route", "get", "198.51.100.22"]).unwrap();
    assert!(
        !route.contains("mtu 1300"),
        "a black hole must not lower the PMTU: {route}"
    );
}

/// The `answered=N` counter of the line `pmtu respond` prints when it stops.
fn answered(log: &str) -> u64 {
    log.split_whitespace()
        .find_map(|w| w.strip_prefix("answered="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no answered= counter in {log}"))
}

#[test]
fn by_default_what_fits_passes_and_icmp_is_limited_to_100_a_second() {
    let pair = Pair::new();
    // A rule over LOCAL's own address: REMOTE's pings fit the MTU and must reach LOCAL.
    let mut responder = pair.respond(&["192.0.2.1/32=1300", "198.51.100.0/24=1300"]);
    assert!(
        responder.banner.contains(
            "192.0.2.1/32: mtu 1300, answer, at most 100 ICMP a second, packets that are not \
             answered pass"
        ),
        "the rules in force are not printed: {}",
        responder.banner
    );
    let ping = netns::run(Some(&pair.remote), "ping", &["-c1", "-W2", "192.0.2.1"]);
    assert!(ping.is_ok(), "a packet that fits was dropped: {ping:?}");

    // 300 too-big datagrams at once: 100 answers, or up to 100 more if a second turns meanwhile.
    let fake4: IpAddr = "198.51.100.22".parse().unwrap();
    pair.send_1500s(fake4, 300, libc::IP_PMTUDISC_PROBE);
    let seen = responder.wait_events("> 198.51.100.22.9: len 1480", 300);
    assert_eq!(seen, 300, "not every datagram was reported");
    let (_, log) = responder.stop();
    let n = answered(&log);
    assert!(
        (100..=200).contains(&n),
        "{n} ICMP answers for a burst of 300: {log}"
    );
}

#[test]
fn budget_0_sends_without_limit_when_asked() {
    let pair = Pair::new();
    let mut responder = pair.respond(&["198.51.100.0/24=1300,budget=0"]);
    assert!(
        responder
            .banner
            .contains("198.51.100.0/24: mtu 1300, answer, ICMP without limit"),
        "{}",
        responder.banner
    );
    let fake4: IpAddr = "198.51.100.22".parse().unwrap();
    pair.send_1500s(fake4, 300, libc::IP_PMTUDISC_PROBE);
    assert_eq!(
        responder.wait_events("> 198.51.100.22.9: len 1480", 300),
        300
    );
    let (_, log) = responder.stop();
    assert_eq!(answered(&log), 300, "{log}");
}

/// Runs `pmtu ARGS`; returns (exit code, stderr).
fn pmtu(args: &[&str]) -> (i32, String) {
    let out = Command::new(PMTU).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_gets_one_clear_error_and_leaves_nothing_attached() {
    let pair = Pair::new();
    let ns = pair.local.as_str();
    let cases = [
        (
            ns,
            "nosuch0",
            "198.51.100.0/24=1300",
            "no interface `nosuch0`",
        ),
        (
            ns,
            "v0",
            "198.51.100.0/33=1300",
            "not an IPv4 or IPv6 prefix",
        ),
        (ns, "v0", "198.51.100.0/24=12ab", "is not a number"),
        (ns, "v0", "198.51.100.0/24=60", "below the minimum of IPv4"),
        (
            ns,
            "v0",
            "2001:db8:1::/64=1200",
            "below the minimum of IPv6",
        ),
        (
            "pmtu-no-such-ns",
            "v0",
            "198.51.100.0/24=1300",
            "does not exist",
        ),
    ];
    for (netns, iface, rule, says) in cases {
        let args = ["respond", "--netns", netns, "-i", iface, "-r", rule];
        let (code, err) = pmtu(&args);
        assert_ne!(code, 0, "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: expected `{says}` in: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
    }
    assert!(!xdp_attached(ns, "v0"));

    // Somebody else's XDP program on the interface.
    let other = pair.respond(&["198.51.100.0/24=1300"]);
    let (code, err) = pmtu(&[
        "respond",
        "--netns",
        ns,
        "-i",
        "v0",
        "-r",
        "198.51.100.0/24=1300",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("already attached"), "{err}");
    drop(other.stop());
    assert!(!xdp_attached(ns, "v0"));
}

#[test]
fn not_root_is_refused_with_a_hint() {
    // Run as `nobody` through setpriv when it is available; skip quietly otherwise.
    let Ok(out) = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", PMTU])
        .args(["respond", "-i", "lo", "-r", "198.51.100.0/24=1300"])
        .output()
    else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("needs root"), "{err}");
}
