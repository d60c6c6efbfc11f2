//! `pmtu lab status` for people: the status report as lines of text.
use anyhow::Result;

use super::{plan::local_ns, service::ServiceKind, status::*};

/// `pmtu lab status` for people.
pub fn status(name: &str) -> Result<String> {
    use std::fmt::Write as _;
    let s = status_report(name)?;
    let mut out = String::new();
    let owner = s.owner_pid.unwrap_or_default();
    let mut state = if !s.complete {
        format!(
            "INCOMPLETE ({}; `pmtu lab up` or the next `pmtu run` rebuilds it)",
            s.unusable.join("; ")
        )
    } else if s.temporary && !s.owner_alive {
        format!("ORPHANED (a temporary lab of pid {owner}, which is gone; the next `pmtu run` replaces it)")
    } else if s.temporary {
        format!("up, temporary (made by pid {owner} for its run)")
    } else {
        "up".to_string()
    };
    if let Some(pid) = s.in_use_by {
        state.push_str(&format!(", in use by pid {pid}"));
    }
    let _ = writeln!(
        out,
        "lab `{}`: {state}; state in {}",
        s.name,
        s.state_dir.display()
    );
    for ns in &s.namespaces {
        if !ns.exists {
            let _ = writeln!(out, "{:<6} namespace {}: missing", ns.role, ns.name);
            continue;
        }
        let _ = writeln!(out, "{:<6} namespace {}", ns.role, ns.name);
        for i in &ns.interfaces {
            let _ = writeln!(
                out,
                "  {} {} {} mtu {} {}",
                i.name,
                i.mac.as_deref().unwrap_or("-"),
                if i.up { "up" } else { "DOWN" },
                i.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                i.addresses.join(" ")
            );
            match &i.xdp {
                Some(x) => {
                    let _ = writeln!(
                        out,
                        "    xdp: {} (prog id {}, {})",
                        x.prog_name.as_deref().unwrap_or("?"),
                        x.prog_id,
                        x.mode
                    );
                }
                None => {
                    let _ = writeln!(out, "    xdp: none");
                }
            }
        }
        for r in &ns.routes {
            let _ = writeln!(out, "  route {}", describe_route(r));
        }
        for r in &ns.to_fake_host {
            let pmtu = match (r.mtu, r.expires_s) {
                (Some(mtu), Some(exp)) => format!("cached PMTU {mtu}, expires in {exp} s"),
                (Some(mtu), None) => format!("MTU {mtu}"),
                _ => "no cached PMTU".to_string(),
            };
            let _ = writeln!(out, "  to the fake host {}: {pmtu}", describe_route(r));
        }
    }
    match &s.service {
        Some(svc) => {
            let _ = writeln!(
                out,
                "services: {} (pid {}) {}; listening: {}",
                match svc.kind {
                    ServiceKind::Inetd => "openbsd-inetd",
                    ServiceKind::Builtin => "pmtu serve",
                },
                svc.pid,
                if svc.alive { "running" } else { "NOT RUNNING" },
                if svc.listening.is_empty() {
                    "nothing".to_string()
                } else {
                    svc.listening.join(", ")
                }
            );
        }
        None if s.vm.is_some() => {}
        None => {
            let _ = writeln!(out, "services: none recorded");
        }
    }
    if let Some(v) = &s.vm {
        let r = &v.record;
        let _ = writeln!(
            out,
            "REMOTE a qemu guest ({}, pid {} {}): kernel {} from {}",
            r.accel,
            r.qemu_pid,
            if v.alive { "running" } else { "NOT RUNNING" },
            r.release,
            r.image
        );
        let _ = writeln!(out, "  booted {}", r.boot_image.display());
        if let Some(m) = &r.modules {
            let _ = writeln!(out, "  modules {}", m.display());
        }
        let _ = writeln!(out, "  console {}", r.console.display());
        let _ = writeln!(
            out,
            "  log in: ip netns exec {} ssh {}",
            local_ns(&s.name),
            r.remote_ssh
        );
    }
    if !s.rules.is_empty() {
        let _ = writeln!(out, "XDP rules:");
        for r in &s.rules {
            let budget = if r.budget == 0 {
                "no limit".to_string()
            } else {
                r.budget.to_string()
            };
            let _ = writeln!(
                out,
                "  {} {} mtu {} budget {budget} sent {}{}",
                r.prefix,
                r.action,
                r.mtu,
                r.sent,
                if r.pass { " pass" } else { "" }
            );
        }
    }
    if !s.counters.is_empty() {
        let counters: Vec<String> = s
            .counters
            .iter()
            .map(|c| format!("{} {}", c.name, c.value))
            .collect();
        let _ = writeln!(out, "XDP counters: {}", counters.join(", "));
    }
    for p in &s.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    Ok(out)
}

fn describe_route(r: &RouteStatus) -> String {
    let mut text = if r.kind == "unicast" {
        r.destination.clone()
    } else {
        format!("{} {}", r.kind, r.destination)
    };
    if let Some(gw) = &r.gateway {
        text.push_str(&format!(" via {gw}"));
    }
    if let Some(dev) = &r.dev {
        text.push_str(&format!(" dev {dev}"));
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The command line.
