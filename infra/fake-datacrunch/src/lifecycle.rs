//! Instance status transitions and the timers that drive them.
//!
//! Statuses are changed by tokio tasks (not computed lazily from timestamps) because execute
//! mode has to *do* something at the moment an instance becomes `running` (start the startup
//! script) and when it stops (kill it), whether or not anyone is polling.
//!
//! Every change goes through [`set_status`] (or [`vanish`]) under the state lock, which bumps the
//! instance's `epoch`. A timer remembers the epoch it was scheduled at and does nothing if the
//! epoch moved on, so a forced status, a delete or a newer action silently cancels it; after
//! `POST /admin/reset` the instance no longer exists and the timer does nothing either.

use std::time::Duration;

use chrono::Utc;

use crate::{
    execute,
    state::{AppState, Fate, Instance, Status},
};

/// The fake public address of a running instance. It is in 10.0.0.0/8 and never contacted:
/// the fake runs nothing reachable there (execute mode runs the script on this machine).
pub fn fake_ip(seq: u64) -> String {
    format!(
        "10.{}.{}.{}",
        13 + (seq / 62_500) % 200,
        (seq / 250) % 250,
        seq % 250 + 2
    )
}

/// Moves `inst` to `to` and applies the side effects of the new status:
/// - `running`: an ip is assigned, and in execute mode the startup script is
///   started the first time (a real machine runs it once, at first boot);
/// - anything but `running`: the machine is off, so the script's processes are killed;
/// - `deleting` / `discontinued`: `deleted_at` (when the delete was accepted) is recorded;
///   `discontinued` also removes the script's directory (the disk goes
///   with the machine).
pub fn set_status(state: &AppState, inst: &mut Instance, to: Status) {
    let from = inst.status;
    inst.status = to;
    inst.epoch += 1;
    if from != to {
        tracing::info!(id = %inst.id, from = from.as_str(), to = to.as_str(), "instance status");
    }
    match to {
        Status::Running => {
            if inst.ip.is_none() {
                inst.ip = Some(fake_ip(inst.seq));
            }
            maybe_start_script(state, inst);
        }
        Status::Deleting => {
            inst.deleted_at.get_or_insert_with(Utc::now);
        }
        Status::Discontinued => {
            inst.deleted_at.get_or_insert_with(Utc::now);
            execute::discard(inst, true);
        }
        _ => {}
    }
    if !matches!(to, Status::Deleting | Status::Discontinued) {
        // Only reachable through a forced admin status: the instance is back from the dead.
        inst.deleted_at = None;
    }
    if to != Status::Running {
        execute::kill(inst);
    }
}

/// Makes the instance disappear from the provider API (404 "Invalid instance id"), as if the
/// provider lost it. It stays in `GET /admin/state` with `vanished: true`; its script's
/// processes and directory are gone (nobody can delete it any more).
pub fn vanish(inst: &mut Instance) {
    inst.epoch += 1;
    if inst.vanished_at.is_none() {
        inst.vanished_at = Some(Utc::now());
        tracing::info!(id = %inst.id, "instance vanished");
    }
    execute::discard(inst, true);
}

fn maybe_start_script(state: &AppState, inst: &mut Instance) {
    let Some(root) = state.config.execute.as_deref() else {
        return;
    };
    if inst.process.is_some() {
        return;
    }
    let Some(script) = inst.startup_script.clone() else {
        return;
    };
    if let Err(e) = execute::start(state, inst, root, &script) {
        tracing::error!(id = %inst.id, error = %e, "could not start the startup script");
    }
}

/// Runs `f` on the instance if it still exists, is visible and is at `epoch`; returns its new
/// epoch.
fn step(
    state: &AppState,
    id: &str,
    epoch: u64,
    f: impl FnOnce(&AppState, &mut Instance),
) -> Option<u64> {
    let mut g = state.lock();
    let inst = g.instances.get_mut(id)?;
    if inst.epoch != epoch || !inst.visible() {
        return None;
    }
    f(state, inst);
    Some(inst.epoch)
}

/// `ordered` → `provisioning` at `provision_ms / 2` → `running` (or `error`, or vanished, per
/// the instance's fate) at `provision_ms`.
pub fn schedule_provisioning(state: &AppState, id: String, epoch: u64) {
    let st = state.clone();
    tokio::spawn(async move {
        let total = st.config.provision_ms;
        let half = total / 2;
        tokio::time::sleep(Duration::from_millis(half)).await;
        let Some(epoch) = step(&st, &id, epoch, |st, inst| {
            set_status(st, inst, Status::Provisioning)
        }) else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(total - half)).await;
        let Some(epoch) = step(&st, &id, epoch, |st, inst| match inst.fate {
            Fate::Run | Fate::Interrupt => set_status(st, inst, Status::Running),
            Fate::Error => set_status(st, inst, Status::Error),
            Fate::InstallationFailed => set_status(st, inst, Status::InstallationFailed),
            Fate::Vanish => vanish(inst),
        }) else {
            return;
        };
        let interrupt_after = {
            let g = st.lock();
            match g.instances.get(&id) {
                Some(inst) if inst.fate == Fate::Interrupt => g.faults.interrupt_after_ms,
                _ => return,
            }
        };
        // The spot preemption: the machine is taken back while it runs (a delete or a forced
        // status before then moves the epoch on and cancels it).
        tokio::time::sleep(Duration::from_millis(interrupt_after)).await;
        step(&st, &id, epoch, |st, inst| {
            tracing::info!(id = %inst.id, "spot instance interrupted");
            set_status(st, inst, Status::Discontinued)
        });
    });
}

/// An accepted delete: `deleting` for `delete_ms`, then `discontinued` (at once if 0).
/// Called with the lock held.
pub fn begin_delete(state: &AppState, inst: &mut Instance) {
    if state.config.delete_ms == 0 {
        set_status(state, inst, Status::Discontinued);
        return;
    }
    set_status(state, inst, Status::Deleting);
    let epoch = inst.epoch;
    let id = inst.id.clone();
    let st = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(st.config.delete_ms)).await;
        step(&st, &id, epoch, |st, inst| {
            set_status(st, inst, Status::Discontinued)
        });
    });
}

/// A graceful shutdown: the instance stays `running` for `shutdown_ms`, then goes `offline`.
/// Called with the lock held; bumps the epoch so that a later action cancels it.
pub fn begin_shutdown(state: &AppState, inst: &mut Instance) {
    inst.epoch += 1;
    let epoch = inst.epoch;
    let id = inst.id.clone();
    let st = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(st.config.shutdown_ms)).await;
        step(&st, &id, epoch, |st, inst| {
            if inst.status == Status::Running {
                set_status(st, inst, Status::Offline);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_ips_are_private_and_distinct() {
        let a = fake_ip(0);
        let b = fake_ip(1);
        let c = fake_ip(250);
        assert!(a.starts_with("10."));
        assert_ne!(a, b);
        assert_ne!(a, c);
        for ip in [a, b, c, fake_ip(10_000_000)] {
            let parts: Vec<u32> = ip.split('.').map(|p| p.parse().unwrap()).collect();
            assert_eq!(parts.len(), 4);
            assert!(parts.iter().all(|p| *p < 256));
        }
    }
}
