//! The worker: one SQS message = "look at this job now". For each job it loops
//! read → observe → decide (pure) → persist the decision → perform its one effect → persist
//! the result, until the job waits for time to pass; then it schedules itself a delayed message.
//!
//! Duplicate, late or reordered messages are harmless: every write is conditional on the job's
//! version, an effect happens only after its intent was persisted, and a message for a job that
//! is not due yet is dropped (the message that made it not due scheduled the next one).

mod effects;
mod observe;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures_util::future::join_all;
use mimiry_shared::aws::AwsClients;
use mimiry_shared::catalog::Catalog;
use mimiry_shared::chaos;
use mimiry_shared::config::{Config, Timers};
use mimiry_shared::error::ApiError;
use mimiry_shared::jobs::lifecycle::{apply, decide, defer, note_seen_alive, Effect};
use mimiry_shared::jobs::report_token::SigningKey;
use mimiry_shared::jobs::Job;
use mimiry_shared::notices::Notices;
use mimiry_shared::provider::{GpuProvider, ProviderRegistry};
use mimiry_shared::queue::{JobQueue, JobRef};
use mimiry_shared::store::jobs::SaveError;
use mimiry_shared::store::Store;
use mimiry_shared::time::now_ms;
use mimiry_shared::webhooks::WebhookQueue;
use mimiry_shared::wiring;
use std::sync::Arc;

/// Decide/act rounds per message before handing the job back to the queue.
const MAX_ROUNDS: usize = 12;
/// A message this early for its job's next check is a duplicate: drop it.
const EARLY_TOLERANCE_MS: i64 = 1500;

pub struct App {
    pub store: Store,
    /// Every enabled provider: each job's effects go to the provider its record names.
    pub providers: ProviderRegistry,
    /// One per enabled provider, in order of preference (placement candidates).
    pub catalogs: Vec<Catalog>,
    pub queue: JobQueue,
    pub signing_key: SigningKey,
    pub timers: Timers,
    pub public_base_url: String,
    /// The low-balance notice, checked after a save that took credits.
    pub notices: Notices,
    /// Signed webhooks: told of each committed status change (never blocks the lifecycle).
    pub webhooks: WebhookQueue,
}

impl App {
    pub fn new(clients: &AwsClients, config: &Config) -> App {
        let providers = wiring::providers(clients, config);
        App {
            store: wiring::store(clients, config),
            catalogs: wiring::catalogs(&providers, config),
            providers,
            queue: JobQueue::new(clients.sqs.clone(), config.jobs_queue_url.clone()),
            signing_key: SigningKey::new(clients.secrets.clone(), config.report_secret_id.clone()),
            timers: config.timers,
            public_base_url: config.public_base_url.trim_end_matches('/').to_string(),
            notices: wiring::notices(clients, config),
            webhooks: wiring::webhook_queue(clients, config),
        }
    }
}

impl App {
    /// The enabled provider `id` (a job's, an instance's, a script's). A job whose provider
    /// was disabled since cannot be advanced: an error, so its message is retried and the
    /// operator sees it.
    pub fn provider(&self, id: &str) -> Result<&Arc<dyn GpuProvider>, ApiError> {
        self.providers
            .get(id)
            .ok_or_else(|| ApiError::internal(format!("provider `{id}` is not enabled")))
    }
}

/// Handles a batch; failed messages are reported so SQS redelivers only those.
pub async fn handle(app: &App, event: SqsEvent) -> SqsBatchResponse {
    // Concurrently on this task: one slow provider call must not serialise the batch.
    let results = join_all(event.records.iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        let job: JobRef = match record.body.as_deref().map(serde_json::from_str) {
            Some(Ok(job)) => job,
            _ => {
                // A message we cannot read will never become readable: drop it, loudly.
                tracing::error!(message_id = %id, "dropping an unreadable jobs-queue message");
                return None;
            }
        };
        match drive(app, &job).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, error = %e, "job step failed; the message will be retried");
                Some(id)
            }
        }
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for id in results.into_iter().flatten() {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

/// Advances one job as far as it can go now.
pub async fn drive(app: &App, job_ref: &JobRef) -> Result<(), ApiError> {
    // Whoever writes a job last schedules its next look; a handler that lost a race leaves that
    // to the winner, so duplicate deliveries cannot multiply the job's messages.
    let mut wrote_last = false;
    // The job as this handler last wrote it: our conditional write succeeded, so it is the
    // latest version unless someone wrote since — and then our next write conflicts and we read.
    let mut latest: Option<Job> = None;
    for round in 0..MAX_ROUNDS {
        let job = match latest.take() {
            Some(job) => job,
            None => match app
                .store
                .get_job(&job_ref.account_id, &job_ref.job_id)
                .await?
            {
                Some(job) => job,
                None => {
                    tracing::warn!(job_id = %job_ref.job_id, "message for a job that does not exist");
                    return Ok(());
                }
            },
        };
        // The reconciler's sighting rides on the decision's write (same version condition).
        let seen = match &job_ref.seen_alive {
            Some(s) => note_seen_alive(&job, &s.instance_id, s.at),
            None => job.clone(),
        };
        if job.status.is_terminal() {
            return Ok(());
        }
        let now = now_ms();
        // The message's own timing may be a little early (delays are whole seconds); a wake-up
        // from the reconciler is for now, unless another worker holds the job's lease. Later
        // rounds act only on what is due now and otherwise hand the job back to the queue.
        let due = if round == 0 {
            let leased = job.lease_until.is_some_and(|until| until > now);
            (job_ref.look_now && !leased) || job.due_at() <= now + EARLY_TOLERANCE_MS
        } else {
            job.due_at() <= now
        };
        if !due {
            if wrote_last {
                schedule(app, &job).await;
            } else {
                tracing::debug!(job_id = %job.job_id, "early or duplicate message dropped");
            }
            return Ok(());
        }

        chaos::point("worker: before observing")?;
        let looked = observe::observe(app, &job, now).await?;
        let decision = decide(&seen, &looked.observation, now, &app.timers);
        // The step would call a provider path paused by its rate limit: leave the job as it
        // is and look again when the pause is over (spread by jitter), instead of calling.
        if let Some(wait) = effects::deferral(app, &job, &decision.effect) {
            let deferred = defer(&job, now + effects::jittered(wait), now, &app.timers);
            return match app.store.save_job(&job, &deferred).await {
                Ok(saved) => {
                    tracing::info!(job_id = %job.job_id, wait_ms = wait.as_millis() as u64,
                        next_check_at = saved.next_check_at, "provider rate limited; job deferred");
                    schedule(app, &saved).await;
                    Ok(())
                }
                // Someone else moved the job on: theirs to schedule.
                Err(SaveError::Conflict) => Ok(()),
                Err(SaveError::Other(e)) => Err(e),
            };
        }
        app.webhooks.before_final_save(&job, &decision.job).await;
        let saved = match app.store.save_job(&job, &decision.job).await {
            Ok(saved) => saved,
            Err(SaveError::Conflict) => {
                wrote_last = false;
                continue;
            }
            Err(SaveError::Other(e)) => return Err(e),
        };
        wrote_last = true;
        log_transition(&job, &saved);
        after_balance_move(app, &job, &saved).await;
        chaos::point("worker: job saved, webhooks not triggered")?;
        app.webhooks.after_save(&job, &saved).await;
        if saved.status.is_terminal() {
            return Ok(());
        }
        if decision.effect == Effect::None {
            if saved.due_at() > now_ms() {
                schedule(app, &saved).await;
                return Ok(());
            }
            latest = Some(saved);
            continue;
        }
        chaos::point("worker: decision saved, effect not performed")?;
        let result = effects::perform(app, &saved, &decision.effect, looked.os_volume).await?;
        chaos::point("worker: effect performed, result not saved")?;
        let applied = apply(&saved, &result, now_ms(), &app.timers);
        app.webhooks.before_final_save(&saved, &applied).await;
        match app.store.save_job(&saved, &applied).await {
            Ok(after) => {
                wrote_last = true;
                log_transition(&saved, &after);
                after_balance_move(app, &saved, &after).await;
                chaos::point("worker: result saved, webhooks not triggered")?;
                app.webhooks.after_save(&saved, &after).await;
                latest = Some(after);
            }
            // Someone else moved the job on; the next round re-reads it. A result lost this way
            // is found again: deploys are adopted by hostname, deletes are idempotent.
            Err(SaveError::Conflict) => {
                wrote_last = false;
                continue;
            }
            Err(SaveError::Other(e)) => return Err(e),
        }
    }
    // Still busy after many rounds: let the queue bring it back.
    app.queue.send(job_ref, 0).await
}

/// Asks for the next look at the job's `next_check_at`, unless the job is parked (the
/// reconciler will). If the send fails, the reconciler re-drives the job once it is overdue.
async fn schedule(app: &App, job: &Job) {
    if job.parked {
        return;
    }
    let delay_secs = ((job.due_at() - now_ms()).max(0) + 999) / 1000;
    let job_ref = JobRef::new(job.account_id.clone(), job.job_id.clone());
    if let Err(e) = app.queue.send(&job_ref, delay_secs).await {
        tracing::warn!(job_id = %job.job_id, error = %e, "could not schedule the next check; the reconciler will");
    }
}

/// A save that moved the balance may have crossed the account's low-balance threshold: down
/// (a longer hold, a charge beyond the hold) sends the notice, up (a released hold) re-arms it.
async fn after_balance_move(app: &App, before: &Job, after: &Job) {
    let taken =
        (after.hold_micros + after.charged_micros) - (before.hold_micros + before.charged_micros);
    if taken != 0 {
        app.notices
            .after_balance_change(&app.store, &after.account_id)
            .await;
    }
}

fn log_transition(before: &Job, after: &Job) {
    if before.status != after.status || before.outcome.is_none() && after.outcome.is_some() {
        tracing::info!(
            job_id = %after.job_id,
            account = %after.account_id,
            from = before.status.as_str(),
            to = after.status.as_str(),
            ending = after.outcome.as_ref().map(|o| o.status.as_str()),
            reason = ?after.failure_reason.or(after.outcome.as_ref().and_then(|o| o.failure_reason)),
            instance_id = after.instance_id.as_deref(),
            "job moved"
        );
    }
    if after.absorbed_micros != before.absorbed_micros {
        // Mimiry's absorbed cost (docs/decisions.md, "Exact billing"): provider time the rule
        // does not bill, one line per change so it can be summed from the logs.
        tracing::info!(
            job_id = %after.job_id,
            account = %after.account_id,
            absorbed_micros = after.absorbed_micros - before.absorbed_micros,
            job_absorbed_micros = after.absorbed_micros,
            charged_micros = after.charged_micros,
            "absorbed cost"
        );
    }
}
