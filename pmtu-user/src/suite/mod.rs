//! The scenario runner: the context every scenario gets, expectations per REMOTE OS, verdicts.
pub mod capture;
pub mod hub;
pub mod report;
pub mod run;
pub mod tcp;
pub mod udp;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};
use futures::future::BoxFuture;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;

use crate::{
    config::Topology,
    net::{netns, rawsock::RawSocket},
    remote::Remote,
    wire::L2,
    xdp::responder::{Responder, RuleSpec},
};
use capture::Capture;
use hub::Hub;

/// Upper bound for one reply from REMOTE (a round trip on a local link takes microseconds).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// What REMOTE's OS is expected to do, where RFCs leave room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    Linux,
    Openbsd,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Profile {
    pub name: ProfileName,
    /// tcpfrag6: IP length of the retransmit after a PTB below 1280. Linux's TCP ignores such
    /// PTBs (RFC 8021 removed atomic fragments), so it keeps sending 1500.
    pub tcpfrag6_retransmit: u16,
    /// gateway6: how REMOTE's PMTU-carrying route state is removed.
    pub gateway6_reset: Gateway6Reset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Gateway6Reset {
    /// Linux keeps IPv6 PMTU exceptions on the route: delete and re-add the FAKE_NET6 route.
    ReaddFakeRoute,
    /// OpenBSD: delete the host route to LOCAL_ADDR6; the dynamic PMTU route must survive.
    DeleteGatewayHostRoute,
}

impl Profile {
    pub fn get(name: ProfileName) -> Profile {
        match name {
            ProfileName::Linux => Profile {
                name,
                tcpfrag6_retransmit: 1500,
                gateway6_reset: Gateway6Reset::ReaddFakeRoute,
            },
            ProfileName::Openbsd => Profile {
                name,
                tcpfrag6_retransmit: 1500,
                gateway6_reset: Gateway6Reset::DeleteGatewayHostRoute,
            },
        }
    }
}

/// Everything a scenario needs; shared by all scenarios of a run (and by concurrent flows).
pub struct Ctx {
    pub topo: Topology,
    pub sock: RawSocket,
    pub l2: L2,
    pub responder: Mutex<Responder>,
    pub hub: Hub,
    pub capture: Option<Arc<Capture>>,
    pub profile: Profile,
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

    /// A fresh fake endpoint: FAKE_NET_ADDR(6) with a random high port, so flows never collide
    /// with each other or with REMOTE's state from earlier runs.
    pub fn fake(&self, v6: bool) -> SocketAddr {
        let addr: IpAddr = if v6 {
            self.topo.fake_net_addr6.into()
        } else {
            self.topo.fake_net_addr.into()
        };
        SocketAddr::new(addr, random_port())
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
            Err(anyhow!("{key} was {measured}, expected {expected}: {why}"))
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'static str,
    pub verdict: Verdict,
    pub measured: BTreeMap<String, Value>,
    pub expected: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
}
