//! expire: a learned path MTU is kept for its lifetime, then REMOTE tries the larger size again
//! (RFC 1191 3 and RFC 8201 4: no increase sooner than 5 minutes after a Too Big message, 10
//! recommended; the timer is what lets a host find a path that grew).
//!
//! On a lab's REMOTE, whose settings are ours: set the lifetime of learned path MTUs to 2 s
//! (put back at the end, however the scenario ends), learn 1300 from frag-needed on one
//! connection, then open a new connection from the same fake host every 250 ms: they send 1300
//! while the entry lives and 1500 once it expired, which must be no sooner than 2 s after the
//! ICMP and not much later. On a real REMOTE, whose settings are only read, the first half:
//! for 5 s, new connections keep sending 1300.
use std::time::Duration;

use anyhow::Result;
use futures::FutureExt as _;

use super::{
    persist::{learn_mtu, new_connection},
    pmtu::MTU,
};
use crate::{
    broken,
    suite::{remote_state::SysctlChange, Ctx, Record, Scenario},
    xdp::rules::RuleSpec,
};

pub const SCENARIO: Scenario = Scenario {
    name: "expire",
    about: "IPv4: a path MTU set to live 2 s is used until then, and 1500 is tried again after",
    run: |ctx, rec| story(ctx, rec, false).boxed(),
    // It changes a sysctl of REMOTE.
    alone: true,
};

/// The lifetime set on a lab's REMOTE.
const LIFETIME: Duration = Duration::from_secs(2);
/// How long after the lifetime the entry may still be used (expiry is checked when a route is
/// looked up, to the jiffy, so this is the polling interval and then some).
const LATE: Duration = Duration::from_secs(1);
/// How often a new connection looks at the path MTU.
const POLL: Duration = Duration::from_millis(250);
/// On a real REMOTE: how long the path MTU must at least be kept.
const HOLD: Duration = Duration::from_secs(5);

/// The expire story, for IPv4 (`expire`) and IPv6 (`expire6`).
pub async fn story(ctx: &Ctx, rec: &mut Record, v6: bool) -> Result<()> {
    let fake = ctx.fake(v6).ip();
    let sysctl = ctx.profile.pmtu_lifetime_sysctl.map(|k| k[v6 as usize]);
    let lifetime = match sysctl {
        Some(key) if ctx.remote_is_ours => {
            log::info!(
                "Set REMOTE's {key} to {} s (put back afterwards).",
                LIFETIME.as_secs()
            );
            Some(SysctlChange::set(
                ctx,
                key,
                &LIFETIME.as_secs().to_string(),
            )?)
        }
        _ => None,
    };
    let window = if lifetime.is_some() {
        LIFETIME + LATE
    } else {
        HOLD
    };
    rec.measured(
        "lifetime_set_s",
        lifetime.as_ref().map_or(0, |_| LIFETIME.as_secs()),
    );

    log::info!(
        "The router answers the first packet over {MTU} with an ICMP Too Big, MTU {MTU}, once."
    );
    ctx.set_rule(fake, RuleSpec::answer(MTU as u32).with_budget(1))?;
    let icmp = learn_mtu(ctx, rec, fake).await?;
    let since_icmp = |ts_ns: u64| ts_ns.saturating_sub(icmp.ts_ns) / 1_000_000;

    log::info!(
        "A new connection from the same fake host every {} ms for up to {} ms after the ICMP.",
        POLL.as_millis(),
        window.as_millis()
    );
    let mut last_at_mtu = None;
    let mut expired = None;
    loop {
        let (_, first) = new_connection(ctx, fake).await?;
        let after = since_icmp(first.ts_ns);
        match first.ip_len {
            MTU => last_at_mtu = Some(after),
            len if len > MTU => {
                expired = Some((after, len));
                break;
            }
            len => broken!(
                "a new connection sent {len}-byte segments, below the path MTU of {MTU} it learned"
            ),
        }
        if after >= window.as_millis() as u64 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let Some(kept) = last_at_mtu else {
        broken!("REMOTE forgot the path MTU before the first new connection: it expired at once");
    };
    rec.measured("last_at_1300_after_ms", kept);
    if lifetime.is_none() {
        rec.measured("held_for_ms", kept);
        if let Some((after, len)) = expired {
            broken!(
                "REMOTE went back to {len} {after} ms after the ICMP: RFC 1191 3 and RFC 8201 \
                 4 allow no increase sooner than 5 minutes after a Too Big message"
            );
        }
        return Ok(());
    }
    let Some((after, len)) = expired else {
        broken!(
            "REMOTE still used the path MTU {} ms after the ICMP, although its lifetime was \
             set to {} s: it never expires",
            kept,
            LIFETIME.as_secs()
        );
    };
    rec.measured("expired_after_ms", after);
    rec.measured("expired_ip_len", len);
    rec.check_eq(
        "kept_for_its_lifetime",
        after >= LIFETIME.as_millis() as u64,
        true,
        &format!(
            "REMOTE dropped the path MTU {after} ms after the ICMP, before the {} s it was set to live",
            LIFETIME.as_secs()
        ),
    )?;
    Ok(())
}
