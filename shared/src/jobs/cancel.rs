//! Cancelling a job, for every front door (`DELETE /jobs/{id}` and the dashboard). A job that
//! never started deploying is cancelled at once and its hold released; otherwise the
//! cancellation is recorded and the worker deletes the instance before the job becomes
//! `cancelled`. Idempotent; a finished job is a 409 naming its status.

use crate::error::ApiError;
use crate::jobs::{Job, JobStatus};
use crate::queue::{JobQueue, JobRef};
use crate::store::jobs::SaveError;
use crate::store::Store;
use crate::time::now_ms;

/// Concurrent writers (the worker) can make a conditional write fail; re-read and try again.
const ATTEMPTS: usize = 5;

/// What a cancel request did.
#[derive(Debug, Clone)]
pub enum Cancelled {
    /// Nothing was ever sent to the provider: the job is `cancelled` now.
    Now(Job),
    /// The worker will delete the instance, then mark the job `cancelled` (also when the
    /// cancellation had been asked for before).
    Requested(Job),
}

pub async fn cancel(
    store: &Store,
    queue: &JobQueue,
    webhooks: &crate::webhooks::WebhookQueue,
    account_id: &str,
    job_id: &str,
) -> Result<Cancelled, ApiError> {
    for _ in 0..ATTEMPTS {
        let job = store
            .get_job(account_id, job_id)
            .await?
            .ok_or(ApiError::NotFound("Job"))?;
        if job.status.is_terminal() {
            return Err(ApiError::Conflict {
                code: "job_finished",
                message: format!("Job is already {}", job.status.as_str()),
            });
        }
        if job.cancel_requested_at.is_some() {
            return Ok(Cancelled::Requested(job));
        }
        let now = now_ms();
        let (new, done_now) = cancelled(&job, now);
        webhooks.before_final_save(&job, &new).await;
        match store.save_job(&job, &new).await {
            Ok(saved) => {
                if done_now {
                    // Ended here, not in the worker: its webhook is asked for here.
                    webhooks.after_save(&job, &saved).await;
                    return Ok(Cancelled::Now(saved));
                }
                let job_ref = JobRef::new(saved.account_id.clone(), saved.job_id.clone());
                if let Err(e) = queue.send(&job_ref, 0).await {
                    // The reconciler re-drives it: next_check_at is now.
                    tracing::warn!(job_id = %saved.job_id, error = %e, "could not enqueue a cancellation");
                }
                return Ok(Cancelled::Requested(saved));
            }
            Err(SaveError::Conflict) => continue,
            Err(SaveError::Other(e)) => return Err(e),
        }
    }
    Err(ApiError::Conflict {
        code: "busy",
        message: "The job is changing right now; please retry".into(),
    })
}

/// The job after a cancel request, and whether it is finished already.
fn cancelled(job: &Job, now: i64) -> (Job, bool) {
    let mut new = job.clone();
    new.cancel_requested_at = Some(now);
    new.look_now(now);
    // Nothing was ever announced to the provider: no instance can exist, finish here.
    let untouched = job.status == JobStatus::Queued
        && job.attempts == 0
        && job.location.is_none()
        && job.script_id.is_none();
    if untouched {
        new.status = JobStatus::Cancelled;
        new.hold_micros = 0;
        new.error_message = Some("Cancelled at the user's request".into());
        new.finished_at = Some(now);
    }
    (new, untouched)
}
