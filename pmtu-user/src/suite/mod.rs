//! The scenario runner: the context every scenario gets, expectations per REMOTE OS, verdicts.
//!
//! Verdicts never lie: a scenario FAILs only when it returns a [`Broken`] error, i.e. a check
//! on REMOTE's behaviour failed ([`Record::check_eq`], [`broken!`](crate::broken), or
//! [`Blame::silence_fails`] on a wait for REMOTE's answer). Any other error means the scenario
//! could not test REMOTE (LOCAL's sockets, netlink, commands, the responder, a service that is
//! not there): its verdict is ERROR.
pub mod capture;
pub mod fakes;
pub mod hub;
pub mod outfile;
pub mod profile;
pub mod remote_checks;
pub mod remote_state;
pub mod report;
pub mod router;
pub mod run;
pub mod stress;
pub mod tcp;
pub mod udp;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;

/// REMOTE's packets as the responder reported them, which the stories look at.
pub use crate::xdp::events::PacketEvent;
use crate::{
    config::Topology,
    net::{netns, rawsock::RawSocket},
    remote::Remote,
    wire::L2,
    xdp::{responder::Responder, rules::RuleSpec},
};
use capture::Capture;
use fakes::FakeHosts;
use hub::Hub;
pub use profile::{Gateway6Reset, Profile, ProfileName};

/// Upper bound for one reply from REMOTE (a round trip on a local link takes microseconds).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything a scenario needs; shared by all scenarios of a run (and by concurrent flows).
pub struct Ctx {
    pub topo: Topology,
    pub sock: RawSocket,
    pub l2: L2,
    pub responder: Mutex<Responder>,
    pub hub: Hub,
    pub capture: Option<Arc<Capture>>,
    pub profile: Profile,
    /// REMOTE is a lab's (or a VM's) that the suite may reconfigure, restoring it afterwards;
    /// never a real machine, whose settings are only read.
    pub remote_is_ours: bool,
    /// The fake hosts flows speak as.
    pub fakes: FakeHosts,
}

impl Ctx {
    /// Sends one of the fake host's frames on LOCAL_IF.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        if let Some(c) = &self.capture {
            c.sent(frame);
        }
        self.sock.send(frame)
    }

    /// Sets the rule for exactly one fake address (a /32 or /128).
    pub fn set_rule(&self, addr: IpAddr, spec: RuleSpec) -> Result<()> {
        self.lock_responder().set_rule(IpNet::from(addr), spec)
    }

    /// Back to the lab's default for that address (the FAKE_NET observe rule).
    pub fn clear_rule(&self, addr: IpAddr) -> Result<()> {
        self.lock_responder().remove_rule(IpNet::from(addr))
    }

    fn lock_responder(&self) -> std::sync::MutexGuard<'_, Responder> {
        match self.responder.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        }
    }

    /// Runs a command on REMOTE: inside its namespace for a lab, else over ssh from LOCAL's
    /// namespace (never here: REMOTE's route commands must not touch LOCAL).
    pub fn remote(&self, program: &str, args: &[&str]) -> Result<String> {
        Remote::new(
            self.topo.remote_netns.as_deref(),
            self.topo.remote_ssh.as_deref(),
            self.topo.local_netns.as_deref(),
        )?
        .run(program, args)
    }

    /// Runs a shell script on REMOTE in one round trip (over ssh, each command costs one).
    pub fn remote_script(&self, script: &str) -> Result<String> {
        Remote::new(
            self.topo.remote_netns.as_deref(),
            self.topo.remote_ssh.as_deref(),
            self.topo.local_netns.as_deref(),
        )?
        .run_script(script)
    }

    /// Runs a command on LOCAL.
    pub fn local(&self, program: &str, args: &[&str]) -> Result<String> {
        netns::run(self.topo.local_netns.as_deref(), program, args)
    }

    /// A fake endpoint with a random high port, so flows never collide with each other or with
    /// REMOTE's state from earlier runs: FAKE_NET_ADDR(6), or, while the runner spreads
    /// scenarios over FAKE_NET, a host no other flow of the run uses ([`FakeHosts`]).
    pub fn fake(&self, v6: bool) -> SocketAddr {
        SocketAddr::new(self.fakes.next(v6), random_port())
    }

    /// A fake endpoint REMOTE keeps no path MTU for: a new host while spreading, else
    /// FAKE_NET_ADDR(6) after REMOTE's path MTUs are forgotten.
    pub fn fresh_fake(&self, v6: bool) -> Result<SocketAddr> {
        if !self.fakes.spreading() {
            self.reset_routes()?;
        }
        Ok(self.fake(v6))
    }

    /// Removes every rule for a single host (the scenarios'), leaving the fake nets' own.
    pub fn clear_host_rules(&self) -> Result<()> {
        let mut responder = self.lock_responder();
        for (prefix, _) in responder.rules() {
            if prefix.prefix_len() == prefix.max_prefix_len() {
                responder.remove_rule(prefix)?;
            }
        }
        Ok(())
    }

    pub fn remote_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.topo.remote_addr6.into()
        } else {
            self.topo.remote_addr.into()
        }
    }

    /// reset-route: forget every learned PMTU on REMOTE and LOCAL.
    pub fn reset_routes(&self) -> Result<()> {
        let v4: &[&str] = &["route", "flush", "cache"];
        let v6: &[&str] = &["-6", "route", "flush", "cache"];
        for args in [v4, v6] {
            self.local("ip", args)
                .context("flushing LOCAL's route cache")?;
        }
        match self.profile.name {
            ProfileName::Linux => {
                self.remote_script("ip route flush cache && ip -6 route flush cache")
                    .context("flushing REMOTE's route cache")?;
            }
            ProfileName::Openbsd => {
                // PMTUs live in dynamic host routes; "not in table" is fine.
                let fake4 = self.topo.fake_net_addr.to_string();
                let fake6 = self.topo.fake_net_addr6.to_string();
                let _ = self.remote("route", &["-n", "delete", "-host", &fake4]);
                let _ = self.remote("route", &["-n", "delete", "-inet6", "-host", &fake6]);
            }
        }
        Ok(())
    }
}

pub fn random_port() -> u16 {
    let mut b = [0u8; 2];
    if getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = (t as u16).to_le_bytes();
    }
    20000 + u16::from_le_bytes(b) % 40000
}

pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom(&mut b);
    u32::from_le_bytes(b)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// A scenario's measurements, expectations and verdict, filled in as it runs.
#[derive(Default, Debug)]
pub struct Record {
    pub measured: BTreeMap<String, Value>,
    pub expected: BTreeMap<String, Value>,
    pub skipped: Option<String>,
}

impl Record {
    pub fn measured(&mut self, key: &str, value: impl Into<Value>) {
        self.measured.insert(key.into(), value.into());
    }

    pub fn expected(&mut self, key: &str, value: impl Into<Value>) {
        self.expected.insert(key.into(), value.into());
    }

    /// Records both sides; fails with `why` (which gets both numbers) when they differ.
    pub fn check_eq<T: Into<Value> + PartialEq + Copy + std::fmt::Display>(
        &mut self,
        key: &str,
        measured: T,
        expected: T,
        why: &str,
    ) -> Result<()> {
        self.measured(key, measured);
        self.expected(key, expected);
        if measured == expected {
            Ok(())
        } else {
            Err(Broken(format!("{key} was {measured}, expected {expected}: {why}")).into())
        }
    }

    /// Marks the scenario skipped (not a failure) with the reason.
    pub fn skip(&mut self, reason: impl Into<String>) {
        self.skipped = Some(reason.into());
    }
}

pub type ScenarioFn = for<'a> fn(&'a Ctx, &'a mut Record) -> BoxFuture<'a, Result<()>>;

/// One scenario of the suite.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: ScenarioFn,
    /// It changes REMOTE's state that other scenarios' flows share (routes, neighbours, global
    /// counters, sysctls), so it runs by itself; the others may run at once.
    pub alone: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    /// REMOTE is broken: a check on its behaviour failed.
    Fail,
    Skip,
    /// The scenario could not test REMOTE (a LOCAL problem); says nothing about REMOTE.
    Error,
}

/// A check on REMOTE's behaviour failed: the scenario's verdict is FAIL. Made by
/// [`Record::check_eq`], [`broken!`](crate::broken) and [`Blame::silence_fails`].
#[derive(Debug)]
pub struct Broken(pub String);

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Broken {}

/// REMOTE sent nothing that matched within the deadline ([`hub::Flow::wait_for`]). On its own
/// an ERROR (REMOTE unreachable, a service missing); a FAIL where the scenario waits for
/// REMOTE's answer to what it tests ([`Blame::silence_fails`]).
#[derive(Debug)]
pub struct NoReply(pub String);

impl fmt::Display for NoReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoReply {}

/// Like `anyhow::bail!`, for a check on REMOTE's behaviour: the scenario FAILs with this reason.
#[macro_export]
macro_rules! broken {
    ($($arg:tt)*) => {
        return Err($crate::suite::Broken(format!($($arg)*)).into())
    };
}

/// Who is to blame for an error.
pub trait Blame<T> {
    /// For a wait on REMOTE's answer to what the scenario tests (a retransmission after the
    /// ICMP, the reply after a Packet Too Big): REMOTE's silence is its failure. Other errors
    /// (sending, the responder) stay LOCAL's.
    fn silence_fails(self) -> Result<T>;
}

impl<T> Blame<T> for Result<T> {
    fn silence_fails(self) -> Result<T> {
        self.map_err(|e| {
            if e.chain().any(|c| c.is::<NoReply>()) {
                Broken(format!("{e:#}")).into()
            } else {
                e
            }
        })
    }
}

/// The verdict a scenario's error earns: FAIL for a [`Broken`] anywhere in its chain, else
/// ERROR.
pub fn verdict_of(e: &anyhow::Error) -> Verdict {
    if e.chain().any(|c| c.is::<Broken>()) {
        Verdict::Fail
    } else {
        Verdict::Error
    }
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'static str,
    /// The scenario's one-line description (the registry's text).
    #[serde(skip)]
    pub about: &'static str,
    pub verdict: Verdict,
    pub measured: BTreeMap<String, Value>,
    pub expected: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_checks_on_remote_fail_everything_else_is_an_error() {
        let mut rec = Record::default();
        let e = rec
            .check_eq("len", 1500, 1300, "REMOTE ignored it")
            .unwrap_err();
        assert_eq!(verdict_of(&e), Verdict::Fail);
        assert_eq!(
            format!("{e:#}"),
            "len was 1500, expected 1300: REMOTE ignored it"
        );
        assert_eq!(verdict_of(&e.context("in a step")), Verdict::Fail);
        let local = anyhow::anyhow!("sending on LOCAL_IF: Network is down");
        assert_eq!(verdict_of(&local), Verdict::Error);
        let f = || -> Result<()> { broken!("REMOTE sent an atomic fragment: {}", 7) };
        assert_eq!(verdict_of(&f().unwrap_err()), Verdict::Fail);
    }

    #[test]
    fn silence_fails_only_where_remote_had_to_answer() {
        let silent: anyhow::Error = NoReply("no echo reply within 2000 ms".into()).into();
        assert_eq!(verdict_of(&silent), Verdict::Error);
        let silent: Result<()> = Err(NoReply("no echo reply within 2000 ms".into()).into());
        let e = silent
            .map_err(|e| e.context("is echo listening?"))
            .silence_fails()
            .unwrap_err();
        assert_eq!(verdict_of(&e), Verdict::Fail);
        assert_eq!(
            format!("{e:#}"),
            "is echo listening?: no echo reply within 2000 ms"
        );
        let local: Result<()> = Err(anyhow::anyhow!("sending: Network is down"));
        assert_eq!(
            verdict_of(&local.silence_fails().unwrap_err()),
            Verdict::Error
        );
    }
}
