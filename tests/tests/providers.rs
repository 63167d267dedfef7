//! Two providers (issue 12): a stack with DataCrunch and Lambda Cloud enabled (`PROVIDERS`),
//! each behind its fake. The catalog routes list both, each item naming its provider, with
//! Mimiry's price; `GET /providers` shows both; the `gpu` filter works across them.
//!
//! Expectations come from the fakes themselves (their own APIs), never from what Mimiry answered.

use mimiry_tests::{call, Answer, Stack, StackOptions, TEST_ENV};
use serde_json::Value;
use std::collections::BTreeSet;

const LAMBDA_KEY: &str = "mimiry-local-lambda-key";

fn stack() -> Stack {
    let mut env: Vec<(String, String)> = TEST_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("PROVIDERS".into(), "datacrunch,lambda".into()));
    Stack::start(StackOptions {
        name: "providers".into(),
        env,
        execute: false,
        ..StackOptions::default()
    })
}

async fn get_ok(stack: &Stack, key: &str, path: &str) -> Answer {
    let answer = call("GET", &stack.url(path), Some(key), None).await;
    assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
    answer
}

/// The fake Lambda's own `GET /instance-types` `data`.
async fn lambda_types(stack: &Stack) -> serde_json::Map<String, Value> {
    let url = format!(
        "{}/api/v1/instance-types",
        stack.lambda_url.as_ref().expect("lambda enabled")
    );
    let v: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(LAMBDA_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"].as_object().unwrap().clone()
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
