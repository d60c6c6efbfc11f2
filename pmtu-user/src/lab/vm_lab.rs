//! A VM lab (`--kernel`): LOCAL's namespace with a tap as LOCAL_IF (the responder on it,
//! natively: tun supports XDP_TX without a program on the other side), and REMOTE a qemu guest
//! on the tap. Same life cycle as a namespace lab: the lock held, the record written first
//! (LOCAL's namespace recorded before it has its name), complete last; teardown stops the guest
//! by its recorded PID and every process in LOCAL's namespace.
use std::time::Instant;

use anyhow::{Context as _, Result};

use super::{
    add_namespace, attach_responder, begin, configure_local,
    health::{has_leftovers, refuse_foreign},
    lock::{self, LabLock},
    namespace_sysctls,
    plan::{self, local_ns, validate_name, LOCAL_IF, LOCAL_MAC},
    record::LabRecord,
    teardown::clear,
    vm, Lab,
};
use crate::{
    net::{netns, rtnl::netlink_in},
    xdp::responder::AttachMode,
};

/// Builds lab `name` with REMOTE a qemu guest (`--kernel`), kept up, replacing a stale one of
/// that name. Takes the lab's lock for the time of the build.
pub fn up_vm(name: &str, mode: AttachMode, options: &vm::VmOptions) -> Result<Lab> {
    validate_name(name)?;
    let lock = LabLock::acquire(name, lock::wait_from_env()?, &|| {
        crate::signals::requested()
    })?;
    up_vm_locked(&lock, mode, options, false)
}

/// [`up_vm`] under a lock already held. Bad input (no such image, no qemu) is refused before
/// anything is made or removed; on a later failure whatever was made is removed again.
/// Progress lines (a first download) go to stderr.
pub fn up_vm_locked(
    lock: &LabLock,
    mode: AttachMode,
    options: &vm::VmOptions,
    temporary: bool,
) -> Result<Lab> {
    let name = lock.name();
    let kernel = match vm::resolve_kernel(options, &mut |line| eprintln!("pmtu: {line}")) {
        Ok(kernel) => kernel,
        Err(e) => {
            // Nothing was made: no lab of this name is left behind by the lock alone.
            if !has_leftovers(name) && !netns::exists(&local_ns(name)) {
                let _ = clear(name, true);
            }
            return Err(e);
        }
    };
    refuse_foreign(name)?;
    let record = begin(name, temporary)?;
    match build_vm(name, mode, options, kernel, record) {
        Ok(lab) => Ok(lab),
        Err(e) => {
            if let Err(cleanup) = clear(name, true) {
                log::warn!("removing the half-built lab `{name}`: {cleanup:#}");
            }
            Err(e.context(format!("building lab `{name}`")))
        }
    }
}

fn build_vm(
    name: &str,
    mode: AttachMode,
    options: &vm::VmOptions,
    kernel: vm::Kernel,
    mut record: LabRecord,
) -> Result<Lab> {
    let lns = local_ns(name);
    let started = Instant::now();
    let step = |what: &str| log::debug!("lab `{name}`: {what} after {:?}", started.elapsed());
    let lab = Lab::new(name, None);
    add_namespace(&lns, &mut record, &lab.state_dir)?;
    namespace_sysctls(&lns, true)?;
    vm::add_tap(Some(&lns), LOCAL_IF, &LOCAL_MAC)?;
    let t = lab.topology.clone();
    netlink_in(&lns, move |h| async move { configure_local(&h, &t).await })
        .with_context(|| format!("configuring LOCAL (namespace `{lns}`)"))?;
    attach_responder(&lab, mode, None)?;
    step("namespace, tap, addresses, routes and XDP");
    let spec = vm::GuestSpec {
        options: options.clone(),
        kernel,
        netns: Some(lns.clone()),
        tap: LOCAL_IF.to_string(),
        net: plan::guest_net(),
        state_dir: lab.state_dir.clone(),
        cache: vm::image::cache_root(),
        accel: vm::AccelChoice::from_env()?,
        ready_timeout: vm::READY_TIMEOUT,
    };
    let guest = vm::Guest::boot(&spec)?;
    log::info!(
        "lab `{name}`: guest {} ready in {:.1} s (prepare {:.1} s, boot {:.1} s, ssh {:.1} s)",
        guest.record.release,
        started.elapsed().as_secs_f64(),
        guest.times.prepare.as_secs_f64(),
        guest.times.boot_to_ready.as_secs_f64(),
        guest.times.ssh_login.as_secs_f64()
    );
    let times = guest.times;
    let mut lab = Lab::new_vm(name, guest.detach());
    lab.vm_times = Some(times);
    record.complete = true;
    record.save(&lab.state_dir)?;
    Ok(lab)
}
