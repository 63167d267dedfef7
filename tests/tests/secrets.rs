//! Environment and secrets end to end (issue 15): an account stores a secret (write-only), a
//! job names it and sets a plain `env`; the wrapper really runs (fake DataCrunch in execute
//! mode), fetches both at boot and the script prints them. The stored output and log show the
//! env value and `***` for the secret; the secret is in no table item (a scan) and — through
//! `record_secret` — in no log line (the audit, tests/tests/zz_log_audit.rs).

// Shared with jobs.rs; this file uses a part of it.
#[allow(dead_code, unused_imports)]
mod jobs_support;

use jobs_support::*;
use mimiry_tests::{call, record_secret, Stack};
use serde_json::json;

/// The secret: long enough for the log audit, unlike anything else the suite writes.
const SECRET: &str = "hf-s3cr3t-Value-8f2c91d4";

async fn api(
    stack: &Stack,
    method: &str,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> mimiry_tests::Answer {
    call(method, &stack.url(path), Some(key), body.as_ref()).await
}

/// Every item of the table, as text (attribute names and values).
async fn table_text(stack: &Stack) -> Vec<String> {
    let store = stack.store().await;
    let mut start = None;
    let mut items = Vec::new();
    for _ in 0..1000 {
        let page = store
            .db
            .scan()
            .table_name(&store.table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("scanning the table");
        items.extend(page.items().iter().map(|i| format!("{i:?}")));
        match page.last_evaluated_key() {
            Some(key) => start = Some(key.clone()),
            None => return items,
        }
    }
    panic!("the scan never ended");
}

#[tokio::test]
async fn a_job_gets_its_env_and_secret_and_the_secret_is_masked_everywhere() {
    let stack = Stack::shared();
    let account = stack.account("100").await;
    record_secret(SECRET);

    // Write-only: created, listed by name, never shown.
    let created = api(
        stack,
        "POST",
        "/secrets",
        &account.key,
        Some(json!({ "name": "HF_TOKEN", "value": SECRET })),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert!(!created.body.to_string().contains(SECRET));
    let listed = api(stack, "GET", "/secrets", &account.key, None).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.body["secrets"][0]["name"], "HF_TOKEN", "{listed:?}");
    assert!(!listed.body.to_string().contains(SECRET));

    // Bad names and references: 400s naming the field.
    for (path, body, field) in [
        ("/secrets", json!({ "name": "1BAD", "value": "x" }), "name"),
        (
            "/secrets",
            json!({ "name": "MIMIRY_X", "value": "x" }),
            "name",
        ),
        ("/secrets", json!({ "name": "OK", "value": "" }), "value"),
        (
            "/jobs",
            cheap_with(json!({ "env": { "BAD-NAME": "1" } })),
            "env",
        ),
        ("/jobs", cheap_with(json!({ "env": { "A": 1 } })), "env"),
        (
            "/jobs",
            cheap_with(json!({ "secrets": ["NOT_STORED"] })),
            "secrets",
        ),
    ] {
        let answer = api(stack, "POST", path, &account.key, Some(body.clone())).await;
        assert_eq!(answer.status, 400, "{path} {body}: {answer:?}");
        assert_eq!(answer.body["details"]["field"], field, "{body}: {answer:?}");
    }

    // The job: prints its env value, its secret, and the secret's length (it was there).
    let script = "#!/bin/bash\necho \"greeting=$GREETING\"\necho \"token=$HF_TOKEN\"\n\
                  echo \"token length=${#HF_TOKEN}\"\necho \"$HF_TOKEN\" >&2";
    let mut body = cheap_job(None, script);
    body["env"] = json!({ "GREETING": "hello from env" });
    body["secrets"] = json!(["HF_TOKEN"]);
    let id = submit_ok(stack, &account.key, &body).await;
    let job = wait_terminal(stack, &account.key, &id, SHORT).await.job;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["secrets"], json!(["HF_TOKEN"]), "{job:#}");
    assert_eq!(job["env"]["GREETING"], "hello from env", "{job:#}");
    let output = job["output_tail"].as_str().unwrap();
    assert!(output.contains("greeting=hello from env"), "{output}");
    assert!(output.contains("token=***"), "{output}");
    assert!(
        output.contains(&format!("token length={}", SECRET.len())),
        "the script did get the secret: {output}"
    );
    assert!(!output.contains(SECRET), "{output}");
    let logs = api(
        stack,
        "GET",
        &format!("/jobs/{id}/logs"),
        &account.key,
        None,
    )
    .await;
    assert_eq!(logs.status, 200, "{logs:?}");
    let lines: Vec<&str> = logs.body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(lines.contains(&"greeting=hello from env"), "{lines:?}");
    assert!(lines.contains(&"token=***"), "{lines:?}");
    assert!(lines.contains(&"***"), "stderr masked too: {lines:?}");
    assert!(!logs.body.to_string().contains(SECRET), "{lines:?}");

    // The instance's env route takes the job token only, and the job is over anyway.
    let env = api(stack, "GET", &format!("/jobs/{id}/env"), &account.key, None).await;
    assert_eq!(env.status, 401, "{env:?}");

    // No item of the table holds the value (the secret's own item holds it sealed).
    let items = table_text(stack).await;
    assert!(
        items.iter().any(|i| i.contains("SECRET#HF_TOKEN")),
        "the scan did not see the secret's item"
    );
    for item in &items {
        assert!(
            !item.contains(SECRET),
            "a table item holds the secret: {item}"
        );
    }

    // Deleted: gone from the list, a second delete is a 404, and a new job cannot name it.
    let deleted = api(stack, "DELETE", "/secrets/HF_TOKEN", &account.key, None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    let again = api(stack, "DELETE", "/secrets/HF_TOKEN", &account.key, None).await;
    assert_eq!(again.status, 404, "{again:?}");
    let listed = api(stack, "GET", "/secrets", &account.key, None).await;
    assert_eq!(listed.body["secrets"], json!([]), "{listed:?}");
    let refused = api(stack, "POST", "/jobs", &account.key, Some(body)).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.body["details"]["field"], "secrets");
}

/// A cheap job's body with `extra` fields.
fn cheap_with(extra: serde_json::Value) -> serde_json::Value {
    let mut body = cheap_job(None, "echo hi");
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}
