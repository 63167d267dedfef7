//! The reconciler (EventBridge, once a minute): the safety net under the queue.
//!
//! 1. Re-drives active jobs whose next check is overdue — a lost or dead-lettered message can
//!    delay a job by a minute, never strand it.
//! 2. Deletes provider instances and startup scripts named for Mimiry jobs that are no longer
//!    active (a crash between deploy and persist, a cancel racing a deploy): nothing is left
//!    billing. Each candidate's job is read with a consistent read before anything is deleted.

use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::{Config, Timers};
use mimiry_shared::error::ApiError;
use mimiry_shared::jobs::model::{job_id_of_name, parse_owner_tag};
use mimiry_shared::provider::{DeleteOutcome, GpuProvider};
use mimiry_shared::queue::{JobQueue, JobRef};
use mimiry_shared::store::Store;
use mimiry_shared::time::{now_ms, Millis};
use mimiry_shared::wiring;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Overdue jobs re-driven per run.
const MAX_REDRIVES: usize = 500;
/// A job still overdue after a re-drive is re-driven again after grace × 2^n, at most this
/// many times the grace.
const MAX_REDRIVE_BACKOFF: i64 = 8;

pub struct App {
    pub store: Store,
    pub provider: Arc<dyn GpuProvider>,
    pub queue: JobQueue,
    pub timers: Timers,
    /// Jobs re-driven that are still overdue: job id → (next re-drive allowed at, re-drives).
    /// A re-drive message that waits behind a backlog leaves its job overdue; another copy on
    /// every run would only lengthen the backlog, until the queue grows faster than the worker
    /// drains it. Kept per container: a cold start at worst re-drives once more.
    redriven: Mutex<HashMap<String, (Millis, u32)>>,
}

impl App {
    pub fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            provider: wiring::provider(clients, config),
            queue: JobQueue::new(clients.sqs.clone(), config.jobs_queue_url.clone()),
            timers: config.timers,
            redriven: Mutex::new(HashMap::new()),
        }
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub redriven: usize,
    pub orphan_instances_deleted: usize,
    pub orphan_instances_waiting: usize,
    pub orphan_scripts_deleted: usize,
    pub errors: usize,
}

pub async fn reconcile(app: &App) -> Summary {
    let mut summary = Summary::default();
    if let Err(e) = redrive(app, &mut summary).await {
        summary.errors += 1;
        tracing::error!(error = %e, "re-driving overdue jobs failed");
    }
    // Read once per run, only when the provider lists something of ours.
    let mut active = None;
    if let Err(e) = sweep_instances(app, &mut active, &mut summary).await {
        summary.errors += 1;
        tracing::warn!(error = %e, "sweeping orphan instances failed");
    }
    if let Err(e) = sweep_scripts(app, &mut active, &mut summary).await {
        summary.errors += 1;
        tracing::warn!(error = %e, "sweeping orphan scripts failed");
    }
    if summary != Summary::default() {
        tracing::info!(
            redriven = summary.redriven,
            orphan_instances_deleted = summary.orphan_instances_deleted,
            orphan_instances_waiting = summary.orphan_instances_waiting,
            orphan_scripts_deleted = summary.orphan_scripts_deleted,
            errors = summary.errors,
            "reconciled"
        );
    }
    summary
}

/// Re-drives each job overdue by the grace, then again only after a backoff while it stays
/// overdue (see [`App::redriven`]); a job that is no longer overdue is forgotten.
async fn redrive(app: &App, summary: &mut Summary) -> Result<(), ApiError> {
    let now = now_ms();
    let grace_ms = app.timers.reconcile_grace_secs * 1000;
    let overdue = app.store.overdue_jobs(now - grace_ms, MAX_REDRIVES).await?;
    let due: Vec<(String, String)> = {
        let mut redriven = app.redriven.lock().unwrap_or_else(|p| p.into_inner());
        let still: HashSet<&str> = overdue.iter().map(|(_, job)| job.as_str()).collect();
        redriven.retain(|job, _| still.contains(job.as_str()));
        overdue
            .into_iter()
            .filter(|(_, job)| redriven.get(job).is_none_or(|(next, _)| now >= *next))
            .collect()
    };
    for (account_id, job_id) in due {
        let job = JobRef {
            account_id,
            job_id: job_id.clone(),
        };
        app.queue.send(&job, 0).await?;
        let mut redriven = app.redriven.lock().unwrap_or_else(|p| p.into_inner());
        let times = redriven.get(&job_id).map_or(0, |(_, n)| *n);
        let backoff = grace_ms.max(1000) * (1i64 << times.min(3)).min(MAX_REDRIVE_BACKOFF);
        redriven.insert(job_id, (now + backoff, times + 1));
        summary.redriven += 1;
    }
    Ok(())
}

/// True when the job named by a provider resource is finished (or never existed). A job the
/// active index lists is in use (no read: one `GetItem` per live job per run would cost every
/// running job 120 reads an hour); any other is confirmed with a consistent read, because the
/// index is eventually consistent. A just-finished job still listed waits for the next run.
async fn job_is_over(
    app: &App,
    active: &mut Option<HashSet<String>>,
    job_id: &str,
    account_id: &str,
) -> Result<bool, ApiError> {
    if active.is_none() {
        *active = Some(app.store.active_job_ids().await?);
    }
    if active.as_ref().is_some_and(|ids| ids.contains(job_id)) {
        return Ok(false);
    }
    Ok(match app.store.get_job(account_id, job_id).await? {
        Some(job) => job.status.is_terminal(),
        None => true,
    })
}

async fn sweep_instances(
    app: &App,
    active: &mut Option<HashSet<String>>,
    summary: &mut Summary,
) -> Result<(), ApiError> {
    for instance in app.provider.list_instances().await? {
        let Some((job_id, account_id)) = parse_owner_tag(&instance.description) else {
            // Not tagged by us: a `mimiry-` hostname without our tag is left alone and logged.
            if job_id_of_name(&instance.hostname).is_some() {
                tracing::warn!(instance_id = %instance.id, "instance with a Mimiry hostname but no owner tag; not touched");
            }
            continue;
        };
        if !job_is_over(app, active, &job_id, &account_id).await? {
            continue;
        }
        match app.provider.delete_instance(&instance.id).await {
            Ok(DeleteOutcome::Accepted) | Ok(DeleteOutcome::AlreadyGone) => {
                tracing::info!(instance_id = %instance.id, job_id = %job_id, "deleted an orphan instance");
                summary.orphan_instances_deleted += 1;
            }
            Ok(DeleteOutcome::NotYet) => summary.orphan_instances_waiting += 1,
            Err(e) => {
                summary.errors += 1;
                tracing::warn!(instance_id = %instance.id, error = %e, "could not delete an orphan instance");
            }
        }
    }
    Ok(())
}

async fn sweep_scripts(
    app: &App,
    active: &mut Option<HashSet<String>>,
    summary: &mut Summary,
) -> Result<(), ApiError> {
    for script in app.provider.list_scripts().await? {
        let Some((job_id, account_id)) = parse_owner_tag(&script.name) else {
            continue;
        };
        if !job_is_over(app, active, &job_id, &account_id).await? {
            continue;
        }
        match app.provider.delete_script(&script.id).await {
            Ok(()) => {
                tracing::info!(script_id = %script.id, job_id = %job_id, "deleted an orphan script");
                summary.orphan_scripts_deleted += 1;
            }
            Err(e) => {
                summary.errors += 1;
                tracing::warn!(script_id = %script.id, error = %e, "could not delete an orphan script");
            }
        }
    }
    Ok(())
}
