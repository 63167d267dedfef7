//! The job lifecycle as pure functions — no I/O, no clock:
//!
//! - [`decide`]: (job, observation, now) → (new job, one effect to perform);
//! - [`apply`]: (job, effect result, now) → new job.
//!
//! The worker persists the decided job (conditional on its version) *before* performing the
//! effect — so a deploy is always announced by its hostname before it happens and a duplicate
//! message cannot start a second one — then applies the result and persists again.
//!
//! A job that must end first gets an [`Outcome`]; it keeps its status while its instances and
//! script are deleted, then it is settled: the instance's billable life is charged against the
//! hold, the rest of the hold is released, and the job takes the outcome's status.

use super::model::{
    cost_of, AttemptOutcome, AttemptRecord, FailureReason, Job, JobStatus, Outcome, RetiredLife,
    RetryRecord,
};
use super::retry::backoff_secs;
use crate::config::Timers;
use crate::money::Micros;
use crate::provider::{InstanceInfo, InstanceStatus, Placement};
use crate::time::Millis;

/// Consecutive transient provider failures tolerated while deploying.
pub const MAX_DEPLOY_ERRORS: u32 = 5;

/// What the provider says about the job's current instance, in lifecycle terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// ordered, provisioning, …
    Booting,
    Running {
        ip: Option<String>,
    },
    /// Shut down (by the wrapper after the script, or by someone): still billing. Its ip is
    /// still assigned.
    Offline {
        ip: Option<String>,
    },
    /// error / no_capacity / installation_failed: it will never run.
    Failed {
        status: String,
    },
    /// Not found, discontinued or deleting.
    Gone,
}

impl InstanceState {
    /// The provider's status in lifecycle terms.
    pub fn of(info: &InstanceInfo) -> InstanceState {
        match &info.status {
            InstanceStatus::Running => InstanceState::Running {
                ip: info.ip.clone(),
            },
            InstanceStatus::Offline => InstanceState::Offline {
                ip: info.ip.clone(),
            },
            s if s.is_failed() => InstanceState::Failed {
                status: s.as_str().to_string(),
            },
            s if s.is_gone() => InstanceState::Gone,
            InstanceStatus::Deleting => InstanceState::Gone,
            // Booting, hibernation states and anything new: keep waiting (the deadlines run).
            _ => InstanceState::Booting,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceObservation {
    /// The job has no instance to look at.
    NotLooked,
    Seen(InstanceState),
    /// The provider could not be asked (timeout, 5xx).
    Unreachable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub instance: InstanceObservation,
    /// Where the job can be deployed now (its type at its provider's locations with capacity
    /// and, unless pinned, equivalent types at other providers: `provider::placement`); fetched
    /// only when [`needs_availability`] says so. The cheapest untried one is taken.
    pub candidates: Option<Vec<Placement>>,
    /// The account's free balance, for extending the hold.
    pub balance: Micros,
    /// When the provider's answer about the instance arrived (after `now`): a look that found
    /// the instance gone proves it gone by then. `None`: at `now`.
    pub answered_at: Option<Millis>,
    /// The instance's `created_at` as the provider reports it, if the look returned it.
    pub instance_created_at: Option<Millis>,
}

/// The one side effect a decision asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Create the startup script if the job has none yet and deploy — after looking the
    /// hostname up (and adopting what is found) when `adopt`: an earlier try under this
    /// hostname was announced and may have created the instance. A fresh attempt's hostname is
    /// new (`attempts` went up), so nothing can be under it yet and the look-up is skipped.
    Deploy {
        location: String,
        hostname: String,
        adopt: bool,
    },
    /// A deploy was announced but its result never recorded: find it by hostname.
    LookUpDeploy {
        hostname: String,
    },
    DeleteInstance {
        instance_id: String,
    },
    DeleteScript {
        script_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub job: Job,
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployOutcome {
    Deployed {
        instance_id: String,
    },
    NoCapacity {
        message: String,
    },
    Failed {
        transient: bool,
        message: String,
    },
    /// The provider's rate limit refused the deploy (or the look-up before it): nothing was
    /// created; try again after the wait. Not a provider failure of the job.
    RateLimited {
        retry_after_ms: Millis,
    },
    /// Nothing was deployed: a secret the job names is gone (issue 15). The job fails.
    SecretMissing {
        message: String,
    },
}

/// What performing an effect produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectResult {
    Deploy {
        /// The script created for the deploy (kept even when the deploy failed, to delete it).
        script_id: Option<String>,
        outcome: DeployOutcome,
    },
    LookedUp {
        instance_id: Option<String>,
    },
    Deleted {
        instance_id: String,
        already_gone: bool,
        requested_at: Millis,
    },
    /// The provider refused for now (still provisioning).
    DeleteRefused {
        instance_id: String,
    },
    DeleteFailed {
        instance_id: String,
        message: String,
        /// No answer came (a timeout, a broken connection): the provider may have deleted
        /// it, as with an answer a crash lost. An error answer (5xx) says it did not.
        unanswered: bool,
    },
    ScriptDeleted,
    ScriptDeleteFailed {
        message: String,
    },
    /// The provider's rate limit refused the call: nothing happened; look again after the
    /// wait (the worker adds jitter). Counts as no error.
    RateLimited {
        retry_after_ms: Millis,
    },
}

/// The job, knowing that its instance `instance_id` was seen alive (in the reconciler's list)
/// at `at`: an instance found gone later is billed until then. Nothing changes for another
/// instance, or one whose end is already known.
pub fn note_seen_alive(job: &Job, instance_id: &str, at: Millis) -> Job {
    let mut j = job.clone();
    if j.instance_id.as_deref() == Some(instance_id)
        && j.instance_ended_at.is_none()
        && j.deployed_at.is_some_and(|d| d <= at)
    {
        j.instance_seen_at = Some(j.instance_seen_at.map_or(at, |s| s.max(at)));
    }
    j
}

/// Whether the worker must fetch availability before deciding.
pub fn needs_availability(job: &Job) -> bool {
    job.status == JobStatus::Queued
        && job.outcome.is_none()
        && job.cancel_requested_at.is_none()
        && job.location.is_none()
        && job.requested_location.is_none()
}

/// Whether the worker must ask the provider about the instance before deciding. Not when the
/// job's ending no longer depends on it (cancelled, reported with `auto_shutdown`, already
/// ending): the teardown deletes the instance either way, and a delete of an instance already
/// gone is billed only until it was last seen alive.
///
/// One exception: a job whose script reported before the worker ever saw its instance running
/// has no ip yet, and a job that ran must show where it ran — one look, before the teardown.
pub fn needs_instance_look(job: &Job) -> bool {
    job.instance_id.is_some()
        && job.instance_ended_at.is_none()
        && job.outcome.is_none()
        && job.cancel_requested_at.is_none()
        && !(job.auto_shutdown && job.report.is_some() && job.ip.is_some())
}

/// Whether the hold must grow to cover the cost until the look after next; only then does the
/// worker read the account's balance.
///
/// Also while the job ends: the hold keeps covering a slow teardown (the instance bills until
/// the delete is accepted), and the cost owed at settling, so that the hold never caps what
/// the billing rule charges while the balance can pay it.
pub fn needs_balance(job: &Job, now: Millis, t: &Timers) -> bool {
    !job.status.is_terminal()
        && job.price_per_hour().0 > 0
        && Micros(job.hold_micros) < hold_needed(job, now, t)
        && budget_room(job).0 > 0
}

fn poll_interval(job: &Job, t: &Timers) -> i64 {
    if job.status == JobStatus::Provisioning {
        t.provisioning_poll_secs
    } else {
        t.running_poll_secs
    }
}

/// Cost so far plus the cost until the look after next (and a retry's worth of margin); for an
/// ending job, until two delete retries from now while the instance lives, else what is owed.
fn hold_needed(job: &Job, now: Millis, t: &Timers) -> Micros {
    let cover_secs = if job.outcome.is_some() {
        if instance_lives(job) {
            2 * t.retry_delay_secs
        } else {
            0
        }
    } else if matches!(job.status, JobStatus::Provisioning | JobStatus::Running) {
        2 * poll_interval(job, t) + t.retry_delay_secs
    } else if !job.retries.is_empty() && job.location.is_none() {
        // A retry about to deploy: what its first looks will need (the attempt before was
        // charged out of the hold).
        next_attempt_secs(t)
    } else {
        return Micros::ZERO;
    };
    job.cost_at(now) + cost_of(job.price_per_hour(), cover_secs)
}

/// Seconds of the price the hold must cover for a retry to deploy: the provisioning looks
/// after the deploy and a retry delay, what `keep_watching` needs not to stop it at once.
fn next_attempt_secs(t: &Timers) -> i64 {
    2 * t.provisioning_poll_secs + t.retry_delay_secs
}

/// The current instance is billing: deployed and not yet known deleted or gone.
fn instance_lives(job: &Job) -> bool {
    job.deployed_at.is_some() && job.instance_ended_at.is_none()
}

/// How much more the hold may grow under the job's `max_cost` (unbounded without one).
fn budget_room(job: &Job) -> Micros {
    match job.max_cost_micros {
        Some(max) => Micros((max - job.charged_micros - job.hold_micros).max(0)),
        None => Micros(i64::MAX),
    }
}

/// The hold has reached the job's budget: it cannot grow any more.
fn at_budget(job: &Job) -> bool {
    job.max_cost_micros
        .is_some_and(|max| job.charged_micros + job.hold_micros >= max)
}

/// Extends the hold from the balance to what [`hold_needed`] says — for a watched job by at
/// least `hold_secs` (fewer writes), for an ending one by just what it needs — never past the
/// budget nor the balance.
fn top_up(j: &mut Job, obs: &Observation, now: Millis, t: &Timers) {
    let price = j.price_per_hour();
    if price.0 <= 0 {
        return;
    }
    let needed = hold_needed(j, now, t);
    let held = Micros(j.hold_micros);
    if held >= needed {
        return;
    }
    let wanted = if j.outcome.is_none() {
        cost_of(price, t.hold_secs).max(needed - held)
    } else {
        needed - held
    };
    let extension = wanted
        .min(obs.balance)
        .min(budget_room(j))
        .max(Micros::ZERO);
    j.hold_micros += extension.0;
}

fn secs(n: i64) -> Millis {
    n * 1000
}

fn outcome(
    status: JobStatus,
    reason: Option<FailureReason>,
    message: Option<String>,
    now: Millis,
) -> Outcome {
    Outcome {
        status,
        failure_reason: reason,
        error_message: message,
        decided_at: now,
    }
}

fn failed(reason: FailureReason, message: impl Into<String>, now: Millis) -> Outcome {
    outcome(JobStatus::Failed, Some(reason), Some(message.into()), now)
}

/// Ends the current attempt with `o`: the job's ending, or — when the job's retry policy names
/// it, attempts remain and nobody asked to cancel — this attempt's only (`retrying`: the
/// teardown then queues the next attempt instead of settling).
fn end(j: &mut Job, o: Outcome) {
    j.retrying = j.cancel_requested_at.is_none()
        && o.status == JobStatus::Failed
        && match (&j.retry, o.failure_reason) {
            (Some(policy), Some(reason)) => {
                policy.retries(j.attempt(), reason, j.report.as_ref().map(|r| r.exit_code))
            }
            _ => false,
        };
    j.outcome = Some(o);
}

pub fn decide(job: &Job, obs: &Observation, now: Millis, t: &Timers) -> Decision {
    let mut decision = decide_inner(job, obs, now, t);
    decision.job.lease_until = None;
    decision.job.parked = parks(&decision.job, now, t);
    if decision.effect != Effect::None {
        // A lease: while the effect is being performed nobody else acts on the job (a
        // duplicate message, or a cancel, would otherwise re-decide the same deploy and race
        // it). `apply` ends the lease; if the worker dies, the job is due when it runs out.
        decision.job.lease_until = Some(now + secs(t.effect_lease_secs));
    }
    decision
}

/// Only a job with nothing to do for a while is parked (its next look is further off than
/// `park_after_secs`; a job with an effect to perform is due now): everything else is due soon
/// enough for a delayed SQS message.
fn parks(j: &Job, now: Millis, t: &Timers) -> bool {
    !j.status.is_terminal() && j.next_check_at - now > secs(t.park_after_secs)
}

fn decide_inner(job: &Job, obs: &Observation, now: Millis, t: &Timers) -> Decision {
    let mut j = job.clone();
    if j.status.is_terminal() {
        return Decision {
            job: j,
            effect: Effect::None,
        };
    }
    j.next_check_at = now;
    note_report(&mut j);
    note_observation(&mut j, obs, now);

    if j.outcome.is_none() {
        if let Some(o) = end_reason(&j, obs, now, t) {
            end(&mut j, o);
        }
    }
    if j.outcome.is_some() {
        top_up(&mut j, obs, now, t);
        return teardown(j, now, t);
    }
    if let Some(retired) = j.retired_instances.first() {
        let instance_id = retired.clone();
        return Decision {
            job: j,
            effect: Effect::DeleteInstance { instance_id },
        };
    }
    match j.status {
        JobStatus::Queued => plan_deploy(j, obs, now, t),
        _ => keep_watching(j, obs, now, t),
    }
}

/// A report proves the script ran: a job still provisioning (its script started and reported
/// between two looks) was running from when the wrapper says the script started — never before
/// the deploy, never after the report.
fn note_report(j: &mut Job) {
    let Some(report) = &j.report else { return };
    if j.status != JobStatus::Provisioning {
        return;
    }
    let earliest = j.deployed_at.unwrap_or(j.created_at);
    let started = report
        .script_started_at
        .unwrap_or(report.reported_at)
        .clamp(earliest, report.reported_at.max(earliest));
    j.status = JobStatus::Running;
    j.started_at = Some(started);
}

/// Bookkeeping from what was seen: liveness, ip, running since, offline since.
fn note_observation(j: &mut Job, obs: &Observation, now: Millis) {
    match &obs.instance {
        InstanceObservation::Seen(state) => match state {
            InstanceState::Gone => {
                // It ended at the latest when last seen alive: never bill past that.
                if j.instance_ended_at.is_none() && j.instance_id.is_some() {
                    j.instance_ended_at = Some(j.instance_seen_at.or(j.deployed_at).unwrap_or(now));
                    j.instance_gone_by = Some(obs.answered_at.unwrap_or(now).max(now));
                }
            }
            alive => {
                // The provider's own creation time, when it lies between our deploy request
                // and the deploy's return, is the start of what it can bill us: a tighter
                // bound of the absorbed part than the request (which a retried deploy keeps
                // from its first try).
                if let (Some(created), Some(deployed)) = (obs.instance_created_at, j.deployed_at) {
                    if created <= deployed && j.deploy_requested_at.is_none_or(|r| created >= r) {
                        j.deploy_requested_at = Some(created);
                    }
                }
                j.instance_seen_at = Some(now);
                j.provider_errors = 0;
                match alive {
                    InstanceState::Running { ip } => {
                        j.ip = ip.clone().or(j.ip.take());
                        if j.status == JobStatus::Provisioning {
                            j.status = JobStatus::Running;
                            j.started_at = Some(now);
                        }
                    }
                    InstanceState::Offline { ip } => {
                        j.ip = ip.clone().or(j.ip.take());
                        // Shut down means it ran: a short script can start and stop between
                        // two provisioning polls. Count it as running, so the offline grace
                        // ends it — not the provisioning deadline, with the instance billing.
                        if j.status == JobStatus::Provisioning {
                            j.status = JobStatus::Running;
                            j.started_at = Some(now);
                        }
                        j.offline_seen_at.get_or_insert(now);
                    }
                    _ => {}
                }
            }
        },
        InstanceObservation::Unreachable(_) => j.provider_errors += 1,
        InstanceObservation::NotLooked => {}
    }
}

/// The outcome the script's report calls for, if it reported.
fn report_outcome(j: &Job, now: Millis) -> Option<Outcome> {
    j.report.as_ref().map(|report| {
        if report.exit_code == 0 {
            outcome(JobStatus::Completed, None, None, now)
        } else {
            failed(
                FailureReason::ScriptFailed,
                format!("The startup script exited with code {}", report.exit_code),
                now,
            )
        }
    })
}

/// Once the script has reported, the job's result is the script's, however the instance ends
/// afterwards (cancel, max runtime, credits, lost).
fn or_report(j: &Job, ending: Outcome, now: Millis) -> Outcome {
    report_outcome(j, now).unwrap_or(ending)
}

/// Why the job must end now, if it must.
///
/// With `auto_shutdown` the script's report ends the job. Without it the instance stays up
/// after the report (the user may SSH in) until the job is cancelled or reaches
/// `max_runtime_seconds`; the job then ends with the script's result.
fn end_reason(j: &Job, obs: &Observation, now: Millis, t: &Timers) -> Option<Outcome> {
    if j.cancel_requested_at.is_some() {
        let cancelled = outcome(
            JobStatus::Cancelled,
            None,
            Some("Cancelled at the user's request".into()),
            now,
        );
        return Some(or_report(j, cancelled, now));
    }
    if j.auto_shutdown {
        if let Some(o) = report_outcome(j, now) {
            return Some(o);
        }
    }
    end_reason_unreported(j, obs, now, t).map(|o| or_report(j, o, now))
}

/// Endings that do not depend on the report.
fn end_reason_unreported(j: &Job, obs: &Observation, now: Millis, t: &Timers) -> Option<Outcome> {
    let seen = match &obs.instance {
        InstanceObservation::Seen(state) => Some(state),
        _ => None,
    };
    match j.status {
        JobStatus::Queued => None,
        JobStatus::Provisioning => {
            if seen == Some(&InstanceState::Gone) && j.spot {
                return Some(interrupted(now));
            }
            if seen == Some(&InstanceState::Gone) {
                return Some(failed(
                    FailureReason::InstanceLost,
                    "The instance disappeared at the provider while provisioning",
                    now,
                ));
            }
            if let Some(InstanceState::Failed { status }) = seen {
                if !can_fail_over(j, t) {
                    return Some(failed(
                        FailureReason::ProviderError,
                        format!("The instance failed to start (provider status `{status}`)"),
                        now,
                    ));
                }
            }
            let deadline =
                j.deployed_at.unwrap_or(j.created_at) + secs(t.provisioning_timeout_secs);
            (now >= deadline).then(|| {
                failed(
                    FailureReason::ProvisioningTimeout,
                    format!(
                        "The instance was not running {} seconds after it was ordered",
                        t.provisioning_timeout_secs
                    ),
                    now,
                )
            })
        }
        JobStatus::Running => {
            match seen {
                Some(InstanceState::Gone) if j.spot => return Some(interrupted(now)),
                Some(InstanceState::Gone) => {
                    return Some(failed(
                        FailureReason::InstanceLost,
                        "The instance disappeared at the provider",
                        now,
                    ))
                }
                Some(InstanceState::Failed { status }) => {
                    return Some(failed(
                        FailureReason::InstanceLost,
                        format!("The instance stopped working (provider status `{status}`)"),
                        now,
                    ))
                }
                _ => {}
            }
            if let Some(since) = j.offline_seen_at {
                // The wrapper reports before it shuts down; give a late report a moment.
                if now >= since + secs(2 * t.retry_delay_secs) {
                    return Some(failed(
                        FailureReason::ScriptFailed,
                        "The instance shut down without reporting an exit code",
                        now,
                    ));
                }
            }
            if let (Some(max), Some(started)) = (j.max_runtime_seconds, j.started_at) {
                if now >= started + secs(max) {
                    return Some(failed(
                        FailureReason::MaxRuntimeExceeded,
                        format!("The job ran longer than its max_runtime_seconds ({max})"),
                        now,
                    ));
                }
            }
            None
        }
        _ => None,
    }
}

/// A spot instance that vanished was taken back by the provider: not the user's failure.
fn interrupted(now: Millis) -> Outcome {
    failed(
        FailureReason::Interrupted,
        "The provider interrupted the spot instance (it took the capacity back); the script did not finish",
        now,
    )
}

/// Whether a placement was tried already: by the attempt log, or — for records from before it
/// existed — by the tried locations.
fn tried(j: &Job, p: &Placement) -> bool {
    if j.attempt_log.is_empty() {
        return j.tried_locations.contains(&p.location);
    }
    // Only this attempt's deploys: a retry may go back where an earlier attempt ran.
    let from = j.retries.last().map_or(0, |r| r.deploys_before as usize);
    j.attempt_log
        .iter()
        .skip(from)
        .any(|a| a.provider == p.provider && a.location == p.location)
}

/// Records how the current attempt went (the last of the log, if it is still open or was
/// deployed).
fn note_attempt(j: &mut Job, outcome: AttemptOutcome, error: Option<String>) {
    if let Some(last) = j.attempt_log.last_mut() {
        last.outcome = outcome;
        if error.is_some() {
            last.error = error;
        }
    }
}

fn can_fail_over(j: &Job, t: &Timers) -> bool {
    j.requested_location.is_none() && j.deploys_this_attempt() < t.max_deploy_attempts
}

/// Queued: deploy (again) where there is capacity, or give up with `no_capacity`.
fn plan_deploy(mut j: Job, obs: &Observation, now: Millis, t: &Timers) -> Decision {
    // A deploy announced earlier whose result was never recorded: try it again under the same
    // hostname; the worker adopts the instance if the first try did create it.
    if let Some(location) = j.location.clone() {
        let hostname = j.hostname();
        // The earlier try may have created the instance: its request time stands.
        j.deploy_requested_at.get_or_insert(now);
        return Decision {
            job: j,
            effect: Effect::Deploy {
                location,
                hostname,
                adopt: true,
            },
        };
    }
    if let Some(last) = j.retries.last() {
        // Backoff between attempts.
        if now < last.next_at {
            j.next_check_at = last.next_at;
            return Decision {
                job: j,
                effect: Effect::None,
            };
        }
        // The hold must cover the next attempt's first looks: take it from the balance (and
        // the budget), or end with the last attempt's outcome.
        top_up(&mut j, obs, now, t);
        if j.deploys_this_attempt() == 0
            && j.price_per_hour().0 > 0
            && Micros(j.hold_micros) < cost_of(j.price_per_hour(), next_attempt_secs(t))
        {
            let last = j.retries.last().expect("checked above").clone();
            j.outcome = Some(failed(
                last.failure_reason,
                format!(
                    "{} (attempt {}; not retried: the balance or the job's max_cost cannot cover another attempt)",
                    last.error_message.unwrap_or_default(),
                    last.attempt
                ),
                now,
            ));
            return teardown(j, now, t);
        }
    }
    let next = match (&j.requested_location, &obs.candidates) {
        // Pinned to a location: the job's own type and provider there.
        (Some(loc), _) => Some(Placement {
            provider: j.provider.clone(),
            location: loc.clone(),
            instance_type: j.instance_type.clone(),
            price_per_hour_micros: j.price_per_hour_micros,
        })
        .filter(|p| !tried(&j, p)),
        // The cheapest untried; among equals, the earliest (the provider preferred, then the
        // provider's own order of locations).
        (None, Some(available)) => available
            .iter()
            .filter(|p| !tried(&j, p))
            .min_by_key(|p| p.price_per_hour_micros)
            .cloned(),
        (None, None) => None,
    };
    let give_up = next.is_none() || j.deploys_this_attempt() >= t.max_deploy_attempts;
    if give_up {
        let message = match &j.requested_location {
            Some(loc) => format!("No available instances of {} in {loc}", j.instance_type),
            None if j.tried_locations.is_empty() => format!(
                "No available instances of {} in any location",
                j.instance_type
            ),
            None => format!(
                "No available instances of {} (tried {})",
                j.instance_type,
                j.tried_locations.join(", ")
            ),
        };
        end(&mut j, failed(FailureReason::NoCapacity, message, now));
        return teardown(j, now, t);
    }
    let next = next.expect("checked above");
    // A script is kept by the provider that holds it: before moving to another provider,
    // delete it there (the deploy then creates one where the job goes).
    if let Some(script_id) = j.script_id.clone() {
        if j.script_provider() != next.provider {
            return Decision {
                job: j,
                effect: Effect::DeleteScript { script_id },
            };
        }
    }
    let location = next.location.clone();
    j.attempts += 1;
    j.location = Some(location.clone());
    j.provider = next.provider.clone();
    j.instance_type = next.instance_type.clone();
    j.price_per_hour_micros = next.price_per_hour_micros;
    j.attempt_log.push(AttemptRecord {
        provider: next.provider,
        location: next.location,
        instance_type: next.instance_type,
        outcome: AttemptOutcome::Deploying,
        error: None,
        attempt: j.attempt(),
    });
    j.deploy_requested_at = Some(now);
    let hostname = j.hostname();
    Decision {
        job: j,
        effect: Effect::Deploy {
            location,
            hostname,
            adopt: false,
        },
    }
}

/// Provisioning or running: fail over a failed start, keep the hold ahead of the cost, and
/// schedule the next look.
fn keep_watching(mut j: Job, obs: &Observation, now: Millis, t: &Timers) -> Decision {
    if let InstanceObservation::Seen(InstanceState::Failed { status }) = &obs.instance {
        // Only reachable when failing over is allowed (end_reason checked): retire the
        // instance and try the next location.
        note_attempt(
            &mut j,
            AttemptOutcome::Failed,
            Some(format!(
                "The instance never came up (provider status `{status}`)"
            )),
        );
        if let Some(id) = j.instance_id.take() {
            j.retired_lives.push(RetiredLife {
                instance_id: id.clone(),
                deploy_requested_at: j.deploy_requested_at,
                provider: Some(j.provider.clone()),
            });
            j.retired_instances.push(id);
        }
        j.deploy_requested_at = None;
        j.instance_gone_by = None;
        j.delete_decided_at = None;
        if let Some(loc) = j.location.take() {
            j.tried_locations.push(loc);
        }
        j.status = JobStatus::Queued;
        j.deployed_at = None;
        j.instance_seen_at = None;
        j.instance_ended_at = None;
        j.ip = None;
        let effect = match j.retired_instances.first() {
            Some(id) => Effect::DeleteInstance {
                instance_id: id.clone(),
            },
            None => Effect::None,
        };
        return Decision { job: j, effect };
    }

    let interval = poll_interval(&j, t);
    let mut next = now + secs(interval);
    if j.status == JobStatus::Provisioning {
        next = next.min(j.deployed_at.unwrap_or(now) + secs(t.provisioning_timeout_secs));
    }
    if let (Some(max), Some(started)) = (j.max_runtime_seconds, j.started_at) {
        next = next.min(started + secs(max));
    }
    if let Some(since) = j.offline_seen_at {
        // Look again when the late-report grace is over (end_reason), not a running poll
        // later: the instance bills while offline.
        next = next.min(since + secs(2 * t.retry_delay_secs));
    }

    // Credits: the hold must cover the cost until the look after next; extend it from the
    // balance, and stop the job before the hold runs out when the balance cannot.
    // The same for the job's budget: the hold never grows past `max_cost`, so a hold that
    // cannot grow because of it ends the job `budget_exceeded` instead.
    let price = j.price_per_hour();
    if price.0 > 0 {
        let cost_now = j.cost_at(now);
        top_up(&mut j, obs, now, t);
        let runway = Micros(j.hold_micros) - cost_now;
        // Seconds the hold still covers, minus a margin for the teardown to land in time.
        let runway_secs = runway.0 * 3600 / price.0 - t.retry_delay_secs;
        if runway_secs <= 0 {
            let ending = if at_budget(&j) {
                failed(
                    FailureReason::BudgetExceeded,
                    format!(
                        "The job was stopped before its cost passed its max_cost ({})",
                        Micros(j.max_cost_micros.unwrap_or_default())
                    ),
                    now,
                )
            } else {
                failed(
                    FailureReason::InsufficientCredits,
                    "Your credits ran out, so the job was stopped",
                    now,
                )
            };
            // Not retried: the credits (or budget) are what ran out.
            j.outcome = Some(or_report(&j, ending, now));
            return teardown(j, now, t);
        }
        next = next.min(now + secs(runway_secs));
    }
    j.next_check_at = next.max(now + 1000);
    Decision {
        job: j,
        effect: Effect::None,
    }
}

/// Ending: delete the instance(s) and the script, then settle and take the outcome's status —
/// or, when only the attempt ends (`retrying`), charge its instance and queue the next.
fn teardown(mut j: Job, now: Millis, t: &Timers) -> Decision {
    if j.instance_id.is_none() && j.location.is_some() && j.status == JobStatus::Queued {
        let hostname = j.hostname();
        return Decision {
            job: j,
            effect: Effect::LookUpDeploy { hostname },
        };
    }
    if let (Some(id), None) = (&j.instance_id, j.instance_ended_at) {
        let instance_id = id.clone();
        j.delete_decided_at.get_or_insert(now);
        return Decision {
            job: j,
            effect: Effect::DeleteInstance { instance_id },
        };
    }
    if let Some(id) = j.retired_instances.first() {
        let instance_id = id.clone();
        return Decision {
            job: j,
            effect: Effect::DeleteInstance { instance_id },
        };
    }
    if let Some(script_id) = j.script_id.clone() {
        return Decision {
            job: j,
            effect: Effect::DeleteScript { script_id },
        };
    }
    if j.retrying {
        if j.cancel_requested_at.is_none() {
            next_attempt(&mut j, now, t);
            return Decision {
                job: j,
                effect: Effect::None,
            };
        }
        // Cancelled while the attempt was torn down: the job ends (with the script's result
        // if it reported, as any cancel).
        j.retrying = false;
        if j.report.is_none() {
            j.outcome = Some(outcome(
                JobStatus::Cancelled,
                None,
                Some("Cancelled at the user's request".into()),
                now,
            ));
        }
    }
    settle(&mut j, now);
    Decision {
        job: j,
        effect: Effect::None,
    }
}

/// The attempt is over and torn down: charge its instance's life (the billing rule, per
/// attempt: a retried attempt ran the user's script, unlike an abandoned fail-over deploy),
/// record it, and queue the next attempt after the backoff on a fresh instance — a new
/// hostname, since `attempts` grows at its deploy.
fn next_attempt(j: &mut Job, now: Millis, t: &Timers) {
    let o = j.outcome.take().expect("retrying follows an outcome");
    let charged = charge_instance(j, now);
    let attempt = j.attempt();
    let next_at = now + secs(backoff_secs(t.retry_delay_secs, attempt + 1));
    if let Some(last) = j.attempt_log.last_mut() {
        if last.error.is_none() {
            last.error = o.error_message.clone();
        }
    }
    j.retries.push(RetryRecord {
        attempt,
        ended_at: now,
        failure_reason: o.failure_reason.unwrap_or(FailureReason::ProviderError),
        error_message: o.error_message,
        exit_code: j.report.as_ref().map(|r| r.exit_code),
        charged_micros: charged.0,
        next_at,
        deploys_before: j.attempts,
    });
    j.retrying = false;
    j.status = JobStatus::Queued;
    j.location = None;
    j.tried_locations.clear();
    j.instance_id = None;
    j.ip = None;
    j.deployed_at = None;
    j.instance_seen_at = None;
    j.instance_ended_at = None;
    j.deploy_requested_at = None;
    j.instance_gone_by = None;
    j.delete_decided_at = None;
    j.started_at = None;
    j.offline_seen_at = None;
    j.provider_errors = 0;
    j.report = None;
    j.next_check_at = next_at;
}

/// Charges the current instance's billable life out of the hold (what the hold cannot cover,
/// and the measuring uncertainty, is absorbed); returns the charge.
fn charge_instance(j: &mut Job, now: Millis) -> Micros {
    let owed = j.cost_at(now);
    let charge = owed.min(Micros(j.hold_micros));
    j.absorbed_micros += (j.possible_value(now).max(owed) - charge).0;
    j.charged_micros += charge.0;
    j.hold_micros -= charge.0;
    charge
}

/// Charges the instance's billable life and releases the rest of the hold. The hold was
/// topped up to what is owed while the balance and budget allowed (see [`needs_balance`]);
/// what it still cannot cover, and every second the provider may have billed beyond what the
/// rule charges, is absorbed.
fn settle(j: &mut Job, now: Millis) {
    let o = j.outcome.clone().expect("settle follows an outcome");
    charge_instance(j, now);
    j.hold_micros = 0;
    j.status = o.status;
    j.failure_reason = o.failure_reason;
    j.error_message = o.error_message;
    j.finished_at = Some(now);
    j.next_check_at = now;
}

/// Records what an effect produced.
pub fn apply(job: &Job, result: &EffectResult, now: Millis, t: &Timers) -> Job {
    let mut j = job.clone();
    j.next_check_at = now;
    j.lease_until = None;
    match result {
        EffectResult::Deploy { script_id, outcome } => {
            if script_id.is_some() {
                j.script_id = script_id.clone();
                j.script_provider = Some(j.provider.clone());
            }
            match outcome {
                DeployOutcome::Deployed { instance_id } => {
                    note_attempt(&mut j, AttemptOutcome::Deployed, None);
                    j.instance_id = Some(instance_id.clone());
                    j.deployed_at = Some(now);
                    j.instance_seen_at = Some(now);
                    j.instance_ended_at = None;
                    j.instance_gone_by = None;
                    j.delete_decided_at = None;
                    j.provider_errors = 0;
                    if j.status == JobStatus::Queued {
                        j.status = JobStatus::Provisioning;
                    }
                    j.next_check_at = now + secs(t.provisioning_poll_secs);
                }
                DeployOutcome::NoCapacity { message } => {
                    note_attempt(&mut j, AttemptOutcome::NoCapacity, Some(message.clone()));
                    if let Some(loc) = j.location.take() {
                        j.tried_locations.push(loc);
                    }
                    if j.requested_location.is_some() && j.outcome.is_none() {
                        end(
                            &mut j,
                            failed(
                                FailureReason::NoCapacity,
                                format!("No available instances: {message}"),
                                now,
                            ),
                        );
                    }
                }
                DeployOutcome::Failed {
                    transient: true,
                    message,
                } => {
                    if let Some(last) = j.attempt_log.last_mut() {
                        last.error = Some(message.clone());
                    }
                    j.provider_errors += 1;
                    j.next_check_at = now + secs(t.retry_delay_secs);
                    if j.provider_errors >= MAX_DEPLOY_ERRORS && j.outcome.is_none() {
                        // The deploy may still have happened: keep `location` so the teardown
                        // looks the hostname up before settling.
                        end(
                            &mut j,
                            failed(
                                FailureReason::ProviderError,
                                format!("The provider kept failing: {message}"),
                                now,
                            ),
                        );
                    }
                }
                // Refused before it was processed: no error counted, nothing to look up for it.
                DeployOutcome::RateLimited { retry_after_ms } => {
                    j.next_check_at = now + (*retry_after_ms).max(0);
                }
                DeployOutcome::SecretMissing { message } => {
                    j.location = None;
                    if j.outcome.is_none() {
                        j.outcome = Some(failed(FailureReason::SecretMissing, message, now));
                    }
                }
                DeployOutcome::Failed {
                    transient: false,
                    message,
                } => {
                    note_attempt(&mut j, AttemptOutcome::Failed, Some(message.clone()));
                    j.location = None;
                    if j.outcome.is_none() {
                        end(
                            &mut j,
                            failed(
                                FailureReason::ProviderError,
                                format!("The provider refused the deploy: {message}"),
                                now,
                            ),
                        );
                    }
                }
            }
        }
        EffectResult::LookedUp { instance_id } => match instance_id {
            Some(id) => {
                note_attempt(&mut j, AttemptOutcome::Deployed, None);
                j.instance_id = Some(id.clone());
                // We do not know when it was created: bill from now, never before.
                j.deployed_at = Some(now);
                j.instance_seen_at = Some(now);
                j.instance_ended_at = None;
                j.instance_gone_by = None;
                j.delete_decided_at = None;
            }
            None => {
                if j.attempt_log.last().map(|a| a.outcome) == Some(AttemptOutcome::Deploying) {
                    note_attempt(
                        &mut j,
                        AttemptOutcome::Failed,
                        Some("The deploy did not create an instance".into()),
                    );
                }
                j.location = None;
            }
        },
        EffectResult::Deleted {
            instance_id,
            already_gone,
            requested_at,
        } => {
            if j.instance_id.as_ref() == Some(instance_id) && j.instance_ended_at.is_none() {
                j.instance_ended_at = Some(if *already_gone {
                    j.instance_seen_at
                        .or(j.deployed_at)
                        .unwrap_or(*requested_at)
                } else {
                    // An earlier call of this delete may have been accepted with its answer
                    // lost (a crash, a timeout): the provider ended the life then, at the
                    // latest, so the earliest unanswered decision bounds it.
                    j.delete_decided_at
                        .map_or(*requested_at, |d| d.min(*requested_at))
                });
                j.delete_decided_at = None;
                // The provider accepted the delete somewhere before `now`.
                j.instance_gone_by = Some(now);
            }
            if j.retired_instances.contains(instance_id) {
                // An abandoned fail-over attempt: the rule does not bill it; its life (at most
                // from its deploy request to now) is absorbed.
                let from = j
                    .retired_lives
                    .iter()
                    .find(|r| &r.instance_id == instance_id)
                    .and_then(|r| r.deploy_requested_at);
                if let Some(from) = from {
                    j.absorbed_micros += cost_of(j.price_per_hour(), (now - from).max(0) / 1000).0;
                }
            }
            j.retired_lives.retain(|r| &r.instance_id != instance_id);
            j.retired_instances.retain(|r| r != instance_id);
        }
        EffectResult::DeleteRefused { instance_id } => {
            // Refused outright: no earlier call of it was accepted either (the instance lives).
            if j.instance_id.as_ref() == Some(instance_id) {
                j.delete_decided_at = None;
            }
            j.next_check_at = now + secs(t.retry_delay_secs);
        }
        EffectResult::DeleteFailed {
            instance_id,
            unanswered,
            ..
        } => {
            if !unanswered && j.instance_id.as_ref() == Some(instance_id) {
                j.delete_decided_at = None;
            }
            j.provider_errors += 1;
            j.next_check_at = now + secs(t.retry_delay_secs);
        }
        EffectResult::ScriptDeleteFailed { .. } => {
            j.provider_errors += 1;
            j.next_check_at = now + secs(t.retry_delay_secs);
        }
        EffectResult::ScriptDeleted => {
            j.script_id = None;
            j.script_provider = None;
        }
        EffectResult::RateLimited { retry_after_ms } => {
            j.next_check_at = now + (*retry_after_ms).max(0);
        }
    }
    j.parked = parks(&j, now, t);
    j
}

/// The job unchanged but looked at again at `until`: its next step would call a provider path
/// that is rate limited until then, so the worker does not take it now (nothing is decided,
/// nothing counted).
pub fn defer(job: &Job, until: Millis, now: Millis, t: &Timers) -> Job {
    let mut j = job.clone();
    j.next_check_at = until.max(now);
    j.lease_until = None;
    j.parked = parks(&j, now, t);
    j
}
