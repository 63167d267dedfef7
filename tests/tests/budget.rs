//! A job's budget (`max_cost` on `POST /jobs`, issue 11) end to end: the hold is capped by it,
//! the job is stopped `budget_exceeded` before its cost passes it and its instance deleted; a
//! budget below the minimum is a 402 and a malformed one a 400 naming the field.

#[allow(dead_code, unused_imports)]
mod jobs_support;

use jobs_support::*;
use mimiry_shared::jobs::model::cost_of;
use mimiry_shared::money::Micros;
use mimiry_tests::{call, Stack};
use serde_json::json;
use std::time::Duration;

/// The cheap type's price per hour, as the catalog shows it.
async fn cheap_price(stack: &Stack, key: &str) -> Micros {
    let types = call("GET", &stack.url("/instances"), Some(key), None).await;
    types.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["instance_type"] == CHEAP_TYPE)
        .map(|t| Micros(micros(&t["price_per_hour"])))
        .expect("the cheap type is listed")
}

#[tokio::test]
async fn a_job_is_stopped_before_its_cost_passes_max_cost() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let price = cheap_price(stack, &account.key).await;
    // 20 s of the type: far less than the hold at submit (an hour, or HOLD_SECONDS).
    let budget = cost_of(price, 20);
    let mut body = cheap_job(Some("FIN-01"), "#!/bin/bash\necho working\nsleep 300");
    body["max_cost"] = json!(budget.to_string());
    let id = submit_ok(stack, &account.key, &body).await;
    let acc = account_of(stack, &account.account_id).await;
    assert_eq!(acc.held_micros, budget.0, "the hold is capped by max_cost");
    let shown = get_job(stack, &account.key, &id).await.body;
    assert_eq!(shown["max_cost"], budget.to_string(), "{shown:#}");

    let seen = wait_terminal(stack, &account.key, &id, Duration::from_secs(120)).await;
    let job = &seen.job;
    seen.assert_ended("failed", Some("budget_exceeded"));
    assert!(
        seen.history.iter().any(|s| s == "running"),
        "{:?}",
        seen.history
    );
    assert!(
        job["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_cost"),
        "{job:#}"
    );
    let cost = Micros(micros(&job["cost"]));
    assert!(cost <= budget, "charged {cost} past max_cost {budget}");
    // Stopped a retry delay (1 s here) before the budget ran out, not long before.
    assert!(
        cost.0 >= budget.0 - cost_of(price, 4).0,
        "stopped too early: {cost} of {budget}"
    );
    assert_eq!(job["held_credits"], "0.00", "{job:#}");
    let acc = account_of(stack, &account.account_id).await;
    assert_books_balance(&acc, "after the budget ran out");
    assert_eq!((acc.held_micros, acc.charged_micros), (0, cost.0));
    // The instance was deleted, as for a cancel.
    let state = fake_state(stack).await;
    let instances = instances_of(&state, &id);
    assert!(!instances.is_empty());
    assert!(
        instances.iter().all(|i| i["deleted"] == true),
        "{instances:#?}"
    );
    assert!(scripts_of(&state, &id).is_empty());
}

#[tokio::test]
async fn a_budget_below_the_minimum_is_a_402_and_a_malformed_one_a_400() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let price = cheap_price(stack, &account.key).await;
    // The minimum: two retry delays (1 s each in the test stack) of the type's price.
    let minimum = cost_of(price, 2);
    let mut body = cheap_job(Some("FIN-01"), "#!/bin/bash\necho hi");
    body["max_cost"] = json!((minimum - Micros(1)).to_string());
    let refused = submit(stack, &account.key, &body).await;
    assert_eq!(refused.status, 402, "{refused:?}");
    assert_eq!(refused.body["code"], "insufficient_budget", "{refused:?}");
    assert_eq!(refused.body["details"]["field"], "max_cost");
    assert_eq!(refused.body["details"]["minimum"], minimum.to_string());
    let acc = account_of(stack, &account.account_id).await;
    assert_eq!(acc.held_micros, 0, "nothing held for a refused job");

    for bad in [
        json!(12.5),
        json!("-1"),
        json!("0"),
        json!("12,50"),
        json!("1e3"),
    ] {
        body["max_cost"] = bad.clone();
        let answer = submit(stack, &account.key, &body).await;
        assert_eq!(answer.status, 400, "{bad}: {answer:?}");
        assert_eq!(answer.body["code"], "validation_error", "{bad}");
        assert_eq!(answer.body["details"]["field"], "max_cost", "{bad}");
    }

    // Exactly the minimum is enough.
    body["max_cost"] = json!(minimum.to_string());
    let answer = submit(stack, &account.key, &body).await;
    assert_eq!(answer.status, 201, "{answer:?}");
}
