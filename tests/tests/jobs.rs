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

/// A script that exits 3 fails the job with its exit code; a finished job cannot be cancelled.
#[tokio::test]
async fn a_failing_script_fails_the_job_with_its_exit_code() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let script = "#!/bin/bash\necho about to fail\nexit 3";
    let id = submit_ok(stack, &account.key, &cheap_job(Some("FIN-01"), script)).await;
    let seen = wait_terminal(stack, &account.key, &id, SHORT).await;
    let job = &seen.job;
    assert_eq!(job["status"], "failed", "{:?} {job:#}", seen.history);
    assert_eq!(job["failure_reason"], "script_failed", "{job:#}");
    assert_eq!(job["exit_code"], 3, "{job:#}");
    let message = job["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains('3'),
        "error_message names the exit code: {message:?}"
    );
    assert!(
        job["output_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("about to fail"),
        "{job:#}"
    );

    let acc = account_of(stack, &account.account_id).await;
    assert_books_balance(&acc, "after a failed job");
    assert_eq!(acc.held_micros, 0);
    assert_eq!(acc.charged_micros, micros(&job["cost"]));
    let state = fake_state(stack).await;
    assert!(
        instances_of(&state, &id)
            .iter()
            .all(|i| i["deleted"] == true),
        "{state:#}"
    );
    assert!(scripts_of(&state, &id).is_empty());

    let answer = cancel(stack, &account.key, &id).await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.body["code"], "job_finished");
    assert!(
        answer.error().contains("failed"),
        "the 409 names the status: {answer:?}"
    );
}

/// `name` omitted → `job-<short id>`; `location` omitted → a location that has the type.
#[tokio::test]
async fn name_and_location_have_defaults() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let body = json!({ "instance_type": "1V100.6V", "image": "ubuntu-22.04-cuda-12.0", "startup_script": "echo hi" });
    let answer = submit(stack, &account.key, &body).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let id = answer.body["id"].as_str().unwrap().to_string();
    let name = answer.body["name"].as_str().unwrap();
    let short = name
        .strip_prefix("job-")
        .unwrap_or_else(|| panic!("default name {name:?}"));
    assert_eq!(short.len(), 8, "{name:?}");
    assert!(short.chars().all(|c| c.is_ascii_hexdigit()), "{name:?}");
    assert!(
        id.replace('-', "").contains(short),
        "the short id comes from the job id {id}: {name:?}"
    );
    assert_eq!(
        answer.body["location"],
        Value::Null,
        "no location was asked: {:#}",
        answer.body
    );

    let other = submit_ok(stack, &account.key, &body).await;
    let other_name = get_job(stack, &account.key, &other).await.body["name"].clone();
    assert_ne!(
        other_name,
        json!(name),
        "two unnamed jobs get different names"
    );

    let availability = call(
        "GET",
        &stack.url("/availability?instance_type=1V100.6V"),
        Some(&account.key),
        None,
    )
    .await;
    assert_eq!(availability.status, 200, "{availability:?}");
    let with_type: Vec<String> = availability.body["availability"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["instance_types"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "1V100.6V")
        })
        .map(|a| a["location"].as_str().unwrap().to_string())
        .collect();
    assert!(!with_type.is_empty());
    for job_id in [&id, &other] {
        let seen = wait_terminal(stack, &account.key, job_id, SHORT).await;
        assert_eq!(
            seen.job["status"], "completed",
            "{:?} {:#}",
            seen.history, seen.job
        );
        let location = seen.job["location"]
            .as_str()
            .expect("the location used is shown");
        assert!(
            with_type.iter().any(|l| l == location),
            "{location} is not one of {with_type:?}"
        );
        assert_eq!(seen.job["requested_location"], Value::Null);
        let state = fake_state(stack).await;
        let instances = instances_of(&state, job_id);
        assert_eq!(instances.len(), 1, "{instances:#?}");
        assert_eq!(instances[0]["location"], location);
    }
}

/// Cancel while queued: 200 `cancelled` at once, the hold released, nothing ever deployed.
///
/// To keep the job queued deterministically, this stack's provider answers slowly: the API's
/// catalog cache is warmed first (a submit refused for credits), so the submit itself needs no
/// provider call, while the worker's first look at availability takes seconds.
#[tokio::test]
async fn cancelling_a_queued_job_is_immediate() {
    let started = Instant::now();
    let stack = own_stack(
        "jobs-cancel-queued",
        &[
            ("PROVIDER_TIMEOUT_MS", "20000"),
            ("CATALOG_TTL_SECONDS", "600"),
        ],
        1000,
    );
    let broke = stack.account("0").await;
    let account = stack.account("10").await;
    let warm = submit(&stack, &broke.key, &cheap_job(None, "true")).await;
    assert_eq!(warm.status, 402, "{warm:?}");
    stack
        .fake_admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({ "slow_ms": 4000 })),
        )
        .await;

    let submitted = Instant::now();
    let id = submit_ok(
        &stack,
        &account.key,
        &cheap_job(None, "echo this must never run"),
    )
    .await;
    let hold = account_of(&stack, &account.account_id).await.held_micros;
    assert!(hold > 0, "the submit took a hold");
    let answer = cancel(&stack, &account.key, &id).await;
    let cancel_latency = submitted.elapsed();
    assert_eq!(
        answer.status, 200,
        "a queued job is cancelled at once: {answer:?}"
    );
    assert_eq!(answer.body["status"], "cancelled", "{answer:?}");
    assert_eq!(answer.body["held_credits"], "0.00");
    assert_eq!(answer.body["cost"], "0.00");
    assert_eq!(
        answer.body["cancel_requested"], false,
        "nothing is pending any more"
    );
    assert!(
        answer.body["error_message"].is_string() && answer.body["finished_at"].is_string(),
        "{answer:?}"
    );

    let acc = account_of(&stack, &account.account_id).await;
    assert_books_balance(&acc, "after cancelling a queued job");
    assert_eq!(
        (acc.balance_micros, acc.held_micros, acc.charged_micros),
        (10_000_000, 0, 0),
        "hold released: {acc:?}"
    );
    let ledger = stack
        .store()
        .await
        .ledger(&account.account_id)
        .await
        .unwrap();
    let of_job: Vec<(&str, i64)> = ledger
        .iter()
        .filter(|e| e.job_id.as_deref() == Some(id.as_str()))
        .map(|e| (e.kind.as_str(), e.amount_micros))
        .collect();
    assert_eq!(
        of_job,
        vec![("hold", hold), ("release", hold)],
        "{ledger:?}"
    );

    // Let the worker finish its slow look (the provider delays it by 4 s), then make sure it did
    // nothing with the cancelled job.
    let deadline = Instant::now() + Duration::from_secs(20);
    while requests(&fake_state(&stack).await, "GET /v1/instance-availability") == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker never looked at availability"
        );
        tokio::time::sleep(POLL).await;
    }
    stack
        .fake_admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({ "slow_ms": 0 })),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let job = get_job(&stack, &account.key, &id).await.body;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    let state = fake_state(&stack).await;
    assert!(
        instances_of(&state, &id).is_empty(),
        "a cancelled queued job deploys nothing: {state:#}"
    );
    assert!(
        scripts_of(&state, &id).is_empty(),
        "nor creates a script: {state:#}"
    );
    assert_eq!(
        requests(&state, "POST /v1/instances"),
        0,
        "{:#}",
        state["requests"]
    );
    let acc_after = account_of(&stack, &account.account_id).await;
    assert_eq!(acc_after.balance_micros, 10_000_000, "{acc_after:?}");

    let again = cancel(&stack, &account.key, &id).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.error(), "Job is already cancelled");
    println!(
        "cancel queued: cancelled {cancel_latency:?} after submit; test took {:?}",
        started.elapsed()
    );
}

/// Cancel while provisioning: 202, the job stays `provisioning` (cancel requested) while the
/// provider refuses to delete a booting instance, then the instance is deleted and the job is
/// `cancelled`. A second cancel meanwhile is a harmless 202.
#[tokio::test]
async fn cancelling_a_provisioning_job_deletes_its_instance_once_the_provider_allows() {
    let started = Instant::now();
    let stack = own_stack("jobs-cancel-provisioning", &[], 8000);
    let account = stack.account("10").await;
    let id = submit_ok(
        &stack,
        &account.key,
        &cheap_job(Some("FIN-01"), "#!/bin/bash\nsleep 60"),
    )
    .await;
    wait_status(&stack, &account.key, &id, "provisioning", SHORT).await;
    let state = fake_state(&stack).await;
    let instance = instances_of(&state, &id).pop().expect("deployed");
    assert_ne!(
        instance["status"], "running",
        "still booting at the provider: {instance:#}"
    );
    let puts_before = requests(&state, "PUT /v1/instances");

    let cancelled_at = chrono::Utc::now().timestamp_millis();
    let answer = cancel(&stack, &account.key, &id).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.body["status"], "provisioning", "{answer:?}");
    assert_eq!(answer.body["cancel_requested"], true, "{answer:?}");
    let (again, and_again) = tokio::join!(
        cancel(&stack, &account.key, &id),
        cancel(&stack, &account.key, &id)
    );
    for a in [&again, &and_again] {
        assert_eq!(a.status, 202, "cancelling twice is fine: {a:?}");
        assert_eq!(a.body["cancel_requested"], true);
    }

    // While the provider refuses the delete the job must not claim to be cancelled.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job = get_job(&stack, &account.key, &id).await.body;
    let state = fake_state(&stack).await;
    let instance = instances_of(&state, &id).pop().unwrap();
    if instance["deleted"] == false {
        assert_eq!(
            job["status"], "provisioning",
            "not cancelled before the instance is deleted: {job:#}"
        );
        assert_eq!(job["cancel_requested"], true);
    }
    let seen = wait_terminal(&stack, &account.key, &id, SHORT).await;
    assert_eq!(
        seen.job["status"], "cancelled",
        "{:?} {:#}",
        seen.history, seen.job
    );
    assert_eq!(seen.job["failure_reason"], Value::Null);
    assert_eq!(seen.job["cancel_requested"], false);

    let state = fake_state(&stack).await;
    let instance = instances_of(&state, &id).pop().unwrap();
    assert_eq!(
        instance["deleted"], true,
        "the instance was deleted: {instance:#}"
    );
    assert!(scripts_of(&state, &id).is_empty(), "{state:#}");
    let deleted_at = instance["deleted_at_ms"].as_i64().unwrap();
    let puts = requests(&state, "PUT /v1/instances") - puts_before;
    assert!(
        puts >= 2,
        "the delete was refused at least once before it was accepted ({puts} delete calls)"
    );
    let stored = stack
        .store()
        .await
        .get_job(&account.account_id, &id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.finished_at.unwrap() >= deleted_at,
        "cancelled only after the delete: {stored:?}"
    );
    println!(
        "cancel provisioning: delete accepted {} ms after the cancel, after {puts} delete calls; cancelled {} ms after the cancel",
        deleted_at - cancelled_at,
        stored.finished_at.unwrap() - cancelled_at
    );

    let acc = account_of(&stack, &account.account_id).await;
    assert_books_balance(&acc, "after cancelling a provisioning job");
    assert_eq!(acc.held_micros, 0);
    assert_eq!(acc.charged_micros, micros(&seen.job["cost"]));
    assert_eq!(
        acc.charged_micros,
        cost_of(
            Micros(stored.price_per_hour_micros),
            stored.billable_seconds(0)
        )
        .0
    );
    let life_ms = deleted_at - instance["created_at_ms"].as_i64().unwrap();
    assert!(
        stored.billable_seconds(0) * 1000 <= life_ms,
        "billed no longer than the instance lived"
    );
    println!("cancel provisioning: test took {:?}", started.elapsed());
}

/// Cancel while running: the instance is deleted (its script killed) and the job is charged for
/// the instance's life only. Another account cannot see or cancel it; a finished job is a 409.
#[tokio::test]
async fn cancelling_a_running_job_deletes_its_instance_and_charges_its_life_only() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let stranger = stack.account("10").await;
    let script = "#!/bin/bash\necho started\nsleep 60\necho never";
    let id = submit_ok(stack, &account.key, &cheap_job(Some("FIN-01"), script)).await;
    wait_status(stack, &account.key, &id, "running", SHORT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    for method in ["GET", "DELETE"] {
        let answer = call(
            method,
            &stack.url(&format!("/jobs/{id}")),
            Some(&stranger.key),
            None,
        )
        .await;
        assert_eq!(
            answer.status, 404,
            "{method} of another account's job: {answer:?}"
        );
        assert_eq!(answer.error(), "Job not found");
    }
    let unknown = uuid::Uuid::now_v7();
    let answer = cancel(stack, &account.key, &unknown.to_string()).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    assert_eq!(cancel(stack, &account.key, "not-a-uuid").await.status, 404);
    assert_eq!(
        get_job(stack, &account.key, &id).await.body["status"],
        "running",
        "untouched by the stranger"
    );

    let answer = cancel(stack, &account.key, &id).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.body["cancel_requested"], true);
    let again = cancel(stack, &account.key, &id).await;
    assert!(
        again.status == 202 || again.status == 409 && again.error() == "Job is already cancelled",
        "a second cancel is accepted again or says it is done: {again:?}"
    );
    let seen = wait_terminal(stack, &account.key, &id, Duration::from_secs(30)).await;
    let job = &seen.job;
    assert_eq!(job["status"], "cancelled", "{:?} {job:#}", seen.history);
    assert_eq!(
        job["exit_code"],
        Value::Null,
        "the script was killed before it could report: {job:#}"
    );
    assert!(job["error_message"].is_string());

    let state = fake_state(stack).await;
    let instance = instances_of(&state, &id).pop().unwrap();
    assert_eq!(instance["deleted"], true, "{instance:#}");
    assert_eq!(
        instance["script_process"]["killed"], true,
        "the script was killed: {instance:#}"
    );
    assert!(scripts_of(&state, &id).is_empty());

    let stored = stack
        .store()
        .await
        .get_job(&account.account_id, &id)
        .await
        .unwrap()
        .unwrap();
    let price = Micros(stored.price_per_hour_micros);
    let billed = stored.billable_seconds(0);
    let cost = micros(&job["cost"]);
    assert!(cost > 0, "it ran for seconds: {job:#}");
    assert_eq!(cost, cost_of(price, billed).0);
    let life_ms =
        instance["deleted_at_ms"].as_i64().unwrap() - instance["created_at_ms"].as_i64().unwrap();
    assert!(
        billed * 1000 <= life_ms && life_ms < billed * 1000 + 3000,
        "billed {billed} s for a {life_ms} ms life"
    );
    let acc = account_of(stack, &account.account_id).await;
    assert_books_balance(&acc, "after cancelling a running job");
    assert_eq!((acc.held_micros, acc.charged_micros), (0, cost), "{acc:?}");
    assert!(
        cost < cost_of(price, 60).0,
        "charged for seconds, not for the hour held: {cost}"
    );

    let answer = cancel(stack, &account.key, &id).await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.error(), "Job is already cancelled");
}

/// `max_runtime_seconds` (60, the minimum): a script that would sleep 300 s is stopped ~60 s
/// after the job started running. Slow by nature: about a minute.
#[tokio::test]
async fn max_runtime_stops_a_long_job() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let mut body = cheap_job(Some("FIN-01"), "#!/bin/bash\necho working\nsleep 300");
    body["max_runtime_seconds"] = json!(60);
    let id = submit_ok(stack, &account.key, &body).await;
    let acc = account_of(stack, &account.account_id).await;
    let job = get_job(stack, &account.key, &id).await.body;
    assert_eq!(job["max_runtime_seconds"], 60);
    let price = Micros(micros(&job["price_per_hour"]));
    assert_eq!(
        acc.held_micros,
        cost_of(price, 60).0,
        "the hold covers min(1 h, max runtime)"
    );

    let seen = wait_terminal(stack, &account.key, &id, Duration::from_secs(120)).await;
    let job = &seen.job;
    assert_eq!(job["status"], "failed", "{:?} {job:#}", seen.history);
    assert_eq!(job["failure_reason"], "max_runtime_exceeded", "{job:#}");
    assert!(
        job["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("60"),
        "{job:#}"
    );
    let stored = stack
        .store()
        .await
        .get_job(&account.account_id, &id)
        .await
        .unwrap()
        .unwrap();
    let ran_ms = stored.finished_at.unwrap() - stored.started_at.unwrap();
    assert!(
        (60_000..70_000).contains(&ran_ms),
        "stopped {ran_ms} ms after it started running"
    );
    let billed = stored.billable_seconds(0);
    assert!((60..72).contains(&billed), "billed {billed} s");
    let acc = account_of(stack, &account.account_id).await;
    assert_books_balance(&acc, "after max runtime");
    assert_eq!(
        (acc.held_micros, acc.charged_micros),
        (0, micros(&job["cost"])),
        "{acc:?}"
    );
    let state = fake_state(stack).await;
    assert!(
        instances_of(&state, &id)
            .iter()
            .all(|i| i["deleted"] == true),
        "{state:#}"
    );
    println!(
        "max runtime: stopped {ran_ms} ms after running; billed {billed} s; waited {:?}",
        seen.elapsed
    );
}

/// Credits running out: an account with barely more than the first (10 s) hold; the hold must be
/// extended from the balance, the balance runs dry and the job is stopped `insufficient_credits`
/// — the balance never negative, never more charged than was added.
#[tokio::test]
async fn a_job_is_stopped_when_the_credits_run_out() {
    let started = Instant::now();
    let stack = own_stack(
        "jobs-credits",
        &[("HOLD_SECONDS", "10"), ("RUNNING_POLL_SECONDS", "2")],
        1000,
    );
    let probe = stack.account("0").await;
    let types = call("GET", &stack.url("/instances"), Some(&probe.key), None).await;
    let price = types.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["instance_type"] == CHEAP_TYPE)
        .map(|t| Micros(micros(&t["price_per_hour"])))
        .unwrap();
    let first_hold = cost_of(price, 10);
    let credits = first_hold + cost_of(price, 5);
    let account = stack.account(&credits.to_string()).await;
    let id = submit_ok(
        &stack,
        &account.key,
        &cheap_job(Some("FIN-01"), "#!/bin/bash\nsleep 300"),
    )
    .await;
    let acc = account_of(&stack, &account.account_id).await;
    assert_eq!(acc.held_micros, first_hold.0, "{acc:?}");

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut history: Vec<String> = Vec::new();
    let mut lowest = i64::MAX;
    let job = loop {
        let job = get_job(&stack, &account.key, &id).await.body;
        let status = job["status"].as_str().unwrap().to_string();
        if history.last() != Some(&status) {
            history.push(status);
        }
        let shown = call("GET", &stack.url("/account"), Some(&account.key), None).await;
        let balance = micros(&shown.body["balance"]);
        lowest = lowest.min(balance);
        assert!(balance >= 0, "negative balance while running: {shown:?}");
        assert_books_balance(
            &account_of(&stack, &account.account_id).await,
            "while running",
        );
        if is_terminal(&job) {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "never stopped: {history:?} {job:#}"
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(job["status"], "failed", "{history:?} {job:#}");
    assert_eq!(job["failure_reason"], "insufficient_credits", "{job:#}");
    assert!(job["error_message"].is_string());
    assert!(history.iter().any(|s| s == "running"), "{history:?}");

    let acc = account_of(&stack, &account.account_id).await;
    assert_books_balance(&acc, "after the credits ran out");
    assert_eq!(acc.added_micros, credits.0);
    assert_eq!(acc.held_micros, 0);
    assert!(
        acc.charged_micros <= credits.0 && acc.charged_micros > first_hold.0 / 2,
        "{acc:?}"
    );
    assert_eq!(acc.charged_micros, micros(&job["cost"]));
    assert_eq!(lowest, 0, "the balance was used up");
    let ledger = stack
        .store()
        .await
        .ledger(&account.account_id)
        .await
        .unwrap();
    let holds = ledger
        .iter()
        .filter(|e| e.kind == "hold" && e.job_id.as_deref() == Some(id.as_str()))
        .count();
    assert!(
        holds >= 2,
        "the hold was extended at least once: {ledger:?}"
    );
    let state = fake_state(&stack).await;
    let instance = instances_of(&state, &id).pop().unwrap();
    assert_eq!(instance["deleted"], true, "{instance:#}");
    assert!(scripts_of(&state, &id).is_empty());
    println!(
        "credits: {credits} added, {} charged, statuses {history:?}; test took {:?}",
        Micros(acc.charged_micros),
        started.elapsed()
    );
}
