//! What is there under a lab's name: the lab's own namespaces (by the identity its record
//! holds) or someone else's, and whether the lab is complete and healthy enough to use.
use std::fs;

use anyhow::{bail, Result};
use pmtu_common::MAP_RULES_V4;

use super::{
    lock::{self, LabLock},
    plan::{local_ns, pin_dir, remote_ns, state_dir, validate_name, LOCAL_IF, REMOTE_IF},
    record::{self, LabRecord},
    service::{self, read_record},
    vm, Lab,
};
use crate::net::{
    netns,
    rtnl::{link_is_up, netlink_in},
};

/// Whether anything of lab `name` exists: its record, state or namespaces of its names (which
/// may not be the lab's: see [`foreign_namespaces`]).
pub fn exists(name: &str) -> bool {
    netns::exists(&local_ns(name)) || netns::exists(&remote_ns(name)) || state_dir(name).exists()
}

/// Namespaces with the lab's names that the lab's record does not claim: someone else's, never
/// to be used or deleted.
pub fn foreign_namespaces(name: &str) -> Vec<String> {
    let record = LabRecord::load(&state_dir(name)).ok().flatten();
    [local_ns(name), remote_ns(name)]
        .into_iter()
        .filter(|ns| netns::exists(ns) && !record.as_ref().is_some_and(|r| r.owns(ns)))
        .collect()
}

pub(super) fn refuse_foreign(name: &str) -> Result<()> {
    let foreign = foreign_namespaces(name);
    if !foreign.is_empty() {
        bail!(
            "network namespace {} exists but was not made by pmtu for lab `{name}`; pmtu leaves it \
             alone: pick another lab name with --lab, or remove it yourself (`ip netns delete {}`)",
            foreign.join(" and "),
            foreign[0]
        );
    }
    Ok(())
}

/// Why lab `name` cannot be used as it is (empty: it is complete and healthy). Says nothing about
/// who uses it: that is the lock's business.
pub fn unusable_reasons(name: &str) -> Vec<String> {
    let state = state_dir(name);
    let record = match LabRecord::load(&state) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return vec![format!(
                "it has no record ({} is missing)",
                record::RECORD_FILE
            )]
        }
        Err(e) => return vec![format!("{e:#}")],
    };
    if !record.complete {
        return vec![if record.owner_alive() {
            format!("it is still being built by pid {}", record.owner_pid)
        } else {
            format!(
                "its set-up was interrupted (pid {} is gone) before it was complete",
                record.owner_pid
            )
        }];
    }
    if let Some(vm) = vm::VmRecord::read(&state).ok().flatten() {
        return vm_unusable_reasons(name, &record, &vm);
    }
    let mut reasons = links_unusable_reasons(
        name,
        &record,
        [(local_ns(name), LOCAL_IF), (remote_ns(name), REMOTE_IF)],
    );
    match read_record(&state) {
        Ok(Some(svc)) if service::is_running(&svc) => {}
        Ok(Some(svc)) => reasons.push(format!(
            "REMOTE's {:?} service (pid {}) is not running",
            svc.kind, svc.pid
        )),
        Ok(None) => reasons.push("REMOTE's services are not recorded".to_string()),
        Err(e) => reasons.push(format!("{e:#}")),
    }
    reasons
}

/// Opens lab `name`, which must be up and complete.
pub fn open(name: &str) -> Result<Lab> {
    validate_name(name)?;
    if !exists(name) {
        bail!("no lab `{name}`: run `pmtu lab up --lab {name}`");
    }
    refuse_foreign(name)?;
    let reasons = unusable_reasons(name);
    if !reasons.is_empty() {
        let kernel = super::vm_record(name)
            .map(|vm| format!(" --kernel {}", vm.image))
            .unwrap_or_default();
        bail!(
            "lab `{name}` is incomplete ({}): `pmtu lab up --lab {name}{kernel}` rebuilds it",
            reasons.join("; ")
        );
    }
    Ok(lab_of(name))
}

/// What `pmtu run` finds under a lab's name, holding its lock.
pub enum Found {
    /// Nothing: a temporary lab can be made.
    Nothing,
    /// A complete, healthy lab that `pmtu lab up` keeps.
    Ready(Box<Lab>),
    /// A lab to build anew: a temporary one whose run was killed (nobody holds its lock), or one
    /// that is incomplete or broken. `temporary` says which kind it was.
    Stale { reason: String, temporary: bool },
}

/// Looks at lab `lock.name()`; fails for namespaces of its names that pmtu did not make.
pub fn find(lock: &LabLock) -> Result<Found> {
    let name = lock.name();
    refuse_foreign(name)?;
    let record = LabRecord::load(&state_dir(name)).ok().flatten();
    if !exists(name) || (record.is_none() && !has_leftovers(name)) {
        return Ok(Found::Nothing);
    }
    let temporary = record.as_ref().is_none_or(|r| r.temporary);
    if let Some(r) = record.as_ref().filter(|r| r.temporary && r.complete) {
        // Its run would hold the lock: the run is gone.
        return Ok(Found::Stale {
            reason: format!("a temporary lab left by a killed run (pid {})", r.owner_pid),
            temporary,
        });
    }
    let reasons = unusable_reasons(name);
    if reasons.is_empty() {
        return Ok(Found::Ready(Box::new(lab_of(name))));
    }
    Ok(Found::Stale {
        reason: reasons.join("; "),
        temporary,
    })
}

/// Anything in the state dir besides the lock file.
pub(super) fn has_leftovers(name: &str) -> bool {
    fs::read_dir(state_dir(name)).is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.file_name() != std::ffi::OsStr::new(lock::LOCK_FILE))
    })
}

/// What every lab needs: its namespaces, made by pmtu, its pinned maps, and in each namespace
/// its interface up (looked at only when the rest is there).
fn links_unusable_reasons<const N: usize>(
    name: &str,
    record: &LabRecord,
    links: [(String, &'static str); N],
) -> Vec<String> {
    let mut reasons = Vec::new();
    for (ns, _) in &links {
        if !netns::exists(ns) {
            reasons.push(format!("namespace `{ns}` is missing"));
        } else if !record.owns(ns) {
            reasons.push(format!("namespace `{ns}` is not the one pmtu made"));
        }
    }
    if !pin_dir(name).join(MAP_RULES_V4).exists() {
        reasons.push(format!("no pinned maps in {}", pin_dir(name).display()));
    }
    if reasons.is_empty() {
        for (ns, iface) in links {
            let up = netlink_in(&ns, move |h| async move { link_is_up(&h, iface).await });
            match up {
                Ok(true) => {}
                Ok(false) => reasons.push(format!("interface {iface} in `{ns}` is down")),
                Err(e) => reasons.push(format!("{e:#}")),
            }
        }
    }
    reasons
}

/// What a VM lab needs (LOCAL's namespace, the pins, LOCAL_IF up, the guest's qemu), once its
/// record is complete.
fn vm_unusable_reasons(name: &str, record: &LabRecord, vm: &vm::VmRecord) -> Vec<String> {
    let mut reasons = links_unusable_reasons(name, record, [(local_ns(name), LOCAL_IF)]);
    if !vm::qemu::is_running(&vm::Files::new(&state_dir(name)).pidfile) {
        reasons.push(format!(
            "the guest (qemu pid {}) is not running",
            vm.qemu_pid
        ));
    }
    reasons
}

/// Lab `name` as its records describe it (a VM lab when it has a guest's record).
fn lab_of(name: &str) -> Lab {
    match super::vm_record(name) {
        Some(vm) => Lab::new_vm(name, vm),
        None => Lab::new(name, read_record(&state_dir(name)).ok().flatten()),
    }
}
