//! The reconciler (EventBridge, once a minute): the safety net under the queue, and the eye on
//! running jobs. Each run reads the due part of the active-jobs index and lists each provider's
//! instances once; every [`FULL_READ_EVERY_RUNS`] runs it reads the whole index instead and lists
//! scripts (and volumes) too. Then:
//!
//! 1. wakes parked jobs (`Job::parked`: no SQS message waits for them) shortly before their
//!    next look is due, with a delayed message;
//! 2. re-drives queue-driven jobs whose next look is overdue — a lost or dead-lettered message
//!    can delay a job by a minute, never strand it;
//! 3. wakes a parked job at once when the instance list shows its instance changed: a running
//!    job's no longer running (stopped, failed, vanished), a provisioning job's running, stopped,
//!    failed or vanished. The worker need not poll each job; one list per run watches them all.
//!    Between full reads only the jobs whose listed instances differ from the previous run's
//!    list are read (one `BatchGetItem` per 100), so a run costs what changed, not what is
//!    active;
//! 4. deletes provider instances and startup scripts named for Mimiry jobs that are no longer
//!    active (a crash between deploy and persist, a cancel racing a deploy): nothing is left
//!    billing. Between full reads only instances whose job was read this run are candidates;
//!    the others wait for the next full read (at most [`FULL_READ_EVERY_RUNS`] runs). Each
//!    candidate's job is read with a consistent read before anything is deleted.
//!    An instance is deleted with its OS volume named, so the volume does not sit in the
//!    provider's trash;
//! 5. deletes, permanently, Mimiry's OS volumes (`mimiry-{job}-{attempt}-os`) that outlived
//!    their instance — one the provider lost, or one deleted before its volume was known —
//!    and any of ours in the trash (it counts against the storage quota for 96 hours).
//!
//! A provider rate limit (429) ends a sweep for this run: the next run, a minute later,
//! carries on.
//!
//! Every enabled provider is listed and swept, each with its own calls. An instance's job is
//! read off its owner tag (`mimiry-{job}.{account}`, the description) where the provider keeps
//! one; a provider without descriptions (Lambda, [`GpuProvider::keeps_descriptions`]) names
//! the job only by the hostname (`mimiry-{job}-{attempt}`, the instance's name), so its job's
//! account is unknown: such an instance is an orphan when its job has not been in the active
//! index for a grace (`reconcile_grace_secs`, remembered per container), not after a read —
//! judged on full reads only (a partial read does not list every live job). Nor can such a job
//! be read by key when its instance changes: between full reads it is alerted when it is due.

use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::{Config, Timers};
use mimiry_shared::error::ApiError;
use mimiry_shared::jobs::lifecycle::InstanceState;
use mimiry_shared::jobs::model::{job_id_of_name, parse_owner_tag};
use mimiry_shared::provider::{
    DeleteOutcome, GpuProvider, InstanceInfo, ProviderError, ProviderRegistry, VolumeInfo,
};
use mimiry_shared::queue::{JobQueue, JobRef, SeenAlive, MAX_DELAY_SECS};
use mimiry_shared::store::jobs::{ActiveJob, Watch};
use mimiry_shared::store::Store;
use mimiry_shared::time::{now_ms, Millis};
use mimiry_shared::wiring;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages sent per run (re-drives and wake-ups together).
const MAX_SENDS: usize = 500;
/// The volume sweep (two list calls) runs at most this often per container: every run in
/// production (once a minute), one run in 15 when a test stack reconciles every 2 s — there
/// its lists would otherwise take a quarter of the provider's 500 requests a minute.
const VOLUME_SWEEP_EVERY: Duration = Duration::from_secs(30);
/// One run in this many reads every active job (the rest read only what is due): the orphan
/// sweeps need the set of live jobs, and a full read costs one index item per active job —
/// 10,000 jobs read every minute is O(all jobs) per minute; every tenth minute is a tenth of it,
/// and an orphan (rare: a crash between deploy and persist) bills at most ten minutes longer.
pub const FULL_READ_EVERY_RUNS: i64 = 10;

pub struct App {
    pub store: Store,
    /// Every enabled provider: each is listed and swept.
    pub providers: ProviderRegistry,
    pub queue: JobQueue,
    pub timers: Timers,
    /// What was sent recently, so that a run does not repeat the previous one's messages.
    /// Kept per container: a cold start at worst sends once more.
    sent: Mutex<Backoff>,
    /// When this container last swept volumes through to the end.
    volumes_swept_at: Mutex<Option<Instant>>,
    /// Per active job, the last time a list showed one of its instances alive: an alert about
    /// an instance gone carries it, so the job is billed until then (per container: after a
    /// cold start the worker's own last look stands in).
    alive: Mutex<HashMap<String, SeenAlive>>,
    /// Instances named for a job but without an owner tag (a provider without descriptions),
    /// whose job was not active: instance id → first seen so.
    unowned: Mutex<HashMap<String, Millis>>,
    /// When this container last read every active job.
    full_read_at: Mutex<Option<Millis>>,
    /// The previous run's instance list, per job: (account, [(instance, state)]), so that a
    /// partial run reads only the jobs whose instances changed.
    listed_before: Mutex<HashMap<String, Listed>>,
}

/// What the instance lists showed of one job: its account (unknown at a provider without
/// descriptions), and its instances' states by id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    account_id: Option<String>,
    instances: Vec<(String, InstanceState)>,
}

/// What a run knows of the active jobs.
struct Known<'a> {
    active: HashMap<&'a str, &'a ActiveJob>,
    /// A full run: `active` holds every active job (as the eventually consistent index lists
    /// them), so a job missing from it may be over.
    complete: bool,
    /// On a partial run, the jobs read this run and found over (or gone from the table).
    over: HashSet<String>,
}

impl Known<'_> {
    /// Whether the job may still be running, as far as this run knows without reading it.
    fn may_be_live(&self, job_id: &str) -> bool {
        self.active.contains_key(job_id) || (!self.complete && !self.over.contains(job_id))
    }
}

/// Keys acted on → (next action allowed at, actions so far).
///
/// A re-drive that waits behind a backlog leaves its job overdue; another copy on every run
/// would only lengthen the backlog, until the queue grows faster than the worker drains it.
#[derive(Default)]
struct Backoff(HashMap<String, (Millis, u32)>);

impl Backoff {
    /// Whether `key` may be acted on now; if so, records it: the next time is allowed after
    /// `base_ms`, doubling on each repeat up to 8 × `base_ms`.
    fn try_act(&mut self, key: String, now: Millis, base_ms: i64) -> bool {
        let times = match self.0.get(&key) {
            Some((next, _)) if now < *next => return false,
            Some((_, times)) => *times,
            None => 0,
        };
        let factor = 1i64 << times.min(3);
        self.0
            .insert(key, (now + base_ms.max(1000) * factor, times + 1));
        true
    }

    /// Forgets every key not in `wanted` (acted on successfully, or no longer relevant).
    fn keep_only(&mut self, wanted: &HashSet<String>) {
        self.0.retain(|key, _| wanted.contains(key));
    }
}

impl App {
    pub fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            providers: wiring::providers(clients, config),
            queue: JobQueue::new(clients.sqs.clone(), config.jobs_queue_url.clone()),
            timers: config.timers,
            sent: Mutex::new(Backoff::default()),
            volumes_swept_at: Mutex::new(None),
            alive: Mutex::new(HashMap::new()),
            unowned: Mutex::new(HashMap::new()),
            full_read_at: Mutex::new(None),
            listed_before: Mutex::new(HashMap::new()),
        }
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Overdue queue-driven jobs sent to the worker again.
    pub redriven: usize,
    /// Parked jobs whose next look comes up before the next run.
    pub woken: usize,
    /// Parked jobs whose instance changed at the provider (see `instance_changed`).
    pub instance_alerts: usize,
    pub orphan_instances_deleted: usize,
    pub orphan_instances_waiting: usize,
    pub orphan_scripts_deleted: usize,
    pub orphan_volumes_deleted: usize,
    /// Sweeps cut short by the provider's rate limit.
    pub rate_limited: usize,
    /// Overdue jobs not re-driven because the queue's backlog holds their messages.
    pub redrives_held_back: usize,
    pub errors: usize,
    /// Whether this run read every active job (see [`FULL_READ_EVERY_RUNS`]).
    pub full_read: bool,
    /// Active-index keys read this run, and jobs read by key (changed instances).
    pub index_keys_read: usize,
    pub jobs_read: usize,
    /// Where the run's time went (the scale benchmark's profile of a run).
    pub timings: Timings,
}

/// Milliseconds per phase of a run, each mostly waiting on one service: the active index
/// (DynamoDB), the wake-ups and re-drives (SQS), the providers' listings, the jobs read by
/// key for changed instances (DynamoDB), and the sweeps (providers). What a run took beyond
/// their sum is our own work.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Timings {
    pub index_read_ms: u64,
    pub send_due_ms: u64,
    pub provider_list_ms: u64,
    pub read_changed_ms: u64,
    pub sweeps_ms: u64,
}

/// Milliseconds since `start`.
fn ms_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

pub async fn reconcile(app: &App) -> Summary {
    let mut summary = Summary::default();
    let now = now_ms();
    let period_ms = app.timers.reconcile_every_secs * 1000;
    // A little short of the period's multiple: runs are not exactly a period apart.
    let full = lock(&app.full_read_at)
        .is_none_or(|at| now - at >= FULL_READ_EVERY_RUNS * period_ms - period_ms / 2);
    summary.full_read = full;
    let phase = Instant::now();
    let read = if full {
        app.store.active_jobs().await
    } else {
        app.store.active_jobs_due_before(horizon(app, now)).await
    };
    // Without the index, orphans cannot be told from live jobs: do nothing this run.
    let mut active = match read {
        Ok(active) => active,
        Err(e) => {
            summary.errors += 1;
            tracing::error!(error = %e, "reading the active jobs failed");
            return summary;
        }
    };
    summary.index_keys_read = active.len();
    summary.timings.index_read_ms = ms_since(phase);
    let phase = Instant::now();
    let mut wanted = HashSet::new();
    if let Err(e) = send_due(app, &active, now, &mut wanted, &mut summary).await {
        summary.errors += 1;
        tracing::error!(error = %e, "sending due jobs to the worker failed");
    }
    summary.timings.send_due_ms = ms_since(phase);
    let phase = Instant::now();
    // Volumes are listed before instances: an instance that owns a listed volume existed
    // before the instance list was asked for, so it is in that list unless it is gone. They
    // are swept on full runs only: an unattached volume's job must be known to be over.
    let volume_sweep_due =
        full && lock(&app.volumes_swept_at).is_none_or(|at| at.elapsed() >= VOLUME_SWEEP_EVERY);
    let mut volumes = Vec::new();
    let mut listed = Vec::new();
    for provider in app.providers.all() {
        let provider = provider.as_ref();
        volumes.push(if !volume_sweep_due {
            None
        } else {
            match provider.list_volumes().await {
                Ok(volumes) => Some(volumes),
                Err(e) => {
                    if !stop_for_rate_limit(&e, &mut summary) {
                        summary.errors += 1;
                        tracing::warn!(provider = provider.id(), error = %e, "listing volumes failed");
                    }
                    None
                }
            }
        });
        // Before the call: the list shows each instance as it was at some moment after this.
        let listed_at = now_ms();
        let instances = match provider.list_instances().await {
            Ok(instances) => Some(instances),
            Err(e) => {
                summary.errors += 1;
                tracing::warn!(provider = provider.id(), error = %e, "listing instances failed");
                None
            }
        };
        listed.push((provider, listed_at, instances));
    }
    summary.timings.provider_list_ms = ms_since(phase);
    let phase = Instant::now();
    // With every provider's list only: a provider that did not answer would look emptied.
    let mut over = HashSet::new();
    if listed.iter().all(|(_, _, instances)| instances.is_some()) {
        let changed = remember_listing(app, &listed);
        if !full {
            match read_changed(app, &mut active, changed).await {
                Ok((read, gone)) => {
                    summary.jobs_read = read;
                    over = gone;
                }
                Err(e) => {
                    // Not known which of them are live: no alerts or deletes for them this run.
                    summary.errors += 1;
                    tracing::warn!(error = %e, "reading the jobs whose instances changed failed");
                }
            }
        }
    }
    if full {
        *lock(&app.full_read_at) = Some(now);
    }
    summary.timings.read_changed_ms = ms_since(phase);
    let phase = Instant::now();
    let known = Known {
        active: active.iter().map(|j| (j.job_id.as_str(), j)).collect(),
        complete: full,
        over,
    };
    let mut volumes_swept = volume_sweep_due;
    for ((provider, _, instances), volumes) in listed.iter().zip(volumes) {
        match (volumes, instances) {
            (Some(volumes), Some(instances)) => {
                volumes_swept &=
                    sweep_volumes(*provider, &known.active, &volumes, instances, &mut summary)
                        .await;
            }
            _ => volumes_swept = false,
        }
        // Scripts live as long as their job: between full reads none can be told orphan cheaply.
        if full {
            if let Err(e) = sweep_scripts(app, *provider, &known, &mut summary).await {
                summary.errors += 1;
                tracing::warn!(provider = provider.id(), error = %e, "sweeping orphan scripts failed");
            }
        }
    }
    if volumes_swept {
        *lock(&app.volumes_swept_at) = Some(Instant::now());
    }
    if let Err(e) = sweep_instances(app, &known, &listed, now, &mut wanted, &mut summary).await {
        summary.errors += 1;
        tracing::warn!(error = %e, "sweeping instances failed");
    }
    lock(&app.sent).keep_only(&wanted);
    summary.timings.sweeps_ms = ms_since(phase);
    let did_something = Summary {
        timings: Timings::default(),
        ..summary.clone()
    } != Summary::default();
    if did_something {
        tracing::info!(
            redriven = summary.redriven,
            woken = summary.woken,
            instance_alerts = summary.instance_alerts,
            orphan_instances_deleted = summary.orphan_instances_deleted,
            orphan_instances_waiting = summary.orphan_instances_waiting,
            orphan_scripts_deleted = summary.orphan_scripts_deleted,
            orphan_volumes_deleted = summary.orphan_volumes_deleted,
            rate_limited = summary.rate_limited,
            redrives_held_back = summary.redrives_held_back,
            errors = summary.errors,
            full_read = summary.full_read,
            index_keys_read = summary.index_keys_read,
            jobs_read = summary.jobs_read,
            "reconciled"
        );
    }
    summary
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether this run's re-drives would only lengthen a backlog: when the queue already holds at
/// least as many ready messages as there are overdue jobs, each of them most likely has its
/// message waiting there. Re-driving anyway is how a slow worker met a growing queue (a
/// 500-job chaos run: 1,917 re-drives in 13 runs, 2,417 messages waiting, looks 20 min late).
/// A job whose message was really lost is re-driven once the backlog drains below that.
fn redrives_held_back(backlog: Option<u64>, overdue: usize) -> bool {
    overdue > 0 && backlog.is_some_and(|ready| ready >= overdue as u64)
}

/// Parked jobs due before this (two periods: a run that comes late still finds the job ahead
/// of it; a message's delay is at most SQS's 900 s, so never further) are woken this run.
fn horizon(app: &App, now: Millis) -> Millis {
    now + (2 * app.timers.reconcile_every_secs).min(MAX_DELAY_SECS) * 1000
}

/// Keeps this run's lists and returns the jobs whose listed instances differ from the previous
/// run's (new, changed or vanished), with their accounts where known.
fn remember_listing(app: &App, listed: &[ProviderList<'_>]) -> Vec<(Option<String>, String)> {
    let now = listed_by_job(listed.iter().flat_map(|(provider, _, instances)| {
        instances
            .iter()
            .flatten()
            .filter_map(move |instance| Some((owner_of(*provider, instance)?, instance)))
    }));
    let before = std::mem::replace(&mut *lock(&app.listed_before), now.clone());
    listing_changes(before, &now)
}

/// Instances with their owners ((job, account if known)), per job, in instance-id order.
fn listed_by_job<'a>(
    owned: impl IntoIterator<Item = ((String, Option<String>), &'a InstanceInfo)>,
) -> HashMap<String, Listed> {
    let mut by_job: HashMap<String, Listed> = HashMap::new();
    for ((job_id, account_id), instance) in owned {
        by_job
            .entry(job_id)
            .or_insert_with(|| Listed {
                account_id,
                instances: Vec::new(),
            })
            .instances
            .push((instance.id.clone(), InstanceState::of(instance)));
    }
    for listed in by_job.values_mut() {
        listed.instances.sort_by(|a, b| a.0.cmp(&b.0));
    }
    by_job
}

/// `(account, job)` of every job listed differently in `now` than in `before`.
fn listing_changes(
    before: HashMap<String, Listed>,
    now: &HashMap<String, Listed>,
) -> Vec<(Option<String>, String)> {
    let mut changed: Vec<(Option<String>, String)> = now
        .iter()
        .filter(|(job_id, listed)| before.get(*job_id) != Some(*listed))
        .map(|(job_id, listed)| (listed.account_id.clone(), job_id.clone()))
        .collect();
    changed.extend(
        before
            .into_iter()
            .filter(|(job_id, _)| !now.contains_key(job_id))
            .map(|(job_id, listed)| (listed.account_id, job_id)),
    );
    changed
}

/// Reads the `changed` jobs not already in `active` (consistently, by key), adds the active
/// ones to it and returns how many were read and the ids of those found over or missing. A job
/// named only by a hostname has no key to read it by: it waits until it is due.
async fn read_changed(
    app: &App,
    active: &mut Vec<ActiveJob>,
    changed: Vec<(Option<String>, String)>,
) -> Result<(usize, HashSet<String>), ApiError> {
    let have: HashSet<&str> = active.iter().map(|j| j.job_id.as_str()).collect();
    let keys: Vec<(String, String)> = changed
        .into_iter()
        .filter(|(_, job_id)| !have.contains(job_id.as_str()))
        .filter_map(|(account_id, job_id)| Some((account_id?, job_id)))
        .collect();
    if keys.is_empty() {
        return Ok((0, HashSet::new()));
    }
    let jobs = app.store.get_jobs(&keys).await?;
    let mut over: HashSet<String> = keys.iter().map(|(_, job_id)| job_id.clone()).collect();
    for job in &jobs {
        if let Some(live) = ActiveJob::of(job) {
            over.remove(&live.job_id);
            active.push(live);
        }
    }
    Ok((keys.len(), over))
}

/// Parked jobs due before the run after next get a message delayed until they are due; a
/// queue-driven job overdue by the grace is re-driven (then again only after a backoff while it
/// stays overdue), unless the queue's backlog says its message is waiting anyway. Messages go
/// out ten per call. Keys of what is still wanted go into `wanted`.
async fn send_due(
    app: &App,
    active: &[ActiveJob],
    now: Millis,
    wanted: &mut HashSet<String>,
    summary: &mut Summary,
) -> Result<(), ApiError> {
    let grace_ms = app.timers.reconcile_grace_secs * 1000;
    let horizon = horizon(app, now);
    let is_overdue = |job: &ActiveJob| !job.watch.is_parked() && job.due_at < now - grace_ms;
    let overdue = active.iter().filter(|job| is_overdue(job)).count();
    let backlog = if overdue == 0 {
        None
    } else {
        match app.queue.backlog().await {
            Ok(ready) => Some(ready),
            Err(e) => {
                tracing::warn!(error = %e, "reading the queue's backlog failed; re-driving anyway");
                None
            }
        }
    };
    let hold_back = redrives_held_back(backlog, overdue);
    if hold_back {
        summary.redrives_held_back = overdue;
    }
    let mut messages = Vec::new();
    for job in active {
        let parked = job.watch.is_parked();
        let (key, delay_ms, base_ms) = if parked && job.due_at < horizon {
            // Sent once per due time; again only if it is still parked at that time a grace
            // after it was due (the message was lost).
            let delay_ms = (job.due_at - now).max(0);
            (
                format!("wake {} {}", job.job_id, job.due_at),
                delay_ms,
                delay_ms + grace_ms,
            )
        } else if is_overdue(job) && !hold_back {
            (format!("redrive {}", job.job_id), 0, grace_ms)
        } else {
            continue;
        };
        wanted.insert(key.clone());
        if messages.len() >= MAX_SENDS || !lock(&app.sent).try_act(key, now, base_ms) {
            continue;
        }
        let delay_secs = ((delay_ms + 999) / 1000).min(MAX_DELAY_SECS);
        messages.push((JobRef::new(&job.account_id, &job.job_id), delay_secs));
        if parked {
            summary.woken += 1;
        } else {
            summary.redriven += 1;
        }
    }
    app.queue.send_many(&messages).await?;
    Ok(())
}

/// True when the job named by a provider resource is finished (or never existed). A job the
/// active index lists is in use (no read: one `GetItem` per live job per run would cost every
/// running job 120 reads an hour); on a full run any other is confirmed with a consistent
/// read, because the index is eventually consistent. A just-finished job still listed waits
/// for the next run. On a partial run only jobs read this run can be over.
async fn job_is_over(
    app: &App,
    known: &Known<'_>,
    job_id: &str,
    account_id: &str,
) -> Result<bool, ApiError> {
    if known.active.contains_key(job_id) {
        return Ok(false);
    }
    if !known.complete {
        return Ok(known.over.contains(job_id));
    }
    Ok(match app.store.get_job(account_id, job_id).await? {
        Some(job) => job.status.is_terminal(),
        None => true,
    })
}

/// Whether what the provider lists for a parked job (the states of the instances tagged with
/// it, current and retired) means its instance changed and the worker must look now.
fn instance_changed(watch: Watch, listed: &[InstanceState]) -> bool {
    match watch {
        Watch::Queue | Watch::Timer => false,
        // Stopped, failed or vanished.
        Watch::Running => !listed
            .iter()
            .any(|s| matches!(s, InstanceState::Running { .. })),
        // Running (or stopped: a short script), failed — or vanished, nothing booting any more.
        Watch::Booting => {
            listed.iter().any(|s| {
                matches!(
                    s,
                    InstanceState::Running { .. }
                        | InstanceState::Offline { .. }
                        | InstanceState::Failed { .. }
                )
            }) || !listed.contains(&InstanceState::Booting)
        }
    }
}

/// Wakes a parked job whose instance changed (see [`instance_changed`]).
async fn alert(
    app: &App,
    job: &ActiveJob,
    seen_alive: Option<SeenAlive>,
    now: Millis,
    wanted: &mut HashSet<String>,
    summary: &mut Summary,
) -> Result<(), ApiError> {
    let key = format!("alert {}", job.job_id);
    wanted.insert(key.clone());
    let base_ms = app.timers.reconcile_grace_secs * 1000;
    if !lock(&app.sent).try_act(key, now, base_ms) {
        return Ok(());
    }
    let mut wake = JobRef::new(&job.account_id, &job.job_id);
    wake.look_now = true;
    wake.seen_alive = seen_alive;
    app.queue.send(&wake, 0).await?;
    tracing::info!(job_id = %job.job_id, watch = ?job.watch, "its instance changed; woke the job");
    summary.instance_alerts += 1;
    Ok(())
}

/// The job an instance belongs to: (job id, account id) from its owner tag, or — at a
/// provider that keeps no description — (job id, `None`) from its hostname.
fn owner_of(
    provider: &dyn GpuProvider,
    instance: &InstanceInfo,
) -> Option<(String, Option<String>)> {
    if let Some((job, account)) = parse_owner_tag(&instance.description) {
        return Some((job, Some(account)));
    }
    if provider.keeps_descriptions() {
        return None;
    }
    job_id_of_name(&instance.hostname).map(|job| (job.to_string(), None))
}

/// One provider's instance list, as this run got it: when it was asked for, and the list
/// (`None`: the call failed).
type ProviderList<'a> = (&'a dyn GpuProvider, Millis, Option<Vec<InstanceInfo>>);

/// Wakes the parked jobs `known` holds whose instances changed, and deletes orphan instances.
async fn sweep_instances(
    app: &App,
    known: &Known<'_>,
    listed: &[ProviderList<'_>],
    now: Millis,
    wanted: &mut HashSet<String>,
    summary: &mut Summary,
) -> Result<(), ApiError> {
    let mut states: HashMap<String, Vec<InstanceState>> = HashMap::new();
    {
        let mut alive = lock(&app.alive);
        alive.retain(|job_id, _| known.may_be_live(job_id));
        for (provider, listed_at, instances) in listed {
            for instance in instances.iter().flatten() {
                if let Some((job_id, _)) = owner_of(*provider, instance) {
                    let state = InstanceState::of(instance);
                    let alive_now =
                        !matches!(state, InstanceState::Gone | InstanceState::Failed { .. });
                    if alive_now && known.may_be_live(&job_id) {
                        alive.insert(
                            job_id.clone(),
                            SeenAlive {
                                instance_id: instance.id.clone(),
                                at: *listed_at,
                            },
                        );
                    }
                    states.entry(job_id).or_default().push(state);
                }
            }
        }
    }
    // Only with every provider's list: a job whose provider did not answer is not "vanished".
    if listed.iter().all(|(_, _, instances)| instances.is_some()) {
        for job in known.active.values() {
            let states = states.get(&job.job_id).map_or(&[][..], Vec::as_slice);
            if instance_changed(job.watch, states) {
                let seen_alive = lock(&app.alive).get(&job.job_id).cloned();
                alert(app, job, seen_alive, now, wanted, summary).await?;
            }
        }
    }
    let mut unowned_now = HashSet::new();
    for (provider, _, instances) in listed {
        for instance in instances.iter().flatten() {
            if !delete_if_orphan(
                app,
                *provider,
                known,
                instance,
                now,
                &mut unowned_now,
                summary,
            )
            .await?
            {
                break;
            }
        }
    }
    // A partial run judged no unowned instance: what it remembers waits for the next full one.
    if known.complete {
        lock(&app.unowned).retain(|id, _| unowned_now.contains(id));
    }
    Ok(())
}

/// Whether `volume` is one of Mimiry's OS volumes left without its instance: in the trash, or
/// attached to none of `instances` (listed after the volumes) while its job is not active.
/// The job check keeps a volume whose instance the list did not show yet (a provider's list
/// may lag a deploy) — and the provider refuses to delete a volume under a live instance.
fn volume_is_orphan(
    volume: &VolumeInfo,
    instances: &[InstanceInfo],
    active: &HashMap<&str, &ActiveJob>,
) -> bool {
    let Some(job_id) = job_id_of_name(&volume.name) else {
        return false;
    };
    if volume.in_trash {
        return true;
    }
    let attached_to_listed = volume.instance_id.as_deref().is_some_and(|owner| {
        instances
            .iter()
            .any(|i| i.id == owner && !i.status.is_gone())
    });
    !attached_to_listed && !active.contains_key(job_id)
}

/// Deletes the orphans among `volumes`; `false` if a rate limit cut the sweep short.
async fn sweep_volumes(
    provider: &dyn GpuProvider,
    active: &HashMap<&str, &ActiveJob>,
    volumes: &[VolumeInfo],
    instances: &[InstanceInfo],
    summary: &mut Summary,
) -> bool {
    for volume in volumes
        .iter()
        .filter(|v| volume_is_orphan(v, instances, active))
    {
        match provider.delete_volume(&volume.id).await {
            Ok(()) => {
                tracing::info!(volume_id = %volume.id, name = %volume.name,
                    in_trash = volume.in_trash, "deleted an orphan volume");
                summary.orphan_volumes_deleted += 1;
            }
            Err(e) if stop_for_rate_limit(&e, summary) => return false,
            Err(e) => {
                summary.errors += 1;
                tracing::warn!(volume_id = %volume.id, error = %e, "could not delete an orphan volume");
            }
        }
    }
    true
}

/// Whether a failed provider call was the rate limit: the sweep stops for this run (the
/// remaining calls would be refused too, and push the limit further).
fn stop_for_rate_limit(e: &ProviderError, summary: &mut Summary) -> bool {
    let Some(wait) = e.retry_after() else {
        return false;
    };
    summary.rate_limited += 1;
    tracing::info!(
        wait_ms = wait.as_millis() as u64,
        "provider rate limited; the sweep goes on next run"
    );
    true
}

/// Deletes `instance` if its job is over; `false` when the sweep must stop (rate limited).
async fn delete_if_orphan(
    app: &App,
    provider: &dyn GpuProvider,
    known: &Known<'_>,
    instance: &InstanceInfo,
    now: Millis,
    unowned_now: &mut HashSet<String>,
    summary: &mut Summary,
) -> Result<bool, ApiError> {
    let Some((job_id, account_id)) = owner_of(provider, instance) else {
        // Not tagged by us: a `mimiry-` hostname without our tag is left alone and logged.
        if job_id_of_name(&instance.hostname).is_some() {
            tracing::warn!(instance_id = %instance.id, "instance with a Mimiry hostname but no owner tag; not touched");
        }
        return Ok(true);
    };
    // Deleted already (discontinued): nothing bills, nothing to read or delete again.
    if instance.status.is_gone() {
        return Ok(true);
    }
    let over = match &account_id {
        Some(account_id) => job_is_over(app, known, &job_id, account_id).await?,
        // Named only by its hostname: over when its job has been out of the active index for
        // a grace (the index is eventually consistent; a job is in it before it deploys),
        // which only a full read can tell.
        None if known.active.contains_key(job_id.as_str()) || !known.complete => false,
        None => {
            unowned_now.insert(instance.id.clone());
            let first = *lock(&app.unowned).entry(instance.id.clone()).or_insert(now);
            now - first >= app.timers.reconcile_grace_secs * 1000
        }
    };
    if !over {
        return Ok(true);
    }
    match provider
        .delete_instance(&instance.id, instance.os_volume_id.as_deref())
        .await
    {
        Ok(DeleteOutcome::Accepted) | Ok(DeleteOutcome::AlreadyGone) => {
            tracing::info!(provider = provider.id(), instance_id = %instance.id, job_id = %job_id, "deleted an orphan instance");
            summary.orphan_instances_deleted += 1;
        }
        Ok(DeleteOutcome::NotYet) => summary.orphan_instances_waiting += 1,
        Err(e) if stop_for_rate_limit(&e, summary) => return Ok(false),
        Err(e) => {
            summary.errors += 1;
            tracing::warn!(provider = provider.id(), instance_id = %instance.id, error = %e, "could not delete an orphan instance");
        }
    }
    Ok(true)
}

async fn sweep_scripts(
    app: &App,
    provider: &dyn GpuProvider,
    known: &Known<'_>,
    summary: &mut Summary,
) -> Result<(), ApiError> {
    let scripts = match provider.list_scripts().await {
        Err(e) if stop_for_rate_limit(&e, summary) => return Ok(()),
        other => other?,
    };
    for script in scripts {
        let Some((job_id, account_id)) = parse_owner_tag(&script.name) else {
            continue;
        };
        if !job_is_over(app, known, &job_id, &account_id).await? {
            continue;
        }
        match provider.delete_script(&script.id).await {
            Ok(()) => {
                tracing::info!(script_id = %script.id, job_id = %job_id, "deleted an orphan script");
                summary.orphan_scripts_deleted += 1;
            }
            Err(e) if stop_for_rate_limit(&e, summary) => return Ok(()),
            Err(e) => {
                summary.errors += 1;
                tracing::warn!(script_id = %script.id, error = %e, "could not delete an orphan script");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> InstanceState {
        InstanceState::Running { ip: None }
    }

    fn failed() -> InstanceState {
        InstanceState::Failed {
            status: "error".into(),
        }
    }

    #[test]
    fn a_running_job_is_woken_unless_an_instance_of_it_runs() {
        use InstanceState::*;
        let w = Watch::Running;
        assert!(!instance_changed(w, &[running()]));
        assert!(!instance_changed(w, &[Gone, running()]), "a retired one");
        for listed in [
            vec![],
            vec![Offline { ip: None }],
            vec![failed()],
            vec![Gone],
            vec![Booting],
        ] {
            assert!(instance_changed(w, &listed), "{listed:?}");
        }
    }

    #[test]
    fn a_provisioning_job_is_woken_when_its_instance_leaves_booting() {
        use InstanceState::*;
        let w = Watch::Booting;
        assert!(!instance_changed(w, &[Booting]));
        assert!(!instance_changed(w, &[Gone, Booting]), "a retired one");
        for listed in [
            vec![running()],
            vec![Offline { ip: None }],
            vec![failed()],
            vec![Gone],
            vec![],
        ] {
            assert!(instance_changed(w, &listed), "{listed:?}");
        }
    }

    #[test]
    fn redrives_wait_only_behind_a_backlog_that_can_hold_their_messages() {
        assert!(!redrives_held_back(Some(500), 0), "nothing overdue");
        assert!(!redrives_held_back(None, 10), "backlog unknown: re-drive");
        assert!(
            !redrives_held_back(Some(9), 10),
            "too few waiting to hold them all"
        );
        assert!(redrives_held_back(Some(10), 10));
        assert!(redrives_held_back(Some(2417), 150));
    }

    #[test]
    fn only_a_rate_limit_stops_a_sweep() {
        let mut summary = Summary::default();
        let limited = ProviderError::RateLimited {
            retry_after: std::time::Duration::from_secs(20),
        };
        assert!(stop_for_rate_limit(&limited, &mut summary));
        assert_eq!(summary.rate_limited, 1);
        for other in [
            ProviderError::Timeout,
            ProviderError::Server {
                status: 503,
                message: "x".into(),
            },
            ProviderError::InvalidRequest("x".into()),
        ] {
            assert!(!stop_for_rate_limit(&other, &mut summary), "{other:?}");
        }
        assert_eq!(summary.rate_limited, 1);
    }

    #[test]
    fn only_our_volumes_without_their_instance_are_orphans() {
        use mimiry_shared::jobs::model::hostname;
        use mimiry_shared::provider::InstanceStatus;
        let job = uuid::Uuid::now_v7().to_string();
        let other_job = uuid::Uuid::now_v7().to_string();
        let volume = |job: &str, instance: &str, in_trash| VolumeInfo {
            id: format!("v-{instance}"),
            name: format!("{}-os", hostname(job, 1)),
            instance_id: Some(instance.into()),
            in_trash,
        };
        let instance = |id: &str, status| InstanceInfo {
            id: id.into(),
            instance_type: "1V100.6V".into(),
            status,
            hostname: String::new(),
            description: String::new(),
            location: "FIN-01".into(),
            ip: None,
            created_at: None,
            startup_script_id: None,
            price_per_hour: None,
            os_volume_id: None,
        };
        let listed = [
            instance("live", InstanceStatus::Running),
            instance("ended", InstanceStatus::Discontinued),
        ];
        let active_job = ActiveJob {
            due_at: 0,
            account_id: uuid::Uuid::new_v4().to_string(),
            job_id: job.clone(),
            watch: Watch::Queue,
        };
        let none = HashMap::new();
        let active: HashMap<&str, &ActiveJob> = [(job.as_str(), &active_job)].into();

        // Under a listed instance that is up: never, whatever the job.
        assert!(!volume_is_orphan(
            &volume(&other_job, "live", false),
            &listed,
            &none
        ));
        // Its instance lost (not listed) or ended: an orphan once its job is over.
        for owner in ["lost", "ended"] {
            assert!(volume_is_orphan(
                &volume(&other_job, owner, false),
                &listed,
                &none
            ));
            assert!(
                !volume_is_orphan(&volume(&job, owner, false), &listed, &active),
                "the job is active: its instance may just not be listed yet"
            );
        }
        // In the trash: always (it will never be used again, and it fills the quota).
        assert!(volume_is_orphan(
            &volume(&job, "live", true),
            &listed,
            &active
        ));
        // Not named by Mimiry: never.
        let theirs = VolumeInfo {
            name: "OS-NVMe-1234".into(),
            ..volume(&other_job, "lost", true)
        };
        assert!(!volume_is_orphan(&theirs, &listed, &none));
    }

    #[test]
    fn only_jobs_listed_differently_from_the_last_run_are_read() {
        use mimiry_shared::jobs::model::owner_tag;
        use mimiry_shared::provider::InstanceStatus;
        let account = uuid::Uuid::new_v4().to_string();
        let instance = |id: &str, job: &str, status| InstanceInfo {
            id: id.into(),
            instance_type: "1V100.6V".into(),
            status,
            hostname: String::new(),
            description: owner_tag(job, &account),
            location: "FIN-01".into(),
            ip: None,
            created_at: None,
            startup_script_id: None,
            price_per_hour: None,
            os_volume_id: None,
        };
        let listed_by_job = |instances: &[InstanceInfo]| {
            listed_by_job(instances.iter().map(|i| {
                let (job, account) = parse_owner_tag(&i.description).unwrap();
                ((job, Some(account)), i)
            }))
        };
        let [steady, booted, vanished, new, retried] =
            std::array::from_fn(|_| uuid::Uuid::now_v7().to_string());
        let before = listed_by_job(&[
            instance("i1", &steady, InstanceStatus::Running),
            instance("i2", &booted, InstanceStatus::Provisioning),
            instance("i3", &vanished, InstanceStatus::Running),
            instance("i5", &retried, InstanceStatus::Running),
        ]);
        let now = listed_by_job(&[
            instance("i5", &retried, InstanceStatus::Running),
            instance("i2", &booted, InstanceStatus::Running),
            instance("i1", &steady, InstanceStatus::Running),
            instance("i4", &new, InstanceStatus::Ordered),
            instance("i6", &retried, InstanceStatus::Ordered),
        ]);
        let mut changed = listing_changes(before, &now);
        changed.sort();
        let mut expected: Vec<(Option<String>, String)> = [booted, vanished, new, retried]
            .into_iter()
            .map(|job| (Some(account.clone()), job))
            .collect();
        expected.sort();
        assert_eq!(
            changed, expected,
            "the steady job is not read; listing order does not matter"
        );
        assert!(listing_changes(now.clone(), &now).is_empty());
    }

    #[test]
    fn queue_driven_and_timer_jobs_are_not_watched() {
        for w in [Watch::Queue, Watch::Timer] {
            assert!(!instance_changed(w, &[]));
            assert!(!instance_changed(w, &[failed()]));
        }
    }
}
