//! Two providers (issue 12): a stack with DataCrunch and Lambda Cloud enabled (`PROVIDERS`),
//! each behind its fake. The catalog routes list both, each item naming its provider, with
//! Mimiry's price; `GET /providers` shows both; the `gpu` filter works across them.
//!
//! Expectations come from the fakes themselves (their own APIs), never from what Mimiry answered.

#[allow(dead_code, unused_imports)]
mod jobs_support;

use jobs_support::{submit, submit_ok, wait_terminal, SHORT};
use mimiry_tests::{call, Answer, Stack, StackOptions, TEST_ENV};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const LAMBDA_KEY: &str = "mimiry-local-lambda-key";

fn stack() -> Stack {
    stack_with("providers", &[], false)
}

/// Both providers enabled, `TEST_ENV` with `overrides`; `execute`: the fakes run the jobs'
/// scripts (so that jobs report and complete).
fn stack_with(name: &str, overrides: &[(&str, &str)], execute: bool) -> Stack {
    let mut env: Vec<(String, String)> = TEST_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("PROVIDERS".into(), "datacrunch,lambda".into()));
    for (k, v) in overrides {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    Stack::start(StackOptions {
        name: name.into(),
        env,
        execute,
        ..StackOptions::default()
    })
}

/// `GET /admin/state` of the fake Lambda.
async fn lambda_state(stack: &Stack) -> Value {
    let url = format!(
        "{}/admin/state",
        stack.lambda_url.as_ref().expect("lambda enabled")
    );
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The instances a fake's state lists for `job_id` (named `mimiry-{job}-{attempt}`), with
/// their status.
fn instances_for(state: &Value, job_id: &str) -> Vec<Value> {
    let prefix = format!("mimiry-{job_id}-");
    state["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances: {state}"))
        .iter()
        .filter(|i| {
            i["hostname"]
                .as_str()
                .is_some_and(|h| h.starts_with(&prefix))
        })
        .cloned()
        .collect()
}

fn is_deleted(instance: &Value) -> bool {
    matches!(
        instance["status"].as_str(),
        Some("discontinued" | "deleting" | "terminated" | "terminating")
    )
}

async fn get_ok(stack: &Stack, key: &str, path: &str) -> Answer {
    let answer = call("GET", &stack.url(path), Some(key), None).await;
    assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
    answer
}

/// The fake Lambda's own answer to `GET /api/v1/{path}` (as the provider itself sees it).
async fn lambda_get(stack: &Stack, path: &str) -> Value {
    let url = format!(
        "{}/api/v1/{path}",
        stack.lambda_url.as_ref().expect("lambda enabled")
    );
    reqwest::Client::new()
        .get(url)
        .bearer_auth(LAMBDA_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The fake Lambda's own `GET /instance-types` `data`.
async fn lambda_types(stack: &Stack) -> serde_json::Map<String, Value> {
    lambda_get(stack, "instance-types").await["data"]
        .as_object()
        .unwrap()
        .clone()
}

fn of<'a>(answer: &'a Answer, list: &str, provider: &str) -> Vec<&'a Value> {
    answer.body[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list}: {}", answer.body))
        .iter()
        .filter(|i| i["provider"] == provider)
        .collect()
}

#[tokio::test]
async fn both_providers_are_listed_with_mimiry_prices_and_a_gpu_filter() {
    let stack = stack();
    let account = stack.account("0").await;
    let key = account.key.as_str();

    let providers = get_ok(&stack, key, "/providers").await;
    let list = providers.body["providers"].as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["datacrunch", "lambda"], "{}", providers.body);
    for p in list {
        assert_eq!(p["status"], "operational", "{p}");
    }

    // Every Lambda type, at its price × 1.10, under its own name.
    let expected = lambda_types(&stack).await;
    let answer = get_ok(&stack, key, "/instances").await;
    assert_eq!(answer.body["stale"], false);
    let lambda = of(&answer, "instances", "lambda");
    assert_eq!(lambda.len(), expected.len());
    for t in &lambda {
        let name = t["instance_type"].as_str().unwrap();
        let cents = expected[name]["instance_type"]["price_cents_per_hour"]
            .as_u64()
            .unwrap();
        // cents × 1.10 / 100, rounded up to the micro: exact here.
        let micros = cents * 10_000 * 110 / 100;
        let want = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
        let got = t["price_per_hour"].as_str().unwrap();
        let trimmed = |s: &str| s.trim_end_matches('0').trim_end_matches('.').to_string();
        assert_eq!(trimmed(got), trimmed(&want), "{name}");
    }
    assert!(!of(&answer, "instances", "datacrunch").is_empty());

    // The GPU filter spans providers: an 8x A100 from each, only 8-GPU A100s.
    let a100 = get_ok(&stack, key, "/instances?gpu=a100&gpu_count=8").await;
    let items = a100.body["instances"].as_array().unwrap();
    let sellers: BTreeSet<&str> = items
        .iter()
        .map(|i| i["provider"].as_str().unwrap())
        .collect();
    assert_eq!(
        sellers,
        BTreeSet::from(["datacrunch", "lambda"]),
        "{}",
        a100.body
    );
    for i in items {
        assert_eq!(i["gpu"]["model"], "A100", "{i}");
        assert_eq!(i["gpu"]["count"], 8, "{i}");
    }
    // A GPU only Lambda sells.
    let a10 = get_ok(&stack, key, "/instances?gpu=A10").await;
    let names: Vec<&str> = a10.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_type"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpu_1x_a10"]);
    let bad = call(
        "GET",
        &stack.url("/instances?gpu_count=two"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(bad.status, 400, "{bad:?}");

    // Availability and locations: Lambda's regions, as its fake lists them.
    let availability = get_ok(&stack, key, "/availability").await;
    let regions: BTreeSet<&str> = of(&availability, "availability", "lambda")
        .iter()
        .map(|a| a["location"].as_str().unwrap())
        .collect();
    let expected_regions: BTreeSet<String> = expected
        .values()
        .flat_map(|t| {
            t["regions_with_capacity_available"]
                .as_array()
                .unwrap()
                .clone()
        })
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        regions,
        expected_regions.iter().map(String::as_str).collect()
    );
    let filtered = get_ok(&stack, key, "/availability?instance_type=gpu_1x_a10").await;
    for a in filtered.body["availability"].as_array().unwrap() {
        let types = a["instance_types"].as_array().unwrap();
        assert!(types.iter().all(|t| t == "gpu_1x_a10"), "{a}");
    }
    let locations = get_ok(&stack, key, "/locations").await;
    assert_eq!(
        of(&locations, "locations", "lambda").len(),
        expected_regions.len()
    );
    let images = get_ok(&stack, key, "/images?instance_type=gpu_1x_a10").await;
    let imgs = images.body["images"].as_array().unwrap();
    assert!(!imgs.is_empty());
    assert!(
        imgs.iter().all(|i| i["provider"] == "lambda"),
        "{}",
        images.body
    );
}

/// A GPU only Lambda sells: the job is placed there and runs; `provider` is checked on submit.
#[tokio::test]
async fn a_job_for_a_gpu_only_lambda_sells_completes_there() {
    let stack = stack_with("providers-lambda-only", &[], true);
    let account = stack.account("50").await;
    let key = account.key.as_str();

    // `provider` must be enabled, and sell the type.
    let base = json!({ "instance_type": "gpu_1x_a10", "image": "lambda-stack-22.04",
                       "startup_script": "echo on-lambda" });
    let mut unknown = base.clone();
    unknown["provider"] = json!("nimbus");
    let refused = submit(&stack, key, &unknown).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.body["details"]["field"], "provider", "{refused:?}");
    let mut elsewhere = base.clone();
    elsewhere["provider"] = json!("datacrunch");
    let refused = submit(&stack, key, &elsewhere).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(
        refused.body["details"]["field"], "instance_type",
        "{refused:?}"
    );

    let id = submit_ok(&stack, key, &base).await;
    let seen = wait_terminal(&stack, key, &id, SHORT).await;
    seen.assert_ended("completed", None);
    let job = &seen.job;
    assert_eq!(job["provider"], "lambda", "{job:#}");
    assert_eq!(job["exit_code"], 0, "{job:#}");
    // Where the fake sells it (its own catalog).
    let types = lambda_types(&stack).await;
    let regions: Vec<&str> = types["gpu_1x_a10"]["regions_with_capacity_available"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        regions.contains(&job["location"].as_str().unwrap()),
        "{job:#}"
    );
    let log = job["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 1, "{job:#}");
    assert_eq!(log[0]["provider"], "lambda");
    assert_eq!(log[0]["outcome"], "deployed");
    // The fake Lambda ran it and it is gone there; DataCrunch never saw it.
    let at_lambda = instances_for(&lambda_state(&stack).await, &id);
    assert_eq!(at_lambda.len(), 1, "{at_lambda:#?}");
    assert!(is_deleted(&at_lambda[0]), "{at_lambda:#?}");
    let dc = stack.fake_admin(reqwest::Method::GET, "/state", None).await;
    assert!(instances_for(&dc, &id).is_empty(), "{dc:#}");
}

/// DataCrunch refuses every deploy for want of capacity (fault injection): a job naming a
/// DataCrunch type, without provider or location, fails over to the equivalent type at Lambda
/// (same GPU model and count), completes there, and shows every attempt.
#[tokio::test]
async fn without_capacity_at_datacrunch_a_job_completes_at_lambda_and_shows_every_attempt() {
    // 8A100.80G is sold in three DataCrunch locations (cheaper than Lambda's 8x A100, so
    // tried first): four attempts reach Lambda.
    let stack = stack_with("providers-failover", &[("MAX_DEPLOY_ATTEMPTS", "4")], true);
    let account = stack.account("100").await;
    let key = account.key.as_str();
    let dc_locations: Vec<String> = get_ok(&stack, key, "/availability?instance_type=8A100.80G")
        .await
        .body["availability"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["provider"] == "datacrunch"
                && a["instance_types"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "8A100.80G"))
        })
        .map(|a| a["location"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !dc_locations.is_empty() && dc_locations.len() < 4,
        "{dc_locations:?}"
    );
    stack
        .fake_admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({ "deploy_capacity_failures": dc_locations.len() })),
        )
        .await;

    let body = json!({ "instance_type": "8A100.80G", "image": "ubuntu-22.04-cuda-12.0",
                       "startup_script": "echo moved" });
    let id = submit_ok(&stack, key, &body).await;
    let seen = wait_terminal(&stack, key, &id, SHORT).await;
    seen.assert_ended("completed", None);
    let job = &seen.job;
    assert_eq!(job["provider"], "lambda", "{job:#}");
    assert_eq!(job["instance_type"], "gpu_8x_a100_80gb_sxm4", "{job:#}");
    let log = job["attempt_log"].as_array().unwrap();
    let tried: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap(),
                a["location"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tried.len(), dc_locations.len() + 1, "{job:#}");
    for (attempt, location) in tried.iter().zip(&dc_locations) {
        assert_eq!(attempt.0, "datacrunch", "{job:#}");
        assert_eq!(attempt.2, "no_capacity", "{job:#}");
        assert!(dc_locations.contains(&attempt.1.to_string()), "{location}");
    }
    assert_eq!(tried.last().unwrap().0, "lambda");
    assert_eq!(tried.last().unwrap().2, "deployed");
    assert!(
        log[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{job:#}"
    );

    // Nothing left anywhere: the DataCrunch script was deleted when the job moved on, the
    // Lambda instance when it ended.
    let dc = stack.fake_admin(reqwest::Method::GET, "/state", None).await;
    assert!(instances_for(&dc, &id).is_empty(), "{dc:#}");
    let scripts = dc["scripts"].as_array().unwrap();
    assert!(
        !scripts
            .iter()
            .any(|s| s["name"].as_str().is_some_and(|n| n.contains(&id))),
        "{dc:#}"
    );
    let at_lambda = instances_for(&lambda_state(&stack).await, &id);
    assert_eq!(at_lambda.len(), 1, "{at_lambda:#?}");
    assert!(is_deleted(&at_lambda[0]), "{at_lambda:#?}");
}

/// SSH keys are registered lazily at the provider a job goes to: two jobs of the same key at
/// Lambda at once register it there once; the key then shows its id at both providers.
#[tokio::test]
async fn ssh_keys_are_registered_once_at_the_provider_a_job_goes_to() {
    let stack = stack_with("providers-keys", &[], true);
    let account = stack.account("50").await;
    let key = account.key.as_str();
    let key_id = mimiry_tests::add_ssh_key(&stack, key).await;
    let listed_key = |answer: Answer| -> Value {
        answer.body["ssh_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == key_id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{key_id} not listed: {}", answer.body))
    };
    let before = listed_key(get_ok(&stack, key, "/ssh-keys").await);
    let dc_id = before["datacrunch_id"].as_str().unwrap().to_string();
    assert_eq!(
        before["provider_ids"],
        json!({ "datacrunch": dc_id }),
        "{before}"
    );

    let body = json!({ "instance_type": "gpu_1x_a10", "image": "lambda-stack-22.04",
                       "ssh_key_ids": [key_id], "startup_script": "echo keyed" });
    let (a, b) = tokio::join!(submit_ok(&stack, key, &body), submit_ok(&stack, key, &body));
    for id in [&a, &b] {
        let seen = wait_terminal(&stack, key, id, SHORT).await;
        seen.assert_ended("completed", None);
        assert_eq!(seen.job["provider"], "lambda", "{:#}", seen.job);
    }

    // One copy at the fake Lambda, named with our key id, and recorded on the key.
    let listed = lambda_keys(&stack).await;
    let ours: Vec<&Value> = listed
        .iter()
        .filter(|k| k["name"].as_str().is_some_and(|n| n.contains(&key_id)))
        .collect();
    assert_eq!(ours.len(), 1, "{listed:#?}");
    let after = listed_key(get_ok(&stack, key, "/ssh-keys").await);
    assert_eq!(after["datacrunch_id"], dc_id.as_str());
    assert_eq!(
        after["provider_ids"],
        json!({ "datacrunch": dc_id, "lambda": ours[0]["id"] }),
        "{after}"
    );

    // Deleting the key removes it at Lambda too, not only where it was added (DataCrunch's
    // side: tests/tests/ssh_keys.rs).
    let url = stack.url(&format!("/ssh-keys/{key_id}"));
    let deleted = call("DELETE", &url, Some(key), None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    let lambda_copy = ours[0]["id"].as_str().unwrap();
    assert!(
        !lambda_keys(&stack)
            .await
            .iter()
            .any(|k| k["id"] == lambda_copy),
        "the key's copy stayed at Lambda"
    );
}

/// The SSH keys the fake Lambda holds (its own `GET /ssh-keys` `data`).
async fn lambda_keys(stack: &Stack) -> Vec<Value> {
    lambda_get(stack, "ssh-keys").await["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// An instance left at Lambda (no job behind its name: a crash between launch and persist) is
/// swept by the reconciler, found by its name alone (Lambda keeps no description); one not
/// named like Mimiry's is left alone.
#[tokio::test]
async fn the_reconciler_sweeps_an_orphan_at_lambda_by_its_name() {
    let stack = stack_with("providers-sweep", &[], false);
    let api = format!("{}/api/v1", stack.lambda_url.as_ref().unwrap());
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{api}{path}"))
            .bearer_auth(LAMBDA_KEY)
            .json(&body)
            .send()
    };
    let key = post(
        "/ssh-keys",
        json!({ "name": "sweep-test", "public_key": mimiry_tests::ssh_public_key() }),
    )
    .await
    .unwrap();
    assert!(key.status().is_success(), "{key:?}");
    let orphan = format!("mimiry-{}-1", uuid::Uuid::now_v7());
    let mut ids = Vec::new();
    for name in [orphan.as_str(), "someone-elses-box"] {
        let launched: Value = post(
            "/instance-operations/launch",
            json!({ "region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
                    "ssh_key_names": ["sweep-test"], "name": name, "quantity": 1 }),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        ids.push(
            launched["data"]["instance_ids"][0]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // The reconciler runs every 2 s and reads every active job one run in ten; an instance
    // known by its name alone is judged on those full reads only, deleted on the first one a
    // grace (RECONCILE_GRACE_SECONDS, 3 s) after one that saw its job gone: within two full
    // reads (`FULL_READ_EVERY_RUNS` = 10: ~40 s), and some margin for a loaded machine.
    let limit = std::time::Duration::from_secs(60);
    let started = std::time::Instant::now();
    let by_id = |state: &Value, id: &str| -> Value {
        state["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    loop {
        let state = lambda_state(&stack).await;
        let swept = by_id(&state, &ids[0]);
        if swept["deleted"] == true || is_deleted(&swept) {
            let other = by_id(&state, &ids[1]);
            assert!(
                other["deleted"] == false && !is_deleted(&other),
                "not ours, not touched: {other}"
            );
            break;
        }
        assert!(
            started.elapsed() < limit,
            "the orphan was not swept: {swept}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
