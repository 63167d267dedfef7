//! Batch jobs end to end over HTTP (user guide §9–§12, design §4–§5): submit, watch, list,
//! cancel, report, money, and the provider's faults — against moto, the fake DataCrunch in
//! execute mode (the wrapper script really runs with bash) and the local server.
//!
//! Tests that inject provider faults or need other timers start a stack of their own; faults are
//! global to a stack and the tests of this binary run in parallel.

mod jobs_support;

use jobs_support::*;
use mimiry_shared::jobs::model::cost_of;
use mimiry_shared::jobs::JobStatus;
use mimiry_shared::money::Micros;
use mimiry_tests::{call, send, Stack};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const GUIDE_SCRIPT: &str = "#!/bin/bash\nnvidia-smi\necho \"Hello from Mimiry!\"";

/// Guide §9 exactly as written, then §10: watch it to `completed`, list it, and check the money
/// and the provider side.
#[tokio::test]
async fn guide_example_job_runs_to_completion() {
    let stack = Stack::shared();
    let account = stack.account("100").await;
    let ssh_key_id = add_ssh_key(stack, &account.key).await;
    let body = json!({
        "name": "my-first-job",
        "instance_type": "1V100.6V",
        "image": "ubuntu-22.04-cuda-12.0",
        "location": "FIN-01",
        "ssh_key_ids": [ssh_key_id],
        "startup_script": GUIDE_SCRIPT,
        "auto_shutdown": true
    });
    let submitted_at = Instant::now();
    let answer = submit(stack, &account.key, &body).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let fields: BTreeSet<&str> = answer
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "id",
        "name",
        "status",
        "instance_type",
        "image",
        "location",
        "created_at",
    ]
    .into_iter()
    .collect();
    assert_eq!(
        fields, expected,
        "the guide's response fields exactly: {:#}",
        answer.body
    );
    let id = answer.body["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "id is a UUID: {id}");
    assert_eq!(answer.body["name"], "my-first-job");
    assert_eq!(answer.body["status"], "queued");
    assert_eq!(answer.body["instance_type"], "1V100.6V");
    assert_eq!(answer.body["image"], "ubuntu-22.04-cuda-12.0");
    assert_eq!(answer.body["location"], "FIN-01");
    let created_at = answer.body["created_at"].as_str().unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(created_at).expect("created_at is RFC 3339");
    assert!(
        (chrono::Utc::now() - created.with_timezone(&chrono::Utc))
            .num_seconds()
            .abs()
            < 60,
        "{created_at}"
    );

    let seen = wait_terminal(stack, &account.key, &id, SHORT).await;
    let job = &seen.job;
    println!(
        "guide job: statuses {:?}, completed {:?} after submit",
        seen.history,
        submitted_at.elapsed()
    );
    assert_eq!(
        seen.history.first().map(String::as_str),
        Some("queued"),
        "{:?}",
        seen.history
    );
    assert!(
        seen.history
            .iter()
            .any(|s| s == "provisioning" || s == "running"),
        "provisioning or running must be seen on the way: {:?}",
        seen.history
    );
    // Only forward moves along the guide's lifecycle.
    let order = ["queued", "provisioning", "running", "completed"];
    let ranks: Vec<usize> = seen
        .history
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap_or(99))
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] < w[1]) && ranks.iter().all(|r| *r < 99),
        "{:?}",
        seen.history
    );
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["exit_code"], 0, "{job:#}");
    let output = job["output_tail"].as_str().unwrap_or_default();
    assert!(
        output.contains("Hello from Mimiry!"),
        "output_tail: {output:?}"
    );
    assert!(
        output.contains("NVIDIA-SMI") && output.contains("V100"),
        "nvidia-smi ran first: {output:?}"
    );
    assert_eq!(job["failure_reason"], Value::Null);
    assert_eq!(job["error_message"], Value::Null);
    assert_eq!(job["location"], "FIN-01");
    assert_eq!(job["ssh_key_ids"], json!([ssh_key_id]));
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["held_credits"], "0.00");
    assert!(
        job["started_at"].is_string() && job["finished_at"].is_string(),
        "{job:#}"
    );

    // §10: the list has it, newest first (a second job makes "first" mean something).
    let second = submit_ok(stack, &account.key, &cheap_job(Some("FIN-01"), "true")).await;
    let list = call("GET", &stack.url("/jobs"), Some(&account.key), None).await;
    assert_eq!(list.status, 200, "{list:?}");
    let ids: Vec<&str> = list.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![second.as_str(), id.as_str()], "newest first");
    assert_eq!(list.body["jobs"][1]["status"], "completed");
    assert_eq!(list.body["next_cursor"], Value::Null);
    let second_job = wait_terminal(stack, &account.key, &second, SHORT).await.job;
    assert_eq!(second_job["status"], "completed", "{second_job:#}");

    // Money: the cost is what the account was charged; the books balance; nothing stays held.
    let cost = micros(&job["cost"]);
    let second_cost = micros(&second_job["cost"]);
    assert!(cost > 0, "a job that ran costs something: {job:#}");
    let acc = account_of(stack, &account.account_id).await;
    assert_books_balance(&acc, "after the guide job");
    assert_eq!(acc.added_micros, 100_000_000);
    assert_eq!(acc.held_micros, 0, "no hold left after the end: {acc:?}");
    assert_eq!(
        acc.charged_micros,
        cost + second_cost,
        "charged = the jobs' costs: {acc:?}"
    );
    let shown = call("GET", &stack.url("/account"), Some(&account.key), None).await;
    assert_eq!(
        micros(&shown.body["balance"]),
        100_000_000 - cost - second_cost,
        "{shown:?}"
    );
    assert_eq!(shown.body["held_credits"], "0.00");
    let ledger = stack
        .store()
        .await
        .ledger(&account.account_id)
        .await
        .unwrap();
    let charged_for_job: i64 = ledger
        .iter()
        .filter(|e| e.kind == "charge" && e.job_id.as_deref() == Some(id.as_str()))
        .map(|e| e.amount_micros)
        .sum();
    assert_eq!(
        charged_for_job, cost,
        "ledger charges of the job: {ledger:?}"
    );

    // The billed life is the instance's life at the provider, never more.
    let stored = stack
        .store()
        .await
        .get_job(&account.account_id, &id)
        .await
        .unwrap()
        .unwrap();
    let state = fake_state(stack).await;
    let instances = instances_of(&state, &id);
    assert_eq!(instances.len(), 1, "one instance: {instances:#?}");
    let instance = &instances[0];
    assert_eq!(
        instance["deleted"], true,
        "the instance is deleted: {instance:#}"
    );
    assert_eq!(instance["location"], "FIN-01");
    assert_eq!(instance["instance_type"], "1V100.6V");
    assert_eq!(
        instance["ssh_key_ids"].as_array().map(Vec::len),
        Some(1),
        "the SSH key was attached: {instance:#}"
    );
    assert!(
        scripts_of(&state, &id).is_empty(),
        "the startup script is deleted: {}",
        state["scripts"]
    );
    let billed = stored.billable_seconds(0);
    assert_eq!(
        cost,
        cost_of(Micros(stored.price_per_hour_micros), billed).0
    );
    let life_ms =
        instance["deleted_at_ms"].as_i64().unwrap() - instance["created_at_ms"].as_i64().unwrap();
    assert!(
        billed * 1000 <= life_ms,
        "billed {billed} s for a {life_ms} ms life"
    );
    assert_eq!(stored.status, JobStatus::Completed);

    // Platform latency, for the report.
    let report = stored.report.as_ref().expect("the instance reported");
    let script_started = instance["script_process"]["started_at_ms"]
        .as_i64()
        .unwrap();
    println!(
        "latency: submit→deploy {} ms; provider running→job running {} ms; report→completed {} ms; submit→completed {} ms",
        instance["created_at_ms"].as_i64().unwrap() - stored.created_at,
        stored.started_at.unwrap() - script_started,
        stored.finished_at.unwrap() - report.reported_at,
        stored.finished_at.unwrap() - stored.created_at,
    );
    println!(
        "provider calls so far on the shared stack: GET /v1/instances/{{id}} = {}",
        requests(&state, "GET /v1/instances/{id}")
    );
}
