//! Retry policies and spot capacity end to end (issue 15, items 2 and 3): the fake DataCrunch
//! runs the wrapper (execute mode), interrupts spot instances on demand
//! (`interrupt_next_spot_instances`), and the job retries on fresh instances under its policy.

// Shared with jobs.rs; this file uses a part of it.
#[allow(dead_code, unused_imports)]
mod jobs_support;

use jobs_support::*;
use mimiry_shared::jobs::model::cost_of;
use mimiry_shared::money::Micros;
use mimiry_tests::{call, Stack};
use serde_json::{json, Value};
use std::time::Duration;

/// A type the fake sells as spot capacity (FIN-01, FIN-03), and an image it runs.
const SPOT_TYPE: &str = "1V100.6V";
const SPOT_IMAGE: &str = "ubuntu-22.04-cuda-12.0";
const LIMIT: Duration = Duration::from_secs(120);

fn spot_job(script: &str, retry: Option<Value>) -> Value {
    let mut body = json!({
        "instance_type": SPOT_TYPE,
        "image": SPOT_IMAGE,
        "startup_script": script,
        "spot": true,
    });
    if let Some(r) = retry {
        body["retry"] = r;
    }
    body
}

async fn interrupt_next(stack: &Stack, n: u64) {
    let faults = stack
        .fake_admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({ "interrupt_next_spot_instances": n, "interrupt_after_ms": 1500 })),
        )
        .await;
    assert_eq!(
        faults["interrupt_next_spot_instances"],
        json!(n),
        "{faults}"
    );
}

/// Each attempt's charge against the life the fake records for its instance: the rule bills
/// the instance's life per whole second, measured inside the provider's (so never more), and
/// a local round trip is well under two seconds (so never much less). The job's charge is the
/// sum of its attempts'.
fn assert_billed_per_attempt(job: &Value, instances: &[Value]) {
    let price = Micros(micros(&job["price_per_hour"]));
    let retries = job["retries"].as_array().expect("retries");
    assert_eq!(
        instances.len(),
        retries.len() + 1,
        "one instance per attempt"
    );
    let mut charges: Vec<i64> = retries.iter().map(|r| micros(&r["charged"])).collect();
    let total = micros(&job["cost"]);
    charges.push(total - charges.iter().sum::<i64>());
    for (i, (inst, charge)) in instances.iter().zip(&charges).enumerate() {
        let created = inst["created_at_ms"].as_i64().expect("created");
        let ended = inst["deleted_at_ms"]
            .as_i64()
            .or(inst["vanished_at_ms"].as_i64())
            .unwrap_or_else(|| panic!("instance {i} still alive: {inst}"));
        let lived_ms = ended - created;
        let most = cost_of(price, (lived_ms + 999) / 1000).0;
        let least = cost_of(price, (lived_ms / 1000 - 2).max(0)).0;
        assert!(
            (least..=most).contains(charge),
            "attempt {}: charged {charge} µ for an instance that lived {lived_ms} ms (expected {least}..={most}): {job:#}",
            i + 1
        );
    }
}

#[tokio::test]
async fn a_spot_job_interrupted_twice_completes_on_its_third_attempt_and_without_a_policy_fails_interrupted(
) {
    // Its own stack: the interruption fault is the fake's, global to every spot job.
    let stack = own_stack("retry-spot", &[], 1000);
    let account = stack.account("100").await;

    // GET /instances shows the spot price beside on-demand, marked up alike.
    let listed = call("GET", &stack.url("/instances"), Some(&account.key), None).await;
    let v100 = listed.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["instance_type"] == SPOT_TYPE)
        .unwrap_or_else(|| panic!("{SPOT_TYPE} not listed: {listed:?}"))
        .clone();
    let spot_price = micros(&v100["spot_price"]);
    assert!(
        spot_price > 0 && spot_price < micros(&v100["price_per_hour"]),
        "{v100}"
    );

    // Under a policy: interrupted twice, the third attempt runs the script to the end.
    interrupt_next(&stack, 2).await;
    let script = "echo \"attempt $MIMIRY_ATTEMPT\"; sleep 4; echo finished";
    let retry = json!({ "max_attempts": 3, "on": ["interrupted"] });
    let id = submit_ok(&stack, &account.key, &spot_job(script, Some(retry))).await;
    let seen = wait_terminal(&stack, &account.key, &id, LIMIT).await;
    seen.assert_ended("completed", None);
    let job = &seen.job;
    assert_eq!(job["spot"], json!(true));
    assert_eq!(micros(&job["price_per_hour"]), spot_price, "{job:#}");
    assert_eq!(job["attempt"], json!(3), "{job:#}");
    assert_eq!(
        job["output_tail"],
        json!("attempt 3\nfinished\n"),
        "{job:#}"
    );
    let retries = job["retries"].as_array().unwrap();
    assert_eq!(retries.len(), 2, "{job:#}");
    for (i, r) in retries.iter().enumerate() {
        assert_eq!(r["attempt"], json!(i + 1));
        assert_eq!(r["failure_reason"], json!("interrupted"), "{job:#}");
    }
    // Each attempt on a fresh instance: its own hostname, each deleted or taken back.
    let state = fake_state(&stack).await;
    let instances = instances_of(&state, &id);
    let hostnames: std::collections::BTreeSet<&str> = instances
        .iter()
        .map(|i| i["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hostnames.len(), 3, "{instances:#?}");
    assert!(
        instances.iter().all(|i| i["is_spot"] == json!(true)),
        "{instances:#?}"
    );
    let log: Vec<u64> = job["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(log, [1, 2, 3], "{job:#}");
    let events: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        events.iter().filter(|e| **e == "attempt_failed").count(),
        2,
        "{events:?}"
    );
    assert_billed_per_attempt(job, &instances);
    assert_eq!(micros(&job["held_credits"]), 0);
    assert_books_balance(
        &account_of(&stack, &account.account_id).await,
        "after a retried spot job",
    );

    // Without a policy the interruption is the job's end: `interrupted`, not a script failure.
    interrupt_next(&stack, 1).await;
    let id = submit_ok(&stack, &account.key, &spot_job("sleep 60", None)).await;
    let seen = wait_terminal(&stack, &account.key, &id, LIMIT).await;
    seen.assert_ended("failed", Some("interrupted"));
    let message = seen.job["error_message"].as_str().unwrap();
    assert!(
        message.contains("interrupted the spot instance"),
        "{message}"
    );
    assert_eq!(seen.job["retries"], json!([]));
    assert_eq!(seen.job["attempt"], json!(1));
}

#[tokio::test]
async fn an_exit_code_policy_retries_a_script_that_fails_once_and_bills_both_attempts() {
    let stack = Stack::shared();
    let account = stack.account("100").await;
    // The first attempt exits 3, the second succeeds: the script sees its attempt number.
    let script =
        "echo \"attempt $MIMIRY_ATTEMPT\"; sleep 2; [ \"$MIMIRY_ATTEMPT\" -ge 2 ] || exit 3";
    let mut body = cheap_job(None, script);
    body["retry"] = json!({ "max_attempts": 3, "on": ["exit_code:3"] });
    let id = submit_ok(stack, &account.key, &body).await;
    let seen = wait_terminal(stack, &account.key, &id, LIMIT).await;
    seen.assert_ended("completed", None);
    let job = &seen.job;
    assert_eq!(job["attempt"], json!(2), "{job:#}");
    assert_eq!(job["exit_code"], json!(0));
    let retries = job["retries"].as_array().unwrap();
    assert_eq!(retries.len(), 1, "{job:#}");
    assert_eq!(retries[0]["failure_reason"], json!("script_failed"));
    assert_eq!(retries[0]["exit_code"], json!(3));
    assert!(micros(&retries[0]["charged"]) > 0, "{job:#}");
    let instances = instances_of(&fake_state(stack).await, &id);
    assert_billed_per_attempt(job, &instances);
    let account_now = account_of(stack, &account.account_id).await;
    assert_eq!(account_now.charged_micros, micros(&job["cost"]));
    assert_books_balance(&account_now, "after an exit-code retry");

    // An exit code the policy does not name is the job's end at once.
    let mut body = cheap_job(None, "exit 4");
    body["retry"] = json!({ "max_attempts": 3, "on": ["exit_code:3"] });
    let id = submit_ok(stack, &account.key, &body).await;
    let seen = wait_terminal(stack, &account.key, &id, LIMIT).await;
    seen.assert_ended("failed", Some("script_failed"));
    assert_eq!(seen.job["attempt"], json!(1));
}

#[tokio::test]
async fn a_bad_retry_policy_or_spot_where_none_is_sold_is_a_400_naming_the_field() {
    let stack = Stack::shared();
    let account = stack.account("100").await;
    let mut body = cheap_job(None, "true");
    body["retry"] = json!({ "max_attempts": 3, "on": ["interrupted", "exit_code:2", "sometimes"] });
    let answer = submit(stack, &account.key, &body).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(
        answer.body["details"]["field"],
        json!("retry.on[2]"),
        "{answer:?}"
    );

    body["retry"] = json!({ "max_attempts": 11, "on": ["interrupted"] });
    let answer = submit(stack, &account.key, &body).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.body["details"]["field"], json!("retry.max_attempts"));

    // The CPU type has a spot price at the fake but no spot capacity anywhere: no place to go.
    let mut body = cheap_job(None, "true");
    body["spot"] = json!(true);
    let answer = submit(stack, &account.key, &body).await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.body["code"], json!("no_available_instances"));
}
