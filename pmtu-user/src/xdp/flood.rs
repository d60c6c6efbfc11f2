//! The programs of `pmtu bench responder`: a sender that transmits a frame out of an interface
//! as fast as the kernel can (BPF_PROG_TEST_RUN in live-frames mode, Linux 5.18 and later), and
//! a counter of the ICMP errors that come back, which drops them before the stack sees them.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf,
};
use nix::net::if_::if_nametoindex;
use pmtu_common::{MAP_BENCH_ANSWERS, MAP_FLOOD_L2, PROG_COUNT, PROG_FLOOD, PROG_PASS};

use super::responder::{xdp_mut, OBJECT};
use crate::net::netns;

/// Frames per BPF_PROG_TEST_RUN call; the time is checked between calls.
const CHUNK: u32 = 8192;
/// Frames the kernel sends at once in live-frames mode (its maximum is 256).
const BATCH: u32 = 64;

/// The benchmark's programs, loaded; their links are detached when it is dropped, except those
/// of pinned links (see [`BenchPrograms::swap_link`]).
pub struct BenchPrograms {
    ebpf: Ebpf,
    answers: PerCpuArray<MapData, u64>,
    flood_l2: Array<MapData, [u8; 16]>,
}

/// ICMP errors counted so far by the counter, over IPv4 and over IPv6.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    pub v4: u64,
    pub v6: u64,
}

impl BenchPrograms {
    /// Loads the sender, the counter and the pass-through program.
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(OBJECT).context("loading the XDP object")?;
        for name in [PROG_FLOOD, PROG_COUNT, PROG_PASS] {
            xdp_mut(&mut ebpf, name)?
                .load()
                .map_err(|e| anyhow!("the kernel refused XDP program `{name}`: {e:?}"))?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the XDP object"))
        };
        let answers = take(MAP_BENCH_ANSWERS)?.try_into()?;
        let flood_l2 = take(MAP_FLOOD_L2)?.try_into()?;
        Ok(Self {
            ebpf,
            answers,
            flood_l2,
        })
    }

    /// Attaches program `prog` (native mode) to `iface` in namespace `ns`, until dropped.
    pub fn attach(&mut self, prog: &str, ns: &str, iface: &str) -> Result<()> {
        let p = xdp_mut(&mut self.ebpf, prog)?;
        netns::run_in(Some(ns), || {
            p.attach(iface, XdpMode::Driver).with_context(|| {
                format!("attaching XDP program `{prog}` to `{iface}` in namespace `{ns}`")
            })?;
            Ok(())
        })
    }

    /// Makes the pinned XDP link at `pin` run program `prog` instead of its own; the link stays
    /// pinned (and attached) after this is dropped.
    pub fn swap_link(&mut self, pin: &Path, prog: &str) -> Result<()> {
        let link = FdLink::from(
            PinnedLink::from_pin(pin)
                .with_context(|| format!("opening the pinned XDP link {}", pin.display()))?,
        );
        let link = XdpLink::try_from(link)
            .map_err(|e| anyhow!("{} is not an XDP link: {e}", pin.display()))?;
        let p = xdp_mut(&mut self.ebpf, prog)?;
        let id = p
            .attach_to_link(link)
            .with_context(|| format!("putting program `{prog}` on the link {}", pin.display()))?;
        // Only this process's handle on the link is dropped: the pin keeps it.
        drop(p.take_link(id)?);
        Ok(())
    }

    /// The ICMP errors the counter has counted, on every CPU.
    pub fn answers(&self) -> Result<Answers> {
        let sum = |slot: u32| -> Result<u64> {
            let values = self
                .answers
                .get(&slot, 0)
                .context("reading the count of answers")?;
            Ok(values.iter().sum())
        };
        Ok(Answers {
            v4: sum(0)?,
            v6: sum(1)?,
        })
    }

    /// Makes the sender write `frame`'s Ethernet header into every frame it sends: call it
    /// before [`BenchPrograms::flood`] with the same frame.
    pub fn set_flood_frame(&mut self, frame: &[u8]) -> Result<()> {
        let mut l2 = [0u8; 16];
        l2[..14].copy_from_slice(
            frame
                .get(..14)
                .context("the flood's frame has no Ethernet header")?,
        );
        self.flood_l2
            .set(0, l2, 0)
            .context("writing the flood's Ethernet header")
    }

    /// Sends `frame` out of `iface` (in namespace `ns`) from the sender program, in live-frames
    /// mode, until `until` or until `stop` says so. Returns the frames handed to the interface.
    pub fn flood(
        &self,
        ns: &str,
        iface: &str,
        frame: &[u8],
        until: Duration,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<u64> {
        let p: &Xdp = self
            .ebpf
            .program(PROG_FLOOD)
            .ok_or_else(|| anyhow!("program {PROG_FLOOD} missing from the XDP object"))?
            .try_into()?;
        let frame_len = u32::try_from(frame.len()).context("the flood's frame")?;
        netns::run_in(Some(ns), || {
            // The interface index is resolved in the caller's namespace, this one.
            let ifindex = if_nametoindex(iface)
                .with_context(|| format!("no interface `{iface}` in namespace `{ns}`"))?;
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex.
            let md: Vec<u8> = [0, frame_len, 0, ifindex, 0, 0]
                .iter()
                .flat_map(|v: &u32| v.to_ne_bytes())
                .collect();
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < until && !stop() {
                p.test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&md),
                    repeat: CHUNK,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..TestRunOptions::new()
                })
                .context("BPF_PROG_TEST_RUN in live-frames mode")?;
                sent += u64::from(CHUNK);
            }
            Ok(sent)
        })
    }
}
