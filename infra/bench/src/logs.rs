//! Live logs (issue 13): how many lines one job ships per second end to end (the wrapper's
//! shipper on the fake instance → `POST /jobs/{id}/logs` → DynamoDB in moto, read back with
//! `GET /jobs/{id}/logs?tail=1`), and the AWS requests a quiet job's log costs per job-hour.
//!
//! Needs `mimiry-local` with its worker (jobs really run: fake DataCrunch in execute mode).
//! Alone: `cargo build -p mimiry-infra -p fake-datacrunch -p mimiry-bench && target/debug/mimiry-bench
//! --release target/debug --stack-bin target/debug --only logs`.

use crate::api::submit_body;
use crate::results::{round, Results};
use crate::stack::{counted, summarize, Stack};
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// Lines the throughput job prints at once (~3.4 MB: about 53 full 64 KiB chunks, under the
/// 10 MiB cap).
const LINES: u64 = 300_000;
/// How long the quiet job stays quiet between its first and last lines.
const QUIET_SECS: u64 = 30;

/// The number `K` of the log's last line `line K`, and whether the log is complete.
async fn last_line(stack: &Stack, id: &str) -> Result<(u64, bool)> {
    let (status, body) = stack
        .api("GET", &format!("/jobs/{id}/logs?tail=1"), None)
        .await?;
    if status != 200 {
        bail!("GET /jobs/{id}/logs: {status} {body}");
    }
    let k = body["lines"][0]
        .as_str()
        .and_then(|l| l.strip_prefix("line "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Ok((k, body["complete"] == true))
}

pub async fn run(stack: &mut Stack, results: &mut Results) -> Result<()> {
    stack.start_local(true, &[]).await?;
    throughput(stack, results).await?;
    quiet_job_hour(stack, results).await
}

/// Lines per second: the script prints [`LINES`] lines at once, so the shipper is the
/// bottleneck; the rate is measured between the first line seen stored and the last one.
async fn throughput(stack: &Stack, results: &mut Results) -> Result<()> {
    let script = format!("seq 1 {LINES} | sed 's/^/line /'\nsleep 1");
    let id = stack.submit(&submit_body(&script)).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut first: Option<(u64, Instant)> = None;
    let last = loop {
        if Instant::now() > deadline {
            bail!("the log of {id} did not reach line {LINES} in 300 s");
        }
        let (k, complete) = last_line(stack, &id).await?;
        let now = Instant::now();
        if k > 0 && first.is_none() {
            first = Some((k, now));
        }
        if k >= LINES || complete {
            break (k, now);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Some((k0, t0)) = first else {
        bail!("no line of {id} was ever stored");
    };
    if last.0 != LINES {
        bail!("the log of {id} ended at line {} of {LINES}", last.0);
    }
    let secs = (last.1 - t0).as_secs_f64();
    if secs <= 0.0 || k0 >= LINES {
        bail!("all {LINES} lines arrived at once: print more to measure the rate");
    }
    let rate = (LINES - k0) as f64 / secs;
    results.set("logs.lines_per_second", round(rate, 0));
    results.note(format!(
        "logs: {} lines shipped in {secs:.2} s (first seen: line {k0}) = {rate:.0} lines/s",
        LINES - k0
    ));
    Ok(())
}

/// A quiet job (a line at its start, nothing for [`QUIET_SECS`], a line at its end): the AWS
/// requests its log costs. Measured: the shipments (`POST /jobs/{id}/logs` requests the local
/// server logged) and the DynamoDB writes to the job's log items (moto's recording; the
/// bench's own reads of the log, through the API, are left out). Each shipment is also an API
/// Gateway request, a Lambda invocation and the handler's read of the job (for its secrets):
/// 3 more per shipment. The quiet window's rate is scaled to an hour and the start and end
/// shipments added once.
async fn quiet_job_hour(stack: &Stack, results: &mut Results) -> Result<()> {
    let script = format!("echo 'line 1'\nsleep {QUIET_SECS}\necho 'line 2'");
    stack.record().await?;
    let ships_before = ship_requests(stack)?;
    let id = stack.submit(&submit_body(&script)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    // The first line stored: the quiet window starts.
    loop {
        if Instant::now() > deadline {
            bail!("the quiet job {id} never shipped its first line");
        }
        if last_line(stack, &id).await?.0 >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start_recorded = stack.recorded().await?;
    let start_calls = log_calls(&start_recorded, &id);
    let ships_start = ship_requests(stack)? - ships_before;
    // The quiet middle: a window of the sleep, away from both ends.
    stack.record().await?;
    let window = Duration::from_secs(QUIET_SECS - 8);
    tokio::time::sleep(window).await;
    let quiet_recorded = stack.recorded().await?;
    let quiet_calls = log_calls(&quiet_recorded, &id);
    let ships_quiet = ship_requests(stack)? - ships_before - ships_start;
    // The end: the last line, the report, teardown.
    stack.record().await?;
    loop {
        if Instant::now() > deadline {
            bail!("the quiet job {id} never completed its log");
        }
        let (k, complete) = last_line(stack, &id).await?;
        if k >= 2 && complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end_recorded = stack.recorded().await?;
    let end_calls = log_calls(&end_recorded, &id);
    let ships_end = ship_requests(stack)? - ships_before - ships_start - ships_quiet;

    let per_hour = 3600.0 / window.as_secs_f64();
    let aws = |calls: usize, ships: usize| (calls + 3 * ships) as f64;
    let logs_part = aws(start_calls.len(), ships_start)
        + aws(quiet_calls.len(), ships_quiet) * per_hour
        + aws(end_calls.len(), ships_end);
    results.set("logs.requests_per_job_hour_quiet_logs", round(logs_part, 1));
    results.note(format!(
        "logs, quiet job: start {} ships [{}], quiet {:.0} s {} ships [{}], end {} ships [{}]",
        ships_start,
        summarize(start_calls.iter().copied()),
        window.as_secs_f64(),
        ships_quiet,
        summarize(quiet_calls.iter().copied()),
        ships_end,
        summarize(end_calls.iter().copied()),
    ));
    // With the job's own lifecycle (the worker's figure, when this run measured it).
    if results.has("worker.requests_per_job_hour") {
        let total = results.get("worker.requests_per_job_hour") + logs_part;
        results.set("logs.requests_per_job_hour_quiet", round(total, 1));
    } else {
        results.note(
            "logs.requests_per_job_hour_quiet needs worker.requests_per_job_hour (run the \
             whole bench); only the log part was measured",
        );
    }
    Ok(())
}

/// The DynamoDB writes to `id`'s log (its `JOBLOG#…` items); reads are the bench's follower.
fn log_calls<'a>(calls: &'a [crate::stack::Call], id: &str) -> Vec<&'a crate::stack::Call> {
    let key = format!("#{id}");
    counted(calls)
        .into_iter()
        .filter(|c| !c.op.ends_with(":Query") && !c.op.ends_with(":GetItem"))
        .filter(|c| c.body.contains("JOBLOG#") && c.body.contains(&key))
        .collect()
}

/// `POST /jobs/{id}/logs` requests the local server has logged so far.
fn ship_requests(stack: &Stack) -> Result<usize> {
    let log = std::fs::read_to_string(stack.paths.logs().join("mimiry-local.log"))?;
    Ok(log
        .lines()
        .filter(|l| l.contains("/jobs/{id}/logs") && l.contains("POST"))
        .count())
}
