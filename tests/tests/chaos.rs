//! The chaos test: many concurrent jobs against the fake provider while it injects faults in
//! waves (capacity, 5xx, timeouts, instances that fail, vanish or go offline, refused
//! deletes), every SQS message is handed to the worker twice at once, and the worker "dies"
//! at random points between its steps (`MIMIRY_TEST_CRASH_PERCENT`).
//!
//! The fake's rate limits are on, at Verda's real numbers (500 requests a minute per project,
//! 60 per method and path, 120 for `GET /v1/instances`): the stack starts the fake without
//! them (see `mimiry_tests::Stack`), and this test turns them on before the first job.
//!
//! Afterwards every job must be terminal, nothing may be left at the provider (instances,
//! scripts, volumes — the trash included), every account's money must add up with nothing
//! held, and no job may be charged for time its instance did not live. The last line printed
//! is `chaos: jobs=N faults=F duplicates=D crashes=C parked_wakeups=W instance_alerts=A stuck=S
//! leaked_instances=L leaked_scripts=P leaked_volumes=V ledger_error_micros=E
//! overcharged_jobs=O billing_error_micros=B overbilled_jobs=R absorbed_micros=M` (one line),
//! and S, L, P, V, E, O, B, R must be 0: B and R compare each job's charge with what the
//! billing rule says it owes by the fake's own records (`owed_by_rule`), M is Mimiry's
//! absorbed cost (docs/decisions.md, "Exact billing"). Running jobs park between
//! looks, so W counts the reconciler's wake-ups and A its alerts about instances no longer
//! running.
//!
//! Both providers are enabled (issue 12): jobs name DataCrunch types, a GPU only Lambda sells,
//! and an 8x A100 both sell (DataCrunch's is cheaper, so capacity faults there move jobs to
//! Lambda); each fault wave picks one of the two fakes. Lambda's launch limit is on at one
//! launch per 2 s (the real one is ~10 s: 60 jobs would queue for minutes behind it), and
//! `MAX_DEPLOY_ATTEMPTS` is 4 (DataCrunch sells the 8x A100 in three locations). The verdict
//! line adds `leaked_instances_datacrunch=… leaked_instances_lambda=…`, and a line before it
//! counts the jobs that moved across providers.
//!
//! Every account has a webhook endpoint (issue 13) at a receiver in the test, and the worker's
//! crashes include the moment after a save and before its webhook trigger: every ended job's
//! final event (`job.completed`/`failed`/`cancelled`) must still arrive — the verdict line's
//! `webhooks_final_missing`, which must be 0.
//!
//! `CHAOS_JOBS` (default 60, the CI size), `CHAOS_SEED` (default: from the clock; printed),
//! `CHAOS_CRASH_PERCENT` (default 10), `CHAOS_RATE_LIMITS` (`real`, the default, or `low`: a
//! third of each limit, so that 60 jobs meet them too), `CHAOS_HOLD_SECONDS` (default 15; 3600
//! is production's hold). `make chaos` runs 500 jobs.

use mimiry_shared::jobs::model::{cost_of, job_id_of_name};
use mimiry_shared::jobs::{Job, JobStatus};
use mimiry_shared::money::Micros;
use mimiry_shared::store::Store;
use mimiry_tests::webhook_receiver::Receiver;
use mimiry_tests::{call, Stack, StackOptions, TestAccount, TEST_ENV};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Knobs

/// Slower than `PROVIDER_TIMEOUT_MS` (3000 in `TEST_ENV`): the client times out, the fake has
/// still done the work (its slowness is applied after the handler ran).
const SLOW_MS: u64 = 3500;
/// Credit hold at submit and per extension (`CHAOS_HOLD_SECONDS`, default 15): short, so that
/// holds are extended all the time and tight accounts run out in the middle of jobs. 3600 is
/// production's: holds are then rarely extended, and the cap at the hold barely matters.
const HOLD_SECONDS: u64 = 15;
/// A provisioning or running job is looked at every 6 s, and parked in between (a look 3+ s
/// away).
const RUNNING_POLL_SECONDS: &str = "6";
const PARK_AFTER_SECONDS: &str = "3";
/// The delayed webhook trigger queued before a job's final save (production: 120 s).
const WEBHOOK_SAFETY_NET_SECONDS: &str = "5";
/// The reconciler runs every 2 s in the test stack.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (splitmix64): the test crate has no `rand`, and a seed makes a
// failing run repeatable as far as the test's own choices go.

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }

    fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

// ---------------------------------------------------------------------------------------------
// The workload

/// Instance types of the fake's catalog, a compatible image, and where each is offered.
const TYPES: &[(&str, &str, &[&str])] = &[
    (
        "1V100.6V",
        "ubuntu-22.04-cuda-12.0",
        &["FIN-01", "FIN-02", "FIN-03"],
    ),
    (
        "1A100.80S.22V",
        "ubuntu-22.04-cuda-12.0-docker",
        &["FIN-01", "FIN-02", "FIN-03", "ICE-01"],
    ),
    (
        "CPU.4V.16G",
        "ubuntu-22.04",
        &["FIN-01", "FIN-02", "FIN-03", "ICE-01"],
    ),
    // Only Lambda sells it.
    (
        "gpu_1x_a10",
        "lambda-stack-22.04",
        &["us-east-1", "us-west-1"],
    ),
    // Both sell an 8x A100; without a location, a job fails over to Lambda's.
    (
        "8A100.80G",
        "ubuntu-22.04-cuda-12.0",
        &["FIN-01", "FIN-02", "ICE-01"],
    ),
];

/// One of the stack's fake providers, as the test drives it: its admin API and the API paths
/// its 5xx faults may be limited to.
struct Fake {
    /// The Mimiry provider id (`datacrunch`, `lambda`).
    name: &'static str,
    /// `…/admin`.
    admin: String,
    server_paths: &'static [&'static [&'static str]],
    book: Mutex<FaultBook>,
}

impl Fake {
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.admin));
        if let Some(b) = body {
            request = request.json(&b);
        }
        request
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null)
    }
}

fn fakes(stack: &Stack) -> Vec<Fake> {
    let mut fakes = vec![Fake {
        name: "datacrunch",
        admin: format!("{}/admin", stack.fake_url),
        server_paths: &[
            &[],
            &["/v1/instances"],
            &["/v1/scripts"],
            &["/v1/instance-availability"],
            &["/v1/instances", "/v1/scripts"],
        ],
        book: Mutex::default(),
    }];
    if let Some(url) = &stack.lambda_url {
        fakes.push(Fake {
            name: "lambda",
            admin: format!("{url}/admin"),
            server_paths: &[
                &[],
                &["/api/v1/instances"],
                &["/api/v1/instance-operations/launch"],
                &["/api/v1/instance-types"],
                &["/api/v1/instance-operations/terminate"],
            ],
            book: Mutex::default(),
        });
    }
    fakes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Script {
    /// Exits 0 after at most 2 s.
    Quick,
    /// Exits non-zero.
    Fails,
    /// Sleeps a few seconds, exits 0.
    Sleeps,
    /// Never ends by itself: cancelled, or stopped by `max_runtime_seconds` or by credits.
    Endless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purse {
    /// Less than any hold: every submit is refused (402).
    Poor,
    /// A minute or so of GPU time: some submits refused, some jobs stopped mid-run.
    Tight,
    Rich,
}

struct Plan {
    index: usize,
    account: usize,
    script: Script,
    body: Value,
    submit_after: Duration,
    cancel_after: Option<Duration>,
}

fn plan_jobs(n: usize, accounts: &[Purse], window: Duration, rng: &mut Rng) -> Vec<Plan> {
    (0..n)
        .map(|index| {
            let account = (rng.next_u64() % accounts.len() as u64) as usize;
            let (instance_type, image, locations) = *rng.pick(TYPES);
            let script = match rng.range(0, 99) {
                0..=34 => Script::Quick,
                35..=49 => Script::Fails,
                50..=79 => Script::Sleeps,
                _ => Script::Endless,
            };
            let text = match script {
                Script::Quick => format!("echo chaos-ok\nsleep {}\n", rng.range(0, 2)),
                Script::Fails => format!("echo chaos-fail >&2\nexit {}\n", rng.range(1, 9)),
                Script::Sleeps => format!("sleep {}\necho slept\n", rng.range(3, 8)),
                Script::Endless => "echo forever\nsleep 900\n".to_string(),
            };
            let auto_shutdown = rng.chance(50);
            let mut body = json!({
                "name": format!("chaos-{index}"),
                "instance_type": instance_type,
                "image": image,
                "startup_script": text,
                "auto_shutdown": auto_shutdown,
            });
            if rng.chance(50) {
                body["location"] = json!(rng.pick(locations));
            }
            // An endless script, or an instance kept up after the report (no auto_shutdown),
            // ends by max runtime (60 s, the minimum) or by a cancel.
            let mut cancel_after = None;
            if script == Script::Endless || !auto_shutdown {
                if rng.chance(50) {
                    body["max_runtime_seconds"] = json!(60);
                } else {
                    cancel_after = Some(Duration::from_millis(rng.range(2_000, 30_000)));
                }
            } else {
                if rng.chance(15) {
                    // Cancelled at a random moment: before its first step, while deploying,
                    // provisioning, running, or after it finished (409).
                    cancel_after = Some(Duration::from_millis(rng.range(0, 15_000)));
                }
                if rng.chance(10) {
                    body["max_runtime_seconds"] = json!(60);
                }
            }
            Plan {
                index,
                account,
                script,
                body,
                submit_after: Duration::from_millis(rng.range(0, window.as_millis() as u64)),
                cancel_after,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP as a client would do it: with a timeout, retrying what is safe to retry.

struct Reply {
    status: u16,
    body: Value,
}

async fn request(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    key: &str,
    body: Option<&Value>,
    idem: Option<&str>,
) -> Option<Reply> {
    let mut req = client
        .request(method, url)
        .header("Authorization", format!("Bearer {key}"));
    if let Some(idem) = idem {
        req = req.header("Idempotency-Key", idem);
    }
    if let Some(body) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let response = req.send().await.ok()?;
    let status = response.status().as_u16();
    let text = response.text().await.ok()?;
    Some(Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    })
}

#[derive(Debug, Default)]
struct Submitted {
    /// index → (account, job id, script)
    accepted: BTreeMap<usize, (usize, String, Script)>,
    refused_credits: usize,
    /// Any other final answer (status, code): reported, not fatal.
    other: Vec<(u16, String)>,
    cancels: usize,
    cancels_too_late: usize,
    /// Cancels that never got a 200/202/409: a bug (the job exists, the API answers).
    cancel_failures: Vec<String>,
}

async fn submit(
    client: &reqwest::Client,
    stack: &Stack,
    key: &str,
    plan: &Plan,
) -> Result<String, (u16, String)> {
    let idem = uuid::Uuid::new_v4().to_string();
    let mut last = (0, "no answer".to_string());
    for attempt in 0..6u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
        let Some(reply) = request(
            client,
            Method::POST,
            &stack.url("/jobs"),
            key,
            Some(&plan.body),
            Some(&idem),
        )
        .await
        else {
            continue;
        };
        let code = reply.body["code"].as_str().unwrap_or("").to_string();
        match reply.status {
            201 => return Ok(reply.body["id"].as_str().expect("a job id").to_string()),
            s if s >= 500 => last = (s, code),
            s => return Err((s, code)),
        }
    }
    Err(last)
}

/// `DELETE /jobs/{id}`: `Ok(true)` if the cancel was taken, `Ok(false)` if the job had already
/// finished, `Err(last answer)` if it never got a proper answer.
async fn cancel(
    client: &reqwest::Client,
    stack: &Stack,
    key: &str,
    job_id: &str,
) -> Result<bool, String> {
    let mut last = "no answer".to_string();
    for _ in 0..20 {
        let url = stack.url(&format!("/jobs/{job_id}"));
        if let Some(reply) = request(client, Method::DELETE, &url, key, None, None).await {
            match (reply.status, reply.body["code"].as_str()) {
                (200 | 202, _) => return Ok(true),
                (409, Some("job_finished")) => return Ok(false),
                (status, code) => last = format!("{status} {}", code.unwrap_or("")),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}

// ---------------------------------------------------------------------------------------------
// Fault injection in waves, with a book of what was asked for.

/// The fake's counters: set as "what is left + k" so nothing asked for is overwritten; what
/// fired is what was asked for minus what is left at the end.
const COUNTERS: &[&str] = &[
    "deploy_capacity_failures",
    "error_next_instances",
    "vanish_next_instances",
    "delete_refusals",
    "server_errors",
    "slow",
];

#[derive(Debug, Default)]
struct FaultBook {
    asked: BTreeMap<&'static str, u64>,
    /// Per-instance faults (vanish, forced status), which fire when asked.
    direct: BTreeMap<&'static str, u64>,
    remaining: BTreeMap<&'static str, u64>,
}

impl FaultBook {
    fn fired(&self) -> BTreeMap<&'static str, u64> {
        let mut fired: BTreeMap<&'static str, u64> = COUNTERS
            .iter()
            .map(|k| {
                (
                    *k,
                    self.asked
                        .get(k)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(self.remaining.get(k).copied().unwrap_or(0)),
                )
            })
            .collect();
        for (k, v) in &self.direct {
            *fired.entry(k).or_default() += v;
        }
        fired
    }
}

fn remaining(faults: &Value, counter: &str) -> u64 {
    match counter {
        "server_errors" => faults["server_errors"]["count"].as_u64().unwrap_or(0),
        "slow" => {
            if faults["slow_ms"].as_u64().unwrap_or(0) == 0 {
                0
            } else {
                faults["slow_count"].as_u64().unwrap_or(0)
            }
        }
        c => faults[c].as_u64().unwrap_or(0),
    }
}

/// One to three faults: a counter at the fake (raised by what is left of it, so nothing asked
/// for earlier is overwritten), or a running instance that is lost, shut down or broken.
async fn fault_wave(fake: &Fake, rng: &mut Rng) {
    let book = &fake.book;
    for _ in 0..rng.range(1, 3) {
        let current = fake.admin(Method::GET, "/faults", None).await;
        let kind = rng.range(0, 8);
        // Enough 5xx or slow answers in a row to outlast the client's 3 retries, sometimes.
        let k = match kind {
            // Capacity runs out for a while: enough for a job to exhaust a provider's
            // locations and move to the other one (the 8x A100).
            0 => rng.range(1, 6),
            1 | 2 => rng.range(1, 8),
            3 | 4 => rng.range(1, 2),
            _ => rng.range(1, 4),
        };
        let (counter, patch): (&'static str, Value) = match kind {
            0 => (
                "deploy_capacity_failures",
                json!({"deploy_capacity_failures": remaining(&current, "deploy_capacity_failures") + k}),
            ),
            1 => {
                let paths = fake.server_paths;
                // The fake keeps one rule: the latest status and paths apply to all of it.
                (
                    "server_errors",
                    json!({"server_errors": {
                        "count": remaining(&current, "server_errors") + k,
                        "status": *rng.pick(&[500u16, 502, 503, 504]),
                        "paths": rng.pick(paths),
                    }}),
                )
            }
            2 => (
                "slow",
                json!({"slow_ms": SLOW_MS, "slow_count": remaining(&current, "slow") + k}),
            ),
            3 => (
                "error_next_instances",
                json!({"error_next_instances": remaining(&current, "error_next_instances") + k}),
            ),
            4 => (
                "vanish_next_instances",
                json!({"vanish_next_instances": remaining(&current, "vanish_next_instances") + k}),
            ),
            5 => (
                "delete_refusals",
                json!({"delete_refusals": remaining(&current, "delete_refusals") + k}),
            ),
            _ => {
                instance_fault(fake, rng).await;
                continue;
            }
        };
        fake.admin(Method::POST, "/faults", Some(patch)).await;
        *book.lock().unwrap().asked.entry(counter).or_default() += k;
    }
}

/// A running instance is lost, shut down behind the job's back, or breaks.
async fn instance_fault(fake: &Fake, rng: &mut Rng) {
    let state = fake.admin(Method::GET, "/state", None).await;
    let running: Vec<String> = state["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "running" && i["deleted"] == false && i["vanished"] == false)
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    if running.is_empty() {
        return;
    }
    let id = rng.pick(&running).clone();
    let (what, path, body) = match rng.range(0, 2) {
        0 => ("instance_vanished", format!("/instances/{id}/vanish"), None),
        1 => (
            "instance_offline",
            format!("/instances/{id}/status"),
            Some(json!({"status": "offline"})),
        ),
        _ => (
            "instance_error",
            format!("/instances/{id}/status"),
            Some(json!({"status": "error"})),
        ),
    };
    let answer = fake.admin(Method::POST, &path, body).await;
    if answer["id"] == id.as_str() {
        *fake.book.lock().unwrap().direct.entry(what).or_default() += 1;
    }
}

/// Reads what is left of every counter into the book, then switches every fault off.
async fn stop_faults(fake: &Fake) {
    let current = fake.admin(Method::GET, "/faults", None).await;
    {
        let mut book = fake.book.lock().unwrap();
        for c in COUNTERS {
            book.remaining.insert(c, remaining(&current, c));
        }
    }
    fake.admin(
        Method::POST,
        "/faults",
        Some(json!({
            "deploy_capacity_failures": 0, "server_errors": {"count": 0}, "slow_ms": 0,
            "error_next_instances": 0, "vanish_next_instances": 0, "delete_refusals": 0,
        })),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Reading the outcome

async fn all_jobs(store: &Store, account_id: &str) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list_jobs(account_id, None, 100, cursor.as_deref())
            .await
            .expect("listing jobs");
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return jobs,
        }
    }
}

/// Every job of every account, by id.
async fn jobs_by_id(store: &Store, accounts: &[TestAccount]) -> HashMap<String, Job> {
    let mut out = HashMap::new();
    for a in accounts {
        for job in all_jobs(store, &a.account_id).await {
            out.insert(job.job_id.clone(), job);
        }
    }
    out
}

/// Instances not deleted and not lost (a vanished instance bills no one), scripts left, and
/// volumes left (attached, detached or in the trash: each counts against the storage quota).
fn leftovers(state: &Value) -> (Vec<String>, Vec<String>, Vec<String>) {
    let instances = state["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["deleted"] == false && i["vanished"] == false)
        .map(|i| {
            format!(
                "{} ({}, {})",
                i["id"].as_str().unwrap(),
                i["status"].as_str().unwrap_or("?"),
                i["description"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let scripts = state["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("?").to_string())
        .collect();
    let volumes = state["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{} ({}, in trash: {}, instance {})",
                v["name"].as_str().unwrap_or("?"),
                v["status"].as_str().unwrap_or("?"),
                v["in_trash"],
                v["instance_id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    (instances, scripts, volumes)
}

/// The value at the job's price of the whole seconds one instance lived by the fake's own
/// records: created → delete accepted, or vanished (or still alive at `now_ms`).
fn life_value(job: &Job, instance: &Value, now_ms: i64) -> Micros {
    let created = instance["created_at_ms"].as_i64().unwrap();
    let end = [
        instance["deleted_at_ms"].as_i64(),
        instance["vanished_at_ms"].as_i64(),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(now_ms);
    cost_of(job.price_per_hour(), ((end - created).max(0)) / 1000)
}

/// The most a job may be charged: its price for the whole seconds each of its instances lived
/// (created at the fake → deleted or lost at the fake).
fn allowed_charge(job: &Job, instances: &[&Value], now_ms: i64) -> Micros {
    instances
        .iter()
        .fold(Micros::ZERO, |sum, i| sum + life_value(job, i, now_ms))
}

/// What the billing rule (docs/decisions.md, "Exact billing") says the job owes, from the
/// fake's records alone: the life of the instance the job ran on — its last instance, the
/// one it kept; fail-over attempts it abandoned and instances it never adopted are Mimiry's.
fn owed_by_rule(job: &Job, instances: &[&Value], now_ms: i64) -> Micros {
    job.instance_id
        .as_deref()
        .and_then(|id| instances.iter().find(|i| i["id"].as_str() == Some(id)))
        .map_or(Micros::ZERO, |i| life_value(job, i, now_ms))
}

/// How one job's charge compares with the rule: (overbilled by, billed short by), each ≥ 0.
/// The rule charges the inner bounds of what Mimiry can know of the provider's times and
/// records the rest as absorbed, so nothing the provider's record shows may be neither
/// charged nor absorbed. A job of an account that can pay (`can_pay`: a rich one, never near
/// its balance) must moreover be charged exactly the rule's seconds between the bounds it
/// recorded: only a job stopped by its balance (or budget) may leave its teardown unpaid.
fn billing_error(job: &Job, owed: Micros, can_pay: bool) -> (i64, i64) {
    let over = (job.charged_micros - owed.0).max(0);
    let mut short = (owed.0 - job.charged_micros - job.absorbed_micros).max(0);
    if can_pay {
        let by_rule = cost_of(job.price_per_hour(), job.billable_seconds(0)).0;
        short += (by_rule - job.charged_micros).max(0);
    }
    (over, short)
}

/// The ended jobs whose final event never reached the receiver. Late ones are waited for while
/// deliveries keep arriving: the local stack's one sender works through its backlog at moto's
/// pace (at 500 jobs it ran ~4 minutes behind the jobs). It gives up once nothing new arrived
/// for longer than the safety-net delay plus retries, or after 15 minutes in all.
async fn final_webhooks_missing(receiver: &Receiver, jobs: &HashMap<String, Job>) -> Vec<String> {
    let idle_limit =
        Duration::from_secs(WEBHOOK_SAFETY_NET_SECONDS.parse::<u64>().unwrap() * 6 + 30);
    let started = Instant::now();
    let (mut delivered, mut last_arrival) = (receiver.all().len(), Instant::now());
    loop {
        let missing: Vec<String> = jobs
            .values()
            .filter(|j| j.status.is_terminal())
            .filter(|j| {
                let wanted = format!("job.{}", j.status.as_str());
                !receiver.accepted_types(&j.job_id).contains(&wanted)
            })
            .map(|j| format!("{}: job.{} not received", j.job_id, j.status.as_str()))
            .collect();
        if missing.is_empty()
            || last_arrival.elapsed() >= idle_limit
            || started.elapsed() >= Duration::from_secs(900)
        {
            println!(
                "chaos: waited {:.0}s for the last webhooks ({} deliveries in all)",
                started.elapsed().as_secs_f64(),
                receiver.all().len()
            );
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now_delivered = receiver.all().len();
        if now_delivered > delivered {
            (delivered, last_arrival) = (now_delivered, Instant::now());
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// moto must isolate transactions and should not copy the whole table for each one (see
/// `chaos_support/moto_lock/sitecustomize.py`): the stack's moto server inherits this
/// process's environment, so `PYTHONPATH` brings the shim in. Set before any other thread of
/// this test binary runs.
fn install_moto_lock() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chaos_support/moto_lock");
    assert!(
        dir.join("sitecustomize.py").exists(),
        "{} is missing",
        dir.display()
    );
    let path = match std::env::var_os("PYTHONPATH") {
        Some(p) if !p.is_empty() => {
            let mut v = dir.into_os_string();
            v.push(":");
            v.push(p);
            v
        }
        _ => dir.into_os_string(),
    };
    std::env::set_var("PYTHONPATH", path);
}

#[test]
fn chaos() {
    install_moto_lock();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let started = Instant::now();
    let n: usize = env_num("CHAOS_JOBS", 60);
    let crash_percent: u32 = env_num("CHAOS_CRASH_PERCENT", 10);
    let seed: u64 = env_num(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    println!("chaos: seed={seed} jobs={n} crash_percent={crash_percent} (CHAOS_SEED={seed} repeats the test's own choices)");
    let mut rng = Rng(seed);

    let mut env: Vec<(String, String)> = TEST_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push((
        "MIMIRY_TEST_CRASH_PERCENT".into(),
        crash_percent.to_string(),
    ));
    env.push(("LOCAL_DUPLICATE_DELIVERIES".into(), "1".into()));
    let hold_seconds: u64 = env_num("CHAOS_HOLD_SECONDS", HOLD_SECONDS);
    println!("chaos: hold_seconds={hold_seconds} (CHAOS_HOLD_SECONDS)");
    env.push(("HOLD_SECONDS".into(), hold_seconds.to_string()));
    // Running jobs park (their next look is further off than PARK_AFTER): their looks come
    // from the reconciler's wake-ups and instance alerts, under the same crashes and faults.
    env.retain(|(k, _)| k != "RUNNING_POLL_SECONDS" && k != "PROVISIONING_POLL_SECONDS");
    env.push(("RUNNING_POLL_SECONDS".into(), RUNNING_POLL_SECONDS.into()));
    env.push((
        "PROVISIONING_POLL_SECONDS".into(),
        RUNNING_POLL_SECONDS.into(),
    ));
    env.push(("PARK_AFTER_SECONDS".into(), PARK_AFTER_SECONDS.into()));
    env.push(("PROVIDERS".into(), "datacrunch,lambda".into()));
    // One attempt more than DataCrunch has locations for the 8x A100, so that a job refused
    // at all three can still move to Lambda's.
    env.push(("MAX_DEPLOY_ATTEMPTS".into(), "4".into()));
    // A lost final webhook trigger is made up within seconds, not production's two minutes.
    env.push((
        "WEBHOOK_SAFETY_NET_SECONDS".into(),
        WEBHOOK_SAFETY_NET_SECONDS.into(),
    ));
    let stack = Arc::new(Stack::start(StackOptions {
        name: "chaos".into(),
        env,
        provision_ms: rng.range(500, 1000),
        execute: true,
    }));
    let store = stack.store().await;
    // The provider's real rate limits (the fake's defaults, which the stack turned off), or a
    // third of them (`CHAOS_RATE_LIMITS=low`): 60 jobs stay under the real ones.
    let limits = match std::env::var("CHAOS_RATE_LIMITS").as_deref() {
        Ok("low") => json!({"enabled": true, "project": 166, "endpoint": 20, "list": 40}),
        Ok("real") | Err(_) => json!({"enabled": true}),
        Ok(other) => panic!("CHAOS_RATE_LIMITS={other}: `real` (default) or `low`"),
    };
    let limits = stack
        .fake_admin(Method::POST, "/rate-limits", Some(limits))
        .await;
    assert_eq!(limits["enabled"], true, "rate limits on: {limits}");
    println!("chaos: provider rate limits {limits}");
    let fakes = Arc::new(fakes(&stack));
    // Lambda's launch limit, one per 2 s (see the module doc).
    let lambda_limits = fakes[1]
        .admin(
            Method::POST,
            "/rate-limits",
            Some(json!({"enabled": true, "endpoint": 1, "window_ms": 2000})),
        )
        .await;
    assert_eq!(lambda_limits["enabled"], true, "{lambda_limits}");
    println!("chaos: lambda launch limit {lambda_limits}");

    // Accounts: about one in six poor, one in five tight, the rest rich.
    let n_accounts = (n / 8).clamp(5, 40);
    let (n_poor, n_tight) = ((n_accounts / 6).max(1), (n_accounts / 5).max(1));
    let purses: Vec<Purse> = (0..n_accounts)
        .map(|i| {
            if i < n_poor {
                Purse::Poor
            } else if i < n_poor + n_tight {
                Purse::Tight
            } else {
                Purse::Rich
            }
        })
        .collect();
    let mut accounts = Vec::new();
    for purse in &purses {
        let micros: u64 = match purse {
            // The cheapest hold is 15 s of CPU.4V.16G at 0.132/h = 550 micros.
            Purse::Poor => rng.range(1, 400),
            // 0.02–0.06: about 35 s to 100 s of a 1A100 across all of the account's jobs.
            Purse::Tight => rng.range(20_000, 60_000),
            Purse::Rich => rng.range(50, 500) * 1_000_000,
        };
        accounts.push(
            stack
                .account(&format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000))
                .await,
        );
    }
    let accounts = Arc::new(accounts);
    let (receiver, receiver_url) = Receiver::start().await;
    for a in accounts.iter() {
        let answer = call(
            "POST",
            &stack.url("/webhooks"),
            Some(&a.key),
            Some(&json!({ "url": receiver_url, "events": ["*"] })),
        )
        .await;
        assert_eq!(answer.status, 201, "webhook endpoint: {answer:?}");
    }

    let window = Duration::from_secs((n as u64 / 10).clamp(8, 40));
    let plans = plan_jobs(n, &purses, window, &mut rng);
    let by_script = plans.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(format!("{:?}", p.script)).or_insert(0) += 1;
        m
    });
    println!(
        "chaos: {n_accounts} accounts, submitting over {}s: {by_script:?}",
        window.as_secs()
    );

    // A capacity outage at DataCrunch as the first jobs arrive: its next deploys are refused
    // (jobs of types only it sells fail `no_capacity` after their attempts), so that 8x A100
    // jobs move to Lambda's.
    let outage = (n as u64 / 4).max(6);
    fakes[0]
        .admin(
            Method::POST,
            "/faults",
            Some(json!({ "deploy_capacity_failures": outage })),
        )
        .await;
    *fakes[0]
        .book
        .lock()
        .unwrap()
        .asked
        .entry("deploy_capacity_failures")
        .or_default() += outage;

    // Faults, in a wave every 2–4 s, until the submissions are done and a while after.
    let faults_on = Arc::new(AtomicBool::new(true));
    let fault_task = {
        let (fakes, faults_on, mut rng) = (fakes.clone(), faults_on.clone(), rng.fork());
        tokio::spawn(async move {
            while faults_on.load(Ordering::Relaxed) {
                let fake = &fakes[rng.range(0, fakes.len() as u64 - 1) as usize];
                fault_wave(fake, &mut rng).await;
                tokio::time::sleep(Duration::from_millis(rng.range(2_000, 4_000))).await;
            }
        })
    };

    // Submit (and maybe cancel) every job from its own task.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let submitted = Arc::new(Mutex::new(Submitted::default()));
    let mut tasks = Vec::new();
    for plan in plans {
        let (stack, accounts, client, submitted) = (
            stack.clone(),
            accounts.clone(),
            client.clone(),
            submitted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(plan.submit_after).await;
            let key = &accounts[plan.account].key;
            match submit(&client, &stack, key, &plan).await {
                Ok(job_id) => {
                    submitted
                        .lock()
                        .unwrap()
                        .accepted
                        .insert(plan.index, (plan.account, job_id.clone(), plan.script));
                    if let Some(after) = plan.cancel_after {
                        tokio::time::sleep(after).await;
                        let answer = cancel(&client, &stack, key, &job_id).await;
                        let mut s = submitted.lock().unwrap();
                        s.cancels += 1;
                        match answer {
                            Ok(true) => {}
                            Ok(false) => s.cancels_too_late += 1,
                            Err(e) => s.cancel_failures.push(format!("{job_id}: {e}")),
                        }
                    }
                }
                Err((402, _)) => submitted.lock().unwrap().refused_credits += 1,
                Err(other) => submitted.lock().unwrap().other.push(other),
            }
        }));
    }

    // Faults stop 30 s after the last submission; then every job must end. Bounded twice: no
    // job may end for STALL (a stuck job), and the whole run has a cap that grows with N (the
    // local stack is one moto process on a shared machine: 500 jobs take a while).
    const STALL: Duration = Duration::from_secs(240);
    let faults_until = Instant::now() + window + Duration::from_secs(30);
    let cap = Instant::now() + window + Duration::from_secs(300 + 6 * n as u64);
    let (mut last_print, mut last_change, mut last_active) =
        (Instant::now(), Instant::now(), usize::MAX);
    let mut submissions_done = false;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if faults_on.load(Ordering::Relaxed) && Instant::now() >= faults_until {
            faults_on.store(false, Ordering::Relaxed);
        }
        if !submissions_done && tasks.iter().all(|t| t.is_finished()) {
            submissions_done = true;
        }
        let accepted: HashSet<String> = submitted
            .lock()
            .unwrap()
            .accepted
            .values()
            .map(|(_, id, _)| id.clone())
            .collect();
        // One query of the active-jobs index (moto answers any query by sorting the whole
        // table: listing every account's jobs each time would make the test moto's main load).
        let active_ids: HashSet<String> = store
            .active_jobs()
            .await
            .expect("reading the active-jobs index")
            .into_iter()
            .map(|j| j.job_id)
            .collect();
        let total_active = accepted
            .iter()
            .filter(|id| active_ids.contains(*id))
            .count();
        if total_active != last_active || !submissions_done {
            (last_active, last_change) = (total_active, Instant::now());
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            println!(
                "chaos: t={}s accepted={} active={total_active}",
                started.elapsed().as_secs(),
                accepted.len()
            );
        }
        if submissions_done && total_active == 0 && !faults_on.load(Ordering::Relaxed) {
            break;
        }
        if last_change.elapsed() >= STALL || Instant::now() >= cap {
            println!(
                "chaos: giving up with {total_active} jobs still active ({}s without one ending)",
                last_change.elapsed().as_secs()
            );
            break;
        }
    }
    faults_on.store(false, Ordering::Relaxed);
    fault_task.await.unwrap();
    for fake in fakes.iter() {
        stop_faults(fake).await;
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Give the reconciler a few cycles to sweep what finished jobs left behind (a crash
    // between create and persist, a cancel racing a deploy, the volume of an instance the
    // provider lost), then look: at least 3 cycles, at most 60 s (its sweeps stop for a run
    // when the provider's rate limit says so).
    let settle_start = Instant::now();
    let mut states: Vec<Value>;
    loop {
        tokio::time::sleep(RECONCILE_EVERY).await;
        states = Vec::new();
        for fake in fakes.iter() {
            states.push(fake.admin(Method::GET, "/state", None).await);
        }
        let waited = settle_start.elapsed();
        let clean = states.iter().all(|state| {
            let (instances, scripts, volumes) = leftovers(state);
            instances.is_empty() && scripts.is_empty() && volumes.is_empty()
        });
        if (clean && waited >= RECONCILE_EVERY * 3) || waited >= Duration::from_secs(60) {
            break;
        }
    }
    let now_ms = mimiry_shared::time::now_ms();

    // --- The figures -------------------------------------------------------------------------
    let submitted = std::mem::take(&mut *submitted.lock().unwrap());
    let jobs = jobs_by_id(&store, &accounts).await;
    let webhooks_missing = final_webhooks_missing(&receiver, &jobs).await;
    let stats = reqwest::get(stack.url("/__local/stats"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let duplicates = stats["duplicate_deliveries"].as_u64().unwrap_or(0);
    let crashes = stats["simulated_crashes"].as_u64().unwrap_or(0);
    let woken = stats["reconciler"]["woken"].as_u64().unwrap_or(0);
    let alerts = stats["reconciler"]["instance_alerts"].as_u64().unwrap_or(0);
    let books: Vec<(&str, FaultBook)> = fakes
        .iter()
        .map(|f| (f.name, std::mem::take(&mut *f.book.lock().unwrap())))
        .collect();
    let mut fired: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (_, book) in &books {
        for (k, v) in book.fired() {
            *fired.entry(k).or_default() += v;
        }
    }
    let faults: u64 = fired.values().sum();

    // Stuck: accepted jobs that did not end.
    let mut stuck = Vec::new();
    let mut wrong_endings = Vec::new();
    let mut messages: BTreeMap<String, usize> = BTreeMap::new();
    let mut endings: BTreeMap<String, usize> = BTreeMap::new();
    for (account, id, script) in submitted.accepted.values() {
        match jobs.get(id) {
            Some(j) if j.status.is_terminal() => {
                let ending = match j.failure_reason {
                    Some(r) => format!(
                        "failed:{}",
                        serde_json::to_value(r).unwrap().as_str().unwrap()
                    ),
                    None => j.status.as_str().to_string(),
                };
                *endings.entry(ending).or_default() += 1;
                if let Some(m) = &j.error_message {
                    // Ids and numbers vary; the message's shape is what is interesting.
                    let shape: String = m
                        .chars()
                        .map(|c| if c.is_ascii_digit() { '#' } else { c })
                        .collect();
                    *messages.entry(shape).or_default() += 1;
                }
                if *script == Script::Endless && j.status == JobStatus::Completed {
                    wrong_endings.push(format!("{id}: an endless script completed"));
                }
            }
            Some(j) => stuck.push(format!(
                "{id} (account {account}): {} {:?}",
                j.status.as_str(),
                j
            )),
            None => stuck.push(format!("{id} (account {account}): not in the store")),
        }
    }

    // Leaks at the providers, per provider and in all.
    let (mut leaked_instances, mut leaked_scripts, mut leaked_volumes) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut leaked_per_provider = Vec::new();
    for (fake, state) in fakes.iter().zip(&states) {
        let (instances, scripts, volumes) = leftovers(state);
        leaked_per_provider.push(format!(
            "leaked_instances_{}={}",
            fake.name,
            instances.len()
        ));
        let tag = |l: Vec<String>| l.into_iter().map(|x| format!("{}: {x}", fake.name));
        leaked_instances.extend(tag(instances));
        leaked_scripts.extend(tag(scripts));
        leaked_volumes.extend(tag(volumes));
    }
    let all_instances: Vec<&Value> = states
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap())
        .collect();

    // Money: per account, added = balance + held + charged with nothing held; the account's
    // totals agree with its jobs and with its ledger.
    let mut ledger_error: i64 = 0;
    let mut ledger_problems = Vec::new();
    for (i, a) in accounts.iter().enumerate() {
        let acc = store.get_account(&a.account_id).await.unwrap().unwrap();
        let account_jobs: Vec<&Job> = jobs
            .values()
            .filter(|j| j.account_id == a.account_id)
            .collect();
        let jobs_charged: i64 = account_jobs.iter().map(|j| j.charged_micros).sum();
        let jobs_held: i64 = account_jobs.iter().map(|j| j.hold_micros).sum();
        let ledger = store.ledger(&a.account_id).await.unwrap();
        let sum = |kind: &str| -> i64 {
            ledger
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.amount_micros)
                .sum()
        };
        let terms = [
            (
                "added - (balance + held + charged)",
                acc.added_micros - (acc.balance_micros + acc.held_micros + acc.charged_micros),
            ),
            ("held", acc.held_micros),
            ("held by jobs", jobs_held),
            (
                "charged - charged to jobs",
                acc.charged_micros - jobs_charged,
            ),
            ("ledger credits - added", sum("credit") - acc.added_micros),
            (
                "ledger charges - charged",
                sum("charge") - acc.charged_micros,
            ),
            (
                "ledger holds - releases - (held + charged)",
                sum("hold") - sum("release") - (acc.held_micros + acc.charged_micros),
            ),
            ("negative balance", acc.balance_micros.min(0)),
        ];
        for (what, v) in terms {
            if v != 0 {
                ledger_problems.push(format!(
                    "account {i} ({:?}) {}: {what} = {v}",
                    purses[i], a.account_id
                ));
                ledger_error += v.abs();
            }
        }
    }

    // Overcharges: no job charged for more than its instances lived. Instances by job, from
    // the hostname (Lambda's keep no owner tag), at either provider.
    let mut by_owner: HashMap<String, Vec<&Value>> = HashMap::new();
    for i in &all_instances {
        if let Some(job) = i["hostname"].as_str().and_then(job_id_of_name) {
            by_owner.entry(job.to_string()).or_default().push(*i);
        }
    }
    let mut overcharged = Vec::new();
    let (mut billing_error_micros, mut absorbed_total) = (0i64, 0i64);
    let (mut overbilled, mut unabsorbed) = (Vec::new(), Vec::new());
    let mut double_deploys = Vec::new();
    let mut charged_total = Micros::ZERO;
    let mut allowed_total = Micros::ZERO;
    for j in jobs.values() {
        let instances = by_owner.get(&j.job_id).cloned().unwrap_or_default();
        let allowed = allowed_charge(j, &instances, now_ms);
        charged_total = charged_total + Micros(j.charged_micros);
        absorbed_total += j.absorbed_micros;
        let owed = owed_by_rule(j, &instances, now_ms);
        let rich = accounts
            .iter()
            .position(|a| a.account_id == j.account_id)
            .is_some_and(|i| purses[i] == Purse::Rich);
        let (over, short) = billing_error(j, owed, rich);
        billing_error_micros += over + short;
        if over > 0 || short > 0 {
            let line = format!(
                "{}: charged {} absorbed {} owed by the rule {} (billed {:?} to {:?}, gone by {:?}, instance {:?}, {:?})",
                j.job_id,
                j.charged_micros,
                j.absorbed_micros,
                owed.0,
                j.deployed_at,
                j.instance_ended_at,
                j.instance_gone_by,
                j.instance_id,
                j.failure_reason
            );
            if over > 0 {
                overbilled.push(line);
            } else {
                unabsorbed.push(line);
            }
        }
        if j.charged_micros > allowed.0 {
            let lives: Vec<String> = instances
                .iter()
                .map(|i| {
                    format!(
                        "{} created {} deleted {} vanished {}",
                        i["id"].as_str().unwrap_or(""),
                        i["created_at_ms"],
                        i["deleted_at_ms"],
                        i["vanished_at_ms"]
                    )
                })
                .collect();
            overcharged.push(format!(
                "{}: charged {} > {} (job billed {:?} to {:?}, instance {:?}) for {lives:?}",
                j.job_id,
                j.charged_micros,
                allowed.0,
                j.deployed_at,
                j.instance_ended_at,
                j.instance_id
            ));
        }
        // Not an invariant of the line, but worth knowing: an instance deployed under a
        // hostname while another one of that hostname was still up (a deploy not adopted).
        for b in &instances {
            let born = b["created_at_ms"].as_i64().unwrap();
            let twin = instances.iter().any(|a| {
                a["id"] != b["id"]
                    && a["hostname"] == b["hostname"]
                    && a["created_at_ms"].as_i64().unwrap() < born
                    && [a["deleted_at_ms"].as_i64(), a["vanished_at_ms"].as_i64()]
                        .into_iter()
                        .flatten()
                        .min()
                        .is_none_or(|end| end > born)
            });
            if twin {
                double_deploys.push(format!(
                    "{} ({}) created while another instance of that hostname was up",
                    b["hostname"].as_str().unwrap_or(""),
                    b["id"].as_str().unwrap_or("")
                ));
            }
        }
        allowed_total = allowed_total + allowed;
    }

    // --- Report --------------------------------------------------------------------------------
    let instance_count = all_instances.len();
    println!(
        "chaos: accepted={} refused_402={} other_refusals={:?} cancels={} (too late: {}) endings={endings:?}",
        submitted.accepted.len(),
        submitted.refused_credits,
        submitted.other,
        submitted.cancels,
        submitted.cancels_too_late
    );
    println!("chaos: error messages: {messages:?}");
    for (name, book) in &books {
        println!(
            "chaos: faults at {name} asked={:?} direct={:?} left_unfired={:?} fired={:?}",
            book.asked,
            book.direct,
            book.remaining,
            book.fired()
        );
    }
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    let mut moved = 0;
    for j in jobs.values() {
        if j.instance_id.is_some() || !j.attempt_log.is_empty() {
            *placed.entry(j.provider.clone()).or_default() += 1;
        }
        if j.attempt_log.iter().any(|a| a.provider != j.provider) {
            moved += 1;
        }
    }
    println!("chaos: jobs by last provider {placed:?}, moved across providers {moved}");
    println!(
        "chaos: messages={} instances_created={instance_count} double_deploys={} charged_total={charged_total} instance_time_value={allowed_total} elapsed={}s",
        stats["messages"],
        double_deploys.len(),
        started.elapsed().as_secs()
    );
    for (what, list) in [
        ("stuck job", &stuck),
        ("leaked instance", &leaked_instances),
        ("leaked script", &leaked_scripts),
        ("leaked volume", &leaked_volumes),
        ("ledger", &ledger_problems),
        ("overcharged job", &overcharged),
        ("overbilled job", &overbilled),
        ("billed short and not absorbed", &unabsorbed),
        ("double deploy", &double_deploys),
        ("wrong ending", &wrong_endings),
        ("final webhook missing", &webhooks_missing),
        ("cancel failure", &submitted.cancel_failures),
    ] {
        for line in list.iter().take(20) {
            println!("chaos: {what}: {line}");
        }
    }
    for (fake, state) in fakes.iter().zip(&states) {
        println!(
            "chaos: {} requests={} rate_limited={} (429s answered by the fake) deprecated_calls={}",
            fake.name,
            state["requests"]["total"],
            state["rate_limited"],
            state["conformance"]["deprecated_calls"]
        );
    }
    println!(
        "chaos: jobs={n} hold_seconds={hold_seconds} faults={faults} duplicates={duplicates} crashes={crashes} parked_wakeups={woken} instance_alerts={alerts} stuck={} leaked_instances={} {} leaked_scripts={} leaked_volumes={} ledger_error_micros={ledger_error} overcharged_jobs={} billing_error_micros={billing_error_micros} overbilled_jobs={} absorbed_micros={absorbed_total} webhooks_final_missing={}",
        stuck.len(),
        leaked_instances.len(),
        leaked_per_provider.join(" "),
        leaked_scripts.len(),
        // Every volume the fake still holds, trash included.
        leaked_volumes.len(),
        overcharged.len(),
        overbilled.len(),
        webhooks_missing.len()
    );

    assert!(stuck.is_empty(), "{} jobs did not end", stuck.len());
    assert!(
        leaked_instances.is_empty(),
        "{} instances left at the provider",
        leaked_instances.len()
    );
    assert!(
        leaked_scripts.is_empty(),
        "{} scripts left at the provider",
        leaked_scripts.len()
    );
    assert!(
        leaked_volumes.is_empty(),
        "{} volumes left at the provider",
        leaked_volumes.len()
    );
    for (fake, state) in fakes.iter().zip(&states) {
        assert_eq!(
            state["leaked_volumes"].as_u64(),
            Some(0),
            "{}: the fake's own count agrees",
            fake.name
        );
    }
    assert_eq!(ledger_error, 0, "the money does not add up");
    assert_eq!(
        billing_error_micros, 0,
        "charges differ from the billing rule applied to the provider's records"
    );
    assert!(
        overbilled.is_empty(),
        "{} jobs charged more than the billing rule says",
        overbilled.len()
    );
    assert!(
        overcharged.is_empty(),
        "{} jobs charged for time their instance did not live",
        overcharged.len()
    );
    assert!(
        webhooks_missing.is_empty(),
        "{} ended jobs' final webhook never arrived",
        webhooks_missing.len()
    );
    assert!(
        !submitted.accepted.is_empty() && faults > 0 && duplicates > 0,
        "the chaos did not happen"
    );
    if crash_percent > 0 {
        assert!(crashes > 0, "no simulated crash happened");
    }
    // A job that ran for three looks' time was parked between them and needed the reconciler
    // to wake it. A run of poor accounts under production's hour-long hold may accept only a
    // few jobs, none of them running that long: then there was nothing to wake.
    let poll_ms = RUNNING_POLL_SECONDS.parse::<i64>().unwrap() * 1000;
    let long_runners = jobs
        .values()
        .filter(|j| match (j.started_at, j.finished_at) {
            (Some(start), Some(end)) => end - start >= 3 * poll_ms,
            _ => false,
        })
        .count();
    println!("chaos: jobs running three looks or longer: {long_runners}");
    if long_runners > 0 {
        assert!(woken > 0, "no parked job was woken by the reconciler");
    }
}
