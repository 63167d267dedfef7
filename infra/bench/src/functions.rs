//! Per function: stripped binary size, init time (spawn → first `GET …/invocation/next`, median
//! of N cold starts, interleaved with the hello-world floor so both see the same machine), peak
//! RSS after M warm invocations, and the AWS + provider calls of one warm invocation.

use crate::emulator::RuntimeApi;
use crate::events;
use crate::procs::{self, log_file};
use crate::results::{median, ms, Results};
use crate::stack::{counted, summarize, Stack};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const FLOOR: &str = "hello";

/// The functions only weighed (`fn.<key>.size_mb`): their routes are the dashboard's, Stripe's
/// webhook and the smaller API groups, outside the latency and call-count targets.
pub const SIZE_ONLY: &[(&str, &str)] = &[
    ("billing", "mimiry-billing"),
    ("dashboard", "mimiry-dashboard"),
    ("webhooks", "mimiry-webhooks"),
    ("secrets", "mimiry-secrets"),
];

/// A Lambda binary and the event it is benchmarked with.
pub struct Function {
    /// Key in results.json (`fn.<key>.…`).
    pub key: &'static str,
    pub bin: &'static str,
    /// What one warm invocation is (for the table).
    pub what: String,
    pub event: Value,
    pub check: fn(&Value) -> Result<()>,
}

fn http_ok(answer: &Value) -> Result<()> {
    match events::status_of(answer) {
        200 => Ok(()),
        s => bail!("HTTP {s}: {}", answer["body"]),
    }
}

fn no_failures(answer: &Value) -> Result<()> {
    match answer["batchItemFailures"].as_array() {
        Some(f) if f.is_empty() => Ok(()),
        _ => bail!("batch failures: {answer}"),
    }
}

fn no_errors(answer: &Value) -> Result<()> {
    match answer["errors"].as_u64() {
        Some(0) => Ok(()),
        _ => bail!("reconciler reported errors: {answer}"),
    }
}

fn echoed(answer: &Value) -> Result<()> {
    if answer["hello"] == "world" {
        Ok(())
    } else {
        bail!("hello-lambda answered {answer}")
    }
}

pub fn functions(key: &str, job_id: &str) -> Vec<Function> {
    let get = |path: &str, route: &str| events::http("GET", path, route, key, None);
    vec![
        Function {
            key: FLOOR,
            bin: "hello-lambda",
            what: "echo".into(),
            event: serde_json::json!({"hello": "world"}),
            check: echoed,
        },
        Function {
            key: "account",
            bin: "mimiry-account",
            what: "GET /account".into(),
            event: get("/account", "GET /account"),
            check: http_ok,
        },
        Function {
            key: "catalog",
            bin: "mimiry-catalog",
            what: "GET /instances".into(),
            event: get("/instances", "GET /instances"),
            check: http_ok,
        },
        Function {
            key: "ssh_keys",
            bin: "mimiry-ssh-keys",
            what: "GET /ssh-keys".into(),
            event: get("/ssh-keys", "GET /ssh-keys"),
            check: http_ok,
        },
        Function {
            key: "jobs",
            bin: "mimiry-jobs",
            what: "GET /jobs/{id}".into(),
            event: get(&format!("/jobs/{job_id}"), "GET /jobs/{id}"),
            check: http_ok,
        },
        Function {
            key: "worker",
            bin: "mimiry-worker",
            what: "empty SQS batch".into(),
            event: events::sqs(&[], "arn:aws:sqs:us-east-1:123456789012:mimiry-jobs"),
            check: no_failures,
        },
        Function {
            key: "reconciler",
            bin: "mimiry-reconciler",
            what: "schedule event".into(),
            event: events::schedule(),
            check: no_errors,
        },
    ]
}

/// The command Lambda would run: a clean environment with the runtime's variables, the
/// function's configuration and the local AWS endpoint.
pub fn lambda_command(
    stack: &Stack,
    bin: &Path,
    name: &str,
    api: &RuntimeApi,
    env: &[(&str, &str)],
) -> Result<Command> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", api.host())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .envs(stack.aws_env())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log_file(&stack.paths.logs(), name)?)
        .stderr(log_file(&stack.paths.logs(), name)?);
    Ok(cmd)
}

/// A function process under a runtime-API emulator.
pub struct Running {
    pub api: RuntimeApi,
    pub child: std::process::Child,
    /// Spawn → first request for an event.
    pub init: Duration,
}

impl Running {
    pub async fn start(
        stack: &Stack,
        bin: &Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> Result<Running> {
        let api = RuntimeApi::start().await?;
        let cmd = lambda_command(stack, bin, name, &api, env)?;
        let (mut child, spawned) = procs::spawn(cmd, libc::SIGKILL).await?;
        match api.first_next(Duration::from_secs(15)).await {
            Ok(at) => Ok(Running {
                init: at.saturating_duration_since(spawned),
                api,
                child,
            }),
            Err(e) => {
                procs::stop(&mut child, libc::SIGKILL, Duration::ZERO);
                Err(e.context(format!("{name} did not start (see {name}.log)")))
            }
        }
    }

    pub async fn invoke(&mut self, event: &Value) -> Result<Value> {
        let body = self
            .api
            .invoke(event.to_string().as_bytes(), Duration::from_secs(30))
            .await?;
        serde_json::from_slice(&body).context("the function answered no JSON")
    }

    pub fn stop(mut self) {
        procs::stop(&mut self.child, libc::SIGKILL, Duration::ZERO);
    }
}

/// Size of the binary once stripped (the release profile strips; a copy is stripped again with
/// `strip` when it is installed, so the figure never includes symbols).
fn stripped_size(bin: &Path, scratch: &Path) -> Result<u64> {
    let copy = scratch.join(bin.file_name().unwrap_or_default());
    std::fs::copy(bin, &copy)?;
    let _ = Command::new("strip")
        .arg("--strip-all")
        .arg(&copy)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let size = std::fs::metadata(&copy)?.len();
    let _ = std::fs::remove_file(&copy);
    Ok(size)
}

pub async fn run(
    stack: &Stack,
    release: &Path,
    list: &[Function],
    cold_starts: usize,
    warm: usize,
    results: &mut Results,
) -> Result<()> {
    let bins: Vec<PathBuf> = list.iter().map(|f| release.join(f.bin)).collect();
    let weighed_only: Vec<PathBuf> = SIZE_ONLY.iter().map(|(_, b)| release.join(b)).collect();
    for b in bins.iter().chain(&weighed_only) {
        if !b.exists() {
            bail!(
                "{} is missing: build the release binaries first",
                b.display()
            );
        }
    }
    let scratch = stack.paths.out.join("strip");
    std::fs::create_dir_all(&scratch)?;
    for (f, bin) in list.iter().zip(&bins) {
        results.set(
            format!("fn.{}.size_mb", f.key),
            stripped_size(bin, &scratch)? as f64 / 1e6,
        );
    }
    for ((key, _), bin) in SIZE_ONLY.iter().zip(&weighed_only) {
        results.set(
            format!("fn.{key}.size_mb"),
            stripped_size(bin, &scratch)? as f64 / 1e6,
        );
    }

    // Cold starts, round-robin so that the floor and the functions share the machine's moods;
    // one unrecorded round first so that every binary is in the page cache.
    eprintln!(
        "cold starts: {cold_starts} rounds × {} binaries",
        list.len()
    );
    let mut inits: Vec<Vec<f64>> = vec![Vec::new(); list.len()];
    for round in 0..=cold_starts {
        for (i, (f, bin)) in list.iter().zip(&bins).enumerate() {
            let running = Running::start(stack, bin, f.bin, &[]).await?;
            if round > 0 {
                inits[i].push(ms(running.init));
            }
            running.stop();
        }
    }
    for (f, samples) in list.iter().zip(&inits) {
        results.set(format!("fn.{}.init_ms", f.key), median(samples));
    }
    let floor = results.get(&format!("fn.{FLOOR}.init_ms"));
    for f in list.iter().filter(|f| f.key != FLOOR) {
        let init = results.get(&format!("fn.{}.init_ms", f.key));
        results.set(format!("fn.{}.init_over_floor_ms", f.key), init - floor);
    }

    // Warm: one process per function, `warm` invocations, then its peak RSS; then one more
    // invocation with moto's recorder and the fake's counters watching.
    for (f, bin) in list.iter().zip(&bins) {
        eprintln!("warm: {} × {} ({})", warm, f.bin, f.what);
        let mut running = Running::start(stack, bin, f.bin, &[]).await?;
        let outcome = async {
            for i in 0..warm {
                let answer = running.invoke(&f.event).await?;
                (f.check)(&answer).with_context(|| format!("{} invocation {i}", f.bin))?;
            }
            let rss = procs::peak_rss_kib(running.child.id())?;
            results.set(format!("fn.{}.rss_peak_mb", f.key), rss as f64 / 1024.0);
            if f.key != FLOOR {
                stack.record().await?;
                let before = stack.provider_count().await?;
                let answer = running.invoke(&f.event).await?;
                let calls = stack.recorded().await?;
                let provider = stack.provider_count().await?.since(&before);
                (f.check)(&answer)?;
                let aws = counted(&calls);
                results.set(format!("fn.{}.aws_calls", f.key), aws.len() as f64);
                results.set(
                    format!("fn.{}.provider_calls", f.key),
                    provider.total as f64,
                );
                results.note(format!(
                    "{}: one warm {}: AWS [{}] provider {:?}",
                    f.bin,
                    f.what,
                    summarize(aws.iter().copied()),
                    provider.by_route
                ));
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        running.stop();
        outcome.map_err(|e| anyhow!("{}: {e:#}", f.bin))?;
    }
    Ok(())
}
