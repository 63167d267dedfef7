//! The worker: jobs advanced per second (the release worker binary under the runtime-API
//! emulator, fed SQS batches of queued jobs), platform overhead (submit → deploy call,
//! report → completed) through the local server's event-source mapping, and the AWS + provider
//! requests one job costs per hour.

use crate::api::submit_body;
use crate::events;
use crate::functions::Running;
use crate::results::{ms, percentile, Results};
use crate::stack::{counted, summarize, Call, ProviderCount, Stack, RECONCILE_EVERY_SECS};
use anyhow::{anyhow, bail, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Production: `Timers::default().running_poll_secs` (shared/src/config.rs): the worker's own
/// look at a running (parked) job, which the reconciler wakes it for.
pub const PRODUCTION_RUNNING_POLL_SECS: f64 = 3600.0;
/// The reconciler's schedule in template.yaml: rate(1 minute).
pub const RECONCILER_RUNS_PER_HOUR: f64 = 60.0;
/// Production `PROVISIONING_POLL_SECONDS`: messages scheduled by a deploy arrive this late.
const PROVISIONING_POLL_SECS: u64 = 15;

const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:mimiry-jobs";

type Item = HashMap<String, AttributeValue>;

fn num(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn report_at(item: &Item) -> Option<i64> {
    item.get("report")?
        .as_m()
        .ok()?
        .get("reported_at")?
        .as_n()
        .ok()?
        .parse()
        .ok()
}

fn status(item: &Item) -> &str {
    item.get("status")
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

const TERMINAL: &[&str] = &["completed", "failed", "cancelled"];

/// Waits (polling) until every job is terminal; bounded.
async fn wait_terminal(stack: &Stack, ids: &[String], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&String> = ids.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            if !TERMINAL.contains(&stack.job_status(id).await?.as_str()) {
                still.push(id);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} jobs still not finished after {timeout:?}",
                pending.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

async fn wait_status(
    stack: &Stack,
    id: &str,
    wanted: &[&str],
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = stack.job_status(id).await?;
        if wanted.contains(&s.as_str()) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("job {id} is {s}, not {wanted:?}, after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the local worker has been handed `n` more messages, and for their handling to
/// finish; returns the new count.
async fn wait_messages(stack: &Stack, from: u64, n: u64, timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = stack.worker_messages().await?;
        if m >= from + n {
            tokio::time::sleep(Duration::from_millis(700)).await;
            return stack.worker_messages().await;
        }
        if Instant::now() > deadline {
            bail!(
                "the worker got {} of {n} expected messages in {timeout:?}",
                m - from
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Provider routes that refill a container's caches rather than serve one job: the OAuth token
/// and the catalog (cached `CATALOG_TTL_SECONDS`, 30 s).
fn per_container(route: &str) -> bool {
    [
        "oauth2/token",
        "instance-types",
        "instance-availability",
        "locations",
        "images",
    ]
    .iter()
    .any(|r| route.contains(r))
}

/// The reconciler's calls of every run, shared by all jobs: the active-index query and the
/// provider's instance and script lists. (A retried deploy's hostname look-up also lists
/// instances; none happens in these windows.) Other queries are about one job or account and
/// count for the job: the webhook sender's list of the account's endpoints, made for every
/// status change even when the list is empty.
fn per_run_aws(call: &Call) -> bool {
    call.op == "dynamodb:Query"
        && call.body.contains(&format!(
            "\"IndexName\":\"{}\"",
            mimiry_shared::store::jobs::ACTIVE_INDEX
        ))
}

fn per_run_provider(route: &str) -> bool {
    route == "GET /v1/instances" || route == "GET /v1/scripts"
}

/// One window's requests: counted AWS calls + provider calls made for the job; what refills a
/// container's caches (secrets, token, catalog) is only listed in the detail, the reconciler's
/// per-run calls are counted apart.
struct Window {
    per_job: usize,
    reconciler_aws: usize,
    reconciler_provider: u64,
    detail: String,
}

fn window(calls: &[Call], provider: &ProviderCount) -> Window {
    let aws = counted(calls);
    let (shared_aws, job_aws): (Vec<&Call>, Vec<&Call>) = aws
        .into_iter()
        .partition(|c| c.op.starts_with("secretsmanager:") || per_run_aws(c));
    let shared_provider = |keep: &dyn Fn(&str) -> bool| -> u64 {
        provider
            .by_route
            .iter()
            .filter(|(r, _)| keep(r))
            .map(|(_, n)| n)
            .sum()
    };
    let container_provider = shared_provider(&per_container);
    let reconciler_provider = shared_provider(&per_run_provider);
    Window {
        per_job: job_aws.len()
            + (provider.total - container_provider - reconciler_provider) as usize,
        reconciler_aws: shared_aws.iter().filter(|c| per_run_aws(c)).count(),
        reconciler_provider,
        detail: format!(
            "AWS [{}] provider {:?}; per-container and per-reconciler-run AWS [{}]",
            summarize(job_aws.iter().copied()),
            provider.by_route,
            summarize(shared_aws.iter().copied())
        ),
    }
}

/// Jobs advanced per second: queued jobs, handed to one warm worker process in SQS batches of
/// 10; each is read, decided, announced, deployed at the fake and saved (queued → provisioning).
pub async fn throughput(
    stack: &Stack,
    release: &Path,
    queued: &[String],
    results: &mut Results,
) -> Result<usize> {
    let batch = 10;
    if queued.len() < 2 * batch {
        bail!("throughput needs at least {} queued jobs", 2 * batch);
    }
    let refs: Vec<(String, String)> = queued
        .iter()
        .map(|j| (stack.account_id.clone(), j.clone()))
        .collect();
    let mut worker =
        Running::start(stack, &release.join("mimiry-worker"), "mimiry-worker", &[]).await?;
    let outcome = async {
        // The first batch pays the container's one-offs (secrets, provider token): not timed.
        let answer = worker
            .invoke(&events::sqs(&refs[..batch], QUEUE_ARN))
            .await?;
        if answer["batchItemFailures"]
            .as_array()
            .is_none_or(|f| !f.is_empty())
        {
            bail!("worker batch failed: {answer}");
        }
        let timed = &refs[batch..];
        let started = Instant::now();
        for chunk in timed.chunks(batch) {
            let answer = worker.invoke(&events::sqs(chunk, QUEUE_ARN)).await?;
            if answer["batchItemFailures"]
                .as_array()
                .is_none_or(|f| !f.is_empty())
            {
                bail!("worker batch failed: {answer}");
            }
        }
        let elapsed = started.elapsed();
        for (_, id) in &refs {
            let s = stack.job_status(id).await?;
            if s != "provisioning" && s != "running" {
                bail!("job {id} is {s} after the worker's batch, not provisioning");
            }
        }
        results.set(
            "worker.jobs_advanced_per_s",
            timed.len() as f64 / elapsed.as_secs_f64(),
        );
        results.set(
            "worker.advance_ms_per_job",
            ms(elapsed) / timed.len() as f64,
        );
        Ok(refs.len())
    }
    .await;
    worker.stop();
    outcome
}

/// Platform overhead through the local server (its SQS event-source mapping feeding the worker
/// handler): submit → the fake's deploy, and the instance's report → job completed.
pub async fn overhead(stack: &Stack, n: usize, results: &mut Results) -> Result<Instant> {
    let body = submit_body("echo overhead");
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(stack.submit(&body).await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let last_submit = Instant::now();
    wait_terminal(stack, &ids, Duration::from_secs(120)).await?;
    let state = stack.fake_state().await?;
    let instances = state["instances"].as_array().cloned().unwrap_or_default();
    let (mut deploy, mut complete) = (Vec::new(), Vec::new());
    for id in &ids {
        let item = stack
            .job_item(id)
            .await?
            .ok_or_else(|| anyhow!("job {id} vanished"))?;
        if status(&item) != "completed" {
            results.note(format!(
                "overhead: job {id} ended {}, left out",
                status(&item)
            ));
            continue;
        }
        let created = num(&item, "created_at");
        let deployed = instances
            .iter()
            .filter(|i| {
                i["hostname"]
                    .as_str()
                    .is_some_and(|h| h.contains(id.as_str()))
            })
            .filter_map(|i| i["created_at_ms"].as_i64())
            .min();
        if let (Some(c), Some(d)) = (created, deployed) {
            deploy.push((d - c) as f64);
        }
        if let (Some(r), Some(f)) = (report_at(&item), num(&item, "finished_at")) {
            complete.push((f - r) as f64);
        }
    }
    if deploy.is_empty() || complete.is_empty() {
        bail!("overhead: no completed job to measure");
    }
    results.set("worker.submit_to_deploy_p50_ms", percentile(&deploy, 50.0));
    results.set("worker.submit_to_deploy_p99_ms", percentile(&deploy, 99.0));
    results.set(
        "worker.report_to_completed_p50_ms",
        percentile(&complete, 50.0),
    );
    results.set(
        "worker.report_to_completed_p99_ms",
        percentile(&complete, 99.0),
    );
    results.set(
        "worker.overhead_jobs",
        deploy.len().min(complete.len()) as f64,
    );
    Ok(last_submit)
}

/// Waits until the job is parked (the worker has seen it running and has nothing to do for
/// longer than `PARK_AFTER_SECONDS`).
async fn wait_parked(stack: &Stack, id: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let item = stack.job_item(id).await?;
        if item
            .as_ref()
            .and_then(|i| i.get("parked")?.as_bool().ok().copied())
            == Some(true)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("job {id} not parked after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Requests per job-hour: one job's start (submit, deploy, provisioning — parked, woken by the
/// reconciler when its instance runs), the worker's hourly look at the parked running job, the
/// reconciler's share, and its end (report, teardown), each counted alone while nothing else
/// runs. The local server runs production timers, the reconciler every few seconds.
pub async fn job_hour(stack: &Stack, results: &mut Results) -> Result<()> {
    let go = stack.paths.out.join(format!("go-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    // Runs until the bench says so (bounded: 5 minutes).
    let script = format!(
        "for i in $(seq 1 1500); do [ -e '{}' ] && break; sleep 0.2; done\necho done",
        go.display()
    );

    // Start: submit → running → parked.
    let m0 = stack.worker_messages().await?;
    stack.record().await?;
    let p0 = stack.provider_count().await?;
    let id = stack.submit(&submit_body(&script)).await?;
    wait_status(stack, &id, &["running"], Duration::from_secs(90)).await?;
    wait_parked(stack, &id, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let start = window(
        &stack.recorded().await?,
        &stack.provider_count().await?.since(&p0),
    );
    let m1 = stack.worker_messages().await?;
    let provisioning_checks = (m1 - m0).saturating_sub(1);
    results.set("worker.start_requests", start.per_job as f64);
    results.set(
        "worker.start_provisioning_checks",
        provisioning_checks as f64,
    );
    results.note(format!(
        "job-hour start (submit → running → parked, {} messages): {}",
        m1 - m0,
        start.detail
    ));

    // Steady state: the worker's looks at the parked job. The bench sends the wake-up the
    // reconciler sends when the look is due (not counted by the recorder); the reconciler's
    // SendMessage is added to each look below.
    let looks = 3;
    stack.record().await?;
    let p1 = stack.provider_count().await?;
    let mut m = m1;
    for _ in 0..looks {
        stack.wake(&id).await?;
        m = wait_messages(stack, m, 1, Duration::from_secs(20)).await?;
        wait_parked(stack, &id, Duration::from_secs(10)).await?;
    }
    let running = window(
        &stack.recorded().await?,
        &stack.provider_count().await?.since(&p1),
    );
    let per_look = running.per_job as f64 / (m - m1) as f64 + 1.0;
    results.set("worker.running_check_requests", per_look);
    results.note(format!(
        "job-hour: {} looks at the parked job (+ the reconciler's wake-up each): {}",
        m - m1,
        running.detail
    ));

    // The reconciler's share while the job runs: a quiet window of several runs (every
    // RECONCILE_EVERY_SECS here); what its runs send about this job is per job, the rest is
    // shared by all jobs.
    stack.record().await?;
    let p2 = stack.provider_count().await?;
    let r2 = stack.reconciler_runs().await?;
    tokio::time::sleep(Duration::from_secs(5 * RECONCILE_EVERY_SECS + 1)).await;
    let calls = stack.recorded().await?;
    let quiet = window(&calls, &stack.provider_count().await?.since(&p2));
    let quiet_runs = stack.reconciler_runs().await? - r2;
    let about_job: Vec<&Call> = counted(&calls)
        .into_iter()
        .filter(|c| c.body.contains(id.as_str()))
        .collect();
    if quiet_runs == 0 {
        bail!("no reconciler run in the quiet window");
    }
    let runs = quiet_runs as f64;
    let reconciler_per_job = quiet.per_job as f64 / runs;
    results.set(
        "worker.reconciler_run_aws_calls",
        quiet.reconciler_aws as f64 / runs,
    );
    results.set(
        "worker.reconciler_run_provider_calls",
        quiet.reconciler_provider as f64 / runs,
    );
    results.set(
        "worker.reconciler_run_requests_per_running_job",
        reconciler_per_job,
    );
    results.note(format!(
        "job-hour: {} reconciler runs with the job parked: {}; about this job: [{}]",
        quiet_runs,
        quiet.detail,
        summarize(about_job.iter().copied())
    ));

    // End: the script finishes → report → teardown → completed. A parked job has no message
    // on its way; anything that still arrives is counted.
    let m3 = stack.worker_messages().await?;
    stack.record().await?;
    let p3 = stack.provider_count().await?;
    std::fs::write(&go, b"go")?;
    let ended = wait_status(stack, &id, TERMINAL, Duration::from_secs(60)).await?;
    let m4 = stack.worker_messages().await?;
    let _ = wait_messages(stack, m4, 1, Duration::from_secs(5)).await;
    let end = window(
        &stack.recorded().await?,
        &stack.provider_count().await?.since(&p3),
    );
    let m5 = stack.worker_messages().await?;
    let _ = std::fs::remove_file(&go);
    if ended != "completed" {
        bail!("job-hour job ended {ended}");
    }
    results.set("worker.end_requests", end.per_job as f64);
    results.note(format!(
        "job-hour end (report → completed, {} messages): {}",
        m5 - m3,
        end.detail
    ));

    let looks_per_hour = 3600.0 / PRODUCTION_RUNNING_POLL_SECS;
    results.set("worker.running_checks_per_hour", looks_per_hour);
    results.set("worker.reconciler_runs_per_hour", RECONCILER_RUNS_PER_HOUR);
    let worker_only = start.per_job as f64 + looks_per_hour * per_look + end.per_job as f64;
    results.set("worker.requests_per_job_hour_worker", worker_only);
    results.set(
        "worker.requests_per_job_hour",
        worker_only + RECONCILER_RUNS_PER_HOUR * reconciler_per_job,
    );
    Ok(())
}

/// After jobs deployed at `deployed`, their scheduled provisioning checks arrive up to the
/// provisioning poll later: wait that out so that later windows see only their own job.
pub async fn quiet_after(deployed: Instant) {
    let until = deployed + Duration::from_secs(PROVISIONING_POLL_SECS + 3);
    let now = Instant::now();
    if until > now {
        tokio::time::sleep(until - now).await;
    }
}

/// Waits until the local worker has been handed no message for `quiet` (bounded by `max`):
/// retries and late scheduled checks of earlier jobs must not land in a measured window.
pub async fn wait_idle(stack: &Stack, quiet: Duration, max: Duration) -> Result<()> {
    let deadline = Instant::now() + max;
    let mut last = stack.worker_messages().await?;
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        if Instant::now() > deadline {
            bail!("the worker did not go quiet within {max:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = stack.worker_messages().await?;
        if m != last {
            last = m;
            since = Instant::now();
        }
    }
    Ok(())
}

pub async fn drain(stack: &Stack, ids: &[String]) -> Result<()> {
    wait_terminal(stack, ids, Duration::from_secs(120)).await
}
