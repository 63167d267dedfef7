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

    // Nothing but the type and image: no script (the wrapper reports exit 0 at once) and
    // `auto_shutdown` omitted, which means true (decisions.md), so it completes by itself.
    let minimal = json!({ "instance_type": "1V100.6V", "image": "ubuntu-22.04-cuda-12.0" });
    let other = submit_ok(stack, &account.key, &minimal).await;
    let other_job = get_job(stack, &account.key, &other).await.body;
    assert_eq!(
        other_job["auto_shutdown"], true,
        "omitted auto_shutdown means true: {other_job:#}"
    );
    let other_name = other_job["name"].clone();
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
        assert_eq!(seen.job["exit_code"], 0, "{:#}", seen.job);
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

    let looks_before = requests(&fake_state(&stack).await, "GET /v1/instance-availability");
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
        answer.body["cancel_requested"], true,
        "the cancel was asked for, and that stays so"
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
    while requests(&fake_state(&stack).await, "GET /v1/instance-availability") <= looks_before {
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
    assert_eq!(
        instance["deleted"], false,
        "still booting, so not deletable yet: {instance:#}"
    );
    assert_eq!(
        job["status"], "provisioning",
        "not cancelled before the instance is deleted: {job:#}"
    );
    assert_eq!(job["cancel_requested"], true);
    let seen = wait_terminal(&stack, &account.key, &id, SHORT).await;
    assert_eq!(
        seen.job["status"], "cancelled",
        "{:?} {:#}",
        seen.history, seen.job
    );
    assert_eq!(seen.job["failure_reason"], Value::Null);
    assert_eq!(
        seen.job["cancel_requested"], true,
        "a cancelled job still says it was asked to cancel"
    );

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
async fn a_job_over_its_max_runtime_is_stopped() {
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

/// Every error of the guide's FAQ (§12) as `POST /jobs` (and its siblings) produce it.
#[tokio::test]
async fn every_faq_error_of_the_guide() {
    // Its own stack: the 402 is a cancelled DynamoDB transaction, and moto rolls a cancelled
    // transaction back by restoring a copy of the whole table, losing concurrent writes of
    // other tests on the same stack.
    let stack = &own_stack("jobs-faq", &[], 1000);
    let account = stack.account("10").await;
    let broke = stack.account("0").await;
    let stranger = stack.account("10").await;
    let body = cheap_job(Some("FIN-01"), "true");
    let some_job = format!("/jobs/{}", uuid::Uuid::now_v7());

    // `Invalid or missing API key` (401).
    let forged = format!("mky_{}", "A".repeat(43));
    for key in [None, Some(forged.as_str())] {
        for (method, path, body) in [
            ("POST", "/jobs", Some(&body)),
            ("GET", "/jobs", None),
            ("GET", &some_job, None),
            ("DELETE", &some_job, None),
        ] {
            let answer = call(method, &stack.url(path), key, body).await;
            assert_eq!(
                answer.status, 401,
                "{method} {path} with {key:?}: {answer:?}"
            );
            assert_eq!(answer.error(), "Invalid or missing API key");
            assert_eq!(answer.body["code"], "unauthorized");
        }
    }

    // `Insufficient credits` (402): 0 credits cannot cover the hold.
    let answer = submit(stack, &broke.key, &body).await;
    assert_eq!(answer.status, 402, "{answer:?}");
    assert_eq!(answer.error(), "Insufficient credits");
    assert_eq!(answer.body["code"], "insufficient_credits");
    assert_eq!(answer.body["details"]["available"], "0.00");
    let types = call("GET", &stack.url("/instances"), Some(&account.key), None).await;
    let price = types.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["instance_type"] == CHEAP_TYPE)
        .map(|t| Micros(micros(&t["price_per_hour"])))
        .unwrap();
    assert_eq!(
        answer.body["details"]["required"],
        cost_of(price, 3600).to_string(),
        "the hold is an hour: {answer:?}"
    );
    let listed = call("GET", &stack.url("/jobs"), Some(&broke.key), None).await;
    assert_eq!(
        listed.body["jobs"],
        json!([]),
        "nothing was created: {listed:?}"
    );

    // `Insufficient scope` (403).
    use mimiry_shared::auth::Scope;
    let reader = stack.key(&account.account_id, &[Scope::JobsRead]).await;
    let writer = stack.key(&account.account_id, &[Scope::JobsWrite]).await;
    for (key, method, path, body, scope) in [
        (&reader, "POST", "/jobs", Some(&body), "jobs:write"),
        (&reader, "DELETE", some_job.as_str(), None, "jobs:write"),
        (&writer, "GET", "/jobs", None, "jobs:read"),
        (&writer, "GET", some_job.as_str(), None, "jobs:read"),
    ] {
        let answer = call(method, &stack.url(path), Some(key), body).await;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        assert_eq!(answer.error(), "Insufficient scope");
        assert_eq!(answer.body["details"]["required_scope"], scope);
    }

    // `SSH key not found` (400 on submit): unknown, another account's, not even an id.
    let strangers_key = add_ssh_key(stack, &stranger.key).await;
    let own_key = add_ssh_key(stack, &account.key).await;
    for bad in [
        uuid::Uuid::new_v4().to_string(),
        strangers_key,
        "12345".to_string(),
    ] {
        let mut with_key = body.clone();
        with_key["ssh_key_ids"] = json!([own_key, bad]);
        let answer = submit(stack, &account.key, &with_key).await;
        assert_eq!(answer.status, 400, "ssh key {bad}: {answer:?}");
        assert_eq!(answer.error(), "SSH key not found");
        assert_eq!(answer.body["code"], "ssh_key_not_found");
        assert_eq!(answer.body["details"]["ssh_key_id"], bad.as_str());
    }

    // `No available instances`: a type that exists, asked where the provider has none of it.
    let availability = call("GET", &stack.url("/availability"), Some(&account.key), None).await;
    let offers = availability.body["availability"].as_array().unwrap();
    let has = |location: &str, t: &str| {
        offers.iter().any(|a| {
            a["location"] == location
                && a["instance_types"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == t)
        })
    };
    let (gap_type, gap_location) = ("8H100.80S.176V", "FIN-02");
    assert!(
        !has(gap_location, gap_type),
        "the fake has no {gap_type} in {gap_location}: {offers:#?}"
    );
    assert!(
        offers
            .iter()
            .any(|a| has(a["location"].as_str().unwrap(), gap_type)),
        "{gap_type} exists elsewhere"
    );
    let gap = json!({ "instance_type": gap_type, "image": "ubuntu-22.04-cuda-12.0", "location": gap_location });
    let answer = submit(stack, &account.key, &gap).await;
    assert_eq!(
        answer.status, 409,
        "decisions.md: 409, not a 5xx: {answer:?}"
    );
    assert_eq!(answer.error(), "No available instances");
    assert_eq!(answer.body["code"], "no_available_instances");
    assert_eq!(
        answer.body["details"],
        json!({ "instance_type": gap_type, "location": gap_location })
    );

    // None of these created a job or held a credit.
    let listed = call("GET", &stack.url("/jobs"), Some(&account.key), None).await;
    assert_eq!(listed.body["jobs"], json!([]), "{listed:?}");
    let acc = account_of(stack, &account.account_id).await;
    assert_eq!(
        (acc.balance_micros, acc.held_micros),
        (10_000_000, 0),
        "{acc:?}"
    );
}

/// Bad requests: 415 without `Content-Type`, 400 naming the field for everything else.
#[tokio::test]
async fn invalid_submissions_are_refused_naming_the_field() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let body = cheap_job(Some("FIN-01"), "true");

    let client = reqwest::Client::new();
    let bare = client
        .post(stack.url("/jobs"))
        .bearer_auth(&account.key)
        .body(body.to_string());
    let answer = send(bare).await;
    assert_eq!(answer.status, 415, "no Content-Type: {answer:?}");
    assert_eq!(answer.body["code"], "unsupported_media_type");
    assert!(answer.error().contains("application/json"), "{answer:?}");
    let text = client
        .post(stack.url("/jobs"))
        .bearer_auth(&account.key)
        .header("Content-Type", "text/plain")
        .body(body.to_string());
    assert_eq!(send(text).await.status, 415);

    let with = |field: &str, value: Value| {
        let mut b = body.clone();
        b[field] = value;
        b
    };
    let without = |field: &str| {
        let mut b = body.clone();
        b.as_object_mut().unwrap().remove(field);
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown instance_type",
            with("instance_type", json!("9X999.1V")),
            "instance_type",
        ),
        (
            "missing instance_type",
            without("instance_type"),
            "instance_type",
        ),
        ("unknown image", with("image", json!("windows-95")), "image"),
        (
            "image not for the type",
            with("image", json!("ubuntu-22.04-cuda-12.0")),
            "image",
        ),
        ("missing image", without("image"), "image"),
        (
            "unknown location",
            with("location", json!("MARS-01")),
            "location",
        ),
        ("unknown field", with("gpu_count", json!(1)), "gpu_count"),
        (
            "wrong type",
            with("auto_shutdown", json!("yes")),
            "auto_shutdown",
        ),
        (
            "ssh_key_ids not a list",
            with("ssh_key_ids", json!("abc")),
            "ssh_key_ids",
        ),
        ("name too long", with("name", json!("n".repeat(65))), "name"),
        ("empty name", with("name", json!("  ")), "name"),
        (
            "max runtime below 60",
            with("max_runtime_seconds", json!(59)),
            "max_runtime_seconds",
        ),
        (
            "script over 64 KiB",
            with("startup_script", json!("#".repeat(64 * 1024 + 1))),
            "startup_script",
        ),
    ];
    for (what, bad, field) in cases {
        let answer = submit(stack, &account.key, &bad).await;
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        assert_eq!(
            answer.body["code"], "validation_error",
            "{what}: {answer:?}"
        );
        assert_eq!(answer.body["details"]["field"], field, "{what}: {answer:?}");
        assert!(
            answer.error().contains(field),
            "{what}: the message names `{field}`: {answer:?}"
        );
    }
    let malformed = client
        .post(stack.url("/jobs"))
        .bearer_auth(&account.key)
        .header("Content-Type", "application/json")
        .body("{\"instance_type\": ");
    let answer = send(malformed).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.body["code"], "malformed_json");

    // The limits themselves pass validation and the catalog checks: such a request goes on to
    // meet the next check, an unknown SSH key (no credit transaction is attempted).
    let unknown_key = json!([uuid::Uuid::new_v4().to_string()]);
    for (what, ok) in [
        (
            "a 64 KiB script",
            with("startup_script", json!("#".repeat(64 * 1024))),
        ),
        ("max runtime 60", with("max_runtime_seconds", json!(60))),
        ("a 64-character name", with("name", json!("n".repeat(64)))),
    ] {
        let mut ok = ok;
        ok["ssh_key_ids"] = unknown_key.clone();
        let answer = submit(stack, &account.key, &ok).await;
        assert_eq!(answer.status, 400, "{what} is valid: {answer:?}");
        assert_eq!(
            answer.body["code"], "ssh_key_not_found",
            "{what} is valid: {answer:?}"
        );
    }

    let listed = call("GET", &stack.url("/jobs"), Some(&account.key), None).await;
    assert_eq!(
        listed.body["jobs"],
        json!([]),
        "nothing was created: {listed:?}"
    );
    let acc = account_of(stack, &account.account_id).await;
    assert_eq!(
        (acc.balance_micros, acc.held_micros),
        (10_000_000, 0),
        "{acc:?}"
    );
}

/// `Idempotency-Key`: the same key and body give the same job (one job, one hold) and the
/// original response; the same key with another body is a 409.
#[tokio::test]
async fn idempotency_key_makes_a_submit_safe_to_retry() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let body = cheap_job(Some("FIN-01"), "echo once");
    let post = |key: &str, body: &Value| {
        reqwest::Client::new()
            .post(stack.url("/jobs"))
            .bearer_auth(&account.key)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key)
            .body(body.to_string())
    };
    let key = format!("retry-{}", uuid::Uuid::new_v4());
    let first = send(post(&key, &body)).await;
    assert_eq!(first.status, 201, "{first:?}");
    let second = send(post(&key, &body)).await;
    assert_eq!(second.status, 201, "{second:?}");
    assert_eq!(second.body, first.body, "the original response again");
    assert_eq!(
        second
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true"),
        "{second:?}"
    );
    assert!(
        first.headers.get("idempotent-replayed").is_none(),
        "{first:?}"
    );
    let mut other = body.clone();
    other["name"] = json!("something else");
    let reused = send(post(&key, &other)).await;
    assert_eq!(reused.status, 409, "{reused:?}");
    assert_eq!(reused.body["code"], "idempotency_key_reused");

    // Another key is another job. (Two identical requests *at once* are not tested here: moto
    // rolls a cancelled transaction back by restoring a copy of the table taken before it,
    // which can erase the winner's job; real DynamoDB isolates transactions.)
    let a = send(post(&format!("other-{}", uuid::Uuid::new_v4()), &body)).await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_ne!(a.body["id"], first.body["id"], "another key is another job");

    let listed = call("GET", &stack.url("/jobs"), Some(&account.key), None).await;
    let ids: BTreeSet<&str> = listed.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = [
        first.body["id"].as_str().unwrap(),
        a.body["id"].as_str().unwrap(),
    ]
    .into();
    assert_eq!(ids, expected, "exactly two jobs: {listed:?}");
    let ledger = stack
        .store()
        .await
        .ledger(&account.account_id)
        .await
        .unwrap();
    for id in &expected {
        let holds = ledger
            .iter()
            .filter(|e| e.kind == "hold" && e.job_id.as_deref() == Some(id))
            .count();
        assert_eq!(holds, 1, "one hold for job {id}: {ledger:?}");
    }
    for id in expected {
        let seen = wait_terminal(stack, &account.key, id, SHORT).await;
        assert_eq!(seen.job["status"], "completed", "{:#}", seen.job);
    }
    let acc = account_of(stack, &account.account_id).await;
    assert_books_balance(&acc, "after idempotent submits");
    assert_eq!(acc.held_micros, 0);
}

/// `GET /jobs`: newest first, `status` filter, `limit` + `next_cursor` paging through every job
/// once; bad parameters and tampered cursors are 400s; cursors never cross accounts.
#[tokio::test]
async fn listing_filters_and_pages() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let stranger = stack.account("10").await;
    let mut ids = Vec::new();
    for script in ["true", "exit 1", "true"] {
        ids.push(submit_ok(stack, &account.key, &cheap_job(Some("FIN-01"), script)).await);
    }
    let strangers = submit_ok(stack, &stranger.key, &cheap_job(Some("FIN-01"), "true")).await;
    for id in &ids {
        wait_terminal(stack, &account.key, id, SHORT).await;
    }
    wait_terminal(stack, &stranger.key, &strangers, SHORT).await;
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let list = |query: String| {
        let key = account.key.clone();
        async move {
            call(
                "GET",
                &stack.url(&format!("/jobs{query}")),
                Some(&key),
                None,
            )
            .await
        }
    };
    let ids_of = |answer: &mimiry_tests::Answer| -> Vec<String> {
        answer.body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };

    let all = list(String::new()).await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(
        ids_of(&all),
        newest_first,
        "newest first, and only this account's"
    );
    let completed = list("?status=completed".into()).await;
    assert_eq!(
        ids_of(&completed),
        vec![ids[2].clone(), ids[0].clone()],
        "{completed:?}"
    );
    assert!(completed.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["status"] == "completed"));
    assert_eq!(
        ids_of(&list("?status=failed".into()).await),
        vec![ids[1].clone()]
    );
    assert_eq!(
        ids_of(&list("?status=running".into()).await),
        Vec::<String>::new()
    );

    // Paging one by one visits every job once, in order.
    for (filter, expected) in [
        ("", newest_first.clone()),
        ("&status=completed", vec![ids[2].clone(), ids[0].clone()]),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let query = match &cursor {
                Some(c) => format!("?limit=1{filter}&cursor={c}"),
                None => format!("?limit=1{filter}"),
            };
            let page = list(query).await;
            assert_eq!(page.status, 200, "{page:?}");
            let page_ids = ids_of(&page);
            assert!(page_ids.len() <= 1, "limit=1: {page:?}");
            seen.extend(page_ids);
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, expected, "paging{filter}");
        assert!(cursor.is_some(), "there were several pages");
    }

    // Tampered or foreign cursors.
    let first_page = list("?limit=1".into()).await;
    let cursor = first_page.body["next_cursor"].as_str().unwrap().to_string();
    let truncated = cursor[..cursor.len() - 4].to_string();
    let not_base64 = format!("{cursor}!!");
    // base64url("v1:ACCOUNT#x"): well-formed, but not a job id.
    let forged = "djE6QUNDT1VOVCN4".to_string();
    for bad in [truncated, not_base64, forged, "garbage".to_string()] {
        let answer = list(format!("?cursor={bad}")).await;
        assert_eq!(answer.status, 400, "cursor {bad}: {answer:?}");
        assert_eq!(answer.body["details"]["field"], "cursor");
    }
    let strangers_page = call(
        "GET",
        &stack.url("/jobs?limit=1"),
        Some(&stranger.key),
        None,
    )
    .await;
    assert_eq!(ids_of(&strangers_page), vec![strangers.clone()]);
    let strangers_cursor = strangers_page.body["next_cursor"]
        .as_str()
        .expect("a full page has a cursor");
    let answer = list(format!("?cursor={strangers_cursor}")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        ids_of(&answer).iter().all(|id| ids.contains(id)),
        "another account's cursor shows only the caller's own jobs: {answer:?}"
    );
    for (query, field) in [
        ("?status=bogus", "status"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=x", "limit"),
        ("?page=2", "page"),
    ] {
        let answer = list(query.into()).await;
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
        assert_eq!(
            answer.body["details"]["field"], field,
            "{query}: {answer:?}"
        );
    }

    let answer = cancel(stack, &account.key, &ids[0]).await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.error(), "Job is already completed");
}

/// `POST /jobs/{id}/report`: only the job's own token is accepted; the same report again is
/// fine, a different one is a 409; a report for a finished job is a 409.
#[tokio::test]
async fn report_needs_the_jobs_own_token_and_is_recorded_once() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let script = "#!/bin/bash\nsleep 60";
    let a = submit_ok(stack, &account.key, &cheap_job(Some("FIN-01"), script)).await;
    let b = submit_ok(stack, &account.key, &cheap_job(Some("FIN-01"), script)).await;
    for id in [&a, &b] {
        wait_status(stack, &account.key, id, "running", SHORT).await;
    }
    let token_a = report_token(stack, &a).await;
    let token_b = report_token(stack, &b).await;
    assert_ne!(token_a, token_b);
    let report = |id: &str, token: Option<&str>, body: Value| {
        let url = stack.url(&format!("/jobs/{id}/report"));
        let token = token.map(str::to_string);
        async move { call("POST", &url, token.as_deref(), Some(&body)).await }
    };
    let done = json!({ "exit_code": 0, "output": "reported by hand" });

    let (account_part, mac) = token_a.split_once('.').unwrap();
    let forged_account = format!("{}.{mac}", stack.account("0").await.account_id);
    let flipped = format!("{account_part}.{}", mac.chars().rev().collect::<String>());
    for (what, token) in [
        ("no token", None),
        ("an API key", Some(account.key.as_str())),
        ("another job's token", Some(token_b.as_str())),
        (
            "the token under another account",
            Some(forged_account.as_str()),
        ),
        ("an altered token", Some(flipped.as_str())),
    ] {
        let answer = report(&a, token, done.clone()).await;
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        assert_eq!(answer.error(), "Invalid or missing API key", "{what}");
    }
    assert_eq!(
        get_job(stack, &account.key, &a).await.body["exit_code"],
        Value::Null,
        "nothing was recorded"
    );

    // Another attempt's report (a late one from an earlier attempt's instance) is refused.
    let stale = report(&a, Some(&token_a), json!({ "exit_code": 0, "attempt": 2 })).await;
    assert_eq!(stale.status, 409, "{stale:?}");
    assert_eq!(stale.body["code"], "stale_attempt", "{stale:?}");

    let answer = report(&a, Some(&token_a), done.clone()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!({ "job_id": a, "recorded": true }));
    let again = report(&a, Some(&token_a), done.clone()).await;
    assert_eq!(
        again.status, 200,
        "the same report again (a retrying wrapper) is fine: {again:?}"
    );
    let different = report(
        &a,
        Some(&token_a),
        json!({ "exit_code": 1, "output": "something else" }),
    )
    .await;
    assert_eq!(different.status, 409, "{different:?}");
    assert_eq!(different.body["code"], "already_reported");

    let seen = wait_terminal(stack, &account.key, &a, Duration::from_secs(30)).await;
    assert_eq!(seen.job["status"], "completed", "{:#}", seen.job);
    assert_eq!(seen.job["exit_code"], 0);
    assert_eq!(seen.job["output_tail"], "reported by hand");

    // A finished job takes no report.
    assert_eq!(cancel(stack, &account.key, &b).await.status, 202);
    let seen = wait_terminal(stack, &account.key, &b, Duration::from_secs(30)).await;
    assert_eq!(seen.job["status"], "cancelled", "{:#}", seen.job);
    let late = report(&b, Some(&token_b), done).await;
    assert_eq!(late.status, 409, "{late:?}");
    assert_eq!(late.body["code"], "job_finished");
    assert!(late.error().contains("cancelled"), "{late:?}");
    let state = fake_state(stack).await;
    for id in [&a, &b] {
        assert!(
            instances_of(&state, id)
                .iter()
                .all(|i| i["deleted"] == true),
            "{state:#}"
        );
    }
}

/// Capacity 503 at deploy: with a location asked the job fails `no_capacity`; without, it is
/// deployed in another location and completes.
#[tokio::test]
async fn no_capacity_at_deploy_fails_over_to_another_location() {
    let stack = own_stack("jobs-capacity", &[], 1000);
    let account = stack.account("10").await;
    let faults = |n: u64| {
        stack.fake_admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({ "deploy_capacity_failures": n })),
        )
    };

    faults(1).await;
    let pinned = submit_ok(&stack, &account.key, &cheap_job(Some("FIN-01"), "true")).await;
    let seen = wait_terminal(&stack, &account.key, &pinned, SHORT).await;
    assert_eq!(
        seen.job["status"], "failed",
        "{:?} {:#}",
        seen.history, seen.job
    );
    assert_eq!(seen.job["failure_reason"], "no_capacity", "{:#}", seen.job);
    assert!(
        seen.job["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("No available instances"),
        "{:#}",
        seen.job
    );
    assert_eq!(seen.job["cost"], "0.00");
    let state = fake_state(&stack).await;
    assert!(instances_of(&state, &pinned).is_empty(), "{state:#}");
    assert!(
        scripts_of(&state, &pinned).is_empty(),
        "the script made for the deploy is deleted: {state:#}"
    );

    faults(1).await;
    let deploys_before = requests(&state, "POST /v1/instances");
    let body = json!({ "instance_type": "1V100.6V", "image": "ubuntu-22.04-cuda-12.0", "startup_script": GUIDE_SCRIPT });
    let id = submit_ok(&stack, &account.key, &body).await;
    let seen = wait_terminal(&stack, &account.key, &id, SHORT).await;
    let job = &seen.job;
    assert_eq!(job["status"], "completed", "{:?} {job:#}", seen.history);
    assert!(job["attempts"].as_u64().unwrap() >= 2, "{job:#}");
    let state = fake_state(&stack).await;
    assert_eq!(
        requests(&state, "POST /v1/instances") - deploys_before,
        2,
        "one refused deploy, one that worked"
    );
    assert_eq!(state["faults"]["deploy_capacity_failures"], 0);
    let instances = instances_of(&state, &id);
    assert_eq!(instances.len(), 1, "{instances:#?}");
    assert_eq!(instances[0]["location"], job["location"]);
    let stored = stack
        .store()
        .await
        .get_job(&account.account_id, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.tried_locations.len(), 1, "{stored:?}");
    assert_ne!(
        Some(&stored.tried_locations[0]),
        stored.location.as_ref(),
        "deployed elsewhere: {stored:?}"
    );
    let acc = account_of(&stack, &account.account_id).await;
    assert_books_balance(&acc, "after fail-over");
    assert_eq!(acc.held_micros, 0);
}

/// An instance that ends in `error` while provisioning: with a location asked the job fails
/// `provider_error`; without, the broken instance is deleted and another location is tried.
#[tokio::test]
async fn an_instance_that_fails_to_start_fails_over_or_fails_the_job() {
    let stack = own_stack("jobs-instance-error", &[], 1000);
    let account = stack.account("10").await;
    let fault = || {
        stack.fake_admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({ "error_next_instances": 1 })),
        )
    };

    fault().await;
    let pinned = submit_ok(&stack, &account.key, &cheap_job(Some("FIN-01"), "true")).await;
    let seen = wait_terminal(&stack, &account.key, &pinned, SHORT).await;
    assert_eq!(
        seen.job["status"], "failed",
        "{:?} {:#}",
        seen.history, seen.job
    );
    assert_eq!(
        seen.job["failure_reason"], "provider_error",
        "{:#}",
        seen.job
    );
    assert!(
        seen.job["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("error"),
        "{:#}",
        seen.job
    );
    let state = fake_state(&stack).await;
    let instances = instances_of(&state, &pinned);
    assert_eq!(instances.len(), 1);
    assert_eq!(
        instances[0]["deleted"], true,
        "the broken instance is deleted: {:#}",
        instances[0]
    );
    assert!(scripts_of(&state, &pinned).is_empty());

    fault().await;
    let id = submit_ok(&stack, &account.key, &cheap_job(None, "echo second try")).await;
    let seen = wait_terminal(&stack, &account.key, &id, SHORT).await;
    let job = &seen.job;
    assert_eq!(job["status"], "completed", "{:?} {job:#}", seen.history);
    assert_eq!(job["attempts"], 2, "{job:#}");
    assert!(job["output_tail"]
        .as_str()
        .unwrap_or_default()
        .contains("second try"));
    let state = fake_state(&stack).await;
    let instances = instances_of(&state, &id);
    assert_eq!(instances.len(), 2, "{instances:#?}");
    assert!(
        instances.iter().all(|i| i["deleted"] == true),
        "both instances deleted: {instances:#?}"
    );
    assert_ne!(
        instances[0]["location"], instances[1]["location"],
        "the second try went elsewhere"
    );
    assert_eq!(job["location"], instances[1]["location"]);
    assert!(scripts_of(&state, &id).is_empty());
    let acc = account_of(&stack, &account.account_id).await;
    assert_books_balance(&acc, "after an instance error");
    assert_eq!(acc.held_micros, 0);
}

/// The instance disappears at the provider while the script runs: `failed`/`instance_lost`,
/// billed until it was last seen.
#[tokio::test]
async fn an_instance_lost_while_running_fails_the_job() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let id = submit_ok(
        stack,
        &account.key,
        &cheap_job(Some("FIN-01"), "#!/bin/bash\nsleep 60"),
    )
    .await;
    let running = wait_status(stack, &account.key, &id, "running", SHORT).await;
    let instance_id = running.job["instance_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack
        .fake_admin(
            reqwest::Method::POST,
            &format!("/instances/{instance_id}/vanish"),
            None,
        )
        .await;
    let seen = wait_terminal(stack, &account.key, &id, Duration::from_secs(30)).await;
    let job = &seen.job;
    assert_eq!(job["status"], "failed", "{:?} {job:#}", seen.history);
    assert_eq!(job["failure_reason"], "instance_lost", "{job:#}");
    assert!(job["error_message"].is_string());
    let state = fake_state(stack).await;
    let instance = instances_of(&state, &id).pop().unwrap();
    assert_eq!(instance["vanished"], true);
    assert!(scripts_of(&state, &id).is_empty(), "{state:#}");
    let stored = stack
        .store()
        .await
        .get_job(&account.account_id, &id)
        .await
        .unwrap()
        .unwrap();
    let vanished_at = instance["vanished_at_ms"].as_i64().unwrap();
    assert!(
        stored.instance_ended_at.unwrap() <= vanished_at,
        "not billed past its loss: {stored:?}"
    );
    let acc = account_of(stack, &account.account_id).await;
    assert_books_balance(&acc, "after a lost instance");
    assert_eq!(
        (acc.held_micros, acc.charged_micros),
        (0, micros(&job["cost"])),
        "{acc:?}"
    );
}

/// A burst of 5xx on `GET /v1/instances/{id}` while the job is watched: it still completes.
#[tokio::test]
async fn a_burst_of_provider_errors_is_survived() {
    let stack = own_stack("jobs-provider-5xx", &[], 1000);
    let account = stack.account("10").await;
    let burst =
        json!({ "server_errors": { "count": 8, "status": 502, "paths": ["/v1/instances/"] } });
    stack
        .fake_admin(reqwest::Method::POST, "/faults", Some(burst))
        .await;
    let id = submit_ok(
        &stack,
        &account.key,
        &cheap_job(Some("FIN-01"), "sleep 8\necho survived"),
    )
    .await;
    let seen = wait_terminal(&stack, &account.key, &id, SHORT).await;
    let job = &seen.job;
    assert_eq!(job["status"], "completed", "{:?} {job:#}", seen.history);
    assert!(job["output_tail"]
        .as_str()
        .unwrap_or_default()
        .contains("survived"));
    let state = fake_state(&stack).await;
    assert_eq!(
        state["faults"]["server_errors"],
        Value::Null,
        "every injected error was met: {:#}",
        state["faults"]
    );
    // The worker's looks met the whole burst (the provider client retries each look a few
    // times) and then saw the instance again: the job was seen running before its report.
    let looks = requests(&state, "GET /v1/instances/{id}");
    assert!(looks > 8, "{:#}", state["requests"]);
    assert!(
        seen.history.iter().any(|s| s == "running"),
        "{:?}",
        seen.history
    );
    println!(
        "5xx burst: {looks} instance looks, statuses {:?}",
        seen.history
    );
    assert!(instances_of(&state, &id)
        .iter()
        .all(|i| i["deleted"] == true));
    let acc = account_of(&stack, &account.account_id).await;
    assert_books_balance(&acc, "after provider errors");
    assert_eq!(acc.held_micros, 0);
}

/// `auto_shutdown: false`: the script reports, but the instance stays up (for SSH) until the job
/// is cancelled; the job then ends with the script's result and the instance is deleted.
#[tokio::test]
async fn without_auto_shutdown_the_instance_stays_up_until_cancelled() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let mut body = cheap_job(Some("FIN-01"), "echo kept up");
    body["auto_shutdown"] = json!(false);
    let id = submit_ok(stack, &account.key, &body).await;
    let reported =
        |j: &Value| !j["exit_code"].is_null() && j["status"] == "running" || is_terminal(j);
    let seen = wait_until(
        stack,
        &account.key,
        &id,
        "the report while running",
        SHORT,
        reported,
    )
    .await;
    assert_eq!(
        seen.job["status"], "running",
        "the report does not end it: {:?} {:#}",
        seen.history, seen.job
    );
    assert_eq!(seen.job["exit_code"], 0);
    assert!(
        seen.job["output_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("kept up"),
        "{:#}",
        seen.job
    );

    // A few running polls later it is still up, at the provider too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let job = get_job(stack, &account.key, &id).await.body;
    assert_eq!(job["status"], "running", "{job:#}");
    let state = fake_state(stack).await;
    let instance = instances_of(&state, &id).pop().unwrap();
    assert_eq!(
        (&instance["status"], &instance["deleted"]),
        (&json!("running"), &json!(false)),
        "{instance:#}"
    );

    let answer = cancel(stack, &account.key, &id).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let seen = wait_terminal(stack, &account.key, &id, Duration::from_secs(30)).await;
    assert_eq!(
        seen.job["status"], "completed",
        "the script's result, not `cancelled`: {:#}",
        seen.job
    );
    assert_eq!(seen.job["exit_code"], 0);
    let state = fake_state(stack).await;
    assert_eq!(instances_of(&state, &id).pop().unwrap()["deleted"], true);
    assert!(scripts_of(&state, &id).is_empty());
    let acc = account_of(stack, &account.account_id).await;
    assert_books_balance(&acc, "after a job without auto_shutdown");
    assert_eq!(
        (acc.held_micros, acc.charged_micros),
        (0, micros(&seen.job["cost"])),
        "{acc:?}"
    );
    assert!(acc.charged_micros > 0);
}

/// Provisioning and running jobs are parked (production: no SQS message waits for a look
/// minutes away): the worker's own looks are 60 s (provisioning) and 120 s (running) off here,
/// so everything below that happens sooner is the reconciler's doing — its instance list
/// noticing an instance that runs or vanished, its wake-up at `max_runtime_seconds` — or the
/// report's.
#[tokio::test]
async fn parked_jobs_are_watched_by_the_reconciler() {
    let stack = own_stack(
        "jobs-parked",
        &[
            ("PROVISIONING_POLL_SECONDS", "60"),
            ("RUNNING_POLL_SECONDS", "120"),
            ("PARK_AFTER_SECONDS", "5"),
        ],
        500,
    );
    let account = stack.account("10").await;
    let store = stack.store().await;
    let lost = submit_ok(
        &stack,
        &account.key,
        &cheap_job(Some("FIN-01"), "#!/bin/bash\nsleep 100"),
    )
    .await;
    let mut capped = cheap_job(Some("FIN-01"), "#!/bin/bash\nsleep 300");
    capped["max_runtime_seconds"] = json!(60);
    let capped = submit_ok(&stack, &account.key, &capped).await;
    let reporting = submit_ok(
        &stack,
        &account.key,
        &cheap_job(
            Some("FIN-01"),
            "#!/bin/bash\nsleep 12\necho parked-and-done",
        ),
    )
    .await;

    // The instances run ~0.5 s after the deploy; the worker's own look would be 60 s later.
    for id in [&lost, &capped, &reporting] {
        wait_status(&stack, &account.key, id, "running", Duration::from_secs(30)).await;
    }
    // Parked once the worker has seen it running.
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in [&lost, &capped, &reporting] {
        loop {
            let job = store
                .get_job(&account.account_id, id)
                .await
                .unwrap()
                .unwrap();
            if job.parked {
                break;
            }
            assert!(Instant::now() < deadline, "job {id} never parked: {job:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    // The report un-parks its job at once.
    let seen = wait_terminal(&stack, &account.key, &reporting, Duration::from_secs(30)).await;
    seen.assert_ended("completed", None);
    assert!(
        seen.job["output_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("parked-and-done"),
        "{:#}",
        seen.job
    );

    // A vanished instance is noticed by the reconciler's list, not by a poll 120 s away.
    let instance_id = get_job(&stack, &account.key, &lost).await.body["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    stack
        .fake_admin(
            reqwest::Method::POST,
            &format!("/instances/{instance_id}/vanish"),
            None,
        )
        .await;
    let seen = wait_terminal(&stack, &account.key, &lost, Duration::from_secs(30)).await;
    seen.assert_ended("failed", Some("instance_lost"));
    println!("parked: vanished instance noticed after {:?}", seen.elapsed);

    // max_runtime_seconds ends a parked job on time: the reconciler wakes it when due.
    let seen = wait_terminal(&stack, &account.key, &capped, Duration::from_secs(90)).await;
    seen.assert_ended("failed", Some("max_runtime_exceeded"));
    let stored = store
        .get_job(&account.account_id, &capped)
        .await
        .unwrap()
        .unwrap();
    let ran_ms = stored.finished_at.unwrap() - stored.started_at.unwrap();
    assert!(
        (60_000..70_000).contains(&ran_ms),
        "stopped {ran_ms} ms after it started running"
    );

    let state = fake_state(&stack).await;
    for id in [&lost, &capped, &reporting] {
        assert!(
            instances_of(&state, id)
                .iter()
                .all(|i| i["deleted"] == true || i["vanished"] == true),
            "{state:#}"
        );
        assert!(scripts_of(&state, id).is_empty(), "{state:#}");
    }
    let acc = account_of(&stack, &account.account_id).await;
    assert_books_balance(&acc, "after parked jobs");
    assert_eq!(acc.held_micros, 0, "{acc:?}");
}
