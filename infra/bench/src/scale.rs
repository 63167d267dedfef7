//! `mimiry-bench --scale` (`make bench-scale`): thousands of jobs active at once (10,000 by
//! default) against moto and the fake provider in scale mode (instances boot and run on the
//! fake's clock; nothing executes), with the worker and the reconciler running in this process
//! as `mimiry-local` runs them, on production timers (the reconciler once a minute).
//!
//! How the jobs get there: `--scale-submits` real `POST /jobs` (timed: `scale.submit_p99_ms`)
//! go through the worker to a running, parked job; that job is the template for the rest,
//! which are seeded straight into the table with the shared store's own item code
//! (`Store::seed_jobs`), each with its own instance deployed at the fake (provider client) and
//! its next look spread over the running poll (an hour). Writing 10,000 jobs through the API
//! would take moto most of an hour on two cores, and measure moto.
//!
//! What is measured: each reconciler run's time and its AWS calls (its own SDK clients carry
//! `app/scale-reconciler` in the user agent, so moto's recording tells them apart) and provider
//! list calls; all requests over the window per job-hour; the worker's rate on a burst of
//! wake-ups; a bare `Query` of the due window as moto's own floor.

use crate::api;
use crate::results::{ms, percentile, Results};
use crate::stack::{counted, Stack, BENCH_APP};
use crate::Cli;
use anyhow::{anyhow, bail, Context, Result};
use mimiry_infra::local::{event_source, functions::Functions, server};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;
use mimiry_shared::jobs::model::{hostname, owner_tag};
use mimiry_shared::jobs::{Job, JobStatus};
use mimiry_shared::provider::DeployRequest;
use mimiry_shared::store::Store;
use mimiry_shared::time::now_ms;
use mimiry_shared::wiring;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECONCILER_APP: &str = "scale-reconciler";
const WORKER_APP: &str = "scale-worker";
/// Worker pollers, as `mimiry-local` runs them (`LOCAL_WORKER_CONCURRENCY`).
const WORKER_POLLERS: usize = 4;
/// Provider routes the reconciler calls (listings); the worker's are per instance.
const LIST_ROUTES: &[&str] = &[
    "GET /v1/instances",
    "GET /v1/volumes",
    "GET /v1/volumes/trash",
    "GET /v1/scripts",
];

/// The same clients with another app name in their user agent.
fn with_app(base: &AwsClients, app: &str) -> Result<AwsClients> {
    let sdk = base
        .sdk
        .to_builder()
        .app_name(aws_config::AppName::new(app.to_string()).context("app name")?)
        .build();
    Ok(AwsClients {
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        secrets: aws_sdk_secretsmanager::Client::new(&sdk),
        ses: aws_sdk_ses::Client::new(&sdk),
        kms: aws_sdk_kms::Client::new(&sdk),
        sdk,
    })
}

fn is_app(call: &crate::stack::Call, app: &str) -> bool {
    call.app.as_deref() == Some(app)
}

pub async fn run(stack: &mut Stack, cli: &Cli, results: &mut Results) -> Result<()> {
    // The functions read their configuration from the environment, as on Lambda.
    for (k, v) in stack.aws_env() {
        std::env::set_var(k, v);
    }
    std::env::set_var("RECONCILE_EVERY_SECONDS", "60");
    let config = Config::from_env();
    let period = Duration::from_secs(config.timers.reconcile_every_secs as u64);
    let base = AwsClients::from_env().await;
    let worker_clients = with_app(&base, WORKER_APP)?;
    let bench_clients = with_app(&base, BENCH_APP)?;
    let functions = Arc::new(Functions::new(&worker_clients, &config));
    let reconciler_clients = with_app(&base, RECONCILER_APP)?;
    let reconciler = mimiry_reconciler::App::new(&reconciler_clients, &config);
    let store = Store::new(bench_clients.dynamodb.clone(), config.table_name.clone());

    // The API in this process, on the address the stack's requests go to.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    stack.local_url = format!("http://{}", listener.local_addr()?);
    let router = server::router(functions.clone());
    let api_task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let arn = worker_clients
        .sqs
        .get_queue_attributes()
        .queue_url(&config.jobs_queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .context("reading the jobs queue")?
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .unwrap_or_default();
    let mut tasks = vec![api_task];
    for _ in 0..WORKER_POLLERS {
        tasks.push(tokio::spawn(event_source::run_worker(
            functions.clone(),
            worker_clients.sqs.clone(),
            config.jobs_queue_url.clone(),
            arn.clone(),
        )));
    }
    let outcome = measure(
        stack,
        cli,
        results,
        Setup {
            config: &config,
            store: &store,
            bench_clients: &bench_clients,
            reconciler_clients: &reconciler_clients,
            reconciler: &reconciler,
            period,
        },
    )
    .await;
    for task in tasks {
        task.abort();
    }
    outcome
}

/// What the measurement runs with.
struct Setup<'a> {
    config: &'a Config,
    store: &'a Store,
    bench_clients: &'a AwsClients,
    reconciler_clients: &'a AwsClients,
    /// The measured reconciler (one container, fresh).
    reconciler: &'a mimiry_reconciler::App,
    period: Duration,
}

async fn measure(stack: &Stack, cli: &Cli, results: &mut Results, setup: Setup<'_>) -> Result<()> {
    let Setup {
        config,
        store,
        bench_clients,
        reconciler_clients,
        reconciler,
        period,
    } = setup;
    // 1. Real submits, in bursts of 8 at once.
    eprintln!("== scale: {} submits through the API", cli.scale_submits);
    let body = api::submit_body("echo scale");
    let mut submit_ms = Vec::new();
    let mut submitted = Vec::new();
    for _ in 0..cli.scale_submits.div_ceil(8) {
        let burst = (0..8).map(|_| async {
            let t = Instant::now();
            let id = stack.submit(&body).await;
            (ms(t.elapsed()), id)
        });
        for (took, id) in futures_util::future::join_all(burst).await {
            submit_ms.push(took);
            submitted.push(id?);
        }
    }
    results.set("scale.submits", submit_ms.len() as f64);
    results.set("scale.submit_p50_ms", percentile(&submit_ms, 50.0));
    results.set("scale.submit_p99_ms", percentile(&submit_ms, 99.0));

    // 2. A submitted job, running and parked, as the template.
    eprintln!("== scale: waiting for a submitted job to run");
    let template = wait_running(
        store,
        &stack.account_id,
        &submitted,
        reconciler_clients,
        config,
        Duration::from_secs(300),
    )
    .await?;

    // 3. Instances at the fake, then the jobs that own them.
    let n = cli.scale_jobs.saturating_sub(submitted.len());
    eprintln!("== scale: deploying {n} instances and seeding their jobs");
    let provider = wiring::provider(bench_clients, config);
    let t = Instant::now();
    let location = template.location.clone().unwrap_or_else(|| "FIN-01".into());
    let mut jobs = Vec::with_capacity(n);
    let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for chunk in ids.chunks(32) {
        let deploys = chunk.iter().map(|job_id| {
            let req = DeployRequest {
                instance_type: template.instance_type.clone(),
                image: template.image.clone(),
                hostname: hostname(job_id, template.attempts),
                description: owner_tag(job_id, &template.account_id),
                ssh_key_ids: template.provider_ssh_key_ids.clone(),
                location_code: location.clone(),
                startup_script_id: None,
                startup_script: None,
                is_spot: false,
                os_volume_size_gb: 50,
            };
            let provider = provider.clone();
            async move { provider.deploy(&req).await }
        });
        for (job_id, deployed) in chunk
            .iter()
            .zip(futures_util::future::join_all(deploys).await)
        {
            let instance_id = deployed.map_err(|e| anyhow!("deploying for the seed: {e}"))?;
            jobs.push(seeded(&template, job_id, instance_id, config));
        }
        if t.elapsed() > Duration::from_secs(cli.timeout_secs) {
            bail!("deploying the seed's instances took too long");
        }
    }
    results.set("scale.seed_deploy_s", t.elapsed().as_secs_f64());
    // Booted before their jobs appear: a parked running job whose instance still boots would
    // be woken at once (its instance "changed").
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t = Instant::now();
    store
        .seed_jobs(&jobs)
        .await
        .map_err(|e| anyhow!("seeding: {e}"))?;
    results.set("scale.seed_write_s", t.elapsed().as_secs_f64());
    let active = store.active_jobs().await.map_err(|e| anyhow!("{e}"))?.len();
    results.set("scale.active_jobs", active as f64);
    eprintln!("== scale: {active} active jobs");

    // 4. Moto's floor for the reconciler's reads: a bare query of the due window, and of the
    //    whole index.
    let horizon = now_ms() + 2 * period.as_millis() as i64;
    let t = Instant::now();
    let due = store
        .active_jobs_due_before(horizon)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    results.set("scale.moto_due_query_ms", ms(t.elapsed()));
    results.set("scale.due_per_run", due.len() as f64);
    let t = Instant::now();
    store.active_jobs().await.map_err(|e| anyhow!("{e}"))?;
    results.set("scale.moto_full_query_ms", ms(t.elapsed()));

    // 5. The reconciler once a minute, the worker on, production timers. The first run of a
    //    container reads everything (full); the window's runs read what is due.
    eprintln!(
        "== scale: reconciler every {} s for {} runs",
        period.as_secs(),
        cli.scale_runs
    );
    stack.record().await?;
    let t = Instant::now();
    let full = mimiry_reconciler::reconcile(reconciler).await;
    let full_ms = ms(t.elapsed());
    let calls = stack.recorded().await?;
    let full_calls = calls.iter().filter(|c| is_app(c, RECONCILER_APP)).count();
    results.set("scale.reconciler_full_run_ms", full_ms);
    results.set("scale.reconciler_full_run_aws_calls", full_calls as f64);
    results.notes.push(format!("scale full run: {full:?}"));
    if !full.full_read {
        bail!("the first run of a fresh reconciler did not read every job");
    }

    let provider_before = stack.provider_count().await?;
    let messages_before = event_source::delivery_counts().0;
    stack.record().await?;
    let window = Instant::now();
    let mut run_ms = Vec::new();
    let mut summaries = Vec::new();
    for run in 0..cli.scale_runs {
        let next = window + period * (run as u32 + 1);
        tokio::time::sleep_until(next.into()).await;
        let t = Instant::now();
        let summary = mimiry_reconciler::reconcile(reconciler).await;
        run_ms.push(ms(t.elapsed()));
        eprintln!("   run {run}: {:.0} ms {summary:?}", run_ms[run]);
        summaries.push(summary);
    }
    // The window ends one period after the last run: the worker has had a minute per run.
    tokio::time::sleep_until((window + period * (cli.scale_runs as u32 + 1)).into()).await;
    let window_s = window.elapsed().as_secs_f64();
    let calls = stack.recorded().await?;
    let provider = stack.provider_count().await?.since(&provider_before);
    let messages = event_source::delivery_counts().0 - messages_before;
    let runs = run_ms.len().max(1) as f64;
    let reconciler_calls = calls.iter().filter(|c| is_app(c, RECONCILER_APP)).count();
    let code_calls = counted(&calls).len();
    let list_calls: u64 = LIST_ROUTES
        .iter()
        .map(|r| provider.by_route.get(*r).copied().unwrap_or(0))
        .sum();
    results.set("scale.reconciler_runs", runs);
    results.set("scale.reconciler_run_p50_ms", percentile(&run_ms, 50.0));
    results.set("scale.reconciler_run_p99_ms", percentile(&run_ms, 99.0));
    results.set(
        "scale.reconciler_aws_calls_per_run",
        reconciler_calls as f64 / runs,
    );
    results.set(
        "scale.reconciler_provider_calls_per_run",
        list_calls as f64 / runs,
    );
    let keys: usize = summaries.iter().map(|s| s.index_keys_read).sum();
    let read: usize = summaries.iter().map(|s| s.jobs_read).sum();
    results.set("scale.reconciler_index_keys_per_run", keys as f64 / runs);
    // The run's profile: the median of each phase, and our own work (the run less its
    // phases' waits, which are moto's, SQS's and the fake provider's time).
    type Phase = fn(&mimiry_reconciler::Timings) -> u64;
    let phase_p50 = |f: Phase| {
        let v: Vec<f64> = summaries.iter().map(|s| f(&s.timings) as f64).collect();
        percentile(&v, 50.0)
    };
    let phases: [(&str, Phase); 5] = [
        ("index_read", |t| t.index_read_ms),
        ("send_due", |t| t.send_due_ms),
        ("provider_list", |t| t.provider_list_ms),
        ("read_changed", |t| t.read_changed_ms),
        ("sweeps", |t| t.sweeps_ms),
    ];
    for (name, phase) in phases {
        results.set(format!("scale.reconciler_{name}_ms_p50"), phase_p50(phase));
    }
    let own: Vec<f64> = summaries
        .iter()
        .zip(&run_ms)
        .map(|(s, total)| {
            let waited: u64 = phases.iter().map(|(_, phase)| phase(&s.timings)).sum();
            (total - waited as f64).max(0.0)
        })
        .collect();
    results.set(
        "scale.reconciler_unaccounted_ms_p50",
        percentile(&own, 50.0),
    );
    results.set("scale.reconciler_jobs_read_per_run", read as f64 / runs);
    let job_hours = active as f64 * window_s / 3600.0;
    results.set(
        "scale.requests_per_job_hour",
        (code_calls as f64 + provider.total as f64) / job_hours,
    );
    results.set("scale.window_s", window_s);
    results.set(
        "scale.worker_messages_per_second_steady",
        messages as f64 / window_s,
    );
    results.notes.push(format!(
        "scale window {window_s:.0} s: AWS {} ; provider {:?}",
        crate::stack::summarize(counted(&calls)),
        provider.by_route
    ));

    // 6. The worker's rate on a burst: wake-ups for 500 seeded jobs at once (their looks are
    //    not due, so each is a read and a drop — or a look if it is due).
    let burst: Vec<&Job> = jobs.iter().take(cli.scale_burst).collect();
    eprintln!("== scale: worker burst of {}", burst.len());
    let before = event_source::delivery_counts().0;
    let t = Instant::now();
    for chunk in burst.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let body = serde_json::json!({
                    "account_id": job.account_id, "job_id": job.job_id, "look_now": true,
                });
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body.to_string())
                    .build()
                    .map_err(|e| anyhow!("{e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        bench_clients
            .sqs
            .send_message_batch()
            .queue_url(&config.jobs_queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while event_source::delivery_counts().0 - before < burst.len() as u64 {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handled = event_source::delivery_counts().0 - before;
    results.set(
        "scale.worker_jobs_per_second",
        handled as f64 / t.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// Waits until one of `ids` is running and parked (the worker's steady state for a job). A
/// reconciler of its own (a container of its own, not the measured one) runs every 3 s
/// meanwhile: in production it is the reconciler's list that wakes a job whose instance booted.
async fn wait_running(
    store: &Store,
    account_id: &str,
    ids: &[String],
    clients: &AwsClients,
    config: &Config,
    limit: Duration,
) -> Result<Job> {
    let warmup = mimiry_reconciler::App::new(clients, config);
    let deadline = Instant::now() + limit;
    loop {
        mimiry_reconciler::reconcile(&warmup).await;
        for id in ids.iter().take(20) {
            if let Some(job) = store
                .get_job(account_id, id)
                .await
                .map_err(|e| anyhow!("{e}"))?
            {
                if job.status == JobStatus::Running && job.parked && job.instance_id.is_some() {
                    return Ok(job);
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no submitted job was running and parked within {limit:?}");
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// The template job as another job with its own instance, its next look somewhere in the next
/// running poll (so that looks come due evenly, as in a fleet that started over an hour).
fn seeded(template: &Job, job_id: &str, instance_id: String, config: &Config) -> Job {
    let mut job = template.clone();
    let now = now_ms();
    let spread = config.timers.running_poll_secs * 1000;
    job.job_id = job_id.to_string();
    job.instance_id = Some(instance_id);
    job.script_id = None;
    job.retired_instances.clear();
    job.next_check_at = now + rand::random::<u64>().rem_euclid(spread.max(1) as u64) as i64;
    job.version = 1;
    job
}
