//! Taking a lab apart: the whole of it (`lab down`), or only what an interrupted run left in a
//! kept lab (its rules, REMOTE's connections to the fake nets).
use std::{fs, io};

use anyhow::{bail, Context as _, Result};

use super::{
    bpffs::unmount_bpffs,
    fake_nets,
    lock::{self, LabLock},
    plan::{local_ns, pin_dir, remote_ns, state_dir, validate_name},
    record::LabRecord,
    service::{self, stop_service},
    vm, Lab,
};
use crate::{net::netns, xdp::rules::RuleSpec};

/// Clears what an interrupted run may have left in a kept lab: the rules its scenarios set for
/// single fake hosts (the lab's own rules for the fake nets and the stress prefixes are set
/// anew), and REMOTE's TCP connections to those nets, aborted with RST (`ss -K`), so that no
/// chargen keeps sending into the responder.
pub fn clear_traces(lab: &Lab) -> Result<()> {
    let defaults = fake_nets(&lab.topology);
    let mut responder = lab.responder()?;
    for (prefix, _) in responder.rules() {
        if !defaults.contains(&prefix) {
            log::info!("removing the rule for {prefix} left by an earlier run");
            responder.remove_rule(prefix)?;
        }
    }
    for prefix in defaults {
        responder.set_rule(prefix, RuleSpec::observe())?;
    }
    if lab.vm.is_some() {
        // The guest has no `ss`; its connections end with its chargen's peer gone.
        return Ok(());
    }
    for net in defaults {
        let filter = net.to_string();
        netns::run(
            Some(&lab.remote_ns()),
            "ss",
            &["-K", "-t", "-n", "dst", &filter],
        )
        .with_context(|| format!("aborting REMOTE's connections to {net}"))?;
    }
    Ok(())
}

/// Removes lab `name` (taking its lock): see [`down_locked`].
pub fn down(name: &str) -> Result<()> {
    validate_name(name)?;
    let lock = LabLock::acquire_default(name)?;
    down_locked(&lock)
}

/// Removes the lab whose lock is held: stops its services (by recorded PID, after checking it is
/// still theirs) and every other process in its namespaces, removes the pins, unmounts the
/// bpffs, deletes the namespaces it made (with them the veth pair and the XDP attachments) and
/// the state dir, lock file included. A namespace of the lab's names that the record does not
/// claim is left alone. Every step tolerates what an earlier run left missing, so it also
/// cleans half-built labs; nothing there at all is fine.
pub fn down_locked(lock: &LabLock) -> Result<()> {
    clear(lock.name(), true)
}

/// [`down_locked`]; with `remove_lock_file` false the state dir and its lock file stay (the
/// lab is about to be built again under the same lock).
pub(super) fn clear(name: &str, remove_lock_file: bool) -> Result<()> {
    let state = state_dir(name);
    let mut problems: Vec<String> = Vec::new();
    // This process's shell sessions to REMOTE end before their connection does.
    crate::remote::close_sessions();
    let record = match LabRecord::load(&state) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    if let Err(e) = stop_service(&state) {
        problems.push(format!("{e:#}"));
    }
    // A VM lab's guest, by its recorded PID (qemu also runs in LOCAL's namespace, below).
    if let Err(e) = vm::stop_stale(&state) {
        problems.push(format!("{e:#}"));
    }
    // What the record does not know about: an inetd whose record was lost, the service's
    // children, a shell someone started in REMOTE.
    let ours: Vec<(String, netns::Identity)> = [local_ns(name), remote_ns(name)]
        .into_iter()
        .filter_map(|ns| {
            let id = netns::identity(&ns)?;
            record.as_ref()?.owns(&ns).then_some((ns, id))
        })
        .collect();
    for (ns, id) in &ours {
        if let Err(e) = service::stop_processes(&netns::pids_in(*id), &format!("namespace `{ns}`"))
        {
            problems.push(format!("{e:#}"));
        }
    }
    let pins = pin_dir(name);
    let bpffs_gone = match unmount_bpffs(&pins) {
        Ok(()) => true,
        Err(e) => {
            problems.push(format!("{e:#}"));
            false
        }
    };
    for ns in [local_ns(name), remote_ns(name)] {
        if ours.iter().any(|(n, _)| *n == ns) {
            if let Err(e) = netns::delete(&ns) {
                problems.push(format!("{e:#}"));
            }
        } else if netns::is_dangling(&ns)
            && record
                .as_ref()
                .is_some_and(|r| r.identity_of(&ns).is_some())
        {
            // This lab's `ip netns attach` died before mounting the namespace on its file.
            if let Err(e) = fs::remove_file(netns::path(&ns)) {
                problems.push(format!("removing {}: {e}", netns::path(&ns).display()));
            }
        } else if netns::exists(&ns) {
            log::info!("network namespace `{ns}` was not made by pmtu: left alone");
        }
    }
    if bpffs_gone {
        if let Err(e) = remove_state(&state, remove_lock_file) {
            problems.push(e);
        }
    }
    if !problems.is_empty() {
        bail!("removing lab `{name}`: {}", problems.join("; "));
    }
    Ok(())
}

/// Removes the state dir, or everything in it but the lock file.
fn remove_state(state: &std::path::Path, remove_lock_file: bool) -> Result<(), String> {
    let gone = |r: io::Result<()>, what: &std::path::Path| match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", what.display())),
    };
    if remove_lock_file {
        return gone(fs::remove_dir_all(state), state);
    }
    let entries = match fs::read_dir(state) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("listing {}: {e}", state.display())),
    };
    for entry in entries.flatten() {
        if entry.file_name() == std::ffi::OsStr::new(lock::LOCK_FILE) {
            continue;
        }
        let path = entry.path();
        let r = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        gone(r, &path)?;
    }
    Ok(())
}
