//! Demultiplexes the responder's events to the flows that wait for them.
//!
//! A flow is one fake endpoint (fake address, fake port): REMOTE's packets toward it are
//! delivered to its channel. Nothing here is per scenario, so any number of flows can run at
//! once (the stress mode relies on that). Fragments without an upper-layer header are matched
//! by their fragment id, learned from the first fragment.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use tokio::{
    sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender},
    time::Instant,
};

use super::{
    capture::{Capture, MonoClock},
    NoReply,
};
use crate::xdp::{events::PacketEvent, responder::EventStream};

/// One flow's channel, and the fragment ids routed to it (removed with it).
struct Subscriber {
    tx: UnboundedSender<PacketEvent>,
    fragment_ids: Vec<(IpAddr, u32)>,
}

#[derive(Default)]
struct Routes {
    flows: HashMap<SocketAddr, Subscriber>,
    /// (fake address, fragment id) -> flow, for non-initial fragments.
    fragments: HashMap<(IpAddr, u32), SocketAddr>,
}

#[derive(Clone)]
pub struct Hub {
    routes: Arc<Mutex<Routes>>,
}

impl Hub {
    /// Starts the task that reads `events` until the hub's last clone is dropped.
    pub fn start(mut events: EventStream, capture: Option<Arc<Capture>>) -> Hub {
        let hub = Hub::unfed();
        let weak = Arc::downgrade(&hub.routes);
        let clock = MonoClock::now();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                if events.next_batch(&mut batch).await.is_err() {
                    return;
                }
                let Some(routes) = weak.upgrade() else { return };
                let mut routes = match routes.lock() {
                    Ok(r) => r,
                    Err(poisoned) => poisoned.into_inner(),
                };
                for raw in batch.drain(..) {
                    if let Some(c) = &capture {
                        c.event(&raw, &clock);
                    }
                    routes.deliver(PacketEvent::from(&raw));
                }
            }
        });
        hub
    }

    /// A hub with no reader: its routes are only fed through `deliver`.
    fn unfed() -> Hub {
        Hub {
            routes: Arc::new(Mutex::new(Routes::default())),
        }
    }

    /// Subscribes to REMOTE's packets toward `fake`.
    pub fn flow(&self, fake: SocketAddr) -> Flow {
        let (tx, rx) = unbounded_channel();
        let sub = Subscriber {
            tx,
            fragment_ids: Vec::new(),
        };
        self.lock().flows.insert(fake, sub);
        Flow {
            fake,
            rx,
            hub: self.clone(),
            seen: Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        match self.routes.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Routes {
    /// Forgets flow `fake` and its fragment ids (not the whole table: thousands of flows may
    /// come and go each second).
    fn remove(&mut self, fake: SocketAddr) {
        if let Some(sub) = self.flows.remove(&fake) {
            for id in sub.fragment_ids {
                if self.fragments.get(&id) == Some(&fake) {
                    self.fragments.remove(&id);
                }
            }
        }
    }

    fn deliver(&mut self, ev: PacketEvent) {
        let key = if let Some(port) = ev.quoted_source_port() {
            // An ICMP error about one of the fake endpoint's packets.
            Some(SocketAddr::new(ev.dst, port))
        } else if ev.has_l4 {
            let key = SocketAddr::new(ev.dst, ev.dport);
            if let (Some(fr), Some(sub)) = (ev.fragment, self.flows.get_mut(&key)) {
                self.fragments.insert((ev.dst, fr.id), key);
                sub.fragment_ids.push((ev.dst, fr.id));
            }
            Some(key)
        } else {
            ev.fragment
                .and_then(|fr| self.fragments.get(&(ev.dst, fr.id)).copied())
        };
        let Some(key) = key else {
            log::debug!("event for no flow: {ev}");
            return;
        };
        if let Some(sub) = self.flows.get(&key) {
            if sub.tx.send(ev).is_err() {
                self.remove(key);
            }
        } else {
            log::debug!("event for no flow: {ev}");
        }
    }
}

/// REMOTE's packets toward one fake endpoint, in arrival order.
pub struct Flow {
    pub fake: SocketAddr,
    rx: UnboundedReceiver<PacketEvent>,
    hub: Hub,
    /// Everything received so far, for reports.
    pub seen: Vec<PacketEvent>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.hub.lock().remove(self.fake);
    }
}

impl Flow {
    /// The next packet, or None when `deadline` passes first.
    pub async fn next_until(&mut self, deadline: Instant) -> Option<PacketEvent> {
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Ok(Some(ev)) => {
                log::debug!("{}: {ev}", self.fake);
                self.seen.push(ev.clone());
                Some(ev)
            }
            _ => None,
        }
    }

    /// Waits for a packet matching `pred`, at most `timeout`; the error (a [`NoReply`]) says
    /// what was awaited and what came instead.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&PacketEvent) -> bool,
    ) -> Result<PacketEvent> {
        let deadline = Instant::now() + timeout;
        let first = self.seen.len();
        while let Some(ev) = self.next_until(deadline).await {
            if pred(&ev) {
                return Ok(ev);
            }
        }
        let others = &self.seen[first..];
        let saw = if others.is_empty() {
            "nothing from REMOTE".to_string()
        } else {
            let shown: Vec<String> = others.iter().take(2).map(|e| e.to_string()).collect();
            format!(
                "{} other packet(s), e.g. {}",
                others.len(),
                shown.join("; ")
            )
        };
        Err(NoReply(format!(
            "no {what} within {} ms ({saw})",
            timeout.as_millis()
        ))
        .into())
    }

    /// Every packet that arrives before `deadline`.
    pub async fn collect_until(&mut self, deadline: Instant) -> Vec<PacketEvent> {
        let mut out = Vec::new();
        while let Some(ev) = self.next_until(deadline).await {
            out.push(ev);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use pmtu_common::{FRAG_IS_FRAGMENT, FRAG_MORE};

    use super::*;
    use crate::xdp::events::{
        tests::{icmp_error_head, raw, with_head},
        IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn remote_of(to: SocketAddr) -> &'static str {
        if to.is_ipv4() {
            "192.0.2.2"
        } else {
            "2001:db8::2"
        }
    }

    /// REMOTE's TCP segment of IP length `tag` toward `to`.
    fn toward(to: SocketAddr, tag: u16) -> PacketEvent {
        let mut e = raw(remote_of(to), &to.ip().to_string());
        (e.proto, e.has_l4, e.sport, e.dport, e.ip_len) = (IPPROTO_TCP, 1, 19, to.port(), tag);
        PacketEvent::from(&e)
    }

    /// REMOTE's UDP fragment `id` of IP length `tag` toward `to`: the first one (with the UDP
    /// header) or a later one (without).
    fn fragment(to: SocketAddr, id: u32, first: bool, tag: u16) -> PacketEvent {
        let mut e = raw(remote_of(to), &to.ip().to_string());
        (e.proto, e.frag_id, e.ip_len) = (IPPROTO_UDP, id, tag);
        if first {
            (e.has_l4, e.sport, e.dport) = (1, 7, to.port());
            e.frag = FRAG_IS_FRAGMENT | FRAG_MORE;
        } else {
            (e.frag, e.frag_off) = (FRAG_IS_FRAGMENT, 1248);
        }
        PacketEvent::from(&e)
    }

    /// The tags of what `flow` has been sent so far.
    fn received(flow: &mut Flow) -> Vec<u16> {
        std::iter::from_fn(|| flow.rx.try_recv().ok())
            .map(|e| e.ip_len)
            .collect()
    }

    fn deliver(hub: &Hub, ev: PacketEvent) {
        hub.lock().deliver(ev);
    }

    const A: &str = "198.51.100.22:40000";
    const B: &str = "198.51.100.22:40001";
    const C: &str = "[2001:db8:1::22]:40000";

    #[test]
    fn events_reach_the_flow_of_their_fake_endpoint() {
        let hub = Hub::unfed();
        let (mut a, mut b, mut c) = (hub.flow(addr(A)), hub.flow(addr(B)), hub.flow(addr(C)));
        deliver(&hub, toward(addr(B), 2));
        deliver(&hub, toward(addr(A), 1));
        deliver(&hub, toward(addr(C), 3));
        deliver(&hub, toward(addr(A), 4));
        assert_eq!(received(&mut a), [1, 4]);
        assert_eq!(received(&mut b), [2]);
        assert_eq!(received(&mut c), [3]);

        // An ICMP error goes to the flow whose packet it quotes, not to the ICMP "ports".
        let mut e = with_head(
            raw("192.0.2.2", "198.51.100.22"),
            &icmp_error_head(false, &[], 0, 40001),
        );
        (e.proto, e.has_l4, e.sport, e.dport, e.ip_len) = (IPPROTO_ICMP, 1, 3, 3, 5);
        deliver(&hub, PacketEvent::from(&e));
        assert_eq!(received(&mut b), [5]);
        assert!(received(&mut a).is_empty());
    }

    #[test]
    fn fragments_without_l4_follow_their_fragment_id() {
        let hub = Hub::unfed();
        let (mut a, mut c) = (hub.flow(addr(A)), hub.flow(addr(C)));
        deliver(&hub, fragment(addr(C), 7, true, 1));
        deliver(&hub, fragment(addr(C), 7, false, 2));
        // Same id toward another fake address: a different packet, no flow learned it.
        deliver(&hub, fragment(addr(A), 7, false, 3));
        // An id no first fragment announced.
        deliver(&hub, fragment(addr(C), 8, false, 4));
        deliver(&hub, fragment(addr(A), 9, true, 5));
        deliver(&hub, fragment(addr(A), 9, false, 6));
        deliver(&hub, fragment(addr(C), 7, false, 7));
        assert_eq!(received(&mut c), [1, 2, 7]);
        assert_eq!(received(&mut a), [5, 6]);
    }

    #[test]
    fn unknown_endpoints_are_dropped() {
        let hub = Hub::unfed();
        let mut a = hub.flow(addr(A));
        deliver(&hub, toward(addr(B), 1));
        deliver(&hub, toward(addr("198.51.100.23:40000"), 2));
        deliver(&hub, fragment(addr(A), 3, false, 3));
        assert!(received(&mut a).is_empty());
        assert_eq!(
            hub.lock().flows.len(),
            1,
            "a dropped event subscribes nobody"
        );
    }

    #[test]
    fn a_dropped_flow_unsubscribes() {
        let hub = Hub::unfed();
        let (a, mut b) = (hub.flow(addr(A)), hub.flow(addr(B)));
        deliver(&hub, fragment(addr(A), 7, true, 1));
        deliver(&hub, fragment(addr(B), 8, true, 2));
        drop(a);
        {
            let routes = hub.lock();
            assert!(!routes.flows.contains_key(&addr(A)));
            assert_eq!(routes.fragments.values().collect::<Vec<_>>(), [&addr(B)]);
        }
        // A new flow on the same endpoint does not inherit the old one's fragments.
        let mut again = hub.flow(addr(A));
        deliver(&hub, fragment(addr(A), 7, false, 3));
        deliver(&hub, fragment(addr(B), 8, false, 4));
        assert!(received(&mut again).is_empty());
        assert_eq!(received(&mut b), [2, 4]);

        // A flow whose receiver is gone without the Flow's clean-up is forgotten on delivery.
        let (tx, rx) = unbounded_channel();
        let sub = Subscriber {
            tx,
            fragment_ids: Vec::new(),
        };
        hub.lock().flows.insert(addr(C), sub);
        drop(rx);
        deliver(&hub, toward(addr(C), 5));
        assert!(!hub.lock().flows.contains_key(&addr(C)));
    }

    #[tokio::test]
    async fn wait_for_says_what_came_instead() {
        let hub = Hub::unfed();
        let mut a = hub.flow(addr(A));
        let is_1300 = |e: &PacketEvent| e.ip_len == 1300;
        let err = a
            .wait_for("retransmit", Duration::ZERO, is_1300)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no retransmit within 0 ms (nothing from REMOTE)"
        );

        deliver(&hub, toward(addr(A), 1500));
        deliver(&hub, toward(addr(A), 1400));
        let err = a
            .wait_for("retransmit", Duration::ZERO, is_1300)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "no retransmit within 0 ms (2 other packet(s), e.g. \
                 tcp 192.0.2.2.19 > 198.51.100.22.40000: [] seq 0 ack 0 len 0, ip 1500 -> fits"
            ),
            "{err}"
        );
        assert!(
            err.contains("; tcp 192.0.2.2.19 > 198.51.100.22.40000"),
            "{err}"
        );

        deliver(&hub, toward(addr(A), 1400));
        deliver(&hub, toward(addr(A), 1300));
        let got = a.wait_for("retransmit", Duration::ZERO, is_1300).await;
        assert_eq!(got.unwrap().ip_len, 1300);
        let seen: Vec<u16> = a.seen.iter().map(|e| e.ip_len).collect();
        assert_eq!(seen, [1500, 1400, 1400, 1300]);
    }
}
