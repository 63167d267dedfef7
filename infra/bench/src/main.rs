//! `mimiry-bench`: starts its own local stack (moto, fake provider, local server), measures, prints
//! a table and writes the same figures to `target/bench/results.json` (flat keys, numbers only).
//! Run it through `bash infra/bench.sh` (`make bench`), which builds what it needs first.

mod api;
mod emulator;
mod events;
mod functions;
mod logs;
mod procs;
mod report;
mod results;
mod scale;
mod stack;
mod worker;

use anyhow::{bail, Context, Result};
use clap::Parser;
use results::Results;
use stack::{FakeMode, Paths, Stack};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser, Clone)]
#[command(
    name = "mimiry-bench",
    about = "Mimiry benchmarks against a local stack"
)]
pub struct Cli {
    /// The release binaries under test (functions, hello-lambda).
    #[arg(long, default_value = "target/release")]
    release: PathBuf,
    /// Where mimiry-local, mimiry-admin and fake-datacrunch are.
    #[arg(long, default_value = "target/release")]
    stack_bin: PathBuf,
    /// Results, logs and scratch files.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Cold starts per binary (init time = their median).
    #[arg(long, default_value_t = 20)]
    cold_starts: usize,
    /// Warm invocations per function before reading its peak RSS.
    #[arg(long, default_value_t = 1000)]
    warm: usize,
    /// Timed `GET /jobs/{id}` requests.
    #[arg(long, default_value_t = 300)]
    get_n: usize,
    /// Timed `POST /jobs` requests.
    #[arg(long, default_value_t = 200)]
    post_n: usize,
    /// Jobs the worker advances in the timed throughput run (after a batch of 10 to warm up).
    #[arg(long, default_value_t = 50)]
    advance_n: usize,
    /// Jobs run end to end for the platform-overhead figures.
    #[arg(long, default_value_t = 20)]
    overhead_n: usize,
    /// Run only this part (`logs`: the live-log figures) instead of everything.
    #[arg(long)]
    only: Option<String>,
    /// Upper bound on the whole run.
    #[arg(long, default_value_t = 1500)]
    timeout_secs: u64,
    /// Run the scale benchmark (`make bench-scale`) instead of the others.
    #[arg(long)]
    scale: bool,
    /// Jobs active at once in the scale benchmark (submitted plus seeded).
    #[arg(long, default_value_t = 10_000)]
    scale_jobs: usize,
    /// Of them, submitted through the API (timed).
    #[arg(long, default_value_t = 200)]
    scale_submits: usize,
    /// Reconciler runs (one a minute) in the measured window.
    #[arg(long, default_value_t = 5)]
    scale_runs: usize,
    /// Wake-ups sent at once to time the worker.
    #[arg(long, default_value_t = 500)]
    scale_burst: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = std::env::current_dir()?;
    std::fs::create_dir_all(&cli.out)?;
    let out = cli.out.canonicalize()?;
    let paths = Paths {
        root: root.clone(),
        release: root.join(&cli.release),
        stack_bin: root.join(&cli.stack_bin),
        out: out.clone(),
    };
    let logs = paths.logs();
    let _ = std::fs::remove_dir_all(&logs);
    let _ = std::fs::remove_dir_all(out.join("instances"));
    std::fs::create_dir_all(&logs)?;

    let started = Instant::now();
    let mut results = Results::default();
    eprintln!("starting the local stack (moto, fake-datacrunch, mimiry-local) …");
    let fake_mode = if cli.scale {
        FakeMode::Scale
    } else {
        FakeMode::Execute
    };
    let mut stack = Stack::start_with(paths.clone(), fake_mode).await?;
    let outcome = tokio::time::timeout(Duration::from_secs(cli.timeout_secs), async {
        if cli.scale {
            scale::run(&mut stack, &cli, &mut results).await
        } else {
            run(&mut stack, &cli, &mut results).await
        }
    })
    .await;
    stack.shutdown();
    let outcome = match outcome {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "the bench did not finish within {} s",
            cli.timeout_secs
        )),
    };

    let json = out.join("results.json");
    // One file for both runs: each replaces only its own keys.
    let is_scale = |k: &str| k.starts_with("scale.") || k.starts_with("target.scale");
    let earlier = std::fs::read_to_string(&json).unwrap_or_default();
    if cli.scale {
        results.set("meta.scale_duration_s", started.elapsed().as_secs_f64());
        results.keep_others(&earlier, |k| is_scale(k) || k == "meta.scale_duration_s");
    } else {
        results.set("meta.duration_s", started.elapsed().as_secs_f64());
        results.keep_others(&earlier, |k| !is_scale(k) && k != "meta.scale_duration_s");
    }
    report::evaluate(&mut results);
    let table = if cli.scale {
        report::scale_table(&results, &cli)
    } else {
        report::table(&results, &cli, &paths)
    };
    println!("{table}");
    std::fs::write(&json, results.to_json() + "\n").context("writing results.json")?;
    let (table_file, notes_file) = if cli.scale {
        ("scale-table.txt", "scale-notes.txt")
    } else {
        ("table.txt", "notes.txt")
    };
    std::fs::write(out.join(table_file), table + "\n")?;
    std::fs::write(out.join(notes_file), results.notes.join("\n") + "\n")?;
    eprintln!(
        "wrote {} (breakdowns in {}, logs in {})",
        json.display(),
        out.join("notes.txt").display(),
        logs.display()
    );
    outcome
}

async fn run(stack: &mut Stack, cli: &Cli, results: &mut Results) -> Result<()> {
    match cli.only.as_deref() {
        None => {}
        Some("logs") => return logs::run(stack, results).await,
        Some(other) => bail!("--only {other}: the parts are: logs"),
    }
    let release = stack.paths.release.clone();
    results.set("meta.cold_starts", cli.cold_starts as f64);
    results.set("meta.warm_requests", cli.warm as f64);

    // API only (no worker, no reconciler): nothing but the requests under test touches moto.
    stack.start_local(false, &[]).await?;
    let job_id = stack.submit(&api::submit_body("echo bench")).await?;
    // Cancelled at once (it never reached the worker): a real job to read, and none the
    // reconciler would re-drive while it is measured.
    let (status, body) = stack
        .api("DELETE", &format!("/jobs/{job_id}"), None)
        .await?;
    if status != 200 {
        bail!("cancelling the probe job: {status} {body}");
    }

    eprintln!("== functions");
    let list = functions::functions(&stack.key, &job_id);
    functions::run(stack, &release, &list, cli.cold_starts, cli.warm, results).await?;

    eprintln!("== API latency");
    api::run(stack, &job_id, cli.get_n, cli.post_n, results).await?;

    // The worker phases get a fresh stack: moto copies the whole table on every
    // TransactWriteItems (and races concurrent writers while it does), so a table grown by the
    // latency runs would measure moto, not the worker.
    eprintln!("== worker throughput (fresh stack)");
    let paths = stack.paths.clone();
    stack.shutdown();
    *stack = Stack::start(paths).await?;
    stack.start_local(false, &[]).await?;
    let body = api::submit_body("echo bench");
    let mut queued = Vec::new();
    for _ in 0..cli.advance_n + 10 {
        queued.push(stack.submit(&body).await?);
    }
    let advanced = worker::throughput(stack, &release, &queued, results).await?;
    let deployed = Instant::now();
    let advanced_ids = queued[..advanced].to_vec();

    eprintln!("== worker overhead and requests per job-hour (local server with its worker)");
    // Production timers: running jobs park, as they do in AWS.
    stack.start_local(true, &[]).await?;
    worker::drain(stack, &advanced_ids).await?;
    worker::quiet_after(deployed).await;
    let idle = (Duration::from_secs(3), Duration::from_secs(90));
    worker::wait_idle(stack, idle.0, idle.1).await?;
    let last_submit = worker::overhead(stack, cli.overhead_n, results).await?;
    worker::quiet_after(last_submit).await;
    worker::wait_idle(stack, idle.0, idle.1).await?;
    worker::job_hour(stack, results).await?;
    eprintln!("== live logs");
    logs::run(stack, results).await?;
    Ok(())
}
