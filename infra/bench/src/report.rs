//! The targets, and the table printed from the very figures that go to results.json.

use crate::functions::{FLOOR, SIZE_ONLY};
use crate::results::Results;
use crate::stack::Paths;
use crate::worker::{PRODUCTION_RUNNING_POLL_SECS, RECONCILER_RUNS_PER_HOUR};
use crate::Cli;
use std::fmt::Write;

pub const INIT_OVER_FLOOR_MAX_MS: f64 = 5.0;
pub const RSS_MAX_MB: f64 = 32.0;
/// Every function's binary, stripped (issue 14).
pub const SIZE_MAX_MB: f64 = 8.0;
pub const OVERHEAD_P50_MAX_MS: f64 = 1000.0;
pub const JOB_HOUR_MAX: f64 = 30.0;
/// A reconciler run at 10,000 active jobs (scale benchmark).
pub const SCALE_RUN_MAX_MS: f64 = 10_000.0;
/// Essential AWS calls: GET = the job's GetItem (the verified key is cached in the container,
/// `API_KEY_CACHE_SECONDS`, and warm here); POST = the key's GetItem (at most) + the
/// job-and-hold TransactWriteItems + SendMessage to the worker. Allowed on top: the key's
/// `last_used_at` update, at most once a minute per key (amortised, < 0.1 per request here).
pub const ESSENTIAL_GET: f64 = 1.0;
/// `GET /jobs/{id}` p50 at most this multiple of a bare `GetItem` of the job in the same run.
pub const GET_OVER_FLOOR_MAX: f64 = 1.3;
pub const ESSENTIAL_POST: f64 = 3.0;
const AMORTISED_ALLOWANCE: f64 = 0.1;

const FUNCTIONS: &[(&str, &str)] = &[
    (FLOOR, "hello-lambda (floor)"),
    ("account", "mimiry-account"),
    ("catalog", "mimiry-catalog"),
    ("ssh_keys", "mimiry-ssh-keys"),
    ("jobs", "mimiry-jobs"),
    ("worker", "mimiry-worker"),
    ("reconciler", "mimiry-reconciler"),
];

fn flag(met: bool) -> f64 {
    if met {
        1.0
    } else {
        0.0
    }
}

/// `target.*` = 1 when met, 0 when missed; absent when not measured.
pub fn evaluate(r: &mut Results) {
    let fns: Vec<&str> = FUNCTIONS
        .iter()
        .map(|f| f.0)
        .filter(|k| *k != FLOOR)
        .collect();
    if fns
        .iter()
        .all(|k| r.has(&format!("fn.{k}.init_over_floor_ms")))
    {
        let met = fns
            .iter()
            .all(|k| r.get(&format!("fn.{k}.init_over_floor_ms")) <= INIT_OVER_FLOOR_MAX_MS);
        r.set("target.init_met", flag(met));
    }
    let weighed: Vec<&str> = fns
        .iter()
        .copied()
        .chain(SIZE_ONLY.iter().map(|f| f.0))
        .collect();
    if weighed.iter().all(|k| r.has(&format!("fn.{k}.size_mb"))) {
        let largest = weighed
            .iter()
            .map(|k| r.get(&format!("fn.{k}.size_mb")))
            .fold(0.0, f64::max);
        r.set("fn.largest_size_mb", largest);
        r.set("target.size_met", flag(largest <= SIZE_MAX_MB));
    }
    if fns.iter().all(|k| r.has(&format!("fn.{k}.rss_peak_mb"))) {
        let met = fns
            .iter()
            .all(|k| r.get(&format!("fn.{k}.rss_peak_mb")) <= RSS_MAX_MB);
        r.set("target.rss_met", flag(met));
    }
    if r.has("api.get_job.aws_calls") && r.has("api.post_job.aws_calls") {
        let met = r.get("api.get_job.aws_calls") <= ESSENTIAL_GET + AMORTISED_ALLOWANCE
            && r.get("api.post_job.aws_calls") <= ESSENTIAL_POST + AMORTISED_ALLOWANCE;
        r.set("target.aws_calls_met", flag(met));
    }
    if r.has("api.get_job.p50_ms") && r.has("api.get_job.floor_p50_ms") {
        let ratio = r.get("api.get_job.p50_ms") / r.get("api.get_job.floor_p50_ms");
        r.set("api.get_job.p50_over_floor", ratio);
        r.set(
            "target.get_job_latency_met",
            flag(ratio <= GET_OVER_FLOOR_MAX),
        );
    }
    if r.has("scale.requests_per_job_hour") {
        r.set(
            "target.scale_job_hour_met",
            flag(r.get("scale.requests_per_job_hour") <= JOB_HOUR_MAX),
        );
    }
    if r.has("scale.reconciler_run_p99_ms") {
        r.set(
            "target.scale_reconciler_met",
            flag(r.get("scale.reconciler_run_p99_ms") < SCALE_RUN_MAX_MS),
        );
    }
    if r.has("worker.submit_to_deploy_p50_ms") {
        let met = r.get("worker.submit_to_deploy_p50_ms") < OVERHEAD_P50_MAX_MS
            && r.get("worker.report_to_completed_p50_ms") < OVERHEAD_P50_MAX_MS;
        r.set("target.overhead_met", flag(met));
    }
    if r.has("worker.requests_per_job_hour") {
        r.set(
            "target.job_hour_met",
            flag(r.get("worker.requests_per_job_hour") <= JOB_HOUR_MAX),
        );
    }
}

fn f(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "–".into()
    }
}

fn verdict(r: &Results, key: &str) -> &'static str {
    if !r.has(key) {
        "not measured"
    } else if r.get(key) == 1.0 {
        "met"
    } else {
        "MISSED"
    }
}

pub fn table(r: &Results, cli: &Cli, paths: &Paths) -> String {
    let mut t = String::new();
    let w = &mut t;
    let _ = writeln!(
        w,
        "Mimiry benchmarks (release build; all traffic on 127.0.0.1; run took {:.0} s)",
        r.get("meta.duration_s")
    );
    let _ = writeln!(
        w,
        "  functions: {}   stack (mimiry-local, mimiry-admin, fake-datacrunch): {}",
        paths.release.display(),
        paths.stack_bin.display()
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "Functions             size MB  init ms  vs floor  peak RSS MB  AWS+provider calls"
    );
    let _ = writeln!(
        w,
        "(median of {} cold starts; RSS = VmHWM after {} warm invocations; calls of one warm invocation)",
        cli.cold_starts, cli.warm
    );
    for (key, name) in FUNCTIONS {
        let over = if *key == FLOOR {
            "floor".to_string()
        } else {
            format!("{:+.2}", r.get(&format!("fn.{key}.init_over_floor_ms")))
        };
        let calls = if *key == FLOOR {
            "–".to_string()
        } else {
            format!(
                "{} + {}",
                f(r.get(&format!("fn.{key}.aws_calls")), 0),
                f(r.get(&format!("fn.{key}.provider_calls")), 0)
            )
        };
        let _ = writeln!(
            w,
            "  {:<20}{:>7}  {:>7}  {:>8}  {:>11}  {}",
            name,
            f(r.get(&format!("fn.{key}.size_mb")), 2),
            f(r.get(&format!("fn.{key}.init_ms")), 2),
            over,
            f(r.get(&format!("fn.{key}.rss_peak_mb")), 1),
            calls
        );
    }
    let others: Vec<String> = SIZE_ONLY
        .iter()
        .map(|(key, name)| format!("{name} {}", f(r.get(&format!("fn.{key}.size_mb")), 2)))
        .collect();
    let _ = writeln!(w, "  size only, MB: {}", others.join(" · "));
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "API via mimiry-local   p50 ms  p99 ms  | floor                p50 ms  p99 ms  | AWS calls/req       provider calls/req"
    );
    for (key, name, floor, essential) in [
        ("get_job", "GET /jobs/{id}", "GetItem", ESSENTIAL_GET),
        (
            "post_job",
            "POST /jobs",
            "TransactWriteItems",
            ESSENTIAL_POST,
        ),
    ] {
        let _ = writeln!(
            w,
            "  {:<20}{:>7} {:>7}  | {:<20}{:>7} {:>7}  | {:>6} (essential {})  {:>6}",
            name,
            f(r.get(&format!("api.{key}.p50_ms")), 2),
            f(r.get(&format!("api.{key}.p99_ms")), 2),
            floor,
            f(r.get(&format!("api.{key}.floor_p50_ms")), 2),
            f(r.get(&format!("api.{key}.floor_p99_ms")), 2),
            f(r.get(&format!("api.{key}.aws_calls")), 2),
            essential,
            f(r.get(&format!("api.{key}.provider_calls")), 2),
        );
    }
    let _ = writeln!(
        w,
        "  ({} GET and {} POST requests, each followed by its floor; calls averaged over 20 more)",
        cli.get_n, cli.post_n
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "Worker");
    let _ = writeln!(
        w,
        "  jobs advanced per second        {:>8}   (one warm worker, SQS batches of 10, queued → deployed → provisioning; {} ms/job)",
        f(r.get("worker.jobs_advanced_per_s"), 1),
        f(r.get("worker.advance_ms_per_job"), 1)
    );
    let _ = writeln!(
        w,
        "  overhead submit → deploy call   p50 {:>7} ms  p99 {:>7} ms   ({} jobs through mimiry-local's SQS poller)",
        f(r.get("worker.submit_to_deploy_p50_ms"), 0),
        f(r.get("worker.submit_to_deploy_p99_ms"), 0),
        f(r.get("worker.overhead_jobs"), 0)
    );
    let _ = writeln!(
        w,
        "  overhead report → completed     p50 {:>7} ms  p99 {:>7} ms",
        f(r.get("worker.report_to_completed_p50_ms"), 0),
        f(r.get("worker.report_to_completed_p99_ms"), 0)
    );
    let checks = r.get("worker.running_checks_per_hour");
    let per_check = r.get("worker.running_check_requests");
    let recon = r.get("worker.reconciler_run_requests_per_running_job");
    let _ = writeln!(
        w,
        "  AWS + provider requests per job-hour (one job, each phase counted alone):"
    );
    let _ = writeln!(
        w,
        "      start: submit → deploy → running, parked ({} look after the deploy) {:>5}",
        f(r.get("worker.start_provisioning_checks"), 0),
        f(r.get("worker.start_requests"), 0)
    );
    let _ = writeln!(
        w,
        "    + looks at the parked job: {} /h (RUNNING_POLL_SECONDS={}) × {} each  {:>7}",
        f(checks, 0),
        PRODUCTION_RUNNING_POLL_SECS,
        f(per_check, 2),
        f(checks * per_check, 1)
    );
    let _ = writeln!(
        w,
        "    + end: report → completed                                         {:>7}",
        f(r.get("worker.end_requests"), 0)
    );
    let _ = writeln!(
        w,
        "    = worker path                                                     {:>7}",
        f(r.get("worker.requests_per_job_hour_worker"), 1)
    );
    let _ = writeln!(
        w,
        "    + reconciler: {} runs/h × {} calls about the running job          {:>7}",
        RECONCILER_RUNS_PER_HOUR,
        f(recon, 0),
        f(RECONCILER_RUNS_PER_HOUR * recon, 0)
    );
    let _ = writeln!(
        w,
        "    = per job-hour                                                    {:>7}",
        f(r.get("worker.requests_per_job_hour"), 1)
    );
    let _ = writeln!(
        w,
        "    (a look = the reconciler's wake-up + the worker's calls, woken on demand by the bench; secrets, provider token and catalog refills are per container, left out)"
    );
    let _ = writeln!(
        w,
        "    (reconciler cost per run, shared by all jobs: {} AWS + {} provider with no job, {} + {} with one running)",
        f(r.get("fn.reconciler.aws_calls"), 0),
        f(r.get("fn.reconciler.provider_calls"), 0),
        f(r.get("worker.reconciler_run_aws_calls"), 0),
        f(r.get("worker.reconciler_run_provider_calls"), 0)
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "Targets");
    let _ = writeln!(
        w,
        "  binary ≤ {SIZE_MAX_MB} MB stripped (every function; largest {} MB)  {}",
        f(r.get("fn.largest_size_mb"), 2),
        verdict(r, "target.size_met")
    );
    let _ = writeln!(
        w,
        "  init ≤ floor + {INIT_OVER_FLOOR_MAX_MS} ms (every function)          {}",
        verdict(r, "target.init_met")
    );
    let _ = writeln!(
        w,
        "  peak RSS ≤ {RSS_MAX_MB} MB (every function)           {}",
        verdict(r, "target.rss_met")
    );
    let _ = writeln!(
        w,
        "  no AWS call beyond the essential ones       {}",
        verdict(r, "target.aws_calls_met")
    );
    let _ = writeln!(
        w,
        "  platform overhead p50 < 1 s                 {}",
        verdict(r, "target.overhead_met")
    );
    let _ = writeln!(
        w,
        "  ≤ {JOB_HOUR_MAX} requests per job-hour                 {}",
        verdict(r, "target.job_hour_met")
    );
    let _ = writeln!(
        w,
        "  GET /jobs/{{id}} p50 ≤ {GET_OVER_FLOOR_MAX} × GetItem ({:.2})    {}",
        r.get("api.get_job.p50_over_floor"),
        verdict(r, "target.get_job_latency_met")
    );
    t
}

/// The scale benchmark's table (`make bench-scale`).
pub fn scale_table(r: &Results, cli: &Cli) -> String {
    let mut t = String::new();
    let w = &mut t;
    let _ = writeln!(
        w,
        "Mimiry scale benchmark (release build; moto + fake provider in scale mode; run took {:.0} s)",
        r.get("meta.scale_duration_s")
    );
    let rows: &[(&str, &str, usize)] = &[
        ("scale.active_jobs", "active jobs", 0),
        ("scale.submits", "of them submitted through the API", 0),
        ("scale.submit_p50_ms", "submit p50 ms (bursts of 8)", 1),
        ("scale.submit_p99_ms", "submit p99 ms", 1),
        ("scale.seed_deploy_s", "seed: instances deployed in s", 1),
        ("scale.seed_write_s", "seed: jobs written in s", 1),
        (
            "scale.reconciler_full_run_ms",
            "reconciler full run ms (every job read)",
            0,
        ),
        ("scale.reconciler_full_run_aws_calls", "  its AWS calls", 0),
        (
            "scale.reconciler_runs",
            "reconciler runs in the window (1/min)",
            0,
        ),
        ("scale.reconciler_run_p50_ms", "reconciler run p50 ms", 0),
        ("scale.reconciler_run_p99_ms", "reconciler run p99 ms", 0),
        (
            "scale.reconciler_aws_calls_per_run",
            "reconciler AWS calls per run",
            1,
        ),
        (
            "scale.reconciler_provider_calls_per_run",
            "reconciler provider calls per run",
            1,
        ),
        (
            "scale.reconciler_index_keys_per_run",
            "index keys read per run",
            0,
        ),
        (
            "scale.reconciler_jobs_read_per_run",
            "jobs read by key per run",
            1,
        ),
        (
            "scale.due_per_run",
            "due within two periods (bare query)",
            0,
        ),
        (
            "scale.moto_due_query_ms",
            "moto: bare due-window query ms",
            1,
        ),
        (
            "scale.moto_full_query_ms",
            "moto: bare whole-index query ms",
            0,
        ),
        (
            "scale.requests_per_job_hour",
            "AWS + provider requests per job-hour",
            2,
        ),
        (
            "scale.worker_messages_per_second_steady",
            "worker messages/s, steady",
            2,
        ),
        (
            "scale.worker_jobs_per_second",
            "worker jobs/s on a burst",
            1,
        ),
    ];
    for (key, name, decimals) in rows {
        let _ = writeln!(w, "  {name:<48}{:>10}", f(r.get(key), *decimals));
    }
    let _ = writeln!(
        w,
        "  (burst: {} wake-ups sent at once; window: {} runs + one period)",
        cli.scale_burst, cli.scale_runs
    );
    let _ = writeln!(w, "Targets");
    let _ = writeln!(
        w,
        "  reconciler run p99 < {SCALE_RUN_MAX_MS} ms           {}",
        verdict(r, "target.scale_reconciler_met")
    );
    let _ = writeln!(
        w,
        "  ≤ {JOB_HOUR_MAX} requests per job-hour at scale     {}",
        verdict(r, "target.scale_job_hour_met")
    );
    t
}
