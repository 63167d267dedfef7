//! Issue 9's outside probe, as regression tests over HTTP: request bodies that are not JSON
//! objects, idempotent replay under concurrency and with re-serialised bodies, the smaller input
//! rules (NUL in scripts, exit codes, invisible characters in names, repeated query parameters,
//! HEAD), SSH key pagination and the per-account cap, and a script that reports before the
//! worker ever saw its instance running.

// Shared with jobs.rs; this file uses a part of it.
#[allow(dead_code, unused_imports)]
mod jobs_support;

use jobs_support::*;
use mimiry_tests::{call, send, ssh_public_key, Answer, Stack};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

async fn post_raw(stack: &Stack, path: &str, key: &str, body: &str, idem: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new()
        .post(stack.url(path))
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(k) = idem {
        request = request.header("Idempotency-Key", k);
    }
    send(request).await
}

async fn get(stack: &Stack, key: &str, path: &str) -> Answer {
    call("GET", &stack.url(path), Some(key), None).await
}

fn assert_validation(answer: &Answer, field: &str, what: &str) {
    assert_eq!(answer.status, 400, "{what}: {answer:?}");
    assert_eq!(
        answer.body["code"], "validation_error",
        "{what}: {answer:?}"
    );
    assert_eq!(answer.body["details"]["field"], field, "{what}: {answer:?}");
}

/// The fake provider's SSH keys holding exactly `public_key`.
async fn provider_copies(stack: &Stack, public_key: &str) -> usize {
    stack.fake_admin(reqwest::Method::GET, "/state", None).await["ssh_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["key"] == public_key)
        .count()
}

#[tokio::test]
async fn bodies_must_be_json_objects_and_errors_never_name_rust_types() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let job_array = json!([
        "name",
        CHEAP_TYPE,
        CHEAP_IMAGE,
        null,
        null,
        "echo hi",
        true,
        null
    ])
    .to_string();
    for (path, body) in [
        ("/jobs", job_array.as_str()),
        ("/jobs", "[]"),
        ("/jobs", "\"a string\""),
        ("/jobs", "42"),
        ("/jobs", "null"),
        ("/jobs", "true"),
        ("/ssh-keys", "[\"my-key\", \"ssh-ed25519 AAAA\"]"),
        ("/ssh-keys", "[]"),
    ] {
        let answer = post_raw(stack, path, &account.key, body, None).await;
        assert_validation(&answer, "body", &format!("POST {path} {body}"));
        let message = answer.error();
        assert!(
            message.contains("must be a JSON object"),
            "POST {path} {body}: {message}"
        );
        for internal in ["struct", "Request", "NewSshKey", "element"] {
            assert!(
                !message.contains(internal),
                "POST {path} {body}: the message names an internal type: {message}"
            );
        }
    }
    // Not a single job was created from an array.
    let jobs = get(stack, &account.key, "/jobs").await;
    assert_eq!(jobs.body["jobs"], json!([]), "{jobs:?}");
    // A field of the wrong type still names the field, without Rust type names.
    let answer = post_raw(
        stack,
        "/jobs",
        &account.key,
        &json!({"instance_type": CHEAP_TYPE, "image": CHEAP_IMAGE, "ssh_key_ids": {"a": 1}})
            .to_string(),
        None,
    )
    .await;
    assert_validation(&answer, "ssh_key_ids", "an object for a list");
    assert!(!answer.error().contains("struct"), "{answer:?}");
}

/// Sends `body` to `path` 20 times at once with one Idempotency-Key; asserts every racer got
/// the one original 201 (19 of them marked as replays) and answers the created id.
async fn race_one_key(stack: &Stack, key: &str, path: &str, body: &str) -> String {
    let idem = format!("race-{}", uuid::Uuid::new_v4());
    let answers = futures_util::future::join_all(
        (0..20).map(|_| post_raw(stack, path, key, body, Some(&idem))),
    )
    .await;
    let ids: BTreeSet<String> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 201, "every racer gets the original answer: {a:?}");
            a.body["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one resource for all: {ids:?}");
    let replays = answers
        .iter()
        .filter(|a| a.headers.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replays, 19, "19 replays of the one creation");
    ids.into_iter().next().unwrap()
}

/// One key is stored, one copy at the provider.
#[tokio::test]
async fn concurrent_ssh_key_requests_with_one_idempotency_key_all_get_the_original() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let public_key = ssh_public_key();
    let body = json!({ "name": "racer", "public_key": public_key }).to_string();
    race_one_key(stack, &account.key, "/ssh-keys", &body).await;
    let listed = get(stack, &account.key, "/ssh-keys").await;
    assert_eq!(
        listed.body["ssh_keys"].as_array().unwrap().len(),
        1,
        "{listed:?}"
    );
    assert_eq!(
        provider_copies(stack, &public_key).await,
        1,
        "the losers' provider copies were taken back"
    );
}

#[tokio::test]
async fn concurrent_job_submits_with_one_idempotency_key_create_one_job() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let body = cheap_job(None, "echo once").to_string();
    let id = race_one_key(stack, &account.key, "/jobs", &body).await;
    let jobs = get(stack, &account.key, "/jobs").await;
    assert_eq!(jobs.body["jobs"].as_array().unwrap().len(), 1, "{jobs:?}");
    wait_terminal(stack, &account.key, &id, SHORT).await;
}

/// A client that re-serialises its request (other whitespace, other key order) is retrying.
#[tokio::test]
async fn idempotency_compares_bodies_as_canonical_json() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let public_key = ssh_public_key();
    let idem = format!("canon-{}", uuid::Uuid::new_v4());
    let compact = format!(r#"{{"name":"canon","public_key":"{public_key}"}}"#);
    let spaced = format!("{{\n  \"public_key\" : \"{public_key}\",\n  \"name\" : \"canon\"\n}}\n");
    let first = post_raw(stack, "/ssh-keys", &account.key, &compact, Some(&idem)).await;
    assert_eq!(first.status, 201, "{first:?}");
    let again = post_raw(stack, "/ssh-keys", &account.key, &spaced, Some(&idem)).await;
    assert_eq!(again.status, 201, "a retry, re-serialised: {again:?}");
    assert_eq!(again.body, first.body);
    assert!(again.headers.get("idempotent-replayed").is_some());
    // A different value is still a different request.
    let other = format!(r#"{{"name":"canon2","public_key":"{public_key}"}}"#);
    let reused = post_raw(stack, "/ssh-keys", &account.key, &other, Some(&idem)).await;
    assert_eq!(reused.status, 409, "{reused:?}");
    assert_eq!(reused.body["code"], "idempotency_key_reused");

    let idem = format!("canon-job-{}", uuid::Uuid::new_v4());
    let job = json!({"instance_type": CHEAP_TYPE, "image": CHEAP_IMAGE, "auto_shutdown": true});
    let first = post_raw(stack, "/jobs", &account.key, &job.to_string(), Some(&idem)).await;
    assert_eq!(first.status, 201, "{first:?}");
    let reordered = format!(
        "{{ \"auto_shutdown\": true, \"image\": \"{CHEAP_IMAGE}\",\n\t\"instance_type\": \"{CHEAP_TYPE}\" }}"
    );
    let again = post_raw(stack, "/jobs", &account.key, &reordered, Some(&idem)).await;
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(again.body["id"], first.body["id"]);
    wait_terminal(
        stack,
        &account.key,
        first.body["id"].as_str().unwrap(),
        SHORT,
    )
    .await;
}

#[tokio::test]
async fn smaller_input_rules() {
    let stack = Stack::shared();
    let account = stack.account("10").await;

    // A NUL can never run in a bash script.
    let answer = submit(stack, &account.key, &cheap_job(None, "echo a\u{0}b")).await;
    assert_validation(&answer, "startup_script", "NUL in the script");
    assert!(answer.error().contains("NUL"), "{answer:?}");

    // Names refuse bidi overrides and zero-width characters, not only control characters.
    for name in ["invoice\u{202E}fdp.exe", "zero\u{200B}width", "bom\u{FEFF}"] {
        let mut job = cheap_job(None, "echo hi");
        job["name"] = json!(name);
        let answer = submit(stack, &account.key, &job).await;
        assert_validation(&answer, "name", &format!("job name {name:?}"));
        let body = json!({ "name": name, "public_key": ssh_public_key() });
        let answer = call(
            "POST",
            &stack.url("/ssh-keys"),
            Some(&account.key),
            Some(&body),
        )
        .await;
        assert_validation(&answer, "name", &format!("key name {name:?}"));
    }

    // A repeated query parameter is ambiguous.
    let answer = get(stack, &account.key, "/jobs?status=queued&status=running").await;
    assert_validation(&answer, "status", "?status twice");
    let answer = get(stack, &account.key, "/ssh-keys?limit=1&limit=2").await;
    assert_validation(&answer, "limit", "?limit twice");
}

#[tokio::test]
async fn head_answers_wherever_get_does() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let id = submit_ok(stack, &account.key, &cheap_job(None, "echo hi")).await;
    let client = reqwest::Client::new();
    for path in [
        "/account".to_string(),
        "/instances".to_string(),
        "/ssh-keys".to_string(),
        "/jobs".to_string(),
        format!("/jobs/{id}"),
    ] {
        let get = client
            .get(stack.url(&path))
            .bearer_auth(&account.key)
            .send()
            .await
            .unwrap();
        let get_status = get.status();
        let get_len = get.bytes().await.unwrap().len();
        let head = client
            .head(stack.url(&path))
            .bearer_auth(&account.key)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), get_status, "HEAD {path}");
        assert_eq!(
            head.headers()["content-type"],
            "application/json",
            "HEAD {path}"
        );
        let length: usize = head.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // A list may change between the two calls only for /jobs (the job moves on); the
        // length is the GET body's length in every other case.
        if !path.starts_with("/jobs") {
            assert_eq!(length, get_len, "HEAD {path}: the GET body's length");
        }
        assert!(length > 0, "HEAD {path}");
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path}: no body"
        );
    }
    // HEAD follows GET's authorization: no key, 401.
    let head = client.head(stack.url("/jobs")).send().await.unwrap();
    assert_eq!(head.status(), 401);
    // A path without GET: 405 listing the methods.
    let put = client
        .put(stack.url(&format!("/jobs/{id}")))
        .bearer_auth(&account.key)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(put.headers()["allow"], "GET, HEAD, DELETE");
    wait_terminal(stack, &account.key, &id, SHORT).await;
}

#[tokio::test]
async fn report_exit_codes_are_bytes() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let id = submit_ok(
        stack,
        &account.key,
        &cheap_job(None, "sleep 30; echo never"),
    )
    .await;
    wait_status(stack, &account.key, &id, "running", SHORT).await;
    let token = report_token(stack, &id).await;
    for bad in [256, -1, 1000, i32::MAX as i64] {
        let answer = send(
            reqwest::Client::new()
                .post(stack.url(&format!("/jobs/{id}/report")))
                .bearer_auth(&token)
                .json(&json!({ "exit_code": bad })),
        )
        .await;
        assert_validation(&answer, "exit_code", &format!("exit_code {bad}"));
    }
    let job = get_job(stack, &account.key, &id).await.body;
    assert_eq!(job["exit_code"], Value::Null, "nothing recorded: {job:#}");
    let answer = cancel(stack, &account.key, &id).await;
    assert!(answer.status == 200 || answer.status == 202, "{answer:?}");
    wait_terminal(stack, &account.key, &id, SHORT).await;
}

#[tokio::test]
async fn ssh_keys_paginate_and_an_account_holds_at_most_100() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    // Keys made by ssh-keygen are slow to make; 100 distinct ed25519 keys are made here from
    // random bytes (a valid ed25519 public key is any 32 bytes as far as a parser can tell).
    let keys: Vec<String> = (0..101).map(|_| random_ed25519()).collect();
    for (i, key) in keys.iter().take(100).enumerate() {
        let body = json!({ "name": format!("key-{i:03}"), "public_key": key });
        let answer = call(
            "POST",
            &stack.url("/ssh-keys"),
            Some(&account.key),
            Some(&body),
        )
        .await;
        assert_eq!(answer.status, 201, "key {i}: {answer:?}");
    }
    let body = json!({ "name": "one-too-many", "public_key": keys[100] });
    let answer = call(
        "POST",
        &stack.url("/ssh-keys"),
        Some(&account.key),
        Some(&body),
    )
    .await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.body["code"], "ssh_key_limit_reached");
    assert!(answer.error().contains("100"), "{answer:?}");
    assert_eq!(
        provider_copies(stack, &keys[100]).await,
        0,
        "nothing registered at the provider for a refused key"
    );

    // Pages of 30, oldest first, every key once.
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        assert!(page < 10, "pagination does not end");
        let path = match &cursor {
            Some(c) => format!("/ssh-keys?limit=30&cursor={c}"),
            None => "/ssh-keys?limit=30".to_string(),
        };
        let answer = get(stack, &account.key, &path).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let batch = answer.body["ssh_keys"].as_array().unwrap();
        assert!(batch.len() <= 30);
        names.extend(
            batch
                .iter()
                .map(|k| k["name"].as_str().unwrap().to_string()),
        );
        match answer.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..100).map(|i| format!("key-{i:03}")).collect();
    assert_eq!(names, expected);
    let answer = get(stack, &account.key, "/ssh-keys?cursor=not-a-cursor").await;
    assert_validation(&answer, "cursor", "a forged cursor");

    // Deleting one makes room for one.
    let first = get(stack, &account.key, "/ssh-keys?limit=1").await;
    let id = first.body["ssh_keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deleted = call(
        "DELETE",
        &stack.url(&format!("/ssh-keys/{id}")),
        Some(&account.key),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    let answer = call(
        "POST",
        &stack.url("/ssh-keys"),
        Some(&account.key),
        Some(&body),
    )
    .await;
    assert_eq!(
        answer.status, 201,
        "room for one after a delete: {answer:?}"
    );
    let answer = call(
        "POST",
        &stack.url("/ssh-keys"),
        Some(&account.key),
        Some(&json!({ "name": "again", "public_key": random_ed25519() })),
    )
    .await;
    assert_eq!(answer.status, 409, "full again: {answer:?}");
}

/// An OpenSSH ed25519 public key line over 32 random bytes.
fn random_ed25519() -> String {
    use base64::Engine;
    let mut blob = Vec::new();
    for part in [b"ssh-ed25519".to_vec(), uuid_bytes32()] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(&part);
    }
    format!(
        "ssh-ed25519 {}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

fn uuid_bytes32() -> Vec<u8> {
    let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

/// The script reports before the worker's first look at the running instance (provisioning
/// polls a minute apart, the reconciler slower still): the job still shows when it started
/// running and its ip, and ends completed.
#[tokio::test]
async fn a_report_before_the_first_running_look_still_records_start_and_ip() {
    let stack = own_stack(
        "report-race",
        &[
            ("PROVISIONING_POLL_SECONDS", "60"),
            ("RECONCILE_EVERY_SECONDS", "600"),
        ],
        300,
    );
    let account = stack.account("10").await;
    let id = submit_ok(&stack, &account.key, &cheap_job(None, "echo quick")).await;
    // Well within the first provisioning poll: only the report can have moved the job on.
    let seen = wait_terminal(&stack, &account.key, &id, Duration::from_secs(40)).await;
    let job = &seen.job;
    assert_eq!(job["status"], "completed", "{:?} {job:#}", seen.history);
    assert_ne!(job["ip"], Value::Null, "where it ran: {job:#}");
    let created =
        chrono::DateTime::parse_from_rfc3339(job["created_at"].as_str().unwrap()).unwrap();
    let started = chrono::DateTime::parse_from_rfc3339(
        job["started_at"]
            .as_str()
            .unwrap_or_else(|| panic!("started_at: {job:#}")),
    )
    .unwrap();
    let finished =
        chrono::DateTime::parse_from_rfc3339(job["finished_at"].as_str().unwrap()).unwrap();
    assert!(created <= started && started <= finished, "{job:#}");
    assert_eq!(job["exit_code"], 0);
}
