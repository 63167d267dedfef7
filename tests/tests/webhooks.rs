//! Signed webhooks end to end (issue 13): a receiver in the test gets every state change of a
//! job, in order, and checks each Standard Webhooks signature itself with the endpoint's
//! secret; a receiver that is down for a while gets everything later, still in order; unsafe
//! targets (SSRF) are refused with a 400 naming the field; scopes hold.

// Shared with jobs.rs; this file uses a part of it.
#[allow(dead_code, unused_imports)]
mod jobs_support;

use jobs_support::*;
use mimiry_shared::auth::Scope;
use mimiry_tests::webhook_receiver::{verify, Received, Receiver};
use mimiry_tests::{call, record_secret, Answer, Stack};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

async fn register(stack: &Stack, key: &str, url: &str, events: Value) -> Answer {
    call(
        "POST",
        &stack.url("/webhooks"),
        Some(key),
        Some(&json!({ "url": url, "events": events, "description": "test receiver" })),
    )
    .await
}

/// Registers and answers (id, secret); the secret is recorded for the log audit.
async fn register_ok(stack: &Stack, key: &str, url: &str) -> (String, String) {
    let answer = register(stack, key, url, json!(["*"])).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let secret = answer.body["secret"].as_str().expect("secret").to_string();
    record_secret(&secret);
    assert!(secret.starts_with("whsec_"), "{secret}");
    (answer.body["id"].as_str().unwrap().to_string(), secret)
}

const LIFECYCLE: [&str; 4] = [
    "job.queued",
    "job.provisioning",
    "job.running",
    "job.completed",
];

#[tokio::test]
async fn every_state_change_arrives_signed_in_order_and_once_shown_secrets_stay_hidden() {
    let stack = Stack::shared();
    let account = stack.account("50").await;
    let (receiver, url) = Receiver::start().await;
    let (endpoint, secret) = register_ok(stack, &account.key, &url).await;

    // The secret is never shown again.
    for path in ["/webhooks".to_string(), format!("/webhooks/{endpoint}")] {
        let answer = call("GET", &stack.url(&path), Some(&account.key), None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            !answer.body.to_string().contains(&secret[6..]),
            "GET {path} shows the secret"
        );
    }

    let job = submit_ok(stack, &account.key, &cheap_job(None, "echo hello")).await;
    wait_terminal(stack, &account.key, &job, SHORT)
        .await
        .assert_ended("completed", None);
    let types = receiver.wait_final(&job, Duration::from_secs(30)).await;
    assert_eq!(types, LIFECYCLE, "events of {job}");

    let deliveries: Vec<Received> = receiver
        .all()
        .into_iter()
        .filter(|r| r.body.contains(&job))
        .collect();
    for r in &deliveries {
        assert!(verify(&secret, r), "bad signature on {r:?}");
        let ts: i64 = r.timestamp.parse().expect("timestamp in seconds");
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 300, "{r:?}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert!(body["timestamp"].is_string(), "{body}");
        assert_eq!(body["data"]["job"]["id"], job.as_str());
        // Tampering with any signed part breaks the signature.
        let mut tampered = r.clone();
        tampered.body = r.body.replace("job.", "job.x");
        assert!(!verify(&secret, &tampered), "a tampered body verified");
        let mut other_ts = r.clone();
        other_ts.timestamp = (ts + 1).to_string();
        assert!(!verify(&secret, &other_ts), "a changed timestamp verified");
        let other_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert!(!verify(other_secret, r), "another secret verified");
    }
    let ids: std::collections::HashSet<&str> = deliveries.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 4, "one webhook-id per event: {deliveries:?}");

    // The delivery log shows each attempt.
    let shown = call(
        "GET",
        &stack.url(&format!("/webhooks/{endpoint}")),
        Some(&account.key),
        None,
    )
    .await;
    let log = shown.body["deliveries"].as_array().expect("deliveries");
    let delivered: Vec<&Value> = log
        .iter()
        .filter(|d| d["job_id"] == job.as_str() && d["outcome"] == "delivered")
        .collect();
    let unique: std::collections::HashSet<&str> = delivered
        .iter()
        .map(|d| d["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(unique.len(), 4, "{log:#?}");
    assert!(delivered
        .iter()
        .all(|d| d["status_code"] == 204 && d["latency_ms"].is_u64()));
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_everything_later_in_order() {
    let stack = Stack::shared();
    let account = stack.account("50").await;
    let (receiver, url) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let (endpoint, secret) = register_ok(stack, &account.key, &url).await;

    let job = submit_ok(stack, &account.key, &cheap_job(None, "echo hello")).await;
    wait_terminal(stack, &account.key, &job, SHORT)
        .await
        .assert_ended("completed", None);
    // Down through the whole job: attempts failed and were retried.
    let started = Instant::now();
    while receiver.all().iter().filter(|r| r.answered == 500).count() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no retries while down: {:?}",
            receiver.all()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(receiver.accepted_types(&job).is_empty());
    // Nothing overtook the first event: every failed attempt was job.queued.
    for r in receiver.all() {
        assert!(
            r.body.contains("\"job.queued\""),
            "sent out of order: {r:?}"
        );
    }

    receiver.down.store(false, Ordering::SeqCst);
    let types = receiver.wait_final(&job, Duration::from_secs(30)).await;
    assert_eq!(types, LIFECYCLE);
    for r in receiver.all() {
        assert!(verify(&secret, &r), "bad signature on {r:?}");
    }
    // Retries carry the same webhook-id (so a receiver can drop duplicates).
    let queued_ids: std::collections::HashSet<String> = receiver
        .all()
        .iter()
        .filter(|r| r.body.contains("\"job.queued\""))
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(queued_ids.len(), 1, "{queued_ids:?}");

    let shown = call(
        "GET",
        &stack.url(&format!("/webhooks/{endpoint}")),
        Some(&account.key),
        None,
    )
    .await;
    let log = shown.body["deliveries"].as_array().unwrap();
    assert!(
        log.iter().any(|d| d["outcome"] == "failed"
            && d["status_code"] == 500
            && d["attempt"].as_u64() > Some(1)),
        "{log:#?}"
    );
    assert!(shown.body["failing_since"].is_null(), "{:#}", shown.body);
}

#[tokio::test]
async fn unsafe_targets_and_bad_fields_are_refused_naming_the_field() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    for (url, why) in [
        ("https://10.0.0.1/hook", "private"),
        ("https://192.168.0.7/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[fd12::1]/hook", "private"),
        ("https://100.64.1.1/hook", "CGNAT"),
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("http://93.184.216.34/hook", "https://"),
        ("ftp://127.0.0.1/hook", "https://"),
        ("not a url", "valid URL"),
    ] {
        let answer = register(stack, &account.key, url, json!(["*"])).await;
        assert_eq!(answer.status, 400, "{url}: {answer:?}");
        assert_eq!(answer.body["details"]["field"], "url", "{url}");
        assert!(answer.error().contains(why), "{url}: {}", answer.error());
    }
    let answer = register(
        stack,
        &account.key,
        "http://127.0.0.1:9/x",
        json!(["job.done"]),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["details"]["field"], "events");
    assert!(answer.error().contains("job.completed"), "{answer:?}");
    let answer = register(stack, &account.key, "http://127.0.0.1:9/x", json!([])).await;
    assert_eq!(answer.body["details"]["field"], "events", "{answer:?}");
    let answer = call(
        "POST",
        &stack.url("/webhooks"),
        Some(&account.key),
        Some(&json!({ "url": "http://127.0.0.1:9/x", "events": ["*"], "secret": "mine" })),
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");

    // At most 10 endpoints.
    for _ in 0..10 {
        register_ok(stack, &account.key, "http://127.0.0.1:9/limit").await;
    }
    let answer = register(
        stack,
        &account.key,
        "http://127.0.0.1:9/limit",
        json!(["*"]),
    )
    .await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.body["code"], "webhook_limit_reached");

    // Delete frees a place; a deleted endpoint is gone.
    let list = call("GET", &stack.url("/webhooks"), Some(&account.key), None).await;
    let first = list.body["webhooks"][0]["id"].as_str().unwrap().to_string();
    let url = stack.url(&format!("/webhooks/{first}"));
    let deleted = call("DELETE", &url, Some(&account.key), None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(
        call("GET", &url, Some(&account.key), None).await.status,
        404
    );
    assert_eq!(
        register(
            stack,
            &account.key,
            "http://127.0.0.1:9/limit",
            json!(["*"])
        )
        .await
        .status,
        201
    );
}

#[tokio::test]
async fn the_webhook_scopes_are_enforced() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let (id, _) = register_ok(stack, &account.key, "http://127.0.0.1:9/scopes").await;
    let read = stack.key(&account.account_id, &[Scope::WebhooksRead]).await;
    let jobs = stack
        .key(&account.account_id, &[Scope::JobsRead, Scope::JobsWrite])
        .await;
    let one = stack.url(&format!("/webhooks/{id}"));
    assert_eq!(call("GET", &one, Some(&read), None).await.status, 200);
    let body = json!({ "url": "http://127.0.0.1:9/x", "events": ["*"] });
    for (method, url, key, body, scope) in [
        (
            "POST",
            stack.url("/webhooks"),
            &read,
            Some(&body),
            "webhooks:write",
        ),
        ("DELETE", one.clone(), &read, None, "webhooks:write"),
        ("GET", stack.url("/webhooks"), &jobs, None, "webhooks:read"),
        ("GET", one.clone(), &jobs, None, "webhooks:read"),
    ] {
        let answer = call(method, &url, Some(key), body).await;
        assert_eq!(answer.status, 403, "{method} {url}: {answer:?}");
        assert_eq!(answer.body["details"]["required_scope"], scope);
    }
    // Another account's endpoint is not found, and stays.
    let other = stack.account("0").await;
    assert_eq!(call("GET", &one, Some(&other.key), None).await.status, 404);
    assert_eq!(
        call("DELETE", &one, Some(&other.key), None).await.status,
        404
    );
    assert_eq!(
        call("GET", &one, Some(&account.key), None).await.status,
        200
    );
}

#[tokio::test]
async fn a_cancelled_job_sends_job_cancelled_last() {
    let stack = Stack::shared();
    let account = stack.account("50").await;
    let (receiver, url) = Receiver::start().await;
    let (_, secret) = register_ok(stack, &account.key, &url).await;
    // Cancelled at once: while still queued (the API ends it) or just after (the worker does).
    let job = submit_ok(stack, &account.key, &cheap_job(None, "sleep 300")).await;
    let answer = cancel(stack, &account.key, &job).await;
    assert!([200, 202].contains(&answer.status), "{answer:?}");
    wait_terminal(stack, &account.key, &job, SHORT)
        .await
        .assert_ended("cancelled", None);
    let types = receiver.wait_final(&job, Duration::from_secs(30)).await;
    assert_eq!(types.first().map(String::as_str), Some("job.queued"));
    assert_eq!(types.last().map(String::as_str), Some("job.cancelled"));
    let order = |t: &String| LIFECYCLE.iter().position(|l| l == t).unwrap_or(3);
    assert!(
        types.windows(2).all(|w| order(&w[0]) < order(&w[1])),
        "out of order or twice: {types:?}"
    );
    assert!(receiver.all().iter().all(|r| verify(&secret, r)));
}

/// An endpoint failing for the whole retry window (4 s here, 24 h in production) has its
/// event given up, is disabled, and the account is emailed once.
#[tokio::test]
async fn an_endpoint_failing_for_the_window_is_disabled_and_the_account_emailed() {
    let stack = own_stack(
        "webhooks-disable",
        &[("WEBHOOK_RETRY_WINDOW_SECONDS", "4")],
        1000,
    );
    let account = stack.account("50").await;
    let email = format!("hooks-{}@example.com", uuid::Uuid::new_v4().simple());
    stack
        .store()
        .await
        .set_budgets(
            &account.account_id,
            &mimiry_shared::store::budgets::BudgetSettings {
                monthly_spend_limit: None,
                low_balance_threshold: None,
                notice_email: Some(email.clone()),
            },
        )
        .await
        .unwrap();
    let (receiver, url) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let (endpoint, _) = register_ok(&stack, &account.key, &url).await;
    let job = submit_ok(&stack, &account.key, &cheap_job(None, "echo hello")).await;

    let one = stack.url(&format!("/webhooks/{endpoint}"));
    let started = Instant::now();
    let shown = loop {
        let shown = call("GET", &one, Some(&account.key), None).await;
        if shown.body["enabled"] == false {
            break shown;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "never disabled: {:#}",
            shown.body
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(shown.body["disabled_at"].is_string(), "{:#}", shown.body);
    let log = shown.body["deliveries"].as_array().unwrap();
    assert!(
        log.iter().any(|d| d["outcome"] == "given_up"
            && d["event"] == "job.queued"
            && d["job_id"] == job.as_str()),
        "{log:#?}"
    );

    // One email, to the account's notice address, naming the endpoint.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = loop {
        let sent: Vec<Value> = stack
            .sent_emails()
            .await
            .into_iter()
            .filter(|m| m["destinations"]["ToAddresses"][0] == email.as_str())
            .collect();
        if !sent.is_empty() || Instant::now() > deadline {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0].to_string().contains(&url), "{:#}", sent[0]);

    // Disabled: nothing more is sent, even once the receiver is back.
    receiver.down.store(false, Ordering::SeqCst);
    let before = receiver.all().len();
    let next = submit_ok(&stack, &account.key, &cheap_job(None, "echo again")).await;
    wait_terminal(&stack, &account.key, &next, SHORT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        receiver.all()[before..]
            .iter()
            .all(|r| !r.body.contains(&next)),
        "a disabled endpoint got {next}'s events"
    );
}

/// The dashboard's Webhooks pages: the API's checks and messages, the secret shown once, the
/// delivery log page, delete with confirmation — forms without JavaScript, with CSRF tokens.
#[tokio::test]
async fn the_dashboard_adds_shows_and_deletes_endpoints_with_the_apis_rules() {
    use mimiry_tests::web::{new_email, Browser};
    let stack = Stack::shared();
    let browser = Browser::new(stack);
    browser.sign_up_and_log_in(&new_email("webhooks")).await;
    let (_, key) = browser
        .create_key("hooks", &["webhooks:read", "webhooks:write"])
        .await;

    // The metadata service: the API's message, word for word.
    let api = register(stack, &key, "https://169.254.169.254/", json!(["*"])).await;
    assert_eq!(api.status, 400, "{api:?}");
    let page = browser
        .submit(
            "/dashboard/webhooks/new",
            "/dashboard/webhooks",
            &[("url", "https://169.254.169.254/"), ("events", "*")],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.html);
    assert_eq!(page.text_of("form-error").as_deref(), Some(api.error()));
    assert_eq!(
        call("GET", &stack.url("/webhooks"), Some(&key), None)
            .await
            .body["webhooks"],
        json!([])
    );

    let (_, url) = Receiver::start().await;
    let created = browser
        .submit(
            "/dashboard/webhooks/new",
            "/dashboard/webhooks",
            &[
                ("url", url.as_str()),
                ("events", "job.completed"),
                ("events", "job.failed"),
                ("description", "from the dashboard"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.html);
    let secret = created
        .text_of("new-webhook-secret")
        .expect("the secret is shown");
    record_secret(&secret);
    assert!(secret.starts_with("whsec_"), "{secret}");

    let listed = call("GET", &stack.url("/webhooks"), Some(&key), None).await;
    let hooks = listed.body["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{listed:?}");
    assert_eq!(hooks[0]["events"], json!(["job.completed", "job.failed"]));
    assert_eq!(hooks[0]["description"], "from the dashboard");
    let id = hooks[0]["id"].as_str().unwrap().to_string();

    // Shown once: neither the list nor the endpoint's page has it.
    let list = browser.get("/dashboard/webhooks").await;
    assert!(list.contains(&id) && list.contains(&url));
    let one = browser.get(&format!("/dashboard/webhooks/{id}")).await;
    assert_eq!(one.status, 200);
    assert!(one.contains("Nothing delivered yet"), "{}", one.html);
    for page in [&list, &one] {
        assert!(!page.contains(&secret[6..]), "the secret is shown again");
    }

    let deleted = browser
        .submit(
            &format!("/dashboard/webhooks/{id}/delete"),
            &format!("/dashboard/webhooks/{id}/delete"),
            &[],
        )
        .await;
    assert_eq!(
        (deleted.status, deleted.location()),
        (303, "/dashboard/webhooks")
    );
    let listed = call("GET", &stack.url("/webhooks"), Some(&key), None).await;
    assert_eq!(listed.body["webhooks"], json!([]), "{listed:?}");
    assert_eq!(
        browser
            .get(&format!("/dashboard/webhooks/{id}"))
            .await
            .status,
        404
    );
}
