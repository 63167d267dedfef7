//! Helpers for the batch-job tests: submitting, watching a job with bounded polling (and its
//! status history for failure messages), reading the fake provider's view of a job, money.

use mimiry_shared::money::Micros;
use mimiry_shared::store::accounts::Account;
pub use mimiry_tests::add_ssh_key;
use mimiry_tests::{call, record_secret, Answer, Stack, StackOptions, TEST_ENV};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The cheapest type of the fake's catalog (0.12/h at the provider), runnable everywhere.
pub const CHEAP_TYPE: &str = "CPU.4V.16G";
/// An image a CPU type may boot (CUDA images may not).
pub const CHEAP_IMAGE: &str = "ubuntu-22.04";

/// How often a job is polled.
pub const POLL: Duration = Duration::from_millis(250);
/// The default bound of a wait for a job that only has to provision and run a short script.
pub const SHORT: Duration = Duration::from_secs(60);

/// A stack of its own for a test that injects faults or needs other timers: `TEST_ENV` with
/// `overrides` applied.
pub fn own_stack(name: &str, overrides: &[(&str, &str)], provision_ms: u64) -> Stack {
    let mut env: Vec<(String, String)> = TEST_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in overrides {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    let started = Instant::now();
    let stack = Stack::start(StackOptions {
        name: name.into(),
        env,
        provision_ms,
        execute: true,
    });
    println!("[{name}] own stack started in {:?}", started.elapsed());
    stack
}

/// A job of the cheap type in `location` running `script`.
pub fn cheap_job(location: Option<&str>, script: &str) -> Value {
    let mut body = json!({
        "instance_type": CHEAP_TYPE,
        "image": CHEAP_IMAGE,
        "startup_script": script,
        "auto_shutdown": true,
    });
    if let Some(l) = location {
        body["location"] = json!(l);
    }
    body
}

pub async fn submit(stack: &Stack, api_key: &str, body: &Value) -> Answer {
    call("POST", &stack.url("/jobs"), Some(api_key), Some(body)).await
}

/// Submits and insists on a 201; answers the job id.
pub async fn submit_ok(stack: &Stack, api_key: &str, body: &Value) -> String {
    let answer = submit(stack, api_key, body).await;
    assert_eq!(answer.status, 201, "POST /jobs {body}: {answer:?}");
    assert_eq!(answer.body["status"], "queued", "{answer:?}");
    answer.body["id"].as_str().expect("job id").to_string()
}

pub async fn get_job(stack: &Stack, api_key: &str, id: &str) -> Answer {
    call(
        "GET",
        &stack.url(&format!("/jobs/{id}")),
        Some(api_key),
        None,
    )
    .await
}

pub async fn cancel(stack: &Stack, api_key: &str, id: &str) -> Answer {
    call(
        "DELETE",
        &stack.url(&format!("/jobs/{id}")),
        Some(api_key),
        None,
    )
    .await
}

/// What a bounded wait saw.
pub struct Seen {
    /// The last `GET /jobs/{id}` body, the one that satisfied the condition.
    pub job: Value,
    /// Distinct statuses in the order they were seen (consecutive repeats collapsed).
    pub history: Vec<String>,
    pub elapsed: Duration,
}

impl Seen {
    /// Asserts the job ended with `status` and `failure_reason` (null when `None`).
    pub fn assert_ended(&self, status: &str, reason: Option<&str>) {
        assert_eq!(
            (
                self.job["status"].as_str(),
                self.job["failure_reason"].as_str()
            ),
            (Some(status), reason),
            "statuses seen: {:?}; job: {:#}",
            self.history,
            self.job
        );
    }
}

/// Polls `GET /jobs/{id}` every 250 ms until `done(job)` holds, for at most `limit`; panics with
/// the status history and the last body otherwise.
pub async fn wait_until(
    stack: &Stack,
    api_key: &str,
    id: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Seen {
    let started = Instant::now();
    let mut history: Vec<String> = Vec::new();
    loop {
        let answer = get_job(stack, api_key, id).await;
        assert_eq!(
            answer.status, 200,
            "GET /jobs/{id} while waiting for {what}: {answer:?}"
        );
        let status = answer.body["status"].as_str().unwrap_or("?").to_string();
        if history.last() != Some(&status) {
            history.push(status);
        }
        if done(&answer.body) {
            return Seen {
                job: answer.body,
                history,
                elapsed: started.elapsed(),
            };
        }
        if started.elapsed() > limit {
            panic!(
                "job {id}: gave up waiting for {what} after {:?}; statuses seen: {history:?}; last: {:#}",
                started.elapsed(),
                answer.body
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

pub fn is_terminal(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

pub async fn wait_terminal(stack: &Stack, api_key: &str, id: &str, limit: Duration) -> Seen {
    wait_until(stack, api_key, id, "a final status", limit, is_terminal).await
}

pub async fn wait_status(
    stack: &Stack,
    api_key: &str,
    id: &str,
    status: &str,
    limit: Duration,
) -> Seen {
    let seen = wait_until(stack, api_key, id, status, limit, |j| {
        j["status"] == status || is_terminal(j)
    })
    .await;
    assert_eq!(
        seen.job["status"], status,
        "job {id} ended before reaching {status}: {:?} {:#}",
        seen.history, seen.job
    );
    seen
}

/// `GET /admin/state` of the stack's fake provider.
pub async fn fake_state(stack: &Stack) -> Value {
    stack.fake_admin(reqwest::Method::GET, "/state", None).await
}

/// The fake's instances deployed for `job_id` (hostname `mimiry-{job}-{attempt}`), oldest first.
pub fn instances_of(state: &Value, job_id: &str) -> Vec<Value> {
    let prefix = format!("mimiry-{job_id}-");
    state["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["hostname"]
                .as_str()
                .is_some_and(|h| h.starts_with(&prefix))
        })
        .cloned()
        .collect()
}

/// The fake's startup scripts made for `job_id` (named `mimiry-{job}.{account}`).
pub fn scripts_of(state: &Value, job_id: &str) -> Vec<Value> {
    state["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.contains(job_id)))
        .cloned()
        .collect()
}

/// How many `/v1` requests the fake answered on `route` (`"POST /v1/instances"`, …).
pub fn requests(state: &Value, route: &str) -> u64 {
    state["requests"]["by_route"][route].as_u64().unwrap_or(0)
}

/// An amount the API shows (`"0.000367"`, `"-1.50"`) in micros.
pub fn micros(shown: &Value) -> i64 {
    let s = shown
        .as_str()
        .unwrap_or_else(|| panic!("not an amount: {shown}"));
    match s.strip_prefix('-') {
        Some(abs) => -Micros::parse_decimal(abs).unwrap().0,
        None => Micros::parse_decimal(s).unwrap().0,
    }
}

pub async fn account_of(stack: &Stack, account_id: &str) -> Account {
    stack
        .store()
        .await
        .get_account(account_id)
        .await
        .unwrap()
        .expect("the account exists")
}

/// `credits added = balance + held + charged`, nothing negative, nothing charged beyond what was
/// added.
pub fn assert_books_balance(account: &Account, what: &str) {
    assert!(
        account.balance_micros >= 0,
        "{what}: negative balance {account:?}"
    );
    assert!(
        account.held_micros >= 0,
        "{what}: negative hold {account:?}"
    );
    assert!(
        account.charged_micros <= account.added_micros,
        "{what}: charged more than added {account:?}"
    );
    assert_eq!(
        account.balance_micros + account.held_micros + account.charged_micros,
        account.added_micros,
        "{what}: balance + held + charged != added: {account:?}"
    );
}

/// The report token the worker baked into the job's wrapper script, read from the script the
/// fake (execute mode) wrote to the instance's work directory. Recorded for the log audit.
pub async fn report_token(stack: &Stack, job_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let dir = loop {
        let state = fake_state(stack).await;
        let instance = instances_of(&state, job_id)
            .pop()
            .unwrap_or_else(|| panic!("no instance for job {job_id}"));
        if let Some(dir) = instance["script_process"]["work_dir"].as_str() {
            break dir.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the script of job {job_id} never started: {instance:#}"
        );
        tokio::time::sleep(POLL).await;
    };
    let script = std::fs::read_to_string(std::path::Path::new(&dir).join("startup.sh")).unwrap();
    let line = script
        .lines()
        .find(|l| l.contains("Authorization: Bearer "))
        .unwrap_or_else(|| panic!("no report token in the wrapper of job {job_id}"));
    let token = line
        .split("Authorization: Bearer ")
        .nth(1)
        .unwrap()
        .trim_end_matches(['\'', ' ', '\\'])
        .to_string();
    record_secret(&token);
    token
}
