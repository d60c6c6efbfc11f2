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

type Subscribers = HashMap<SocketAddr, UnboundedSender<PacketEvent>>;

#[derive(Default)]
struct Routes {
    flows: Subscribers,
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
        let routes = Arc::new(Mutex::new(Routes::default()));
        let weak = Arc::downgrade(&routes);
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
        Hub { routes }
    }

    /// Subscribes to REMOTE's packets toward `fake`.
    pub fn flow(&self, fake: SocketAddr) -> Flow {
        let (tx, rx) = unbounded_channel();
        self.lock().flows.insert(fake, tx);
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
    fn deliver(&mut self, ev: PacketEvent) {
        let key = if let Some(port) = ev.quoted_source_port() {
            // An ICMP error about one of the fake endpoint's packets.
            Some(SocketAddr::new(ev.dst, port))
        } else if ev.has_l4 {
            let key = SocketAddr::new(ev.dst, ev.dport);
            if let Some(fr) = ev.fragment {
                self.fragments.insert((ev.dst, fr.id), key);
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
        if let Some(tx) = self.flows.get(&key) {
            if tx.send(ev).is_err() {
                self.flows.remove(&key);
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
        let mut routes = self.hub.lock();
        routes.flows.remove(&self.fake);
        let fake = self.fake;
        routes.fragments.retain(|_, v| *v != fake);
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
